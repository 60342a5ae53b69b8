#include "harness/tamper_proxy.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "fastchat/frame.h"

namespace fastchat::testing {

std::string FrameOf(std::string_view payload) {
  std::string out;
  AppendFrame(payload, &out);
  return out;
}

std::string FrameOf(const wire::Envelope& env) { return FrameOf(env.SerializeAsString()); }

TamperProxy::TamperProxy(std::uint16_t server_port) : target_(server_port) {
  listen_fd_ = ListenOnLoopback(&port_);
  thread_ = std::thread([this] { Run(); });
}

TamperProxy::~TamperProxy() {
  stop_ = true;
  wake_.Wake();
  thread_.join();
  for (Conn* conn : conns_) {
    ::close(conn->client);
    ::close(conn->server);
    delete conn;
  }
  ::close(listen_fd_);
}

TamperProxy::HookGuard::~HookGuard() {
  std::lock_guard<std::mutex> lock(proxy_->hook_mu_);
  *slot_ = nullptr;
}

TamperProxy::HookGuard TamperProxy::OnServerFrame(Hook h) {
  std::lock_guard<std::mutex> lock(hook_mu_);
  server_hook_ = std::move(h);
  return HookGuard(this, &server_hook_);
}

TamperProxy::HookGuard TamperProxy::OnClientFrame(Hook h) {
  std::lock_guard<std::mutex> lock(hook_mu_);
  client_hook_ = std::move(h);
  return HookGuard(this, &client_hook_);
}

bool TamperProxy::WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t w = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(w));
  }
  return true;
}

int TamperProxy::InjectToClient(const std::string& user, std::string_view bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  for (Conn* c : conns_)
    if (c->user == user && c->receiving && WriteAll(c->client, bytes)) ++n;
  return n;
}

int TamperProxy::InjectToClientWhenReady(const std::string& user, std::string_view bytes, int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int n = InjectToClient(user, bytes);
    if (n > 0 || std::chrono::steady_clock::now() > end) return n;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Reads what is there from one side, and passes every whole frame through
// the hook to the other side.
bool TamperProxy::Pump(Conn& c, bool from_client) {
  char buf[65536];
  ssize_t n = ::recv(from_client ? c.client : c.server, buf, sizeof buf, 0);
  if (n <= 0) return false;
  std::string& pending = from_client ? c.from_client : c.from_server;
  pending.append(buf, static_cast<std::size_t>(n));
  for (;;) {
    if (pending.size() < 4) return true;
    std::size_t len = 0;
    for (int i = 0; i < 4; ++i) len = (len << 8) | static_cast<unsigned char>(pending[static_cast<std::size_t>(i)]);
    if (pending.size() < 4 + len) return true;
    std::string payload = pending.substr(4, len);
    pending.erase(0, 4 + len);
    wire::Envelope env;
    Out out;
    out.bytes = FrameOf(payload);
    if (env.ParseFromString(payload)) {
      if (from_client && env.has_login()) c.pending_receive = env.login().receive();
      if (!from_client && env.has_logged_in()) {
        std::lock_guard<std::mutex> lock(mu_);
        c.user = env.logged_in().name();
        c.receiving = c.pending_receive;
      }
      std::lock_guard<std::mutex> lock(hook_mu_);
      Hook& hook = from_client ? client_hook_ : server_hook_;
      if (hook) out = hook(c.user, env, payload);
    }
    if (from_client) {
      if (!WriteAll(c.server, out.bytes)) return false;
    } else {
      std::lock_guard<std::mutex> lock(mu_);
      if (!WriteAll(c.client, out.bytes)) return false;
    }
    if (out.close) return false;
  }
}

void TamperProxy::Run() {
  while (!stop_) {
    std::vector<pollfd> fds = {{wake_.fd(), POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    std::vector<Conn*> polled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      polled = conns_;
    }
    for (Conn* c : polled) {
      fds.push_back({c->client, POLLIN, 0});
      fds.push_back({c->server, POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), 1000) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents != 0) break;
    if (fds[1].revents & POLLIN) {
      int in = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (in >= 0) {
        int out = ConnectToLoopback(target_);
        if (out < 0) {
          ::close(in);
        } else {
          auto* c = new Conn;
          c->client = in;
          c->server = out;
          std::lock_guard<std::mutex> lock(mu_);
          conns_.push_back(c);
        }
      }
    }
    for (std::size_t i = 0; i < polled.size(); ++i) {
      Conn* c = polled[i];
      bool alive = true;
      for (int k = 0; k < 2 && alive; ++k)
        if (fds[2 + 2 * i + static_cast<std::size_t>(k)].revents != 0) alive = Pump(*c, k == 0);
      if (alive) continue;
      std::lock_guard<std::mutex> lock(mu_);
      ::close(c->client);
      ::close(c->server);
      std::erase(conns_, c);
      delete c;
    }
  }
}

}  // namespace fastchat::testing
