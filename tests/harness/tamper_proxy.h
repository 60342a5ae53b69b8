// Test harness: a hostile server. A man-in-the-middle between `fastchat`
// clients and a real --insecure-plain-tcp server: it reads the frames going
// each way, lets the test change, drop, repeat or cut every one of them, and
// can push frames of its own into a logged-in user's connection. Real
// servers make real ciphertexts; the proxy is what the server's operator (or
// anyone who took the server) can do to them.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "harness/loopback.h"
#include <vector>

#include "fastchat.pb.h"

namespace fastchat::testing {

// The bytes of one frame carrying `payload` / the serialized `env`.
std::string FrameOf(std::string_view payload);
std::string FrameOf(const wire::Envelope& env);

class TamperProxy {
 public:
  // What goes on in place of one frame: these bytes (none drops it; several
  // frames, or a frame cut short, are fine), then close both sides if asked.
  struct Out {
    std::string bytes;
    bool close = false;
  };
  // Called on the proxy's thread for every whole frame, with the user the
  // connection logged in as ("" before LoggedIn) and the frame parsed (an
  // unparsable frame is passed through untouched). The default forwards.
  using Hook = std::function<Out(const std::string& user, wire::Envelope& env, std::string_view payload)>;

  // Listens on 127.0.0.1:0 and forwards to 127.0.0.1:server_port.
  explicit TamperProxy(std::uint16_t server_port);
  ~TamperProxy();
  TamperProxy(const TamperProxy&) = delete;
  TamperProxy& operator=(const TamperProxy&) = delete;

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  // Removes its hook when it goes (waiting for a call in progress), so that
  // a hook never runs after what it uses: declare it after that.
  class [[nodiscard]] HookGuard {
   public:
    HookGuard(TamperProxy* proxy, Hook* slot) : proxy_(proxy), slot_(slot) {}
    ~HookGuard();
    HookGuard(const HookGuard&) = delete;
    HookGuard& operator=(const HookGuard&) = delete;

   private:
    TamperProxy* proxy_;
    Hook* slot_;
  };
  HookGuard OnServerFrame(Hook h);  // server -> client
  HookGuard OnClientFrame(Hook h);  // client -> server

  // Writes `bytes` to the client side of every open connection of `user`
  // that has logged in with receive=true (a receiving session). Returns how
  // many connections got them.
  int InjectToClient(const std::string& user, std::string_view bytes);
  // Like InjectToClient, waiting up to `timeout_ms` for such a connection.
  int InjectToClientWhenReady(const std::string& user, std::string_view bytes, int timeout_ms = 10000);

 private:
  struct Conn {
    int client = -1, server = -1;
    std::string user;           // from LoggedIn
    bool receiving = false;     // its Login asked for pushes
    bool pending_receive = false;
    std::string from_client, from_server;  // partial frames
  };
  void Run();
  bool Pump(Conn& c, bool from_client);  // false: close the pair
  static bool WriteAll(int fd, std::string_view bytes);

  int listen_fd_ = -1;
  Waker wake_;
  std::uint16_t port_ = 0;
  std::uint16_t target_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;  // conns_ membership and user, writes to client sockets
  std::vector<Conn*> conns_;
  std::mutex hook_mu_;  // held while a hook runs
  Hook server_hook_, client_hook_;
  std::thread thread_;
};

}  // namespace fastchat::testing
