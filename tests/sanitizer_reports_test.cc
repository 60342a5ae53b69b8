// Sanitizer builds only: a sanitizer finding in a child process started by
// the test harness fails the test that started it, whatever the child's
// exit status and wherever its stderr went (harness/process.h).
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <string>

#include "harness/process.h"

namespace fastchat::testing {
namespace {

// Runs the probe with `mode`, stderr to /dev/null, and reaps it.
void RunProbe(const char* mode) {
  SpawnOptions so;
  so.argv = {BinDir() + "/tests/fastchat-sanitizer-probe", mode};
  auto p = Process::Spawn(so);
  bool timed_out = false;
  p->ReadToEof(kDefaultTimeout, &timed_out);
  EXPECT_FALSE(timed_out);
  EXPECT_TRUE(p->Wait(kDefaultTimeout).has_value());
}

// The probe's exit status when it has no defect.
int CleanProbeStatus() {
  SpawnOptions so;
  so.argv = {BinDir() + "/tests/fastchat-sanitizer-probe", "clean"};
  auto p = Process::Spawn(so);
  return p->Wait(kDefaultTimeout).value_or(-1);
}

TEST(SanitizerReports, AreCollectedInThisBuild) { EXPECT_TRUE(IsSanitizerBuild()); }

TEST(SanitizerReports, ACleanChildPasses) { EXPECT_EQ(CleanProbeStatus(), 0); }

#ifdef FASTCHAT_SANITIZE_ADDRESS
TEST(SanitizerReports, AHeapOverflowInAChildFailsTheTest) {
  EXPECT_NONFATAL_FAILURE(RunProbe("overflow"), "ERROR: AddressSanitizer: heap-buffer-overflow");
}

TEST(SanitizerReports, ALeakInAChildFailsTheTest) {
  EXPECT_NONFATAL_FAILURE(RunProbe("leak"), "ERROR: LeakSanitizer: detected memory leaks");
}
#endif

#ifdef FASTCHAT_SANITIZE_UNDEFINED
TEST(SanitizerReports, UndefinedBehaviourInAChildFailsTheTest) {
  EXPECT_NONFATAL_FAILURE(RunProbe("ub"), "runtime error: signed integer overflow");
}
#endif

#ifdef FASTCHAT_SANITIZE_THREAD
TEST(SanitizerReports, ADataRaceInAChildFailsTheTest) {
  EXPECT_NONFATAL_FAILURE(RunProbe("race"), "WARNING: ThreadSanitizer: data race");
}
#endif

}  // namespace
}  // namespace fastchat::testing
