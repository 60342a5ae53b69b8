#include "peer_limits.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <asio/ip/address.hpp>

namespace fastchat::server {
namespace {

// "10 s", "1.5 s", "250 ms".
std::string Seconds(Millis d) {
  const auto ms = d.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  if (ms < 1000) return std::to_string(ms) + " ms";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ms) / 1000.0);
  return buf;
}

bool On(Millis d) { return d.count() > 0; }

bool Passed(SteadyTime since, Millis d, SteadyTime now) { return On(d) && now - since >= d; }

Status Reached(std::string why) { return Status(Code::kLimitReached, std::move(why)); }

}  // namespace

Millis Limits::ShortestDeadline() const {
  Millis shortest{0};
  for (Millis d : {hello_timeout, login_timeout, unauth_idle_timeout, write_stall_timeout, ping_after, ping_timeout,
                   close_grace}) {
    if (On(d) && (shortest.count() == 0 || d < shortest)) shortest = d;
  }
  return shortest;
}

// ------------------------------------------------------------------ sources

std::string SourceKey(const asio::ip::address& address) {
  if (address.is_v4()) {
    const auto b = address.to_v4().to_bytes();
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  }
  const asio::ip::address_v6 v6 = address.to_v6();
  if (v6.is_v4_mapped()) {
    const auto b = asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_bytes();
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  }
  const auto b = v6.to_bytes();
  return std::string(reinterpret_cast<const char*>(b.data()), 8);
}

std::string DescribeSource(const std::string& key) {
  if (key.size() == 4) {
    asio::ip::address_v4::bytes_type b;
    std::copy(key.begin(), key.end(), b.begin());
    return asio::ip::address_v4(b).to_string();
  }
  if (key.size() == 8) {
    asio::ip::address_v6::bytes_type b{};
    std::copy(key.begin(), key.end(), b.begin());
    return asio::ip::address_v6(b).to_string() + "/64";
  }
  return "(unknown source)";
}

// ------------------------------------------------------------------ connections

Refusal ConnectionCounts::Admit(const std::string& source) {
  constexpr std::uint32_t kRetryMs = 5000;
  if (limits_.max_connections > 0 && total_ >= limits_.max_connections) {
    return Refusal(Reached("the server is at its limit of " + std::to_string(limits_.max_connections) +
                           " connections"),
                   kRetryMs);
  }
  auto it = per_source_.find(source);
  const std::size_t mine = it == per_source_.end() ? 0 : it->second;
  if (limits_.max_connections_per_source > 0 && mine >= limits_.max_connections_per_source) {
    return Refusal(Reached("too many connections from " + DescribeSource(source) + " (at most " +
                           std::to_string(limits_.max_connections_per_source) + ")"),
                   kRetryMs);
  }
  ++total_;
  if (it == per_source_.end()) {
    per_source_.emplace(source, 1);
  } else {
    ++it->second;
  }
  return Refusal();
}

void ConnectionCounts::Release(const std::string& source) {
  auto it = per_source_.find(source);
  if (it == per_source_.end()) return;
  --total_;
  if (--it->second == 0) per_source_.erase(it);
}

std::size_t ConnectionCounts::from(const std::string& source) const {
  auto it = per_source_.find(source);
  return it == per_source_.end() ? 0 : it->second;
}

// ------------------------------------------------------------------ deadlines

Verdict CheckLiveness(const Liveness& c, const Limits& l, SteadyTime now) {
  Verdict v;
  if (c.closing) {
    if (Passed(c.closing_since, l.close_grace, now)) {
      v.act = Verdict::kDrop;
      v.why = Reached("did not take its last frames within " + Seconds(l.close_grace));
    }
    return v;
  }
  if (!c.logged_in) {
    if (!c.said_hello && Passed(c.accepted, l.hello_timeout, now)) {
      v.why = Reached("no Hello within " + Seconds(l.hello_timeout) + " of connecting");
    } else if (Passed(c.accepted, l.login_timeout, now)) {
      v.why = Reached("not logged in within " + Seconds(l.login_timeout) + " of connecting");
    } else if (c.waiting_for_peer && Passed(c.last_frame, l.unauth_idle_timeout, now)) {
      v.why = Reached("no complete frame for " + Seconds(l.unauth_idle_timeout) + " before login");
    }
    if (!v.why.ok()) v.act = Verdict::kCloseWithError;
    return v;
  }
  if (c.queued_bytes > 0 && Passed(c.last_write_progress, l.write_stall_timeout, now)) {
    v.act = Verdict::kDrop;
    v.why = Reached("took none of its " + std::to_string(c.queued_bytes) + " queued bytes for " +
                    Seconds(l.write_stall_timeout));
    return v;
  }
  if (!c.waiting_for_peer) return v;
  if (c.ping_outstanding) {
    if (Passed(c.ping_sent, l.ping_timeout, now)) {
      v.act = Verdict::kDrop;
      v.why = Reached("no answer to Ping within " + Seconds(l.ping_timeout));
    }
    return v;
  }
  if (Passed(c.last_bytes, l.ping_after, now)) v.act = Verdict::kPing;
  return v;
}

// ------------------------------------------------------------------ hashing

Refusal HashQueue::Enter() {
  if (max_waiting_ > 0 && jobs_ >= threads_ + max_waiting_) {
    // Our turn would come once the jobs ahead beyond the threads are done.
    const double ahead = static_cast<double>(jobs_ - threads_ + 1);
    const double ms = std::ceil(ahead * average_ms_ / static_cast<double>(std::max<std::size_t>(threads_, 1)));
    return Refusal(Status(Code::kBusy, "the server is busy checking passwords"),
                   static_cast<std::uint32_t>(std::clamp(ms, 100.0, 60000.0)));
  }
  ++jobs_;
  return Refusal();
}

void HashQueue::Leave(Millis took) {
  if (jobs_ > 0) --jobs_;
  average_ms_ = 0.8 * average_ms_ + 0.2 * static_cast<double>(took.count());
}

}  // namespace fastchat::server
