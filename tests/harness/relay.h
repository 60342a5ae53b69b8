// Test harness: a TCP relay on 127.0.0.1 that forwards every connection to a
// target port and records every byte it carries in either direction (a
// loopback packet capture without privileges).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "harness/loopback.h"

namespace fastchat::testing {

class Relay {
 public:
  // Listens on 127.0.0.1:0 and forwards to 127.0.0.1:target_port.
  explicit Relay(std::uint16_t target_port);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  std::uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // Every byte carried so far, both directions, in arrival order.
  std::string Captured() const;

 private:
  void Run();

  int listen_fd_ = -1;
  Waker wake_;
  std::uint16_t port_ = 0;
  std::uint16_t target_ = 0;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::string captured_;
  std::thread thread_;
};

}  // namespace fastchat::testing
