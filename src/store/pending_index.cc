#include "pending_index.h"

#include <algorithm>

#include "linear_probe.h"

namespace fastchat {
namespace {

constexpr std::size_t kMinCapacity = 64;

// The index of the first entry of `seqs` from `from` on at or above `seq`
// (removed ones compare by their seq). It gallops from `from` (probes at
// from, from+1, from+3, from+7, ...) and then halves the last gap: an
// acknowledgement names seqs at or just past its queue's head, so the
// probes stay in a cache line or two there, where a binary search over the
// whole queue (thousands of seqs in a drain) missed the cache at each step.
std::size_t LowerBound(const std::vector<std::uint64_t>& seqs, std::size_t from, std::uint64_t seq) {
  const auto below = [](std::uint64_t entry, std::uint64_t s) { return (entry & ~(std::uint64_t{1} << 63)) < s; };
  const std::size_t n = seqs.size();
  std::size_t lo = from;  // every entry in [from, lo) is below seq
  std::size_t hi = n;     // the answer is in [lo, hi]
  for (std::size_t step = 1; lo < n; step *= 2) {
    const std::size_t probe = lo + step - 1;
    if (probe >= n) break;
    if (!below(seqs[probe], seq)) {
      hi = probe;
      break;
    }
    lo = probe + 1;
  }
  auto it = std::lower_bound(seqs.begin() + static_cast<std::ptrdiff_t>(lo), seqs.begin() + static_cast<std::ptrdiff_t>(hi),
                             seq, below);
  return static_cast<std::size_t>(it - seqs.begin());
}

}  // namespace

void PendingIndex::Add(std::uint64_t recipient, std::uint64_t seq, std::uint64_t hash, std::uint64_t bytes) {
  Queue& q = queues_[recipient];
  if (q.seqs.empty() || (q.seqs.back() & ~kDead) < seq) {
    if (q.live == 0) q.head = q.seqs.size();
    q.seqs.push_back(seq);
  } else {
    // Below the newest: an undone removal, or rows read out of order.
    const std::size_t at = LowerBound(q.seqs, 0, seq);
    if (at < q.seqs.size() && (q.seqs[at] & ~kDead) == seq) {
      if ((q.seqs[at] & kDead) == 0) return;  // already noted
      q.seqs[at] = seq;
    } else {
      q.seqs.insert(q.seqs.begin() + static_cast<std::ptrdiff_t>(at), seq);
    }
    if (q.live == 0 || at < q.head) q.head = at;
  }
  ++q.live;
  q.bytes += bytes;
  if ((used_ + 1) * 10 > slots_.size() * 7) Resize(std::max(kMinCapacity, slots_.size() * 2));
  Place(Slot{hash, seq});
  ++used_;
}

bool PendingIndex::Remove(std::uint64_t recipient, std::uint64_t seq, std::uint64_t hash, std::uint64_t bytes) {
  auto it = queues_.find(recipient);
  if (it == queues_.end()) return false;
  Queue& q = it->second;
  const std::size_t at = LowerBound(q.seqs, q.head, seq);
  if (at == q.seqs.size() || q.seqs[at] != seq) return false;  // absent, or removed
  if (!Erase(hash, seq)) return false;
  q.seqs[at] |= kDead;
  --q.live;
  q.bytes -= std::min(q.bytes, bytes);
  if (q.live == 0) {
    queues_.erase(it);
  } else {
    while (q.seqs[q.head] & kDead) ++q.head;
    // Compact once removed entries outnumber the live ones: amortised O(1).
    if (q.seqs.size() - q.live > q.live + 16) {
      std::erase_if(q.seqs, [](std::uint64_t s) { return (s & kDead) != 0; });
      q.head = 0;
    }
  }
  --used_;
  if (slots_.size() > kMinCapacity && used_ * 8 < slots_.size()) Resize(slots_.size() / 2);
  return true;
}

bool PendingIndex::Holds(std::uint64_t recipient, std::uint64_t seq) const {
  auto it = queues_.find(recipient);
  if (it == queues_.end()) return false;
  const Queue& q = it->second;
  const std::size_t at = LowerBound(q.seqs, q.head, seq);
  return at < q.seqs.size() && q.seqs[at] == seq;  // a removed entry has kDead set
}

void PendingIndex::Candidates(std::uint64_t hash, std::vector<std::uint64_t>* seqs) const {
  if (slots_.empty()) return;
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = hash & mask; slots_[i].seq != 0; i = (i + 1) & mask) {
    if (slots_[i].hash == hash) seqs->push_back(slots_[i].seq);
  }
}

void PendingIndex::SeqsAfter(std::uint64_t recipient, std::uint64_t after_seq, std::size_t limit,
                             std::vector<std::uint64_t>* seqs) const {
  auto it = queues_.find(recipient);
  if (it == queues_.end() || limit == 0) return;
  const Queue& q = it->second;
  if (after_seq == ~std::uint64_t{0}) return;
  std::size_t taken = 0;
  for (std::size_t i = LowerBound(q.seqs, q.head, after_seq + 1); i < q.seqs.size() && taken < limit; ++i) {
    if (q.seqs[i] & kDead) continue;
    seqs->push_back(q.seqs[i]);
    ++taken;
  }
}

void PendingIndex::SeqsAtOrBelow(std::uint64_t bound, std::vector<std::uint64_t>* seqs) const {
  for (const auto& [recipient, q] : queues_) {
    for (std::size_t i = q.head; i < q.seqs.size() && (q.seqs[i] & ~kDead) <= bound; ++i) {
      if (!(q.seqs[i] & kDead)) seqs->push_back(q.seqs[i]);
    }
  }
}

std::size_t PendingIndex::CountOf(std::uint64_t recipient) const {
  auto it = queues_.find(recipient);
  return it == queues_.end() ? 0 : it->second.live;
}

std::uint64_t PendingIndex::LastOf(std::uint64_t recipient) const {
  auto it = queues_.find(recipient);
  if (it == queues_.end()) return 0;
  const Queue& q = it->second;
  for (std::size_t i = q.seqs.size(); i > q.head; --i) {
    if (!(q.seqs[i - 1] & kDead)) return q.seqs[i - 1];
  }
  return 0;
}

std::uint64_t PendingIndex::BytesOf(std::uint64_t recipient) const {
  auto it = queues_.find(recipient);
  return it == queues_.end() ? 0 : it->second.bytes;
}

void PendingIndex::Clear() {
  queues_.clear();
  slots_.clear();
  slots_.shrink_to_fit();
  used_ = 0;
}

void PendingIndex::Place(const Slot& slot) {
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = slot.hash & mask;
  while (slots_[i].seq != 0) i = (i + 1) & mask;
  slots_[i] = slot;
}

bool PendingIndex::Erase(std::uint64_t hash, std::uint64_t seq) {
  if (slots_.empty()) return false;
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = hash & mask;
  while (slots_[i].seq != 0 && !(slots_[i].hash == hash && slots_[i].seq == seq)) i = (i + 1) & mask;
  if (slots_[i].seq == 0) return false;
  EraseSlot(
      slots_.data(), mask, i, [](const Slot& s) { return s.seq == 0; },
      [mask](const Slot& s) { return static_cast<std::size_t>(s.hash) & mask; });
  return true;
}

void PendingIndex::Resize(std::size_t capacity) {
  decltype(slots_) old;
  old.swap(slots_);
  slots_.assign(capacity, Slot{});
  for (const Slot& s : old) {
    if (s.seq != 0) Place(s);
  }
}

}  // namespace fastchat
