#include "acked_batch.h"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace fastchat {
namespace {

struct Plain {
  std::uint64_t recipient;
  std::uint64_t seq;
  std::string key;
  bool operator==(const Plain&) const = default;
};

std::vector<Plain> Read(std::string_view text, bool* ok) {
  std::vector<Plain> out;
  *ok = ForEachAckedRecord(text, [&](const AckedRecord& r) {
    out.push_back(Plain{r.recipient, r.seq, std::string(r.key)});
    return true;
  });
  return out;
}

TEST(AckedBatchTest, RecordsComeBackAsWrittenWhateverBytesTheKeysHold) {
  const std::vector<Plain> written = {
      {12, 3456, "d/7/00ff0a1b/0"},
      {0, 0, ""},
      {UINT64_MAX, UINT64_MAX, std::string("a b:c\n\0d 9:", 11)},
      {1, 2, std::string(1000, 'k')},
  };
  std::string text;
  for (const Plain& p : written) AppendAckedRecord(&text, p.recipient, p.seq, p.key);
  EXPECT_EQ(text.substr(0, 20), "12 3456 14:d/7/00ff0");
  bool ok = false;
  EXPECT_EQ(Read(text, &ok), written);
  EXPECT_TRUE(ok);
  EXPECT_EQ(Read("", &ok), std::vector<Plain>{});
  EXPECT_TRUE(ok);
}

// What schema migration 9 writes in SQL (recipient || ' ' || seq || ' ' ||
// byte length || ':' || key) reads back.
TEST(AckedBatchTest, TheFormMigrationNineWritesReadsBack) {
  bool ok = false;
  EXPECT_EQ(Read("5 90 3:k90", &ok), (std::vector<Plain>{{5, 90, "k90"}}));
  EXPECT_TRUE(ok);
}

TEST(AckedBatchTest, MalformedTextIsRefusedAfterTheWholeRecordsBeforeIt) {
  std::string good;
  AppendAckedRecord(&good, 1, 2, "key");
  for (const std::string bad : {"1 2 4:key", "1 2 3key", "1 2", "1 2 ", "x 2 3:key", "1 -2 3:key",
                                "1 2 99999999999999999999:k", "18446744073709551616 2 3:key", " 1 2 3:key"}) {
    bool ok = true;
    const std::vector<Plain> got = Read(good + bad, &ok);
    EXPECT_FALSE(ok) << bad;
    EXPECT_EQ(got, (std::vector<Plain>{{1, 2, "key"}})) << bad;
  }
}

TEST(AckedBatchTest, TheCallbackStopsTheWalk) {
  std::string text;
  for (std::uint64_t i = 0; i < 5; ++i) AppendAckedRecord(&text, i, i, "k");
  int seen = 0;
  EXPECT_TRUE(ForEachAckedRecord(text, [&](const AckedRecord&) { return ++seen < 2; }));
  EXPECT_EQ(seen, 2);
}

}  // namespace
}  // namespace fastchat
