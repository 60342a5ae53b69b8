// The chaos test: three servers, a balancer and PostgreSQL under load while
// servers are killed with SIGKILL and restarted, PostgreSQL is restarted
// (immediate shutdown: a crash and recovery) once, and one server's mesh
// links are cut and restored (a LinkProxy on its advertised mesh address:
// a silent partition, found only by the mesh's own timeouts).
//
// The load: kUsers simulated users, each one thread with one receiving
// session (Login receive=true, TLS) placed by the balancer, which also
// carries its sends, as the real client's does. Each user sends in turn a
// DM to the next user (a ring of friends) and a group message to the group
// of all users, one message at a time: the next is sent only after the
// previous one was Ok'd, so the order the server accepted them is the send
// order. A message not Ok'd (no reply before the connection died, a reply
// timeout, or an error such as INTERNAL while PostgreSQL restarts) is sent
// again with the same msg_id, after reconnecting through the balancer if
// needed, until it is Ok'd. Sends are idempotent on msg_id
// (docs/protocol.md), so a resend must never make a second delivery.
//
// Payloads are NOT encrypted: the nonce, ciphertext and signature fields
// carry random bytes (like fastchat-bench --no-encrypt). The server never
// looks inside them, so this changes nothing the test checks. The msg_id
// names the message: "CHA0" || u32be(conversation) || u64be(counter).
//
// Every delivery is checked and acknowledged at once (Ack.seqs for a DM,
// Ack.groups for a group message, as the client does). At the end the
// faults stop, every user finishes its last message, the users drain until
// quiet, and then each logs in once more to collect anything still pending.
// Checked, for every (sender, recipient, conversation):
// - lost: an Ok'd message never delivered, not even at the final login;
// - duplicated: one message delivered under two different seqs (the same
//   seq again is a redelivery of an unacknowledged row, which the protocol
//   allows and clients drop: counted as `redelivered`, not an error);
// - reordered: a message arriving after a later message of the same
//   conversation from the same sender.
// An un-Ok'd message (only the last in-flight one of a sender, when the run
// ends) may be delivered or not, but at most once. `late` counts messages
// first seen at the final login: stored but never pushed to the receiving
// session that was online (not a loss by the protocol's promise; reported).
//
// FASTCHAT_CHAOS_SECONDS (default 60) sets the length of the faulty phase;
// FASTCHAT_CHAOS_SEED the fault schedule (printed on every run);
// FASTCHAT_CHAOS_FAULTS which faults (default "kill,pg,cut").
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "balancer_query.h"
#include "harness/cluster.h"
#include "harness/link_proxy.h"
#include "harness/raw_conn.h"

namespace fastchat::testing {
namespace {

constexpr int kUsers = 6;
constexpr int kDm = 0;     // conversation 0: DM to the next user of the ring
constexpr int kGroup = 1;  // conversation 1: the group of all users
constexpr Millis kReplyTimeout{5000};

double EnvSeconds(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atof(v) : fallback;
}

void PutU64(std::string* out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::uint64_t GetU64(const std::string& s, std::size_t at) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

std::string MsgId(int conv, std::uint64_t counter) {
  std::string id = "CHA0";
  id.push_back(0);
  id.push_back(0);
  id.push_back(0);
  id.push_back(static_cast<char>(conv));
  PutU64(&id, counter);
  return id;
}

// Counts per kind of conversation.
struct Counts {
  std::uint64_t sent = 0;         // distinct messages sent (first attempts)
  std::uint64_t attempts = 0;     // sends including resends
  std::uint64_t acked = 0;        // Ok'd
  std::uint64_t expected = 0;     // deliveries owed for Ok'd messages
  std::uint64_t delivered = 0;    // distinct messages delivered (each recipient counts)
  std::uint64_t lost = 0;
  std::uint64_t duplicated = 0;
  std::uint64_t reordered = 0;
  std::uint64_t redelivered = 0;  // the same seq again (allowed)
  std::uint64_t late = 0;         // first seen at the final login
  std::uint64_t unacked_delivered = 0;
  void Add(const Counts& o) {
    sent += o.sent;
    attempts += o.attempts;
    acked += o.acked;
    expected += o.expected;
    delivered += o.delivered;
    lost += o.lost;
    duplicated += o.duplicated;
    reordered += o.reordered;
    redelivered += o.redelivered;
    late += o.late;
    unacked_delivered += o.unacked_delivered;
  }
};

struct Shared {
  std::string balancer;
  std::string tmp;
  std::uint64_t group_id = 0;
  std::uint64_t epoch = 0;
  std::atomic<bool> stop_sending{false};
  std::atomic<int> senders_done{0};
  std::atomic<int> drained{0};
  std::atomic<bool> give_up{false};  // the final phase took too long
};

// One simulated user: its thread sends, receives and checks.
class ChaosUser {
 public:
  ChaosUser(Shared* shared, int index) : shared_(shared), index_(index) {}

  std::string name;
  std::string password;
  std::uint64_t id = 0;
  std::string token;
  std::uint64_t dm_to = 0;  // the next user of the ring

  // Outgoing: state of each counter of each conversation (false: not Ok'd).
  std::vector<bool> ok_[2];
  // Incoming, per (sender, conversation): the seqs each counter arrived
  // under, and the highest counter seen.
  struct Stream {
    std::map<std::uint64_t, std::set<std::uint64_t>> seqs;
    std::map<std::uint64_t, bool> late;
    std::optional<std::uint64_t> highest;
  };
  std::map<std::pair<std::uint64_t, int>, Stream> in_;
  Counts counts[2];
  std::uint64_t reconnects = 0;
  std::uint64_t bad_events = 0;
  std::map<std::string, std::uint64_t> errors;  // error code name (or "timeout") -> count
  std::vector<std::string> problems;            // first few reorder/dup details
  // (sender id, conversation, counter) of each reorder/dup note, in order.
  std::vector<std::tuple<std::uint64_t, int, std::uint64_t>> problem_keys;
  // Messages that took more than one attempt: "server:outcome" of each.
  std::map<std::pair<int, std::uint64_t>, std::string> history;
  std::string History(int conv, std::uint64_t counter) const {
    auto it = history.find({conv, counter});
    return it == history.end() ? "Ok at the first attempt" : it->second;
  }

  void Run() {
    try {
      SendPhase();
      ++shared_->senders_done;
      Drain();
      ++shared_->drained;
      while (shared_->drained < kUsers && !shared_->give_up) {
        if (!Read(Millis(100))) std::this_thread::sleep_for(Millis(100));
      }
      FinalLogin();
    } catch (const std::exception& e) {
      problems.push_back(std::string("thread ended: ") + e.what());
      ++shared_->senders_done;
      ++shared_->drained;
    }
  }

 private:
  bool Connect() {
    conn_.reset();
    client::TlsTrust tofu;
    tofu.known_servers = shared_->tmp + "/known-balancers-" + std::to_string(index_);
    client::Assignment got;
    Status st = client::AskBalancersNow({shared_->balancer}, tofu, &got, Millis(1000));
    server_id_ = got.server_id;
    if (!st.ok()) {
      ++errors["balancer: " + st.ToString().substr(0, 40)];
      std::this_thread::sleep_for(Millis(100));
      return false;
    }
    try {
      auto c = std::make_unique<RawConn>(got.port);
      wire::Envelope hello;
      hello.mutable_hello()->set_version(kProtocolVersion);
      wire::Envelope r = c->Request(hello, kReplyTimeout);
      if (!r.has_hello_ok()) throw std::runtime_error("hello: " + Describe(r));
      wire::Envelope login;
      login.mutable_login()->set_token(token);
      login.mutable_login()->set_receive(true);
      r = c->Request(login, kReplyTimeout);
      if (!r.has_logged_in()) throw std::runtime_error("login: " + Describe(r));
      conn_ = std::move(c);
      ++reconnects;
      return true;
    } catch (const std::exception& e) {
      ++errors[std::string("connect: ") + std::string(e.what()).substr(0, 40)];
      std::this_thread::sleep_for(Millis(100));
      return false;
    }
  }

  void Drop() { conn_.reset(); }

  // Reads frames for up to `wait`, handling pushes. Returns false if the
  // connection ended. Sets *reply to the frame with rid `want` if one came.
  bool Read(Millis wait, std::uint64_t want = 0, wire::Envelope* reply = nullptr, bool* got = nullptr) {
    if (!conn_) return false;
    auto deadline = Clock::now() + wait;
    for (;;) {
      auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
      if (left.count() <= 0) return true;
      wire::Envelope env;
      RawConn::Recv rc = conn_->Receive(&env, left);
      if (rc == RawConn::Recv::kTimeout) return true;
      if (rc != RawConn::Recv::kOk) {
        Drop();
        return false;
      }
      if (env.has_deliver()) {
        OnDeliver(env.deliver());
      } else if (env.has_ping()) {
        wire::Envelope pong;
        pong.set_rid(env.rid());
        pong.mutable_pong();
        conn_->Send(pong);
      } else if (want != 0 && env.rid() == want) {
        *reply = std::move(env);
        *got = true;
        return true;
      } else if (env.has_error() && env.rid() == 0) {
        ++errors["push " + ErrorName(env)];
        Drop();
        return false;
      }
    }
  }

  void OnDeliver(const wire::Deliver& d) {
    wire::Envelope ack;
    if (d.group_id() != 0) {
      auto* g = ack.mutable_ack()->add_groups();
      g->set_group_id(d.group_id());
      g->set_seq(d.seq());
    } else {
      ack.mutable_ack()->add_seqs(d.seq());
    }
    wire::Event ev;
    if (!ev.ParseFromString(d.event())) {
      ++bad_events;
    } else if (ev.has_direct() || ev.has_group()) {
      const std::string& mid = ev.has_direct() ? ev.direct().msg_id() : ev.group().msg_id();
      int conv = ev.has_direct() ? kDm : kGroup;
      if (mid.size() != 16 || mid.compare(0, 4, "CHA0") != 0 || static_cast<int>(mid[7]) != conv) {
        ++bad_events;
      } else {
        Record(ev.from_id(), conv, GetU64(mid, 8), d.seq());
      }
    }
    conn_->Send(ack);
  }

  void Record(std::uint64_t from, int conv, std::uint64_t counter, std::uint64_t seq) {
    Stream& s = in_[{from, conv}];
    Counts& c = counts[conv];
    auto& seqs = s.seqs[counter];
    if (seqs.count(seq) != 0) {
      ++c.redelivered;
      return;
    }
    seqs.insert(seq);
    if (seqs.size() > 1) {
      ++c.duplicated;
      Note(from, conv, counter, "duplicated: from " + std::to_string(from) + " conv " + std::to_string(conv) + " counter " +
           std::to_string(counter) + " under seqs " + Join(seqs));
      return;
    }
    s.late[counter] = final_login_;
    if (s.highest && counter < *s.highest) {
      ++c.reordered;
      Note(from, conv, counter, "reordered: from " + std::to_string(from) + " conv " + std::to_string(conv) + " counter " +
           std::to_string(counter) + " (seq " + std::to_string(seq) + ") after counter " +
           std::to_string(*s.highest) + (final_login_ ? " (at the final login)" : ""));
    }
    if (!s.highest || counter > *s.highest) s.highest = counter;
  }

  static std::string Join(const std::set<std::uint64_t>& v) {
    std::string out;
    for (auto x : v) out += (out.empty() ? "" : ",") + std::to_string(x);
    return out;
  }
  void Note(std::uint64_t from, int conv, std::uint64_t counter, const std::string& what) {
    if (problems.size() >= 20) return;
    problems.push_back(name + " (on " + server_id_ + "): " + what);
    problem_keys.emplace_back(from, conv, counter);
  }

  // Sends until told to stop, then finishes the message in flight.
  void SendPhase() {
    int conv = kDm;
    std::uint64_t current = 0;             // counter in flight (of `conv`)
    bool in_flight = false;
    std::string trail;                     // its attempts: "server:outcome ..."
    auto attempt = [&](const std::string& outcome) {
      if (trail.size() < 400) trail += (trail.empty() ? "" : " ") + server_id_ + ":" + outcome;
    };
    auto final_deadline = std::optional<Clock::time_point>();
    for (;;) {
      if (shared_->stop_sending) {
        if (!in_flight) return;
        if (!final_deadline) final_deadline = Clock::now() + Millis(60000);
        if (Clock::now() > *final_deadline) {
          history[std::make_pair(conv, current)] = trail + " (never Ok'd)";
          return;
        }
      }
      if (!conn_ && !Connect()) continue;
      if (!in_flight) {
        conv = conv == kDm ? kGroup : kDm;
        in_flight = true;
        current = ok_[conv].size();
        ok_[conv].push_back(false);
        trail.clear();
        ++counts[conv].sent;
      }
      wire::Envelope env = Message(conv, current);
      const std::uint64_t rid = conn_->NextRid();
      env.set_rid(rid);
      ++counts[conv].attempts;
      if (!conn_->Send(env)) {
        attempt("send-failed");
        Drop();
        continue;
      }
      wire::Envelope reply;
      bool got = false;
      if (!Read(kReplyTimeout, rid, &reply, &got)) {  // connection ended: resend
        attempt("closed");
        continue;
      }
      if (!got) {
        attempt("timeout");
        ++errors["timeout"];
        Drop();
        continue;
      }
      if (reply.has_ok()) {
        if (!trail.empty()) {
          attempt("Ok");
          history[std::make_pair(conv, current)] = trail;
        }
        ok_[conv][current] = true;
        ++counts[conv].acked;
        in_flight = false;
        Read(Millis(15));  // pace the load, reading pushes meanwhile
        continue;
      }
      ++errors[ErrorName(reply)];
      attempt(ErrorName(reply));
      Millis wait(100);
      if (reply.has_error() && reply.error().retry_after_ms() > 0) {
        wait = Millis(std::min<std::uint32_t>(reply.error().retry_after_ms(), 2000));
      }
      Read(wait);
    }
  }

  wire::Envelope Message(int conv, std::uint64_t counter) {
    wire::Envelope env;
    if (conv == kDm) {
      auto* m = env.mutable_direct_send();
      m->mutable_to()->set_id(dm_to);
      m->set_msg_id(MsgId(conv, counter));
      m->set_kind(wire::TEXT);
      m->set_chunk_index(0);
      m->set_chunk_count(1);
      m->set_nonce(RandomBytes(24));
      m->set_ciphertext(RandomBytes(48));
    } else {
      auto* m = env.mutable_group_send();
      m->set_group_id(shared_->group_id);
      m->set_epoch(shared_->epoch);
      m->set_msg_id(MsgId(conv, counter));
      m->set_kind(wire::TEXT);
      m->set_chunk_index(0);
      m->set_chunk_count(1);
      m->set_nonce(RandomBytes(24));
      m->set_ciphertext(RandomBytes(48));
      m->set_signature(RandomBytes(64));
    }
    return env;
  }

  // Reads until every user has finished sending and nothing has arrived for
  // 3 s (at most 60 s).
  void Drain() {
    auto give_up = Clock::now() + Millis(60000);
    auto quiet_since = Clock::now();
    std::size_t last = Seen();
    while (Clock::now() < give_up) {
      if (!conn_ && !Connect()) continue;
      Read(Millis(200));
      if (Seen() != last) {
        last = Seen();
        quiet_since = Clock::now();
      }
      if (shared_->senders_done == kUsers && Clock::now() - quiet_since > Millis(3000)) return;
    }
  }

  std::size_t Seen() const {
    std::size_t n = 0;
    for (const auto& [k, s] : in_) n += s.seqs.size();
    for (const auto& c : counts) n += c.redelivered;
    return n;
  }

  // A fresh receiving session: collects whatever is still pending.
  void FinalLogin() {
    final_login_ = true;
    Drop();
    auto give_up = Clock::now() + Millis(30000);
    while (!Connect()) {
      if (Clock::now() > give_up) {
        problems.push_back(name + ": could not log in at the end");
        return;
      }
    }
    // Pending deliveries, then SyncDone; then 1 s more.
    auto deadline = Clock::now() + Millis(20000);
    while (conn_ && Clock::now() < deadline) {
      wire::Envelope env;
      RawConn::Recv rc = conn_->Receive(&env, Millis(1000));
      if (rc != RawConn::Recv::kOk) break;
      if (env.has_deliver()) OnDeliver(env.deliver());
      if (env.has_sync_done()) deadline = std::min(deadline, Clock::now() + Millis(1000));
    }
    Drop();
  }

  Shared* shared_;
  int index_;
  std::unique_ptr<RawConn> conn_;
  std::string server_id_;
  bool final_login_ = false;
};

struct Faults {
  int kills = 0;
  int restarts = 0;
  int pg_restarts = 0;
  int cuts = 0;
  std::vector<std::string> log;
};

TEST(ChaosTest, AcknowledgedMessagesAreDeliveredExactlyOnceInOrder) {
  const double seconds = EnvSeconds("FASTCHAT_CHAOS_SECONDS", 60);
  std::uint64_t seed = static_cast<std::uint64_t>(EnvSeconds("FASTCHAT_CHAOS_SEED", 0));
  if (seed == 0) seed = std::random_device{}();
  std::cout << "[chaos] seed " << seed << " (FASTCHAT_CHAOS_SEED), " << seconds
            << " s of faults (FASTCHAT_CHAOS_SECONDS)" << std::endl;
  const char* faults_env = std::getenv("FASTCHAT_CHAOS_FAULTS");
  const std::string faults = faults_env != nullptr && *faults_env != '\0' ? faults_env : "kill,pg,cut";
  const bool do_kill = faults.find("kill") != std::string::npos;
  const bool do_pg = faults.find("pg") != std::string::npos;
  const bool do_cut = faults.find("cut") != std::string::npos;
  std::cout << "[chaos] faults: " << faults << " (FASTCHAT_CHAOS_FAULTS)" << std::endl;
  std::mt19937_64 rng(seed);
  auto between = [&rng](int lo, int hi) { return Millis(std::uniform_int_distribution<int>(lo, hi)(rng)); };

  // s3's mesh links all pass through the proxy: s1 and s2 dial s3 (ids that
  // sort after their own) at its advertised address; s3 dials nobody.
  LinkProxy proxy;
  ClusterOptions opt;
  opt.servers = 2;
  opt.balancer = true;
  opt.balancer_expire_ms = 1500;
  Cluster c(opt);
  c.AddServer("s3", c.secret(), true, {"--mesh-advertise", proxy.address()});
  proxy.SetTarget(c.server(2).mesh_port());
  c.WaitMeshFormed();
  c.WaitRegisteredWithBalancer();

  // Users, a ring of friends, one group of all: set up on s1 before faults.
  Shared shared;
  shared.balancer = c.balancer().address();
  shared.tmp = c.tmp().path();
  std::vector<std::unique_ptr<ChaosUser>> users;
  const std::string prefix = "chaos" + RandomToken(4) + "_";
  std::vector<std::unique_ptr<RawConn>> setup;
  for (int i = 0; i < kUsers; ++i) {
    users.push_back(std::make_unique<ChaosUser>(&shared, i));
    ChaosUser& u = *users.back();
    u.name = prefix + std::to_string(i);
    u.password = "pw-" + u.name + "-secret";
    setup.push_back(std::make_unique<RawConn>(c.server(0).port()));
    RawConn& rc = *setup.back();
    ASSERT_TRUE(rc.Hello().has_hello_ok());
    wire::Envelope r = rc.Register(u.name, u.password);
    ASSERT_TRUE(r.has_ok()) << Describe(r);
    u.id = r.ok().id();
    r = rc.Login(u.name, u.password, false);
    ASSERT_TRUE(r.has_logged_in()) << Describe(r);
    u.token = r.logged_in().session_token();
    ASSERT_EQ(u.token.size(), 32u);
  }
  for (int i = 0; i < kUsers; ++i) {
    ChaosUser& u = *users[i];
    ChaosUser& next = *users[(i + 1) % kUsers];
    u.dm_to = next.id;
    wire::Envelope req;
    req.mutable_friend_request()->mutable_to()->set_id(next.id);
    wire::Envelope r = setup[i]->Request(req);
    ASSERT_TRUE(r.has_ok()) << Describe(r);
    wire::Envelope ans;
    auto* a = ans.mutable_friend_answer();
    a->mutable_to()->set_id(u.id);
    a->set_accept(true);
    a->set_nonce(RandomBytes(24));
    a->set_wrapped_key(RandomBytes(48));
    r = setup[(i + 1) % kUsers]->Request(ans);
    ASSERT_TRUE(r.has_ok()) << Describe(r);
  }
  {
    wire::Envelope create;
    create.mutable_group_create()->set_name("chaos");
    wire::Envelope r = setup[0]->Request(create);
    ASSERT_TRUE(r.has_ok()) << Describe(r);
    shared.group_id = r.ok().id();
    shared.epoch = r.ok().epoch();
    wire::Envelope add;
    add.mutable_group_add()->set_group_id(shared.group_id);
    add.mutable_group_add()->mutable_user()->set_id(users[1]->id);
    for (int i = 2; i < kUsers; ++i) add.mutable_group_add()->add_more_users()->set_id(users[i]->id);
    r = setup[0]->Request(add);
    ASSERT_TRUE(r.has_ok()) << Describe(r);
    if (r.ok().epoch() != 0) shared.epoch = r.ok().epoch();
  }
  setup.clear();

  std::vector<std::thread> threads;
  for (auto& u : users) threads.emplace_back([&u] { u->Run(); });

  // Faults, one at a time, until the time is up.
  Faults f;
  auto say = [&f](const std::string& what) {
    f.log.push_back(what);
    std::cout << "[chaos] " << what << std::endl;
  };
  std::vector<std::string> crashed;
  auto check_alive = [&c, &crashed] {
    for (std::size_t i = 0; i < c.size(); ++i) {
      if (!c.server(i).Running()) crashed.push_back(c.server(i).id() + ":\n" + c.server(i).LogTail(3000));
    }
  };
  const auto start = Clock::now();
  const auto end = start + Millis(static_cast<long>(seconds * 1000));
  const auto pg_at = start + Millis(static_cast<long>(seconds * 1000 / 3));
  try {
    while (Clock::now() < end) {
      std::this_thread::sleep_for(between(1000, 3000));
      check_alive();
      if (!crashed.empty()) break;
      const int pick = std::uniform_int_distribution<int>(0, 2)(rng);
      if (do_pg && f.pg_restarts == 0 && Clock::now() > pg_at) {
        say("restarting PostgreSQL");
        RestartPostgres();
        ++f.pg_restarts;
        say("PostgreSQL back");
      } else if (do_cut && (pick == 0 || f.cuts == 0 || !do_kill)) {
        say("cutting s3's mesh links");
        proxy.Cut();
        ++f.cuts;
        std::this_thread::sleep_for(between(2000, 7000));
        proxy.Restore();
        say("restored s3's mesh links");
      } else if (do_kill) {
        const std::size_t i = std::uniform_int_distribution<std::size_t>(0, c.size() - 1)(rng);
        say("SIGKILL " + c.server(i).id());
        c.server(i).Kill();
        ++f.kills;
        std::this_thread::sleep_for(between(200, 2500));
        ClusterServer& s = c.RestartServer(i);
        if (i == 2) proxy.SetTarget(s.mesh_port());
        ++f.restarts;
        say("restarted " + s.id());
      }
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "fault injection failed: " << e.what();
  }
  check_alive();
  proxy.Restore();
  shared.stop_sending = true;
  say("faults over; finishing the messages in flight, draining, final logins");
  const auto stop_at = Clock::now();
  for (auto& t : threads) t.join();
  const double tail_s = std::chrono::duration<double>(Clock::now() - stop_at).count();
  check_alive();

  // Tally: every Ok'd message of every sender, at each of its recipients.
  Counts kind[2];
  std::uint64_t reconnects = 0, bad_events = 0;
  std::map<std::string, std::uint64_t> errors;
  std::vector<std::string> problems;
  auto user_by_id = [&users](std::uint64_t id) -> ChaosUser* {
    for (auto& u : users) {
      if (u->id == id) return u.get();
    }
    return nullptr;
  };
  for (auto& u : users) {
    for (int k = 0; k < 2; ++k) kind[k].Add(u->counts[k]);
    reconnects += u->reconnects;
    bad_events += u->bad_events;
    for (auto& [e, n] : u->errors) errors[e] += n;
    for (std::size_t i = 0; i < u->problems.size(); ++i) {
      std::string p = u->problems[i];
      if (i < u->problem_keys.size()) {
        auto [from, conv, counter] = u->problem_keys[i];
        if (ChaosUser* sender = user_by_id(from)) p += " [sender's attempts: " + sender->History(conv, counter) + "]";
      }
      problems.push_back(p);
    }
  }
  for (int s = 0; s < kUsers; ++s) {
    ChaosUser& sender = *users[s];
    for (int conv = 0; conv < 2; ++conv) {
      std::vector<ChaosUser*> recipients;
      for (int r = 0; r < kUsers; ++r) {
        if (conv == kDm ? r == (s + 1) % kUsers : r != s) recipients.push_back(users[r].get());
      }
      for (ChaosUser* r : recipients) {
        // Runs of consecutive lost counters, each with the first one's attempts.
        struct LostRun {
          std::uint64_t first, last;
          std::string attempts;
        };
        std::vector<LostRun> lost_runs;
        auto it = r->in_.find({sender.id, conv});
        for (std::uint64_t counter = 0; counter < sender.ok_[conv].size(); ++counter) {
          const bool acked = sender.ok_[conv][counter];
          std::size_t copies = 0;
          bool late = false;
          if (it != r->in_.end()) {
            auto sit = it->second.seqs.find(counter);
            if (sit != it->second.seqs.end()) copies = sit->second.size();
            auto lit = it->second.late.find(counter);
            late = lit != it->second.late.end() && lit->second;
          }
          if (copies > 0) ++kind[conv].delivered;
          if (late) ++kind[conv].late;
          if (acked) {
            ++kind[conv].expected;
            if (copies == 0) {
              ++kind[conv].lost;
              if (!lost_runs.empty() && lost_runs.back().last + 1 == counter) {
                lost_runs.back().last = counter;
              } else {
                lost_runs.push_back(LostRun{counter, counter, sender.History(conv, counter)});
              }
            }
          } else if (copies > 0) {
            ++kind[conv].unacked_delivered;
          }
        }
        for (const LostRun& run : lost_runs) {
          if (problems.size() >= 60) break;
          problems.push_back("lost: " + sender.name + " -> " + r->name + (conv == kDm ? " DM" : " group") +
                             " counters " + std::to_string(run.first) + "-" + std::to_string(run.last) + " (" +
                             std::to_string(run.last - run.first + 1) + ") [attempts of the first: " + run.attempts +
                             "]");
        }
      }
    }
  }

  std::ostringstream out;
  out << "[chaos] seed " << seed << ", " << seconds << " s of faults, " << tail_s
      << " s to finish, drain and log in again\n";
  out << "[chaos] faults: " << f.kills << " SIGKILLs, " << f.restarts << " server restarts, " << f.pg_restarts
      << " PostgreSQL restarts, " << f.cuts << " mesh link cuts; " << reconnects << " client (re)connections\n";
  out << "[chaos]            sent  attempts     acked  expected delivered  lost   dup reorder redeliv  late unacked-delivered\n";
  const char* names[2] = {"DM   ", "group"};
  for (int k = 0; k < 2; ++k) {
    const Counts& n = kind[k];
    out << "[chaos] " << names[k];
    for (std::uint64_t v : {n.sent, n.attempts, n.acked, n.expected, n.delivered}) out << " " << std::setw(9) << v;
    out << " " << std::setw(5) << n.lost << " " << std::setw(5) << n.duplicated << " " << std::setw(7) << n.reordered
        << " " << std::setw(7) << n.redelivered << " " << std::setw(5) << n.late << " " << std::setw(5)
        << n.unacked_delivered << "\n";
  }
  out << "[chaos] errors seen by clients:";
  for (auto& [e, n] : errors) out << " [" << e << "]=" << n;
  out << "\n";
  for (const auto& p : problems) out << "[chaos] " << p << "\n";
  std::cout << out.str() << std::flush;

  for (const auto& s : crashed) ADD_FAILURE() << "server died on its own: " << s;
  EXPECT_EQ(bad_events, 0u);
  for (int k = 0; k < 2; ++k) {
    SCOPED_TRACE(names[k]);
    EXPECT_EQ(kind[k].lost, 0u);
    EXPECT_EQ(kind[k].duplicated, 0u);
    EXPECT_EQ(kind[k].reordered, 0u);
    // The load really ran: at least one acknowledged message per user per
    // second of faults... divided by 10 (the machine is shared).
    EXPECT_GE(kind[k].acked, static_cast<std::uint64_t>(seconds * kUsers / 10));
  }
  if (do_kill) {
    EXPECT_GE(f.kills, 1);
  }
  if (do_cut) {
    EXPECT_GE(f.cuts, 1);
  }
  if (do_pg) {
    EXPECT_EQ(f.pg_restarts, 1);
  }
  for (const auto& p : problems) {
    if (p.find("thread ended") != std::string::npos || p.find("could not log in") != std::string::npos) {
      ADD_FAILURE() << p;
    }
  }
}

}  // namespace
}  // namespace fastchat::testing
