// Test harness: a TCP proxy on 127.0.0.1 placed on a network link (e.g. a
// server's advertised mesh address) that the test can cut and restore, like
// a network partition it controls without privileges.
//
// Promises:
// - While restored, every accepted connection is forwarded to the current
//   target port, both ways, byte for byte.
// - Cut(): from then on no byte crosses in either direction: open
//   connections stay open but silent (a partition, not a reset: peers find
//   out only by their own timeouts), and new connections are accepted and
//   held silent too.
// - Restore(): closes every connection held or silenced by the cut (by now
//   the peers have given up on them) and forwards new connections again.
// - SetTarget() changes where new connections go (the proxied program was
//   restarted on another port).
// - Pause(): from its return no byte crosses but nothing is lost: bytes
//   wait in the sockets' buffers (a slow link); Resume() forwards them and
//   what follows, in order.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace fastchat::testing {

class LinkProxy {
 public:
  // Listens on 127.0.0.1:0; forwards to 127.0.0.1:target_port (0: set later
  // with SetTarget; connections before then are closed).
  explicit LinkProxy(std::uint16_t target_port = 0);
  ~LinkProxy();
  LinkProxy(const LinkProxy&) = delete;
  LinkProxy& operator=(const LinkProxy&) = delete;

  std::uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  void SetTarget(std::uint16_t target_port) { target_ = target_port; }
  void Cut();
  void Restore();
  void Pause();
  void Resume();
  bool cut() const { return cut_; }
  // Connections accepted so far.
  std::uint64_t accepted() const { return accepted_; }

 private:
  void Run();
  void Wake();

  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::uint16_t port_ = 0;
  std::atomic<std::uint16_t> target_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> cut_{false};
  std::atomic<bool> paused_{false};
  std::atomic<bool> pause_applied_{false};  // the thread polls without reading
  std::atomic<std::uint64_t> restore_generation_{0};
  std::atomic<std::uint64_t> accepted_{0};
  std::thread thread_;
};

}  // namespace fastchat::testing
