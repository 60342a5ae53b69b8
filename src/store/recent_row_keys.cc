#include "recent_row_keys.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <new>

#include "linear_probe.h"

namespace fastchat {
namespace {

template <class T>
T* Zeroed(std::size_t n) {
  void* p = std::calloc(n, sizeof(T));
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<T*>(p);
}

}  // namespace

RecentRowKeys::RecentRowKeys(std::size_t capacity)
    : capacity_(std::bit_ceil(std::clamp<std::size_t>(capacity, 2, std::size_t{1} << 31))) {}

std::size_t RecentRowKeys::Find(std::uint64_t seq) const {
  const std::size_t mask = 2 * capacity_ - 1;
  const auto tag = static_cast<std::uint32_t>(seq);
  std::size_t i = Home(tag);
  while (slots_[i].entry != 0 && !(slots_[i].tag == tag && entries_[slots_[i].entry - 1].seq == seq)) {
    i = (i + 1) & mask;
  }
  return i;
}

void RecentRowKeys::Unlink(std::size_t i) {
  EraseSlot(
      slots_.get(), 2 * capacity_ - 1, i, [](const Slot& s) { return s.entry == 0; },
      [this](const Slot& s) { return Home(s.tag); });
}

void RecentRowKeys::Put(std::uint64_t seq, std::uint64_t recipient, std::string_view key, std::uint64_t bytes) {
  if (seq == 0 || key.size() > kMaxKey || bytes > UINT32_MAX) return;
  if (!entries_) {
    entries_.reset(Zeroed<Entry>(capacity_));
    slots_.reset(Zeroed<Slot>(2 * capacity_));
  }
  std::size_t at = Find(seq);
  if (slots_[at].entry != 0) return;
  Entry& e = entries_[next_];
  if (e.seq != 0) {  // the oldest entry, evicted; its unlinking may move `at`
    Unlink(Find(e.seq));
    --used_;
    at = Find(seq);
  }
  e.seq = seq;
  e.recipient = recipient;
  e.bytes = static_cast<std::uint32_t>(bytes);
  e.key_size = static_cast<std::uint8_t>(key.size());
  std::memcpy(e.key, key.data(), key.size());
  slots_[at] = Slot{static_cast<std::uint32_t>(seq), static_cast<std::uint32_t>(next_ + 1)};
  ++used_;
  next_ = (next_ + 1) & (capacity_ - 1);
}

bool RecentRowKeys::Take(std::uint64_t seq, Row* row) {
  if (!entries_ || seq == 0) return false;
  const std::size_t i = Find(seq);
  if (slots_[i].entry == 0) return false;
  Entry& e = entries_[slots_[i].entry - 1];
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
