#include "mesh.h"

#include <array>
#include <chrono>

#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "common/host_port.h"
#include "common/listen.h"
#include "fastchat/crypto.h"
#include "fastchat/deliver_frame.h"
#include "fastchat/frame.h"
#include "forward_frame.h"
#include "frame_queue.h"
#include "mesh.pb.h"
#include "mesh_handshake.h"
#include "mesh_inbox.h"
#include "presence_snapshot.h"
#include "server_impl.h"
#include "session.h"

namespace fastchat::server {

using asio::use_awaitable;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kHandshakeTimeout = std::chrono::seconds(5);
constexpr auto kPingEvery = std::chrono::milliseconds(1000);
constexpr auto kLinkDeadAfter = std::chrono::milliseconds(4000);
constexpr auto kDiscoverEvery = std::chrono::milliseconds(1000);
constexpr std::uint64_t kServerFreshMs = 5000;
// Before authentication only PeerHello and PeerAuth (well under 200 bytes)
// may arrive: a stranger on the mesh port pins at most this much.
constexpr std::uint32_t kMaxHandshakeFrame = 4096;
// Accepted links not yet authenticated (each for at most kHandshakeTimeout),
// in all and from one address: a flood from one address cannot take the
// slots a real peer needs.
constexpr std::size_t kMaxHandshakingLinks = 64;
constexpr std::size_t kMaxHandshakingPerSource = 8;
constexpr std::size_t kMaxLinkQueue = 64u << 20;
constexpr auto kAnnounceTimeout = std::chrono::milliseconds(1000);

std::uint64_t WallMs() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

std::string Framed(const mesh::MeshFrame& f) {
  std::string out;
  AppendFrame(f.SerializeAsString(), &out);
  return out;
}

}  // namespace

// One connection to another server.
struct PeerLink {
  PeerLink(net::Socket s, std::shared_ptr<net::TlsContext> tls)
      : stream(std::move(s), std::move(tls)), decoder(kMaxHandshakeFrame) {}

  void Close() {
    if (closed) return;
    closed = true;
    stream.Close();
    out.Stop();
  }

  // Reads the next whole frame into *frame; false on a parse error.
  asio::awaitable<bool> Read(mesh::MeshFrame* frame) {
    for (;;) {
      std::string_view payload;
      bool have = false;
      Status st = decoder.Next(&payload, &have);
      if (!st.ok()) throw std::runtime_error(st.ToString());
      if (have) {
        last_rx = Clock::now();
        co_return frame->ParseFromArray(payload.data(), static_cast<int>(payload.size()));
      }
      // What has arrived already is read at once (up to kMaxReadsAhead
      // buffers in a row, then the loop gets its turn): an awaited read
      // completes behind the writers of the members its last frames went
      // to, which would then send a few frames each (docs/performance.md,
      // "Again at `3d35875` and `cb09fc9`").
      std::size_t n = 0;
      if (reads_ahead < kMaxReadsAhead) {
        asio::error_code ec;  // would_block, or an error the awaited read below meets again
        n = stream.ReadNow(asio::buffer(buf), ec);
        if (ec) n = 0;
      }
      if (n > 0) {
        ++reads_ahead;
      } else {
        reads_ahead = 0;
        n = co_await stream.ReadSome(asio::buffer(buf));
      }
      decoder.Append(buf.data(), n);
    }
  }

  void Send(const mesh::MeshFrame& f) { out.Push(Framed(f)); }

  net::Stream stream;
  FrameQueue out;
  FrameDecoder decoder;
  std::array<char, 16 * 1024> buf{};
  static constexpr int kMaxReadsAhead = 8;
  int reads_ahead = 0;  // reads in a row that took what had arrived, not awaited
  std::string peer_id;  // set once authenticated
  std::string remote;   // address, for logs
  bool authed = false;
  bool closed = false;
  Clock::time_point last_rx = Clock::now();
};

Mesh::Mesh(Server::Impl& server)
    : server_(server), acceptor_(server.io), mac_key_(crypto::MacKeyFromSecret(server.config.cluster_secret)) {}

Mesh::~Mesh() { Stop(); }

Status Mesh::Start(std::uint16_t* port) {
  const ServerConfig& c = server_.config;
  if (c.cluster_secret.size() < 16) {
    return Status(Code::kBadRequest, "the cluster secret must be at least 16 bytes");
  }
  Status listening = Listen(acceptor_, c.mesh_host, c.mesh_port, "peers", port);
  if (!listening.ok()) return listening;
  if (server_.config.mesh_advertise.empty()) {
    server_.config.mesh_advertise = FormatHostPort(c.mesh_host, *port);
  }
  asio::co_spawn(server_.io, AcceptLoop(), asio::detached);
  asio::co_spawn(server_.io, DiscoveryLoop(), asio::detached);
  return Status::OK();
}

void Mesh::Stop() {
  if (stopping_) return;
  stopping_ = true;
  asio::error_code ec;
  acceptor_.close(ec);
  std::vector<std::shared_ptr<PeerLink>> all(all_.begin(), all_.end());
  for (auto& l : all) l->Close();
}

// An accepted link's place among the unauthenticated ones, given back when
// it authenticates or ends.
struct Mesh::HandshakeSlot {
  HandshakeSlot(Mesh& m, std::string from) : mesh(m), alive(m.life_), source(std::move(from)) {
    ++mesh.handshaking_;
    ++mesh.handshaking_from_[source];
  }
  ~HandshakeSlot() { Release(); }
  HandshakeSlot(const HandshakeSlot&) = delete;
  HandshakeSlot& operator=(const HandshakeSlot&) = delete;
  void Release() {
    if (!held) return;
    held = false;
    if (alive.expired()) return;  // a coroutine frame destroyed after the Mesh
    --mesh.handshaking_;
    auto it = mesh.handshaking_from_.find(source);
    if (--it->second == 0) mesh.handshaking_from_.erase(it);
  }
  Mesh& mesh;
  std::weak_ptr<int> alive;
  std::string source;
  bool held = true;
};

asio::awaitable<void> Mesh::AcceptLoop() {
  while (!stopping_) {
    asio::error_code ec;
    net::Socket socket = co_await acceptor_.async_accept(server_.io, asio::redirect_error(use_awaitable, ec));
    if (stopping_) break;
    if (ec) {
      spdlog::warn("mesh accept failed: {}", ec.message());
      asio::steady_timer t(server_.io, std::chrono::milliseconds(50));
      co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    const std::string source = socket.remote_endpoint(ec).address().to_string();
    if (ec || handshaking_ >= kMaxHandshakingLinks) {
      server_.NoteRefusal(Status(Code::kBusy, "mesh: too many links waiting to authenticate; closed one"));
      socket.close(ec);
      continue;
    }
    if (auto it = handshaking_from_.find(source);
        it != handshaking_from_.end() && it->second >= kMaxHandshakingPerSource) {
      server_.NoteRefusal(Status(Code::kBusy, "mesh: too many links waiting to authenticate from " + source));
      socket.close(ec);
      continue;
    }
    socket.set_option(asio::ip::tcp::no_delay(true), ec);
    auto link = std::make_shared<PeerLink>(std::move(socket), server_.config.tls);
    auto slot = std::make_shared<HandshakeSlot>(*this, source);
    asio::co_spawn(server_.io, RunLink(link, /*dialer=*/false, "", std::move(slot)), asio::detached);
  }
}

asio::awaitable<void> Mesh::DiscoveryLoop() {
  asio::steady_timer timer(server_.io);
  const std::string my_id = server_.config.server_id;
  while (!stopping_) {
    struct Out {
      Status st;
      std::vector<ServerRecord> servers;
    };
    ServerRecord me{my_id, server_.config.mesh_advertise, WallMs()};
    auto job = [me](Store& s) {
      Out out;
      out.st = s.UpsertServer(me);
      if (out.st.ok()) out.st = s.ListServers(&out.servers);
      return out;
    };
    Out o = co_await server_.store.Run(std::move(job));
    if (stopping_) break;
    if (!o.st.ok()) {
      spdlog::warn("mesh discovery: {}", o.st.ToString());
    } else {
      const std::uint64_t now = WallMs();
      for (const ServerRecord& peer : o.servers) {
        // Each pair has one link: the server whose id sorts first dials.
        if (peer.id <= my_id || peer.heartbeat_ms + kServerFreshMs < now) continue;
        if (links_.count(peer.id) || dialing_.count(peer.id)) continue;
        dialing_.insert(peer.id);
        asio::co_spawn(server_.io, Dial(peer), asio::detached);
      }
    }
    timer.expires_after(kDiscoverEvery);
    asio::error_code ec;
    co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
  }
}

asio::awaitable<void> Mesh::Dial(ServerRecord peer) {
  std::string host;
  try {
    // "[::1]:7001" too: brackets around an IPv6 host are not part of it.
    std::uint16_t port = 0;
    if (!ParseHostPort(peer.mesh_address, &host, &port) || port == 0) {
      throw std::runtime_error("bad mesh address '" + peer.mesh_address + "'");
    }
    asio::ip::tcp::resolver resolver(server_.io);
    const std::string service = std::to_string(port);
    auto endpoints = co_await resolver.async_resolve(host, service, use_awaitable);
    net::Socket socket(server_.io);
    co_await asio::async_connect(socket, endpoints, use_awaitable);
    socket.set_option(asio::ip::tcp::no_delay(true));
    auto link = std::make_shared<PeerLink>(std::move(socket), server_.config.peer_tls);
    dialing_.erase(peer.id);
    auto run = RunLink(link, /*dialer=*/true, peer.id);  // named: see offload.h
    co_await std::move(run);
    co_return;
  } catch (const std::exception& e) {
    spdlog::debug("mesh: dialing {} at {} failed: {}", peer.id, peer.mesh_address, e.what());
  }
  dialing_.erase(peer.id);
}

asio::awaitable<void> Mesh::RunLink(std::shared_ptr<PeerLink> link, bool dialer, std::string expected_id,
                                    std::shared_ptr<HandshakeSlot> slot) {
  all_.insert(link);
  asio::error_code ec;
  link->remote = link->stream.socket().remote_endpoint(ec).address().to_string();
  const std::string my_id = server_.config.server_id;
  // Handshake watchdog: an unauthenticated link gets a few seconds.
  auto watchdog = std::make_shared<asio::steady_timer>(server_.io, kHandshakeTimeout);
  watchdog->async_wait([link](const asio::error_code& e) {
    if (!e && !link->authed) link->Close();
  });
  // TLS first (its certificate is not checked: the cluster-secret MAC below,
  // bound to this TLS session, is what admits a peer).
  Status tls = co_await link->stream.Handshake(dialer ? net::Stream::Role::kClient : net::Stream::Role::kServer);
  if (!tls.ok() || link->closed) {
    if (!stopping_) spdlog::info("mesh: link from {} failed: {}", link->remote, tls.ok() ? "closed" : tls.ToString());
    link->Close();
    all_.erase(link);
    co_return;
  }
  const std::string binding = link->stream.ChannelBinding("EXPORTER-fastchat-mesh");
  asio::co_spawn(server_.io, WriteLink(link), asio::detached);
  try {
    MeshHandshake handshake(dialer ? MeshHandshake::Role::kDial : MeshHandshake::Role::kAccept, my_id, expected_id,
                            binding, mac_key_, crypto::RandomBytes(MeshHandshake::kChallengeBytes));
    mesh::MeshFrame f;
    handshake.Hello(&f);
    link->Send(f);

    f.Clear();
    if (!co_await link->Read(&f)) throw std::runtime_error("expected PeerHello");
    mesh::MeshFrame auth;
    if (Status st = handshake.OnHello(f, &auth); !st.ok()) throw std::runtime_error(st.message());
    link->Send(auth);

    f.Clear();
    if (!co_await link->Read(&f)) throw std::runtime_error("expected PeerAuth");
    if (Status st = handshake.OnAuth(f); !st.ok()) {
      if (st.code() != Code::kBadCredentials) throw std::runtime_error(st.message());
      spdlog::warn("mesh: refused server '{}' from {}: wrong cluster secret", handshake.peer_id(), link->remote);
      // Let our own PeerAuth reach the peer first, so it can log the refusal too.
      link->out.StopAfterFlush();
      all_.erase(link);
      co_return;
    }
    link->peer_id = handshake.peer_id();
    link->authed = true;
    link->decoder.set_max_frame(server_.config.mesh_max_frame);
    watchdog->cancel();
    if (slot) slot->Release();
    if (!LinkUp(link)) {
      link->Close();
      all_.erase(link);
      co_return;
    }
    asio::co_spawn(server_.io, KeepAlive(link), asio::detached);
    for (;;) {
      f.Clear();
      if (!co_await link->Read(&f)) throw std::runtime_error("malformed mesh frame");
      OnFrame(*link, f);
      if (link->closed) break;
    }
  } catch (const std::exception& e) {
    if (!stopping_) {
      spdlog::info("mesh: link {} ({}) ended: {}", link->peer_id.empty() ? "?" : link->peer_id, link->remote,
                   e.what());
    }
  }
  link->Close();
  LinkDown(link.get());
  all_.erase(link);
}

asio::awaitable<void> Mesh::WriteLink(std::shared_ptr<PeerLink> link) {
  try {
    co_await link->out.Run(link->stream);
  } catch (const std::exception&) {
  }
  link->Close();
}

asio::awaitable<void> Mesh::KeepAlive(std::shared_ptr<PeerLink> link) {
  asio::steady_timer timer(server_.io);
  mesh::MeshFrame ping;
  ping.mutable_ping();
  while (!link->closed) {
    timer.expires_after(kPingEvery);
    asio::error_code ec;
    co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
    if (link->closed) break;
    if (Clock::now() - link->last_rx > kLinkDeadAfter) {
      spdlog::warn("mesh: server {} silent for {} ms; dropping its link", link->peer_id,
                   std::chrono::duration_cast<std::chrono::milliseconds>(kLinkDeadAfter).count());
      link->Close();
      break;
    }
    link->Send(ping);
  }
}

bool Mesh::LinkUp(const std::shared_ptr<PeerLink>& link) {
  auto [it, inserted] = links_.emplace(link->peer_id, link);
  if (!inserted) {
    spdlog::info("mesh: already linked to {}; dropping the duplicate link", link->peer_id);
    return false;
  }
  spdlog::info("mesh: linked to server {} ({})", link->peer_id, link->remote);
  std::vector<std::uint64_t> users;
  users.reserve(server_.presence.size());
  server_.presence.ForEachUser([&users](std::uint64_t u) { users.push_back(u); });
  // While unlinked, the peer stored rows for our users without forwarding
  // them (it did not know they were here): once it has our snapshot, and so
  // forwards from then on, our sessions read what it stored meanwhile. The
  // snapshot goes in parts (a million users in one frame would pass the
  // peer's frame limit); only the last carries the token, so the peer
  // acknowledges once it has applied them all.
  const std::uint64_t token = ++next_token_;
  PendingAnnounce& pending = announces_[token];
  pending.waiting_for.insert(link->peer_id);
  pending.announced = [this] { CatchUpLocalSessions(); };
  for (const mesh::MeshFrame& part : PresenceSnapshot(users, server_.config.mesh_max_frame, token)) link->Send(part);
  auto timer = std::make_shared<asio::steady_timer>(server_.io, kAnnounceTimeout);
  timer->async_wait([this, token, timer](const asio::error_code&) { FinishAnnounce(token); });
  // Changes the peer announced while unlinked were missed: read the whole
  // directory again.
  server_.ReloadDirectory();
  return true;
}

void Mesh::LinkDown(PeerLink* link) {
  if (!link->authed) return;
  auto it = links_.find(link->peer_id);
  if (it == links_.end() || it->second.get() != link) return;
  const std::size_t dropped = remote_users_.Drop(link);
  spdlog::info("mesh: lost server {}; dropped its {} online users", link->peer_id, dropped);
  const std::string gone = link->peer_id;
  links_.erase(it);
  std::vector<std::uint64_t> tokens;
  for (const auto& [token, p] : announces_) tokens.push_back(token);
  for (std::uint64_t token : tokens) Acked(token, gone);
  // Forwards the peer sent us may have died with it (a killed server) or in
  // the network (a partition, found only when the link goes silent), while
  // our sessions went on receiving later rows from elsewhere: every session
  // here reads its pending rows again, from the lowest (the rows are in the
  // shared store; clients drop repeats by seq).
  if (!stopping_) CatchUpLocalSessions();
}

void Mesh::CatchUpLocalSessions() {
  std::vector<std::uint64_t> users;
  users.reserve(server_.presence.size());
  server_.presence.ForEachUser([&users](std::uint64_t u) { users.push_back(u); });
  for (std::uint64_t u : users) {
    if (Session* s = server_.presence.Find(u)) s->CatchUpFromStore(0);
  }
}

void Mesh::OnFrame(PeerLink& link, mesh::MeshFrame& frame) {
  MeshInput in = ReadMeshFrame(remote_users_, &link, frame);
  if (in.unexpected) {
    spdlog::warn("mesh: unexpected frame from {}; closing the link", link.peer_id);
    link.Close();
    return;
  }
  for (std::uint64_t u : in.displace) {
    if (Session* local = server_.presence.Find(u)) {
      local->CloseWith(Status(Code::kDisplaced, "you logged in from somewhere else"));
    }
  }
  if (in.ack_token != 0) {
    mesh::MeshFrame ack;
    ack.mutable_presence_ack()->set_token(in.ack_token);
    link.Send(ack);
  }
  if (in.acked) Acked(in.acked_token, link.peer_id);
  // A group entry forwarded to several members here: one Deliver frame for
  // all of them (as Router::Route builds for local ones).
  std::shared_ptr<const std::string> deliver_frame;
  if (in.group_id != 0 && in.deliver.size() > 1 && in.event) {
    deliver_frame = std::make_shared<const std::string>(DeliverFrame(in.deliver.front().second, *in.event, in.group_id));
  }
  for (const auto& [user, seq] : in.deliver) {
    if (Session* s = server_.presence.Find(user)) {
      const bool shared = deliver_frame && seq == in.deliver.front().second;
      s->Deliver(seq, in.event, in.group_id, in.prev_seq, /*forwarded=*/true, shared ? &deliver_frame : nullptr);
    }
  }
  if (in.refresh) server_.RefreshDirectory(std::move(in.changed));
  for (const auto& [user, seq] : in.resync) {
    if (Session* s = server_.presence.Find(user)) s->CatchUpFromStore(seq);
  }
}

void Mesh::Broadcast(const mesh::MeshFrame& frame) {
  std::string bytes = Framed(frame);
  for (auto& [id, link] : links_) link->out.Push(bytes);
}

void Mesh::AnnounceChanged(const Facts& changed) {
  if (links_.empty() || (changed.user_ids.empty() && changed.user_names.empty() && changed.friendships.empty() &&
                         changed.requests_to.empty() && changed.groups.empty())) {
    return;
  }
  mesh::MeshFrame f;
  auto* c = f.mutable_changed();
  for (std::uint64_t u : changed.user_ids) c->add_user_ids(u);
  for (const auto& [a, b] : changed.friendships) {
    auto* p = c->add_friendships();
    p->set_a(a);
    p->set_b(b);
  }
  for (std::uint64_t u : changed.requests_to) c->add_requests_to(u);
  for (std::uint64_t g : changed.groups) c->add_groups(g);
  Broadcast(f);
}

void Mesh::UserOnline(std::uint64_t user, std::function<void()> announced) {
  if (links_.empty()) {
    announced();
    return;
  }
  const std::uint64_t token = ++next_token_;
  PendingAnnounce& p = announces_[token];
  for (const auto& [id, link] : links_) p.waiting_for.insert(id);
  p.announced = std::move(announced);
  mesh::MeshFrame f;
  f.mutable_presence()->add_online(user);
  f.mutable_presence()->set_ack_token(token);
  Broadcast(f);
  // A peer that never answers must not hold the user's catch-up back long.
  auto timer = std::make_shared<asio::steady_timer>(server_.io, kAnnounceTimeout);
  timer->async_wait([this, token, timer](const asio::error_code&) { FinishAnnounce(token); });
}

void Mesh::Acked(std::uint64_t token, const std::string& peer_id) {
  auto it = announces_.find(token);
  if (it == announces_.end()) return;
  it->second.waiting_for.erase(peer_id);
  if (it->second.waiting_for.empty()) FinishAnnounce(token);
}

void Mesh::FinishAnnounce(std::uint64_t token) {
  auto it = announces_.find(token);
  if (it == announces_.end()) return;
  std::function<void()> announced = std::move(it->second.announced);
  announces_.erase(it);
  announced();
}

void Mesh::UserOffline(std::uint64_t user) {
  mesh::MeshFrame f;
  f.mutable_presence()->add_offline(user);
  Broadcast(f);
}

PeerLink* Mesh::Where(std::uint64_t user) const {
  return remote_users_.Where(user);
}

void Mesh::Forward(PeerLink* link, const std::vector<Delivery>& targets,
                   const std::shared_ptr<const std::string>& event) {
  if (link->closed) return;
  if (link->out.bytes() > kMaxLinkQueue) {
    // The peer is not keeping up: its recipients read from the store instead.
    mesh::MeshFrame r;
    for (const Delivery& d : targets) {
      r.mutable_resync()->add_users(d.user);
      r.mutable_resync()->add_seqs(d.seq);
    }
    link->Send(r);
    return;
  }
  const std::uint64_t group_id = targets.empty() ? 0 : targets.front().group_id;
  const std::uint64_t prev_seq = targets.empty() ? 0 : targets.front().prev_seq;
  link->out.Push(ForwardFramePrefix(targets, group_id, prev_seq, event->size()), event);
}

}  // namespace fastchat::server
