#include "line_editor.h"

#include <cerrno>
#include <clocale>
#include <cstdio>
#include <cstring>
#include <cwchar>
#include <langinfo.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <histedit.h>

#include "commands.h"
#include "terminal_text.h"

namespace fastchat::client {

namespace {

constexpr int kHistorySize = 500;
constexpr int kSequenceWaitMs = 100;

// Whether the terminal has input within `timeout_ms`.
bool Ready(int timeout_ms) {
  pollfd p{STDIN_FILENO, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) > 0;
}

// Columns `text` takes on a terminal (wcwidth; unknown widths count 1).
int Columns(const wchar_t* begin, const wchar_t* end) {
  int cols = 0;
  for (const wchar_t* p = begin; p < end; ++p) {
    int w = ::wcwidth(*p);
    cols += w < 0 ? 1 : w;
  }
  return cols;
}

int Columns(const std::string& text) {
  std::wstring wide(text.size() + 1, L'\0');
  std::mbstate_t state{};
  const char* src = text.c_str();
  std::size_t n = std::mbsrtowcs(wide.data(), &src, wide.size(), &state);
  if (n == static_cast<std::size_t>(-1)) return static_cast<int>(text.size());
  return Columns(wide.data(), wide.data() + n);
}

int TerminalWidth() {
  winsize ws{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

// UTF-8 is what FastChat's text is; libedit decodes keys and encodes the
// line by the locale.
void UseUtf8Locale() {
  const char* set = std::setlocale(LC_CTYPE, "");
  if (set == nullptr || std::strcmp(nl_langinfo(CODESET), "UTF-8") != 0) std::setlocale(LC_CTYPE, "C.UTF-8");
}

std::string CommonPrefix(const std::vector<std::string>& words) {
  std::string prefix = words.front();
  for (const auto& w : words) {
    std::size_t n = 0;
    while (n < prefix.size() && n < w.size() && prefix[n] == w[n]) ++n;
    prefix.resize(n);
  }
  // Never cut a UTF-8 sequence in two.
  while (!prefix.empty() && (static_cast<unsigned char>(prefix.back()) & 0xc0) == 0x80) prefix.pop_back();
  if (!prefix.empty() && (static_cast<unsigned char>(prefix.back()) & 0x80) != 0) prefix.pop_back();
  return prefix;
}

}  // namespace

struct LineEditor::Impl {
  explicit Impl(asio::io_context& ioc) : keys(ioc) {}

  asio::posix::stream_descriptor keys;
  std::string prompt;
  Completer completer;
  EditLine* el = nullptr;
  History* hist = nullptr;
  bool raw = false;      // libedit's unbuffered mode: the terminal is raw
  bool editing = false;  // a prompt is on the screen
  bool hidden = false;   // between Hide() and Show()
  bool eof = false;
  bool cancelled = false;
  bool first_read = false;  // the next read is the one the terminal woke us for

  static Impl* Of(EditLine* el) {
    void* data = nullptr;
    el_get(el, EL_CLIENTDATA, &data);
    return static_cast<Impl*>(data);
  }

  static char* Prompt(EditLine* el) { return Of(el)->prompt.data(); }

  // Reads one character (UTF-8) from the terminal; called by libedit once
  // the terminal has input (so the first read does not block).
  //
  // A key that sends several characters (an arrow: ESC [ A) sends them at
  // once, so libedit's reads after the first of one el_gets wait at most
  // kSequenceWait: an ESC alone must not stop the event loop until the next
  // key (then the read fails, and libedit drops the unfinished sequence).
  static int GetChar(EditLine* el, wchar_t* out) {
    Impl* self = Of(el);
    if (!self->first_read && !Ready(kSequenceWaitMs)) {
      errno = EAGAIN;
      return -1;
    }
    self->first_read = false;
    unsigned char b = 0;
    ssize_t n = ::read(STDIN_FILENO, &b, 1);
    if (n <= 0) {
      self->eof = true;
      return n == 0 ? 0 : -1;
    }
    int more = b < 0x80 ? 0 : (b & 0xe0) == 0xc0 ? 1 : (b & 0xf0) == 0xe0 ? 2 : (b & 0xf8) == 0xf0 ? 3 : -1;
    if (more < 0) {
      *out = 0xfffd;
      return 1;
    }
    char32_t v = more == 0 ? b : more == 1 ? (b & 0x1f) : more == 2 ? (b & 0x0f) : (b & 0x07);
    for (int i = 0; i < more; ++i) {
      unsigned char c = 0;
      if (!Ready(kSequenceWaitMs) || ::read(STDIN_FILENO, &c, 1) != 1 || (c & 0xc0) != 0x80) {
        *out = 0xfffd;
        return 1;
      }
      v = (v << 6) | (c & 0x3f);
    }
    *out = static_cast<wchar_t>(v);
    return 1;
  }

  static unsigned char Complete(EditLine* el, int) {
    Impl* self = Of(el);
    const LineInfo* li = el_line(el);
    std::string before(li->buffer, li->cursor);
    std::size_t start = before.find_last_of(" \t");
    std::string word = start == std::string::npos ? before : before.substr(start + 1);
    std::vector<std::string> found;
    for (auto& c : self->completer(before))
      if (SafeForTerminal(c) == c) found.push_back(std::move(c));
    if (found.empty()) return CC_REFRESH_BEEP;
    // One candidate is complete (a space after it), unless it is a folder.
    std::string insert = found.size() != 1 ? CommonPrefix(found) : found[0] + (found[0].back() == '/' ? "" : " ");
    if (insert.size() > word.size()) {
      std::size_t chars = std::mbstowcs(nullptr, word.c_str(), 0);
      if (chars == static_cast<std::size_t>(-1)) chars = word.size();
      if (chars > 0) el_deletestr(el, static_cast<int>(chars));
      el_insertstr(el, insert.c_str());
      return CC_REFRESH;
    }
    // Several, and nothing more in common: list them above the line.
    std::string list;
    for (const auto& c : found) list += (list.empty() ? "" : "  ") + c;
    self->Hide();
    list.push_back('\n');
    std::fwrite(list.data(), 1, list.size(), stdout);
    self->Show();
    return CC_NORM;
  }

  void Raw(bool on) {
    if (raw == on) return;
    raw = on;
    el_set(el, EL_UNBUFFERED, on ? 1 : 0);
  }

  // No more lines: the prompt line ended, the terminal cooked.
  void Finish() {
    if (editing) {
      editing = false;
      std::fputs("\n", stdout);
      std::fflush(stdout);
    }
    Raw(false);
  }

  void Hide() {
    if (!editing || hidden) return;
    hidden = true;
    const LineInfoW* li = el_wline(el);
    int cols = TerminalWidth();
    int at = Columns(prompt) + Columns(li->buffer, li->cursor);
    int row = at / cols;  // rows above the cursor that the prompt and line take
    std::string clear = "\r";
    if (row > 0) clear += "\x1b[" + std::to_string(row) + "A";
    clear += "\x1b[J";
    std::fwrite(clear.data(), 1, clear.size(), stdout);
    std::fflush(stdout);
  }

  void Show() {
    if (!editing || !hidden) return;
    hidden = false;
    el_set(el, EL_REFRESH);
  }
};

LineEditor::LineEditor(asio::io_context& ioc, std::string prompt, Completer completer)
    : impl_(std::make_unique<Impl>(ioc)) {
  Impl& m = *impl_;
  UseUtf8Locale();
  m.prompt = SafeForTerminal(prompt);
  m.completer = std::move(completer);
  m.el = el_init("fastchat", stdin, stdout, stderr);
  el_set(m.el, EL_CLIENTDATA, impl_.get());
  el_set(m.el, EL_EDITOR, "emacs");
  el_set(m.el, EL_PROMPT, &Impl::Prompt);
  el_set(m.el, EL_GETCFN, &Impl::GetChar);
  m.hist = history_init();
  HistEvent ev;
  history(m.hist, &ev, H_SETSIZE, kHistorySize);
  history(m.hist, &ev, H_SETUNIQUE, 1);
  el_set(m.el, EL_HIST, history, m.hist);
  // The wide form: libedit keeps these pointers as they are. The narrow
  // el_set(EL_ADDFN) copies both strings and never frees the copies (a leak
  // in libedit that LeakSanitizer reports at exit, failing the process).
  el_wset(m.el, EL_ADDFN, L"fastchat-complete", L"complete a command, user or group name", &Impl::Complete);
  el_set(m.el, EL_BIND, "^I", "fastchat-complete", nullptr);
  std::error_code ec;
  int fd = ::dup(STDIN_FILENO);
  if (fd >= 0) {
    m.keys.assign(fd, ec);
    if (ec) ::close(fd);
  }
}

LineEditor::~LineEditor() {
  Impl& m = *impl_;
  m.Raw(false);  // cooked mode again
  el_end(m.el);
  history_end(m.hist);
}

asio::awaitable<bool> LineEditor::Next(std::string* line) {
  Impl& m = *impl_;
  if (!m.keys.is_open()) co_return false;
  if (!m.editing) {
    // Turning raw mode on starts a new line and draws the prompt; keys typed
    // while the last command ran (raw: not echoed) are read now.
    m.Raw(false);
    m.Raw(true);
    m.editing = true;
    m.hidden = false;
  }
  for (;;) {
    if (m.eof || m.cancelled) break;
    std::error_code ec;
    co_await m.keys.async_wait(asio::posix::stream_descriptor::wait_read,
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec || m.cancelled) break;
    int count = 0;
    m.first_read = true;
    const char* got = el_gets(m.el, &count);  // one key
    if (m.eof) break;
    if (got == nullptr || count <= 0) continue;
    std::string text(got, static_cast<std::size_t>(count));
    if (text == "\x04") {  // Ctrl-D on an empty line: the prompt goes, not shown as ^D
      m.Hide();
      m.hidden = false;
      m.editing = false;
      m.Raw(false);
      m.eof = true;
      break;
    }
    if (text.back() != '\n') continue;
    text.pop_back();
    // The line is done. The terminal stays raw while the command runs, so
    // that keys typed meanwhile do not show where events and results go.
    m.editing = false;
    if (!text.empty()) {
      HistEvent ev;
      history(m.hist, &ev, H_ENTER, text.c_str());
    }
    *line = std::move(text);
    co_return true;
  }
  m.Finish();
  co_return false;
}

void LineEditor::Cancel() {
  Impl& m = *impl_;
  m.cancelled = true;
  std::error_code ec;
  m.keys.close(ec);
  m.Finish();  // the terminal back in cooked mode now, not at exit
}

void LineEditor::Hide() { impl_->Hide(); }
void LineEditor::Show() { impl_->Show(); }

bool InteractiveTerminal() { return ::isatty(STDIN_FILENO) == 1 && ::isatty(STDOUT_FILENO) == 1; }

std::vector<std::string> PathCompletions(const std::string& word) {
  std::size_t slash = word.rfind('/');
  std::string dir = slash == std::string::npos ? std::string() : word.substr(0, slash + 1);
  std::string base = slash == std::string::npos ? word : word.substr(slash + 1);
  std::vector<std::string> out;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir.empty() ? std::filesystem::path(".") : std::filesystem::path(dir), ec);
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.compare(0, base.size(), base) != 0 || (name[0] == '.' && (base.empty() || base[0] != '.'))) continue;
    std::error_code type_ec;
    out.push_back(dir + name + (it->is_directory(type_ec) ? "/" : ""));
  }
  return out;
}

std::vector<std::string> ChatCompletions(const std::string& before_cursor, const std::vector<std::string>& commands,
                                         const std::vector<std::string>& users,
                                         const std::vector<std::string>& groups) {
  std::vector<std::string> words;
  std::size_t i = 0;
  while (i < before_cursor.size()) {
    std::size_t end = before_cursor.find_first_of(" \t", i);
    if (end == std::string::npos) break;
    if (end > i) words.push_back(before_cursor.substr(i, end - i));
    i = end + 1;
  }
  std::string word = before_cursor.substr(i);
  std::vector<const std::vector<std::string>*> lists;
  std::vector<std::string> paths;
  if (words.empty()) {
    lists.push_back(&commands);
  } else {
    switch (KindOfArgument(words[0], words.size() - 1)) {
      case ArgKind::kUser: lists.push_back(&users); break;
      case ArgKind::kGroup: lists.push_back(&groups); break;
      case ArgKind::kUserOrGroup: lists = {&users, &groups}; break;
      case ArgKind::kCommand: lists.push_back(&commands); break;
      case ArgKind::kPath:
        paths = PathCompletions(word);
        lists.push_back(&paths);
        break;
      case ArgKind::kNone: break;
    }
  }
  std::vector<std::string> out;
  for (const auto* list : lists)
    for (const auto& c : *list)
      if (c.compare(0, word.size(), word) == 0 && c.find_first_of(" \t") == std::string::npos) out.push_back(c);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace fastchat::client
