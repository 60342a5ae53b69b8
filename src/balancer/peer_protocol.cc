#include "peer_protocol.h"

#include <spdlog/spdlog.h>

#include "common/host_port.h"
#include "auth.h"

namespace fastchat::balancer {
namespace {

const char* BodyName(Envelope::BodyCase c) {
  switch (c) {
    case Envelope::kHello: return "Hello";
    case Envelope::kAuthOk: return "AuthOk";
    case Envelope::kServerAssignment: return "ServerAssignment";
    default: return "this frame";
  }
}

}  // namespace

PeerProtocol::Result PeerProtocol::OnFrame(std::string_view payload, ServerTable::Clock::time_point now) {
  Result r;
  Envelope env;
  if (!env.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    Error(BAD_FRAME, "frame does not parse as fastchat.balancer.Envelope", &r);
    return r;
  }
  switch (env.body_case()) {
    case Envelope::kServerAuth: Auth(env.server_auth(), &r); break;
    case Envelope::kServerReport: Report(env.server_report(), now, &r); break;
    case Envelope::kGetServer: GetServer(now, &r); break;
    case Envelope::kError: break;  // never answer an error with an error
    case Envelope::BODY_NOT_SET: Error(UNKNOWN_TYPE, "frame has no known body", &r); break;
    default: Error(BAD_REQUEST, std::string("the balancer does not accept ") + BodyName(env.body_case()), &r); break;
  }
  return r;
}

void PeerProtocol::Error(ErrorCode code, const std::string& message, Result* r) {
  Envelope env;
  env.mutable_error()->set_code(code);
  env.mutable_error()->set_message(message);
  r->replies.push_back(std::move(env));
}

void PeerProtocol::Auth(const ServerAuth& auth, Result* r) {
  if (auth_tried_) {
    Error(BAD_REQUEST, "ServerAuth may be sent only once per connection", r);
    return;
  }
  auth_tried_ = true;
  if (!ValidServerId(auth.server_id())) {
    spdlog::warn("refused server from {}: invalid server_id", peer_);
    Error(BAD_REQUEST, "server_id must be 1-64 printable ASCII characters", r);
    r->close_after = true;
    return;
  }
  if (!AuthVerify(shared_.auth_key, challenge_ + binding_, auth.server_id(), auth.mac())) {
    spdlog::warn("refused server '{}' from {}: wrong cluster secret", auth.server_id(), peer_);
    Error(BAD_CREDENTIALS, "wrong cluster secret", r);
    r->close_after = true;
    return;
  }
  server_id_ = auth.server_id();
  spdlog::info("server '{}' authenticated from {}", server_id_, peer_);
  Envelope reply;
  reply.mutable_auth_ok()->set_expire_ms(static_cast<std::uint32_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(shared_.table.expire_after()).count()));
  r->replies.push_back(std::move(reply));
}

void PeerProtocol::Report(const ServerReport& rep, ServerTable::Clock::time_point now, Result* r) {
  if (server_id_.empty()) {
    Error(NOT_AUTHENTICATED, "send ServerAuth before ServerReport", r);
    return;
  }
  if (rep.server_id() != server_id_) {
    Error(BAD_REQUEST, "this connection authenticated as '" + server_id_ + "'", r);
    return;
  }
  LoadReport report;
  report.server_id = server_id_;
  report.client_address = rep.client_address();
  report.connections = rep.connections();
  report.cpu_percent = rep.cpu_percent();
  report.msgs_per_sec = rep.msgs_per_sec();
  report.load = rep.load();
  // Two live connections taking turns to report different addresses for one
  // id: two servers share a name, and clients go to either. Say so, once.
  const ServerTable::Entry* before = shared_.table.Find(server_id_);
  if (before != nullptr && before->owner != id_ && !warned_conflict_ &&
      report.client_address != FormatHostPort(before->host, before->port)) {
    spdlog::warn("server id '{}' is reported from two connections with different addresses; "
                 "is it configured on two servers?", server_id_);
    warned_conflict_ = true;
  }
  bool added = false;
  Status st = shared_.table.Update(report, id_, now, &added);
  if (!st.ok()) {
    Error(BAD_REQUEST, st.message(), r);
    return;
  }
  if (added) {
    const ServerTable::Entry* e = shared_.table.Find(server_id_);
    spdlog::info("server '{}' is live at {} (load {:.2f})", server_id_, FormatHostPort(e->host, e->port), e->load);
  }
}

void PeerProtocol::GetServer(ServerTable::Clock::time_point now, Result* r) {
  for (const std::string& id : shared_.table.Expire(now)) {
    spdlog::info("server '{}' sent no report for {} ms: no longer assigned", id,
                 std::chrono::duration_cast<std::chrono::milliseconds>(shared_.table.expire_after()).count());
  }
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const ServerTable::Entry* e = shared_.table.Pick(uniform(shared_.rng));
  if (e == nullptr) {
    Error(NO_SERVER, "no chat server is available", r);
    return;
  }
  Envelope reply;
  ServerAssignment* a = reply.mutable_server_assignment();
  a->set_server_id(e->server_id);
  a->set_host(e->host);
  a->set_port(e->port);
  r->replies.push_back(std::move(reply));
}

}  // namespace fastchat::balancer
