// ServerTable: the balancer's view of the live chat servers.
//
// Pure logic: no I/O, no clock of its own (every call that cares about time
// takes `now`), no randomness of its own (Pick takes a uniform number), so
// tests can drive it exactly. Not thread-safe; the balancer uses it from its
// one event-loop thread.
//
// Promises:
//  * A server is live from its first accepted report until `expire_after`
//    passes with no report (Expire removes it), or until Remove.
//    A later report makes it live again.
//  * Pick chooses among live servers with probability proportional to
//    1 / ClampLoad(load) (load.h), independent of table order.
//  * Reports from a second connection for the same server_id take the entry
//    over; Remove only removes an entry its caller still owns.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fastchat/status.h"

namespace fastchat::balancer {

// One load report, as received (ServerReport without the wire types).
struct LoadReport {
  std::string server_id;
  std::string client_address;  // "host:port"
  std::uint32_t connections = 0;
  double cpu_percent = 0;
  double msgs_per_sec = 0;
  double load = 0;  // <= 0 means not given: computed with ComputeLoad
};

class ServerTable {
 public:
  using Clock = std::chrono::steady_clock;

  struct Entry {
    std::string server_id;
    std::string host;
    std::uint16_t port = 0;
    double load = 1;  // clamped, what Pick weighs by
    Clock::time_point last_report;
    std::uint64_t owner = 0;  // the connection that reported last
  };

  explicit ServerTable(Clock::duration expire_after) : expire_after_(expire_after) {}

  // Records a report from connection `owner`. Returns kBadRequest (and
  // changes nothing) for an empty server_id or a client_address that is not
  // "host:port" with a non-zero port. Sets *added to true if the server was
  // not live before.
  Status Update(const LoadReport& report, std::uint64_t owner, Clock::time_point now, bool* added = nullptr);

  // Removes `server_id` if connection `owner` reported it last (its
  // connection closed). Returns true if it removed it.
  bool Remove(const std::string& server_id, std::uint64_t owner);

  // Removes every server whose last report is older than expire_after;
  // returns their ids.
  std::vector<std::string> Expire(Clock::time_point now);

  // Chooses a live server; `u` is uniform in [0, 1). Returns nullptr if there
  // is none. The pointer is valid until the next non-const call.
  const Entry* Pick(double u) const;

  // Each live server's probability of being picked (sums to 1).
  std::map<std::string, double> Shares() const;

  std::size_t size() const { return entries_.size(); }
  const Entry* Find(const std::string& server_id) const;
  Clock::duration expire_after() const { return expire_after_; }

 private:
  Clock::duration expire_after_;
  std::map<std::string, Entry> entries_;  // by server_id
};

}  // namespace fastchat::balancer
