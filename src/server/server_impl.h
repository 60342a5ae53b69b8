// Server internals shared by server.cc and session.cc. Not a public header.
#pragma once

#include <list>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/thread_pool.hpp>

#include "config.h"
#include "directory.h"
#include "peer_limits.h"
#include "presence_table.h"
#include "rate_limiter.h"
#include "request_service.h"
#include "router.h"
#include "server_metrics.h"
#include "store_worker.h"

namespace fastchat::server {

class Session;
class Mesh;

// The password-hashing threads. At shutdown the jobs not yet started are
// destroyed, not run: they belong to sessions already closed, and each
// would cost an Argon2id hash.
class HashPool : public asio::thread_pool {
 public:
  explicit HashPool(std::size_t threads) : asio::thread_pool(threads) {}
  // Waits for the jobs running now (their results are posted to the event
  // loop), then destroys the queued ones. Asio unwinds a destroyed job's
  // coroutine by posting that to the coroutine's executor (the event loop),
  // so call this before the loop's queued handlers are destroyed, and both
  // while what the coroutines refer to is alive. No job runs after it.
  void StopAndDropQueued() {
    stop();
    join();
    shutdown();
  }
};

struct Server::Impl {
  Impl(asio::io_context& io_in, ServerConfig config_in, std::unique_ptr<Store> store_in)
      : io(io_in),
        config(std::move(config_in)),
        store(std::move(store_in), io_in.get_executor()),
        service(directory, config, config.mesh_enabled),
        router(presence),
        acceptor(io_in) {}

  // Re-reads `facts` from the store into the directory (fire and forget).
  void RefreshDirectory(Facts facts);
  // Re-reads the whole directory from the store (fire and forget).
  void ReloadDirectory();
  // Re-reads `facts` and resumes once they are applied.
  asio::awaitable<void> Refresh(const Facts& facts);
  // After a write committed: tell peers what it changed (cluster only).
  void AnnounceChanged(const Facts& changed);

  asio::io_context& io;
  ServerConfig config;
  StoreWorker store;
  Directory directory;  // what requests are decided against (loaded by Server::Start)
  RequestService service;
  static constexpr std::size_t kHashThreads = 2;
  HashPool hash_pool{kHashThreads};  // Argon2id hashing and verification
  PresenceTable presence;
  Router router;
  asio::ip::tcp::acceptor acceptor;
  std::unordered_set<std::shared_ptr<Session>> sessions;  // every open connection
  std::unique_ptr<Mesh> mesh;                              // null unless clustered
  // Every session reads into this one buffer (one thread; bytes are copied
  // into the session's frame decoder before anything else runs).
  std::vector<char> read_buffer = std::vector<char>(64 * 1024);
  // Argon2id hash of a random password at the configured cost: what an
  // unknown user's login is checked against (see Session::HandleLogin).
  std::string decoy_hash;
  // Group logs acknowledged since the last trim (trimmed once a second).
  std::unordered_set<std::uint64_t> trim_due;
  // Group logs appended to through this server since the last check of
  // their bound (every limits.group_log_check: group_log_cap.h), and when
  // the next check is due.
  std::unordered_set<std::uint64_t> cap_due;
  std::chrono::steady_clock::time_point next_cap_check = std::chrono::steady_clock::now();
  asio::steady_timer trim_timer{io};
  // Limits (peer_limits.h, session_limits.cc): connections admitted, rate tables,
  // the Argon2id queue, the connections not logged in yet (oldest first), and
  // the timer of the sweep that checks every connection's deadlines.
  ConnectionCounts connections{config.limits};
  RateLimiter rates{config.limits};
  HashQueue hashes{kHashThreads, config.limits.max_hash_queue};
  std::list<Session*> prelogin;
  asio::steady_timer sweep_timer{io};
  EventTally refusals;        // logged once a second by the sweep
  EventTally deadline_closes;
  Status directory_loaded;  // the start-up LoadDirectory's result
  std::size_t refusing_tls = 0;  // refused TLS connections still handshaking (Session::kMaxRefusingTls)
  std::uint64_t frames_handled = 0;
  ServerMetrics metrics;  // totals for /metrics (Server::MetricsText)
  bool stopping = false;

  // A connection or request refused over a limit: counted for /metrics and
  // in the once-a-second log line.
  void NoteRefusal(const Status& why) {
    refusals.Add(why.message());
    metrics.CountRefusal(why.code());
  }
};

}  // namespace fastchat::server
