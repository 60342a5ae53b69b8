// A user's several clients side by side (issue 8), with real server and
// client processes: one-shot commands take what is waiting for them (a
// friend's answer and key) without displacing the receiving session,
// `pending` runs beside `listen` with both working, and delivery receipts
// that the sender's history shows and that nobody without the friend key can
// forge.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "fastchat.pb.h"
#include "harness/fastchat.h"
#include "harness/raw_conn.h"

namespace fastchat::testing {
namespace {

bool Has(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The lines of a one-shot run matching `m`.
std::vector<json> Lines(const RunResult& r, const Match& m) {
  std::vector<json> out;
  for (const auto& j : r.lines)
    if (m(j)) out.push_back(j);
  return out;
}

// `fastchat ... listen` for `u`, as a ChatClient (it reads no input).
std::unique_ptr<ChatClient> Listen(World& w, const User& u) {
  SpawnOptions so;
  so.argv = w.GlobalArgs(u);
  so.argv.push_back("listen");
  so.stderr_path = w.tmp().Sub("listen-" + u.name + ".stderr");
  auto c = std::make_unique<ChatClient>(u.name + "-listen", Process::Spawn(so));
  c->WaitFor("ready");
  return c;
}

// The entry of `history` whose text is `text`.
json HistoryEntryWithText(const RunResult& r, const std::string& text) {
  for (const auto& e : r.result().value("entries", json::array()))
    if (Str(e, "text") == text) return e;
  return json::object();
}

// ------------------------------------------------------------------ the protocol

// A logged-in RawConn for `name` (registered first).
std::unique_ptr<RawConn> Account(World& w, const std::string& name, bool receive) {
  auto c = std::make_unique<RawConn>(w.server().port());
  c->Hello();
  c->Register(name, "password-" + name);
  wire::Envelope li = c->Login(name, "password-" + name, receive);
  if (!li.has_logged_in()) throw std::runtime_error("login of " + name + ": " + Describe(li));
  return c;
}

// FetchPending on a send-only session: Ok, the pending deliveries, SyncDone;
// the user's receiving session stays, and the fetch takes no live pushes.
TEST(OneShotFetch, SendOnlySessionGetsWhatIsPendingAndDisplacesNobody) {
  World w;
  auto alice = Account(w, "alice", false);
  auto carol = Account(w, "carol", false);
  {
    RawConn reg(w.server().port());
    reg.Hello();
    reg.Register("bob", "password-bob");
  }
  wire::Envelope req;
  req.mutable_friend_request()->mutable_to()->set_name("bob");
  ASSERT_TRUE(alice->Request(req).has_ok());

  RawConn receiving(w.server().port());
  receiving.Hello();
  ASSERT_TRUE(receiving.Login("bob", "password-bob", true).has_logged_in());
  wire::Envelope first = receiving.Expect();
  ASSERT_TRUE(first.has_deliver()) << Describe(first);
  ASSERT_TRUE(receiving.Expect().has_sync_done());

  RawConn fetch(w.server().port());
  fetch.Hello();
  ASSERT_TRUE(fetch.Login("bob", "password-bob", false).has_logged_in());
  wire::Envelope fp;
  fp.mutable_fetch_pending();
  wire::Envelope ok = fetch.Request(fp);
  ASSERT_TRUE(ok.has_ok()) << Describe(ok);  // before: BAD_REQUEST
  wire::Envelope again = fetch.Expect();
  ASSERT_TRUE(again.has_deliver()) << Describe(again);
  EXPECT_EQ(again.deliver().seq(), first.deliver().seq());  // not acknowledged yet: still pending
  wire::Envelope done = fetch.Expect();
  EXPECT_TRUE(done.has_sync_done()) << Describe(done);

  // A new delivery goes to the receiving session only.
  wire::Envelope req2;
  req2.mutable_friend_request()->mutable_to()->set_name("bob");
  ASSERT_TRUE(carol->Request(req2).has_ok());
  wire::Envelope live = receiving.Expect();
  EXPECT_TRUE(live.has_deliver()) << Describe(live);  // not a DISPLACED error
  wire::Envelope none;
  EXPECT_EQ(fetch.Receive(&none, Millis(500)), RawConn::Recv::kTimeout) << Describe(none);
}

// ------------------------------------------------------------------ one-shot commands

TEST(OneShot, SendRightAfterAOneShotAcceptAndTheRequestIsNotShownAgain) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");

  RunResult r = w.Run(a, {"add_friend", "bob"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  // bob answers one-shot: his command first takes alice's request (shown
  // once, acknowledged), then accepts.
  r = w.Run(b, {"accept", "alice"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(Lines(r, Like({{"type", "friend_request"}, {"from", "alice"}})).size(), 1u) << r.out;

  // alice sends at once, one-shot: her command first takes bob's answer
  // (the friend key) instead of failing with NO_KEY.
  r = w.Run(a, {"single_message", "bob", "hi"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(Lines(r, Like({{"type", "friend_accepted"}, {"from", "bob"}})).size(), 1u) << r.out;

  // A one-shot command leaves messages pending: bob's `friends` shows none.
  r = w.Run(b, {"friends"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  EXPECT_TRUE(Lines(r, OfType("message")).empty()) << r.out;

  // bob's pending: the message, and not the request he already answered.
  r = w.Run(b, {"pending"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(Lines(r, Msg("alice", "hi")).size(), 1u) << r.out;
  EXPECT_TRUE(Lines(r, OfType("friend_request")).empty()) << r.out;
  // ... and a listen started afterwards has nothing old to show.
  auto lb = Listen(w, b);
  EXPECT_FALSE(lb->TryWaitFor(OfType("friend_request"), Millis(500)).has_value());
  EXPECT_FALSE(lb->TryWaitFor(OfType("message"), Millis(0)).has_value());
}

// ------------------------------------------------------------------ pending beside listen

TEST(Pending, BesideListenBothKeepWorking) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto ca = w.Chat(a);
  auto lb = Listen(w, b);
  ca->CommandOk("add_friend bob");
  lb->WaitFor(Like({{"type", "friend_request"}, {"from", "alice"}}), "request at bob's listen");
  // bob answers from a one-shot command while his listen runs.
  RunResult r = w.Run(b, {"accept", "alice"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  ca->WaitFor(Like({{"type", "friend_accepted"}, {"from", "bob"}}), "bob's answer");

  ca->CommandOk("single_message bob one");
  lb->WaitFor(Msg("alice", "one"), "first message at listen");

  // fastchat --user bob pending, while bob's listen runs.
  r = w.Run(b, {"pending"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  EXPECT_FALSE(Has(r.out, "DISPLACED")) << r.out;

  // The listen was not displaced: it keeps receiving.
  ca->CommandOk("single_message bob two");
  lb->WaitFor(Msg("alice", "two"), "second message at listen, after pending");
  for (const auto& j : lb->history()) {
    EXPECT_NE(Str(j, "type"), "disconnected") << j.dump();
    EXPECT_FALSE(Has(j.dump(), "DISPLACED")) << j.dump();
  }
  ASSERT_TRUE(lb->process().Running()) << lb->Diagnostics();

  // Both keep working: another pending, and a one-shot send from bob.
  r = w.Run(b, {"single_message", "alice", "from a one-shot"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  ca->WaitFor(Msg("bob", "from a one-shot"), "bob's one-shot message");
  r = w.Run(b, {"pending"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  ca->CommandOk("single_message bob three");
  lb->WaitFor(Msg("alice", "three"), "third message at listen");
  lb->process().Signal(SIGTERM);  // how listen is ended
  EXPECT_EQ(lb->WaitExit(Millis(10000)), std::optional<int>(0)) << lb->Diagnostics();
}

// ------------------------------------------------------------------ receipts

TEST(Receipts, HistoryShowsStoredThenDeliveredAndAForgedReceiptIsRejected) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);
  w.MakeFriends(*ca, a, *cb, b);

  // Online: the receipt comes back and history says delivered.
  json sent = ca->CommandOk("single_message bob hello");
  const std::string first_id = Str(sent, "msg_id");
  ASSERT_EQ(first_id.size(), 32u) << sent.dump();
  cb->WaitFor(Msg("alice", "hello"), "hello at bob");
  json receipt = ca->WaitFor(Like({{"type", "receipt"}, {"to", "bob"}, {"msg_id", first_id}}), "receipt for hello");
  EXPECT_GT(receipt.value("delivered_ms", std::int64_t{0}), 0) << receipt.dump();

  // A file too.
  std::string src = w.tmp().Sub("note.txt");
  WriteFile(src, "a small file\n");
  json img = ca->CommandOk("single_image bob " + src);
  cb->WaitFor(Like({{"type", "image"}, {"from", "alice"}}), "file at bob");
  ca->WaitFor(Like({{"type", "receipt"}, {"to", "bob"}, {"msg_id", Str(img, "msg_id")}}), "receipt for the file");

  // Offline: stored, not delivered.
  ASSERT_EQ(cb->Quit(), 0);
  json later = ca->CommandOk("single_message bob later");
  const std::string later_id = Str(later, "msg_id");

  // Someone without the friend key (here bob's password on a raw
  // connection, as the server could) sends alice a "receipt".
  RawConn raw(w.server().port());
  raw.Hello();
  wire::Envelope li = raw.Login("bob", b.password, false);
  ASSERT_TRUE(li.has_logged_in()) << Describe(li);
  wire::Envelope forged;
  auto* d = forged.mutable_direct_send();
  d->mutable_to()->set_id(a.id);
  d->set_msg_id(RandomBytes(16));
  d->set_kind(wire::RECEIPT);
  d->set_chunk_index(0);
  d->set_chunk_count(1);
  d->set_nonce(RandomBytes(24));
  d->set_ciphertext(RandomBytes(16 + 24 + 16));
  wire::Envelope ok = raw.Request(forged);
  ASSERT_TRUE(ok.has_ok()) << Describe(ok);
  json rejected = ca->WaitFor(Like({{"type", "undecryptable"}, {"kind", "receipt"}, {"from", "bob"}}),
                              "the forged receipt, rejected");
  EXPECT_TRUE(Has(Str(rejected, "reason"), "receipt rejected")) << rejected.dump();
  EXPECT_FALSE(ca->TryWaitFor(OfType("receipt"), Millis(300)).has_value());

  RunResult h = w.Run(a, {"history", "bob"});
  ASSERT_TRUE(h.ok()) << h.Describe();
  json e_hello = HistoryEntryWithText(h, "hello");
  json e_later = HistoryEntryWithText(h, "later");
  EXPECT_EQ(Str(e_hello, "state"), "delivered") << h.out;
  EXPECT_GT(e_hello.value("delivered_ms", std::int64_t{0}), 0) << h.out;
  EXPECT_EQ(Str(e_later, "state"), "stored") << h.out;
  EXPECT_FALSE(e_later.contains("delivered_ms")) << h.out;

  // bob comes back (pending): alice gets the real receipt for "later".
  RunResult p = w.Run(b, {"pending"});
  ASSERT_TRUE(p.ok()) << p.Describe();
  EXPECT_EQ(Lines(p, Msg("alice", "later")).size(), 1u) << p.out;
  ca->WaitFor(Like({{"type", "receipt"}, {"to", "bob"}, {"msg_id", later_id}}), "receipt for later");
  h = w.Run(a, {"history", "bob"});
  ASSERT_TRUE(h.ok()) << h.Describe();
  EXPECT_EQ(Str(HistoryEntryWithText(h, "later"), "state"), "delivered") << h.out;
  // bob's own history marks nothing: states are for what one sent.
  RunResult hb = w.Run(b, {"history", "alice"});
  ASSERT_TRUE(hb.ok()) << hb.Describe();
  EXPECT_FALSE(HistoryEntryWithText(hb, "later").contains("state")) << hb.out;

  // As a person reads it.
  std::vector<std::string> argv = w.GlobalArgs(a);
  argv.erase(std::remove(argv.begin(), argv.end(), "--json"), argv.end());
  argv.push_back("history");
  argv.push_back("bob");
  RunResult text = RunClientOnce(argv, w.tmp().Sub("history-text.stderr"), Millis(30000));
  EXPECT_TRUE(Has(text.out, "alice: hello  [delivered ")) << text.out;
}

// A receipt reaches a sender who is not running chat or listen: a one-shot
// command takes it, and history shows it.
TEST(Receipts, AOneShotSenderGetsItsReceiptsWithItsNextCommand) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  {
    auto ca = w.Chat(a);
    auto cb = w.Chat(b);
    w.MakeFriends(*ca, a, *cb, b);
    ASSERT_EQ(ca->Quit(), 0);
    RunResult r = w.Run(a, {"single_message", "bob", "while you chat"});
    ASSERT_TRUE(r.ok()) << r.Describe();
    cb->WaitFor(Msg("alice", "while you chat"), "message at bob");
    ASSERT_EQ(cb->Quit(), 0);  // its receipt has gone out before it exits
  }
  RunResult r = w.Run(a, {"friends"});
  ASSERT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(Lines(r, Like({{"type", "receipt"}, {"to", "bob"}})).size(), 1u) << r.out;
  RunResult h = w.Run(a, {"history", "bob"});
  ASSERT_TRUE(h.ok()) << h.Describe();
  EXPECT_EQ(Str(HistoryEntryWithText(h, "while you chat"), "state"), "delivered") << h.out;
}

}  // namespace
}  // namespace fastchat::testing
