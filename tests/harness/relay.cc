#include "harness/relay.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace fastchat::testing {
Relay::Relay(std::uint16_t target_port) : target_(target_port) {
  listen_fd_ = ListenOnLoopback(&port_);
  thread_ = std::thread([this] { Run(); });
}

Relay::~Relay() {
  stop_ = true;
  wake_.Wake();
  thread_.join();
  ::close(listen_fd_);
}

std::string Relay::Captured() const {
  std::lock_guard<std::mutex> lock(mu_);
  return captured_;
}

void Relay::Run() {
  // pairs[i] = {a, b}: bytes read from one go to the other.
  std::vector<std::pair<int, int>> pairs;
  while (!stop_) {
    std::vector<pollfd> fds = {{wake_.fd(), POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    for (auto& [a, b] : pairs) {
      fds.push_back({a, POLLIN, 0});
      fds.push_back({b, POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), 1000) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents != 0) break;
    // Only the pairs polled above have entries in fds; one accepted now is
    // polled from the next round on.
    const std::size_t polled = pairs.size();
    if (fds[1].revents & POLLIN) {
      int in = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (in >= 0) {
        int out = ConnectToLoopback(target_);
        if (out < 0) {
          ::close(in);
        } else {
          pairs.emplace_back(in, out);
        }
      }
    }
    std::vector<std::pair<int, int>> alive(pairs.begin() + static_cast<std::ptrdiff_t>(polled), pairs.end());
    for (std::size_t i = 0; i < polled; ++i) {
      auto [a, b] = pairs[i];
      bool dead = false;
      for (int k = 0; k < 2 && !dead; ++k) {
        const pollfd& p = fds[2 + 2 * i + static_cast<std::size_t>(k)];
        if (p.revents == 0) continue;
        int from = k == 0 ? a : b, to = k == 0 ? b : a;
        char buf[65536];
        ssize_t n = ::recv(from, buf, sizeof buf, 0);
        if (n <= 0) {
          dead = true;
          break;
        }
        {
          std::lock_guard<std::mutex> lock(mu_);
          captured_.append(buf, static_cast<std::size_t>(n));
        }
        for (ssize_t off = 0; off < n;) {
          ssize_t w = ::send(to, buf + off, static_cast<std::size_t>(n - off), MSG_NOSIGNAL);
          if (w <= 0) {
            dead = true;
            break;
          }
          off += w;
        }
      }
      if (dead) {
        ::close(a);
        ::close(b);
      } else {
        alive.emplace_back(a, b);
      }
    }
    pairs.swap(alive);
  }
  for (auto& [a, b] : pairs) {
    ::close(a);
    ::close(b);
  }
}

}  // namespace fastchat::testing
