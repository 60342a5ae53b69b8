// The client as a user meets it (issue 8), with real server and client
// processes: file names in any script, "--" on the command line, one wording
// for a wrong password, and help for every command.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "harness/fastchat.h"

namespace fastchat::testing {
namespace {

namespace fs = std::filesystem;

bool Has(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The next direct message from `from` in `c` (messages arrive in order).
json NextMessage(ChatClient& c, const std::string& from) {
  return c.WaitFor(Like({{"type", "message"}, {"from", from}}), "a message from " + from);
}

// alice and bob, registered, each in a chat, and friends.
struct Friends {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  std::unique_ptr<ChatClient> ca = w.Chat(a);
  std::unique_ptr<ChatClient> cb = w.Chat(b);
  Friends() { w.MakeFriends(*ca, a, *cb, b); }
};

// `argv` without its "--json".
std::vector<std::string> Human(std::vector<std::string> argv) {
  argv.erase(std::remove(argv.begin(), argv.end(), "--json"), argv.end());
  return argv;
}

// ------------------------------------------------------------------ file names

TEST(Images, TitlesKeepEveryLetterAndLoseOnlyWhatIsUnsafe) {
  Friends f;
  World& w = f.w;
  const User& a = f.a;
  const User& b = f.b;
  ChatClient& cb = *f.cb;

  std::string long_cyrillic;
  for (int i = 0; i < 120; ++i) long_cyrillic += "я";  // 240 bytes: a name a file can have
  std::string cut;
  for (int i = 0; i < 98; ++i) cut += "я";  // 196 bytes + ".jpg": the 200-byte limit
  struct Case {
    std::string title;
    std::string saved;  // the file name it must arrive as
    bool valid_utf8 = true;
  };
  const std::vector<Case> cases = {
      {"Привет мир.jpg", "received_Привет мир.jpg"},
      {"日本語 ☃ (2).png", "received_日本語 ☃ (2).png"},
      {"invoice\xe2\x80\xae" "gpj.exe", "received_invoice_gpj.exe"},    // U+202E would show "invoiceexe.jpg"
      {"bad\xff" "name.jpg", "received_bad_name.jpg", false},           // not UTF-8
      {"tab\there\x1b[31m\xc2\x9b.txt", "received_tab_here_[31m_.txt"},  // C0, ESC, C1
      {".hidden Ünïcode", "received_hidden Ünïcode"},
      {long_cyrillic + ".jpg", "received_" + cut + ".jpg"},
  };
  fs::create_directories(w.tmp().Sub("src"));
  for (const auto& c : cases) {
    SCOPED_TRACE("title: " + c.title);
    std::string src = w.tmp().Sub("src/") + c.title;
    std::string content = "content of " + c.title + "\n" + RandomBytes(3000);
    WriteFile(src, content);
    RunResult r = w.Run(a, {"single_image", "bob", src});
    ASSERT_TRUE(r.ok()) << r.Describe();
    json img = cb.WaitFor(Like({{"type", "image"}, {"from", "alice"}}), "image");
    std::string path = Str(img, "path");
    EXPECT_EQ(fs::path(path).filename().string(), c.saved) << img.dump();
    EXPECT_EQ(fs::path(path).parent_path(), fs::path(b.downloads)) << path;
    if (c.valid_utf8) {
      EXPECT_EQ(Str(img, "title"), c.title) << "the title itself travels unchanged";
    }
    ASSERT_TRUE(fs::is_regular_file(path)) << path;
    EXPECT_EQ(ReadFile(path), content);
  }
}

// ------------------------------------------------------------------ arguments

TEST(Arguments, DoubleDashEndsTheOptionsAndIsNotPartOfTheText) {
  Friends f;
  World& w = f.w;
  const User& a = f.a;
  ChatClient& ca = *f.ca;
  ChatClient& cb = *f.cb;

  // fastchat --user alice single_message bob -- "--json after dashdash"
  RunResult r = w.Run(a, {"single_message", "bob", "--", "--json after dashdash"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(Str(NextMessage(cb, "alice"), "text"), "--json after dashdash");
  // Before the command too.
  r = w.Run(a, {"--", "single_message", "bob", "--verbose"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(Str(NextMessage(cb, "alice"), "text"), "--verbose");
  // Only the first "--" is taken: a second one is text.
  r = w.Run(a, {"single_message", "bob", "--", "--"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(Str(NextMessage(cb, "alice"), "text"), "--");
  // Words after the command are never options, "--" or not.
  r = w.Run(a, {"single_message", "bob", "--json", "-v"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(Str(NextMessage(cb, "alice"), "text"), "--json -v");

  // Lines typed in chat are not option-parsed: "--" there is text.
  ca.CommandOk("single_message bob -- typed in chat");
  EXPECT_EQ(Str(NextMessage(cb, "alice"), "text"), "-- typed in chat");
  ca.CommandOk("single_message bob --json");
  EXPECT_EQ(Str(NextMessage(cb, "alice"), "text"), "--json");
}

// ------------------------------------------------------------------ wrong password

TEST(Login, OneWordingAndOneCodeForAWrongPasswordWhicheverSideRefuses) {
  World w;
  User a = w.Register("alice");
  const std::string kWords = "unknown user or wrong password";

  // A copy of alice's home as it is now: a second device, say.
  const std::string old_home = w.tmp().Sub("alice-old-home");
  fs::copy(a.home, old_home, fs::copy_options::recursive);
  ASSERT_TRUE(w.RunOk(a, {"--new-password", "pw-new-and-long", "change_password"}).value("ok", false));

  std::vector<std::pair<std::string, RunResult>> refused;
  // 1. The local store refuses: a wrong password, and no server to ask
  //    (nothing listens on port 1), so nobody else could have refused.
  User wrong = a;
  wrong.password = "not-the-password";
  {
    std::vector<std::string> argv = w.GlobalArgs(wrong);
    argv.at(std::find(argv.begin(), argv.end(), "--server") - argv.begin() + 1) = "127.0.0.1:1";
    argv.push_back("friends");
    refused.emplace_back("local store", RunClientOnce(argv, w.tmp().Sub("local.stderr"), kDefaultTimeout));
  }
  // 2. The server refuses an unknown user (no local store here).
  refused.emplace_back("server, unknown user", w.Run(a, {"friends"}, Millis(60000), std::string("nobody")));
  // 3. The server refuses a wrong password for a user this home has no store of.
  User elsewhere = wrong;
  elsewhere.home = w.tmp().Sub("empty-home", true);
  refused.emplace_back("server, no store here", w.Run(elsewhere, {"friends"}));
  // 4. The store opens (the old password, in the old copy) but the server
  //    has the new one.
  User old_copy = a;
  old_copy.home = old_home;
  refused.emplace_back("server, store opened", w.Run(old_copy, {"friends"}));

  for (const auto& [who, r] : refused) {
    SCOPED_TRACE(who);
    EXPECT_EQ(r.exit_code, 1) << r.Describe();
    EXPECT_EQ(r.code(), "BAD_CREDENTIALS") << r.Describe();
    EXPECT_EQ(Str(r.result(), "error"), kWords) << r.Describe();
  }
  // In text mode the two sides print the very same line.
  std::vector<std::string> argv = Human(w.GlobalArgs(wrong));
  argv.push_back("friends");
  RunResult local = RunClientOnce(argv, w.tmp().Sub("h1.stderr"), kDefaultTimeout);
  argv = Human(w.GlobalArgs(old_copy));
  argv.push_back("friends");
  RunResult server = RunClientOnce(argv, w.tmp().Sub("h2.stderr"), kDefaultTimeout);
  EXPECT_EQ(local.out, "error (friends): BAD_CREDENTIALS: " + kWords + "\n") << local.Describe();
  EXPECT_EQ(server.out, local.out) << server.Describe();
}

// ------------------------------------------------------------------ help

TEST(Help, EveryCommandHasUsageADescriptionAndAnExample) {
  TempDir tmp("fastchat-help");
  int n = 0;
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), ClientBinary());
    return RunClientOnce(args, tmp.Sub("help-" + std::to_string(++n) + ".stderr"), kDefaultTimeout);
  };
  // The list names every command and the session modes.
  RunResult list = run({"--json", "help"});
  ASSERT_TRUE(list.ok()) << list.Describe();
  std::string text = Str(list.result(), "text");
  std::vector<std::string> topics;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("  ", 0) == 0) {
      topics.push_back(line.substr(2, line.find(' ', 2) - 2));
    } else if (line.rfind("Session modes: ", 0) == 0) {
      std::istringstream modes(line.substr(15));
      for (std::string word; modes >> word;)
        if (word != "|" && word != "NAME" && word != "FILE") topics.push_back(word);
    }
  }
  ASSERT_GE(topics.size(), 23u) << text;
  for (const char* must : {"single_message", "register", "chat", "change_password"})
    EXPECT_NE(std::find(topics.begin(), topics.end(), must), topics.end()) << must << " not listed:\n" << text;
  std::set<std::string> seen;
  for (const std::string& t : topics) {
    if (!seen.insert(t).second) continue;  // pending is both
    SCOPED_TRACE("help " + t);
    RunResult r = run({"--json", "help", t});
    ASSERT_TRUE(r.ok()) << r.Describe();
    std::string h = Str(r.result(), "text");
    EXPECT_EQ(h.rfind("usage: ", 0), 0u) << h;
    EXPECT_TRUE(Has(h.substr(0, h.find('\n')), t)) << h;
    std::size_t ex = h.find("\nexample:\n");
    ASSERT_NE(ex, std::string::npos) << h;
    EXPECT_GT(ex - h.find('\n'), 40u) << "no description:\n" << h;
    EXPECT_TRUE(Has(h.substr(ex), t)) << h;
  }
  // Text mode, and an unknown command.
  RunResult human = run({"help", "single_message"});
  EXPECT_EQ(human.exit_code, 0) << human.Describe();
  EXPECT_EQ(human.out.rfind("usage: single_message USER TEXT...\n", 0), 0u) << human.out;
  EXPECT_TRUE(Has(human.out, "one-shot:  fastchat --user alice single_message bob see you at 8")) << human.out;
  RunResult unknown = run({"--json", "help", "frobnicate"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.Describe();
  EXPECT_EQ(unknown.code(), "USAGE") << unknown.Describe();

  // Inside chat.
  World w;
  User a = w.Register("alice");
  auto ca = w.Chat(a);
  json k = ca->CommandOk("help kick");
  EXPECT_EQ(Str(k, "topic"), "kick");
  EXPECT_EQ(Str(k, "text").rfind("usage: kick GROUP USER\n", 0), 0u) << k.dump();
  EXPECT_TRUE(Has(Str(k, "text"), "in chat:   kick climbers carol")) << k.dump();
  json all = ca->CommandOk("help");
  EXPECT_EQ(Str(all, "text"), text);
  json bad = ca->Command("help frobnicate");
  EXPECT_EQ(Str(bad, "code"), "USAGE") << bad.dump();
}

}  // namespace
}  // namespace fastchat::testing
