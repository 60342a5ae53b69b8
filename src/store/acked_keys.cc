#include "acked_keys.h"

#include "key_hash.h"

#include <functional>

namespace fastchat {

namespace {

constexpr int kOffsetBits = 24;
constexpr std::uint64_t kOffsetMask = (std::uint64_t{1} << kOffsetBits) - 1;
constexpr std::size_t kFirstSlots = 1024;

// The slot index of fingerprint `f` in a table of `mask` + 1 slots: the
// fingerprint's high bits (its low bits are what tells two keys apart in a
// probe run).
std::size_t Home(std::uint64_t fingerprint, std::size_t mask) {
  return static_cast<std::size_t>((fingerprint * 0x9E3779B97F4A7C15ull) >> 24) & mask;
}

}  // namespace

std::uint64_t AckedKeys::Hash(std::uint64_t recipient, std::string_view key) {
  return DedupeKeyHash(recipient, key);
}

bool AckedKeys::Generation::Fits(std::uint64_t rowid, std::uint64_t expires_ms) const {
  if (count >= kMaxGeneration) return false;
  if (rowid < base || rowid - base > kOffsetMask) return false;
  return expires_ms >= first_expiry_ms && expires_ms - first_expiry_ms <= kGenerationSpanMs;
}

void AckedKeys::Generation::Place(std::uint64_t slot) {
  const std::size_t mask = slots.size() - 1;
  std::size_t i = Home(slot >> kOffsetBits, mask);
  while (slots[i] != 0) i = (i + 1) & mask;
  slots[i] = slot;
}

void AckedKeys::Generation::Insert(std::uint64_t fingerprint, std::uint64_t rowid, std::uint64_t expires_ms) {
  if ((count + 1) * 4 > slots.size() * 3) {  // keep the load at or below 3/4
    decltype(slots) old(slots.empty() ? kFirstSlots : slots.size() * 2, 0);
    old.swap(slots);
    for (std::uint64_t s : old) {
      if (s != 0) Place(s);
    }
  }
  Place((fingerprint << kOffsetBits) | (rowid - base));
  ++count;
  if (rowid > last) last = rowid;
  if (expires_ms > newest_expiry_ms) newest_expiry_ms = expires_ms;
}

void AckedKeys::Generation::Find(std::uint64_t fingerprint, std::vector<std::uint64_t>* rowids) const {
  if (slots.empty()) return;
  const std::size_t mask = slots.size() - 1;
  for (std::size_t i = Home(fingerprint, mask); slots[i] != 0; i = (i + 1) & mask) {
    if ((slots[i] >> kOffsetBits) == fingerprint) rowids->push_back(base + (slots[i] & kOffsetMask));
  }
}

void AckedKeys::Add(std::uint64_t hash, std::uint64_t rowid, std::uint64_t expires_ms) {
  if (generations_.empty() || !generations_.back().Fits(rowid, expires_ms)) {
    Generation g;
    g.base = rowid;
    g.last = rowid;
    g.first_expiry_ms = expires_ms;
    g.newest_expiry_ms = expires_ms;
    generations_.push_back(std::move(g));
  }
  // 40 bits, never 0 (0 marks an empty slot).
  const std::uint64_t fingerprint = (hash >> kOffsetBits) | 1;
  generations_.back().Insert(fingerprint, rowid, expires_ms);
}

void AckedKeys::Prefetch(std::uint64_t hash) const {
  if (generations_.empty() || generations_.back().slots.empty()) return;
  const auto& slots = generations_.back().slots;
  __builtin_prefetch(&slots[Home((hash >> kOffsetBits) | 1, slots.size() - 1)], 1);
}

void AckedKeys::Candidates(std::uint64_t hash, std::vector<std::uint64_t>* rowids) const {
  const std::uint64_t fingerprint = (hash >> kOffsetBits) | 1;
  for (const Generation& g : generations_) g.Find(fingerprint, rowids);
}

std::vector<AckedKeys::Range> AckedKeys::DropExpired(std::uint64_t now_ms) {
  std::vector<Range> dropped;
  for (auto it = generations_.begin(); it != generations_.end();) {
    if (it->newest_expiry_ms <= now_ms) {
      dropped.push_back(Range{it->base, it->last});
      it = generations_.erase(it);
    } else {
      ++it;
    }
  }
  return dropped;
}

std::size_t AckedKeys::size() const {
  std::size_t n = 0;
  for (const Generation& g : generations_) n += g.count;
  return n;
}

}  // namespace fastchat
