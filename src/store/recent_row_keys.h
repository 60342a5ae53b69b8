// RecentRowKeys: the dedupe keys and payload sizes of the pending rows
// SqliteStore read lately, by seq, so acknowledging one of them need not
// read its row again.
//
// An acknowledgement records each row's key (acked_batches) and needs its
// payload size (PendingIndex::Remove). While the row is left where it is
// (dead, until a rotation clears its table), that meant one B-tree search
// per row only to read what FetchPending had just read: a fifth of the
// store thread in a login drain (docs/performance.md, "Acknowledging
// without reading the row again").
//
// Promises:
//  - Take(s) answers true, with the recipient, key and size last Put for
//    seq s, if s was Put and has not been Taken, evicted or Cleared since;
//    otherwise false, and the caller reads the row. It is a cache: a false
//    answer is always allowed.
//  - At most `capacity` entries; a Put past it evicts the oldest Put. A key
//    longer than kMaxKey bytes is not kept (Put does nothing).
//  - Seqs are never reused for another row (SqliteStore draws them only
//    upward), so an entry stays true for as long as its row exists; the
//    caller checks that the row exists (PendingIndex::Holds) before it
//    trusts an entry, and PendingIndex::Remove checks the key's hash.
//  - Memory: the table is allocated at the first Put, capacity × 128 bytes
//    of entries and capacity × 16 bytes of hash slots (9 MiB at the
//    default capacity), calloc'd: only the pages written are resident, and
//    the entries are written in order.
//  - Cost: Put and Take are O(1) (open addressing by seq, linear probing,
//    at most half full).
//
// Not thread-safe (SqliteStore is used by one thread at a time).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>

namespace fastchat {

class RecentRowKeys {
 public:
  static constexpr std::size_t kMaxKey = 107;

  // capacity: rounded up to a power of two, at least 2 and at most 2^31.
  explicit RecentRowKeys(std::size_t capacity = std::size_t{1} << 16);

  struct Row {
    std::uint64_t recipient = 0;
    std::uint64_t bytes = 0;
    std::string_view key;  // valid until the next Put or Clear
  };
  // Notes row `seq` (> 0) of `recipient`, with key `key` and `bytes` bytes
  // of payload. A seq noted already keeps its entry.
  void Put(std::uint64_t seq, std::uint64_t recipient, std::string_view key, std::uint64_t bytes);
  // If `seq` is noted: sets *row, forgets the entry and answers true.
  bool Take(std::uint64_t seq, Row* row);
  // Forgets everything and frees the table (the next Put allocates it).
  void Clear();
  std::size_t size() const { return used_; }

 private:
  struct Entry {
    std::uint64_t seq;  // 0: empty
    std::uint64_t recipient;
    std::uint32_t bytes;
    std::uint8_t key_size;
    char key[kMaxKey];
  };
  static_assert(sizeof(Entry) == 128);
  struct Free {
    void operator()(void* p) const noexcept { std::free(p); }
  };

  // A hash slot: the low 32 bits of a seq and 1 + the index of its entry
  // (0: empty). A probe reads the slots alone (1 MiB at the default
  // capacity), and an entry only where the bits match.
  struct Slot {
    std::uint32_t tag;
    std::uint32_t entry;
  };

  std::size_t Home(std::uint32_t tag) const {
    return static_cast<std::size_t>((tag * 0x9E3779B97F4A7C15ull) >> (64 - std::countr_zero(2 * capacity_)));
  }
  // The slot holding `seq`, or the empty slot where it would go.
  std::size_t Find(std::uint64_t seq) const;
  void Unlink(std::size_t slot);

  std::size_t capacity_;
  std::unique_ptr<Entry[], Free> entries_;  // a ring, in the order of Put
  std::unique_ptr<Slot[], Free> slots_;     // 2 × capacity of them
  std::size_t next_ = 0;  // the ring's next entry
  std::size_t used_ = 0;
};

}  // namespace fastchat
