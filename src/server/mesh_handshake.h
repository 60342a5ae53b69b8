// MeshHandshake: one end of a mesh link's mutual authentication, without the
// socket (Mesh::RunLink sends and reads the frames; fuzz/mesh_handshake_fuzz.cc
// drives it directly).
//
// Each end sends PeerHello{version, its server id, a fresh 32-byte
// challenge}; on the other's hello it answers PeerAuth{mac}, mac =
// Mac(role | their challenge | my id | their id | binding) keyed by the
// cluster secret (role "dial" or "accept"; binding: the TLS channel binding,
// empty on plain TCP). A peer is admitted only by a PeerAuth that carries the
// MAC over this end's own challenge, with the roles swapped: proof that it
// holds the secret, on this TLS session, now.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fastchat/status.h"

namespace fastchat::mesh {
class MeshFrame;
}

namespace fastchat::server {

class MeshHandshake {
 public:
  enum class Role { kDial, kAccept };
  static constexpr std::uint32_t kVersion = 1;
  static constexpr std::size_t kChallengeBytes = 32;

  // `expected_id`: for a dialler, the server it meant to reach (ignored when
  // accepting). `mac_key` (crypto::MacKeyFromSecret) must outlive this
  // object. `challenge`: kChallengeBytes fresh random bytes.
  MeshHandshake(Role role, std::string my_id, std::string expected_id, std::string binding,
                std::string_view mac_key, std::string challenge);

  // The PeerHello to send first.
  void Hello(mesh::MeshFrame* hello) const;

  // The peer's first frame. OK: it is a usable PeerHello, and *auth is the
  // PeerAuth to send. Otherwise (not a hello, a wrong version or challenge
  // size, an empty id or this server's own, a dialled server answering under
  // another id, or not the first frame) an error saying which; the link
  // should close.
  Status OnHello(const mesh::MeshFrame& frame, mesh::MeshFrame* auth);

  // The peer's second frame. OK: the peer proved the cluster secret and is
  // peer_id(). kBadCredentials: a PeerAuth with a wrong MAC (another secret,
  // or a relay); other errors: anything else, or out of order. The link
  // should close unless OK.
  Status OnAuth(const mesh::MeshFrame& frame);

  bool authenticated() const { return state_ == State::kDone; }
  // The peer's id: set by a good hello, final once authenticated().
  const std::string& peer_id() const { return their_id_; }

 private:
  enum class State { kWaitHello, kWaitAuth, kDone, kFailed };
  Status Fail(Code code, std::string message);

  Role role_;
  std::string my_id_;
  std::string expected_id_;
  std::string binding_;
  std::string_view mac_key_;
  std::string challenge_;
  std::string their_id_;
  State state_ = State::kWaitHello;
};

// What each end MACs (exposed for tests): role | challenge | from | to | binding.
std::string MeshAuthMessage(std::string_view role, std::string_view challenge, std::string_view from,
                            std::string_view to, std::string_view binding);

}  // namespace fastchat::server
