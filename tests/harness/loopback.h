// Test harness: plain TCP sockets on 127.0.0.1 for the in-test proxies
// (Relay, TamperProxy).
#pragma once

#include <cstdint>

namespace fastchat::testing {

// A listening socket on 127.0.0.1:0; sets *port. Throws on failure.
int ListenOnLoopback(std::uint16_t* port);
// A socket connected to 127.0.0.1:port, or -1.
int ConnectToLoopback(std::uint16_t port);

// A self-pipe that wakes a poll() loop (to stop it). Throws on failure.
class Waker {
 public:
  Waker();
  ~Waker();
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;
  int fd() const { return fds_[0]; }  // readable once Wake() was called
  void Wake();

 private:
  int fds_[2] = {-1, -1};
};

}  // namespace fastchat::testing
