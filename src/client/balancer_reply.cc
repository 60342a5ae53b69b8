#include "balancer_reply.h"

#include "balancer.pb.h"

namespace fastchat::client {
namespace {

constexpr std::size_t kMaxHostBytes = 255;
constexpr std::size_t kMaxServerIdBytes = 64;

bool PrintableAscii(std::string_view s, char low) {
  for (char c : s) {
    if (c < low || c > 0x7e) return false;
  }
  return true;
}

}  // namespace

Status ReadBalancerReply(std::string_view payload, Assignment* out, bool* skip) {
  *skip = false;
  balancer::Envelope reply;
  if (!reply.ParseFromArray(payload.data(), static_cast<int>(payload.size())))
    return Status(Code::kBadFrame, "the balancer's reply does not parse");
  switch (reply.body_case()) {
    case balancer::Envelope::kHello:
      *skip = true;
      return Status::OK();
    case balancer::Envelope::kError: {
      const Code code = reply.error().code() == balancer::NO_SERVER ? Code::kNotFound : Code::kBadRequest;
      return Status(code, reply.error().message());
    }
    case balancer::Envelope::kServerAssignment: break;
    default: return Status(Code::kBadRequest, "the balancer answered GetServer with something else");
  }
  const balancer::ServerAssignment& a = reply.server_assignment();
  if (a.host().empty() || a.host().size() > kMaxHostBytes || !PrintableAscii(a.host(), 0x21) || a.port() == 0 ||
      a.port() > 65535)
    return Status(Code::kBadRequest, "assignment without a valid host and port");
  if (a.server_id().empty() || a.server_id().size() > kMaxServerIdBytes || !PrintableAscii(a.server_id(), 0x20))
    return Status(Code::kBadRequest, "assignment without a valid server id");
  out->host = a.host();
  out->port = static_cast<std::uint16_t>(a.port());
  out->server_id = a.server_id();
  return Status::OK();
}

}  // namespace fastchat::client
