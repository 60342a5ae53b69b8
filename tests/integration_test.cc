// End-to-end tests: a real fastchat-server process and separate fastchat
// client processes (one per user and session) talking over TCP.
//
// Every wait is on an event (a JSON line from a client, a process exit),
// never a sleep; timeouts only bound how long a broken build can hang.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fastchat.pb.h"
#include "fastchat/crypto.h"
#include "fastchat/frame.h"
#include "harness/fastchat.h"
#include "harness/metrics_scrape.h"
#include "local_store.h"  // the client's key store: the attacker reads its own keys

namespace fastchat::testing {
namespace {

namespace fs = std::filesystem;

constexpr Millis kBigTimeout{180000};  // 64 MiB image end to end

// The {"type":"decrypt_summary"} line of a decrypt-frames run.
json DecryptSummary(const RunResult& r) {
  for (const auto& j : r.lines) {
    if (j.value("type", "") == "decrypt_summary") return j;
  }
  throw std::runtime_error("no decrypt_summary line\n" + r.Describe());
}

// An attacker's attempt, independent of the client's decrypt-frames: open
// every group message of `gid` recorded in `file` with EVERY key of that
// group that `u`'s key store holds (any epoch), using the frame's own
// associated data (docs/protocol.md). This catches an admin that "rotates"
// by relabelling the old key, which decrypt-frames (looking keys up by the
// frame's epoch) would not.
struct Attack {
  int keys = 0;          // group keys the attacker holds
  int group_frames = 0;  // group messages in the file
  std::map<std::uint64_t, int> opened_by_epoch;
  std::vector<std::string> plaintexts;
  int opened() const {
    int n = 0;
    for (const auto& [e, c] : opened_by_epoch) n += c;
    return n;
  }
};

void PutU64(std::string* s, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU32(std::string* s, std::uint32_t v) {
  for (int i = 3; i >= 0; --i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

Attack TryAllKeys(const User& u, const std::string& file, std::uint64_t gid) {
  if (!crypto::Init()) throw std::runtime_error("libsodium init failed");
  std::filesystem::path path;
  Status st = client::LocalStore::Find(u.home, u.name, &path);
  if (!st.ok()) throw std::runtime_error("no key store for " + u.name + ": " + st.ToString());
  std::unique_ptr<client::LocalStore> store;
  st = client::LocalStore::Open(path, u.password, &store);
  if (!st.ok()) throw std::runtime_error("cannot open key store: " + st.ToString());
  Attack a;
  std::vector<std::string> keys;
  for (std::uint64_t e = 1; e <= 64; ++e) {
    std::string k;
    if (store->GetGroupKey(gid, e, &k).ok()) keys.push_back(k);
  }
  a.keys = static_cast<int>(keys.size());
  std::string data = ReadFile(file);
  FrameDecoder dec(1u << 30);
  dec.Append(data.data(), data.size());
  for (;;) {
    std::string_view payload;
    bool have = false;
    if (!dec.Next(&payload, &have).ok() || !have) break;
    wire::Envelope env;
    wire::Event ev;
    if (!env.ParseFromArray(payload.data(), static_cast<int>(payload.size())) || !env.has_deliver() ||
        !ev.ParseFromString(env.deliver().event()) || !ev.has_group() || ev.group().group_id() != gid) {
      continue;
    }
    const auto& g = ev.group();
    ++a.group_frames;
    std::string ad = "fastchat-grp-v1";
    PutU64(&ad, g.group_id());
    PutU64(&ad, g.epoch());
    PutU64(&ad, ev.from_id());
    ad += g.msg_id();
    ad.push_back(static_cast<char>(g.kind()));
    PutU32(&ad, g.chunk_index());
    PutU32(&ad, g.chunk_count());
    for (const auto& k : keys) {
      std::string plain;
      if (crypto::AeadDecrypt(g.ciphertext(), ad, g.nonce(), k, &plain).ok()) {
        ++a.opened_by_epoch[g.epoch()];
        a.plaintexts.push_back(plain);
        break;
      }
    }
  }
  return a;
}

// ------------------------------------------------------------------ accounts

TEST(Register, AssignsDistinctIdsAndRejectsDuplicateName) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  User c = w.Register("carol");
  EXPECT_NE(a.id, 0u);
  EXPECT_NE(a.id, b.id);
  EXPECT_NE(b.id, c.id);
  EXPECT_NE(a.id, c.id);

  // Same name from another client home: refused, exit status 1.
  User dup = w.MakeUser("alice-again");
  RunResult r = w.Run(dup, {"register", "alice"}, Millis(60000), std::string());
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_FALSE(r.result().value("ok", true)) << r.Describe();
  EXPECT_EQ(r.code(), "NAME_TAKEN") << r.Describe();

  // The original alice still works.
  EXPECT_TRUE(w.Run(a, {"friends"}).ok());
}

TEST(Login, ByNameAndByNumericId) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");

  auto by_name = w.Chat(a, /*wait_ready=*/false);
  json ready = by_name->WaitFor("ready");
  EXPECT_EQ(AsU64(ready["user_id"]), a.id) << ready.dump();
  EXPECT_EQ(Str(ready, "user"), "alice") << ready.dump();
  by_name->Quit();

  auto by_id = w.Chat(b, /*wait_ready=*/false, {}, b.id_str());
  json r2 = by_id->WaitFor("ready");
  EXPECT_EQ(AsU64(r2["user_id"]), b.id) << r2.dump();
  EXPECT_EQ(Str(r2, "user"), "bob") << r2.dump();

  // One-shot by id.
  RunResult r = w.Run(a, {"friends"}, Millis(60000), a.id_str());
  EXPECT_TRUE(r.ok()) << r.Describe();

  // A session logged in by id can be reached by name and vice versa.
  auto ca = w.Chat(a);
  w.MakeFriends(*ca, a, *by_id, b);
  ca->CommandOk("single_message bob to the id session");
  by_id->WaitFor(Msg("alice", "to the id session"), "message from alice");
}

TEST(Login, WrongPasswordAndUnknownUserAreRefused) {
  World w;
  User a = w.Register("alice");

  User wrong = a;
  wrong.password = "not-the-password";
  RunResult r1 = w.Run(wrong, {"friends"});
  EXPECT_EQ(r1.exit_code, 1) << r1.Describe();
  EXPECT_EQ(r1.code(), "BAD_CREDENTIALS") << r1.Describe();

  // The server answers BAD_CREDENTIALS for an unknown user too (see
  // bad_input_test's raw login test); through the client, an unknown user
  // has no local key store, so the client refuses before asking the server.
  for (const std::string who : {"nobody", "987654"}) {
    RunResult r = w.Run(a, {"friends"}, Millis(60000), who);
    EXPECT_EQ(r.exit_code, 1) << r.Describe();
    EXPECT_FALSE(r.result().value("ok", true)) << r.Describe();
    EXPECT_TRUE(r.code() == "NO_STORE" || r.code() == "BAD_CREDENTIALS") << r.Describe();
  }

  // A receiving session with a wrong password does not get to "ready"; the
  // chat ends with a failure.
  auto c = w.Chat(wrong, /*wait_ready=*/false);
  auto code = c->WaitExit(kDefaultTimeout);
  ASSERT_TRUE(code.has_value()) << "chat with a wrong password kept running\n" << c->Diagnostics();
  EXPECT_NE(*code, 0);
  for (const auto& j : c->history()) EXPECT_NE(j.value("type", ""), "ready") << j.dump();
}

// ------------------------------------------------------------------ friends

TEST(Friends, RequestAcceptThenDirectMessagesBothWays) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);

  ca->CommandOk("add_friend bob");
  json req = cb->WaitFor(Like({{"type", "friend_request"}, {"from", "alice"}}), "friend_request");
  EXPECT_EQ(AsU64(req["from_id"]), a.id);

  json fl = cb->CommandOk("friends");
  EXPECT_EQ(Names(fl["requests"]), std::vector<std::string>{"alice"}) << fl.dump();
  EXPECT_TRUE(Names(fl["friends"]).empty()) << fl.dump();

  cb->CommandOk("accept alice");
  json acc = ca->WaitFor(Like({{"type", "friend_accepted"}, {"from", "bob"}}), "friend_accepted");
  EXPECT_EQ(AsU64(acc["from_id"]), b.id);

  EXPECT_EQ(Names(ca->CommandOk("friends")["friends"]), std::vector<std::string>{"bob"});
  json fl2 = cb->CommandOk("friends");
  EXPECT_EQ(Names(fl2["friends"]), std::vector<std::string>{"alice"}) << fl2.dump();
  EXPECT_TRUE(Names(fl2["requests"]).empty()) << fl2.dump();

  ca->CommandOk("single_message bob hello bob, how are you?");
  json m1 = cb->WaitFor(Msg("alice", "hello bob, how are you?"), "alice's message");
  EXPECT_EQ(AsU64(m1["from_id"]), a.id);

  cb->CommandOk("single_message alice fine, thanks! ünïcödé ☃");
  json m2 = ca->WaitFor(Msg("bob", "fine, thanks! ünïcödé ☃"), "bob's reply");
  EXPECT_EQ(AsU64(m2["from_id"]), b.id);

  // Addressing by numeric id works too.
  ca->CommandOk("single_message " + b.id_str() + " by id");
  cb->WaitFor(Msg("alice", "by id"), "message addressed by id");

  // One-shot sends reach the receiving session.
  json r = w.RunOk(a, {"single_message", "bob", "from", "a", "one-shot"});
  cb->WaitFor(Msg("alice", "from a one-shot"), "one-shot message");

  // Adding again is refused.
  json again = ca->Command("add_friend bob");
  EXPECT_FALSE(again.value("ok", true)) << again.dump();
}

TEST(Friends, DeclinedRequestMakesNoFriendship) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);

  ca->CommandOk("add_friend bob");
  cb->WaitFor(Like({{"type", "friend_request"}, {"from", "alice"}}), "friend_request");
  cb->CommandOk("decline alice");
  ca->WaitFor(Like({{"type", "friend_declined"}, {"from", "bob"}}), "friend_declined");

  EXPECT_TRUE(Names(ca->CommandOk("friends")["friends"]).empty());
  json fb = cb->CommandOk("friends");
  EXPECT_TRUE(Names(fb["friends"]).empty()) << fb.dump();
  EXPECT_TRUE(Names(fb["requests"]).empty()) << fb.dump();

  json r = ca->Command("single_message bob still there?");
  EXPECT_FALSE(r.value("ok", true)) << r.dump();
  EXPECT_EQ(Str(r, "code"), "NOT_FRIENDS") << r.dump();

  // Accepting a request that was already declined is refused.
  json acc = cb->Command("accept alice");
  EXPECT_FALSE(acc.value("ok", true)) << acc.dump();
}

TEST(Direct, MessageToNonFriendIsRefused) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);

  json r = ca->Command("single_message bob hi stranger");
  EXPECT_FALSE(r.value("ok", true)) << r.dump();
  EXPECT_EQ(Str(r, "code"), "NOT_FRIENDS") << r.dump();

  RunResult once = w.Run(a, {"single_message", "bob", "hi"});
  EXPECT_EQ(once.exit_code, 1) << once.Describe();
  EXPECT_EQ(once.code(), "NOT_FRIENDS") << once.Describe();

  // A pending (unanswered) request is not a friendship either.
  ca->CommandOk("add_friend bob");
  cb->WaitFor(OfType("friend_request"));
  json r2 = ca->Command("single_message bob hi again");
  EXPECT_EQ(Str(r2, "code"), "NOT_FRIENDS") << r2.dump();

  // Bob gets nothing: the next thing he sees is a message sent after
  // friendship.
  cb->CommandOk("accept alice");
  ca->WaitFor(OfType("friend_accepted"));
  ca->CommandOk("single_message bob now we are friends");
  json m = cb->WaitFor(OfType("message"));
  EXPECT_EQ(Str(m, "text"), "now we are friends") << m.dump();
}

TEST(Direct, TwoHundredMessagesArriveInOrder) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);
  w.MakeFriends(*ca, a, *cb, b);

  constexpr int kN = 200;
  for (int i = 0; i < kN; ++i) ca->Send("single_message bob order-" + std::to_string(i));
  for (int i = 0; i < kN; ++i) {
    json r = ca->WaitFor(ResultOf("single_message"), "result #" + std::to_string(i));
    ASSERT_TRUE(r.value("ok", false)) << "send #" << i << ": " << r.dump();
  }
  std::uint64_t last_seq = 0;
  for (int i = 0; i < kN; ++i) {
    json m = cb->WaitFor(OfType("message"));
    ASSERT_EQ(Str(m, "text"), "order-" + std::to_string(i)) << m.dump();
    if (m.contains("seq")) {
      std::uint64_t seq = AsU64(m["seq"]);
      EXPECT_GT(seq, last_seq) << m.dump();
      last_seq = seq;
    }
  }
  // And nothing more (no duplicates): a marker sent afterwards is next.
  ca->CommandOk("single_message bob the-end");
  json end = cb->WaitFor(OfType("message"));
  EXPECT_EQ(Str(end, "text"), "the-end") << end.dump();
}

// ------------------------------------------------------------------ images

TEST(Images, SixtyFourMiBImageArrivesByteIdentical) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);
  w.MakeFriends(*ca, a, *cb, b);

  std::string src = w.tmp().Sub("holiday.jpg");
  WriteFile(src, RandomBytes(64u << 20));

  json r = ca->CommandOk("single_image bob " + src, kBigTimeout);
  if (r.contains("bytes")) {
    EXPECT_EQ(AsU64(r["bytes"]), 64u << 20) << r.dump();
  }

  json img = cb->WaitFor(Like({{"type", "image"}, {"from", "alice"}}), "image", kBigTimeout);
  EXPECT_EQ(AsU64(img["from_id"]), a.id);
  EXPECT_EQ(Str(img, "title"), "holiday.jpg") << img.dump();
  EXPECT_EQ(AsU64(img["bytes"]), 64u << 20) << img.dump();
  std::string path = Str(img, "path");
  EXPECT_TRUE(fs::exists(path)) << img.dump();
  EXPECT_TRUE(fs::equivalent(path, b.downloads + "/received_holiday.jpg")) << img.dump();
  std::string why;
  EXPECT_TRUE(SameFile(src, b.downloads + "/received_holiday.jpg", &why)) << why;
}

// Titles are the basename of the sender's path. Only names a file can have
// are tested here; titles with '/' or a bare ".." (which no real file has,
// but a malicious client could send) are covered by the client's unit test
// of SanitizeTitle.
TEST(Images, OddTitlesLandInsideTheDownloadFolder) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);
  w.MakeFriends(*ca, a, *cb, b);

  const std::vector<std::string> names = {
      "a b;$(x)", "...bashrc", ".bashrc", "-rf", "back\\slash", "%2e%2e%2fetc%2fpasswd",
      "ünï ☃.png", "line\nbreak", std::string(200, 'L') + ".png"};
  fs::create_directories(w.tmp().Sub("src"));
  std::set<std::string> seen_paths;
  for (const auto& name : names) {
    SCOPED_TRACE("title: " + name);
    std::string src = w.tmp().Sub("src/") + name;
    std::string content = "content of " + name + "\n" + RandomBytes(1000);
    WriteFile(src, content);
    RunResult r = w.Run(a, {"single_image", "bob", src});
    ASSERT_TRUE(r.ok()) << r.Describe();
    json img = cb->WaitFor(Like({{"type", "image"}, {"from", "alice"}}), "image '" + name + "'");
    std::string path = Str(img, "path");
    ASSERT_FALSE(path.empty()) << img.dump();
    EXPECT_TRUE(IsInside(b.downloads, path)) << "saved outside the download folder: " << path;
    EXPECT_EQ(fs::path(path).parent_path(), fs::path(b.downloads)) << path;
    EXPECT_EQ(fs::path(path).filename().string().rfind("received_", 0), 0u) << path;
    EXPECT_EQ(fs::path(path).filename().string().find('/'), std::string::npos);
    EXPECT_TRUE(fs::is_regular_file(path)) << path;
    if (fs::is_regular_file(path)) {
      EXPECT_EQ(ReadFile(path), content);
    }
    EXPECT_TRUE(seen_paths.insert(path).second) << "overwrote an earlier download: " << path;
  }
  // Nothing escaped into bob's home or the test root.
  for (const auto& e : fs::directory_iterator(w.tmp().path())) {
    std::string n = e.path().filename().string();
    EXPECT_EQ(n.find("received_"), std::string::npos) << e.path();
    EXPECT_EQ(n.find("bashrc"), std::string::npos) << e.path();
  }
}

TEST(Images, TextSentDuringLargeImageStillArrives) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);
  w.MakeFriends(*ca, a, *cb, b);

  std::string src = w.tmp().Sub("big.bin");
  WriteFile(src, RandomBytes(64u << 20));

  ca->Send("single_image bob " + src);
  // Sent from a second (one-shot) connection while the chat uploads chunks.
  json r = w.RunOk(a, {"single_message", "bob", "while", "the", "image", "uploads"});

  json m = cb->WaitFor(Msg("alice", "while the image uploads"), "text during image", kBigTimeout);
  bool image_first = false;
  for (const auto& j : cb->buffered()) {
    if (j.value("type", "") == "image") image_first = true;
  }
  json img = cb->WaitFor(OfType("image"), kBigTimeout);
  json res = ca->WaitFor(ResultOf("single_image"), "single_image result", kBigTimeout);
  EXPECT_TRUE(res.value("ok", false)) << res.dump();
  std::string why;
  EXPECT_TRUE(SameFile(src, Str(img, "path"), &why)) << why;
  // Ideally the text overtakes the image; timing-dependent, so reported only.
  RecordProperty("text_arrived_before_image_completed", image_first ? "no" : "yes");
  std::cout << "[ info ] text arrived " << (image_first ? "after" : "before")
            << " the 64 MiB image completed\n";
}

// ------------------------------------------------------------------ offline

TEST(Offline, EverythingSentWhileOfflineArrivesOnceInOrder) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  User c = w.Register("carol");
  User d = w.Register("dave");
  auto ca = w.Chat(a);
  auto cc = w.Chat(c);
  auto cd = w.Chat(d);
  {
    auto cb = w.Chat(b);
    w.MakeFriends(*ca, a, *cb, b);
    EXPECT_EQ(cb->Quit(), 0);
  }

  // Bob is offline now.
  std::string pic = w.tmp().Sub("offline.png");
  WriteFile(pic, RandomBytes(700 * 1024 + 17));
  ca->CommandOk("single_message bob off-1");
  ca->CommandOk("single_message bob off-2");
  ca->CommandOk("single_image bob " + pic);
  ca->CommandOk("single_message bob off-3");
  cd->CommandOk("add_friend bob");
  json g = cc->CommandOk("create_group offline-club");
  std::uint64_t gid = AsU64(g["group_id"]);
  cc->CommandOk("add_member " + std::to_string(gid) + " bob");
  cc->CommandOk("group_message " + std::to_string(gid) + " welcome bob");

  // Bob logs in: everything before "ready", in order.
  auto cb = w.Chat(b, /*wait_ready=*/false);
  cb->WaitFor("ready", Millis(60000));
  std::vector<std::string> got;
  for (const auto& j : cb->buffered()) {
    std::string t = j.value("type", "");
    if (t == "message") got.push_back("message:" + Str(j, "from") + ":" + Str(j, "text"));
    if (t == "image") got.push_back("image:" + Str(j, "from") + ":" + Str(j, "title"));
    if (t == "friend_request") got.push_back("friend_request:" + Str(j, "from"));
    if (t == "group_added") got.push_back("group_added:" + Str(j, "user"));
    if (t == "group_key") got.push_back("group_key:" + Str(j, "epoch"));
    if (t == "group_message") got.push_back("group_message:" + Str(j, "from") + ":" + Str(j, "text"));
    if (t == "undecryptable") got.push_back("undecryptable");
  }
  std::vector<std::string> want = {"message:alice:off-1",    "message:alice:off-2",
                                   "image:alice:offline.png", "message:alice:off-3",
                                   "friend_request:dave",    "group_added:bob",
                                   "group_key:1",            "group_message:carol:welcome bob"};
  EXPECT_EQ(got, want) << cb->Diagnostics();
  std::string why;
  EXPECT_TRUE(SameFile(pic, b.downloads + "/received_offline.png", &why)) << why;

  // Bob can act on what he got while offline.
  cb->CommandOk("accept dave");
  cd->WaitFor(Like({{"type", "friend_accepted"}, {"from", "bob"}}), "friend_accepted");
  cb->CommandOk("group_message " + std::to_string(gid) + " thanks carol");
  cc->WaitFor(GroupMsg(gid, "bob", "thanks carol"), "bob's group message");
  EXPECT_EQ(cb->Quit(), 0);

  // Everything was acknowledged: the next login gets none of it again.
  auto cb2 = w.Chat(b, /*wait_ready=*/false);
  cb2->WaitFor("ready", Millis(60000));
  for (const auto& j : cb2->buffered()) {
    std::string t = j.value("type", "");
    EXPECT_TRUE(t != "message" && t != "image" && t != "friend_request" && t != "group_added" &&
                t != "group_key" && t != "group_message")
        << "delivered again at second login: " << j.dump();
  }
  // The second session is live.
  ca->CommandOk("single_message bob back online");
  cb2->WaitFor(Msg("alice", "back online"), "live message");
}

// "A request the server has answered with Ok is never lost": queued
// deliveries survive a clean restart and a crash (SIGKILL) of the server.
TEST(Offline, QueuedDeliveriesSurviveServerRestartAndCrash) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  {
    auto ca = w.Chat(a);
    auto cb = w.Chat(b);
    w.MakeFriends(*ca, a, *cb, b);
    EXPECT_EQ(cb->Quit(), 0);
    ca->CommandOk("single_message bob before restart");
  }
  w.RestartServer(/*crash=*/false);
  w.RunOk(a, {"single_message", "bob", "after", "restart"});
  std::string pic = w.tmp().Sub("durable.png");
  WriteFile(pic, RandomBytes(300 * 1024));
  w.RunOk(a, {"single_image", "bob", pic});
  w.RunOk(a, {"single_message", "bob", "just", "before", "the", "crash"});
  w.RestartServer(/*crash=*/true);

  auto cb = w.Chat(b, /*wait_ready=*/false);
  cb->WaitFor("ready");
  std::vector<std::string> got;
  for (const auto& j : cb->buffered()) {
    std::string t = j.value("type", "");
    if (t == "message") got.push_back(Str(j, "text"));
    if (t == "image") got.push_back("image:" + Str(j, "title"));
  }
  EXPECT_EQ(got, (std::vector<std::string>{"before restart", "after restart", "image:durable.png",
                                           "just before the crash"}));
  std::string why;
  EXPECT_TRUE(SameFile(pic, b.downloads + "/received_durable.png", &why)) << why;
}

TEST(Offline, PendingCommandFetchesWhatArrivedWhileOffline) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto ca = w.Chat(a);
  {
    auto cb = w.Chat(b);
    w.MakeFriends(*ca, a, *cb, b);
    cb->Quit();
  }
  ca->CommandOk("single_message bob while you were out");
  ca->CommandOk("single_message bob and another one");

  // The one-shot `pending` subcommand shows the queued messages.
  RunResult p = w.Run(b, {"pending"});
  ASSERT_EQ(p.exit_code, 0) << p.Describe();
  std::vector<std::string> texts;
  for (const auto& j : p.lines) {
    if (j.value("type", "") == "message") texts.push_back(Str(j, "text"));
  }
  EXPECT_EQ(texts, (std::vector<std::string>{"while you were out", "and another one"}))
      << p.Describe();

  // `pending` acknowledged them: the next receiving session starts clean.
  auto cb = w.Chat(b, /*wait_ready=*/false);
  cb->WaitFor("ready");
  for (const auto& j : cb->buffered()) {
    EXPECT_NE(j.value("type", ""), "message") << "delivered again after `pending`: " << j.dump();
  }
  // In a chat session, `pending` asks the server again; nothing new comes.
  cb->CommandOk("pending");
  ca->CommandOk("single_message bob after pending");
  json next = cb->WaitFor(OfType("message"));
  EXPECT_EQ(Str(next, "text"), "after pending") << next.dump();
}

// ------------------------------------------------------------------ groups

// alice (admin) with bob, carol and dave as members, each with a chat.
struct Club {
  explicit Club(World& world, const std::vector<std::string>& extra_bob = {}) : w(world) {
    a = w.Register("alice");
    b = w.Register("bob");
    c = w.Register("carol");
    d = w.Register("dave");
    ca = w.Chat(a);
    cb = w.Chat(b, true, extra_bob);
    cc = w.Chat(c);
    cd = w.Chat(d);
    json g = ca->CommandOk("create_group club");
    gid = AsU64(g["group_id"]);
    EXPECT_EQ(AsU64(g["epoch"]), 1u) << g.dump();
    for (auto* m : {&b, &c, &d}) {
      ca->CommandOk("add_member " + G() + " " + m->name);
    }
    for (auto* cl : {cb.get(), cc.get(), cd.get()}) {
      cl->WaitFor(Like({{"type", "group_added"}, {"group_id", gid}, {"me", true}}),
                  "own group_added");
      cl->WaitFor(GroupKey(gid, 1), "group key epoch 1");
    }
  }
  std::string G() const { return std::to_string(gid); }

  World& w;
  User a, b, c, d;
  std::unique_ptr<ChatClient> ca, cb, cc, cd;
  std::uint64_t gid = 0;
};

TEST(Groups, MessageFromOneMemberReachesAllOthers) {
  World w;
  Club club(w);
  club.cb->CommandOk("group_message " + club.G() + " hello from bob");
  for (auto* cl : {club.ca.get(), club.cc.get(), club.cd.get()}) {
    json m = cl->WaitFor(GroupMsg(club.gid, "bob", "hello from bob"), "bob's group message");
    EXPECT_EQ(AsU64(m["from_id"]), club.b.id);
    EXPECT_EQ(Str(m, "group"), "club") << m.dump();
    EXPECT_EQ(AsU64(m["epoch"]), 1u) << m.dump();
  }
  club.ca->CommandOk("group_message " + club.G() + " hello from the admin");
  for (auto* cl : {club.cb.get(), club.cc.get(), club.cd.get()}) {
    cl->WaitFor(GroupMsg(club.gid, "alice", "hello from the admin"), "admin's group message");
  }

  // Group image from carol to everyone else.
  std::string src = w.tmp().Sub("group-pic.png");
  WriteFile(src, RandomBytes(600 * 1024 + 3));
  club.cc->CommandOk("group_image " + club.G() + " " + src);
  for (auto [cl, u] : {std::pair{club.ca.get(), &club.a}, std::pair{club.cb.get(), &club.b},
                       std::pair{club.cd.get(), &club.d}}) {
    json img = cl->WaitFor(Like({{"type", "group_image"}, {"group_id", club.gid}, {"from", "carol"}}),
                           "carol's group image");
    EXPECT_EQ(Str(img, "title"), "group-pic.png") << img.dump();
    EXPECT_TRUE(IsInside(u->downloads, Str(img, "path"))) << img.dump();
    std::string why;
    EXPECT_TRUE(SameFile(src, Str(img, "path"), &why)) << why;
  }

  // Senders do not get their own messages back, and nobody gets one twice:
  // the next group event each member sees is dave's message.
  club.cd->CommandOk("group_message " + club.G() + " last");
  for (auto* cl : {club.ca.get(), club.cb.get(), club.cc.get()}) {
    json next = cl->WaitFor([](const json& j) {
      std::string t = j.value("type", "");
      return t == "group_message" || t == "group_image";
    }, "next group event");
    EXPECT_EQ(Str(next, "text"), "last") << cl->label() << ": " << next.dump();
  }
}

TEST(Groups, PermissionsAreEnforced) {
  World w;
  Club club(w);
  User e = w.Register("eve");
  auto ce = w.Chat(e);

  auto expect_code = [](const json& r, const std::string& code) {
    EXPECT_FALSE(r.value("ok", true)) << r.dump();
    EXPECT_EQ(Str(r, "code"), code) << r.dump();
  };
  // Non-member cannot send.
  expect_code(ce->Command("group_message " + club.G() + " let me in"), "NOT_MEMBER");
  // Non-admin cannot add or kick.
  expect_code(club.cb->Command("add_member " + club.G() + " eve"), "NOT_ADMIN");
  expect_code(club.cb->Command("kick " + club.G() + " carol"), "NOT_ADMIN");
  // Kicking a non-member.
  expect_code(club.ca->Command("kick " + club.G() + " eve"), "NOT_MEMBER");
  // Adding a member twice, or an unknown user.
  expect_code(club.ca->Command("add_member " + club.G() + " bob"), "ALREADY_MEMBER");
  expect_code(club.ca->Command("add_member " + club.G() + " nosuchuser"), "NO_SUCH_USER");
  // Unknown group.
  expect_code(club.ca->Command("group_message 987654 hello?"), "NO_SUCH_GROUP");
  // The admin cannot leave while others remain.
  json lr = club.ca->Command("leave " + club.G());
  EXPECT_FALSE(lr.value("ok", true)) << lr.dump();

  // Nothing changed: still four members, epoch 1, and nobody got eve's text.
  json mem = club.ca->CommandOk("members " + club.G());
  EXPECT_EQ(Names(mem["members"]), (std::vector<std::string>{"alice", "bob", "carol", "dave"}));
  club.cc->CommandOk("group_message " + club.G() + " still epoch one");
  json m = club.cb->WaitFor(OfType("group_message"));
  EXPECT_EQ(Str(m, "text"), "still epoch one") << m.dump();
  EXPECT_EQ(AsU64(m["epoch"]), 1u) << m.dump();
}

TEST(Groups, KickRotatesKeyAndRemainingMembersKeepTalking) {
  World w;
  Club club(w);
  json k = club.ca->CommandOk("kick " + club.G() + " dave");
  EXPECT_EQ(AsU64(k["epoch"]), 2u) << k.dump();

  json kicked = club.cd->WaitFor(Like({{"type", "group_kicked"}, {"group_id", club.gid}}),
                                 "dave's group_kicked");
  EXPECT_EQ(Str(kicked, "user"), "dave") << kicked.dump();
  EXPECT_EQ(kicked.value("me", false), true) << kicked.dump();
  for (auto* cl : {club.cb.get(), club.cc.get()}) {
    json n = cl->WaitFor(Like({{"type", "group_kicked"}, {"group_id", club.gid}, {"user", "dave"}}),
                         "group_kicked notice");
    EXPECT_EQ(AsU64(n["epoch"]), 2u) << n.dump();
    cl->WaitFor(GroupKey(club.gid, 2), "group key epoch 2");
  }

  club.cb->CommandOk("group_message " + club.G() + " after the kick");
  for (auto* cl : {club.ca.get(), club.cc.get()}) {
    json m = cl->WaitFor(GroupMsg(club.gid, "bob", "after the kick"), "post-kick message");
    EXPECT_EQ(AsU64(m["epoch"]), 2u) << m.dump();
  }
  club.ca->CommandOk("group_message " + club.G() + " admin after the kick");
  club.cb->WaitFor(GroupMsg(club.gid, "alice", "admin after the kick"), "admin post-kick");
  club.cc->WaitFor(GroupMsg(club.gid, "alice", "admin after the kick"), "admin post-kick");

  // Dave is out.
  json r = club.cd->Command("group_message " + club.G() + " am I still here?");
  EXPECT_EQ(Str(r, "code"), "NOT_MEMBER") << r.dump();
  json mem = club.cb->CommandOk("members " + club.G());
  EXPECT_EQ(Names(mem["members"]), (std::vector<std::string>{"alice", "bob", "carol"}));
  json groups = club.cd->CommandOk("groups");
  EXPECT_TRUE(groups["groups"].empty()) << groups.dump();
  // Dave never saw a post-kick message.
  for (const auto& j : club.cd->history()) {
    EXPECT_NE(j.value("type", ""), "group_message") << j.dump();
  }
}

// THE KEY TEST: a kicked member who kept every key it ever had cannot read
// group traffic sent after the kick.
//
// Bob (a remaining member) records every Deliver frame his client receives:
// `before` spans the pre-kick traffic, the kick, the key rotation and a first
// post-kick message; `after` is a second session holding post-kick traffic
// only. Dave's client (with a copy of his key store taken just before the
// kick, and with his real one) then tries to open them.
TEST(Groups, KickedMemberCannotDecryptTrafficAfterTheKick) {
  World w;
  std::string before = w.tmp().Sub("bob-before-kick.frames");
  std::string after = w.tmp().Sub("bob-after-kick.frames");
  Club club(w, {"--record", before});

  // Epoch-1 traffic that dave can read.
  club.ca->CommandOk("group_message " + club.G() + " pre-kick from alice");
  club.cc->CommandOk("group_message " + club.G() + " pre-kick from carol");
  for (auto* cl : {club.cb.get(), club.cd.get()}) {
    cl->WaitFor(GroupMsg(club.gid, "alice", "pre-kick from alice"), "pre-kick 1");
    cl->WaitFor(GroupMsg(club.gid, "carol", "pre-kick from carol"), "pre-kick 2");
  }

  // A malicious dave keeps a copy of all his keys before he is kicked.
  EXPECT_EQ(club.cd->Quit(), 0);
  User dave_copy = club.d;
  dave_copy.home = w.tmp().Sub("home-dave-copy");
  dave_copy.downloads = w.tmp().Sub("downloads-dave-copy", true);
  fs::copy(club.d.home, dave_copy.home, fs::copy_options::recursive);

  json k = club.ca->CommandOk("kick " + club.G() + " dave");
  ASSERT_EQ(AsU64(k["epoch"]), 2u) << k.dump();
  club.cb->WaitFor(GroupKey(club.gid, 2), "bob's group key epoch 2");
  club.cc->WaitFor(GroupKey(club.gid, 2), "carol's group key epoch 2");
  club.cc->CommandOk("group_message " + club.G() + " first secret after the kick");
  club.cb->WaitFor(GroupMsg(club.gid, "carol", "first secret after the kick"), "first secret");
  ASSERT_EQ(club.cb->Quit(), 0);

  // Bob's next session records post-kick traffic only.
  auto cb = w.Chat(club.b, true, {"--record", after});
  constexpr int kPerSender = 3;
  for (int i = 0; i < kPerSender; ++i) {
    club.ca->CommandOk("group_message " + club.G() + " secret-a-" + std::to_string(i));
    club.cc->CommandOk("group_message " + club.G() + " secret-c-" + std::to_string(i));
  }
  for (int i = 0; i < kPerSender; ++i) {
    cb->WaitFor(GroupMsg(club.gid, "alice", "secret-a-" + std::to_string(i)), "secret from alice");
    cb->WaitFor(GroupMsg(club.gid, "carol", "secret-c-" + std::to_string(i)), "secret from carol");
  }
  ASSERT_EQ(cb->Quit(), 0);
  auto cd = w.Chat(club.d);  // dave's own client learns of the kick
  cd->WaitFor(Like({{"type", "group_kicked"}, {"group_id", club.gid}, {"me", true}}),
              "dave's group_kicked");
  cd->Quit();

  auto decrypt = [&](const User& u, const std::string& file) {
    RunResult r = w.Run(u, {"decrypt-frames", file});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    return r;
  };
  auto frames = [](const RunResult& r) {
    std::vector<json> out;
    for (const auto& j : r.lines) {
      if (j.value("type", "") == "decrypt") out.push_back(j);
    }
    return out;
  };
  auto group_frames = [&](const RunResult& r, std::uint64_t epoch, bool opened) {
    int n = 0;
    for (const auto& j : frames(r)) {
      if (j.value("kind", "") == "group" && j.contains("epoch") && AsU64(j["epoch"]) == epoch &&
          j.value("opened", false) == opened) {
        ++n;
      }
    }
    return n;
  };

  // Controls, so the checks below can fail: bob opens everything group-
  // related in both recordings, and dave's key copy opens the pre-kick
  // group messages.
  RunResult bob_before = decrypt(club.b, before);
  EXPECT_GE(group_frames(bob_before, 1, true), 2) << bob_before.Describe();
  EXPECT_GE(group_frames(bob_before, 2, true), 1) << bob_before.Describe();
  RunResult bob_after = decrypt(club.b, after);
  json sb = DecryptSummary(bob_after);
  EXPECT_EQ(group_frames(bob_after, 2, true), 2 * kPerSender) << bob_after.Describe();
  ASSERT_GE(AsU64(sb["frames"]), static_cast<std::uint64_t>(2 * kPerSender)) << bob_after.Describe();
  EXPECT_EQ(AsU64(sb["opened"]), AsU64(sb["frames"])) << bob_after.Describe();

  RunResult dave_before = decrypt(dave_copy, before);
  EXPECT_EQ(group_frames(dave_before, 1, true), group_frames(bob_before, 1, true))
      << "control: dave's pre-kick keys should open the epoch-1 messages\n" << dave_before.Describe();

  // The same with every key dave holds, tried on every frame.
  Attack bob_attack = TryAllKeys(club.b, after, club.gid);
  EXPECT_EQ(bob_attack.opened(), 2 * kPerSender) << "control: bob opens the post-kick messages";
  Attack copy_before = TryAllKeys(dave_copy, before, club.gid);
  EXPECT_GE(copy_before.keys, 1);
  EXPECT_EQ(copy_before.opened_by_epoch[1], 2) << "control: dave's copy opens the epoch-1 messages";
  EXPECT_EQ(copy_before.opened_by_epoch[2], 0) << "dave's pre-kick keys open a post-kick message";
  for (const User* u : {&dave_copy, &club.d}) {
    Attack att = TryAllKeys(*u, after, club.gid);
    EXPECT_EQ(att.group_frames, 2 * kPerSender);
    EXPECT_EQ(att.opened(), 0) << "dave opened post-kick messages with one of his " << att.keys
                               << " keys: " << (att.plaintexts.empty() ? "" : att.plaintexts[0]);
  }

  std::cout << "[ info ] bob: " << DecryptSummary(bob_before).dump() << " (before), " << sb.dump()
            << " (after); dave's key copy: " << DecryptSummary(dave_before).dump() << " (before)\n";

  // The test: nothing sent after the kick opens with dave's keys.
  for (const User* u : {&dave_copy, &club.d}) {
    SCOPED_TRACE(u == &dave_copy ? "dave's pre-kick key copy" : "dave's own key store");
    RunResult rb = decrypt(*u, before);
    for (const auto& j : frames(rb)) {
      bool post_kick = j.contains("epoch") && AsU64(j["epoch"]) >= 2;
      if (post_kick) {
        EXPECT_FALSE(j.value("opened", true)) << "post-kick frame opened: " << j.dump();
      }
    }
    EXPECT_EQ(group_frames(rb, 2, false), group_frames(bob_before, 2, true)) << rb.Describe();

    RunResult ra = decrypt(*u, after);
    json s = DecryptSummary(ra);
    EXPECT_EQ(AsU64(s["frames"]), AsU64(sb["frames"])) << ra.Describe();
    EXPECT_EQ(AsU64(s["opened"]), 0u) << "kicked member opened post-kick frames\n" << ra.Describe();
    for (const auto& j : frames(ra)) EXPECT_FALSE(j.value("opened", true)) << j.dump();
    std::cout << "[ info ] " << (u == &dave_copy ? "dave's key copy" : "dave") << ": "
              << DecryptSummary(rb).dump() << " (before), " << s.dump() << " (after)\n";
  }
}

TEST(Groups, LeaveRotatesKeyAndEndsMembership) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  User c = w.Register("carol");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);
  auto cc = w.Chat(c);
  std::uint64_t gid = AsU64(ca->CommandOk("create_group trio")["group_id"]);
  std::string G = std::to_string(gid);
  ca->CommandOk("add_member " + G + " bob");
  ca->CommandOk("add_member " + G + " carol");
  cb->WaitFor(GroupKey(gid, 1), "bob key 1");
  cc->WaitFor(GroupKey(gid, 1), "carol key 1");

  cc->CommandOk("leave " + G);
  json mine = cc->WaitFor(Like({{"type", "group_left"}, {"group_id", gid}, {"me", true}}),
                          "carol's own group_left");
  EXPECT_EQ(AsU64(mine["epoch"]), 2u) << mine.dump();
  for (auto* cl : {ca.get(), cb.get()}) {
    cl->WaitFor(Like({{"type", "group_left"}, {"group_id", gid}, {"user", "carol"}}),
                "group_left notice");
  }
  cb->WaitFor(GroupKey(gid, 2), "bob key 2 after carol left");

  cb->CommandOk("group_message " + G + " just us now");
  json m = ca->WaitFor(GroupMsg(gid, "bob", "just us now"), "post-leave message");
  EXPECT_EQ(AsU64(m["epoch"]), 2u) << m.dump();
  json r = cc->Command("group_message " + G + " can I still talk?");
  EXPECT_EQ(Str(r, "code"), "NOT_MEMBER") << r.dump();
  EXPECT_TRUE(cc->CommandOk("groups")["groups"].empty());
  EXPECT_EQ(Names(ca->CommandOk("members " + G)["members"]),
            (std::vector<std::string>{"alice", "bob"}));
  for (const auto& j : cc->history()) EXPECT_NE(j.value("type", ""), "group_message") << j.dump();
}

// A group's log keeps at most --max-group-log-entries messages for members
// who have not collected them. Everyone but carol is away while she sends
// six with a bound of two: the server drops the four oldest (its metrics
// say so), and bob, back, gets the newest two, in order, and then one
// notice that four earlier ones expired (queued when they were dropped, so
// after the two in seq order), and is live again after them.
TEST(Groups, AnAbsentMembersBacklogIsBoundedAndHeIsToldHowManyExpired) {
  ServerOptions o;
  o.extra_args = {"--max-group-log-entries", "2", "--group-log-check", "0.1", "--metrics-listen", "127.0.0.1:0"};
  World w(o);
  Club club(w);
  for (auto* cl : {club.ca.get(), club.cb.get(), club.cd.get()}) EXPECT_EQ(cl->Quit(), 0);
  for (int i = 1; i <= 6; ++i) club.cc->CommandOk("group_message " + club.G() + " m" + std::to_string(i));
  const std::uint16_t port = MetricsPort(w.server());
  const auto deadline = std::chrono::steady_clock::now() + Millis(30000);
  double missed = 0;
  while ((missed = Get(Scrape(port), "fastchat_group_log_messages_missed_total")) < 12 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(Millis(50));
  }
  EXPECT_EQ(missed, 12);  // four each for alice, bob and dave
  EXPECT_EQ(Get(Scrape(port), "fastchat_group_logs_capped_total"), 1);

  auto cb = w.Chat(club.b, /*wait_ready=*/false);
  cb->WaitFor("ready", Millis(60000));
  std::vector<std::string> got;
  for (const auto& j : cb->buffered()) {
    const std::string t = j.value("type", "");
    if (t == "group_expired") {
      EXPECT_EQ(AsU64(j["group_id"]), club.gid) << j.dump();
      EXPECT_EQ(Str(j, "group"), "club") << j.dump();
      got.push_back("expired:" + Str(j, "expired"));
    }
    if (t == "group_message") got.push_back(Str(j, "text"));
  }
  EXPECT_EQ(got, (std::vector<std::string>{"m5", "m6", "expired:4"})) << cb->Diagnostics();
  club.cc->CommandOk("group_message " + club.G() + " m7");
  cb->WaitFor(GroupMsg(club.gid, "carol", "m7"), "a live group message after the gap");
}

TEST(Groups, ListingGroupsAndMembers) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  User c = w.Register("carol");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);
  std::uint64_t g1 = AsU64(ca->CommandOk("create_group first")["group_id"]);
  std::uint64_t g2 = AsU64(cb->CommandOk("create_group second")["group_id"]);
  EXPECT_NE(g1, g2);
  ca->CommandOk("add_member " + std::to_string(g1) + " bob");
  ca->CommandOk("add_member " + std::to_string(g1) + " carol");
  cb->WaitFor(GroupKey(g1, 1), "bob key");

  json ga = ca->CommandOk("groups");
  ASSERT_EQ(ga["groups"].size(), 1u) << ga.dump();
  EXPECT_EQ(AsU64(ga["groups"][0]["id"]), g1);
  EXPECT_EQ(Str(ga["groups"][0], "name"), "first");
  EXPECT_EQ(AsU64(ga["groups"][0]["admin_id"]), a.id);
  EXPECT_EQ(AsU64(ga["groups"][0]["epoch"]), 1u);

  json gb = cb->CommandOk("groups");
  std::set<std::uint64_t> ids;
  for (const auto& g : gb["groups"]) {
    ids.insert(AsU64(g["id"]));
    if (AsU64(g["id"]) == g2) {
      EXPECT_EQ(AsU64(g["admin_id"]), b.id) << g.dump();
    }
  }
  EXPECT_EQ(ids, (std::set<std::uint64_t>{g1, g2})) << gb.dump();

  json mem = cb->CommandOk("members " + std::to_string(g1));
  EXPECT_EQ(Names(mem["members"]), (std::vector<std::string>{"alice", "bob", "carol"}));
  std::set<std::uint64_t> mids;
  for (const auto& m : mem["members"]) mids.insert(AsU64(m["id"]));
  EXPECT_EQ(mids, (std::set<std::uint64_t>{a.id, b.id, c.id}));

  // Members of a group one is not in: refused.
  json no = ca->Command("members " + std::to_string(g2));
  EXPECT_EQ(Str(no, "code"), "NOT_MEMBER") << no.dump();

  // One-shot listing agrees.
  json once = w.RunOk(c, {"groups"});
  ASSERT_EQ(once["groups"].size(), 1u) << once.dump();
  EXPECT_EQ(AsU64(once["groups"][0]["id"]), g1);
}

// ------------------------------------------------------------------ identity

TEST(Identity, FingerprintIsEqualOnBothSides) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  User c = w.Register("carol");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);
  w.MakeFriends(*ca, a, *cb, b);

  std::string fa = Str(ca->CommandOk("fingerprint bob"), "safety_number");
  std::string fb = Str(cb->CommandOk("fingerprint alice"), "safety_number");
  EXPECT_FALSE(fa.empty());
  EXPECT_EQ(fa, fb);
  // 60 digits (possibly grouped).
  std::string digits;
  for (char ch : fa) {
    if (ch >= '0' && ch <= '9') digits += ch;
  }
  EXPECT_EQ(digits.size(), 60u) << fa;

  // One-shot agrees; a different pair has a different number.
  EXPECT_EQ(Str(w.RunOk(a, {"fingerprint", "bob"}), "safety_number"), fa);
  std::string fac = Str(w.RunOk(a, {"fingerprint", "carol"}), "safety_number");
  EXPECT_FALSE(fac.empty());
  EXPECT_NE(fac, fa);
}

TEST(Session, SecondLoginDisplacesFirstReceivingSession) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto cb = w.Chat(b);
  auto first = w.Chat(a);
  w.MakeFriends(*first, a, *cb, b);

  auto second = w.Chat(a);
  json gone = first->WaitFor("disconnected");
  EXPECT_NE(Str(gone, "reason").find("DISPLACED"), std::string::npos) << gone.dump();
  // The displaced chat ends by itself.
  EXPECT_TRUE(first->WaitExit(kDefaultTimeout).has_value()) << first->Diagnostics();
  // One-shot (send-only) sessions displace nobody.
  w.RunOk(a, {"friends"});

  cb->CommandOk("single_message alice which one gets this?");
  second->WaitFor(Msg("bob", "which one gets this?"), "message at the new session");
  for (const auto& j : first->history()) EXPECT_NE(j.value("type", ""), "message") << j.dump();
  EXPECT_FALSE(second->TryWaitFor(OfType("disconnected"), Millis(0)).has_value());
}

}  // namespace
}  // namespace fastchat::testing
