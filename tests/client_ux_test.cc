// The client as a user meets it (issue 8), with real server and client
// processes: file names in any script, "--" on the command line, one wording
// for a wrong password, help for every command, and the history kept in the
// local store across restarts.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "harness/fastchat.h"

namespace fastchat::testing {
namespace {

namespace fs = std::filesystem;

std::int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

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
  for (const char* must : {"history", "search", "single_message", "register", "chat", "change_password"})
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

// ------------------------------------------------------------------ history

// The entries of a history or search result as "from|kind|text-or-title".
std::vector<std::string> Entries(const json& result) {
  std::vector<std::string> out;
  for (const auto& e : result.at("entries")) {
    std::string what = e.value("kind", "") == "image" ? Str(e, "title") : Str(e, "text");
    out.push_back(Str(e, "from") + "|" + Str(e, "kind") + "|" + what);
  }
  return out;
}

std::string StoreBytes(const User& u) {
  std::string bytes;
  for (const char* suffix : {"", "-wal"}) {
    std::ifstream in(u.home + "/" + u.name + ".fcdb" + suffix, std::ios::binary);
    bytes += std::string(std::istreambuf_iterator<char>(in), {});
  }
  return bytes;
}

TEST(History, EverythingSentAndReceivedIsKeptSealedAcrossRestarts) {
  const std::int64_t start = NowMs();
  Friends f;
  World& w = f.w;
  const User& a = f.a;
  const User& b = f.b;
  {
    ChatClient& ca = *f.ca;
    ChatClient& cb = *f.cb;
    ca.CommandOk("single_message bob hello bob");
    NextMessage(cb, "alice");
    cb.CommandOk("single_message alice hi alice, Ünïcode ✓");
    NextMessage(ca, "bob");
    ASSERT_TRUE(w.Run(a, {"single_message", "bob", "from", "a", "one-shot"}).ok());
    NextMessage(cb, "alice");
    std::string src = w.tmp().Sub("notes ✎.txt");
    WriteFile(src, "my notes");
    ca.CommandOk("single_image bob " + src);
    cb.WaitFor(Like({{"type", "image"}, {"from", "alice"}}), "image");

    json g = ca.CommandOk("create_group climbers");
    std::uint64_t gid = AsU64(g["group_id"]);
    ca.CommandOk("add_member climbers bob");
    ca.WaitFor(Like({{"type", "group_added"}, {"group_id", gid}}), "the notice at alice");
    cb.WaitFor(Like({{"type", "group_added"}, {"group_id", gid}}), "the notice at bob");
    cb.WaitFor(GroupKey(gid, 1));
    cb.CommandOk("group_message climbers Rope check at 7");
    ca.WaitFor(GroupMsg(gid, "bob", "Rope check at 7"));
    // history works inside chat too.
    json in_chat = ca.CommandOk("history bob 1");
    EXPECT_EQ(Entries(in_chat), (std::vector<std::string>{"alice|image|notes ✎.txt"}));
    EXPECT_EQ(ca.Quit(), 0);
    EXPECT_EQ(cb.Quit(), 0);
  }
  const std::int64_t end = NowMs();

  // New processes: what the chats kept is there, with names and times.
  json h = w.RunOk(a, {"history", "bob"});
  EXPECT_EQ(Str(h, "user"), "bob");
  EXPECT_EQ(Entries(h), (std::vector<std::string>{
                            "alice|notice|you asked bob to be your friend",
                            "bob|notice|bob accepted your friend request",
                            "alice|message|hello bob",
                            "bob|message|hi alice, Ünïcode ✓",
                            "alice|message|from a one-shot",
                            "alice|image|notes ✎.txt",
                        }));
  for (const auto& e : h["entries"]) {
    EXPECT_GE(e.value("time_ms", std::int64_t{0}), start) << e.dump();
    EXPECT_LE(e.value("time_ms", std::int64_t{0}), end) << e.dump();
    EXPECT_EQ(Str(e, "time").back(), 'Z') << e.dump();
    EXPECT_EQ(e.value("outgoing", false), Str(e, "from") == "alice") << e.dump();
  }
  EXPECT_EQ(Entries(w.RunOk(a, {"history", "bob", "2"})),
            (std::vector<std::string>{"alice|message|from a one-shot", "alice|image|notes ✎.txt"}));
  json hb = w.RunOk(b, {"history", "alice"});
  EXPECT_EQ(Entries(hb), (std::vector<std::string>{
                             "alice|notice|alice asked to be your friend",
                             "bob|notice|you accepted alice's friend request",
                             "alice|message|hello bob",
                             "bob|message|hi alice, Ünïcode ✓",
                             "alice|message|from a one-shot",
                             "alice|image|notes ✎.txt",
                         }));
  std::string saved = Str(hb["entries"][5], "path");
  EXPECT_EQ(fs::path(saved).parent_path(), fs::path(b.downloads)) << hb.dump();
  EXPECT_EQ(ReadFile(saved), "my notes");
  EXPECT_EQ(Entries(w.RunOk(a, {"history", "climbers"})),
            (std::vector<std::string>{"alice|notice|you created the group climbers",
                                      "alice|notice|bob was added to the group",
                                      "bob|message|Rope check at 7"}));
  EXPECT_EQ(Entries(w.RunOk(b, {"history", "climbers"})),
            (std::vector<std::string>{"alice|notice|you were added to the group",
                                      "bob|message|Rope check at 7"}));
  // Text mode.
  std::vector<std::string> argv = Human(w.GlobalArgs(a));
  argv.insert(argv.end(), {"history", "bob"});
  RunResult human = RunClientOnce(argv, w.tmp().Sub("human.stderr"), kDefaultTimeout);
  EXPECT_EQ(human.exit_code, 0) << human.Describe();
  EXPECT_TRUE(Has(human.out, "history with bob (6, oldest first):\n")) << human.out;
  EXPECT_TRUE(Has(human.out, "  * bob accepted your friend request\n")) << human.out;
  EXPECT_TRUE(Has(human.out, "  bob: hi alice, Ünïcode ✓\n")) << human.out;
  EXPECT_TRUE(Has(human.out, "  alice sent a file \"notes ✎.txt\" (8 bytes): ")) << human.out;

  // search: any conversation, letters in any case, file names too.
  json s = w.RunOk(a, {"search", "rope CHECK"});
  EXPECT_EQ(Entries(s), (std::vector<std::string>{"bob|message|Rope check at 7"}));
  EXPECT_EQ(Str(s["entries"][0], "group"), "climbers");
  EXPECT_EQ(s.value("more", true), false);
  json s2 = w.RunOk(a, {"search", "hello"});
  EXPECT_EQ(Entries(s2), (std::vector<std::string>{"alice|message|hello bob"}));
  EXPECT_EQ(Str(s2["entries"][0], "with"), "bob");
  EXPECT_EQ(Entries(w.RunOk(a, {"search", "✎"})), (std::vector<std::string>{"alice|image|notes ✎.txt"}));
  EXPECT_TRUE(w.RunOk(a, {"search", "not said by anyone"})["entries"].empty());
  // Unknown conversation, bad N.
  EXPECT_EQ(w.Run(a, {"history", "nobody"}).code(), "NOT_FOUND");
  EXPECT_EQ(w.Run(a, {"history", "bob", "0"}).code(), "USAGE");

  // Sealed at rest: no text, file name or notice is in the store files.
  for (const User& u : {a, b}) {
    std::string bytes = StoreBytes(u);
    ASSERT_FALSE(bytes.empty());
    for (const char* plain : {"hello bob", "Rope check", "from a one-shot", "notes ✎", "hi alice", "accepted your"})
      EXPECT_FALSE(Has(bytes, plain)) << u.name << "'s store holds \"" << plain << "\" in the clear";
  }

  // A group named like a user: history asks which, user:NAME or group:NAME.
  ASSERT_TRUE(w.RunOk(a, {"create_group", "bob"}).value("ok", false));
  json both = w.Run(a, {"history", "bob"}).result();
  EXPECT_EQ(Str(both, "code"), "AMBIGUOUS") << both.dump();
  EXPECT_EQ(Entries(w.RunOk(a, {"history", "user:bob"})), Entries(h));
  EXPECT_EQ(Entries(w.RunOk(a, {"history", "group:bob"})),
            (std::vector<std::string>{"alice|notice|you created the group bob"}));

  // After a password change, the history opens with the new password only.
  ASSERT_TRUE(w.RunOk(a, {"--new-password", "alice-new-pw", "change_password"}).value("ok", false));
  EXPECT_EQ(w.Run(a, {"history", "user:bob"}).code(), "BAD_CREDENTIALS");
  User a2 = a;
  a2.password = "alice-new-pw";
  EXPECT_EQ(Entries(w.RunOk(a2, {"history", "user:bob"})), Entries(h));

  // The local store is all history and search read: no server needed.
  ASSERT_EQ(w.server().Stop(), 0);
  EXPECT_EQ(Entries(w.RunOk(a2, {"history", "climbers"})).size(), 3u);
  EXPECT_EQ(Entries(w.RunOk(a2, {"search", "hello"})).size(), 1u);
}

// What a one-shot `pending` receives is kept too.
TEST(History, WhatPendingFetchesIsKept) {
  Friends f;
  World& w = f.w;
  const User& b = f.b;
  {
    ChatClient& ca = *f.ca;
    ChatClient& cb = *f.cb;
    EXPECT_EQ(cb.Quit(), 0);
    ca.CommandOk("single_message bob while you were away");
    EXPECT_EQ(ca.Quit(), 0);
  }
  ASSERT_TRUE(w.RunOk(b, {"pending"}).value("ok", false));
  json h = w.RunOk(b, {"history", "alice"});
  EXPECT_EQ(Entries(h), (std::vector<std::string>{"alice|notice|alice asked to be your friend",
                                                  "bob|notice|you accepted alice's friend request",
                                                  "alice|message|while you were away"}));
}

}  // namespace
}  // namespace fastchat::testing
