// RequestService: requests decided against the Directory, writes run on a
// real SQLite store, no sockets.
#include "request_service.h"

#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "client/reconnect.h"
#include "fastchat.pb.h"
#include "test_records.h"
#include "fastchat/frame.h"
#include "store/forwarding_store.h"

namespace fastchat::server {
namespace {

class RequestServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fastchat_service_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_TRUE(OpenSqliteStore(dir_ + "/server.db", &store_).ok());
    alice_ = {MakeUser("alice"), "alice"};
    bob_ = {MakeUser("bob"), "bob"};
    carol_ = {MakeUser("carol"), "carol"};
    DirectoryState state;
    ASSERT_TRUE(store_->LoadDirectory(&state).ok());
    directory_.Load(state);
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::uint64_t MakeUser(const std::string& name) {
    std::uint64_t id = 0;
    EXPECT_TRUE(store_->CreateUser(TestUserRecord(name), &id).ok());
    return id;
  }

  // Decides `env` for `who`.
  Outcome Decide(const Caller& who, wire::Envelope env) {
    env.set_rid(++rid_);
    return service_.Handle(who, env, 1000 + rid_);
  }
  // Decides and, if it is a write, runs the write; returns the reply (none
  // for an Ack: its acknowledgements are run as the store worker runs them).
  wire::Envelope Do(const Caller& who, wire::Envelope env, WriteResult* out = nullptr) {
    Outcome o = Decide(who, std::move(env));
    if (o.ack_only) {
      EXPECT_TRUE(o.reply.empty());
      if (!o.ack_seqs.empty()) {
        EXPECT_TRUE(store_->Ack(who.id, o.ack_seqs).ok());
      }
      std::vector<Store::GroupCursorAck> groups;
      for (const auto& [gid, seq] : o.ack_groups) groups.push_back({gid, who.id, seq});
      EXPECT_TRUE(store_->AckGroups(groups).ok());
      return wire::Envelope();
    }
    std::string frame = o.reply;
    if (o.write || !o.enqueue.empty()) {
      WriteResult r = RunWrite(o);
      if (o.committed) o.committed(directory_, r);
      frame = RequestService::WriteReply(o.rid, r);
      if (out) *out = r;
    }
    wire::Envelope reply;
    EXPECT_GE(frame.size(), kFrameHeaderSize);
    EXPECT_TRUE(reply.ParseFromArray(frame.data() + kFrameHeaderSize, static_cast<int>(frame.size() - kFrameHeaderSize)));
    EXPECT_EQ(reply.rid(), rid_);
    return reply;
  }

  // Runs an outcome's write, whichever form it has.
  WriteResult RunWrite(Outcome& o) {
    if (o.write) return o.write(*store_);
    std::vector<std::uint64_t> recipients, seqs;
    for (const PendingItem& i : o.enqueue) recipients.push_back(i.recipient);
    std::vector<Enqueued> how;
    Status st = store_->Enqueue(o.enqueue, &seqs, &how);
    return RequestService::EnqueueResult(recipients, st, seqs, how);
  }

  static wire::Envelope FriendRequest(std::uint64_t to) {
    wire::Envelope e;
    e.mutable_friend_request()->mutable_to()->set_id(to);
    return e;
  }
  static wire::Envelope Accept(std::uint64_t requester) {
    wire::Envelope e;
    auto* a = e.mutable_friend_answer();
    a->mutable_to()->set_id(requester);
    a->set_accept(true);
    a->set_nonce(std::string(24, 'n'));
    a->set_wrapped_key(std::string(48, 'k'));
    return e;
  }
  static wire::Envelope Dm(std::uint64_t to, char id = 'm') {
    wire::Envelope e;
    auto* d = e.mutable_direct_send();
    d->mutable_to()->set_id(to);
    d->set_msg_id(std::string(16, id));
    d->set_kind(wire::TEXT);
    d->set_chunk_count(1);
    d->set_nonce(std::string(24, 'n'));
    d->set_ciphertext(std::string(40, 'c'));
    return e;
  }
  static wire::Envelope GroupSend(std::uint64_t gid, std::uint64_t epoch, char id = 'g') {
    wire::Envelope e;
    auto* g = e.mutable_group_send();
    g->set_group_id(gid);
    g->set_epoch(epoch);
    g->set_msg_id(std::string(16, id));
    g->set_kind(wire::TEXT);
    g->set_chunk_count(1);
    g->set_nonce(std::string(24, 'n'));
    g->set_ciphertext(std::string(40, 'c'));
    g->set_signature(std::string(64, 's'));
    return e;
  }
  static wire::Envelope GroupAdd(std::uint64_t gid, std::uint64_t user) {
    wire::Envelope e;
    e.mutable_group_add()->set_group_id(gid);
    e.mutable_group_add()->mutable_user()->set_id(user);
    return e;
  }
  static wire::Envelope GroupKick(std::uint64_t gid, std::uint64_t user) {
    wire::Envelope e;
    e.mutable_group_kick()->set_group_id(gid);
    e.mutable_group_kick()->mutable_user()->set_id(user);
    return e;
  }
  std::uint64_t CreateGroup(const Caller& admin) {
    wire::Envelope e;
    e.mutable_group_create()->set_name("team");
    wire::Envelope r = Do(admin, e);
    EXPECT_TRUE(r.has_ok());
    return r.ok().id();
  }
  std::uint64_t Pending(std::uint64_t user) {
    std::uint64_t n = 0;
    EXPECT_TRUE(store_->CountPending(user, &n).ok());
    return n;
  }
  void Befriend(const Caller& a, const Caller& b) {
    ASSERT_TRUE(Do(a, FriendRequest(b.id)).has_ok());
    ASSERT_TRUE(Do(b, Accept(a.id)).has_ok());
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
  Directory directory_;
  ServerConfig config_;
  RequestService service_{directory_, config_};
  std::uint64_t rid_ = 0;
  Caller alice_, bob_, carol_;
};

TEST_F(RequestServiceTest, DirectMessageToAFriendIsOneStoredDeliveryRoutedToThem) {
  Befriend(alice_, bob_);
  const std::uint64_t before = Pending(bob_.id);
  WriteResult r;
  wire::Envelope reply = Do(alice_, Dm(bob_.id), &r);
  ASSERT_TRUE(reply.has_ok()) << reply.DebugString();
  ASSERT_EQ(r.routed.size(), 1u);
  EXPECT_EQ(r.routed[0].user, bob_.id);
  EXPECT_EQ(Pending(bob_.id), before + 1);
  const std::uint64_t seq = r.routed[0].seq;
  // The same msg_id again (a sender that never saw its Ok): Ok, nothing new
  // stored, the pending row routed again under its seq.
  reply = Do(alice_, Dm(bob_.id), &r);
  EXPECT_TRUE(reply.has_ok());
  ASSERT_EQ(r.routed.size(), 1u);
  EXPECT_EQ(r.routed[0].user, bob_.id);
  EXPECT_EQ(r.routed[0].seq, seq);
  EXPECT_EQ(Pending(bob_.id), before + 1);
}

// Dedupe keys are stored (and outlive their rows by 5 minutes), so a
// resend after an upgrade must build the same key: "d/SENDER/HEX/CHUNK" for
// a DM, "g/GROUP/SENDER/HEX/CHUNK" for a group message.
TEST_F(RequestServiceTest, MessageKeysKeepTheirStoredFormat) {
  Befriend(alice_, bob_);
  wire::Envelope dm = Dm(bob_.id);
  dm.mutable_direct_send()->set_msg_id(std::string("\x00\x01\xab\xff", 4) + std::string(12, 'm'));
  dm.mutable_direct_send()->set_chunk_index(0);
  Outcome o = Decide(alice_, dm);
  ASSERT_EQ(o.enqueue.size(), 1u);
  EXPECT_EQ(o.enqueue[0].dedupe_key, "d/" + std::to_string(alice_.id) + "/0001abff6d6d6d6d6d6d6d6d6d6d6d6d/0");

  class KeyRecorder : public ForwardingStore {
   public:
    using ForwardingStore::ForwardingStore;
    Status AppendGroup(std::uint64_t group, std::uint64_t sender, const std::vector<std::uint64_t>& members,
                       const std::string& dedupe_key, const std::string& payload, std::uint64_t* seq, bool* fresh,
                       std::vector<std::uint64_t>* readers, std::uint64_t* prev_seq) override {
      keys.push_back(dedupe_key);
      return ForwardingStore::AppendGroup(group, sender, members, dedupe_key, payload, seq, fresh, readers, prev_seq);
    }
    std::vector<std::string> keys;
  };
  const std::uint64_t gid = CreateGroup(alice_);
  ASSERT_TRUE(Do(alice_, GroupAdd(gid, bob_.id)).has_ok());
  wire::Envelope send = GroupSend(gid, 1);
  send.mutable_group_send()->set_msg_id(std::string(15, '\x10') + "\x7f");
  send.mutable_group_send()->set_kind(wire::IMAGE);
  send.mutable_group_send()->set_chunk_index(11);
  send.mutable_group_send()->set_chunk_count(12);
  o = Decide(bob_, send);
  ASSERT_TRUE(o.write);
  std::unique_ptr<Store> same_file;
  ASSERT_TRUE(OpenSqliteStore(dir_ + "/server.db", &same_file).ok());
  KeyRecorder recorder(std::move(same_file));
  o.write(recorder);
  ASSERT_EQ(recorder.keys.size(), 1u);
  EXPECT_EQ(recorder.keys[0], "g/" + std::to_string(gid) + "/" + std::to_string(bob_.id) + "/" +
                                  "101010101010101010101010101010" + "7f/11");
}

// An accepted DirectSend or GroupSend hands its bytes fields to the event
// (no copy); a refused one keeps them, so that a server of a cluster can
// decide the same request again after re-reading the facts it was refused on.
TEST_F(RequestServiceTest, AnAcceptedSendMovesItsBytesIntoTheEventAndARefusedOneKeepsThem) {
  wire::Envelope dm = Dm(carol_.id);
  dm.set_rid(77);
  Outcome o = service_.Handle(alice_, dm, 5000);
  EXPECT_EQ(o.refusal.code(), Code::kNotFriends);
  EXPECT_EQ(dm.direct_send().msg_id(), std::string(16, 'm'));
  EXPECT_EQ(dm.direct_send().nonce(), std::string(24, 'n'));
  EXPECT_EQ(dm.direct_send().ciphertext(), std::string(40, 'c'));

  Befriend(alice_, carol_);
  o = service_.Handle(alice_, dm, 5001);
  ASSERT_EQ(o.enqueue.size(), 1u);
  ASSERT_TRUE(o.event);
  EXPECT_EQ(o.enqueue[0].payload, *o.event);
  wire::Event ev;
  ASSERT_TRUE(ev.ParseFromString(*o.event));
  EXPECT_EQ(ev.from_id(), alice_.id);
  EXPECT_EQ(ev.direct().msg_id(), std::string(16, 'm'));
  EXPECT_EQ(ev.direct().nonce(), std::string(24, 'n'));
  EXPECT_EQ(ev.direct().ciphertext(), std::string(40, 'c'));
  EXPECT_TRUE(dm.direct_send().ciphertext().empty());  // moved, not copied

  const std::uint64_t gid = CreateGroup(alice_);
  ASSERT_TRUE(Do(alice_, GroupAdd(gid, bob_.id)).has_ok());
  wire::Envelope send = GroupSend(gid, 1);
  send.set_rid(78);
  o = service_.Handle(carol_, send, 5002);  // not a member
  EXPECT_EQ(o.refusal.code(), Code::kNotMember);
  EXPECT_EQ(send.group_send().signature(), std::string(64, 's'));
  EXPECT_EQ(send.group_send().ciphertext(), std::string(40, 'c'));
  o = service_.Handle(bob_, send, 5003);
  ASSERT_TRUE(o.write);
  ASSERT_TRUE(o.event);
  ASSERT_TRUE(ev.ParseFromString(*o.event));
  EXPECT_EQ(ev.group().group_id(), gid);
  EXPECT_EQ(ev.group().msg_id(), std::string(16, 'g'));
  EXPECT_EQ(ev.group().nonce(), std::string(24, 'n'));
  EXPECT_EQ(ev.group().ciphertext(), std::string(40, 'c'));
  EXPECT_EQ(ev.group().signature(), std::string(64, 's'));
}

TEST_F(RequestServiceTest, StrangersDmIsRefusedWithoutAWrite) {
  Outcome o = Decide(alice_, Dm(carol_.id));
  EXPECT_FALSE(o.write);
  EXPECT_TRUE(o.enqueue.empty());
  EXPECT_EQ(o.refusal.code(), Code::kNotFriends);
  EXPECT_TRUE(o.state_refusal);  // a fresher directory could change this
  EXPECT_EQ(Pending(carol_.id), 0u);
}

TEST_F(RequestServiceTest, UnknownUserAndMalformedFieldsAreRefused) {
  wire::Envelope e = Dm(999999);
  Outcome o = Decide(alice_, e);
  EXPECT_EQ(o.refusal.code(), Code::kNoSuchUser);
  e = Dm(bob_.id);
  e.mutable_direct_send()->set_nonce("short");
  o = Decide(alice_, e);
  EXPECT_EQ(o.refusal.code(), Code::kBadRequest);
  EXPECT_FALSE(o.state_refusal);  // the request itself is wrong
  wire::Envelope none;
  none.mutable_hello();
  EXPECT_EQ(Decide(alice_, none).refusal.code(), Code::kUnknownType);
}

TEST_F(RequestServiceTest, RequestsDecidedBeforeEarlierWritesCommitSeeTheirEffects) {
  // Pipelined: request, accept and a DM are all decided before any write
  // runs (as when they share one store batch), then the writes run in order.
  Outcome req = Decide(alice_, FriendRequest(bob_.id));
  Outcome acc = Decide(bob_, Accept(alice_.id));
  Outcome dm = Decide(alice_, Dm(bob_.id));
  ASSERT_TRUE(req.write && acc.write && !dm.enqueue.empty()) << dm.refusal.ToString();
  EXPECT_TRUE(RunWrite(req).st.ok());
  EXPECT_TRUE(RunWrite(acc).st.ok());
  WriteResult r = RunWrite(dm);
  EXPECT_TRUE(r.st.ok()) << r.st.ToString();
  bool friends = false;
  ASSERT_TRUE(store_->AreFriends(alice_.id, bob_.id, &friends).ok());
  EXPECT_TRUE(friends);
}

TEST_F(RequestServiceTest, AnsweringARequestThatWasNeverMadeIsNoSuchRequest) {
  EXPECT_EQ(Do(bob_, Accept(alice_.id)).error().code(), wire::NO_SUCH_REQUEST);
}

TEST_F(RequestServiceTest, OnlyTheAdminAddsAndKicksAndAKickBumpsTheEpoch) {
  const std::uint64_t gid = CreateGroup(alice_);
  EXPECT_EQ(Do(bob_, GroupAdd(gid, carol_.id)).error().code(), wire::NOT_ADMIN);
  wire::Envelope r = Do(alice_, GroupAdd(gid, bob_.id));
  ASSERT_TRUE(r.has_ok());
  EXPECT_EQ(r.ok().epoch(), 1u);
  ASSERT_TRUE(Do(alice_, GroupAdd(gid, carol_.id)).has_ok());
  EXPECT_EQ(Do(alice_, GroupAdd(gid, carol_.id)).error().code(), wire::ALREADY_MEMBER);
  EXPECT_EQ(Do(bob_, GroupKick(gid, carol_.id)).error().code(), wire::NOT_ADMIN);
  r = Do(alice_, GroupKick(gid, carol_.id));
  ASSERT_TRUE(r.has_ok());
  EXPECT_EQ(r.ok().epoch(), 2u);
  // The store agrees with the directory.
  GroupRecord g;
  ASSERT_TRUE(store_->GetGroup(gid, &g).ok());
  EXPECT_EQ(g.epoch, 2u);
  std::vector<std::uint64_t> members;
  ASSERT_TRUE(store_->ListMembers(gid, &members).ok());
  EXPECT_EQ(members, (std::vector<std::uint64_t>{alice_.id, bob_.id}));
}

// The notice that adds a member names the log's previous entry for the
// members who had it, and none for the member it adds (whose cursor starts
// after that entry): its session must not take the notice for a gap.
TEST_F(RequestServiceTest, TheNoticeAddingAMemberNamesNoPredecessorForThatMember) {
  const std::uint64_t gid = CreateGroup(alice_);
  ASSERT_TRUE(Do(alice_, GroupAdd(gid, bob_.id)).has_ok());
  WriteResult r;
  ASSERT_TRUE(Do(alice_, GroupAdd(gid, carol_.id), &r).has_ok());
  ASSERT_EQ(r.routed.size(), 3u);
  std::uint64_t bob_prev = 0, carol_prev = 1;
  for (const Delivery& d : r.routed) {
    if (d.user == bob_.id) bob_prev = d.prev_seq;
    if (d.user == carol_.id) carol_prev = d.prev_seq;
  }
  EXPECT_NE(bob_prev, 0u) << "bob read the notice that added him: it comes before this one";
  EXPECT_EQ(carol_prev, 0u);
}

// A directory refresh after a membership notice reads the group and its
// member ids; the members' users only when asked (the server then reads
// just the ones it does not know, not every member per notice).
TEST_F(RequestServiceTest, LoadFactsReadsAGroupsMemberUsersOnlyWhenAsked) {
  const std::uint64_t gid = CreateGroup(alice_);
  ASSERT_TRUE(Do(alice_, GroupAdd(gid, bob_.id)).has_ok());
  Facts facts;
  facts.groups.push_back(gid);
  facts.member_users = false;
  FactsSnapshot ids_only = LoadFacts(*store_, facts);
  ASSERT_TRUE(ids_only.st.ok());
  ASSERT_EQ(ids_only.groups.size(), 1u);
  EXPECT_EQ(ids_only.groups[0].second, (std::vector<std::uint64_t>{alice_.id, bob_.id}));
  EXPECT_TRUE(ids_only.users.empty());
  facts.member_users = true;
  FactsSnapshot with_users = LoadFacts(*store_, facts);
  ASSERT_TRUE(with_users.st.ok());
  EXPECT_EQ(with_users.users.size(), 2u);
}

TEST_F(RequestServiceTest, GroupSendReachesEveryOtherMemberAndStaleOrKickedSendersAreRefused) {
  const std::uint64_t gid = CreateGroup(alice_);
  ASSERT_TRUE(Do(alice_, GroupAdd(gid, bob_.id)).has_ok());
  ASSERT_TRUE(Do(alice_, GroupAdd(gid, carol_.id)).has_ok());
  std::uint64_t before = 0, entries = 0;
  ASSERT_TRUE(store_->CountGroupLog(gid, &before).ok());  // the two ADDED notices
  WriteResult r;
  ASSERT_TRUE(Do(bob_, GroupSend(gid, 1), &r).has_ok());
  ASSERT_EQ(r.routed.size(), 2u);
  EXPECT_EQ(r.routed[0].user, alice_.id);
  EXPECT_EQ(r.routed[1].user, carol_.id);
  EXPECT_EQ(r.routed[0].group_id, gid);  // one log entry, read by both
  EXPECT_EQ(r.routed[0].seq, r.routed[1].seq);
  ASSERT_TRUE(store_->CountGroupLog(gid, &entries).ok());
  EXPECT_EQ(entries, before + 1);
  ASSERT_TRUE(Do(alice_, GroupKick(gid, carol_.id)).has_ok());
  EXPECT_EQ(Do(bob_, GroupSend(gid, 1, 'h')).error().code(), wire::STALE_EPOCH);
  EXPECT_EQ(Do(carol_, GroupSend(gid, 2, 'i')).error().code(), wire::NOT_MEMBER);
  ASSERT_TRUE(Do(bob_, GroupSend(gid, 2, 'j'), &r).has_ok());
  ASSERT_EQ(r.routed.size(), 1u);
  EXPECT_EQ(r.routed[0].user, alice_.id);
}

TEST_F(RequestServiceTest, AckDeletesTheAcknowledgedRowsAndHasNoReply) {
  Befriend(alice_, bob_);
  WriteResult r;
  ASSERT_TRUE(Do(alice_, Dm(bob_.id), &r).has_ok());
  const std::uint64_t n = Pending(bob_.id);
  wire::Envelope ack;
  ack.mutable_ack()->add_seqs(r.routed[0].seq);
  Outcome o = Decide(bob_, ack);
  ASSERT_TRUE(o.ack_only);
  EXPECT_TRUE(o.reply.empty());
  EXPECT_EQ(o.ack_seqs, (std::vector<std::uint64_t>{r.routed[0].seq}));
  EXPECT_TRUE(store_->AckMany({{bob_.id, o.ack_seqs[0]}}).ok());
  EXPECT_EQ(Pending(bob_.id), n - 1);
}

// A dedupe key outlives an acknowledgement by more than the time a client
// may take to resend a request whose Ok it never saw (it reconnects for up
// to kReconnectFor, then resends), with room to spare.
static_assert(kDedupeRetentionMs >= 2 * static_cast<std::uint64_t>(client::kReconnectFor.count()),
              "dedupe keys must outlive the client's resend window");

// Issue 7 (chaos test): the server that stored a DM died before its Ok
// reached the sender, and the recipient acknowledged the row at once; the
// sender's resend (to another server) is answered Ok, stores nothing and
// routes nothing: the recipient got the message once.
TEST_F(RequestServiceTest, AResendOfADmTheRecipientAcknowledgedIsOkAndNotDeliveredAgain) {
  Befriend(alice_, bob_);
  WriteResult r;
  ASSERT_TRUE(Do(alice_, Dm(bob_.id), &r).has_ok());
  ASSERT_EQ(r.routed.size(), 1u);
  const std::uint64_t n = Pending(bob_.id);
  wire::Envelope ack;
  ack.mutable_ack()->add_seqs(r.routed[0].seq);
  Outcome o = Decide(bob_, ack);
  ASSERT_TRUE(o.ack_only);
  ASSERT_TRUE(store_->AckMany({{bob_.id, o.ack_seqs[0]}}).ok());
  ASSERT_EQ(Pending(bob_.id), n - 1);

  wire::Envelope reply = Do(alice_, Dm(bob_.id), &r);
  EXPECT_TRUE(reply.has_ok()) << reply.DebugString();
  EXPECT_TRUE(r.routed.empty());
  EXPECT_EQ(Pending(bob_.id), n - 1);
}

// The same for a group message whose log entry every member acknowledged
// and the server trimmed.
TEST_F(RequestServiceTest, AResendOfAGroupMessageTrimmedFromTheLogIsOkAndNotDeliveredAgain) {
  const std::uint64_t gid = CreateGroup(alice_);
  ASSERT_TRUE(Do(alice_, GroupAdd(gid, bob_.id)).has_ok());
  WriteResult r;
  ASSERT_TRUE(Do(alice_, GroupSend(gid, 1), &r).has_ok());
  ASSERT_EQ(r.routed.size(), 1u);
  wire::Envelope ack;
  wire::GroupAck* g = ack.mutable_ack()->add_groups();
  g->set_group_id(gid);
  g->set_seq(r.routed[0].seq);
  ASSERT_FALSE(Do(bob_, ack).has_error());
  ASSERT_FALSE(Do(alice_, ack).has_error());  // and the notice before it
  ASSERT_TRUE(store_->TrimGroup(gid).ok());
  std::uint64_t entries = 1;
  ASSERT_TRUE(store_->CountGroupLog(gid, &entries).ok());
  ASSERT_EQ(entries, 0u);

  wire::Envelope reply = Do(alice_, GroupSend(gid, 1), &r);
  EXPECT_TRUE(reply.has_ok()) << reply.DebugString();
  EXPECT_TRUE(r.routed.empty());
  ASSERT_TRUE(store_->CountGroupLog(gid, &entries).ok());
  EXPECT_EQ(entries, 0u);
}

TEST_F(RequestServiceTest, OneGroupAddAddsManyMembersWithOneNoticeEntry) {
  const std::uint64_t gid = CreateGroup(alice_);
  wire::Envelope add = GroupAdd(gid, bob_.id);
  add.mutable_group_add()->add_more_users()->set_name("carol");
  WriteResult r;
  ASSERT_TRUE(Do(alice_, add, &r).has_ok());
  std::uint64_t entries = 0;
  ASSERT_TRUE(store_->CountGroupLog(gid, &entries).ok());
  EXPECT_EQ(entries, 1u);
  ASSERT_EQ(r.routed.size(), 3u);  // the admin and both new members read it
  EXPECT_EQ(directory_.FindGroup(gid)->members, (std::vector<std::uint64_t>{alice_.id, bob_.id, carol_.id}));
  std::vector<std::uint64_t> members;
  ASSERT_TRUE(store_->ListMembers(gid, &members).ok());
  EXPECT_EQ(members.size(), 3u);
  std::vector<PendingRow> rows;
  ASSERT_TRUE(store_->FetchPending(carol_.id, 0, 10, &rows).ok());
  ASSERT_EQ(rows.size(), 1u);
  wire::Event ev;
  ASSERT_TRUE(ev.ParseFromString(rows[0].payload));
  EXPECT_EQ(ev.group_notice().subject_id(), bob_.id);
  ASSERT_EQ(ev.group_notice().more_subject_ids_size(), 1);
  EXPECT_EQ(ev.group_notice().more_subject_ids(0), carol_.id);
  // Naming someone twice, or a member, is refused.
  wire::Envelope again = GroupAdd(gid, bob_.id);
  EXPECT_EQ(Do(alice_, again).error().code(), wire::ALREADY_MEMBER);
}

TEST_F(RequestServiceTest, AGroupGrowsToItsLimitAndNoFurther) {
  config_.limits.max_group_members = 2;
  const std::uint64_t gid = CreateGroup(alice_);
  ASSERT_TRUE(Do(alice_, GroupAdd(gid, bob_.id)).has_ok());
  wire::Envelope r = Do(alice_, GroupAdd(gid, carol_.id));
  ASSERT_TRUE(r.has_error());
  EXPECT_EQ(r.error().code(), wire::LIMIT_REACHED);
  EXPECT_NE(r.error().message().find("would have 3 members"), std::string::npos) << r.error().message();
  EXPECT_EQ(directory_.FindGroup(gid)->members.size(), 2u);
  // One GroupAdd naming several counts them all, and adds none if over.
  ASSERT_TRUE(Do(alice_, GroupKick(gid, bob_.id)).has_ok());
  wire::Envelope two = GroupAdd(gid, bob_.id);
  two.mutable_group_add()->add_more_users()->set_id(carol_.id);
  EXPECT_EQ(Do(alice_, two).error().code(), wire::LIMIT_REACHED);
  EXPECT_EQ(directory_.FindGroup(gid)->members, (std::vector<std::uint64_t>{alice_.id}));
}

TEST_F(RequestServiceTest, GroupsPerUserCountCreatingAndBeingAdded) {
  config_.limits.max_groups_per_user = 2;
  CreateGroup(alice_);
  CreateGroup(alice_);
  wire::Envelope third;
  third.mutable_group_create()->set_name("third");
  wire::Envelope r = Do(alice_, third);
  ASSERT_TRUE(r.has_error());
  EXPECT_EQ(r.error().code(), wire::LIMIT_REACHED);
  EXPECT_NE(r.error().message().find("you are in 2 groups"), std::string::npos) << r.error().message();
  // Nobody can push alice past the limit either.
  const std::uint64_t bobs = CreateGroup(bob_);
  r = Do(bob_, GroupAdd(bobs, alice_.id));
  EXPECT_EQ(r.error().code(), wire::LIMIT_REACHED);
  EXPECT_NE(r.error().message().find("alice is in 2 groups"), std::string::npos) << r.error().message();
  EXPECT_FALSE(directory_.FindGroup(bobs)->HasMember(alice_.id));
  ASSERT_TRUE(Do(bob_, GroupAdd(bobs, carol_.id)).has_ok());
}

TEST_F(RequestServiceTest, ListsComeFromTheDirectory) {
  Befriend(alice_, bob_);
  ASSERT_TRUE(Do(carol_, FriendRequest(alice_.id)).has_ok());
  wire::Envelope e;
  e.mutable_list_friends();
  wire::Envelope r = Do(alice_, e);
  ASSERT_EQ(r.friend_list().friends_size(), 1);
  EXPECT_EQ(r.friend_list().friends(0).name(), "bob");
  ASSERT_EQ(r.friend_list().incoming_requests_size(), 1);
  EXPECT_EQ(r.friend_list().incoming_requests(0).name(), "carol");
  const std::uint64_t gid = CreateGroup(alice_);
  ASSERT_TRUE(Do(alice_, GroupAdd(gid, bob_.id)).has_ok());
  wire::Envelope lg;
  lg.mutable_list_groups();
  r = Do(bob_, lg);
  ASSERT_EQ(r.group_list().groups_size(), 1);
  EXPECT_EQ(r.group_list().groups(0).members_size(), 0);  // members: GetGroup
  EXPECT_EQ(r.group_list().groups(0).admin_id(), alice_.id);
  EXPECT_FALSE(r.group_list().more());
}

TEST_F(RequestServiceTest, ListsComeInPagesThatFitTheFrameLimit) {
  // Lists used to be one reply of any size (friends, requests, groups with
  // every member): past the client's frame limit they could not be read.
  config_.max_frame = 4096;  // pages of at most 2 KiB of entries
  config_.limits.max_groups_per_user = 0;
  std::vector<Caller> others;
  for (int i = 0; i < 90; ++i) {
    const std::string name = "user" + std::to_string(i);
    others.push_back({MakeUser(name), name});
  }
  DirectoryState state;
  ASSERT_TRUE(store_->LoadDirectory(&state).ok());
  directory_.Load(state);
  std::set<std::uint64_t> want_friends, want_requests, want_groups, want_members{alice_.id};
  for (int i = 0; i < 60; ++i) {
    Befriend(alice_, others[i]);
    want_friends.insert(others[i].id);
  }
  for (int i = 60; i < 90; ++i) {
    ASSERT_TRUE(Do(others[i], FriendRequest(alice_.id)).has_ok());
    want_requests.insert(others[i].id);
  }
  for (int i = 0; i < 120; ++i) want_groups.insert(CreateGroup(alice_));
  const std::uint64_t big = *want_groups.begin();
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(Do(alice_, GroupAdd(big, others[i].id)).has_ok());
    want_members.insert(others[i].id);
  }
  // Each page is one frame within the limit; asking on from its cursors
  // gets every entry exactly once.
  auto ask = [&](wire::Envelope e, int* pages) {
    e.set_rid(++rid_);
    Outcome o = service_.Handle(alice_, e, 1);
    EXPECT_LE(o.reply.size(), config_.max_frame + kFrameHeaderSize);
    wire::Envelope r;
    EXPECT_TRUE(r.ParseFromArray(o.reply.data() + kFrameHeaderSize, static_cast<int>(o.reply.size() - kFrameHeaderSize)));
    ++*pages;
    return r;
  };
  std::multiset<std::uint64_t> friends, requests, groups, members;
  int friend_pages = 0, group_pages = 0, member_pages = 0;
  wire::Envelope lf;
  lf.mutable_list_friends();
  for (;;) {
    wire::Envelope r = ask(lf, &friend_pages);
    for (const auto& u : r.friend_list().friends()) friends.insert(u.id());
    for (const auto& u : r.friend_list().incoming_requests()) requests.insert(u.id());
    if (!r.friend_list().more()) break;
    lf.mutable_list_friends()->set_after_friend(r.friend_list().next_after_friend());
    lf.mutable_list_friends()->set_after_request(r.friend_list().next_after_request());
    ASSERT_LT(friend_pages, 100);
  }
  wire::Envelope lg;
  lg.mutable_list_groups();
  for (;;) {
    wire::Envelope r = ask(lg, &group_pages);
    for (const auto& g : r.group_list().groups()) groups.insert(g.id());
    if (!r.group_list().more()) break;
    lg.mutable_list_groups()->set_after(r.group_list().next_after());
    ASSERT_LT(group_pages, 100);
  }
  wire::Envelope gg;
  gg.mutable_get_group()->set_group_id(big);
  for (;;) {
    wire::Envelope r = ask(gg, &member_pages);
    for (const auto& u : r.group_info().members()) members.insert(u.id());
    if (!r.group_info().more_members()) break;
    gg.mutable_get_group()->set_after_member(r.group_info().next_after_member());
    ASSERT_LT(member_pages, 100);
  }
  EXPECT_EQ(friends, std::multiset<std::uint64_t>(want_friends.begin(), want_friends.end()));
  EXPECT_EQ(requests, std::multiset<std::uint64_t>(want_requests.begin(), want_requests.end()));
  EXPECT_EQ(groups, std::multiset<std::uint64_t>(want_groups.begin(), want_groups.end()));
  EXPECT_EQ(members, std::multiset<std::uint64_t>(want_members.begin(), want_members.end()));
  EXPECT_GE(friend_pages, 3);
  EXPECT_GE(group_pages, 2);
  EXPECT_GE(member_pages, 2);
}

}  // namespace
}  // namespace fastchat::server
