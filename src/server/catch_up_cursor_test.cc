// CatchUpCursor against a model of the store: a user's pending rows, read
// in pages after a seq, while pushes arrive live, out of order, or are
// missed. Every row must reach the client.
#include "catch_up_cursor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <vector>

namespace fastchat::server {
namespace {

// One receiving session: what it sent, reading `store` the way
// Session::CatchUp does (pages of `page` rows after the cursor's seq).
struct Model {
  std::set<std::uint64_t> store;  // committed rows of the user
  std::vector<std::uint64_t> sent;
  CatchUpCursor cursor;

  void Push(std::uint64_t seq) {
    sent.push_back(seq);
    cursor.Sent(seq);
  }
  void CatchUp(std::size_t page = 2) {
    std::uint64_t after = cursor.last_sent();
    for (;;) {
      after = cursor.ReadAfter(after);
      std::vector<std::uint64_t> rows;
      for (auto it = store.upper_bound(after); it != store.end() && rows.size() < page; ++it) rows.push_back(*it);
      if (rows.empty()) return;
      for (std::uint64_t seq : rows) {
        Push(seq);
        after = seq;
      }
    }
  }
  bool SentAll() const {
    std::set<std::uint64_t> got(sent.begin(), sent.end());
    return got == store;
  }
};

TEST(CatchUpCursor, ARowMissedBelowTheHighestSentIsReadAgain) {
  // Server B's row 10 is pushed live; the session then lags, and server A's
  // row 9 arrives (out of order) while it cannot take pushes. Reading after
  // the highest seq sent (10) would leave 9 until the next login.
  Model m;
  m.store = {9, 10};
  m.Push(10);
  m.cursor.Missed(9);
  m.CatchUp();
  EXPECT_TRUE(m.SentAll());
  EXPECT_EQ(m.sent, (std::vector<std::uint64_t>{10, 9, 10}));  // 10 again: a repeat the client drops
}

TEST(CatchUpCursor, AMissedRowAboveTheHighestSentCostsNoRepeat) {
  Model m;
  m.store = {1, 2, 3, 4};
  m.Push(1);
  m.Push(2);
  m.cursor.Missed(4);
  m.CatchUp();
  EXPECT_EQ(m.sent, (std::vector<std::uint64_t>{1, 2, 3, 4}));
}

TEST(CatchUpCursor, AMissDuringAReadRewindsTheReadInProgress) {
  CatchUpCursor c;
  c.Sent(50);
  std::uint64_t after = c.ReadAfter(c.last_sent());
  EXPECT_EQ(after, 50u);
  after = 70;  // the read has gone on to 70
  c.Sent(70);
  c.Missed(20);  // a row pushed from another server arrives while reading
  EXPECT_EQ(c.ReadAfter(after), 19u);
  EXPECT_EQ(c.ReadAfter(80), 80u);  // the rewind is used once
}

TEST(CatchUpCursor, RestartReadsEverythingPending) {
  Model m;
  m.store = {3, 5, 8};
  m.CatchUp();
  m.sent.clear();
  m.cursor.Restart();
  m.CatchUp();
  EXPECT_EQ(m.sent, (std::vector<std::uint64_t>{3, 5, 8}));
}

TEST(CatchUpCursor, OutOfOrderPushesWithLagNeverStrandARow) {
  // Rows committed by three servers, pushed in an order other than seq
  // order; every third push finds the session lagging (missed) and forces a
  // catch-up. Whatever the order, every row is sent.
  const std::vector<std::uint64_t> arrival = {3, 1, 2, 6, 4, 5, 9, 7, 8, 12, 10, 11, 15, 13, 14};
  for (std::size_t lag_every = 2; lag_every <= 5; ++lag_every) {
    Model m;
    for (std::size_t i = 0; i < arrival.size(); ++i) {
      m.store.insert(arrival[i]);
      if (i % lag_every == lag_every - 1) {
        m.cursor.Missed(arrival[i]);
        m.CatchUp(3);
      } else {
        m.Push(arrival[i]);
      }
    }
    EXPECT_TRUE(m.SentAll()) << "lag every " << lag_every;
  }
}

}  // namespace
}  // namespace fastchat::server
