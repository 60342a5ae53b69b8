#include "recent_row_keys.h"

#include <bit>
#include <cstring>
#include <new>

namespace fastchat {
namespace {

template <class T>
T* Zeroed(std::size_t n) {
  void* p = std::calloc(n, sizeof(T));
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<T*>(p);
}

}  // namespace

RecentRowKeys::RecentRowKeys(std::size_t capacity) : capacity_(capacity < 2 ? 2 : std::bit_ceil(capacity)) {}

std::size_t RecentRowKeys::Find(std::uint64_t seq) const {
  const std::size_t mask = 2 * capacity_ - 1;
  const int shift = 64 - std::countr_zero(2 * capacity_);
  std::size_t i = static_cast<std::size_t>((seq * 0x9E3779B97F4A7C15ull) >> shift) & mask;
  while (slots_[i] != 0 && entries_[slots_[i] - 1].seq != seq) i = (i + 1) & mask;
  return i;
}

void RecentRowKeys::Unlink(std::size_t i) {
  // Backward-shift deletion, as in PendingIndex::Erase: no probe chain is cut.
  const std::size_t mask = 2 * capacity_ - 1;
  const int shift = 64 - std::countr_zero(2 * capacity_);
  std::size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (slots_[j] == 0) break;
    const std::uint64_t seq = entries_[slots_[j] - 1].seq;
    const std::size_t home = static_cast<std::size_t>((seq * 0x9E3779B97F4A7C15ull) >> shift) & mask;
    const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    slots_[i] = slots_[j];
    i = j;
  }
  slots_[i] = 0;
}

void RecentRowKeys::Put(std::uint64_t seq, std::uint64_t recipient, std::string_view key, std::uint64_t bytes) {
  if (seq == 0 || key.size() > kMaxKey || bytes > UINT32_MAX) return;
  if (!entries_) {
    entries_.reset(Zeroed<Entry>(capacity_));
    slots_.reset(Zeroed<std::uint32_t>(2 * capacity_));
  }
  if (slots_[Find(seq)] != 0) return;
  Entry& e = entries_[next_];
  if (e.seq != 0) {  // the oldest entry, evicted
    Unlink(Find(e.seq));
    --used_;
  }
  e.seq = seq;
  e.recipient = recipient;
  e.bytes = static_cast<std::uint32_t>(bytes);
  e.key_size = static_cast<std::uint8_t>(key.size());
  std::memcpy(e.key, key.data(), key.size());
  slots_[Find(seq)] = static_cast<std::uint32_t>(next_ + 1);
  ++used_;
  next_ = (next_ + 1) & (capacity_ - 1);
}

bool RecentRowKeys::Take(std::uint64_t seq, Row* row) {
  if (!entries_ || seq == 0) return false;
  const std::size_t i = Find(seq);
  if (slots_[i] == 0) return false;
  Entry& e = entries_[slots_[i] - 1];
  row->recipient = e.recipient;
  row->bytes = e.bytes;
  row->key = std::string_view(e.key, e.key_size);
  Unlink(i);
  e.seq = 0;  // its key stays readable until the ring comes round to it
  --used_;
  return true;
}

void RecentRowKeys::Clear() {
  entries_.reset();
  slots_.reset();
  used_ = 0;
  next_ = 0;
}

}  // namespace fastchat
