// The hostile server (issue 7): real `fastchat` clients against a real
// --insecure-plain-tcp server behind a TamperProxy (tests/harness/
// tamper_proxy.h), which does to the server's genuine frames what a server's
// operator could: replay, redirect, relabel, swap epochs, present other keys,
// lie about a group, reorder, cut, or hand over content of a hostile friend's
// making (a giant image, a huge title). Each test is one attack and checks
// what the attacked client shows (a warning or an "undecryptable" line, never
// the forged content as genuine), its files (nothing outside its download
// folder) and its size.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fastchat.pb.h"
#include "fastchat/frame.h"
#include "fastchat/crypto.h"
#include "harness/fastchat.h"
#include "harness/loopback.h"
#include "harness/tamper_proxy.h"
#include "client_impl.h"
#include "local_store.h"
#include "message_format.h"

namespace fastchat::testing {
namespace {

namespace fs = std::filesystem;
using Out = TamperProxy::Out;

ServerOptions PlainServer() {
  ServerOptions o;
  o.extra_args = {"--insecure-plain-tcp"};
  return o;
}

// A server, the hostile proxy in front of it, and clients that reach the
// server only through the proxy.
struct Hostile {
  Hostile() : w(PlainServer()), proxy(w.server().port()) {
    w.RouteClients(proxy.address(), {"--insecure-plain-tcp"});
  }
  World w;
  TamperProxy proxy;
};

// alice and bob, friends, each in a chat session through the proxy; with
// `with_carol`, carol too (in a session, nobody's friend yet).
struct Friends {
  explicit Friends(Hostile& h, bool with_carol = false) {
    a = h.w.Register("alice");
    b = h.w.Register("bob");
    ca = h.w.Chat(a);
    cb = h.w.Chat(b);
    h.w.MakeFriends(*ca, a, *cb, b);
    if (with_carol) {
      c = h.w.Register("carol");
      cc = h.w.Chat(c);
    }
  }
  User a, b, c;
  std::unique_ptr<ChatClient> ca, cb, cc;
};

Out Pass(std::string_view payload) { return Out{FrameOf(payload)}; }

wire::Event EventOf(const wire::Envelope& env) {
  wire::Event ev;
  if (env.has_deliver()) ev.ParseFromString(env.deliver().event());
  return ev;
}

void SetEvent(wire::Envelope* env, const wire::Event& ev) {
  env->mutable_deliver()->set_event(ev.SerializeAsString());
}

// Envelopes a hook kept, for the test thread to wait on.
class Kept {
 public:
  void Add(const wire::Envelope& env) {
    std::lock_guard<std::mutex> lock(mu_);
    all_.push_back(env);
    cv_.notify_all();
  }
  // The first kept envelope matching `pred`; throws after 15 s.
  wire::Envelope WaitFor(const std::function<bool(const wire::Envelope&)>& pred, const std::string& what) {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      for (const auto& e : all_)
        if (pred(e)) return e;
      if (cv_.wait_for(lock, std::chrono::seconds(15)) == std::cv_status::timeout)
        throw std::runtime_error("the proxy never saw " + what);
    }
  }
  std::vector<wire::Envelope> All() {
    std::lock_guard<std::mutex> lock(mu_);
    return all_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<wire::Envelope> all_;
};

bool AnyDirect(const wire::Envelope& e) { return EventOf(e).has_direct(); }

// Lines of `c` (all it printed so far) that show `text` as genuine content.
int Shown(ChatClient& c, const std::string& text) {
  int n = 0;
  for (const auto& j : c.history()) {
    std::string t = j.value("type", "");
    if ((t == "message" || t == "group_message") && Str(j, "text") == text) ++n;
  }
  return n;
}

Match Undecryptable(const std::string& kind) { return Like({{"type", "undecryptable"}, {"kind", kind}}); }

// Every file under `dir`, recursively.
std::vector<fs::path> FilesUnder(const std::string& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec))
    if (it->is_regular_file()) out.push_back(it->path());
  return out;
}

std::uint64_t BytesUnder(const std::string& dir) {
  std::uint64_t n = 0;
  for (const auto& p : FilesUnder(dir)) n += fs::file_size(p);
  return n;
}

// A "Vm...:" line of a process's status in KiB, 0 if unknown.
std::uint64_t StatusKiB(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field, 0) == 0) return std::stoull(line.substr(field.size()));
  return 0;
}

// Resident memory of a process in KiB (VmRSS), 0 if unknown.
std::uint64_t RssKiB(pid_t pid) { return StatusKiB(pid, "VmRSS:"); }

std::unique_ptr<client::LocalStore> OpenStore(const User& u) {
  if (!crypto::Init()) throw std::runtime_error("libsodium init failed");
  fs::path path;
  Status st = client::LocalStore::Find(u.home, u.name, &path);
  if (!st.ok()) throw std::runtime_error("no key store for " + u.name + ": " + st.ToString());
  std::unique_ptr<client::LocalStore> store;
  st = client::LocalStore::Open(path, u.password, &store);
  if (!st.ok()) throw std::runtime_error("cannot open the key store of " + u.name + ": " + st.ToString());
  return store;
}

// ------------------------------------------------------------------ replay

// The server hands bob a message he already has, under a new seq (as if it
// were new). It is shown once; the repeat gets a warning, also after bob's
// client restarts (the seen message ids are in his local store).
TEST(HostileServer, AReplayedMessageIsShownOnceAndWarnedAboutAlsoAfterARestart) {
  Hostile h;
  Friends f(h);
  User &a = f.a, &b = f.b;
  auto &ca = f.ca, &cb = f.cb;
  Kept kept;
  auto server_hook = h.proxy.OnServerFrame([&](const std::string& user, wire::Envelope& env, std::string_view p) {
    if (user == "bob" && AnyDirect(env)) kept.Add(env);
    return Pass(p);
  });
  ca->CommandOk("single_message bob pay 10 euros to alice");
  cb->WaitFor(Msg("alice", "pay 10 euros to alice"), "the genuine message");
  wire::Envelope replay = kept.WaitFor(AnyDirect, "bob's delivery");
  const std::uint64_t seq = replay.deliver().seq();

  replay.mutable_deliver()->set_seq(seq + 1000);
  ASSERT_EQ(h.proxy.InjectToClient("bob", FrameOf(replay)), 1);
  json w1 = cb->WaitFor(Like({{"type", "warning"}, {"code", "REPLAYED"}}), "a replay warning");
  EXPECT_EQ(AsU64(w1["from_id"]), a.id) << w1.dump();
  EXPECT_EQ(AsU64(w1["seq"]), seq + 1000) << w1.dump();
  // The client goes on: a new message still arrives, the replay was not shown.
  ca->CommandOk("single_message bob a new one");
  cb->WaitFor(Msg("alice", "a new one"), "the next message");
  EXPECT_EQ(Shown(*cb, "pay 10 euros to alice"), 1);
  EXPECT_EQ(cb->Quit(), 0);

  auto cb2 = h.w.Chat(b);
  replay.mutable_deliver()->set_seq(seq + 2000);
  ASSERT_EQ(h.proxy.InjectToClientWhenReady("bob", FrameOf(replay)), 1);
  cb2->WaitFor(Like({{"type", "warning"}, {"code", "REPLAYED"}, {"seq", seq + 2000}}),
               "a replay warning after a restart");
  EXPECT_EQ(Shown(*cb2, "pay 10 euros to alice"), 0);
  json hist = cb2->CommandOk("history alice");
  int copies = 0;
  for (const auto& e : hist["entries"])
    if (Str(e, "text") == "pay 10 euros to alice") ++copies;
  EXPECT_EQ(copies, 1) << hist.dump();
}

// ------------------------------------------------------------------ redirect

// A message alice sealed for bob is handed to carol (alice's friend too).
// It does not open for carol (the recipient is in the associated data, and
// the friend keys differ) and she is told so.
TEST(HostileServer, ADirectMessageRedirectedToAThirdUserDoesNotOpen) {
  Hostile h;
  Friends f(h, true);
  User &a = f.a, &c = f.c;
  auto &ca = f.ca, &cc = f.cc;
  h.w.MakeFriends(*ca, a, *cc, c);
  Kept kept;
  auto server_hook = h.proxy.OnServerFrame([&](const std::string& user, wire::Envelope& env, std::string_view p) {
    if (user == "bob" && AnyDirect(env)) {
      kept.Add(env);
      return Out{};  // bob never gets it
    }
    return Pass(p);
  });
  ca->CommandOk("single_message bob for bob's eyes only");
  wire::Envelope stolen = kept.WaitFor(AnyDirect, "bob's delivery");
  stolen.mutable_deliver()->set_seq(stolen.deliver().seq() + 5000);
  ASSERT_EQ(h.proxy.InjectToClient("carol", FrameOf(stolen)), 1);
  json u = cc->WaitFor(Undecryptable("direct"), "carol's undecryptable");
  EXPECT_EQ(AsU64(u["from_id"]), a.id) << u.dump();
  EXPECT_EQ(Shown(*cc, "for bob's eyes only"), 0);
  // Carol's client carries on.
  ca->CommandOk("single_message carol for carol");
  cc->WaitFor(Msg("alice", "for carol"), "carol's own message");
}

// ------------------------------------------------------------------ forged sender

// The server relabels alice's message to bob as carol's: with carol's ID it
// does not open (the sender is in the associated data); with only carol's
// name it opens and is shown as alice's, the name bob pinned for that ID.
TEST(HostileServer, AForgedSenderIsNeverShownAsTheSender) {
  Hostile h;
  Friends f(h, true);
  User &a = f.a, &b = f.b, &c = f.c;
  auto &ca = f.ca, &cb = f.cb, &cc = f.cc;
  h.w.MakeFriends(*cc, c, *cb, b);
  std::atomic<int> forged{0};
  auto server_hook = h.proxy.OnServerFrame([&](const std::string& user, wire::Envelope& env, std::string_view p) {
    if (user != "bob" || !AnyDirect(env)) return Pass(p);
    wire::Event ev = EventOf(env);
    if (ev.from_id() != a.id) return Pass(p);
    int n = forged++;
    if (n == 0) ev.set_from_id(c.id);  // carol's ID and name
    ev.set_from_name("carol");         // then carol's name only
    SetEvent(&env, ev);
    return Out{FrameOf(env)};
  });
  ca->CommandOk("single_message bob I owe carol nothing");
  json u = cb->WaitFor(Undecryptable("direct"), "bob's undecryptable");
  EXPECT_EQ(AsU64(u["from_id"]), c.id) << u.dump();
  ca->CommandOk("single_message bob signed, alice");
  json m = cb->WaitFor(Like({{"type", "message"}, {"text", "signed, alice"}}), "the relabelled message");
  EXPECT_EQ(Str(m, "from"), "alice") << m.dump();
  EXPECT_EQ(AsU64(m["from_id"]), a.id) << m.dump();
  EXPECT_EQ(Shown(*cb, "I owe carol nothing"), 0);
  for (const auto& j : cb->history())
    if (j.value("type", "") == "message") {
      EXPECT_NE(Str(j, "from"), "carol") << j.dump();
    }
}

// ------------------------------------------------------------------ keys

// The server presents new keys for bob, alice's friend: alice refuses to
// use them, says so loudly, and sends nothing; with the server honest again
// her pinned keys still work.
TEST(HostileServer, ADifferentPublicKeyForAFriendIsRefusedLoudly) {
  Hostile h;
  Friends f(h);
  User& b = f.b;
  auto &ca = f.ca, &cb = f.cb;
  std::atomic<bool> lie{true};
  std::atomic<int> sends{0};
  const std::string fake_box = crypto::NewBoxKeyPair().public_key, fake_sign = crypto::NewSignKeyPair().public_key;
  auto server_hook = h.proxy.OnServerFrame([&](const std::string& user, wire::Envelope& env, std::string_view p) {
    if (!lie || user != "alice" || !env.has_user_info() || env.user_info().id() != b.id) return Pass(p);
    env.mutable_user_info()->set_x25519_public(fake_box);
    env.mutable_user_info()->set_ed25519_public(fake_sign);
    return Out{FrameOf(env)};
  });
  auto client_hook = h.proxy.OnClientFrame([&](const std::string&, wire::Envelope& env, std::string_view p) {
    if (env.has_direct_send()) ++sends;
    return Pass(p);
  });
  json r = ca->Command("single_message bob meet me at the usual place");
  EXPECT_FALSE(r.value("ok", true)) << r.dump();
  EXPECT_EQ(Str(r, "code"), "KEY_CHANGED") << r.dump();
  json w = ca->WaitFor(Like({{"type", "warning"}, {"code", "KEY_CHANGED"}}), "the key-change warning");
  EXPECT_EQ(AsU64(w["user_id"]), b.id) << w.dump();
  EXPECT_EQ(sends.load(), 0) << "alice sent under keys she refused";

  lie = false;
  ca->CommandOk("single_message bob now it is safe");
  cb->WaitFor(Msg("alice", "now it is safe"), "the message under the pinned keys");
}

// ------------------------------------------------------------------ groups

struct Group {
  std::uint64_t gid = 0;
  std::string G() const { return std::to_string(gid); }
};

// alice creates `name` and adds `members` (their chats see their key).
Group MakeGroup(ChatClient& admin, const std::string& name,
                const std::vector<std::pair<User*, ChatClient*>>& members) {
  Group g;
  g.gid = AsU64(admin.CommandOk("create_group " + name)["group_id"]);
  for (auto& [u, c] : members) {
    admin.CommandOk("add_member " + g.G() + " " + u->name);
    c->WaitFor(GroupKey(g.gid, 1), u->name + "'s group key");
  }
  return g;
}

// The server relabels group traffic: a message of epoch 2 presented as
// epoch 1 (whose key the reader also holds), a message presented as
// another member's, and the key of epoch 3 presented as epoch 2's. Nothing
// opens; each is reported.
TEST(HostileServer, SwappedGroupEpochsAndForgedGroupSendersDoNotOpen) {
  Hostile h;
  User a = h.w.Register("alice"), b = h.w.Register("bob"), c = h.w.Register("carol"), d = h.w.Register("dave"),
       e = h.w.Register("eve");
  auto ca = h.w.Chat(a);
  auto cb = h.w.Chat(b);
  auto cc = h.w.Chat(c);
  auto cd = h.w.Chat(d);
  auto ce = h.w.Chat(e);
  Group g = MakeGroup(*ca, "club", {{&b, cb.get()}, {&c, cc.get()}, {&d, cd.get()}, {&e, ce.get()}});
  ca->CommandOk("kick " + g.G() + " dave");  // an honest rotation: epoch 2
  for (auto* cl : {cb.get(), cc.get(), ce.get()}) cl->WaitFor(GroupKey(g.gid, 2), "the key of epoch 2");

  auto server_hook = h.proxy.OnServerFrame([&](const std::string& user, wire::Envelope& env, std::string_view p) {
    wire::Event ev = EventOf(env);
    if (ev.has_group() && ev.from_id() == c.id && ev.group().epoch() == 2) {
      if (user == "alice") ev.mutable_group()->set_epoch(1);
      if (user == "bob") {
        ev.set_from_id(a.id);
        ev.set_from_name("alice");
      }
      SetEvent(&env, ev);
      return Out{FrameOf(env)};
    }
    if (ev.has_group_key() && user == "bob" && ev.group_key().epoch() == 3) {
      ev.mutable_group_key()->set_epoch(2);
      SetEvent(&env, ev);
      return Out{FrameOf(env)};
    }
    return Pass(p);
  });
  cc->CommandOk("group_message " + g.G() + " carol at epoch two");
  json ua = ca->WaitFor(Undecryptable("group"), "alice's undecryptable (epoch swapped)");
  EXPECT_EQ(AsU64(ua["group_id"]), g.gid) << ua.dump();
  json ub = cb->WaitFor(Undecryptable("group"), "bob's undecryptable (sender forged)");
  EXPECT_EQ(AsU64(ub["from_id"]), a.id) << ub.dump();
  ce->WaitFor(GroupMsg(g.gid, "carol", "carol at epoch two"), "eve gets it untouched");
  EXPECT_EQ(Shown(*ca, "carol at epoch two"), 0);
  EXPECT_EQ(Shown(*cb, "carol at epoch two"), 0);

  ca->CommandOk("kick " + g.G() + " eve");  // epoch 3; bob's key arrives as "epoch 2"
  json uk = cb->WaitFor(Undecryptable("group_key"), "bob's undecryptable key");
  EXPECT_NE(Str(uk, "reason").find("another group or epoch"), std::string::npos) << uk.dump();
  cc->WaitFor(GroupKey(g.gid, 3), "carol's key of epoch 3");
  cc->CommandOk("group_message " + g.G() + " carol at epoch three");
  ca->WaitFor(GroupMsg(g.gid, "carol", "carol at epoch three"), "alice gets epoch 3");
  json u3 = cb->WaitFor(Undecryptable("group"), "bob has no key of epoch 3");
  EXPECT_NE(Str(u3, "reason").find("epoch 3"), std::string::npos) << u3.dump();
  EXPECT_EQ(Shown(*cb, "carol at epoch three"), 0);
  for (const auto& j : cb->history())
    if (j.value("type", "") == "group_key") {
      EXPECT_NE(AsU64(j["epoch"]), 3u) << j.dump();
    }
}

// After alice kicks dave the server lies to her: (1) dave is still listed as
// a member, (2) in another group, the epoch did not move. Her client sends
// the new key to the remaining members only, and refuses (with a warning)
// to hand out an old epoch's key again; dave, handed later traffic, opens
// none of it.
TEST(HostileServer, AKickedMemberGetsNoKeyAndCannotReadLaterTraffic) {
  Hostile h;
  User a = h.w.Register("alice"), b = h.w.Register("bob"), d = h.w.Register("dave");
  auto ca = h.w.Chat(a);
  auto cb = h.w.Chat(b);
  auto cd = h.w.Chat(d);
  Group g1 = MakeGroup(*ca, "one", {{&b, cb.get()}, {&d, cd.get()}});
  Group g2 = MakeGroup(*ca, "two", {{&b, cb.get()}, {&d, cd.get()}});

  std::mutex mu;
  std::optional<wire::UserInfo> dave_info;
  std::set<std::uint64_t> kick_rids;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> keys_sent;  // (group, to) after a kick
  std::atomic<bool> kicked{false};
  int kick_oks = 0;
  auto client_hook = h.proxy.OnClientFrame([&](const std::string& user, wire::Envelope& env, std::string_view p) {
    std::lock_guard<std::mutex> lock(mu);
    if (user == "alice" && env.has_group_kick()) {
      kick_rids.insert(env.rid());
      kicked = true;
    }
    if (user == "alice" && kicked && env.has_group_key_send()) {
      const auto& ks = env.group_key_send();
      keys_sent.emplace_back(ks.group_id(), ks.to().id());
      if (ks.to().id() == d.id) {
        // The real server would refuse it (dave is no member); a hostile
        // one hands it to him.
        wire::Event ev;
        ev.set_from_id(a.id);
        ev.set_from_name("alice");
        auto* k = ev.mutable_group_key();
        k->set_group_id(ks.group_id());
        k->set_epoch(ks.epoch());
        k->set_nonce(ks.nonce());
        k->set_wrapped_key(ks.wrapped_key());
        wire::Envelope del;
        del.mutable_deliver()->set_seq(env.rid() + 9000);
        SetEvent(&del, ev);
        h.proxy.InjectToClient("dave", FrameOf(del));
      }
    }
    return Pass(p);
  });
  Kept later;
  auto server_hook = h.proxy.OnServerFrame([&](const std::string& user, wire::Envelope& env, std::string_view p) {
    std::lock_guard<std::mutex> lock(mu);
    if (user != "alice") return Pass(p);
    if (env.has_group_info()) {
      wire::GroupInfo* gi = env.mutable_group_info();
      bool listed = false;
      for (const auto& m : gi->members()) {
        if (m.id() == d.id) {
          dave_info = m;
          listed = true;
        }
      }
      if (gi->id() == g1.gid && !listed && dave_info) *gi->add_members() = *dave_info;  // lie (1)
      if (gi->id() == g2.gid) gi->set_epoch(1);                                        // lie (2)
      return Out{FrameOf(env)};
    }
    if (env.has_ok() && kick_rids.count(env.rid()) != 0 && env.ok().epoch() == 2) {
      // Only the kick in group two is answered with the old epoch.
      if (++kick_oks == 2) env.mutable_ok()->set_epoch(1);
      return Out{FrameOf(env)};
    }
    wire::Event ev = EventOf(env);
    if (ev.has_group() && ev.from_id() == b.id) later.Add(env);
    return Pass(p);
  });
  // Alice reads g1's members once so the proxy knows dave's entry.
  ca->CommandOk("members " + g1.G());

  ca->CommandOk("kick " + g1.G() + " dave");
  cb->WaitFor(GroupKey(g1.gid, 2), "bob's key of epoch 2");
  cb->CommandOk("group_message " + g1.G() + " after dave left");
  ca->WaitFor(GroupMsg(g1.gid, "bob", "after dave left"), "alice reads bob");
  wire::Envelope handed = later.WaitFor([](const wire::Envelope&) { return true; }, "bob's later message");
  handed.mutable_deliver()->set_seq(handed.deliver().seq() + 7000);
  ASSERT_EQ(h.proxy.InjectToClient("dave", FrameOf(handed)), 1);
  json u = cd->WaitFor(Undecryptable("group"), "dave cannot open later traffic");
  EXPECT_NE(Str(u, "reason").find("epoch 2"), std::string::npos) << u.dump();
  EXPECT_EQ(Shown(*cd, "after dave left"), 0);
  for (const auto& j : cd->history())
    if (j.value("type", "") == "group_key") {
      EXPECT_NE(AsU64(j["epoch"]), 2u) << "dave got a key: " << j.dump();
    }
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto [gid, to] : keys_sent) EXPECT_NE(to, d.id) << "a key of group " << gid << " was sealed to dave";
  }

  json r = ca->Command("kick " + g2.G() + " dave");
  EXPECT_FALSE(r.value("ok", true)) << r.dump();
  EXPECT_EQ(Str(r, "code"), "EPOCH_NOT_ADVANCED") << r.dump();
  ca->WaitFor(Like({{"type", "warning"}, {"code", "EPOCH_NOT_ADVANCED"}, {"group_id", g2.gid}}),
              "alice's warning");
  std::lock_guard<std::mutex> lock(mu);
  for (auto [gid, to] : keys_sent) EXPECT_NE(gid, g2.gid) << "the old key of group two was handed out again";
}

// ------------------------------------------------------------------ reorder, cut

// The server reorders an image's chunks, cuts a frame in the middle and
// closes, and cuts a delivery's event short. The image is dropped (nothing
// left in the download folder), the cut frame comes again on the next
// connection and is shown once, and the cut event is reported.
TEST(HostileServer, ReorderedAndTruncatedFramesShowNothingFalse) {
  Hostile h;
  Friends f(h);
  User& b = f.b;
  auto &ca = f.ca, &cb = f.cb;
  std::string file = h.w.tmp().Sub("three-chunks.bin");
  {
    std::ofstream out(file, std::ios::binary);
    out << std::string(600 * 1024, 'x');
  }
  enum { kReorder, kCutAndClose, kCutEvent, kHonest };
  std::atomic<int> mode{kReorder};
  std::mutex mu;
  std::optional<wire::Envelope> held;
  auto server_hook = h.proxy.OnServerFrame([&](const std::string& user, wire::Envelope& env, std::string_view p) {
    if (user != "bob" || !AnyDirect(env)) return Pass(p);
    std::lock_guard<std::mutex> lock(mu);
    wire::Event ev = EventOf(env);
    if (mode == kReorder && ev.direct().kind() == wire::IMAGE) {
      if (ev.direct().chunk_index() == 1) {
        held = env;
        return Out{};
      }
      if (ev.direct().chunk_index() == 2 && held) return Out{FrameOf(env) + FrameOf(*held)};
      return Pass(p);
    }
    if (mode == kCutAndClose) {
      mode = kHonest;
      std::string frame = FrameOf(p);
      return Out{frame.substr(0, frame.size() / 2), true};
    }
    if (mode == kCutEvent) {
      mode = kHonest;
      std::string event = env.deliver().event();
      env.mutable_deliver()->set_event(event.substr(0, event.size() / 2));
      return Out{FrameOf(env)};
    }
    return Pass(p);
  });
  ca->CommandOk("single_image bob " + file);
  json u = cb->WaitFor(Undecryptable("direct"), "the reordered image is refused");
  EXPECT_NE(Str(u, "reason").find("missing"), std::string::npos) << u.dump();
  EXPECT_FALSE(cb->TryWaitFor(OfType("image"), Millis(1500))) << "a reordered image was saved";
  EXPECT_TRUE(FilesUnder(b.downloads).empty()) << "left in the download folder: " << FilesUnder(b.downloads)[0];

  mode = kCutAndClose;
  ca->CommandOk("single_message bob cut in half");
  cb->WaitFor(Msg("alice", "cut in half"), "the cut message, delivered again after a reconnect");
  mode = kCutEvent;
  ca->CommandOk("single_message bob cut short");
  cb->WaitFor(OfType("undecryptable"), "the cut event is reported");
  ca->CommandOk("single_message bob after the cuts");
  cb->WaitFor(Msg("alice", "after the cuts"), "the next message");
  EXPECT_EQ(Shown(*cb, "cut in half"), 1);
  EXPECT_EQ(Shown(*cb, "cut short"), 0);
}

// ------------------------------------------------------------------ sizes

// A hostile friend and the server together: alice's friend key (read from
// her key store) seals images the server hands to bob's receiving session.
class HostileFriend {
 public:
  explicit HostileFriend(Hostile& h) {
    {
      Friends f(h);
      a = f.a;
      b = f.b;
      EXPECT_EQ(f.ca->Quit(), 0);
      EXPECT_EQ(f.cb->Quit(), 0);
    }
    Status st = OpenStore(a)->GetFriendKey(b.id, &key_);
    if (!st.ok()) throw std::runtime_error("alice has no key for bob: " + st.ToString());
  }

  // Chunk `index` of `count` of image `msg_id`, sealed by "alice" for bob, as
  // a Deliver frame with a fresh seq.
  std::string Chunk(const std::string& msg_id, std::uint32_t index, std::uint32_t count, const std::string& plain) {
    wire::Event ev;
    ev.set_from_id(a.id);
    ev.set_from_name("alice");
    auto* d = ev.mutable_direct();
    d->set_msg_id(msg_id);
    d->set_kind(wire::IMAGE);
    d->set_chunk_index(index);
    d->set_chunk_count(count);
    std::string nonce, ct;
    Status st =
        crypto::AeadEncrypt(plain, client::DmAd(a.id, b.id, msg_id, wire::IMAGE, index, count), key_, &nonce, &ct);
    if (!st.ok()) throw std::runtime_error(st.ToString());
    d->set_nonce(nonce);
    d->set_ciphertext(ct);
    wire::Envelope env;
    env.mutable_deliver()->set_seq(++seq_);
    SetEvent(&env, ev);
    return FrameOf(env);
  }
  // Chunk 0's plaintext: u64be(size) || title.
  static std::string Header(std::uint64_t size, const std::string& title) {
    std::string s;
    for (int i = 7; i >= 0; --i) s.push_back(static_cast<char>((size >> (8 * i)) & 0xff));
    return s + title;
  }

  User a, b;

 private:
  std::string key_;
  std::uint64_t seq_ = 1ull << 40;
};

// Nothing bob's client printed is longer than `max` bytes as JSON.
void NoLineLongerThan(ChatClient& c, std::size_t max) {
  for (const auto& j : c.history()) EXPECT_LT(j.dump().size(), max) << j.dump().substr(0, 300);
}

// An image whose title is 200 KiB that tries to climb out of the folder and
// to drive the terminal. Real file names are at most 255 bytes: the client
// refuses titles over 4 KiB, prints nothing of it, and writes nothing.
TEST(HostileServer, AHugeImageTitleIsRefused) {
  Hostile h;
  HostileFriend f(h);
  auto cb = h.w.Chat(f.b);
  std::string title = "../../../../etc/\x1b]0;pwned\x07\r\n";
  while (title.size() < 200 * 1024) title += "A/../\x1b[2J";
  const std::string bytes = "ten bytes!";
  std::string id = crypto::RandomBytes(16);
  ASSERT_EQ(h.proxy.InjectToClientWhenReady(
                "bob", f.Chunk(id, 0, 2, HostileFriend::Header(bytes.size(), title)) + f.Chunk(id, 1, 2, bytes)),
            1);
  json u = cb->WaitFor(Undecryptable("direct"), "the huge title is refused");
  EXPECT_NE(Str(u, "reason").find("title"), std::string::npos) << u.dump();
  // A title of a sane length still works.
  std::string ok_id = crypto::RandomBytes(16);
  ASSERT_EQ(h.proxy.InjectToClient("bob", f.Chunk(ok_id, 0, 2, HostileFriend::Header(bytes.size(), "../notes.txt")) +
                                              f.Chunk(ok_id, 1, 2, bytes)),
            1);
  json img = cb->WaitFor(OfType("image"), "the sane image");
  EXPECT_TRUE(IsInside(f.b.downloads, Str(img, "path"))) << img.dump();
  EXPECT_EQ(FilesUnder(f.b.downloads).size(), 1u);
  NoLineLongerThan(*cb, 16 * 1024);
}

// Images with a giant chunk count (a 1 TiB image of which 512 KiB come),
// with a chunk count that does not match its size, and a frame header
// announcing 4 GiB. What bob's client holds and writes stays small, and it
// keeps working.
TEST(HostileServer, AGiantChunkCountAndAGiantFrameStayBounded) {
  Hostile h;
  HostileFriend f(h);
  auto cb = h.w.Chat(f.b);
  const std::uint64_t tera = 1ull << 40;
  const auto giant_count = static_cast<std::uint32_t>(client::ChunkCount(tera));
  std::string giant = crypto::RandomBytes(16);
  std::string piece(client::kChunkBytes, 'g');
  ASSERT_EQ(h.proxy.InjectToClientWhenReady(
                "bob", f.Chunk(giant, 0, giant_count, HostileFriend::Header(tera, "giant.bin")) +
                           f.Chunk(giant, 1, giant_count, piece) + f.Chunk(giant, 2, giant_count, piece)),
            1);
  std::string liar = crypto::RandomBytes(16);
  ASSERT_EQ(h.proxy.InjectToClient("bob", f.Chunk(liar, 0, 0xffffffffu, HostileFriend::Header(10, "liar.txt"))), 1);
  json ul = cb->WaitFor(Undecryptable("direct"), "the mismatched chunk count is refused");
  EXPECT_NE(Str(ul, "reason").find("chunk count"), std::string::npos) << ul.dump();

  // The client's frame limit is 16 MiB: the connection is dropped at the
  // header, nothing is allocated for it, and the client reconnects.
  ASSERT_EQ(h.proxy.InjectToClient("bob", std::string("\xff\xff\xff\xf0", 4) + std::string(64 * 1024, 'z')), 1);
  cb->WaitFor(OfType("reconnected"), "a reconnect after the giant frame", Millis(30000));

  const std::uint64_t rss = RssKiB(cb->process().pid());
  EXPECT_GT(rss, 0u);
  EXPECT_LT(rss, 128u * 1024) << "bob's client holds " << rss << " KiB";
  EXPECT_LE(BytesUnder(f.b.downloads), 2 * client::kChunkBytes) << "more written than was received";
  for (const auto& p : FilesUnder(f.b.downloads)) EXPECT_TRUE(IsInside(f.b.downloads, p.string())) << p;
  EXPECT_FALSE(cb->TryWaitFor(OfType("image"), Millis(500))) << "an image was finished from a fraction";
  NoLineLongerThan(*cb, 16 * 1024);
  std::printf("bob's client: %llu KiB resident, %llu bytes in downloads after a 1 TiB image header\n",
              static_cast<unsigned long long>(rss), static_cast<unsigned long long>(BytesUnder(f.b.downloads)));
  json fl = cb->CommandOk("friends");
  EXPECT_EQ(Names(fl["friends"]), std::vector<std::string>{"alice"}) << fl.dump();
}

// ------------------------------------------------------------------ flood

// VmHWM (the most a process has had resident) in KiB, 0 if unknown.
std::uint64_t PeakRssKiB(pid_t pid) { return StatusKiB(pid, "VmHWM:"); }

// A hostile server of its own (plain TCP on 127.0.0.1), for one user's
// receiving session. The first session gets seq 1, a friend request from a
// stranger (id 5), and when the client asks the server who that is
// (GetUser), the server floods: seqs 2..count+1, each `size` bytes that are
// not an event, and SyncDone, and only then answers. Every later session
// gets what was not acknowledged, in order, and its answers at once (as an
// honest server would).
class FloodServer {
 public:
  FloodServer(std::uint64_t user_id, std::size_t count, std::size_t size)
      : user_id_(user_id), count_(count), junk_(size, '\xff') {
    listen_fd_ = ListenOnLoopback(&port_);
    thread_ = std::thread([this] { Run(); });
  }
  ~FloodServer() {
    stop_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int sessions() const { return sessions_; }

 private:
  // Reads the next frame of `fd` as an Envelope; false when it ends (or
  // the test stops).
  bool Next(int fd, FrameDecoder& dec, wire::Envelope* env) {
    char buf[64 * 1024];
    for (;;) {
      std::string_view payload;
      bool have = false;
      if (!dec.Next(&payload, &have).ok()) return false;
      if (have) return env->ParseFromArray(payload.data(), static_cast<int>(payload.size()));
      pollfd p{fd, POLLIN, 0};
      if (stop_) return false;
      if (::poll(&p, 1, 100) <= 0) continue;
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return false;
      dec.Append(buf, static_cast<std::size_t>(n));
    }
  }
  static bool Write(int fd, const wire::Envelope& env) {
    std::string f = FrameOf(env);
    std::size_t off = 0;
    while (off < f.size()) {
      ssize_t n = ::send(fd, f.data() + off, f.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<std::size_t>(n);
    }
    return true;
  }
  wire::Envelope Deliver(std::uint64_t seq) const {
    wire::Envelope d;
    d.mutable_deliver()->set_seq(seq);
    if (seq == 1) {
      wire::Event ev;
      ev.set_from_id(5);
      ev.set_from_name("stranger");
      ev.mutable_friend_request();
      d.mutable_deliver()->set_event(ev.SerializeAsString());
    } else {
      d.mutable_deliver()->set_event(junk_);
    }
    return d;
  }
  // Answers a request (GetUser, Ping); records acknowledgements.
  bool Answer(int fd, const wire::Envelope& in) {
    wire::Envelope out;
    out.set_rid(in.rid());
    if (in.has_ack()) {
      for (std::uint64_t seq : in.ack().seqs()) acked_.insert(seq);
      return true;
    } else if (in.has_get_user()) {
      auto* u = out.mutable_user_info();
      u->set_id(5);
      u->set_name("stranger");
      u->set_x25519_public(std::string(32, 'x'));
      u->set_ed25519_public(std::string(32, 'e'));
    } else if (in.has_ping()) {
      out.mutable_pong();
    } else {
      out.mutable_ok();
    }
    return Write(fd, out);
  }
  void Serve(int fd) {
    FrameDecoder dec(1u << 20);
    wire::Envelope in;
    if (!Next(fd, dec, &in) || !in.has_hello()) return;
    wire::Envelope out;
    out.set_rid(in.rid());
    out.mutable_hello_ok()->set_version(kProtocolVersion);
    out.mutable_hello_ok()->set_max_frame(1u << 20);
    out.mutable_hello_ok()->set_server_id("flood");
    if (!Write(fd, out) || !Next(fd, dec, &in) || !in.has_login()) return;
    out.Clear();
    out.set_rid(in.rid());
    out.mutable_logged_in()->set_user_id(user_id_);
    if (!Write(fd, out)) return;
    const bool first = ++sessions_ == 1;
    wire::Envelope sync;
    sync.mutable_sync_done();
    if (first) {
      if (!Write(fd, Deliver(1))) return;
      for (;;) {  // until it asks who the stranger is
        if (!Next(fd, dec, &in)) return;
        if (in.has_get_user()) break;
        if (!Answer(fd, in)) return;
      }
      for (std::uint64_t seq = 2; seq <= count_ + 1; ++seq)
        if (!Write(fd, Deliver(seq))) return;
      if (!Write(fd, sync) || !Answer(fd, in)) return;
    } else {
      for (std::uint64_t seq = 1; seq <= count_ + 1; ++seq)
        if (acked_.count(seq) == 0 && !Write(fd, Deliver(seq))) return;
      if (!Write(fd, sync)) return;
    }
    while (Next(fd, dec, &in))
      if (!Answer(fd, in)) return;
  }
  void Run() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      Serve(fd);  // one session at a time
      ::close(fd);
    }
  }

  std::uint64_t user_id_;
  std::size_t count_;
  std::string junk_;  // 0xff bytes: never a valid event
  std::uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<int> sessions_{0};
  std::set<std::uint64_t> acked_;  // the server thread's only
  std::thread thread_;
};

// The flood against bob's `chat`: what its inbox held at most (from its
// log at the end), its peak resident memory, and every delivery shown
// once, in order.
void FloodBob(std::size_t count, std::size_t size, std::size_t max_frames, std::size_t max_bytes,
              std::uint64_t max_peak_kib) {
  World w(PlainServer());
  w.RouteClients(w.server_address(), {"--insecure-plain-tcp"});
  User bob = w.Register("bob");
  FloodServer flood(bob.id, count, size);
  w.RouteClients(flood.address(), {"--insecure-plain-tcp", "-v"});
  auto cb = w.Chat(bob, /*wait_ready=*/false);
  // A sanitizer build takes ~40 s for the 160 MiB flood alone, and more
  // beside other tests (CI runs two at a time): its waits are longer.
  const int slow = IsSanitizerBuild() ? 3 : 1;
  cb->WaitFor(Like({{"type", "friend_request"}, {"from_id", 5}}), "the stranger's friend request",
              Millis(60000 * slow));
  cb->WaitFor(Like({{"type", "undecryptable"}, {"seq", count + 1}}), "the last delivery", Millis(120000 * slow));
  const std::uint64_t peak = PeakRssKiB(cb->process().pid());
  std::vector<std::uint64_t> seqs;
  for (const auto& j : cb->history())
    if (j.value("type", "") == "undecryptable") seqs.push_back(AsU64(j["seq"]));
  std::vector<std::uint64_t> want;
  for (std::uint64_t seq = 2; seq <= count + 1; ++seq) want.push_back(seq);
  EXPECT_EQ(seqs, want) << "deliveries lost, repeated or out of order";
  EXPECT_EQ(cb->Quit(), 0);
  std::ifstream in(cb->process().stderr_path());
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::smatch m;
  const std::regex high("inbox high-water mark: ([0-9]+) deliveries, ([0-9]+) bytes");
  ASSERT_TRUE(std::regex_search(log, m, high)) << "no high-water mark in the client's log";
  const std::size_t frames = std::stoull(m[1]), bytes = std::stoull(m[2]);
  EXPECT_LE(frames, max_frames);
  EXPECT_LE(bytes, max_bytes);
  EXPECT_GT(peak, 0u);
  // In a sanitizer build resident memory is mostly the sanitizer's (shadow
  // memory, freed memory held back): the high-water mark above still holds.
  if (!IsSanitizerBuild()) {
    EXPECT_LT(peak, max_peak_kib) << "bob's client peaked at " << peak << " KiB";
  }
  std::printf("flood of %zu x %zu bytes: inbox held at most %zu deliveries, %zu bytes; peak resident %llu KiB; "
              "%d sessions\n",
              count, size, frames, bytes, static_cast<unsigned long long>(peak), flood.sessions());
}

// While bob's client waits for the server's answer about a stranger, the
// server floods it with 160 MiB of deliveries. The client used to hold them
// all (the reader read on while processing waited); now it keeps at most
// 32 MiB, takes the rest again from the server, and shows every delivery
// once, in order.
TEST(HostileServer, AFloodWhileAnAnswerIsWithheldStaysBoundedAndArrivesInOrder) {
  FloodBob(640, 256 * 1024, client::kInboxMaxFrames, client::kInboxMaxBytes, 96 * 1024);
}

// The same with 20,000 small deliveries: the bound on how many it holds.
TEST(HostileServer, AFloodOfSmallDeliveriesIsBoundedByCountAndArrivesInOrder) {
  FloodBob(20000, 64, client::kInboxMaxFrames, client::kInboxMaxBytes, 96 * 1024);
}

}  // namespace
}  // namespace fastchat::testing
