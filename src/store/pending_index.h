// PendingIndex: SqliteStore's in-memory index of the `pending` table, so
// that table needs no index on disk but its rowid (the seq).
//
// Each DM used to insert into and then delete from three B-trees: the table
// and two indexes keyed by recipient, (recipient, seq) and (recipient,
// dedupe_key). With a standing backlog the two indexes dirty pages all over
// the file in every batch, and those pages are what the WAL writes and
// checkpoints: without them the store's cost per DM halves
// (docs/performance.md, "The pending table without indexes on disk"). The
// rows stay the truth; this index says where they are:
//  - per recipient, the seqs of its rows in ascending order (what
//    FetchPending reads and CountPending counts);
//  - by a keyed hash of (recipient, dedupe_key), the seqs that may hold that
//    key (what Enqueue confirms by reading the row, so a collision costs a
//    read and nothing else).
//
// Promises:
//  - After Add(r, s, h, b) and until Remove(r, s, h, b): SeqsAfter(r, ...)
//    names s (in ascending order with r's others), CountOf(r) counts it,
//    BytesOf(r) counts its b bytes (the row's payload; Remove must be given
//    the same b), and Candidates(h) names s. Removed seqs are named by
//    neither.
//  - Hashes are DedupeKeyHash (key_hash.h: SipHash under a key drawn at
//    random per process): a client that chooses dedupe keys (a DM's msg_id)
//    cannot make them collide, so probe chains stay short.
//  - Memory: 8 bytes per entry in its recipient's queue (at most twice that
//    with removed entries not yet compacted away, and a vector's growth),
//    16 bytes per hash slot at most 70% full, and a hash-map node per
//    recipient with rows: 42-51 bytes per entry measured (2 million entries
//    over 1,000 and 100,000 recipients). A queue that empties is freed, and
//    the hash table shrinks as it empties.
//  - Cost: Add of a seq above the recipient's others, Candidates and Remove
//    are O(1) amortised (Remove also a search in its queue); Holds is a
//    search in the recipient's queue. A search for a seq d entries past the
//    queue's first live one costs O(log d) (it gallops from there).
//
// Not thread-safe (SqliteStore is used by one thread at a time).
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "large_table.h"

namespace fastchat {

class PendingIndex {
 public:
  // Notes row `seq` (seq > 0), of `recipient`, whose key hashes to `hash`,
  // with `bytes` bytes of payload.
  void Add(std::uint64_t recipient, std::uint64_t seq, std::uint64_t hash, std::uint64_t bytes = 0);
  // Forgets row `seq` and its `bytes`; false (and no change) if it was not
  // noted with this recipient and hash.
  bool Remove(std::uint64_t recipient, std::uint64_t seq, std::uint64_t hash, std::uint64_t bytes = 0);
  // Whether row `seq` is noted as `recipient`'s (and not removed).
  bool Holds(std::uint64_t recipient, std::uint64_t seq) const;
  // Appends to `seqs` the rows that may hold a key with hash `hash`.
  void Candidates(std::uint64_t hash, std::vector<std::uint64_t>* seqs) const;
  // Appends to `seqs` up to `limit` of `recipient`'s seqs above
  // `after_seq`, ascending.
  void SeqsAfter(std::uint64_t recipient, std::uint64_t after_seq, std::size_t limit,
                 std::vector<std::uint64_t>* seqs) const;
  // Appends to `seqs` every row's seq at or below `bound`, all recipients'
  // (each recipient's ascending; O(recipients + rows appended)).
  void SeqsAtOrBelow(std::uint64_t bound, std::vector<std::uint64_t>* seqs) const;
  // A hint, no effect on the contents: starts loading the slot where a
  // Remove of a row with key hash `hash` looks first, so a caller removing
  // many rows can overlap their cache misses.
  void Prefetch(std::uint64_t hash) const {
    if (!slots_.empty()) __builtin_prefetch(&slots_[hash & (slots_.size() - 1)], 1);
  }
  std::size_t CountOf(std::uint64_t recipient) const;
  // The newest seq of `recipient` not removed, or 0 if none.
  std::uint64_t LastOf(std::uint64_t recipient) const;
  std::uint64_t BytesOf(std::uint64_t recipient) const;
  std::size_t size() const { return used_; }
  void Clear();

 private:
  // A recipient's seqs, ascending. A removed one stays until compaction
  // with kDead set (so the order holds for the search); `head` is
  // the first not removed.
  struct Queue {
    std::vector<std::uint64_t> seqs;
    std::size_t head = 0;
    std::size_t live = 0;
    std::uint64_t bytes = 0;  // of the live rows
  };
  static constexpr std::uint64_t kDead = std::uint64_t{1} << 63;

  // Open addressing with linear probing; seq 0 is an empty slot.
  struct Slot {
    std::uint64_t hash = 0;
    std::uint64_t seq = 0;
  };
  void Place(const Slot& slot);
  bool Erase(std::uint64_t hash, std::uint64_t seq);
  void Resize(std::size_t capacity);

  std::unordered_map<std::uint64_t, Queue> queues_;
  std::vector<Slot, LargeTableAllocator<Slot>> slots_;
  std::size_t used_ = 0;
};

}  // namespace fastchat
