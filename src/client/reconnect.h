// Pure helpers for finding and re-finding a server: HOST:PORT parsing, the
// balancer list (--balancer, FASTCHAT_BALANCER), and the reconnect backoff.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace fastchat::client {

// How long a receiving session (chat, listen) keeps trying to get back to
// a server before it gives up, and its backoff between attempts.
inline constexpr std::chrono::milliseconds kReconnectFor{60000};
inline constexpr std::chrono::milliseconds kBackoffFirst{100};
inline constexpr std::chrono::milliseconds kBackoffMax{2000};

// "host:port", "[v6]:port" or "v6:addr:port" (the last colon separates the
// port). The port must be 1-65535. Brackets around the host are removed.
bool SplitHostPort(const std::string& s, std::string* host, std::string* port);

// Every element of `values` may hold several comma-separated HOST:PORT
// entries (spaces around them are ignored, empty entries skipped). Returns
// false (with *error naming the bad entry) if one is not HOST:PORT. The
// entries are returned as given, in order, duplicates removed.
bool ParseBalancerList(const std::vector<std::string>& values, std::vector<std::string>* out,
                       std::string* error);

// Exponential backoff: first, 2*first, 4*first, ... capped at max.
class Backoff {
 public:
  explicit Backoff(std::chrono::milliseconds first = kBackoffFirst, std::chrono::milliseconds max = kBackoffMax)
      : first_(first), max_(max), next_(first) {}
  // The delay before the next attempt.
  std::chrono::milliseconds Next();
  void Reset() { next_ = first_; }

 private:
  std::chrono::milliseconds first_;
  std::chrono::milliseconds max_;
  std::chrono::milliseconds next_;
};

// The wait before the next attempt: the backoff delay, but never past the
// end of the budget (`left` = time remaining; never negative).
std::chrono::milliseconds ClipDelay(std::chrono::milliseconds delay, std::chrono::milliseconds left);

}  // namespace fastchat::client
