// Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from
// real protobuf messages, in each target's input format (see the comment at
// the top of each *_fuzz.cc). Client seeds carry messages that really
// decrypt, made with the keys of client_fixture.h. Run by
// `scripts/fuzz.sh --seeds`; the output is committed.
//
// Usage: fuzz_seeds OUTDIR
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "balancer.pb.h"
#include "client_fixture.h"
#include "fastchat.pb.h"
#include "fastchat/crypto.h"
#include "fastchat/frame.h"
#include "message_format.h"
#include "mesh.pb.h"

namespace fs = std::filesystem;
using namespace fastchat;

namespace {

fs::path out_dir;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(out_dir / target);
  std::ofstream(out_dir / target / ("seed-" + name), std::ios::binary) << bytes;
}

std::string Framed(const std::string& payload) {
  std::string f;
  AppendFrame(payload, &f);
  return f;
}
// [control byte][frame]: the record format of the request, mesh and
// balancer targets.
std::string Record(std::uint8_t control, const std::string& payload) {
  return std::string(1, static_cast<char>(control)) + Framed(payload);
}

std::string S(const google::protobuf::Message& m) { return m.SerializeAsString(); }

// ---------------------------------------------------------------- requests
wire::Envelope FriendRequest(std::uint64_t to) {
  wire::Envelope e;
  e.mutable_friend_request()->mutable_to()->set_id(to);
  return e;
}
wire::Envelope Accept(std::uint64_t from) {
  wire::Envelope e;
  auto* a = e.mutable_friend_answer();
  a->mutable_to()->set_id(from);
  a->set_accept(true);
  a->set_nonce(std::string(24, 'n'));
  a->set_wrapped_key(std::string(48, 'k'));
  return e;
}
wire::Envelope Dm(std::uint64_t to, wire::Kind kind = wire::TEXT, std::uint32_t index = 0, std::uint32_t count = 1) {
  wire::Envelope e;
  auto* d = e.mutable_direct_send();
  d->mutable_to()->set_id(to);
  d->set_msg_id(std::string(16, 'm'));
  d->set_kind(kind);
  d->set_chunk_index(index);
  d->set_chunk_count(count);
  d->set_nonce(std::string(24, 'n'));
  d->set_ciphertext(std::string(40, 'c'));
  return e;
}
wire::Envelope GroupCreate(const std::string& name) {
  wire::Envelope e;
  e.mutable_group_create()->set_name(name);
  return e;
}
wire::Envelope GroupAdd(std::uint64_t gid, std::uint64_t user, std::uint64_t more = 0) {
  wire::Envelope e;
  e.mutable_group_add()->set_group_id(gid);
  e.mutable_group_add()->mutable_user()->set_id(user);
  if (more != 0) e.mutable_group_add()->add_more_users()->set_name(more == 3 ? "carol" : "dave");
  return e;
}
wire::Envelope GroupKick(std::uint64_t gid, std::uint64_t user) {
  wire::Envelope e;
  e.mutable_group_kick()->set_group_id(gid);
  e.mutable_group_kick()->mutable_user()->set_id(user);
  return e;
}
wire::Envelope GroupLeave(std::uint64_t gid) {
  wire::Envelope e;
  e.mutable_group_leave()->set_group_id(gid);
  return e;
}
wire::Envelope GroupSend(std::uint64_t gid, std::uint64_t epoch) {
  wire::Envelope e;
  auto* g = e.mutable_group_send();
  g->set_group_id(gid);
  g->set_epoch(epoch);
  g->set_msg_id(std::string(16, 'g'));
  g->set_kind(wire::TEXT);
  g->set_chunk_count(1);
  g->set_nonce(std::string(24, 'n'));
  g->set_ciphertext(std::string(40, 'c'));
  g->set_signature(std::string(64, 's'));
  return e;
}
wire::Envelope GroupKey(std::uint64_t gid, std::uint64_t to, std::uint64_t epoch) {
  wire::Envelope e;
  auto* k = e.mutable_group_key_send();
  k->set_group_id(gid);
  k->mutable_to()->set_id(to);
  k->set_epoch(epoch);
  k->set_nonce(std::string(24, 'n'));
  k->set_wrapped_key(std::string(64, 'w'));
  return e;
}

void RequestSeeds() {
  // Callers: control & 3 = alice (1), bob (2), carol (3), dave (4); & 4
  // commits the writes decided so far.
  auto rec = [](std::uint8_t who, wire::Envelope e, std::uint64_t rid, bool commit = true) {
    e.set_rid(rid);
    return Record(static_cast<std::uint8_t>(who | (commit ? 4 : 0)), S(e));
  };
  wire::Envelope lf, lg, gg, gu, ack;
  lf.mutable_list_friends();
  lg.mutable_list_groups();
  gg.mutable_get_group()->set_group_id(1);
  gu.mutable_get_user()->mutable_user()->set_name("bob");
  ack.mutable_ack()->add_seqs(1);
  ack.mutable_ack()->add_groups()->set_group_id(1);
  ack.mutable_ack()->mutable_groups(0)->set_seq(3);
  Write("request", "friends", rec(0, FriendRequest(2), 1) + rec(1, Accept(1), 2) + rec(0, Dm(2), 3) +
                                  rec(1, lf, 4) + rec(0, lf, 5) + rec(1, ack, 6));
  Write("request", "pipelined", rec(0, FriendRequest(2), 1, false) + rec(1, Accept(1), 2, false) +
                                    rec(0, Dm(2), 3, false) + rec(0, Dm(2, wire::IMAGE, 0, 2), 4, false));
  Write("request", "group", rec(0, GroupCreate("team"), 1) + rec(0, GroupAdd(1, 2, 3), 2) +
                                rec(0, GroupKey(1, 2, 1), 3) + rec(1, GroupSend(1, 1), 4) + rec(0, GroupKick(1, 3), 5) +
                                rec(1, GroupSend(1, 1), 6) + rec(2, gg, 7) + rec(1, lg, 8) + rec(1, GroupLeave(1), 9) +
                                rec(0, GroupLeave(1), 10) + rec(0, ack, 11));
  Write("request", "group-limits", rec(0, GroupCreate("a"), 1) + rec(0, GroupCreate("b"), 2) +
                                       rec(0, GroupCreate("c"), 3) + rec(0, GroupCreate("d"), 4) +
                                       rec(1, GroupCreate("e"), 5) + rec(1, GroupAdd(4, 1), 6) +
                                       rec(0, GroupAdd(1, 2, 4), 7) + rec(0, GroupAdd(1, 3), 8));
  Write("request", "lookups", rec(3, gu, 1) + rec(3, gg, 2) + rec(2, FriendRequest(2), 3) + rec(2, FriendRequest(3), 4));
}

// ---------------------------------------------------------------- frames
void FrameSeeds() {
  const std::string prefix = std::string("\x00\x40", 2) + "\x01\x07\x20\xff\x03\x10\x40\x05";
  wire::Envelope hello;
  hello.set_rid(1);
  hello.mutable_hello()->set_version(1);
  hello.mutable_hello()->set_agent("fastchat-cli/0.1");
  wire::Envelope login;
  login.set_rid(2);
  login.mutable_login()->mutable_user()->set_name("alice");
  login.mutable_login()->set_password("correct horse");
  login.mutable_login()->set_receive(true);
  Write("frame", "hello-login", prefix + Framed(S(hello)) + Framed(S(login)) + Framed(S(Dm(2))));
  Write("frame", "over-limit", prefix + Framed(S(GroupSend(1, 1))) + std::string("\x7f\xff\xff\xff", 4));
  Write("frame", "truncated", prefix + Framed(S(GroupCreate("team"))).substr(0, 7));
}

// ---------------------------------------------------------------- mesh
void MeshSeeds() {
  mesh::MeshFrame presence, full, ack, fw, changed, resync, ping, hello;
  presence.mutable_presence()->add_online(5);
  presence.mutable_presence()->add_online(6);
  presence.mutable_presence()->set_ack_token(9);
  full.mutable_presence()->set_full(true);
  full.mutable_presence()->add_online(6);
  full.mutable_presence()->add_offline(5);
  ack.mutable_presence_ack()->set_token(9);
  fw.mutable_forward()->add_targets()->set_user(5);
  fw.mutable_forward()->mutable_targets(0)->set_seq(11);
  fw.mutable_forward()->set_event("event bytes");
  fw.mutable_forward()->set_group_id(3);
  changed.mutable_changed()->add_user_ids(5);
  changed.mutable_changed()->add_friendships()->set_a(5);
  changed.mutable_changed()->add_groups(3);
  resync.mutable_resync()->add_users(6);
  ping.mutable_ping();
  hello.mutable_hello()->set_server_id("s2");
  // op & 1 == 0: bytes on link (op >> 1) % 3; op & 1: that link goes down.
  Write("mesh", "presence", Record(0, Framed(S(presence))) + Record(2, Framed(S(presence))) +
                                Record(2, Framed(S(full))) + Record(1, "") + Record(4, Framed(S(ack))));
  // The snapshot a link starts with, in two parts (only the last asks for
  // the ack), then a login on the same link.
  mesh::MeshFrame part1, part2, login;
  part1.mutable_presence()->set_full(true);
  part1.mutable_presence()->add_online(5);
  part1.mutable_presence()->add_online(6);
  part2.mutable_presence()->set_continued(true);
  part2.mutable_presence()->add_online(7);
  part2.mutable_presence()->add_online(8);
  part2.mutable_presence()->set_ack_token(9);
  login.mutable_presence()->add_online(7);
  login.mutable_presence()->set_ack_token(10);
  Write("mesh", "snapshot-in-parts",
        Record(0, Framed(S(part1)) + Framed(S(part2))) + Record(0, Framed(S(login))));
  Write("mesh", "traffic", Record(0, Framed(S(fw)) + Framed(S(changed))) + Record(0, Framed(S(resync))) +
                               Record(2, Framed(S(ping))) + Record(4, Framed(S(hello))) + Record(0, Framed(S(presence))));
}

// ---------------------------------------------------------------- mesh handshake
// [role byte: & 1 dialler] then records; op & 3: 0 a raw frame, 1 a hello
// naming the bytes, 2 the right PeerAuth, 3 a PeerAuth with the bytes as MAC;
// op & 4 the other method, op & 8 go on after a refusal, op & 16 version from
// the bytes.
void MeshHandshakeSeeds() {
  const std::string accept(1, '\x00'), dial(1, '\x01');
  mesh::MeshFrame v2, ping;
  v2.mutable_hello()->set_version(2);
  v2.mutable_hello()->set_server_id("server-a");
  v2.mutable_hello()->set_challenge(std::string(32, 'c'));
  ping.mutable_ping();
  Write("mesh_handshake", "accept", accept + Record(1, "server-a") + Record(2, ""));
  Write("mesh_handshake", "dial", dial + Record(1, "server-c") + Record(2, ""));
  Write("mesh_handshake", "wrong-mac", accept + Record(1, "server-a") + Record(3, std::string(32, 'x')));
  Write("mesh_handshake", "raw", accept + Record(8, S(v2)) + Record(8, S(ping)) + Record(1, "server-b"));
  Write("mesh_handshake", "out-of-order",
        dial + Record(2 | 8, "") + Record(1 | 4 | 8, "server-c") + Record(1 | 8, "server-c") + Record(2, ""));
  Write("mesh_handshake", "dialled-other", dial + Record(1, "server-z") + Record(2, ""));
}

// ---------------------------------------------------------------- balancer
void BalancerSeeds() {
  balancer::Envelope report, get, bad;
  report.mutable_server_report()->set_server_id("s1");
  report.mutable_server_report()->set_client_address("127.0.0.1:7400");
  report.mutable_server_report()->set_connections(3);
  report.mutable_server_report()->set_cpu_percent(12.5);
  report.mutable_server_report()->set_msgs_per_sec(100);
  get.mutable_get_server();
  bad.mutable_server_auth()->set_server_id("s1");
  bad.mutable_server_auth()->set_mac(std::string(32, 'x'));
  balancer::Envelope report2 = report;
  report2.mutable_server_report()->set_server_id("s2");
  report2.mutable_server_report()->set_client_address("[::1]:7401");
  report2.mutable_server_report()->set_load(0.5);
  // op & 3: 0 frame, 1 proper auth as the bytes, 2 time passes, 3 close;
  // (op >> 2) % 3 the connection.
  auto frame = [](int conn, const balancer::Envelope& e) { return Record(static_cast<std::uint8_t>(conn << 2), S(e)); };
  Write("balancer", "two-servers", Record(1, "s1") + frame(0, report) + Record(5, "s2") + frame(1, report2) +
                                       frame(2, get) + frame(2, get) + Record(2, "\x10") + frame(2, get) +
                                       Record(3, "") + frame(2, get));
  Write("balancer", "refusals", frame(0, report) + frame(1, bad) + frame(1, bad) + Record(1, "s1") +
                                    frame(0, report2) + frame(0, report) + Record(9, "s1") + frame(2, report) + frame(0, get));
}

// ---------------------------------------------------------------- balancer_peer
// [side: 0 client, 1 reporter] then records; op & 3: 0 raw frame, 1 Hello,
// 2 Error{code bytes[0], message}, 3 AuthOk (op & 8) or ServerAssignment
// (port 3 bytes, host length, host, server id).
void BalancerPeerSeeds() {
  const std::string client(1, '\0'), reporter(1, '\1');
  auto assignment = [](std::uint32_t port, const std::string& host, const std::string& id) {
    std::string b;
    b += static_cast<char>(port >> 16);
    b += static_cast<char>(port >> 8);
    b += static_cast<char>(port);
    b += static_cast<char>(host.size());
    return Record(3, b + host + id);
  };
  Write("balancer_peer", "client-assigned", client + Record(1, "") + assignment(7400, "127.0.0.1", "s1"));
  Write("balancer_peer", "client-no-server",
        client + Record(1, "") + Record(2, std::string(1, '\x08') + "no chat server is registered"));
  Write("balancer_peer", "client-unusable",
        client + assignment(0, "h", "s1") + assignment(65536, "h", "s1") + assignment(7400, "evil host", "s1") +
            assignment(7400, "h\x1b[2J", "s1") + assignment(7400, "h", "") + assignment(7400, "::1", "s 2"));
  Write("balancer_peer", "reporter-registers",
        reporter + Record(1, "") + Record(11, std::string("\0\0\x0b\xb8", 4)) +
            Record(2, std::string(1, '\x05') + "client_address must be host:port") + Record(2, "\x05x\n[error] y"));
  Write("balancer_peer", "reporter-bad-secret",
        reporter + Record(1, "") + Record(2, std::string(1, '\x06') + "wrong cluster secret"));
  Write("balancer_peer", "reporter-bad-hellos",
        reporter + Record(9 | 32, "\x02") + Record(17 | 32, "short") + Record(1 | 32, "") + Record(11, ""));
  Write("balancer_peer", "reporter-out-of-turn", reporter + Record(11 | 4 | 32, "\1") + Record(1 | 4 | 32, ""));
}

// ---------------------------------------------------------------- client
wire::Envelope Deliver(std::uint64_t seq, const wire::Event& ev, std::uint64_t group = 0) {
  wire::Envelope e;
  e.mutable_deliver()->set_seq(seq);
  e.mutable_deliver()->set_event(S(ev));
  e.mutable_deliver()->set_group_id(group);
  return e;
}

wire::Event DirectFromBob(const std::string& msg_id, wire::Kind kind, std::uint32_t index, std::uint32_t count,
                          const std::string& plain) {
  wire::Event ev;
  ev.set_from_id(fuzz::kBob);
  ev.set_from_name("bob");
  ev.set_time_ms(1700000000000);
  auto* d = ev.mutable_direct();
  d->set_msg_id(msg_id);
  d->set_kind(kind);
  d->set_chunk_index(index);
  d->set_chunk_count(count);
  std::string nonce, ct;
  crypto::AeadEncrypt(plain, client::DmAd(fuzz::kBob, fuzz::kAlice, msg_id, kind, index, count),
                      fuzz::FriendKeyAliceBob(), &nonce, &ct);
  d->set_nonce(nonce);
  d->set_ciphertext(ct);
  return ev;
}

wire::Event GroupFromBob(const std::string& msg_id, wire::Kind kind, std::uint32_t index, std::uint32_t count,
                         const std::string& plain) {
  const fuzz::FixedKeys bob = fuzz::KeysOf('b');
  wire::Event ev;
  ev.set_from_id(fuzz::kBob);
  ev.set_from_name("bob");
  auto* g = ev.mutable_group();
  g->set_group_id(fuzz::kGroup);
  g->set_epoch(1);
  g->set_msg_id(msg_id);
  g->set_kind(kind);
  g->set_chunk_index(index);
  g->set_chunk_count(count);
  const std::string ad = client::GroupAd(fuzz::kGroup, 1, fuzz::kBob, msg_id, kind, index, count);
  std::string nonce, ct;
  crypto::AeadEncrypt(plain, ad, fuzz::GroupKeyEpoch1(), &nonce, &ct);
  g->set_nonce(nonce);
  g->set_ciphertext(ct);
  g->set_signature(crypto::Sign(ad + nonce + ct, bob.ed25519_secret));
  return ev;
}

void ClientSeeds() {
  const fuzz::FixedKeys alice = fuzz::KeysOf('a'), bob = fuzz::KeysOf('b');
  wire::Envelope sync, ping, displaced, busy;
  sync.mutable_sync_done();
  ping.set_rid(77);
  ping.mutable_ping();
  displaced.mutable_error()->set_code(wire::DISPLACED);
  displaced.mutable_error()->set_message("you logged in from somewhere else");
  busy.mutable_error()->set_code(wire::BUSY);
  busy.mutable_error()->set_retry_after_ms(1500);

  // Texts, direct and group, and a repeat.
  std::string texts = Framed(S(Deliver(1, DirectFromBob(std::string(16, '1'), wire::TEXT, 0, 1, "hello alice"))));
  texts += Framed(S(Deliver(2, GroupFromBob(std::string(16, '2'), wire::TEXT, 0, 1, "hello team"), fuzz::kGroup)));
  texts += Framed(S(Deliver(3, DirectFromBob(std::string(16, '1'), wire::TEXT, 0, 1, "hello alice"))));
  texts += Framed(S(sync)) + Framed(S(ping)) + Framed(S(displaced));
  Write("client", "texts", texts);

  // An image in two chunks: chunk 0 = u64be(size) || title, then the data.
  const std::string data(1000, 'P');
  std::string head;
  client::PutU64(&head, data.size());
  head += "../../etc/passwd .png";
  std::string image = Framed(S(Deliver(4, DirectFromBob(std::string(16, 'i'), wire::IMAGE, 0, 2, head))));
  image += Framed(S(Deliver(5, DirectFromBob(std::string(16, 'i'), wire::IMAGE, 1, 2, data))));
  image += Framed(S(Deliver(6, GroupFromBob(std::string(16, 'j'), wire::IMAGE, 0, 2, head), fuzz::kGroup)));
  image += Framed(S(Deliver(7, GroupFromBob(std::string(16, 'j'), wire::IMAGE, 1, 2, data), fuzz::kGroup)));
  image += Framed(S(sync));
  Write("client", "images", image);

  // Friend events, a group key, notices, and an event from carol (unknown:
  // the client asks GetUser with rid 1; the server answers).
  wire::Event fr, fa, gk, notice, kicked, from_carol;
  fr.set_from_id(fuzz::kCarol);
  fr.set_from_name("carol");
  fr.mutable_friend_request();
  fa.set_from_id(fuzz::kBob);
  fa.set_from_name("bob");
  {
    std::string nonce, ct;
    crypto::BoxSeal(std::string(32, 'K'), alice.x25519_public, bob.x25519_secret, &nonce, &ct);
    fa.mutable_friend_answer()->set_accept(true);
    fa.mutable_friend_answer()->set_nonce(nonce);
    fa.mutable_friend_answer()->set_wrapped_key(ct);
  }
  gk.set_from_id(fuzz::kBob);
  gk.set_from_name("bob");
  {
    std::string plain;
    client::PutU64(&plain, fuzz::kGroup);
    client::PutU64(&plain, 2);
    plain += std::string(32, 'H');
    std::string nonce, ct;
    crypto::BoxSeal(plain, alice.x25519_public, bob.x25519_secret, &nonce, &ct);
    auto* k = gk.mutable_group_key();
    k->set_group_id(fuzz::kGroup);
    k->set_epoch(2);
    k->set_nonce(nonce);
    k->set_wrapped_key(ct);
  }
  auto* n = notice.mutable_group_notice();
  n->set_group_id(fuzz::kGroup);
  n->set_group_name("team");
  n->set_admin_id(fuzz::kBob);
  n->set_what(wire::GroupNoticeEvent::ADDED);
  n->set_subject_id(fuzz::kCarol);
  n->set_subject_name("carol");
  n->set_epoch(1);
  n->add_more_subject_ids(9);
  n->add_more_subject_names("zed");
  kicked = notice;
  kicked.mutable_group_notice()->set_what(wire::GroupNoticeEvent::KICKED);
  kicked.mutable_group_notice()->set_subject_id(fuzz::kAlice);
  kicked.mutable_group_notice()->set_epoch(2);
  from_carol = DirectFromBob(std::string(16, 'c'), wire::TEXT, 0, 1, "hi");
  from_carol.set_from_id(fuzz::kCarol);
  wire::Envelope user_info;
  user_info.set_rid(1);
  user_info.mutable_user_info()->set_id(fuzz::kCarol);
  user_info.mutable_user_info()->set_name("carol");
  user_info.mutable_user_info()->set_x25519_public(std::string(32, 'x'));
  user_info.mutable_user_info()->set_ed25519_public(std::string(32, 'e'));
  std::string social = Framed(S(Deliver(8, fr))) + Framed(S(Deliver(9, fa))) + Framed(S(user_info)) +
                       Framed(S(Deliver(10, gk))) + Framed(S(Deliver(11, notice, fuzz::kGroup))) +
                       Framed(S(Deliver(12, from_carol))) + Framed(S(Deliver(13, kicked, fuzz::kGroup))) +
                       Framed(S(sync)) + Framed(S(busy));
  Write("client", "social", social);
}

void SmallSeeds() {
  Write("filename", "plain", "holiday.png");
  Write("filename", "climb", "../../.ssh/authorized_keys");
  Write("filename", "long", std::string(150, 'a') + ".jpeg");
  Write("filename", "taken", "a.txt");
  Write("filename", "dots", "...");
  // local_store: FuzzedDataProvider bytes (any bytes are a valid input).
  Write("local_store", "ops", std::string("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0f", 15) +
                                  std::string(64, '\x11'));
  Write("local_store", "tamper", std::string("\x06\x02\x08\x0e\x01", 5) + std::string(40, '\x22') + "\x0d\x07\x09");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || !crypto::Init()) {
    std::fprintf(stderr, "usage: fuzz_seeds OUTDIR\n");
    return 2;
  }
  out_dir = argv[1];
  RequestSeeds();
  FrameSeeds();
  MeshSeeds();
  MeshHandshakeSeeds();
  BalancerSeeds();
  BalancerPeerSeeds();
  ClientSeeds();
  SmallSeeds();
  return 0;
}
