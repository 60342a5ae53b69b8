#include "key_hash.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>
#include <unistd.h>

namespace fastchat {
namespace {

// Runs this test binary again, in a new process, to print its hash of a
// fixed pair.
std::string HashInAnotherProcess() {
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);  // not the shell's
  if (n <= 0) return "";
  self[n] = '\0';
  const std::string command = std::string("FASTCHAT_KEY_HASH_PROBE=1 '") + self +
                              "' --gtest_filter=KeyHashTest.IsKeyedAtRandomPerProcess 2>&1";
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return "";
  std::string out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  pclose(p);
  const std::size_t at = out.find("hash=");
  return at == std::string::npos ? "" : out.substr(at + 5, out.find('\n', at) - at - 5);
}

// A client chooses dedupe keys (a DM's msg_id): with a hash it could
// compute, it could make thousands of keys share a probe run. The key is
// drawn per process, so the same pair hashes differently in each.
TEST(KeyHashTest, IsKeyedAtRandomPerProcess) {
  const std::uint64_t here = DedupeKeyHash(1, "d/1/ab/0");
  if (std::getenv("FASTCHAT_KEY_HASH_PROBE") != nullptr) {
    std::printf("hash=%llu\n", static_cast<unsigned long long>(here));
    return;
  }
  EXPECT_EQ(DedupeKeyHash(1, "d/1/ab/0"), here);  // stable within a process
  const std::string a = HashInAnotherProcess();
  const std::string b = HashInAnotherProcess();
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  EXPECT_NE(a, b);
  EXPECT_NE(a, std::to_string(here));
}

TEST(KeyHashTest, TellsRecipientsAndKeysApartAtAnyLength) {
  EXPECT_NE(DedupeKeyHash(1, "k"), DedupeKeyHash(2, "k"));
  EXPECT_NE(DedupeKeyHash(1, "k"), DedupeKeyHash(1, "k2"));
  EXPECT_NE(DedupeKeyHash(1, ""), DedupeKeyHash(2, ""));
  const std::string long_key(1000, 'k');  // past the stack buffer
  EXPECT_EQ(DedupeKeyHash(7, long_key), DedupeKeyHash(7, long_key));
  EXPECT_NE(DedupeKeyHash(7, long_key), DedupeKeyHash(7, long_key + "x"));
}

}  // namespace
}  // namespace fastchat
