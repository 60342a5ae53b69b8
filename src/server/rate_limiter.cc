#include "rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace fastchat::server {

// ------------------------------------------------------------------ TokenBucket

void TokenBucket::Refill(const RateLimit& limit, SteadyTime now) {
  if (now <= last_) return;
  const double seconds = std::chrono::duration<double>(now - last_).count();
  tokens_ = std::min(limit.burst, tokens_ + seconds * limit.per_second);
  last_ = now;
}

std::uint32_t TokenBucket::Take(const RateLimit& limit, SteadyTime now) {
  Refill(limit, now);
  if (tokens_ >= 1.0) {
    tokens_ -= 1.0;
    return 0;
  }
  // (Less a hair, so float error does not turn an exact 1 ms into 2.)
  const double ms = std::ceil((1.0 - tokens_) / limit.per_second * 1000.0 - 1e-6);
  return static_cast<std::uint32_t>(std::clamp(ms, 1.0, 4.0e9));
}

void TokenBucket::Give(const RateLimit& limit, SteadyTime now) {
  Refill(limit, now);
  tokens_ = std::min(limit.burst, tokens_ + 1.0);
}

bool TokenBucket::Full(const RateLimit& limit, SteadyTime now) const {
  if (tokens_ >= limit.burst) return true;
  const double seconds = now > last_ ? std::chrono::duration<double>(now - last_).count() : 0.0;
  return tokens_ + seconds * limit.per_second >= limit.burst;
}

// ------------------------------------------------------------------ RateTable

void RateTable::Touch(Entry& e) { lru_.splice(lru_.begin(), lru_, e.lru); }

void RateTable::DropOldest() {
  const std::string* key = lru_.back();
  lru_.pop_back();
  buckets_.erase(*key);
}

std::uint32_t RateTable::Take(const std::string& key, SteadyTime now) {
  if (limit_.off()) return 0;
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (max_entries_ > 0 && buckets_.size() >= max_entries_) {
      Expire(now);
      while (!buckets_.empty() && buckets_.size() >= max_entries_) DropOldest();
    }
    it = buckets_.emplace(key, Entry{TokenBucket(limit_, now), {}}).first;
    lru_.push_front(&it->first);  // keys of an unordered_map do not move on rehash
    it->second.lru = lru_.begin();
  } else {
    Touch(it->second);
  }
  return it->second.bucket.Take(limit_, now);
}

void RateTable::Give(const std::string& key, SteadyTime now) {
  auto it = buckets_.find(key);
  if (it != buckets_.end()) it->second.bucket.Give(limit_, now);
}

std::size_t RateTable::Expire(SteadyTime now) {
  // Least recently used first; stop at the first bucket still in use. Any
  // bucket untouched for burst/per_second is full, so none waits longer
  // than that behind a busier one.
  std::size_t dropped = 0;
  while (!lru_.empty()) {
    auto it = buckets_.find(*lru_.back());
    if (!it->second.bucket.Full(limit_, now)) break;
    DropOldest();
    ++dropped;
  }
  return dropped;
}

// ------------------------------------------------------------------ RateLimiter

namespace {

std::string UserKey(std::uint64_t user) {
  return std::string(reinterpret_cast<const char*>(&user), sizeof user);
}

Refusal Limited(std::string why, std::uint32_t retry_ms) {
  return Refusal(Status(Code::kRateLimited, std::move(why)), retry_ms);
}

}  // namespace

RateLimiter::RateLimiter(const Limits& limits, Clock clock)
    : clock_(std::move(clock)),
      failures_by_account_(limits.login_failures_per_account, limits.rate_table_entries),
      failures_by_source_(limits.login_failures_per_source, limits.rate_table_entries),
      registrations_(limits.registrations_per_source, limits.rate_table_entries),
      sends_(limits.sends_per_user, limits.rate_table_entries) {}

Refusal RateLimiter::BeginLogin(const std::string& source, const std::string& account) {
  const SteadyTime now = clock_();
  if (std::uint32_t wait = failures_by_source_.Take(source, now); wait > 0) {
    return Limited("too many failed logins from " + DescribeSource(source), wait);
  }
  if (std::uint32_t wait = failures_by_account_.Take(account, now); wait > 0) {
    failures_by_source_.Give(source, now);
    return Limited("too many failed logins for this account", wait);
  }
  return Refusal();
}

void RateLimiter::EndLogin(const std::string& source, const std::string& account, bool failed) {
  if (failed) return;
  const SteadyTime now = clock_();
  failures_by_source_.Give(source, now);
  failures_by_account_.Give(account, now);
}

Refusal RateLimiter::TakeRegistration(const std::string& source) {
  if (std::uint32_t wait = registrations_.Take(source, clock_()); wait > 0) {
    return Limited("too many registrations from " + DescribeSource(source), wait);
  }
  return Refusal();
}

void RateLimiter::GiveRegistration(const std::string& source) { registrations_.Give(source, clock_()); }

Refusal RateLimiter::TakeSend(std::uint64_t user) {
  if (std::uint32_t wait = sends_.Take(UserKey(user), clock_()); wait > 0) {
    return Limited("sending too fast", wait);
  }
  return Refusal();
}

void RateLimiter::Expire() {
  const SteadyTime now = clock_();
  for (RateTable* t : {&failures_by_account_, &failures_by_source_, &registrations_, &sends_}) t->Expire(now);
}

std::size_t RateLimiter::entries() const {
  return failures_by_account_.size() + failures_by_source_.size() + registrations_.size() + sends_.size();
}

}  // namespace fastchat::server
