#include "terminal_text.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "line_editor.h"
#include "log_sink.h"
#include "output.h"

namespace fastchat::client {
namespace {

TEST(SafeForTerminal, KeepsLettersOfEveryScript) {
  EXPECT_EQ(SafeForTerminal("Привет мир, 日本語 ☃ 🙂 (a+b)"), "Привет мир, 日本語 ☃ 🙂 (a+b)");
}

TEST(SafeForTerminal, RemovesEverythingThatSteersATerminal) {
  EXPECT_EQ(SafeForTerminal("a\x1b[2Jb"), "a\xef\xbf\xbd[2Jb");               // CSI
  EXPECT_EQ(SafeForTerminal("\x1b]0;title\x07"), "\xef\xbf\xbd]0;title\xef\xbf\xbd");  // OSC, BEL
  EXPECT_EQ(SafeForTerminal("x\xc2\x9b" "31m"), "x\xef\xbf\xbd" "31m");        // C1 CSI as UTF-8
  EXPECT_EQ(SafeForTerminal("x\x9b" "31m"), "x\xef\xbf\xbd" "31m");            // C1 CSI as a raw byte
  EXPECT_EQ(SafeForTerminal("\xc2\x85\xc2\x90\xc2\x9d"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // NEL DCS OSC
  EXPECT_EQ(SafeForTerminal("del\x7f"), "del\xef\xbf\xbd");
  EXPECT_EQ(SafeForTerminal("invoice\xe2\x80\xae" "gpj.exe"), "invoice\xef\xbf\xbd" "gpj.exe");  // RLO
  EXPECT_EQ(SafeForTerminal("\xe2\x81\xa6\xe2\x81\xa9\xe2\x80\x8f\xd8\x9c\xe2\x80\xa8"),
            "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // LRI PDI RLM ALM LS
  EXPECT_EQ(SafeForTerminal("over\xc0\xaflong \xed\xa0\x80"), "over\xef\xbf\xbd\xef\xbf\xbdlong \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(SafeForTerminal("cut \xe2\x80"), "cut \xef\xbf\xbd\xef\xbf\xbd");
}

TEST(SafeForTerminal, LineBreaksAndTabsStayVisibleOnOneLine) {
  EXPECT_EQ(SafeForTerminal("one\ntwo\r\nthree\rfour\tfive"), "one↵two↵three↵four five");
}

TEST(SafeJsonLine, EscapesWhatSteersATerminalAndParsesToTheSameValue) {
  const std::string text = "a\x1b[31m \xc2\x9b \x7f \xe2\x80\xae Привет";
  Json j = {{"text", text}};
  std::string line = SafeJsonLine(j.dump(-1, ' ', false, Json::error_handler_t::replace));
  EXPECT_EQ(line, R"({"text":"a\u001b[31m \u009b \u007f \u202e Привет"})");
  EXPECT_EQ(Json::parse(line)["text"], text);
}

TEST(OutputHuman, ShowsOtherPeoplesTextWithoutEscapes) {
  Json m = {{"type", "message"}, {"from", "bob\x1b[0m"}, {"text", "\x1b]0;x\x07hi\nfake"}};
  EXPECT_EQ(Output::Human(m), "[bob\xef\xbf\xbd[0m] \xef\xbf\xbd]0;x\xef\xbf\xbdhi↵fake");
  Json g = {{"type", "result"}, {"cmd", "groups"}, {"ok", true},
            {"groups", Json::array({Json{{"id", 7}, {"name", "c\xe2\x80\xaelub"}, {"admin_id", 3}, {"admin", "alice"},
                                         {"epoch", 2}}})}};
  EXPECT_EQ(Output::Human(g), "groups:\n  c\xef\xbf\xbdlub (id 7, admin alice, epoch 2)");
  Json unknown = {{"type", "surprise"}, {"x", "\xc2\x9b"}};
  EXPECT_EQ(Output::Human(unknown), R"({"type":"surprise","x":"\u009b"})");
}

TEST(OutputHuman, SaysHowManyGroupMessagesExpiredUncollected) {
  Json e = {{"type", "group_expired"}, {"group_id", 7}, {"group", "club"}, {"expired", 4}};
  EXPECT_EQ(Output::Human(e), "* [group club] 4 earlier messages of this group expired on the server before you "
                              "collected them");
  e["expired"] = 1;
  EXPECT_EQ(Output::Human(e), "* [group club] 1 earlier message of this group expired on the server before you "
                              "collected them");
}

TEST(OutputHuman, HelpKeepsItsOwnLines) {
  Json h = {{"type", "result"}, {"cmd", "help"}, {"ok", true}, {"text", "one\n  two"}};
  EXPECT_EQ(Output::Human(h), "one\n  two");
}

// Records the calls Output makes around what it writes.
class RecordingLineOwner : public LineOwner {
 public:
  void Hide() override { calls += "H"; }
  void Show() override { calls += "S"; }
  std::string calls;
};

// Runs `body` with stdout sent to a file; returns what it wrote.
std::string CapturedStdout(const std::function<void()>& body) {
  const std::string path = ::testing::TempDir() + "/captured_stdout";
  std::fflush(stdout);
  const int saved = dup(STDOUT_FILENO);
  FILE* f = std::fopen(path.c_str(), "w");
  dup2(fileno(f), STDOUT_FILENO);
  body();
  std::fflush(stdout);
  dup2(saved, STDOUT_FILENO);
  close(saved);
  std::fclose(f);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// In chat at a terminal a transfer's progress is a line above the prompt
// (never a line redrawn in place, which would land on the prompt's line),
// at most one per 10 percentage points, and always the last one.
TEST(OutputEmit, ProgressInChatIsALineAboveThePromptEveryTenPoints) {
  Output out(false);
  RecordingLineOwner owner;
  out.SetLineOwner(&owner);
  auto report = [](int percent) {
    return Json{{"type", "progress"}, {"direction", "receive"}, {"title", "big.bin"}, {"from", "alice"},
                {"percent", percent}};
  };
  const std::string text = CapturedStdout([&] {
    for (int p : {0, 4, 9, 10, 15, 31, 100}) out.Emit(report(p));
  });
  EXPECT_EQ(text,
            "receiving big.bin from alice: 0%\n"
            "receiving big.bin from alice: 10%\n"
            "receiving big.bin from alice: 31%\n"
            "receiving big.bin from alice: 100%\n");
  EXPECT_EQ(owner.calls, "HSHSHSHS");
  EXPECT_EQ(text.find('\r'), std::string::npos);
  // The next transfer starts again from its first report.
  EXPECT_EQ(CapturedStdout([&] { out.Emit(report(3)); }), "receiving big.bin from alice: 3%\n");
}

TEST(ChatCompletions, CommandsThenNamesByArgument) {
  const std::vector<std::string> commands = {"add_friend", "groups", "help", "single_image", "single_message"};
  const std::vector<std::string> users = {"bob", "bobby", "carol"};
  const std::vector<std::string> groups = {"climbers", "club"};
  using V = std::vector<std::string>;
  EXPECT_EQ(ChatCompletions("sing", commands, users, groups), (V{"single_image", "single_message"}));
  EXPECT_EQ(ChatCompletions("", commands, users, groups), commands);
  EXPECT_EQ(ChatCompletions("single_message b", commands, users, groups), (V{"bob", "bobby"}));
  EXPECT_EQ(ChatCompletions("/msg c", commands, users, groups), (V{"carol"}));
  EXPECT_EQ(ChatCompletions("single_message bob hi c", commands, users, groups), V{});  // text
  EXPECT_EQ(ChatCompletions("add_member cl", commands, users, groups), (V{"climbers", "club"}));
  EXPECT_EQ(ChatCompletions("add_member club ca", commands, users, groups), (V{"carol"}));
  EXPECT_EQ(ChatCompletions("history c", commands, users, groups), (V{"carol", "climbers", "club"}));
  EXPECT_EQ(ChatCompletions("help gr", commands, users, groups), (V{"groups"}));
  EXPECT_EQ(ChatCompletions("friends x", commands, users, groups), V{});
}

TEST(ChatCompletions, PathsOfFiles) {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(::testing::TempDir()) / "completion_test";
  fs::remove_all(dir);
  fs::create_directories(dir / "photos");
  std::ofstream(dir / "photo.jpg") << "x";
  std::ofstream(dir / ".photo_hidden") << "x";
  std::ofstream(dir / "notes.txt") << "x";
  std::string d = dir.string() + "/";
  using V = std::vector<std::string>;
  EXPECT_EQ(ChatCompletions("single_image bob " + d + "pho", {}, {}, {}), (V{d + "photo.jpg", d + "photos/"}));
  EXPECT_EQ(ChatCompletions("/gfile climbers " + d + "n", {}, {}, {}), (V{d + "notes.txt"}));
  EXPECT_EQ(ChatCompletions("single_image bob " + d + ".p", {}, {}, {}), (V{d + ".photo_hidden"}));
  EXPECT_EQ(ChatCompletions("single_image bob " + d + "photos/", {}, {}, {}), V{});
  fs::remove_all(dir);
}

// Counts Hide/Show calls, to see that a log line is written between them.
struct CountingOwner : LineOwner {
  int hides = 0, shows = 0;
  void Hide() override { ++hides; }
  void Show() override { ++shows; }
};

TEST(SafeStderrLogger, LogLinesLoseTheirEscapesAndGoAroundTheLineOwner) {
  std::string path = ::testing::TempDir() + "/safe_stderr_log.txt";
  std::fflush(stderr);
  int saved = ::dup(STDERR_FILENO);
  ASSERT_NE(std::freopen(path.c_str(), "w", stderr), nullptr);
  LogLines* lines = InstallSafeStderrLogger("test");
  CountingOwner owner;
  lines->SetLineOwner(&owner);
  spdlog::warn("server says: {}", "no user '\x1b]0;pwned\x07\xc2\x9b'");
  lines->SetLineOwner(nullptr);
  spdlog::warn("after");
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("server says: no user '\xef\xbf\xbd]0;pwned\xef\xbf\xbd\xef\xbf\xbd'\n"), std::string::npos)
      << text.str();
  EXPECT_EQ(text.str().find('\x1b'), std::string::npos);
  EXPECT_EQ(owner.hides, 1);
  EXPECT_EQ(owner.shows, 1);
}

}  // namespace
}  // namespace fastchat::client
