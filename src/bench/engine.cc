// The load engine: one thread, one epoll loop, non-blocking sockets.
//
// Every connection is one simulated user's receiving session (Login with
// receive=true), which also carries the user's requests, as a real client's
// does. Frames produced while handling one batch of epoll events are
// appended to per-connection buffers and written once per loop iteration
// (one write for many frames); reads take big chunks and every Deliver seen
// in one read is acknowledged with one Ack frame (at most 4096 seqs each),
// as a client does: a group log's entries cumulatively (Ack.groups, the
// newest seq per group), the rest by seq.
//
// Replies come back in request order on a connection (docs/protocol.md), so
// each connection keeps a FIFO of the requests awaiting one.
//
// With --tls every connection runs OpenSSL directly on its non-blocking fd
// (TLS 1.3 only, certificate not verified): the handshake starts when the
// TCP connect completes and is driven by epoll events; SSL_write in partial
// write mode replaces send(), SSL_read until WANT_READ replaces recv(); a
// WANT_READ from a write or WANT_WRITE from a read waits for the other
// event. Plain connections (c->ssl null) take the original paths.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench.h"
#include "fastchat.pb.h"
#include "fastchat/crypto.h"
#include "fastchat/frame.h"
#include "net/openssl_errors.h"

namespace fastchat::bench {
namespace {
constexpr std::size_t kAddsPerRequest = 1000;  // the server's limit per GroupAdd
}  // namespace

namespace {

constexpr std::uint32_t kMagic = 0x31424346;  // "FCB1" little-endian
constexpr std::size_t kHeaderBytes = 24;       // magic u32, sender u32, counter u64, send_ns i64
constexpr std::size_t kMaxAckSeqs = 4096;
constexpr std::uint32_t kMaxFrameIn = 64u << 20;
constexpr std::size_t kScratch = 256 * 1024;
constexpr std::int64_t kSec = 1000000000;

std::int64_t Ns(double seconds) { return static_cast<std::int64_t>(seconds * 1e9); }
double Sec(std::int64_t ns) { return static_cast<double>(ns) / 1e9; }
std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

void PutU64(std::string* out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU32(std::string* out, std::uint32_t v) {
  for (int i = 3; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::uint64_t GetU64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// docs/protocol.md associated data.
void DmAd(std::string* ad, std::uint64_t sender, std::uint64_t recipient, std::string_view msg_id) {
  ad->assign("fastchat-dm-v1");
  PutU64(ad, sender);
  PutU64(ad, recipient);
  ad->append(msg_id);
  ad->push_back(static_cast<char>(wire::TEXT));
  PutU32(ad, 0);
  PutU32(ad, 1);
}
void GroupAd(std::string* ad, std::uint64_t group, std::uint64_t epoch, std::uint64_t sender,
             std::string_view msg_id) {
  ad->assign("fastchat-grp-v1");
  PutU64(ad, group);
  PutU64(ad, epoch);
  PutU64(ad, sender);
  ad->append(msg_id);
  ad->push_back(static_cast<char>(wire::TEXT));
  PutU32(ad, 0);
  PutU32(ad, 1);
}

// splitmix64: cheap filler for --no-encrypt (and names).
struct FastRandom {
  std::uint64_t s;
  std::uint64_t Next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  void Fill(char* p, std::size_t n) {
    while (n >= 8) {
      std::uint64_t v = Next();
      std::memcpy(p, &v, 8);
      p += 8;
      n -= 8;
    }
    if (n) {
      std::uint64_t v = Next();
      std::memcpy(p, &v, n);
    }
  }
};

enum class Req : std::uint8_t {
  kHello,
  kRegister,
  kLogin,
  kFriendRequest,
  kFriendAnswer,
  kGroupCreate,
  kGroupAdd,
  kGroupKeySend,
  kSend,
};

struct Pending {
  std::uint64_t rid;
  Req type;
  std::int32_t arg;       // group index (group setup)
  std::uint64_t counter;  // sends: the stream counter; GroupAdd: member user index
  std::int64_t t_ns;      // sends: (scheduled) send time
};

struct Conn {
  int fd = -1;
  int user = -1;
  bool connecting = true;
  bool closed = false;
  bool want_out = false;  // EPOLLOUT registered
  bool dirty = false;
  std::string in;  // bytes of a partial frame carried over between reads
  std::string out;
  std::size_t out_pos = 0;
  std::deque<Pending> pending;
  std::uint64_t next_rid = 1;
  std::vector<std::uint64_t> acks;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> group_acks;  // (group, newest seq) of this read
  // --tls (null/false on plain connections)
  SSL* ssl = nullptr;             // created when the TCP connect completes
  bool handshaking = false;       // SSL_do_handshake not finished
  bool write_blocked = false;     // the last SSL_write wants the socket writable
  bool write_wants_read = false;  // the last SSL_write wants the socket readable
  bool read_wants_write = false;  // the last SSL_read wants the socket writable
  std::int64_t t_tcp = 0;         // TCP connect completed (handshake latency)
};

// A write that stopped part-way: drop what was written once it passes 1 MiB.
void CompactOut(Conn* c) {
  if (c->out_pos > (1u << 20)) {
    c->out.erase(0, c->out_pos);
    c->out_pos = 0;
  }
}
// Everything written: empty the buffer, giving back a big one.
void ClearOut(Conn* c) {
  c->out.clear();
  c->out_pos = 0;
  if (c->out.capacity() > (1u << 20)) std::string().swap(c->out);
}

// One sender's messages as seen by one receiver, plus a message held back
// by --inject-reorder.
struct RecvStream {
  StreamState st;
  bool has_held = false;
  std::uint64_t held_counter = 0;
  std::int64_t held_send = 0;
};

struct User {
  std::string name;
  std::uint64_t id = 0;
  int server = 0;
  crypto::BoxKeyPair box;
  crypto::SignKeyPair sign;
  Conn* conn = nullptr;
  // session set-up
  bool session_done = false;
  std::int64_t t_connect = 0, t_logged_in = 0, t_synced = 0;
  // dm / offline
  int peer = -1;
  std::string friend_key;
  // group
  int group = -1;
  int slot = -1;  // sender slot within its group or pair (-1: does not send)
  // sending
  std::uint64_t next_counter = 0;
  int in_flight = 0;
  std::vector<std::uint8_t> state;  // per counter: kSendPending / kSendOk / kSendError
  // receiving: streams by sender slot
  std::vector<RecvStream> streams;
};

struct Group {
  std::uint64_t id = 0;
  std::uint64_t epoch = 0;
  std::string key;
  std::vector<int> members;  // members[0] is the admin
  std::vector<int> senders;  // by slot
};

struct Snap {
  std::int64_t t = 0;
  std::vector<ProcSample> servers;
  std::vector<std::pair<int, ProcSample>> db;
  ProcSample self;
  double machine = 0;
};

enum class LoopEnd { kDone, kStalled, kFailed };

class Engine {
 public:
  Engine(const Options& o, Results* r) : o_(o), r_(r), scratch_(kScratch) {}
  ~Engine() {
    for (auto& c : conns_) {
      if (c->ssl != nullptr) SSL_free(c->ssl);
      if (!c->closed && c->fd >= 0) ::close(c->fd);
    }
    if (ssl_ctx_ != nullptr) SSL_CTX_free(ssl_ctx_);
    if (ep_ >= 0) ::close(ep_);
  }
  bool Run();

 private:
  // ---- infrastructure
  bool Init();
  Conn* Connect(int user);
  void CloseConn(Conn* c, bool flush, const char* why);
  void OnIo(Conn* c, std::uint32_t events);
  void OnReadable(Conn* c);
  void Consume(Conn* c, const char* p, std::size_t n);
  void HandleFrame(Conn* c, const char* p, std::size_t n);
  void Flush(Conn* c);
  void FlushDirty();
  void SetWantOut(Conn* c, bool on);
  // --tls
  bool InitTls();
  void StartTls(Conn* c);
  void TlsHandshake(Conn* c);
  void OnTlsIo(Conn* c, std::uint32_t events);
  void ReadTls(Conn* c);
  void FlushTls(Conn* c);
  void TlsInterest(Conn* c) { SetWantOut(c, c->write_blocked || c->read_wants_write); }
  void PostAcks(Conn* c);
  void Post(Conn* c, wire::Envelope& env);  // no reply expected (Ack)
  void Send(Conn* c, Req type, wire::Envelope& env, std::int32_t arg = 0, std::uint64_t counter = 0,
            std::int64_t t = 0);
  void MarkDirty(Conn* c) {
    if (!c->dirty) {
      c->dirty = true;
      dirty_.push_back(c);
    }
  }
  void Fail(const std::string& msg);
  LoopEnd Loop(const std::function<bool()>& done, double stall_s, const std::string& phase);
  void Tick();
  Snap TakeSnap();
  void FillCpu(const Snap& a, const Snap& b, const std::string& metric_prefix);
  void Metric(const std::string& k, double v) { r_->metrics.emplace_back(k, v); }
  // Progress on stderr (stdout carries the report).
  void Log(const std::string& what) {
    std::cerr << "[fastchat-bench +" << static_cast<double>((NowNs() - t_begin_) / 1000000) / 1000.0 << "s] " << what
              << std::endl;
  }
  // Runs the loop (acks, reads) for `s` seconds.
  void Pause(double s) {
    const std::int64_t until = NowNs() + Ns(s);
    Loop([&] { return now_ >= until; }, 0, "pause");
  }

  // ---- protocol
  void OnReply(Conn* c, const Pending& p, const wire::Envelope& env);
  void OnPush(Conn* c, const wire::Envelope& env);
  void OnDeliver(User& u, const wire::Event& ev);
  void OnMessage(User& r, int sender, std::uint64_t counter, std::int64_t send_ns);
  void Record(RecvStream& s, std::uint64_t counter, std::int64_t send_ns);
  void SendMsg(int sender, std::int64_t t);
  void OnSendDone(User& u, const Pending& p, bool ok, const std::string& code);
  void SendGroupKey(Conn* c, const User& u, const Group& g, std::int32_t gi, const User& m);
  bool ReadHeader(const std::string& plain, const User& s, std::uint64_t* counter, std::int64_t* send_ns);
  bool DecodeDirect(const User& r, const User& s, const wire::Event& ev, std::uint64_t* counter,
                    std::int64_t* send_ns);
  bool DecodeGroup(const User& r, const User& s, const wire::Event& ev, std::uint64_t* counter,
                   std::int64_t* send_ns);

  // ---- phases
  bool Sessions(const std::vector<int>& users, bool reg, bool login, bool close_after, int cap,
                const std::string& phase);
  bool MakeFriends(const std::vector<int>& requesters);
  bool MakeGroups();
  bool MeasureMessages(bool open_loop);
  bool Drain(const std::string& phase);
  void FinishCheck();
  bool RunDm();
  bool RunGroup();
  bool RunOffline();
  bool RunLogin();
  bool RunIdle();
  bool RunWorkload();

  const Options& o_;
  Results* r_;
  int ep_ = -1;
  SSL_CTX* ssl_ctx_ = nullptr;  // --tls
  std::uint64_t tls_handshakes_ = 0;
  Histogram tls_handshake_ns_;  // TCP connected -> handshake done
  bool failed_ = false;
  std::vector<std::pair<std::string, int>> errors_;  // distinct messages, how often
  std::vector<sockaddr_storage> addrs_;
  std::vector<socklen_t> addr_lens_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<Conn*> dirty_;
  std::vector<char> scratch_;
  std::vector<User> users_;
  std::vector<Group> groups_;
  std::unordered_map<std::uint64_t, int> user_by_id_;
  std::unordered_map<std::uint64_t, int> group_by_id_;
  std::vector<int> senders_;  // user indices that send in the measured phase
  std::string prefix_;
  std::size_t payload_ = 0;
  FastRandom rng_{0};
  std::uint64_t progress_ = 0;  // frames received; for stall detection
  std::int64_t now_ = 0;
  std::int64_t t_begin_ = NowNs();
  std::uint64_t unexpected_closes_ = 0;
  std::string first_close_reason_;

  // session set-up
  std::deque<int> connect_queue_;
  int in_progress_ = 0;
  int session_cap_ = 0;
  std::size_t sessions_done_ = 0;
  std::size_t sessions_failed_ = 0;
  bool session_reg_ = false, session_login_ = false, session_close_ = false;
  int next_source_ = 0;

  // friends / groups
  std::size_t friend_answers_ok_ = 0, friend_answers_seen_ = 0;
  std::size_t group_creates_ok_ = 0, group_adds_ok_ = 0, group_keys_ok_ = 0, group_keys_seen_ = 0;
  std::uint64_t notices_seen_ = 0;
  std::int64_t t_last_add_ok_ = 0;

  // messages
  bool sending_ = false;
  bool open_loop_ = false;
  std::int64_t win_start_ = 0, win_end_ = 0, send_end_ = 0;
  bool win_started_ = false, win_ended_ = false;
  Snap snap_start_, snap_end_;
  std::int64_t sched_start_ = 0, next_sched_ = 0;
  std::uint64_t sched_n_ = 0;
  long per_sender_limit_ = 0;  // offline --messages
  std::uint64_t outstanding_ = 0;   // sends not yet answered
  std::uint64_t expected_ = 0;      // deliveries owed for Ok'd sends
  std::uint64_t received_ = 0;      // unique deliveries
  std::uint64_t ack_frames_window_ = 0;  // Ack frames sent in the measured window
  std::uint64_t injected_drops_ = 0;
  std::uint64_t recv_n_ = 0;        // messages received (for injection)
  int recipients_per_send_ = 1;
  std::int64_t t_last_delivery_ = 0;
  std::int64_t next_rss_sample_ = 0;
  std::vector<double> peak_rss_;
  std::vector<ProcSample> last_good_;  // per server pid: the last readable sample

  // reused buffers
  wire::Envelope in_env_, out_env_;
  wire::Event in_event_;
  std::string plain_, ad_, nonce_, ct_, msg_id_, signed_;
};

// ================================================================== infrastructure

void Engine::Fail(const std::string& msg) {
  auto it = std::find_if(errors_.begin(), errors_.end(), [&](const auto& e) { return e.first == msg; });
  if (it != errors_.end()) {
    ++it->second;
  } else if (errors_.size() < 20) {
    errors_.emplace_back(msg, 1);
  }
  r_->ok = false;
  failed_ = true;
}

bool Engine::Init() {
  if (!crypto::Init()) {
    Fail("libsodium failed to initialise");
    return false;
  }
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  if (o_.servers.empty()) {
    Fail("no --server given");
    return false;
  }
  for (const std::string& s : o_.servers) {
    auto colon = s.rfind(':');
    if (colon == std::string::npos) {
      Fail("--server wants HOST:PORT, got '" + s + "'");
      return false;
    }
    std::string host = s.substr(0, colon), port = s.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0 || res == nullptr) {
      Fail("cannot resolve " + s + ": " + gai_strerror(rc));
      return false;
    }
    sockaddr_storage ss{};
    std::memcpy(&ss, res->ai_addr, res->ai_addrlen);
    addrs_.push_back(ss);
    addr_lens_.push_back(res->ai_addrlen);
    freeaddrinfo(res);
  }
  if (o_.tls && !InitTls()) return false;
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) {
    Fail(std::string("epoll_create1: ") + std::strerror(errno));
    return false;
  }
  rng_.s = static_cast<std::uint64_t>(NowNs()) ^ (static_cast<std::uint64_t>(getpid()) << 32);
  prefix_ = o_.prefix;
  if (prefix_.empty()) {
    static const char kAlpha[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    prefix_ = "b";
    for (int i = 0; i < 7; ++i) prefix_.push_back(kAlpha[rng_.Next() % 36]);
  }
  r_->opt.prefix = prefix_;
  payload_ = std::max<std::size_t>(kHeaderBytes, static_cast<std::size_t>(std::max(o_.payload, 0)));
  r_->payload_effective = static_cast<int>(payload_);
  if (static_cast<int>(payload_) != o_.payload) {
    r_->notes.push_back("payload raised to " + std::to_string(payload_) + " bytes (the checker's header)");
  }
  return true;
}

Conn* Engine::Connect(int user) {
  User& u = users_[static_cast<std::size_t>(user)];
  const sockaddr_storage& addr = addrs_[static_cast<std::size_t>(u.server)];
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    Fail(std::string("socket: ") + std::strerror(errno) + " (raise the open-file limit?)");
    return nullptr;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (o_.sources > 1 && addr.ss_family == AF_INET) {
    // Many source addresses: more than one address's ephemeral port range.
    ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000001u + static_cast<std::uint32_t>(next_source_++ % o_.sources));
    if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
      Fail(std::string("bind source address: ") + std::strerror(errno));
      ::close(fd);
      return nullptr;
    }
  }
  int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), addr_lens_[static_cast<std::size_t>(u.server)]);
  if (rc != 0 && errno != EINPROGRESS) {
    Fail(std::string("connect: ") + std::strerror(errno));
    ::close(fd);
    return nullptr;
  }
  auto c = std::make_unique<Conn>();
  c->fd = fd;
  c->user = user;
  c->connecting = true;
  c->want_out = true;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.ptr = c.get();
  if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    Fail(std::string("epoll_ctl: ") + std::strerror(errno));
    ::close(fd);
    return nullptr;
  }
  Conn* raw = c.get();
  conns_.push_back(std::move(c));
  u.conn = raw;
  return raw;
}

void Engine::CloseConn(Conn* c, bool flush, const char* why) {
  if (c->closed) return;
  if (c->ssl != nullptr) {
    if (flush && !c->handshaking) {
      // Best effort: the last Acks, then close_notify.
      if (c->out_pos < c->out.size()) {
        SSL_write(c->ssl, c->out.data() + c->out_pos,
                  static_cast<int>(std::min<std::size_t>(c->out.size() - c->out_pos, INT_MAX)));
      }
      SSL_shutdown(c->ssl);
    }
    ERR_clear_error();
    SSL_free(c->ssl);
    c->ssl = nullptr;
  } else if (flush && !c->connecting && c->out_pos < c->out.size()) {
    // Best effort: the last Acks.
    ssize_t n = ::send(c->fd, c->out.data() + c->out_pos, c->out.size() - c->out_pos, MSG_NOSIGNAL);
    (void)n;
  }
  ::close(c->fd);
  c->closed = true;
  User& u = users_[static_cast<std::size_t>(c->user)];
  if (u.conn == c) u.conn = nullptr;
  if (session_cap_ > 0 && !u.session_done) {
    // A session being set up will never finish.
    u.session_done = true;
    --in_progress_;
    ++sessions_failed_;
  }
  if (!flush) {
    ++unexpected_closes_;
    if (first_close_reason_.empty()) first_close_reason_ = std::string(why) + " (user " + u.name + ")";
  }
  // Requests awaiting a reply will never get one.
  for (const Pending& p : c->pending) {
    if (p.type == Req::kSend) {
      --outstanding_;
      --u.in_flight;
    }
  }
  c->pending.clear();
  std::string().swap(c->in);
  std::string().swap(c->out);
  c->out_pos = 0;
}

void Engine::SetWantOut(Conn* c, bool on) {
  if (c->want_out == on) return;
  c->want_out = on;
  epoll_event ev{};
  ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
  ev.data.ptr = c;
  epoll_ctl(ep_, EPOLL_CTL_MOD, c->fd, &ev);
}

void Engine::Flush(Conn* c) {
  if (c->closed || c->connecting) return;
  if (c->ssl != nullptr) {
    FlushTls(c);
    return;
  }
  while (c->out_pos < c->out.size()) {
    ssize_t n = ::send(c->fd, c->out.data() + c->out_pos, c->out.size() - c->out_pos, MSG_NOSIGNAL);
    if (n > 0) {
      c->out_pos += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      CompactOut(c);
      SetWantOut(c, true);
      return;
    }
    CloseConn(c, false, "write failed");
    return;
  }
  ClearOut(c);
  SetWantOut(c, false);
}

void Engine::FlushDirty() {
  for (std::size_t i = 0; i < dirty_.size(); ++i) {
    Conn* c = dirty_[i];
    c->dirty = false;
    if (!c->want_out) Flush(c);
  }
  dirty_.clear();
}

void Engine::Post(Conn* c, wire::Envelope& env) {
  if (c == nullptr || c->closed) return;
  env.set_rid(c->next_rid++);
  const std::size_t n = env.ByteSizeLong();
  const std::size_t old = c->out.size();
  c->out.resize(old + kFrameHeaderSize + n);
  EncodeFrameHeader(static_cast<std::uint32_t>(n), &c->out[old]);
  env.SerializeWithCachedSizesToArray(reinterpret_cast<std::uint8_t*>(&c->out[old + kFrameHeaderSize]));
  MarkDirty(c);
}

void Engine::Send(Conn* c, Req type, wire::Envelope& env, std::int32_t arg, std::uint64_t counter,
                  std::int64_t t) {
  if (c == nullptr || c->closed) return;
  const std::uint64_t rid = c->next_rid;
  Post(c, env);
  c->pending.push_back(Pending{rid, type, arg, counter, t});
}

void Engine::OnIo(Conn* c, std::uint32_t events) {
  if (c->closed) return;
  if (c->connecting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      Fail("connect to " + o_.servers[static_cast<std::size_t>(users_[static_cast<std::size_t>(c->user)].server)] +
           ": " + std::strerror(err));
      CloseConn(c, false, "connect failed");
      return;
    }
    c->connecting = false;
    if (ssl_ctx_ != nullptr) {
      StartTls(c);
      return;
    }
    Flush(c);
    if (c->closed) return;
  } else if (c->ssl != nullptr) {
    OnTlsIo(c, events);
    return;
  } else if (events & EPOLLOUT) {
    Flush(c);
    if (c->closed) return;
  }
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) OnReadable(c);
}

void Engine::OnReadable(Conn* c) {
  if (c->ssl != nullptr) {
    ReadTls(c);
    PostAcks(c);
    return;
  }
  for (int i = 0; i < 4 && !c->closed; ++i) {
    ssize_t n = ::recv(c->fd, scratch_.data(), scratch_.size(), 0);
    if (n > 0) {
      now_ = NowNs();
      Consume(c, scratch_.data(), static_cast<std::size_t>(n));
      if (static_cast<std::size_t>(n) < scratch_.size()) break;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    CloseConn(c, false, n == 0 ? "closed by the server" : "read failed");
    return;
  }
  PostAcks(c);
}

void Engine::PostAcks(Conn* c) {
  if (!c->closed && (!c->acks.empty() || !c->group_acks.empty())) {
    // One Ack frame for everything this read delivered (the group logs'
    // cursors in the first).
    std::size_t i = 0;
    do {
      out_env_.Clear();
      auto* ack = out_env_.mutable_ack();
      if (i == 0) {
        for (const auto& [group, seq] : c->group_acks) {
          auto* g = ack->add_groups();
          g->set_group_id(group);
          g->set_seq(seq);
        }
      }
      auto* seqs = ack->mutable_seqs();
      const std::size_t end = std::min(c->acks.size(), i + kMaxAckSeqs);
      seqs->Reserve(static_cast<int>(end - i));
      for (std::size_t k = i; k < end; ++k) seqs->Add(c->acks[k]);
      Post(c, out_env_);
      if (now_ >= win_start_ && now_ < win_end_) ++ack_frames_window_;
      i = end;
    } while (i < c->acks.size());
    c->acks.clear();
    c->group_acks.clear();
  }
}

// ------------------------------------------------------------------ TLS

std::string TlsErrors() {
  std::string out = net::OpensslErrors();
  if (out.empty()) out = errno != 0 ? std::strerror(errno) : "connection closed";
  return out;
}

bool Engine::InitTls() {
  // OpenSSL writes to the socket with write(2), not send(MSG_NOSIGNAL): a
  // connection the server dropped must not kill the bench with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  ssl_ctx_ = SSL_CTX_new(TLS_client_method());
  if (ssl_ctx_ == nullptr) {
    Fail("SSL_CTX_new: " + TlsErrors());
    return false;
  }
  SSL_CTX_set_min_proto_version(ssl_ctx_, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ssl_ctx_, TLS1_3_VERSION);
  // A load generator: the server's certificate is not checked (--help says so).
  SSL_CTX_set_verify(ssl_ctx_, SSL_VERIFY_NONE, nullptr);
  // SSL_write returns after each record; the out buffer may move between retries.
  SSL_CTX_set_mode(ssl_ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // The server closes without close_notify: EOF reads as a normal close.
  SSL_CTX_set_options(ssl_ctx_, SSL_OP_IGNORE_UNEXPECTED_EOF);
  // One recv per buffer of records instead of two per record (header, body).
  SSL_CTX_set_read_ahead(ssl_ctx_, 1);
  return true;
}

void Engine::StartTls(Conn* c) {
  c->ssl = SSL_new(ssl_ctx_);
  if (c->ssl == nullptr || SSL_set_fd(c->ssl, c->fd) != 1) {
    Fail("SSL_new: " + TlsErrors());
    CloseConn(c, false, "TLS set-up failed");
    return;
  }
  SSL_set_connect_state(c->ssl);
  c->handshaking = true;
  c->t_tcp = NowNs();
  TlsHandshake(c);
}

void Engine::TlsHandshake(Conn* c) {
  ERR_clear_error();
  const int rc = SSL_do_handshake(c->ssl);
  if (rc == 1) {
    c->handshaking = false;
    ++tls_handshakes_;
    tls_handshake_ns_.Record(NowNs() - c->t_tcp);
    if (r_->tls_cipher.empty()) r_->tls_cipher = std::string(SSL_get_version(c->ssl)) + " " + SSL_get_cipher_name(c->ssl);
    FlushTls(c);  // the requests queued while connecting
    if (!c->closed) OnReadable(c);  // records that came with the handshake's last flight
    return;
  }
  const int err = SSL_get_error(c->ssl, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    SetWantOut(c, err == SSL_ERROR_WANT_WRITE);
    return;
  }
  Fail("TLS handshake with " + o_.servers[static_cast<std::size_t>(users_[static_cast<std::size_t>(c->user)].server)] +
       " failed: " + TlsErrors() + " (a server started with --insecure-plain-tcp?)");
  CloseConn(c, false, "TLS handshake failed");
}

void Engine::OnTlsIo(Conn* c, std::uint32_t events) {
  if (c->handshaking) {
    TlsHandshake(c);
    return;
  }
  const bool readable = (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0;
  const bool writable = (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0;
  if (c->write_wants_read ? readable : writable) {
    FlushTls(c);
    if (c->closed) return;
  }
  if (c->read_wants_write ? writable : readable) OnReadable(c);
}

// SSL_read until WANT_READ: OpenSSL may hold decrypted bytes or whole
// read-ahead records that epoll cannot see, so stop only when it needs the
// socket. Decrypted bytes are gathered in scratch_ and consumed per fill.
void Engine::ReadTls(Conn* c) {
  std::size_t have = 0;
  for (;;) {
    ERR_clear_error();
    const int n = SSL_read(c->ssl, scratch_.data() + have, static_cast<int>(scratch_.size() - have));
    const int err = n > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, n);
    if (n > 0) have += static_cast<std::size_t>(n);
    if (have > 0 && (have == scratch_.size() || n <= 0)) {
      now_ = NowNs();
      Consume(c, scratch_.data(), have);
      have = 0;
      if (c->closed) return;
    }
    if (n > 0) continue;
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      c->read_wants_write = err == SSL_ERROR_WANT_WRITE;
      TlsInterest(c);
      return;
    }
    CloseConn(c, false, err == SSL_ERROR_ZERO_RETURN ? "closed by the server" : "TLS read failed");
    return;
  }
}

void Engine::FlushTls(Conn* c) {
  if (c->closed || c->connecting || c->handshaking) return;
  while (c->out_pos < c->out.size()) {
    ERR_clear_error();
    const int n = SSL_write(c->ssl, c->out.data() + c->out_pos,
                            static_cast<int>(std::min<std::size_t>(c->out.size() - c->out_pos, INT_MAX)));
    if (n > 0) {
      c->out_pos += static_cast<std::size_t>(n);
      continue;
    }
    const int err = SSL_get_error(c->ssl, n);
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
      // Retried later with the same bytes at out_pos (perhaps more after them).
      CompactOut(c);
      c->write_blocked = err == SSL_ERROR_WANT_WRITE;
      c->write_wants_read = err == SSL_ERROR_WANT_READ;
      TlsInterest(c);
      return;
    }
    CloseConn(c, false, "TLS write failed");
    return;
  }
  ClearOut(c);
  c->write_blocked = c->write_wants_read = false;
  TlsInterest(c);
}

void Engine::Consume(Conn* c, const char* p, std::size_t n) {
  const bool carried = !c->in.empty();
  if (carried) {
    c->in.append(p, n);
    p = c->in.data();
    n = c->in.size();
  }
  std::size_t pos = 0;
  while (n - pos >= kFrameHeaderSize) {
    const std::uint32_t len = DecodeFrameHeader(p + pos);
    if (len > kMaxFrameIn) {
      Fail("frame of " + std::to_string(len) + " bytes from the server");
      CloseConn(c, false, "oversized frame");
      return;
    }
    if (n - pos - kFrameHeaderSize < len) break;
    HandleFrame(c, p + pos + kFrameHeaderSize, len);
    pos += kFrameHeaderSize + len;
    if (c->closed) return;
  }
  if (carried) {
    c->in.erase(0, pos);
  } else if (pos < n) {
    c->in.assign(p + pos, n - pos);
  }
  if (c->in.empty() && c->in.capacity() > 4096) std::string().swap(c->in);
}

void Engine::HandleFrame(Conn* c, const char* p, std::size_t n) {
  ++progress_;
  if (!in_env_.ParseFromArray(p, static_cast<int>(n))) {
    Fail("unparsable frame from the server");
    return;
  }
  if (in_env_.rid() == 0) {
    OnPush(c, in_env_);
    return;
  }
  if (c->pending.empty() || in_env_.rid() < c->pending.front().rid) {
    // Not a request we wait on: an error about an Ack (Acks get no reply).
    std::string code = in_env_.has_error() ? wire::ErrorCode_Name(in_env_.error().code()) : "unexpected reply";
    ++r_->error_codes["ack:" + code];
    Fail("reply to an Ack: " + code + " " + (in_env_.has_error() ? in_env_.error().message() : ""));
    return;
  }
  if (in_env_.rid() != c->pending.front().rid) {
    Fail("reply out of request order (rid " + std::to_string(in_env_.rid()) + ", expected " +
         std::to_string(c->pending.front().rid) + ")");
    CloseConn(c, false, "protocol error");
    return;
  }
  const Pending p0 = c->pending.front();
  c->pending.pop_front();
  OnReply(c, p0, in_env_);
}

LoopEnd Engine::Loop(const std::function<bool()>& done, double stall_s, const std::string& phase) {
  std::vector<epoll_event> events(1024);
  std::uint64_t last_progress = progress_;
  std::int64_t last_progress_t = NowNs();
  for (;;) {
    now_ = NowNs();
    Tick();
    FlushDirty();
    if (failed_) return LoopEnd::kFailed;
    if (done()) return LoopEnd::kDone;
    if (progress_ != last_progress) {
      last_progress = progress_;
      last_progress_t = now_;
    } else if (stall_s > 0 && now_ - last_progress_t > Ns(stall_s)) {
      return LoopEnd::kStalled;
    }
    // Nanosecond timeout: open-loop sends go out on time, not on a 1 ms tick.
    std::int64_t wait = 10000000;
    if (open_loop_ && sending_) wait = std::clamp<std::int64_t>(next_sched_ - now_, 0, wait);
    timespec ts{};
    ts.tv_sec = 0;
    ts.tv_nsec = static_cast<long>(wait);
    int n = epoll_pwait2(ep_, events.data(), static_cast<int>(events.size()), &ts, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      Fail(phase + ": epoll_wait: " + std::strerror(errno));
      return LoopEnd::kFailed;
    }
    now_ = NowNs();
    for (int i = 0; i < n; ++i) {
      OnIo(static_cast<Conn*>(events[static_cast<std::size_t>(i)].data.ptr), events[static_cast<std::size_t>(i)].events);
    }
  }
}

Snap Engine::TakeSnap() {
  Snap s;
  s.t = NowNs();
  last_good_.resize(o_.server_pids.size());
  for (std::size_t i = 0; i < o_.server_pids.size(); ++i) {
    ProcSample p = SampleProc(o_.server_pids[i]);
    if (p.ok) {
      last_good_[i] = p;
    } else {
      // The process is gone (killed?): count its CPU up to the last sample.
      p = last_good_[i];
      p.ok = false;
      p.rss_mib = 0;
    }
    s.servers.push_back(p);
  }
  if (!o_.db_pids.empty()) {
    for (int pid : WithDescendants(o_.db_pids)) s.db.emplace_back(pid, SampleProc(pid));
  }
  s.self = SampleProc(0);
  s.machine = MachineBusySeconds();
  return s;
}

void Engine::FillCpu(const Snap& a, const Snap& b, const std::string& metric_prefix) {
  if (!metric_prefix.empty()) {
    double cpu = 0;
    for (std::size_t i = 0; i < b.servers.size(); ++i) cpu += b.servers[i].cpu_s - a.servers[i].cpu_s;
    if (!b.servers.empty()) Metric(metric_prefix + "server_cpu_s", cpu);
    double db = 0;
    for (const auto& [pid, sb] : b.db) {
      double base = 0;
      for (const auto& [pa, sa] : a.db) {
        if (pa == pid) base = sa.cpu_s;
      }
      db += sb.cpu_s - base;
    }
    if (!b.db.empty()) Metric(metric_prefix + "db_cpu_s", db);
    Metric(metric_prefix + "bench_cpu_s", b.self.cpu_s - a.self.cpu_s);
    Metric(metric_prefix + "other_cpu_s", std::max(0.0, (b.machine - a.machine) - cpu - db - (b.self.cpu_s - a.self.cpu_s)));
    return;
  }
  r_->window_s = Sec(b.t - a.t);
  r_->server_cpu.clear();
  r_->server_cpu_s = 0;
  r_->server_rss_mib = 0;
  for (std::size_t i = 0; i < b.servers.size(); ++i) {
    PidCpu p;
    p.pid = o_.server_pids[i];
    if (!b.servers[i].ok) {
      r_->notes.push_back("server pid " + std::to_string(p.pid) +
                          " was gone at the end of the window: CPU counted up to its last sample");
    }
    p.cpu_s = b.servers[i].cpu_s - a.servers[i].cpu_s;
    p.rss_mib = b.servers[i].rss_mib;
    p.peak_rss_mib = std::max(p.rss_mib, i < peak_rss_.size() ? peak_rss_[i] : 0.0);
    r_->server_cpu_s += p.cpu_s;
    r_->server_rss_mib += p.rss_mib;
    r_->server_cpu.push_back(p);
  }
  r_->db_cpu.clear();
  r_->db_cpu_s = 0;
  for (const auto& [pid, sb] : b.db) {
    PidCpu p;
    p.pid = pid;
    double base = 0;
    for (const auto& [pa, sa] : a.db) {
      if (pa == pid) base = sa.cpu_s;
    }
    p.cpu_s = sb.cpu_s - base;
    p.rss_mib = sb.rss_mib;
    p.peak_rss_mib = sb.rss_mib;
    r_->db_cpu_s += p.cpu_s;
    r_->db_cpu.push_back(p);
  }
  r_->bench_cpu_s = b.self.cpu_s - a.self.cpu_s;
  r_->machine_cpu_s = b.machine - a.machine;
}

// Called once per loop iteration: starts queued connections, runs the
// open-loop schedule, watches the measured window.
void Engine::Tick() {
  while (!connect_queue_.empty() && in_progress_ < session_cap_ && !failed_) {
    int u = connect_queue_.front();
    connect_queue_.pop_front();
    User& user = users_[static_cast<std::size_t>(u)];
    user.session_done = false;
    user.t_connect = now_;
    Conn* c = Connect(u);
    if (c == nullptr) return;
    ++in_progress_;
    out_env_.Clear();
    out_env_.mutable_hello()->set_version(kProtocolVersion);
    out_env_.mutable_hello()->set_agent("fastchat-bench/0.1");
    Send(c, Req::kHello, out_env_);
    if (session_reg_) {
      out_env_.Clear();
      auto* reg = out_env_.mutable_register_();
      reg->set_name(user.name);
      reg->set_password(o_.password);
      reg->set_x25519_public(user.box.public_key);
      reg->set_ed25519_public(user.sign.public_key);
      Send(c, Req::kRegister, out_env_);
    }
    if (session_login_) {
      out_env_.Clear();
      auto* login = out_env_.mutable_login();
      if (user.id != 0) {
        login->mutable_user()->set_id(user.id);
      } else {
        login->mutable_user()->set_name(user.name);
      }
      login->set_password(o_.password);
      login->set_receive(true);
      Send(c, Req::kLogin, out_env_);
    }
  }
  if (!o_.server_pids.empty() && now_ >= next_rss_sample_) {
    next_rss_sample_ = now_ + kSec / 2;
    peak_rss_.resize(o_.server_pids.size(), 0.0);
    last_good_.resize(o_.server_pids.size());
    for (std::size_t i = 0; i < o_.server_pids.size(); ++i) {
      ProcSample p = SampleProc(o_.server_pids[i]);
      if (!p.ok) continue;
      last_good_[i] = p;
      peak_rss_[i] = std::max(peak_rss_[i], p.rss_mib);
    }
  }
  if (win_end_ == 0) return;
  if (!win_started_ && now_ >= win_start_) {
    win_started_ = true;
    snap_start_ = TakeSnap();
  }
  if (!win_ended_ && now_ >= win_end_) {
    win_ended_ = true;
    snap_end_ = TakeSnap();
  }
  if (sending_ && now_ >= send_end_) sending_ = false;
  if (open_loop_ && sending_) {
    // Sends due by now, each stamped with its scheduled time (latency counts
    // from when the message should have gone: no coordinated omission).
    while (next_sched_ <= now_ && next_sched_ < send_end_) {
      SendMsg(senders_[sched_n_ % senders_.size()], next_sched_);
      ++sched_n_;
      next_sched_ = sched_start_ + static_cast<std::int64_t>(static_cast<double>(sched_n_) * 1e9 / o_.rate);
    }
  }
}

// ================================================================== protocol

void Engine::OnReply(Conn* c, const Pending& p, const wire::Envelope& env) {
  User& u = users_[static_cast<std::size_t>(c->user)];
  const bool is_error = env.has_error();
  const std::string code = is_error ? wire::ErrorCode_Name(env.error().code()) : std::string();
  if (p.type == Req::kSend) {
    OnSendDone(u, p, !is_error, code);
    return;
  }
  if (is_error) {
    ++r_->error_codes[code];
    static const char* const kNames[] = {"Hello",      "Register", "Login",        "FriendRequest", "FriendAnswer",
                                         "GroupCreate", "GroupAdd", "GroupKeySend", "Send"};
    Fail(std::string(kNames[static_cast<int>(p.type)]) + " for " + u.name + ": " + code + " " + env.error().message());
    return;
  }
  switch (p.type) {
    case Req::kHello:
      if (!env.has_hello_ok()) Fail("Hello: unexpected reply");
      break;
    case Req::kRegister:
      if (!env.has_ok() || env.ok().id() == 0) {
        Fail("Register: unexpected reply");
        break;
      }
      u.id = env.ok().id();
      user_by_id_[u.id] = c->user;
      if (!session_login_ && !u.session_done) {
        u.session_done = true;
        --in_progress_;
        ++sessions_done_;
        if (session_close_) CloseConn(c, true, "");
      }
      break;
    case Req::kLogin:
      if (!env.has_logged_in()) {
        Fail("Login: unexpected reply");
        break;
      }
      if (u.id == 0) {
        u.id = env.logged_in().user_id();
        user_by_id_[u.id] = c->user;
      }
      u.t_logged_in = now_;
      break;
    case Req::kFriendRequest:
      break;
    case Req::kFriendAnswer:
      ++friend_answers_ok_;
      break;
    case Req::kGroupCreate: {
      Group& g = groups_[static_cast<std::size_t>(p.arg)];
      g.id = env.ok().id();
      g.epoch = env.ok().epoch();
      g.key = crypto::NewSymmetricKey();
      group_by_id_[g.id] = p.arg;
      ++group_creates_ok_;
      // Every member, pipelined on the admin's connection; each member's key
      // follows its GroupAdd's Ok. --batch-add: one GroupAdd names up to
      // kAddsPerRequest members (counter = the first one's index in the group).
      if (o_.batch_add) {
        for (std::size_t k = 1; k < g.members.size(); k += kAddsPerRequest) {
          out_env_.Clear();
          auto* add = out_env_.mutable_group_add();
          add->set_group_id(g.id);
          add->mutable_user()->set_id(users_[static_cast<std::size_t>(g.members[k])].id);
          for (std::size_t j = k + 1; j < std::min(g.members.size(), k + kAddsPerRequest); ++j) {
            add->add_more_users()->set_id(users_[static_cast<std::size_t>(g.members[j])].id);
          }
          Send(c, Req::kGroupAdd, out_env_, p.arg, k);
        }
        break;
      }
      for (std::size_t k = 1; k < g.members.size(); ++k) {
        out_env_.Clear();
        auto* add = out_env_.mutable_group_add();
        add->set_group_id(g.id);
        add->mutable_user()->set_id(users_[static_cast<std::size_t>(g.members[k])].id);
        Send(c, Req::kGroupAdd, out_env_, p.arg, static_cast<std::uint64_t>(g.members[k]));
      }
      break;
    }
    case Req::kGroupAdd: {
      Group& g = groups_[static_cast<std::size_t>(p.arg)];
      ++group_adds_ok_;
      t_last_add_ok_ = now_;
      if (env.ok().epoch() != 0) g.epoch = env.ok().epoch();
      if (o_.batch_add) {
        const std::size_t end = std::min(g.members.size(), static_cast<std::size_t>(p.counter) + kAddsPerRequest);
        for (std::size_t k = p.counter; k < end; ++k) {
          SendGroupKey(c, u, g, p.arg, users_[static_cast<std::size_t>(g.members[k])]);
        }
        break;
      }
      SendGroupKey(c, u, g, p.arg, users_[p.counter]);
      break;
    }
    case Req::kGroupKeySend:
      ++group_keys_ok_;
      break;
    case Req::kSend:
      break;
  }
}

void Engine::SendGroupKey(Conn* c, const User& u, const Group& g, std::int32_t gi, const User& m) {
  std::string plain;
  PutU64(&plain, g.id);
  PutU64(&plain, g.epoch);
  plain += g.key;
  std::string nonce, wrapped;
  Status s = crypto::BoxSeal(plain, m.box.public_key, u.box.secret_key, &nonce, &wrapped);
  if (!s.ok()) {
    Fail("BoxSeal: " + s.ToString());
    return;
  }
  out_env_.Clear();
  auto* ks = out_env_.mutable_group_key_send();
  ks->set_group_id(g.id);
  ks->mutable_to()->set_id(m.id);
  ks->set_epoch(g.epoch);
  ks->set_nonce(nonce);
  ks->set_wrapped_key(wrapped);
  Send(c, Req::kGroupKeySend, out_env_, gi);
}

void Engine::OnPush(Conn* c, const wire::Envelope& env) {
  User& u = users_[static_cast<std::size_t>(c->user)];
  if (env.has_deliver()) {
    if (const std::uint64_t group = env.deliver().group_id(); group != 0) {
      auto it = std::find_if(c->group_acks.begin(), c->group_acks.end(),
                             [group](const auto& a) { return a.first == group; });
      if (it == c->group_acks.end()) {
        c->group_acks.emplace_back(group, env.deliver().seq());
      } else {
        it->second = std::max(it->second, env.deliver().seq());
      }
    } else {
      c->acks.push_back(env.deliver().seq());
    }
    if (!in_event_.ParseFromString(env.deliver().event())) {
      ++r_->bad_messages;
      return;
    }
    OnDeliver(u, in_event_);
    return;
  }
  if (env.has_ping()) {
    // Keepalive: the server drops a silent connection that does not answer.
    wire::Envelope pong;
    pong.mutable_pong();
    Post(c, pong);
    return;
  }
  if (env.has_sync_done()) {
    u.t_synced = now_;
    if (!u.session_done && session_login_) {
      u.session_done = true;
      --in_progress_;
      ++sessions_done_;
      if (session_close_) CloseConn(c, true, "");
    }
    return;
  }
  if (env.has_error()) {
    std::string code = wire::ErrorCode_Name(env.error().code());
    ++r_->error_codes["push:" + code];
    Fail("server error push for " + u.name + ": " + code + " " + env.error().message());
    return;
  }
  ++r_->error_codes["push:unexpected"];
}

void Engine::OnDeliver(User& u, const wire::Event& ev) {
  auto it = user_by_id_.find(ev.from_id());
  const int from = it == user_by_id_.end() ? -1 : it->second;
  switch (ev.body_case()) {
    case wire::Event::kDirect:
    case wire::Event::kGroup: {
      if (from < 0) {
        ++r_->bad_messages;
        return;
      }
      const User& s = users_[static_cast<std::size_t>(from)];
      std::uint64_t counter = 0;
      std::int64_t send_ns = 0;
      bool ok = ev.has_direct() ? DecodeDirect(u, s, ev, &counter, &send_ns) : DecodeGroup(u, s, ev, &counter, &send_ns);
      if (!ok) {
        ++r_->bad_messages;
        return;
      }
      OnMessage(u, from, counter, send_ns);
      return;
    }
    case wire::Event::kFriendRequest: {
      if (from < 0 || u.peer != from) return;  // not one we asked for
      const User& req = users_[static_cast<std::size_t>(from)];
      u.friend_key = crypto::NewSymmetricKey();
      std::string nonce, wrapped;
      Status s = crypto::BoxSeal(u.friend_key, req.box.public_key, u.box.secret_key, &nonce, &wrapped);
      if (!s.ok()) {
        Fail("BoxSeal: " + s.ToString());
        return;
      }
      out_env_.Clear();
      auto* a = out_env_.mutable_friend_answer();
      a->mutable_to()->set_id(req.id);
      a->set_accept(true);
      a->set_nonce(nonce);
      a->set_wrapped_key(wrapped);
      Send(u.conn, Req::kFriendAnswer, out_env_);
      return;
    }
    case wire::Event::kFriendAnswer: {
      if (from < 0 || u.peer != from) return;
      const User& ans = users_[static_cast<std::size_t>(from)];
      std::string key;
      Status s = crypto::BoxOpen(ev.friend_answer().wrapped_key(), ev.friend_answer().nonce(), ans.box.public_key,
                                 u.box.secret_key, &key);
      if (!s.ok() || !ev.friend_answer().accept() || key != ans.friend_key) {
        Fail("friend answer for " + u.name + " does not open to the key " + ans.name + " made");
        return;
      }
      u.friend_key = key;
      ++friend_answers_seen_;
      return;
    }
    case wire::Event::kGroupNotice:
      ++notices_seen_;
      return;
    case wire::Event::kGroupKey: {
      auto g_it = group_by_id_.find(ev.group_key().group_id());
      if (g_it == group_by_id_.end() || u.group != g_it->second) {
        Fail("group key for an unknown group");
        return;
      }
      const Group& g = groups_[static_cast<std::size_t>(g_it->second)];
      const User& admin = users_[static_cast<std::size_t>(g.members[0])];
      std::string plain;
      Status s = crypto::BoxOpen(ev.group_key().wrapped_key(), ev.group_key().nonce(), admin.box.public_key,
                                 u.box.secret_key, &plain);
      if (!s.ok() || plain.size() != 16 + crypto::kKeyBytes || GetU64(plain.data()) != g.id ||
          GetU64(plain.data() + 8) != ev.group_key().epoch() || plain.substr(16) != g.key) {
        Fail("group key for " + u.name + " does not open to the admin's key");
        return;
      }
      ++group_keys_seen_;
      return;
    }
    default:
      ++r_->error_codes["event:unexpected"];
      return;
  }
}

// The plaintext header: magic, sender index, stream counter, send time.
bool Engine::ReadHeader(const std::string& plain, const User& s, std::uint64_t* counter, std::int64_t* send_ns) {
  if (plain.size() < kHeaderBytes) return false;
  std::uint32_t magic = 0, sender = 0;
  std::memcpy(&magic, plain.data(), 4);
  std::memcpy(&sender, plain.data() + 4, 4);
  std::memcpy(counter, plain.data() + 8, 8);
  std::memcpy(send_ns, plain.data() + 16, 8);
  return magic == kMagic && sender < users_.size() && &users_[sender] == &s;
}

bool Engine::DecodeDirect(const User& r, const User& s, const wire::Event& ev, std::uint64_t* counter,
                          std::int64_t* send_ns) {
  const wire::DirectEvent& d = ev.direct();
  const std::string* plain = &d.ciphertext();
  if (o_.encrypt) {
    DmAd(&ad_, s.id, r.id, d.msg_id());
    if (!crypto::AeadDecrypt(d.ciphertext(), ad_, d.nonce(), r.friend_key, &plain_).ok()) return false;
    plain = &plain_;
  }
  return ReadHeader(*plain, s, counter, send_ns);
}

bool Engine::DecodeGroup(const User& r, const User& s, const wire::Event& ev, std::uint64_t* counter,
                         std::int64_t* send_ns) {
  const wire::GroupEvent& g = ev.group();
  auto it = group_by_id_.find(g.group_id());
  if (it == group_by_id_.end() || it->second != r.group || s.group != r.group) return false;
  const Group& grp = groups_[static_cast<std::size_t>(it->second)];
  const std::string* plain = &g.ciphertext();
  if (o_.encrypt) {
    GroupAd(&ad_, g.group_id(), g.epoch(), s.id, g.msg_id());
    if (o_.verify_signatures) {
      signed_ = ad_;
      signed_ += g.nonce();
      signed_ += g.ciphertext();
      if (!crypto::Verify(signed_, g.signature(), s.sign.public_key)) return false;
    }
    if (!crypto::AeadDecrypt(g.ciphertext(), ad_, g.nonce(), grp.key, &plain_).ok()) return false;
    plain = &plain_;
  }
  return ReadHeader(*plain, s, counter, send_ns);
}

void Engine::OnMessage(User& r, int sender, std::uint64_t counter, std::int64_t send_ns) {
  const User& s = users_[static_cast<std::size_t>(sender)];
  if (s.slot < 0 || static_cast<std::size_t>(s.slot) >= r.streams.size() || counter >= s.next_counter) {
    ++r_->bad_messages;  // from someone who is not sending to us, or a counter never sent
    return;
  }
  RecvStream& st = r.streams[static_cast<std::size_t>(s.slot)];
  ++recv_n_;
  if (o_.inject_loss > 0 && recv_n_ % static_cast<std::uint64_t>(o_.inject_loss) == 0) {
    ++injected_drops_;  // pretend it never came (it is still acknowledged)
    return;
  }
  if (o_.inject_reorder > 0 && recv_n_ % static_cast<std::uint64_t>(o_.inject_reorder) == 0 && !st.has_held) {
    st.has_held = true;
    st.held_counter = counter;
    st.held_send = send_ns;
    return;
  }
  Record(st, counter, send_ns);
  if (o_.inject_dup > 0 && recv_n_ % static_cast<std::uint64_t>(o_.inject_dup) == 0) Record(st, counter, send_ns);
  if (st.has_held) {
    st.has_held = false;
    Record(st, st.held_counter, st.held_send);
  }
}

void Engine::Record(RecvStream& s, std::uint64_t counter, std::int64_t send_ns) {
  switch (s.st.Add(counter)) {
    case StreamState::Arrival::kDuplicate:
      ++r_->duplicated;
      return;
    case StreamState::Arrival::kOutOfOrder:
      ++r_->out_of_order;
      break;
    case StreamState::Arrival::kNew:
      break;
  }
  ++received_;
  t_last_delivery_ = now_;
  if (now_ >= win_start_ && now_ < win_end_) ++r_->delivered;
  if (send_ns >= win_start_ && send_ns < win_end_) r_->latency.Record(now_ - send_ns);
}

void Engine::SendMsg(int sender, std::int64_t t) {
  User& u = users_[static_cast<std::size_t>(sender)];
  if (u.conn == nullptr || u.conn->closed) return;
  const std::uint64_t counter = u.next_counter++;
  u.state.push_back(kSendPending);
  ++u.in_flight;
  ++outstanding_;
  ++r_->total_sent;
  if (t >= win_start_ && t < win_end_) ++r_->sent;

  plain_.resize(payload_);
  const std::uint32_t magic = kMagic, idx = static_cast<std::uint32_t>(sender);
  std::memcpy(&plain_[0], &magic, 4);
  std::memcpy(&plain_[4], &idx, 4);
  std::memcpy(&plain_[8], &counter, 8);
  std::memcpy(&plain_[16], &t, 8);
  msg_id_.resize(crypto::kMsgIdBytes);
  const bool group = u.group >= 0;
  const Group* g = group ? &groups_[static_cast<std::size_t>(u.group)] : nullptr;
  const User* peer = group ? nullptr : &users_[static_cast<std::size_t>(u.peer)];
  if (o_.encrypt) {
    msg_id_ = crypto::PublicRandomBytes(crypto::kMsgIdBytes);
    if (group) {
      GroupAd(&ad_, g->id, g->epoch, u.id, msg_id_);
    } else {
      DmAd(&ad_, u.id, peer->id, msg_id_);
    }
    Status s = crypto::AeadEncrypt(plain_, ad_, group ? g->key : u.friend_key, &nonce_, &ct_);
    if (!s.ok()) {
      Fail("AeadEncrypt: " + s.ToString());
      return;
    }
  } else {
    // --no-encrypt: the plaintext in the clear plus 16 random "tag" bytes,
    // a random nonce (and signature): the server's work is the same.
    rng_.Fill(&msg_id_[0], msg_id_.size());
    if (payload_ > kHeaderBytes) rng_.Fill(&plain_[kHeaderBytes], payload_ - kHeaderBytes);
    nonce_.resize(crypto::kAeadNonceBytes);
    rng_.Fill(&nonce_[0], nonce_.size());
    ct_.assign(plain_);
    ct_.resize(payload_ + crypto::kAeadTagBytes);
    rng_.Fill(&ct_[payload_], crypto::kAeadTagBytes);
  }
  out_env_.Clear();
  if (group) {
    auto* m = out_env_.mutable_group_send();
    m->set_group_id(g->id);
    m->set_epoch(g->epoch);
    m->set_msg_id(msg_id_);
    m->set_kind(wire::TEXT);
    m->set_chunk_index(0);
    m->set_chunk_count(1);
    m->set_nonce(nonce_);
    if (o_.encrypt) {
      signed_ = ad_;
      signed_ += nonce_;
      signed_ += ct_;
      m->set_signature(crypto::Sign(signed_, u.sign.secret_key));
    } else {
      std::string sig(crypto::kSignatureBytes, '\0');
      rng_.Fill(&sig[0], sig.size());
      m->set_signature(std::move(sig));
    }
    m->set_ciphertext(ct_);
  } else {
    auto* m = out_env_.mutable_direct_send();
    m->mutable_to()->set_id(peer->id);
    m->set_msg_id(msg_id_);
    m->set_kind(wire::TEXT);
    m->set_chunk_index(0);
    m->set_chunk_count(1);
    m->set_nonce(nonce_);
    m->set_ciphertext(ct_);
  }
  Send(u.conn, Req::kSend, out_env_, 0, counter, t);
}

void Engine::OnSendDone(User& u, const Pending& p, bool ok, const std::string& code) {
  --outstanding_;
  --u.in_flight;
  u.state[p.counter] = ok ? kSendOk : kSendError;
  if (ok) {
    ++r_->total_oked;
    expected_ += static_cast<std::uint64_t>(recipients_per_send_);
    if (now_ >= win_start_ && now_ < win_end_) ++r_->oked;
    if (p.t_ns >= win_start_ && p.t_ns < win_end_) r_->ok_latency.Record(now_ - p.t_ns);
  } else {
    ++r_->total_send_errors;
    ++r_->error_codes[code];
  }
  if (sending_ && !open_loop_) {
    const int sender = static_cast<int>(&u - users_.data());
    if (per_sender_limit_ == 0 || u.next_counter < static_cast<std::uint64_t>(per_sender_limit_)) {
      SendMsg(sender, now_);
    }
  }
}

// ================================================================== phases

bool Engine::Sessions(const std::vector<int>& users, bool reg, bool login, bool close_after, int cap,
                      const std::string& phase) {
  Log(phase + ": " + std::to_string(users.size()) + " sessions");
  session_reg_ = reg;
  session_login_ = login;
  session_close_ = close_after;
  session_cap_ = cap > 0 ? cap : static_cast<int>(users.size());
  sessions_done_ = sessions_failed_ = 0;
  in_progress_ = 0;
  connect_queue_.assign(users.begin(), users.end());
  const std::size_t want = users.size();
  LoopEnd e = Loop([&] { return sessions_done_ + sessions_failed_ == want || (failed_ && in_progress_ == 0); },
                   o_.setup_timeout, phase);
  session_cap_ = 0;
  connect_queue_.clear();
  if (e == LoopEnd::kStalled) {
    Fail(phase + ": stalled with " + std::to_string(sessions_done_) + " of " + std::to_string(want) + " done");
  }
  if (sessions_failed_ > 0) {
    Fail(phase + ": " + std::to_string(sessions_failed_) + " of " + std::to_string(want) + " sessions failed");
  }
  if (unexpected_closes_ > 0 && !failed_) Fail(phase + ": connection closed: " + first_close_reason_);
  return !failed_;
}

bool Engine::MakeFriends(const std::vector<int>& requesters) {
  Log("friends: " + std::to_string(requesters.size()) + " pairs");
  const std::int64_t t0 = NowNs();
  friend_answers_ok_ = friend_answers_seen_ = 0;
  for (int a : requesters) {
    const User& b = users_[static_cast<std::size_t>(users_[static_cast<std::size_t>(a)].peer)];
    out_env_.Clear();
    out_env_.mutable_friend_request()->mutable_to()->set_id(b.id);
    Send(users_[static_cast<std::size_t>(a)].conn, Req::kFriendRequest, out_env_);
  }
  const std::size_t want = requesters.size();
  LoopEnd e = Loop([&] { return friend_answers_ok_ == want && friend_answers_seen_ == want; }, o_.setup_timeout,
                   "friends");
  if (e == LoopEnd::kStalled) {
    Fail("friends: stalled with " + std::to_string(friend_answers_seen_) + " of " + std::to_string(want) +
         " friendships made");
  }
  Metric("setup_friendships", static_cast<double>(want));
  Metric("setup_friendships_s", Sec(NowNs() - t0));
  return !failed_;
}

bool Engine::MakeGroups() {
  Log("groups: " + std::to_string(groups_.size()) + " x " + std::to_string(groups_.empty() ? 0 : groups_[0].members.size()));
  const std::int64_t t0 = NowNs();
  std::size_t want_adds = 0, want_keys = 0;
  std::uint64_t want_notices = 0;
  for (std::size_t gi = 0; gi < groups_.size(); ++gi) {
    Group& g = groups_[gi];
    const std::uint64_t s = g.members.size();
    want_keys += s - 1;
    if (o_.batch_add) {
      // One notice per GroupAdd, read by every member after it (admin included).
      for (std::uint64_t k = 1; k < s; k += kAddsPerRequest) {
        ++want_adds;
        want_notices += std::min<std::uint64_t>(s, k + kAddsPerRequest);
      }
    } else {
      want_adds += s - 1;
      want_notices += (s - 1) * (s + 2) / 2;  // add #j reaches the j earlier members and the new one
    }
    out_env_.Clear();
    out_env_.mutable_group_create()->set_name("bench-" + prefix_ + "-" + std::to_string(gi));
    Send(users_[static_cast<std::size_t>(g.members[0])].conn, Req::kGroupCreate, out_env_, static_cast<std::int32_t>(gi));
  }
  std::int64_t t_acked = 0;
  const Snap snap_a = TakeSnap();
  LoopEnd e = Loop(
      [&] {
        if (t_acked == 0 && group_creates_ok_ == groups_.size() && group_adds_ok_ == want_adds &&
            group_keys_ok_ == want_keys) {
          t_acked = now_;
        }
        return t_acked != 0 && group_keys_seen_ == want_keys && notices_seen_ == want_notices;
      },
      o_.setup_timeout, "groups");
  if (e == LoopEnd::kStalled) {
    Fail("groups: stalled: " + std::to_string(group_adds_ok_) + "/" + std::to_string(want_adds) + " adds, " +
         std::to_string(group_keys_ok_) + " keys Ok'd, " + std::to_string(group_keys_seen_) + " keys and " +
         std::to_string(notices_seen_) + "/" + std::to_string(want_notices) + " notices received");
  }
  const std::int64_t t1 = NowNs();
  Metric("group_build_adds", static_cast<double>(want_adds));
  Metric("group_build_notices", static_cast<double>(want_notices));
  Metric("group_build_adds_ok_s", Sec(t_last_add_ok_ - t0));
  Metric("group_build_all_ok_s", Sec((t_acked ? t_acked : t1) - t0));
  Metric("group_build_settled_s", Sec(t1 - t0));
  Metric("group_build_adds_per_s", t_last_add_ok_ > t0 ? static_cast<double>(want_adds) / Sec(t_last_add_ok_ - t0) : 0);
  FillCpu(snap_a, TakeSnap(), "group_build_");
  return !failed_;
}

bool Engine::MeasureMessages(bool open_loop) {
  r_->has_messages = true;
  r_->senders = static_cast<int>(senders_.size());
  Log("sending: " + std::to_string(senders_.size()) + " senders, warmup " + Num(o_.warmup) + " s, window " +
      Num(o_.duration) + " s");
  const std::int64_t t0 = NowNs();
  now_ = t0;
  open_loop_ = open_loop;
  win_start_ = t0 + Ns(o_.warmup);
  win_end_ = win_start_ + Ns(o_.duration);
  send_end_ = win_end_;
  win_started_ = win_ended_ = false;
  sending_ = true;
  if (open_loop) {
    sched_start_ = t0;
    sched_n_ = 0;
    next_sched_ = t0;
  } else {
    for (int s : senders_) {
      for (int w = 0; w < o_.window; ++w) SendMsg(s, t0);
    }
  }
  if (o_.warmup <= 0) {
    win_started_ = true;
    snap_start_ = TakeSnap();
  }
  Loop([&] { return win_ended_; }, 0, "measure");
  sending_ = false;
  if (!win_ended_) {
    win_ended_ = true;
    snap_end_ = TakeSnap();
  }
  FillCpu(snap_start_, snap_end_, "");
  Metric("ack_frames", static_cast<double>(ack_frames_window_));
  Metric("deliveries_per_ack_frame",
         ack_frames_window_ ? static_cast<double>(r_->delivered) / static_cast<double>(ack_frames_window_) : 0);
  if (unexpected_closes_ > 0) {
    Fail(std::to_string(unexpected_closes_) + " connection(s) closed during the run: " + first_close_reason_);
  }
  return Drain("drain");
}

// Stop sending; wait until every send is answered and every Ok'd message
// arrived, or nothing arrives for --drain seconds.
bool Engine::Drain(const std::string& phase) {
  Log(phase + ": waiting for " + std::to_string(outstanding_) + " answers and " +
      std::to_string(expected_ > received_ ? expected_ - received_ : 0) + " deliveries");
  const std::int64_t t0 = NowNs();
  const bool was_failed = failed_;
  failed_ = false;  // keep collecting after a failure (e.g. a dead server) to count what was lost
  Loop([&] { return outstanding_ == 0 && received_ + injected_drops_ >= expected_; }, o_.drain, phase);
  failed_ = failed_ || was_failed;
  r_->drain_s = Sec(NowNs() - t0);
  FinishCheck();
  return !failed_;
}

void Engine::FinishCheck() {
  // Messages held back by --inject-reorder with nothing after them.
  for (User& u : users_) {
    for (RecvStream& s : u.streams) {
      if (s.has_held) {
        s.has_held = false;
        Record(s, s.held_counter, s.held_send);
      }
    }
  }
  std::vector<std::vector<std::uint64_t>> prefix(users_.size());
  for (int s : senders_) prefix[static_cast<std::size_t>(s)] = OkPrefix(users_[static_cast<std::size_t>(s)].state);
  r_->lost = 0;
  for (std::size_t ri = 0; ri < users_.size(); ++ri) {
    User& r = users_[ri];
    for (std::size_t slot = 0; slot < r.streams.size(); ++slot) {
      int s = r.group >= 0 ? groups_[static_cast<std::size_t>(r.group)].senders[slot] : r.peer;
      if (s < 0 || static_cast<std::size_t>(s) == ri) continue;
      const User& su = users_[static_cast<std::size_t>(s)];
      r_->lost += CountLost(r.streams[slot].st, su.state, prefix[static_cast<std::size_t>(s)]);
    }
  }
  r_->total_unanswered = 0;
  for (int s : senders_) {
    for (std::uint8_t st : users_[static_cast<std::size_t>(s)].state) r_->total_unanswered += st == kSendPending;
  }
  r_->total_expected = expected_;
  r_->total_delivered = received_;
  if (injected_drops_) r_->notes.push_back("--inject-loss dropped " + std::to_string(injected_drops_) + " received messages");
}

// ------------------------------------------------------------------ workloads

bool Engine::RunDm() {
  const int n = o_.users - o_.users % 2;
  if (n < 2) {
    Fail("dm needs at least 2 users");
    return false;
  }
  std::vector<int> all, requesters;
  for (int i = 0; i < n; ++i) {
    User& u = users_[static_cast<std::size_t>(i)];
    u.peer = i ^ 1;
    u.slot = 0;
    u.streams.resize(1);
    all.push_back(i);
    senders_.push_back(i);
    if (i % 2 == 0) requesters.push_back(i);
  }
  std::int64_t t0 = NowNs();
  if (!Sessions(all, true, true, false, o_.concurrency, "register+login")) return false;
  Metric("setup_register_login_s", Sec(NowNs() - t0));
  if (!MakeFriends(requesters)) return false;
  recipients_per_send_ = 1;
  return MeasureMessages(o_.rate > 0);
}

bool Engine::RunGroup() {
  if (o_.groups < 1 || o_.group_size < 2) {
    Fail("group needs --groups >= 1 and --group-size >= 2");
    return false;
  }
  const int k = std::min(o_.senders, o_.group_size);
  groups_.resize(static_cast<std::size_t>(o_.groups));
  std::vector<int> all;
  for (int gi = 0; gi < o_.groups; ++gi) {
    Group& g = groups_[static_cast<std::size_t>(gi)];
    for (int m = 0; m < o_.group_size; ++m) {
      const int ui = gi * o_.group_size + m;
      User& u = users_[static_cast<std::size_t>(ui)];
      u.group = gi;
      u.streams.resize(static_cast<std::size_t>(k));
      g.members.push_back(ui);
      if (m < k) {
        u.slot = m;
        g.senders.push_back(ui);
        senders_.push_back(ui);
      }
      all.push_back(ui);
    }
  }
  std::int64_t t0 = NowNs();
  if (!Sessions(all, true, true, false, o_.concurrency, "register+login")) return false;
  Metric("setup_register_login_s", Sec(NowNs() - t0));
  if (!MakeGroups()) return false;
  recipients_per_send_ = o_.group_size - 1;
  return MeasureMessages(o_.rate > 0);
}

bool Engine::RunOffline() {
  const int n = o_.users - o_.users % 2;
  if (n < 2) {
    Fail("offline needs at least 2 users");
    return false;
  }
  // Even users send; odd users are their friends and go offline.
  std::vector<int> all, requesters, recipients;
  for (int i = 0; i < n; ++i) {
    User& u = users_[static_cast<std::size_t>(i)];
    u.peer = i ^ 1;
    all.push_back(i);
    if (i % 2 == 0) {
      u.slot = 0;
      senders_.push_back(i);
      requesters.push_back(i);
    } else {
      u.streams.resize(1);
      recipients.push_back(i);
    }
  }
  std::int64_t t0 = NowNs();
  if (!Sessions(all, true, true, false, o_.concurrency, "register+login")) return false;
  Metric("setup_register_login_s", Sec(NowNs() - t0));
  if (!MakeFriends(requesters)) return false;
  for (int i : recipients) {
    if (users_[static_cast<std::size_t>(i)].conn) CloseConn(users_[static_cast<std::size_t>(i)].conn, true, "");
  }
  // Let the server see them go, so the sends below take the stored path.
  Pause(0.5);
  r_->has_messages = true;
  r_->senders = static_cast<int>(senders_.size());
  recipients_per_send_ = 1;
  per_sender_limit_ = o_.messages;
  Log("store: " + std::to_string(senders_.size()) + " senders to offline friends");
  const std::int64_t ts = NowNs();
  now_ = ts;
  win_start_ = ts;
  win_end_ = o_.messages > 0 ? ts + Ns(3600) : ts + Ns(o_.duration);
  send_end_ = win_end_;
  win_started_ = true;
  win_ended_ = false;
  snap_start_ = TakeSnap();
  sending_ = true;
  for (int s : senders_) {
    for (int w = 0; w < o_.window; ++w) {
      if (o_.messages == 0 || users_[static_cast<std::size_t>(s)].next_counter < static_cast<std::uint64_t>(o_.messages)) {
        SendMsg(s, ts);
      }
    }
  }
  std::int64_t t_last_ok = ts;
  std::uint64_t last_oked = 0;
  Loop(
      [&] {
        if (r_->total_oked != last_oked) {
          last_oked = r_->total_oked;
          t_last_ok = now_;
        }
        if (o_.messages > 0) return outstanding_ == 0;
        return win_ended_;
      },
      o_.messages > 0 ? o_.setup_timeout : 0, "store");
  sending_ = false;
  snap_end_ = TakeSnap();
  win_ended_ = true;
  win_end_ = snap_end_.t;
  FillCpu(snap_start_, snap_end_, "");
  // Answers still in flight at the end of a timed phase.
  Loop([&] { return outstanding_ == 0; }, o_.drain, "store-drain");
  // --messages: everything Ok'd, until the last Ok; timed: Oks inside the window.
  const double store_s = Sec((o_.messages > 0 ? t_last_ok : win_end_) - ts);
  const std::uint64_t stored = o_.messages > 0 ? r_->total_oked : r_->oked;
  Metric("stored_msgs", static_cast<double>(stored));
  Metric("store_phase_s", store_s);
  Metric("stored_msgs_per_s", store_s > 0 ? static_cast<double>(stored) / store_s : 0);
  if (failed_) return false;

  // The recipients come back: log in, receive everything, acknowledge.
  const std::uint64_t before = received_;
  const std::int64_t td = NowNs();
  Snap a = TakeSnap();
  win_end_ = td + Ns(3600);  // win_start_ stays at the store phase's start: latency = time in the store
  Sessions(recipients, false, true, false, o_.concurrency, "re-login");
  const double login_s = Sec(NowNs() - td);
  Drain("offline-drain");
  Snap b = TakeSnap();
  const std::int64_t t_done = std::max(t_last_delivery_, td);
  const double drain_s = Sec(t_done - td);
  Metric("drain_recipients", static_cast<double>(recipients.size()));
  Metric("drain_relogin_all_synced_s", login_s);
  Metric("drained_msgs", static_cast<double>(received_ - before));
  Metric("drain_s", drain_s);
  Metric("drained_msgs_per_s", drain_s > 0 ? static_cast<double>(received_ - before) / drain_s : 0);
  FillCpu(a, b, "drain_");
  r_->delivered = 0;
  r_->drain_s = drain_s;
  r_->notes.push_back("offline: the measured window is the store phase (recipients offline); delivery latency is how long "
                      "messages waited in the store");
  return !failed_;
}

bool Engine::RunLogin() {
  std::vector<int> all;
  for (int i = 0; i < o_.users; ++i) all.push_back(i);
  std::int64_t t0 = NowNs();
  if (!Sessions(all, true, false, true, o_.concurrency, "register")) return false;
  Metric("setup_register_s", Sec(NowNs() - t0));
  // Settle: the registration connections' closes reach the server.
  Pause(0.3);
  Snap a = TakeSnap();
  const std::int64_t t1 = NowNs();
  now_ = t1;
  // Every user at once (all connects and logins in flight together).
  Sessions(all, false, true, false, 0, "login");
  Snap b = TakeSnap();
  Histogram login, synced;
  std::int64_t last = t1;
  for (int i : all) {
    const User& u = users_[static_cast<std::size_t>(i)];
    login.Record(u.t_logged_in - u.t_connect);
    synced.Record(u.t_synced - u.t_connect);
    last = std::max(last, u.t_logged_in);
  }
  FillCpu(a, b, "");
  const double s = Sec(last - t1);
  Metric("logins", static_cast<double>(all.size()));
  Metric("login_all_s", s);
  Metric("logins_per_s", s > 0 ? static_cast<double>(all.size()) / s : 0);
  Metric("login_latency_p50_ms", static_cast<double>(login.Percentile(0.5)) / 1e6);
  Metric("login_latency_p99_ms", static_cast<double>(login.Percentile(0.99)) / 1e6);
  Metric("login_latency_max_ms", static_cast<double>(login.max()) / 1e6);
  Metric("login_to_syncdone_p50_ms", static_cast<double>(synced.Percentile(0.5)) / 1e6);
  Metric("login_to_syncdone_p99_ms", static_cast<double>(synced.Percentile(0.99)) / 1e6);
  r_->notes.push_back("login: latency = connect start to LoggedIn (Hello + Login pipelined, receive=true)");
  return !failed_;
}

bool Engine::RunIdle() {
  std::vector<int> all;
  for (int i = 0; i < o_.users; ++i) all.push_back(i);
  auto rss = [&] {
    double m = 0;
    for (int pid : o_.server_pids) m += SampleProc(pid).rss_mib;
    return m;
  };
  Metric("server_rss_empty_mib", rss());
  std::int64_t t0 = NowNs();
  if (!Sessions(all, true, false, true, o_.concurrency, "register")) return false;
  Metric("setup_register_s", Sec(NowNs() - t0));
  Pause(1.0);
  const double before = rss();
  Metric("server_rss_before_mib", before);
  t0 = NowNs();
  if (!Sessions(all, false, true, false, o_.concurrency, "login")) return false;
  Metric("setup_login_all_s", Sec(NowNs() - t0));
  Snap a = TakeSnap();
  Log("idle for " + Num(o_.duration) + " s");
  // Idle: nothing but the sockets.
  const std::int64_t until = NowNs() + Ns(o_.duration);
  Loop([&] { return now_ >= until; }, 0, "idle");
  Snap b = TakeSnap();
  FillCpu(a, b, "");
  const double after = rss();
  std::size_t open = 0;
  for (const User& u : users_) open += u.conn != nullptr && !u.conn->closed;
  Metric("idle_connections", static_cast<double>(open));
  Metric("server_rss_after_mib", after);
  Metric("server_rss_per_connection_bytes", open ? (after - before) * 1048576.0 / static_cast<double>(open) : 0);
  if (open != all.size()) Fail(std::to_string(all.size() - open) + " idle connections were closed");
  return !failed_;
}

bool Engine::Run() {
  bool ok = RunWorkload();
  if (o_.tls) {
    Metric("tls_handshakes", static_cast<double>(tls_handshakes_));
    Metric("tls_handshake_p50_ms", static_cast<double>(tls_handshake_ns_.Percentile(0.5)) / 1e6);
    Metric("tls_handshake_p99_ms", static_cast<double>(tls_handshake_ns_.Percentile(0.99)) / 1e6);
  }
  for (const auto& [msg, n] : errors_) r_->errors.push_back(n > 1 ? msg + " (x" + std::to_string(n) + ")" : msg);
  return ok && r_->ok;
}

bool Engine::RunWorkload() {
  if (!Init()) return false;
  int n = o_.users;
  if (o_.workload == "group") n = o_.groups * o_.group_size;
  if (n <= 0 || n > 10000000) {
    Fail("bad number of users");
    return false;
  }
  r_->users = n;
  r_->servers = static_cast<int>(o_.servers.size());
  users_.resize(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    User& u = users_[static_cast<std::size_t>(i)];
    u.name = prefix_ + "-" + std::to_string(i);
    int placed = i;
    if (o_.pairs_together) placed = i / 2;
    if (o_.groups_together) placed = i / o_.group_size;
    if (o_.groups_apart) placed = i / o_.group_size + (i % o_.group_size < std::min(o_.senders, o_.group_size) ? 0 : 1);
    u.server = placed % static_cast<int>(o_.servers.size());
    u.box = crypto::NewBoxKeyPair();
    u.sign = crypto::NewSignKeyPair();
  }
  if (users_.back().name.size() > 32) {
    Fail("--prefix too long: user names must be at most 32 characters");
    return false;
  }
  bool ok = false;
  if (o_.workload == "dm") {
    ok = RunDm();
  } else if (o_.workload == "group") {
    ok = RunGroup();
  } else if (o_.workload == "offline") {
    ok = RunOffline();
  } else if (o_.workload == "login") {
    ok = RunLogin();
  } else if (o_.workload == "idle") {
    ok = RunIdle();
  } else {
    Fail("unknown workload '" + o_.workload + "'");
  }
  for (auto& c : conns_) {
    if (!c->closed) CloseConn(c.get(), true, "");
  }
  return ok;
}

}  // namespace

bool RunBench(const Options& opt, Results* r) {
  r->opt = opt;
  Engine e(opt, r);
  return e.Run();
}

}  // namespace fastchat::bench
