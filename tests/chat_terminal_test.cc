// The interactive chat as a person at a terminal meets it (issue 8), and
// text from other users kept from steering that terminal. Real server and
// client processes; the terminal is a tmux pane (send-keys, capture-pane).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness/fastchat.h"

namespace fastchat::testing {
namespace {

bool Has(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// `argv` without its "--json".
std::vector<std::string> Human(std::vector<std::string> argv) {
  argv.erase(std::remove(argv.begin(), argv.end(), "--json"), argv.end());
  return argv;
}

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs a program to its end; returns its standard output.
std::string RunTool(const std::vector<std::string>& argv) {
  SpawnOptions so;
  so.argv = argv;
  auto p = Process::Spawn(so);
  p->CloseStdin();
  bool timed_out = false;
  std::string out = p->ReadToEof(Millis(10000), &timed_out);
  auto rc = p->Wait(Millis(10000));
  if (timed_out || !rc || *rc != 0)
    throw std::runtime_error("failed: " + p->CommandLine() + "\n" + out + p->StderrTail());
  return out;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && line.back() == ' ') line.pop_back();
    lines.push_back(line);
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

// A program running in a detached tmux session of its own (own server
// socket), 120x40, in a UTF-8 locale.
class Terminal {
 public:
  Terminal(TempDir& tmp, const std::vector<std::string>& argv) : socket_(tmp.Sub("tmux.sock")) {
    std::string script = tmp.Sub("terminal.sh");
    {
      std::ofstream f(script);
      f << "export LANG=C.UTF-8 TERM=screen\n";
      for (const auto& a : argv) f << ShellQuote(a) << " ";
      f << "2>" << ShellQuote(tmp.Sub("terminal.err")) << "\n";
      f << "echo \"[exit $?]\"\nsleep 600\n";
    }
    RunTool({"tmux", "-S", socket_, "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "120", "-y", "40",
             "sh " + ShellQuote(script)});
  }
  ~Terminal() {
    try {
      RunTool({"tmux", "-S", socket_, "kill-server"});
    } catch (const std::exception&) {
    }
  }

  // Types `text` as it is (no key names).
  void Type(const std::string& text) { RunTool({"tmux", "-S", socket_, "send-keys", "-t", "t", "-l", text}); }
  // Presses a key by tmux's name for it: Tab, Enter, Up, C-u...
  void Press(const std::string& key) { RunTool({"tmux", "-S", socket_, "send-keys", "-t", "t", key}); }

  std::vector<std::string> Screen() { return Lines(RunTool({"tmux", "-S", socket_, "capture-pane", "-p", "-t", "t"})); }
  int CursorX() { return std::stoi(RunTool({"tmux", "-S", socket_, "display", "-p", "-t", "t", "#{cursor_x}"})); }

  // Waits until `ok` holds for the screen; throws with the screen if not.
  std::vector<std::string> WaitFor(const std::function<bool(const std::vector<std::string>&)>& ok,
                                   const std::string& what) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    std::vector<std::string> screen;
    while (std::chrono::steady_clock::now() < deadline) {
      screen = Screen();
      if (ok(screen)) return screen;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::string dump;
    for (const auto& l : screen) dump += "|" + l + "\n";
    throw std::runtime_error("terminal: no " + what + " on the screen:\n" + dump);
  }
  // Waits until the last line of the screen is `line`.
  std::vector<std::string> WaitForLastLine(const std::string& line) {
    return WaitFor([&](const auto& s) { return !s.empty() && s.back() == line; }, "last line '" + line + "'");
  }
  std::vector<std::string> WaitForText(const std::string& text) {
    return WaitFor(
        [&](const auto& s) { return std::any_of(s.begin(), s.end(), [&](const auto& l) { return Has(l, text); }); },
        "'" + text + "'");
  }

 private:
  std::string socket_;
};

std::size_t IndexOf(const std::vector<std::string>& lines, const std::string& text) {
  for (std::size_t i = 0; i < lines.size(); ++i)
    if (Has(lines[i], text)) return i;
  return std::string::npos;
}

TEST(TerminalChat, PromptCompletionHistoryAndAMessageArrivingMidLine) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto cb = w.Chat(b);
  {
    auto ca = w.Chat(a);
    w.MakeFriends(*ca, a, *cb, b);
    ca->CommandOk("create_group climbers");
    ASSERT_EQ(ca->Quit(), 0);
  }

  std::vector<std::string> argv = Human(w.GlobalArgs(a));
  argv.push_back("chat");
  Terminal t(w.tmp(), argv);
  // The prompt, after the login line (the prompt may be drawn before the
  // login finishes: wait for both).
  auto screen = t.WaitFor(
      [](const auto& s) {
        return !s.empty() && s.back() == "alice>" && IndexOf(s, "logged in as alice") != std::string::npos;
      },
      "the login line and the prompt 'alice>' below it");
  EXPECT_LT(IndexOf(screen, "logged in as alice"), screen.size() - 1);

  // Tab completes a command: to what the candidates share, then (Tab
  // again) lists them above the line; then a friend's name.
  t.Type("sing");
  t.Press("Tab");
  t.WaitForLastLine("alice> single_");
  t.Press("Tab");
  // The line itself does not change at the second Tab, so wait for the
  // list (a wait for the line alone would pass before the list is drawn).
  screen = t.WaitFor(
      [](const auto& s) {
        return s.size() >= 2 && s.back() == "alice> single_" && s[s.size() - 2] == "single_image  single_message";
      },
      "the candidates 'single_image  single_message' right above 'alice> single_'");
  EXPECT_EQ(std::count_if(screen.begin(), screen.end(), [](const auto& l) { return Has(l, "single_image"); }), 1)
      << "the candidates are listed once";
  t.Type("m");
  t.Press("Tab");
  t.WaitForLastLine("alice> single_message");
  t.Type("b");
  t.Press("Tab");
  t.WaitForLastLine("alice> single_message bob");
  t.Type("half typed");
  t.WaitForLastLine("alice> single_message bob half typed");

  // A message arrives while the line is half typed: it is printed above,
  // and the partial line is drawn again below it, cursor at its end.
  cb->CommandOk("single_message alice hello from bob");
  screen = t.WaitForText("[bob] hello from bob");
  screen = t.WaitForLastLine("alice> single_message bob half typed");
  std::size_t message = IndexOf(screen, "[bob] hello from bob");
  ASSERT_EQ(message, screen.size() - 2) << "the message line is right above the prompt";
  EXPECT_EQ(std::count_if(screen.begin(), screen.end(), [](const auto& l) { return Has(l, "half typed"); }), 1)
      << "the partial line shows once, below the message";
  EXPECT_EQ(t.CursorX(), static_cast<int>(std::string("alice> single_message bob half typed").size()));

  // The line, finished, is sent as typed.
  t.Press("Enter");
  cb->WaitFor(Msg("alice", "half typed"), "alice's message");
  t.WaitForText("sent to bob");
  t.WaitForLastLine("alice>");

  // Group names complete too, and results show names.
  t.Type("memb");
  t.Press("Tab");
  t.Type("cl");
  t.Press("Tab");
  t.WaitForLastLine("alice> members climbers");
  t.Press("Enter");
  t.WaitForText("members of climbers (admin alice)");
  t.WaitForLastLine("alice>");
  t.Type("groups");
  t.Press("Enter");
  t.WaitForText("climbers (id ");
  screen = t.WaitForText(", admin alice, epoch");

  // An alias, then the same line again from the history (Up).
  t.WaitForLastLine("alice>");
  t.Type("/msg bob via an alias");
  t.Press("Enter");
  cb->WaitFor(Msg("alice", "via an alias"), "the aliased message");
  t.WaitForLastLine("alice>");
  t.Press("Up");
  t.WaitForLastLine("alice> /msg bob via an alias");
  t.Press("Enter");
  cb->WaitFor(Msg("alice", "via an alias"), "the message again, from the history");

  t.WaitForLastLine("alice>");
  t.Type("\\q");
  t.Press("Enter");
  t.WaitForText("[exit 0]");
  // Its standard error went to a file (sanitizer reports included).
  std::ifstream err(w.tmp().Sub("terminal.err"));
  std::stringstream err_text;
  err_text << err.rdbuf();
  EXPECT_FALSE(Has(err_text.str(), "Sanitizer") || Has(err_text.str(), "runtime error")) << err_text.str();
}

// ------------------------------------------------------------------ hostile text

// Why `out` could steer a terminal ("" if it cannot): C0 controls but
// newline, DEL, C1 controls (as UTF-8 or raw bytes), bidi formatting,
// line separators, bytes that are not UTF-8.
std::string Steering(const std::string& out) {
  for (std::size_t i = 0; i < out.size();) {
    auto b = static_cast<unsigned char>(out[i]);
    auto at = [&](const std::string& what) { return what + " at byte " + std::to_string(i) + ": ..." +
                                                    out.substr(i > 40 ? i - 40 : 0, 80); };
    if (b == '\n') { ++i; continue; }
    if (b < 0x20 || b == 0x7f) return at("control character " + std::to_string(b));
    if (b < 0x80) { ++i; continue; }
    int len = (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 0;
    if (len == 0 || i + static_cast<std::size_t>(len) > out.size()) return at("a byte that is not UTF-8");
    char32_t cp = len == 2 ? (b & 0x1f) : len == 3 ? (b & 0x0f) : (b & 0x07);
    for (int k = 1; k < len; ++k) {
      auto c = static_cast<unsigned char>(out[i + static_cast<std::size_t>(k)]);
      if ((c & 0xc0) != 0x80) return at("a byte that is not UTF-8");
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp <= 0x9f) return at("a C1 control");
    if (cp == 0x061c || cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
        (cp >= 0x2066 && cp <= 0x2069) || cp == 0x2028 || cp == 0x2029)
      return at("a bidi or line-separator character");
    i += static_cast<std::size_t>(len);
  }
  return "";
}

TEST(HostileText, NeverReachesTheTerminalOnAnyPrintingPath) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  // Title bar (OSC), clear screen and colour (CSI), an 8-bit CSI (C1), a
  // right-to-left override, a line break that would fake a line.
  const std::string evil = "hi \x1b]0;pwned\x07 \x1b[2J\x1b[31mred \xc2\x9b" "31m \xe2\x80\xae" "desrever\nfake [carol] line";
  const std::string group = "grp\xe2\x80\xae\xc2\x9b" "1m";  // the server refuses C0 in group names, not these
  {
    auto ca = w.Chat(a);
    auto cb = w.Chat(b);
    w.MakeFriends(*ca, a, *cb, b);
    json g = cb->CommandOk("create_group \"" + group + "\"");
    cb->CommandOk("add_member " + Str(g, "group_id") + " alice");
    ca->WaitFor(OfType("group_key"), "the group key");
    ASSERT_EQ(ca->Quit(), 0);
    ASSERT_TRUE(w.Run(b, {"single_message", "alice", evil}).ok());
    ASSERT_TRUE(w.Run(b, {"group_message", Str(g, "group_id"), evil}).ok());
    std::string file = w.tmp().Sub("pic\x1b[31m\xe2\x80\xae" "gpj.exe");
    std::ofstream(file) << "not really a picture";
    ASSERT_TRUE(w.Run(b, {"single_image", "alice", file}).ok());
    ASSERT_EQ(cb->Quit(), 0);
  }

  struct Case {
    std::vector<std::string> args;
    std::string shows;  // in text mode
  };
  const std::vector<Case> cases = {
      {{"pending"}, "[bob] hi"},                 // live events: message, group message, file, notices
      {{"history", "bob"}, "bob: hi"},           // history of a conversation
      {{"search", "red"}, "bob: hi"},            // search across conversations
      {{"groups"}, "admin bob"},                 // group names
      {{"members", group}, "members of grp"},    // a group name as an argument, echoed back
      {{"history", "group:" + group}, "bob: hi"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args[0]);
    // Text mode: the words are there, without their teeth.
    std::vector<std::string> argv = Human(w.GlobalArgs(a));
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    RunResult human = RunClientOnce(argv, w.tmp().Sub("hostile.err"), Millis(60000));
    EXPECT_EQ(human.exit_code, 0) << human.Describe();
    EXPECT_TRUE(Has(human.out, c.shows)) << human.out;
    EXPECT_EQ(Steering(human.out), "") << human.out;
    // JSON mode: escaped, and the same text once parsed.
    RunResult js = w.Run(a, c.args);
    EXPECT_TRUE(js.ok()) << js.Describe();
    EXPECT_EQ(Steering(js.out), "") << js.out;
  }
  // The JSON lines still carry the exact text.
  RunResult js = w.Run(a, {"history", "bob"});
  ASSERT_TRUE(js.ok()) << js.Describe();
  bool found = false;
  const json result = js.result();
  for (const auto& e : result["entries"]) found = found || Str(e, "text") == evil;
  EXPECT_TRUE(found) << js.out;
}

}  // namespace
}  // namespace fastchat::testing
