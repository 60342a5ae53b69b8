#include "mesh_handshake.h"

#include <utility>

#include "fastchat/crypto.h"
#include "mesh.pb.h"

namespace fastchat::server {

namespace {

std::string_view RoleName(MeshHandshake::Role r) { return r == MeshHandshake::Role::kDial ? "dial" : "accept"; }
MeshHandshake::Role Other(MeshHandshake::Role r) {
  return r == MeshHandshake::Role::kDial ? MeshHandshake::Role::kAccept : MeshHandshake::Role::kDial;
}

}  // namespace

std::string MeshAuthMessage(std::string_view role, std::string_view challenge, std::string_view from,
                            std::string_view to, std::string_view binding) {
  std::string m;
  m.reserve(role.size() + challenge.size() + from.size() + to.size() + binding.size() + 4);
  m.append(role).append(1, '|').append(challenge).append(1, '|').append(from).append(1, '|');
  m.append(to).append(1, '|').append(binding);
  return m;
}

MeshHandshake::MeshHandshake(Role role, std::string my_id, std::string expected_id, std::string binding,
                             std::string_view mac_key, std::string challenge)
    : role_(role), my_id_(std::move(my_id)), expected_id_(std::move(expected_id)), binding_(std::move(binding)),
      mac_key_(mac_key), challenge_(std::move(challenge)) {}

void MeshHandshake::Hello(mesh::MeshFrame* hello) const {
  hello->Clear();
  mesh::PeerHello* h = hello->mutable_hello();
  h->set_version(kVersion);
  h->set_server_id(my_id_);
  h->set_challenge(challenge_);
}

Status MeshHandshake::Fail(Code code, std::string message) {
  state_ = State::kFailed;
  return Status(code, std::move(message));
}

Status MeshHandshake::OnHello(const mesh::MeshFrame& frame, mesh::MeshFrame* auth) {
  if (state_ != State::kWaitHello) return Fail(Code::kBadRequest, "PeerHello out of order");
  if (!frame.has_hello()) return Fail(Code::kHandshakeRequired, "expected PeerHello");
  const mesh::PeerHello& h = frame.hello();
  if (h.version() != kVersion) return Fail(Code::kUnsupportedVersion, "unsupported mesh version");
  if (h.challenge().size() != kChallengeBytes) return Fail(Code::kBadRequest, "PeerHello challenge is not 32 bytes");
  if (h.server_id().empty() || h.server_id() == my_id_) {
    return Fail(Code::kBadRequest, "peer id '" + h.server_id() + "' unusable");
  }
  if (role_ == Role::kDial && h.server_id() != expected_id_) {
    return Fail(Code::kBadRequest, "dialed " + expected_id_ + " but it says it is " + h.server_id());
  }
  their_id_ = h.server_id();
  auth->Clear();
  auth->mutable_auth()->set_mac(
      crypto::Mac(MeshAuthMessage(RoleName(role_), h.challenge(), my_id_, their_id_, binding_), mac_key_));
  state_ = State::kWaitAuth;
  return Status::OK();
}

Status MeshHandshake::OnAuth(const mesh::MeshFrame& frame) {
  if (state_ != State::kWaitAuth) return Fail(Code::kBadRequest, "PeerAuth out of order");
  if (!frame.has_auth()) return Fail(Code::kHandshakeRequired, "expected PeerAuth");
  if (!crypto::MacVerify(frame.auth().mac(),
                         MeshAuthMessage(RoleName(Other(role_)), challenge_, their_id_, my_id_, binding_), mac_key_)) {
    return Fail(Code::kBadCredentials, "wrong cluster secret");
  }
  state_ = State::kDone;
  return Status::OK();
}

}  // namespace fastchat::server
