#include "pending_index.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "key_hash.h"

namespace fastchat {
namespace {

std::vector<std::uint64_t> After(const PendingIndex& index, std::uint64_t recipient, std::uint64_t after,
                                 std::size_t limit = 1'000'000) {
  std::vector<std::uint64_t> seqs;
  index.SeqsAfter(recipient, after, limit, &seqs);
  return seqs;
}

bool Names(const PendingIndex& index, std::uint64_t hash, std::uint64_t seq) {
  std::vector<std::uint64_t> seqs;
  index.Candidates(hash, &seqs);
  return std::find(seqs.begin(), seqs.end(), seq) != seqs.end();
}

// Bytes per recipient: added with a row, taken back with its removal, not
// added twice for a row noted twice, untouched by a failed removal.
TEST(PendingIndexTest, BytesOfCountsTheLiveRowsPayloads) {
  PendingIndex index;
  index.Add(1, 10, 100, 50);
  index.Add(1, 11, 101, 7);
  index.Add(2, 12, 102, 1000);
  index.Add(1, 10, 100, 50);  // already noted
  EXPECT_EQ(index.BytesOf(1), 57u);
  EXPECT_EQ(index.BytesOf(2), 1000u);
  EXPECT_EQ(index.BytesOf(3), 0u);
  EXPECT_FALSE(index.Remove(1, 12, 102, 1000));  // another recipient's row
  EXPECT_EQ(index.BytesOf(1), 57u);
  EXPECT_TRUE(index.Remove(1, 10, 100, 50));
  EXPECT_EQ(index.BytesOf(1), 7u);
  index.Add(1, 10, 100, 50);  // an undone removal
  EXPECT_EQ(index.BytesOf(1), 57u);
  EXPECT_TRUE(index.Remove(1, 10, 100, 50));
  EXPECT_TRUE(index.Remove(1, 11, 101, 7));
  EXPECT_EQ(index.BytesOf(1), 0u);
}

// A recipient's seqs come back ascending, after a given seq and up to a
// limit; its count and the hash lookup agree.
TEST(PendingIndexTest, ARecipientsSeqsComeBackInOrderAfterASeqUpToALimit) {
  PendingIndex index;
  for (std::uint64_t seq = 1; seq <= 30; ++seq) index.Add(seq % 3, seq, DedupeKeyHash(seq % 3, std::to_string(seq)));
  EXPECT_EQ(index.size(), 30u);
  EXPECT_EQ(index.CountOf(1), 10u);
  EXPECT_EQ(After(index, 1, 0), (std::vector<std::uint64_t>{1, 4, 7, 10, 13, 16, 19, 22, 25, 28}));
  EXPECT_EQ(After(index, 1, 10, 3), (std::vector<std::uint64_t>{13, 16, 19}));
  EXPECT_EQ(After(index, 1, 28), std::vector<std::uint64_t>{});
  EXPECT_EQ(After(index, 1, ~std::uint64_t{0}), std::vector<std::uint64_t>{});
  EXPECT_EQ(After(index, 9, 0), std::vector<std::uint64_t>{});  // no rows
  EXPECT_TRUE(Names(index, DedupeKeyHash(1, "7"), 7));
  EXPECT_FALSE(Names(index, DedupeKeyHash(2, "7"), 7));
  // The newest not removed (a group log's newest entry, SqliteStore's
  // predecessor for the next one).
  EXPECT_EQ(index.LastOf(1), 28u);
  EXPECT_EQ(index.LastOf(9), 0u);
  ASSERT_TRUE(index.Remove(1, 28, DedupeKeyHash(1, "28")));
  ASSERT_TRUE(index.Remove(1, 25, DedupeKeyHash(1, "25")));
  EXPECT_EQ(index.LastOf(1), 22u);
}

// Remove takes exactly what was added: not another recipient's seq, not
// with another hash, not twice.
TEST(PendingIndexTest, RemoveTakesOnlyWhatWasAddedAndOnlyOnce) {
  PendingIndex index;
  const std::uint64_t h = DedupeKeyHash(5, "k");
  index.Add(5, 100, h);
  EXPECT_FALSE(index.Remove(6, 100, h));
  EXPECT_FALSE(index.Remove(5, 100, h + 1));
  EXPECT_FALSE(index.Remove(5, 101, h));
  EXPECT_EQ(index.CountOf(5), 1u);
  EXPECT_TRUE(index.Holds(5, 100));
  EXPECT_FALSE(index.Holds(6, 100));
  EXPECT_FALSE(index.Holds(5, 101));
  EXPECT_FALSE(index.Holds(5, 100 | (std::uint64_t{1} << 63)));
  EXPECT_TRUE(index.Remove(5, 100, h));
  EXPECT_FALSE(index.Holds(5, 100));
  EXPECT_FALSE(index.Remove(5, 100, h));
  EXPECT_EQ(index.CountOf(5), 0u);
  EXPECT_EQ(index.size(), 0u);
  EXPECT_FALSE(Names(index, h, 100));
}

// What an undone acknowledgement does: a removed seq added back below newer
// ones takes its place in order.
TEST(PendingIndexTest, ASeqAddedBackBelowNewerOnesTakesItsPlace) {
  PendingIndex index;
  for (std::uint64_t seq : {10, 20, 30, 40}) index.Add(1, seq, seq);
  ASSERT_TRUE(index.Remove(1, 10, 10));
  ASSERT_TRUE(index.Remove(1, 30, 30));
  EXPECT_EQ(After(index, 1, 0), (std::vector<std::uint64_t>{20, 40}));
  index.Add(1, 30, 30);
  index.Add(1, 10, 10);
  index.Add(1, 25, 25);  // never there before
  EXPECT_EQ(After(index, 1, 0), (std::vector<std::uint64_t>{10, 20, 25, 30, 40}));
  EXPECT_EQ(index.CountOf(1), 5u);
  index.Add(1, 20, 20);  // already there: no change
  EXPECT_EQ(index.CountOf(1), 5u);
  EXPECT_EQ(index.size(), 5u);
}

TEST(PendingIndexTest, HoldsAndSeqsAfterFindEverySeqAtEveryDistanceFromTheHead) {
  // One queue of the even seqs 2..2000; the searches gallop from its first
  // live entry, so every distance from there (and every seq between, below
  // and above the entries) is asked, before and after the head moves and
  // with removed entries inside.
  PendingIndex index;
  std::set<std::uint64_t> model;
  for (std::uint64_t seq = 2; seq <= 2000; seq += 2) {
    index.Add(7, seq, DedupeKeyHash(7, std::to_string(seq)));
    model.insert(seq);
  }
  const auto check = [&](const char* when) {
    for (std::uint64_t seq = 0; seq <= 2003; ++seq) {
      ASSERT_EQ(index.Holds(7, seq), model.count(seq) == 1) << when << " seq " << seq;
      const auto it = model.upper_bound(seq);
      const std::vector<std::uint64_t> want =
          it == model.end() ? std::vector<std::uint64_t>{} : std::vector<std::uint64_t>{*it};
      ASSERT_EQ(After(index, 7, seq, 1), want) << when << " after " << seq;
    }
  };
  check("all there");
  // The head moves: the oldest 300 go, in order.
  for (std::uint64_t seq = 2; seq <= 600; seq += 2) {
    ASSERT_TRUE(index.Remove(7, seq, DedupeKeyHash(7, std::to_string(seq))));
    model.erase(seq);
  }
  check("head moved");
  // Holes past the head: every third of the next 300.
  for (std::uint64_t seq = 606; seq <= 1200; seq += 6) {
    ASSERT_TRUE(index.Remove(7, seq, DedupeKeyHash(7, std::to_string(seq))));
    model.erase(seq);
  }
  check("holes");
  // A removed seq cannot be removed again, wherever it is.
  ASSERT_FALSE(index.Remove(7, 600, DedupeKeyHash(7, "600")));
  ASSERT_FALSE(index.Remove(7, 606, DedupeKeyHash(7, "606")));
}

// Against a plain model, through many random adds, removes (oldest first,
// as acknowledgements mostly come, and at random), re-adds, growth,
// compaction and shrinking, with a few hashes shared by many seqs.
TEST(PendingIndexTest, AgreesWithAPlainModelThroughRandomOperations) {
  PendingIndex index;
  std::map<std::uint64_t, std::set<std::uint64_t>> model;  // recipient -> seqs
  std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>> rows;  // seq -> (recipient, hash)
  std::mt19937_64 rng(12345);
  std::uint64_t next_seq = 0;
  auto hash_of = [&](std::uint64_t recipient, std::uint64_t seq) {
    // One in 500 shares a hash with the others: collisions must still work.
    return seq % 500 == 0 ? std::uint64_t{42} : DedupeKeyHash(recipient, std::to_string(seq));
  };
  std::vector<std::pair<std::uint64_t, std::uint64_t>> removed;  // (recipient, seq), to add back
  for (int step = 0; step < 200'000; ++step) {
    const unsigned op = static_cast<unsigned>(rng() % 100);
    if (op < 50 || rows.empty()) {
      const std::uint64_t recipient = rng() % 50;
      const std::uint64_t seq = ++next_seq;
      index.Add(recipient, seq, hash_of(recipient, seq));
      model[recipient].insert(seq);
      rows[seq] = {recipient, hash_of(recipient, seq)};
    } else if (op < 90) {
      // The oldest row of a random recipient, or a random row.
      std::uint64_t seq = 0;
      if (op < 75) {
        auto it = model.begin();
        std::advance(it, static_cast<long>(rng() % model.size()));
        seq = *it->second.begin();
      } else {
        auto it = rows.lower_bound(rng() % (next_seq + 1));
        if (it == rows.end()) it = rows.begin();
        seq = it->first;
      }
      const auto [recipient, hash] = rows[seq];
      ASSERT_TRUE(index.Remove(recipient, seq, hash)) << step;
      ASSERT_FALSE(index.Remove(recipient, seq, hash)) << step;
      model[recipient].erase(seq);
      if (model[recipient].empty()) model.erase(recipient);
      rows.erase(seq);
      removed.emplace_back(recipient, seq);
    } else if (!removed.empty()) {
      const std::size_t k = rng() % removed.size();
      const auto [recipient, seq] = removed[k];
      removed[k] = removed.back();
      removed.pop_back();
      index.Add(recipient, seq, hash_of(recipient, seq));
      model[recipient].insert(seq);
      rows[seq] = {recipient, hash_of(recipient, seq)};
    }
    if (step % 5000 == 0 || step == 199'999) {
      ASSERT_EQ(index.size(), rows.size()) << step;
      for (std::uint64_t r = 0; r < 50; ++r) {
        const auto it = model.find(r);
        const std::vector<std::uint64_t> want =
            it == model.end() ? std::vector<std::uint64_t>{} : std::vector<std::uint64_t>(it->second.begin(), it->second.end());
        ASSERT_EQ(After(index, r, 0), want) << step << " recipient " << r;
        ASSERT_EQ(index.CountOf(r), want.size());
        ASSERT_EQ(index.LastOf(r), want.empty() ? 0 : want.back()) << step << " recipient " << r;
      }
      for (const auto& [seq, rh] : rows) {
        ASSERT_TRUE(Names(index, rh.second, seq)) << step << " seq " << seq;
        ASSERT_TRUE(index.Holds(rh.first, seq)) << step << " seq " << seq;
        ASSERT_FALSE(index.Holds(rh.first + 1, seq)) << step << " seq " << seq;
      }
      for (const auto& [recipient, seq] : removed) {
        ASSERT_FALSE(Names(index, hash_of(recipient, seq), seq));
        ASSERT_FALSE(index.Holds(recipient, seq));
      }
    }
  }
  // Empty it: everything goes, and the table shrinks back.
  for (const auto& [seq, rh] : rows) ASSERT_TRUE(index.Remove(rh.first, seq, rh.second));
  EXPECT_EQ(index.size(), 0u);
  for (std::uint64_t r = 0; r < 50; ++r) EXPECT_EQ(index.CountOf(r), 0u);
}

}  // namespace
}  // namespace fastchat
