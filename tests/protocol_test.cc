// Delivery guarantees of docs/protocol.md checked at the wire level against
// a real fastchat-server (RawConn; the server never looks inside
// ciphertexts, so random bytes stand in for them).
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "harness/fastchat.h"
#include "harness/raw_conn.h"

namespace fastchat::testing {
namespace {

class Protocol : public ::testing::Test {
 protected:
  std::unique_ptr<RawConn> Connect() {
    auto c = std::make_unique<RawConn>(w_.server().port());
    wire::Envelope h = c->Hello();
    EXPECT_TRUE(h.has_hello_ok()) << Describe(h);
    return c;
  }
  std::uint64_t Register(const std::string& name) {
    auto c = Connect();
    wire::Envelope r = c->Register(name, "password-" + name);
    EXPECT_TRUE(r.has_ok()) << Describe(r);
    return r.ok().id();
  }
  std::unique_ptr<RawConn> Login(const std::string& name, bool receive) {
    auto c = Connect();
    wire::Envelope l = c->Login(name, "password-" + name, receive);
    EXPECT_TRUE(l.has_logged_in()) << Describe(l);
    return c;
  }
  // Reads pushes until SyncDone; returns the Delivers before it.
  static std::vector<wire::Deliver> UntilSyncDone(RawConn& c) {
    std::vector<wire::Deliver> out;
    for (;;) {
      wire::Envelope e = c.Expect();
      if (e.has_sync_done()) return out;
      if (e.has_deliver()) {
        out.push_back(e.deliver());
      } else if (e.rid() == 0) {
        ADD_FAILURE() << "unexpected push " << Describe(e);
      }
    }
  }
  static wire::Event EventOf(const wire::Deliver& d) {
    wire::Event ev;
    EXPECT_TRUE(ev.ParseFromString(d.event()));
    return ev;
  }
  // a asks b, b accepts (with a random stand-in for the wrapped key).
  void Befriend(RawConn& a, const std::string& a_name, RawConn& b, const std::string& b_name) {
    wire::Envelope fr;
    fr.mutable_friend_request()->mutable_to()->set_name(b_name);
    wire::Envelope r1 = a.Request(fr);
    ASSERT_TRUE(r1.has_ok()) << Describe(r1);
    wire::Envelope fa;
    fa.mutable_friend_answer()->mutable_to()->set_name(a_name);
    fa.mutable_friend_answer()->set_accept(true);
    fa.mutable_friend_answer()->set_nonce(RandomBytes(24));
    fa.mutable_friend_answer()->set_wrapped_key(RandomBytes(48));
    wire::Envelope r2 = b.Request(fa);
    ASSERT_TRUE(r2.has_ok()) << Describe(r2);
  }
  // alice and bob, friends: alice's sending session and bob's receiving
  // one, caught up.
  struct AliceToBob {
    std::unique_ptr<RawConn> a;
    std::unique_ptr<RawConn> rb;
  };
  AliceToBob FriendsAliceAndBob() {
    Register("alice");
    Register("bob");
    AliceToBob s;
    s.a = Login("alice", false);
    auto b = Login("bob", false);
    Befriend(*s.a, "alice", *b, "bob");
    s.rb = Login("bob", true);
    UntilSyncDone(*s.rb);
    return s;
  }
  static wire::Envelope Text(const std::string& to, const std::string& msg_id) {
    wire::Envelope env;
    auto* d = env.mutable_direct_send();
    d->mutable_to()->set_name(to);
    d->set_msg_id(msg_id);
    d->set_kind(wire::TEXT);
    d->set_chunk_index(0);
    d->set_chunk_count(1);
    d->set_nonce(RandomBytes(24));
    d->set_ciphertext(RandomBytes(60));
    return env;
  }

  World w_;
};

TEST_F(Protocol, DeliveriesArriveInOrderWithServerSetSenderAndAreResentUntilAcked) {
  std::uint64_t alice = Register("alice");
  Register("bob");
  auto a = Login("alice", false);
  auto b = Login("bob", false);  // send-only: gets no pushes
  Befriend(*a, "alice", *b, "bob");

  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(RandomBytes(16));
    wire::Envelope r = a->Request(Text("bob", ids.back()));
    ASSERT_TRUE(r.has_ok()) << Describe(r);
  }
  // The send-only session got nothing pushed.
  wire::Envelope none;
  EXPECT_EQ(b->Receive(&none, Millis(300)), RawConn::Recv::kTimeout) << Describe(none);

  // First receiving login: friend answer notice is for alice, so bob sees
  // the five messages, oldest first, from alice (as set by the server).
  std::vector<std::uint64_t> seqs;
  {
    auto rb = Login("bob", true);
    auto got = UntilSyncDone(*rb);
    std::vector<std::string> msg_ids;
    for (const auto& d : got) {
      wire::Event ev = EventOf(d);
      if (!ev.has_direct()) continue;
      EXPECT_EQ(ev.from_id(), alice);
      EXPECT_EQ(ev.from_name(), "alice");
      msg_ids.push_back(ev.direct().msg_id());
      seqs.push_back(d.seq());
    }
    EXPECT_EQ(msg_ids, ids);
    for (std::size_t i = 1; i < seqs.size(); ++i) EXPECT_GT(seqs[i], seqs[i - 1]);
    // No Ack: they must come again.
  }
  std::vector<std::uint64_t> all_seqs;
  {
    auto rb = Login("bob", true);
    auto got = UntilSyncDone(*rb);
    std::vector<std::uint64_t> again;
    wire::Envelope ack;
    for (const auto& d : got) {
      all_seqs.push_back(d.seq());
      ack.mutable_ack()->add_seqs(d.seq());
      if (EventOf(d).has_direct()) again.push_back(d.seq());
    }
    EXPECT_EQ(again, seqs) << "unacknowledged deliveries were not sent again, or changed seq";
    ASSERT_TRUE(rb->Send(ack));
    // FetchPending on the same session: Ok, (nothing), SyncDone. This also
    // orders the Ack before our next login.
    wire::Envelope fp;
    fp.mutable_fetch_pending();
    wire::Envelope ok = rb->Request(fp);
    EXPECT_TRUE(ok.has_ok()) << Describe(ok);
    EXPECT_TRUE(UntilSyncDone(*rb).empty());
  }
  {
    auto rb = Login("bob", true);
    EXPECT_TRUE(UntilSyncDone(*rb).empty()) << "acknowledged deliveries came again";
  }
}

TEST_F(Protocol, ResendingTheSameMsgIdCreatesNoSecondDelivery) {
  auto [a, rb] = FriendsAliceAndBob();

  std::string id = RandomBytes(16);
  wire::Envelope msg = Text("bob", id);
  for (int i = 0; i < 3; ++i) {
    wire::Envelope r = a->Request(msg);
    EXPECT_TRUE(r.has_ok()) << "attempt " << i << ": " << Describe(r);
  }
  std::string marker = RandomBytes(16);
  ASSERT_TRUE(a->Request(Text("bob", marker)).has_ok());

  // One stored delivery (one seq) for the msg_id. A resend of a row still
  // pending routes it again under the same seq (the sender never saw its
  // Ok: RequestService's EnqueueFor), which a client drops as a repeat.
  std::vector<std::string> got;
  std::set<std::uint64_t> seqs_of_id;
  while (got.empty() || got.back() != marker) {
    wire::Envelope e = rb->Expect();
    ASSERT_TRUE(e.has_deliver()) << Describe(e);
    wire::Event ev = EventOf(e.deliver());
    if (!ev.has_direct()) continue;
    if (ev.direct().msg_id() == id) seqs_of_id.insert(e.deliver().seq());
    if (got.empty() || got.back() != ev.direct().msg_id()) got.push_back(ev.direct().msg_id());
  }
  EXPECT_EQ(got, (std::vector<std::string>{id, marker}));
  EXPECT_EQ(seqs_of_id.size(), 1u);
}

// Issue 7 (chaos test): a server that died after storing and pushing a DM
// but before its Ok reached the sender, the recipient acknowledging at
// once, then the sender's resend. The resend is Ok'd and the recipient does
// not get the message again (no second row under a new seq, nor the old
// seq again): the dedupe key outlives the acknowledgement.
TEST_F(Protocol, AResendAfterTheRecipientAcknowledgedIsOkAndNotDeliveredAgain) {
  auto [a, rb] = FriendsAliceAndBob();

  const std::string id = RandomBytes(16);
  ASSERT_TRUE(a->Request(Text("bob", id)).has_ok());
  wire::Envelope e = rb->Expect();
  ASSERT_TRUE(e.has_deliver()) << Describe(e);
  ASSERT_EQ(EventOf(e.deliver()).direct().msg_id(), id);
  wire::Envelope ack;
  ack.mutable_ack()->add_seqs(e.deliver().seq());
  ASSERT_TRUE(rb->Send(ack));
  // FetchPending on the same session orders the Ack before the resend.
  wire::Envelope fp;
  fp.mutable_fetch_pending();
  ASSERT_TRUE(rb->Request(fp).has_ok());
  for (const auto& d : UntilSyncDone(*rb)) {  // what bob has not acknowledged: not the DM
    EXPECT_FALSE(EventOf(d).has_direct() && EventOf(d).direct().msg_id() == id);
  }

  wire::Envelope r = a->Request(Text("bob", id));
  EXPECT_TRUE(r.has_ok()) << Describe(r);
  const std::string marker = RandomBytes(16);
  ASSERT_TRUE(a->Request(Text("bob", marker)).has_ok());
  std::vector<std::string> got;
  while (got.empty() || got.back() != marker) {
    e = rb->Expect();
    ASSERT_TRUE(e.has_deliver()) << Describe(e);
    wire::Event ev = EventOf(e.deliver());
    if (ev.has_direct()) got.push_back(ev.direct().msg_id());
  }
  EXPECT_EQ(got, (std::vector<std::string>{marker})) << "the acknowledged message came again";
  auto again = Login("bob", true);
  for (const auto& d : UntilSyncDone(*again)) {
    EXPECT_FALSE(EventOf(d).has_direct() && EventOf(d).direct().msg_id() == id)
        << "the acknowledged message was stored again";
  }
}

TEST_F(Protocol, NewReceivingSessionDisplacesTheOldOne) {
  Register("alice");
  auto first = Login("alice", true);
  EXPECT_TRUE(UntilSyncDone(*first).empty());
  auto sender = Login("alice", false);  // send-only sessions displace nobody
  wire::Envelope none;
  EXPECT_EQ(first->Receive(&none, Millis(300)), RawConn::Recv::kTimeout) << Describe(none);

  auto second = Login("alice", true);
  wire::Envelope e = first->Expect();
  EXPECT_EQ(ErrorName(e), "DISPLACED") << Describe(e);
  EXPECT_EQ(e.rid(), 0u);
  EXPECT_TRUE(first->WaitClosed());
  EXPECT_TRUE(UntilSyncDone(*second).empty());
  wire::Envelope lf;
  lf.mutable_list_friends();
  EXPECT_TRUE(second->Request(lf).has_friend_list());
}

}  // namespace
}  // namespace fastchat::testing

namespace fastchat::testing {
namespace {

// A group message is one entry of the group's log: every other member gets
// it with Deliver.group_id, acknowledges it cumulatively with Ack.groups, and
// gets again at its next login whatever it did not acknowledge.
TEST_F(Protocol, GroupMessagesCarryTheGroupAndAreAcknowledgedCumulatively) {
  Register("alice");
  Register("bob");
  auto a = Login("alice", false);
  wire::Envelope create;
  create.mutable_group_create()->set_name("team");
  wire::Envelope created = a->Request(create);
  ASSERT_TRUE(created.has_ok()) << Describe(created);
  const std::uint64_t gid = created.ok().id();
  wire::Envelope add;
  add.mutable_group_add()->set_group_id(gid);
  add.mutable_group_add()->mutable_user()->set_name("bob");
  ASSERT_TRUE(a->Request(add).has_ok());
  auto send = [&](int i) {
    wire::Envelope env;
    auto* g = env.mutable_group_send();
    g->set_group_id(gid);
    g->set_epoch(1);
    g->set_msg_id(RandomBytes(16));
    g->set_kind(wire::TEXT);
    g->set_chunk_count(1);
    g->set_nonce(RandomBytes(24));
    g->set_ciphertext("message " + std::to_string(i) + RandomBytes(20));
    g->set_signature(RandomBytes(64));
    wire::Envelope r = a->Request(env);
    ASSERT_TRUE(r.has_ok()) << Describe(r);
  };
  for (int i = 0; i < 3; ++i) send(i);

  std::vector<wire::Deliver> group;
  {
    auto b = Login("bob", true);
    for (const wire::Deliver& d : UntilSyncDone(*b)) {
      if (EventOf(d).has_group()) group.push_back(d);
    }
    ASSERT_EQ(group.size(), 3u);
    for (const wire::Deliver& d : group) EXPECT_EQ(d.group_id(), gid);
    // Acknowledge the second: the first goes with it, the third stays.
    wire::Envelope ack;
    auto* g = ack.mutable_ack()->add_groups();
    g->set_group_id(gid);
    g->set_seq(group[1].seq());
    ASSERT_TRUE(b->Send(ack));
    // A live one arrives with its group too.
    send(3);
    wire::Envelope live = b->Expect();
    ASSERT_TRUE(live.has_deliver()) << Describe(live);
    EXPECT_EQ(live.deliver().group_id(), gid);
  }
  auto b2 = Login("bob", true);
  std::vector<std::uint64_t> again;
  for (const wire::Deliver& d : UntilSyncDone(*b2)) {
    if (EventOf(d).has_group()) again.push_back(d.seq());
  }
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[0], group[2].seq());
}

}  // namespace
}  // namespace fastchat::testing
