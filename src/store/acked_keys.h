// AckedKeys: SqliteStore's in-memory index of the dedupe keys of pending
// rows acknowledged lately (store.h: a key outlives its row's
// acknowledgement for kDedupeRetentionMs, so a resend is not stored again).
//
// The keys themselves are in rows of the `acked_batches` table, one row per
// acknowledgement holding all of its keys (acked_batch.h), appended in
// acknowledgement order and indexed by nothing but their rowid: an on-disk
// index keyed by (recipient, key) would take each acknowledgement's insert
// at a random place of a B-tree holding five minutes of acknowledgements,
// dirtying a page per key, which tripled the store's cost per DM
// (docs/performance.md, "The store's floor per DM"). This index finds the
// row holding a key by a hash of (recipient, key) instead; many keys may
// name one row.
//
// Promises:
//  - Candidates(h) names every rowid added with hash h and not dropped
//    since, and maybe others (hash collisions): the caller reads each named
//    row and looks for its key there. So a row added by a transaction that
//    was then rolled back (its rowid taken by other keys) is never a false
//    match.
//  - Rowids are held in generations of at most kMaxGeneration entries, each
//    spanning at most kGenerationSpanMs of expiry times. DropExpired(now)
//    drops every generation whose newest expiry is at or before `now`, and
//    returns their rowid ranges so the caller deletes the rows: a key lives
//    at least until its expiry, and at most kGenerationSpanMs past it.
//  - Memory: 8 bytes per slot, at most 4/3..8/3 slots per entry (10.7 to
//    21.3 bytes per entry), for the keys acknowledged within the retention
//    (plus one generation span).
//
// Not thread-safe (SqliteStore is used by one thread at a time).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string_view>
#include <vector>

#include "large_table.h"

namespace fastchat {

class AckedKeys {
 public:
  static constexpr std::size_t kMaxGeneration = std::size_t{1} << 22;
  static constexpr std::uint64_t kGenerationSpanMs = 30 * 1000;

  // The hash Add and Candidates take for (recipient, key): DedupeKeyHash
  // (key_hash.h), keyed at random per process, so keys a client chooses
  // cannot be made to collide into long probe runs.
  static std::uint64_t Hash(std::uint64_t recipient, std::string_view key);

  // Notes that row `rowid` holds a key with hash `hash`, kept until
  // `expires_ms`.
  void Add(std::uint64_t hash, std::uint64_t rowid, std::uint64_t expires_ms);
  // A hint, no effect on the contents: starts loading the slot where the
  // next Add of `hash` looks first, so a caller adding many keys can
  // overlap their cache misses.
  void Prefetch(std::uint64_t hash) const;
  // Appends to `rowids` the rows that may hold a key with hash `hash`.
  void Candidates(std::uint64_t hash, std::vector<std::uint64_t>* rowids) const;

  struct Range {
    std::uint64_t first = 0;
    std::uint64_t last = 0;
  };
  // Drops the generations whose every key expired at or before now_ms;
  // returns their rowid ranges (first..last, inclusive).
  std::vector<Range> DropExpired(std::uint64_t now_ms);
  void Clear() { generations_.clear(); }

  std::size_t size() const;

 private:
  // An open-addressing table (linear probing) of slots: a 40-bit
  // fingerprint of the hash, which also places the slot, and the rowid's
  // 24-bit offset from `base`. 0 is an empty slot.
  struct Generation {
    std::uint64_t base = 0;
    std::uint64_t last = 0;
    std::uint64_t first_expiry_ms = 0;
    std::uint64_t newest_expiry_ms = 0;
    std::size_t count = 0;
    std::vector<std::uint64_t, LargeTableAllocator<std::uint64_t>> slots;

    // False if the rowid or the expiry does not fit this generation.
    bool Fits(std::uint64_t rowid, std::uint64_t expires_ms) const;
    void Insert(std::uint64_t fingerprint, std::uint64_t rowid, std::uint64_t expires_ms);
    void Find(std::uint64_t fingerprint, std::vector<std::uint64_t>* rowids) const;
    void Place(std::uint64_t slot);
  };

  std::deque<Generation> generations_;  // the last one takes new keys
};

}  // namespace fastchat
