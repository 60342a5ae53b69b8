// ReporterHandshake: what a chat server's BalancerReporter makes of each
// frame a balancer sends, without the socket (the reporter's connection
// reads and writes; fuzz/balancer_peer_fuzz.cc plays a hostile balancer
// against it).
//
// The exchange (proto/balancer.proto): the balancer's Hello, this server's
// ServerAuth, the balancer's AuthOk or Error; after AuthOk the balancer only
// sends Errors about reports it refused.
//
// Promises, for any bytes:
// - OnHello is OK only for the first frame, a version-1 Hello with a
//   kChallengeBytes challenge; *auth is then the ServerAuth to send, with
//   mac = AuthMac(key, challenge || binding, server_id) (auth.h).
// - OnAuthReply is OK only for the frame after an accepted hello, an AuthOk;
//   an Error{BAD_CREDENTIALS} is kBadCredentials, a frame that does not
//   parse kBadFrame, anything else kBadRequest.
// - OnLater, once registered: an Error is OK with its text, quoted, in
//   *refused (for the log); a frame that does not parse
//   is kBadFrame; any other body is ignored (OK, *refused empty).
// - A balancer's text (in *refused, or an Error's in a refusal's message) is
//   made safe for a log line first (Printable: escaped, cut at 64 bytes).
// - Every refusal is final: after one, and for a call out of this order,
//   every call is refused and registered() stays false.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "fastchat/status.h"

namespace fastchat::balancer {

class ReporterHandshake {
 public:
  // `key` is AuthKey(cluster secret); `binding` the connection's TLS channel
  // binding (kBalancerBindingLabel; empty on plain TCP).
  ReporterHandshake(std::string server_id, std::string key, std::string binding);

  // The balancer's first frame. On OK, *auth is the serialized ServerAuth
  // Envelope to send.
  Status OnHello(std::string_view payload, std::string* auth);
  // The frame after the ServerAuth went out. On OK, *expire_ms is what the
  // balancer said about silence.
  Status OnAuthReply(std::string_view payload, std::uint32_t* expire_ms);
  // Any frame after AuthOk.
  Status OnLater(std::string_view payload, std::string* refused);

  bool registered() const { return state_ == State::kRegistered; }

 private:
  enum class State { kHello, kAuthReply, kRegistered, kRefused };
  Status Refuse(Status why);

  std::string server_id_;
  std::string key_;
  std::string binding_;
  State state_ = State::kHello;
};

}  // namespace fastchat::balancer
