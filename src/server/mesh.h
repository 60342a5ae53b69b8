// Mesh: this server's links to the other servers of a cluster.
//
// Servers find each other in the shared database's server table (each
// upserts its own row every second and dials every live server whose id sorts
// after its own, so each pair has one link). A link is authenticated both ways
// by challenge-response with a MAC keyed by the cluster secret; the secret
// never crosses the wire. Over a link, servers announce which users have
// their receiving session where (Presence), and forward stored deliveries to
// the server hosting the recipients (Forward): a group message crosses each
// link once, with that server's recipients. A link that dies (no frame for
// 4 s, or a socket error) is dropped with everything it announced; the
// pending store still holds every delivery, so nothing is lost with it.
//
// Runs on the server's event-loop thread; no locking.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

#include "fastchat/status.h"
#include "fastchat/store.h"
#include "directory.h"
#include "remote_presence.h"
#include "router.h"
#include "server.h"

namespace fastchat::mesh {
class MeshFrame;
}

namespace fastchat::server {

struct PeerLink;

class Mesh {
 public:
  explicit Mesh(Server::Impl& server);
  ~Mesh();

  // Listens on config.mesh_host:mesh_port (sets *port) and starts discovery.
  Status Start(std::uint16_t* port);
  void Stop();

  // A local receiving session for `user` started: tells every peer and calls
  // `announced` once all of them have applied it (or after 1 s, or at once
  // with no peers).
  void UserOnline(std::uint64_t user, std::function<void()> announced);
  // A local receiving session for `user` ended.
  void UserOffline(std::uint64_t user);

  // Tells every peer that these facts changed in the shared store.
  void AnnounceChanged(const Facts& changed);

  // The link to the server hosting `user`'s receiving session, or null.
  PeerLink* Where(std::uint64_t user) const;
  // Sends one Forward with `targets` over `link`.
  void Forward(PeerLink* link, const std::vector<Delivery>& targets, const std::shared_ptr<const std::string>& event);

  std::size_t link_count() const { return links_.size(); }

 private:
  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> DiscoveryLoop();
  asio::awaitable<void> Dial(ServerRecord peer);
  struct HandshakeSlot;
  // `slot`: an accepted link's place among the unauthenticated ones (null
  // for links this server dialled).
  asio::awaitable<void> RunLink(std::shared_ptr<PeerLink> link, bool dialer, std::string expected_id,
                                std::shared_ptr<HandshakeSlot> slot = nullptr);
  asio::awaitable<void> WriteLink(std::shared_ptr<PeerLink> link);
  asio::awaitable<void> KeepAlive(std::shared_ptr<PeerLink> link);
  bool LinkUp(const std::shared_ptr<PeerLink>& link);
  void LinkDown(PeerLink* link);
  void OnFrame(PeerLink& link, mesh::MeshFrame& frame);
  void Broadcast(const mesh::MeshFrame& frame);
  // Presence announcements waiting for PresenceAcks.
  struct PendingAnnounce {
    std::unordered_set<std::string> waiting_for;  // peer ids
    std::function<void()> announced;
  };
  void Acked(std::uint64_t token, const std::string& peer_id);
  void FinishAnnounce(std::uint64_t token);
  // Every receiving session here reads all its pending rows from the store
  // again (see LinkUp and LinkDown for why).
  void CatchUpLocalSessions();

  Server::Impl& server_;
  asio::ip::tcp::acceptor acceptor_;
  std::string mac_key_;
  bool stopping_ = false;
  std::unordered_map<std::string, std::shared_ptr<PeerLink>> links_;  // authenticated links by peer id
  std::unordered_set<std::string> dialing_;
  std::unordered_set<std::shared_ptr<PeerLink>> all_;  // every open link, authenticated or not
  std::shared_ptr<int> life_ = std::make_shared<int>(0);  // expires with the Mesh
  std::size_t handshaking_ = 0;                          // accepted links not authenticated yet
  std::unordered_map<std::string, std::size_t> handshaking_from_;  // ... by source address
  RemotePresence<PeerLink> remote_users_;
  std::unordered_map<std::uint64_t, PendingAnnounce> announces_;
  std::uint64_t next_token_ = 0;
};

}  // namespace fastchat::server
