// PeerProtocol: what the balancer does with each frame one connection sends,
// without the socket (Session owns one per connection and sends what it
// says; fuzz/balancer_fuzz.cc drives it directly).
//
// Handles ServerAuth (once per connection; a valid MAC over challenge ||
// TLS binding || server_id makes the connection a server's), ServerReport
// (from an authenticated server, for its own id) and GetServer, and answers
// a frame that does not parse or has no known body with an Error, as
// proto/balancer.proto says.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "balancer.pb.h"
#include "server_table.h"

namespace fastchat::balancer {

class PeerProtocol {
 public:
  // What the balancer shares between connections.
  struct Shared {
    ServerTable& table;
    const std::string& auth_key;  // AuthKey(cluster secret)
    std::mt19937_64& rng;
  };
  // What to do after one frame: send `replies` in order, then close once they
  // are written if `close_after`.
  struct Result {
    std::vector<Envelope> replies;
    bool close_after = false;
  };

  // `challenge` went out in this connection's Hello; `binding` is its TLS
  // channel binding; `id` identifies the connection in the table; `peer`
  // names it in logs.
  PeerProtocol(Shared shared, std::uint64_t id, std::string peer, std::string challenge, std::string binding)
      : shared_(shared), id_(id), peer_(std::move(peer)), challenge_(std::move(challenge)),
        binding_(std::move(binding)) {}

  Result OnFrame(std::string_view payload, ServerTable::Clock::time_point now);

  // The server this connection authenticated as (empty: none).
  const std::string& server_id() const { return server_id_; }

 private:
  void Auth(const ServerAuth& auth, Result* r);
  void Report(const ServerReport& report, ServerTable::Clock::time_point now, Result* r);
  void GetServer(ServerTable::Clock::time_point now, Result* r);
  static void Error(ErrorCode code, const std::string& message, Result* r);

  Shared shared_;
  std::uint64_t id_;
  std::string peer_;
  std::string challenge_;
  std::string binding_;
  bool auth_tried_ = false;
  bool warned_conflict_ = false;
  std::string server_id_;
};

}  // namespace fastchat::balancer
