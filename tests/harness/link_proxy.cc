#include "harness/link_proxy.h"

#include "harness/loopback.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

namespace fastchat::testing {
namespace {

// Writes all of buf (blocking); false if the peer has gone.
bool WriteAll(int fd, const char* buf, std::size_t n) {
  for (std::size_t off = 0; off < n;) {
    ssize_t w = ::send(fd, buf + off, n - off, MSG_NOSIGNAL);
    if (w <= 0) return false;
    off += static_cast<std::size_t>(w);
  }
  return true;
}

}  // namespace

LinkProxy::LinkProxy(std::uint16_t target_port) : target_(target_port) {
  listen_fd_ = ListenOnLoopback(&port_);
  if (::pipe2(wake_, O_CLOEXEC) != 0) {
    ::close(listen_fd_);
    throw std::runtime_error(std::string("link proxy: ") + std::strerror(errno));
  }
  thread_ = std::thread([this] { Run(); });
}

LinkProxy::~LinkProxy() {
  stop_ = true;
  Wake();
  thread_.join();
  ::close(listen_fd_);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void LinkProxy::Wake() {
  char c = 0;
  if (::write(wake_[1], &c, 1) < 0) {
  }
}

void LinkProxy::Cut() {
  cut_ = true;
  Wake();
}

void LinkProxy::Restore() {
  ++restore_generation_;
  cut_ = false;
  Wake();
}

void LinkProxy::Pause() {
  paused_ = true;
  Wake();
  // Returns once the proxy thread forwards nothing more (it may have been
  // between a poll and its reads when the flag was set).
  while (!pause_applied_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void LinkProxy::Resume() {
  paused_ = false;
  Wake();
}

void LinkProxy::Run() {
  // pairs: {a, b}, bytes read from one go to the other. held: fds silenced
  // by a cut (connections from before it, and ones accepted during it).
  std::vector<std::pair<int, int>> pairs;
  std::vector<int> held;
  std::uint64_t seen_generation = 0;
  auto close_held = [&held] {
    for (int fd : held) ::close(fd);
    held.clear();
  };
  while (!stop_) {
    if (restore_generation_ != seen_generation) {
      seen_generation = restore_generation_;
      close_held();
    }
    const bool cut = cut_;
    if (cut) {
      for (auto& [a, b] : pairs) {
        held.push_back(a);
        held.push_back(b);
      }
      pairs.clear();
    }
    std::vector<pollfd> fds = {{wake_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    const bool paused = paused_;
    pause_applied_ = paused;
    const short events = paused ? 0 : POLLIN;  // paused: bytes wait in the sockets
    for (auto& [a, b] : pairs) {
      fds.push_back({a, events, 0});
      fds.push_back({b, events, 0});
    }
    if (::poll(fds.data(), fds.size(), 1000) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents != 0) {
      char buf[64];
      if (::read(wake_[0], buf, sizeof buf) < 0) {
      }
      continue;  // re-read the state before forwarding anything more
    }
    const std::size_t polled = pairs.size();
    if (fds[1].revents & POLLIN) {
      int in = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (in >= 0) {
        ++accepted_;
        if (cut_) {
          held.push_back(in);
        } else {
          int out = target_ == 0 ? -1 : ConnectToLoopback(target_);
          if (out < 0) {
            ::close(in);
          } else {
            pairs.emplace_back(in, out);
          }
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
        dead = n <= 0 || !WriteAll(to, buf, static_cast<std::size_t>(n));
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
  close_held();
}

}  // namespace fastchat::testing
