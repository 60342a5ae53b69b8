// Limits: what a peer can make the server hold, and for how long.
//
// Everything a connection can make the server keep has a bound and a
// deadline. This header holds the settings (Limits, part of ServerConfig),
// the refusal a limit answers with (Refusal: an Error code plus a retry
// time), and the decisions the server makes with them, kept free of sockets
// so they can be tested with an injected clock:
//   - ConnectionCounts: admission of a new connection (total, per source);
//   - CheckLiveness: the deadlines of one connection at a given time;
//   - HashQueue: the bound on Argon2id work waiting for the hash pool.
// Rate limits (token buckets) are in rate_limiter.h.
//
// All of it runs on the server's event-loop thread: no locking.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>

#include "fastchat/status.h"

namespace asio::ip {
class address;
}

namespace fastchat::server {

using SteadyTime = std::chrono::steady_clock::time_point;
using Millis = std::chrono::milliseconds;

// A rate: `per_second` tokens refilled, at most `burst` held. Off (no
// limit) when either is 0.
struct RateLimit {
  double per_second = 0;
  double burst = 0;

  bool off() const { return per_second <= 0 || burst <= 0; }
  // `n` per minute, bursts of `n`.
  static RateLimit PerMinute(double n) { return RateLimit{n / 60.0, n}; }
};

// Every bound and deadline a peer meets (fastchat-server flags; README.md
// lists them). A count, rate or duration of 0 switches that limit off.
struct Limits {
  // ---- before login
  Millis hello_timeout{10'000};        // Hello within this long of the accept
  Millis login_timeout{30'000};        // logged in within this long of the accept
  Millis unauth_idle_timeout{10'000};  // a complete frame at least this often
  std::uint32_t max_unauth_frame = 64 * 1024;  // largest frame accepted before login
  std::size_t max_unauth_connections = 1024;   // more: the oldest such connection is closed

  // ---- connections
  std::size_t max_connections = 20000;            // lowered to the fd limit minus reserved_fds
  std::size_t max_connections_per_source = 64;    // per IPv4 address or IPv6 /64
  std::size_t reserved_fds = 64;                  // kept for the store, cluster links, logs

  // ---- logged in
  Millis write_stall_timeout{60'000};  // queued bytes with no write progress: dropped
  Millis ping_after{60'000};           // silence before the server sends Ping
  Millis ping_timeout{30'000};         // no answer to the Ping: dropped
  Millis close_grace{5'000};           // a closing connection's last frames get this long

  // ---- rates (token buckets) and work queues
  RateLimit login_failures_per_account = RateLimit::PerMinute(10);
  RateLimit login_failures_per_source = RateLimit::PerMinute(30);
  RateLimit registrations_per_source = RateLimit::PerMinute(5);
  RateLimit sends_per_user{200, 1000};     // requests that store something
  std::size_t rate_table_entries = 100000;  // buckets per table (sources, accounts, users)
  std::size_t max_hash_queue = 64;          // Argon2id jobs waiting for a hash thread

  // Rows, and payload bytes, one user may have waiting in the store
  // (exact on SQLite; on PostgreSQL within 1,000 rows per server, see
  // store/pg_store.h): a direct message or image chunk
  // past either is answered LIMIT_REACHED and not stored. 0: no limit.
  std::size_t max_waiting_per_user = 100000;
  std::size_t max_waiting_bytes_per_user = std::size_t{256} << 20;

  // ---- groups
  std::size_t max_group_members = 1000;
  std::size_t max_groups_per_user = 100;
  // What one group's log may hold for members who have not collected it
  // (entries, and their payload bytes): past either the oldest entries go
  // and each member who missed some is told (group_log_cap.h). Checked
  // every group_log_check for the groups appended to through this server,
  // so a log may pass its bound by what is appended in that time. 0: no
  // bound of that kind.
  std::size_t max_group_log_entries = 100000;
  std::size_t max_group_log_bytes = std::size_t{256} << 20;
  Millis group_log_check{10'000};

  // ---- group-log entries a receiving session holds for their predecessor
  // (group_hold.h): forwards racing on different mesh links. Past any of
  // these the session reads its pending rows from the store instead; 0 for
  // any of them holds nothing (every gap re-reads at once).
  // How long the oldest held entry waits: under load a forward can lag
  // seconds behind one on another link; below the mesh's 4 s silence limit.
  Millis group_hold_wait{3'000};
  std::size_t group_hold_entries = 256;   // entries held per session
  std::size_t group_hold_bytes = 1u << 20;  // event bytes held per session

  // The shortest deadline that is on (for how often to check them), or 0.
  Millis ShortestDeadline() const;
};

// The answer to a request or connection a limit refuses: a Status (BUSY,
// RATE_LIMITED, LIMIT_REACHED, ...) and, for the first two, when trying
// again can succeed (Error.retry_after_ms on the wire). OK when allowed.
struct Refusal {
  Refusal() = default;
  Refusal(Status s, std::uint32_t retry_ms = 0) : status(std::move(s)), retry_after_ms(retry_ms) {}  // NOLINT

  bool ok() const { return status.ok(); }

  Status status;
  std::uint32_t retry_after_ms = 0;
};

// Where a connection comes from, for per-source limits: an IPv4 address
// (also when mapped into IPv6), or the /64 prefix of an IPv6 address (one
// host or customer usually holds a whole /64). 4 or 8 bytes, so the string
// never allocates.
std::string SourceKey(const asio::ip::address& address);
// "192.0.2.7" or "2001:db8::/64", for messages and logs.
std::string DescribeSource(const std::string& key);

// ConnectionCounts: how many connections the server has, in all and per
// source. Admit() either counts a new connection in or refuses it with
// LIMIT_REACHED; every admitted connection is Release()d exactly once.
class ConnectionCounts {
 public:
  explicit ConnectionCounts(const Limits& limits) : limits_(limits) {}

  Refusal Admit(const std::string& source);
  void Release(const std::string& source);

  std::size_t total() const { return total_; }
  std::size_t from(const std::string& source) const;
  std::size_t sources() const { return per_source_.size(); }

 private:
  const Limits& limits_;
  std::size_t total_ = 0;
  std::unordered_map<std::string, std::size_t> per_source_;  // only sources with connections
};

// What the server knows about one connection when it checks its deadlines.
struct Liveness {
  bool logged_in = false;
  bool said_hello = false;
  // The reader waits for the peer's bytes (not for the server: a full write
  // queue, a store write, a password hash). Silence counts only then.
  bool waiting_for_peer = false;
  bool closing = false;           // flushing its last frames before the close
  bool ping_outstanding = false;  // a Ping went out and nothing came since
  SteadyTime accepted;
  SteadyTime last_frame;   // last complete frame from the peer (accepted if none)
  SteadyTime last_bytes;   // last bytes from the peer (accepted if none)
  SteadyTime ping_sent;
  SteadyTime closing_since;
  std::size_t queued_bytes = 0;    // waiting in the write queue
  SteadyTime last_write_progress;  // last bytes written, or when the queue filled
};

// What to do with a connection: nothing, send it a Ping, close it after an
// Error frame saying why, or drop it at once (it is not reading: an Error
// frame would only wait behind the rest).
struct Verdict {
  enum Act { kNone, kPing, kCloseWithError, kDrop };
  Act act = kNone;
  Status why;  // LIMIT_REACHED with the reason, unless kNone / kPing
};

// The deadlines of `c` at `now`:
//   closing longer than close_grace                        -> drop
//   not logged in: no Hello after hello_timeout,
//     not logged in after login_timeout,
//     silent (no complete frame) for unauth_idle_timeout    -> close with error
//   logged in: queued bytes and no write progress for
//     write_stall_timeout                                   -> drop
//     silent for ping_after                                 -> ping
//     no answer ping_timeout after the ping                 -> drop
Verdict CheckLiveness(const Liveness& c, const Limits& limits, SteadyTime now);

// HashQueue: the bound on Argon2id work (login checks and registrations).
// Enter() admits a job while fewer than `threads` run plus `max_waiting`
// wait, and otherwise refuses it with BUSY and a retry time estimated from
// recent hash durations (the queue ahead divided among the threads); each
// admitted job Leave()s once with how long it took. max_waiting 0: no bound.
class HashQueue {
 public:
  HashQueue(std::size_t threads, std::size_t max_waiting) : threads_(threads), max_waiting_(max_waiting) {}

  Refusal Enter();
  void Leave(Millis took);

  std::size_t jobs() const { return jobs_; }

 private:
  std::size_t threads_;
  std::size_t max_waiting_;
  std::size_t jobs_ = 0;      // running or waiting
  double average_ms_ = 100;   // moving average of hash durations
};

// EventTally: events of one kind counted between two reports, with the
// first as an example, so a flood (refused connections, closes at
// deadlines) logs one line a second rather than one per event.
class EventTally {
 public:
  void Add(const std::string& example) {
    if (count_++ == 0) example_ = example;
  }
  // If anything was added since the last Take: its count and example, and
  // starts again.
  bool Take(std::size_t* count, std::string* example) {
    if (count_ == 0) return false;
    *count = count_;
    *example = std::move(example_);
    count_ = 0;
    example_.clear();
    return true;
  }

 private:
  std::size_t count_ = 0;
  std::string example_;
};

}  // namespace fastchat::server
