// GroupHold: group-log entries a receiving session got before their
// predecessor, kept a short while for it.
//
// In a cluster, forwards of consecutive entries of one group race on
// different mesh links (senders on different servers), so an entry often
// arrives just before the entry it names (prev_seq). Sending it would open a
// gap (GroupChain); re-reading the store for every such race re-sent whole
// pending streams. Instead the session holds the entry: when its
// predecessor arrives and is sent, Next() hands the held entries out in
// chain order. What a peer can make a session hold is bounded: at most
// `max_entries` entries and `max_bytes` event bytes at once (Hold() refuses
// more), and the caller gives up on the held entries (reads them from the
// store) once the oldest has waited its deadline (Oldest()).
//
// Promises:
// - Hold() keeps an entry unless that would pass a bound; an entry naming
//   the same predecessor as one held (a repeat) replaces nothing and counts
//   nothing: it is taken as held.
// - Next(group, known) returns and forgets a held entry of `group` whose
//   predecessor is at or below `known`, the lowest such first; none if there
//   is none.
// - Clear() forgets everything and returns the seqs of the entries held to
//   be sent (not the user's own, which it never reads).
//
// Used on the event-loop thread only. Header-only, no I/O: tested alone.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace fastchat::server {

class GroupHold {
 public:
  using Time = std::chrono::steady_clock::time_point;

  struct Entry {
    std::uint64_t group = 0;
    std::uint64_t seq = 0;
    std::uint64_t prev = 0;
    std::shared_ptr<const std::string> event;  // null: the user's own entry (counted, never sent)
    Time since{};  // when it was held
  };

  GroupHold(std::size_t max_entries, std::size_t max_bytes) : max_entries_(max_entries), max_bytes_(max_bytes) {}

  // Holds `e` for its predecessor; false (nothing held) if that would pass
  // max_entries or max_bytes.
  bool Hold(Entry e) {
    const std::pair<std::uint64_t, std::uint64_t> key{e.group, e.prev};
    if (held_.count(key) != 0) return true;
    const std::size_t size = e.event ? e.event->size() : 0;
    if (held_.size() + 1 > max_entries_ || bytes_ + size > max_bytes_) return false;
    bytes_ += size;
    held_.emplace(key, std::move(e));
    return true;
  }

  // A held entry of `group` whose predecessor is at or below `known`.
  std::optional<Entry> Next(std::uint64_t group, std::uint64_t known) {
    auto it = held_.lower_bound({group, 0});
    if (it == held_.end() || it->first.first != group || it->first.second > known) return std::nullopt;
    Entry e = std::move(it->second);
    bytes_ -= e.event ? e.event->size() : 0;
    held_.erase(it);
    return e;
  }

  // When the longest-held entry was held (Time{} if none is).
  Time Oldest() const {
    Time oldest{};
    for (const auto& [key, e] : held_) {
      if (oldest == Time{} || e.since < oldest) oldest = e.since;
    }
    return oldest;
  }

  std::vector<std::uint64_t> Clear() {
    std::vector<std::uint64_t> seqs;
    seqs.reserve(held_.size());
    for (const auto& [key, e] : held_) {
      if (e.event) seqs.push_back(e.seq);
    }
    held_.clear();
    bytes_ = 0;
    return seqs;
  }

  bool empty() const { return held_.empty(); }
  std::size_t entries() const { return held_.size(); }
  std::size_t bytes() const { return bytes_; }

 private:
  const std::size_t max_entries_;
  const std::size_t max_bytes_;
  std::map<std::pair<std::uint64_t, std::uint64_t>, Entry> held_;  // (group, prev) -> entry
  std::size_t bytes_ = 0;
};

}  // namespace fastchat::server
