#include "server_table.h"

#include "common/host_port.h"
#include "load.h"

namespace fastchat::balancer {

Status ServerTable::Update(const LoadReport& report, std::uint64_t owner, Clock::time_point now, bool* added) {
  if (added != nullptr) *added = false;
  if (report.server_id.empty()) return Status(Code::kBadRequest, "empty server_id");
  Entry e;
  if (!ParseHostPort(report.client_address, &e.host, &e.port) || e.port == 0) {
    return Status(Code::kBadRequest, "client_address must be host:port, got '" + report.client_address + "'");
  }
  e.server_id = report.server_id;
  double load = report.load;
  if (!(load > 0)) load = ComputeLoad(report.connections, report.cpu_percent, report.msgs_per_sec);
  e.load = ClampLoad(load);
  e.last_report = now;
  e.owner = owner;
  auto [it, inserted] = entries_.insert_or_assign(report.server_id, std::move(e));
  (void)it;
  if (added != nullptr) *added = inserted;
  return Status::OK();
}

bool ServerTable::Remove(const std::string& server_id, std::uint64_t owner) {
  auto it = entries_.find(server_id);
  if (it == entries_.end() || it->second.owner != owner) return false;
  entries_.erase(it);
  return true;
}

std::vector<std::string> ServerTable::Expire(Clock::time_point now) {
  std::vector<std::string> gone;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (now - it->second.last_report > expire_after_) {
      gone.push_back(it->first);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  return gone;
}

const ServerTable::Entry* ServerTable::Pick(double u) const {
  if (entries_.empty()) return nullptr;
  double total = 0;
  for (const auto& [id, e] : entries_) total += 1.0 / e.load;
  double target = u * total;
  const Entry* last = nullptr;
  for (const auto& [id, e] : entries_) {
    last = &e;
    target -= 1.0 / e.load;
    if (target < 0) return &e;
  }
  return last;  // rounding left target a hair above zero: the last one
}

std::map<std::string, double> ServerTable::Shares() const {
  std::map<std::string, double> shares;
  double total = 0;
  for (const auto& [id, e] : entries_) total += 1.0 / e.load;
  for (const auto& [id, e] : entries_) shares[id] = (1.0 / e.load) / total;
  return shares;
}

const ServerTable::Entry* ServerTable::Find(const std::string& server_id) const {
  auto it = entries_.find(server_id);
  return it == entries_.end() ? nullptr : &it->second;
}

}  // namespace fastchat::balancer
