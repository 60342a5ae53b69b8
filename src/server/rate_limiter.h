// Rate limits: token buckets, bounded tables of them, and the server's set
// of tables.
//
// Times are passed in (RateLimiter takes a clock function), so tests drive
// them with an injected clock. Event-loop thread only: no locking.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <unordered_map>

#include "peer_limits.h"

namespace fastchat::server {

// TokenBucket: holds at most limit.burst tokens and gains limit.per_second
// tokens a second. It starts full. It does not store its limit (a table of
// them shares one); pass the same limit to every call.
class TokenBucket {
 public:
  TokenBucket(const RateLimit& limit, SteadyTime now) : tokens_(limit.burst), last_(now) {}

  // Takes one token and returns 0, or, if less than one is there, takes
  // nothing and returns the milliseconds until one will be (at least 1).
  std::uint32_t Take(const RateLimit& limit, SteadyTime now);
  // Gives back one token taken earlier (never beyond the burst).
  void Give(const RateLimit& limit, SteadyTime now);
  // True if the bucket has refilled to its burst: it is then the same as a
  // fresh one, and a table may forget it.
  bool Full(const RateLimit& limit, SteadyTime now) const;

 private:
  void Refill(const RateLimit& limit, SteadyTime now);

  double tokens_;
  SteadyTime last_;
};

// RateTable: one TokenBucket per key (a source, an account, a user) under
// one limit, and at most `max_entries` buckets. A full bucket is dropped
// (Expire, or when room is needed), which changes nothing; if the table is
// at its bound with no full bucket, the least recently used bucket is
// dropped, so the table never grows past its bound (that key's count starts
// again). A table whose limit is off takes every token and holds nothing.
class RateTable {
 public:
  RateTable(RateLimit limit, std::size_t max_entries) : limit_(limit), max_entries_(max_entries) {}

  // As TokenBucket::Take for `key`'s bucket (made full if it has none).
  std::uint32_t Take(const std::string& key, SteadyTime now);
  // As TokenBucket::Give (nothing if `key` has no bucket).
  void Give(const std::string& key, SteadyTime now);
  // Drops full buckets, least recently used first; returns how many.
  std::size_t Expire(SteadyTime now);

  std::size_t size() const { return buckets_.size(); }
  const RateLimit& limit() const { return limit_; }

 private:
  struct Entry {
    TokenBucket bucket;
    std::list<const std::string*>::iterator lru;  // points at the map's own key
  };
  void Touch(Entry& e);
  void DropOldest();

  RateLimit limit_;
  std::size_t max_entries_;
  std::unordered_map<std::string, Entry> buckets_;
  std::list<const std::string*> lru_;  // most recently used first
};

// RateLimiter: the server's rate limits (Limits), each a RateTable:
// failed logins per account and per source, registrations per source, and
// sends per user (requests that store something for others). Refusals are
// RATE_LIMITED with the time until the next token.
class RateLimiter {
 public:
  using Clock = std::function<SteadyTime()>;

  explicit RateLimiter(const Limits& limits, Clock clock = &std::chrono::steady_clock::now);

  // Before a password is checked: reserves one failed login of `account` and
  // of `source`, or refuses if either has none left.
  Refusal BeginLogin(const std::string& source, const std::string& account);
  // After the check: a login that succeeded (or was never checked) gives its
  // reservation back; a failed one keeps it.
  void EndLogin(const std::string& source, const std::string& account, bool failed);

  Refusal TakeRegistration(const std::string& source);
  // Gives back a registration that was refused before doing any work.
  void GiveRegistration(const std::string& source);

  Refusal TakeSend(std::uint64_t user);

  // Drops buckets that have refilled (the server calls this every second).
  void Expire();
  // Buckets held in all tables.
  std::size_t entries() const;

 private:
  Clock clock_;
  RateTable failures_by_account_;
  RateTable failures_by_source_;
  RateTable registrations_;
  RateTable sends_;
};

}  // namespace fastchat::server
