#include "reporter_handshake.h"

#include "auth.h"
#include "balancer.pb.h"
#include "common/printable.h"

namespace fastchat::balancer {

ReporterHandshake::ReporterHandshake(std::string server_id, std::string key, std::string binding)
    : server_id_(std::move(server_id)), key_(std::move(key)), binding_(std::move(binding)) {}

Status ReporterHandshake::Refuse(Status why) {
  state_ = State::kRefused;
  return why;
}

Status ReporterHandshake::OnHello(std::string_view payload, std::string* auth) {
  if (state_ != State::kHello) return Refuse(Status(Code::kBadRequest, "a hello out of turn"));
  Envelope in;
  if (!in.ParseFromArray(payload.data(), static_cast<int>(payload.size())))
    return Refuse(Status(Code::kBadFrame, "balancer sent a frame that does not parse"));
  if (!in.has_hello() || in.hello().version() != 1 || in.hello().challenge().size() != kChallengeBytes)
    return Refuse(Status(Code::kBadRequest, "peer is not a version-1 fastchat balancer"));
  Envelope out;
  out.mutable_server_auth()->set_server_id(server_id_);
  out.mutable_server_auth()->set_mac(AuthMac(key_, in.hello().challenge() + binding_, server_id_));
  *auth = out.SerializeAsString();
  state_ = State::kAuthReply;
  return Status::OK();
}

Status ReporterHandshake::OnAuthReply(std::string_view payload, std::uint32_t* expire_ms) {
  if (state_ != State::kAuthReply) return Refuse(Status(Code::kBadRequest, "an answer to ServerAuth out of turn"));
  Envelope in;
  if (!in.ParseFromArray(payload.data(), static_cast<int>(payload.size())))
    return Refuse(Status(Code::kBadFrame, "balancer sent a frame that does not parse"));
  if (in.has_error()) {
    const Code code = in.error().code() == BAD_CREDENTIALS ? Code::kBadCredentials : Code::kBadRequest;
    return Refuse(Status(code, "balancer: '" + Printable(in.error().message()) + "'"));
  }
  if (!in.has_auth_ok())
    return Refuse(Status(Code::kBadRequest, "balancer answered ServerAuth with neither AuthOk nor Error"));
  *expire_ms = in.auth_ok().expire_ms();
  state_ = State::kRegistered;
  return Status::OK();
}

Status ReporterHandshake::OnLater(std::string_view payload, std::string* refused) {
  refused->clear();
  if (state_ != State::kRegistered) return Refuse(Status(Code::kBadRequest, "not registered"));
  Envelope in;
  if (!in.ParseFromArray(payload.data(), static_cast<int>(payload.size())))
    return Refuse(Status(Code::kBadFrame, "balancer sent a frame that does not parse"));
  if (in.has_error()) *refused = "'" + Printable(in.error().message()) + "'";
  return Status::OK();
}

}  // namespace fastchat::balancer
