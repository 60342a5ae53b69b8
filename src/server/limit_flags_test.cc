// fastchat-server's limit flags: units, defaults, "last one wins", and the
// fit to the open-file limit.
#include "limit_flags.h"

#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <gtest/gtest.h>

namespace fastchat::server {
namespace {

// Parses `args` (without the program name) into a fresh Limits.
Limits Parse(std::vector<std::string> args) {
  Limits l;
  CLI::App app;
  AddLimitFlags(app, &l);
  std::vector<const char*> argv{"fastchat-server"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  app.parse(static_cast<int>(argv.size()), argv.data());
  return l;
}

TEST(LimitFlags, DefaultsAreTheDocumentedOnes) {
  const Limits l = Parse({});
  EXPECT_EQ(l.hello_timeout, std::chrono::seconds(10));
  EXPECT_EQ(l.login_timeout, std::chrono::seconds(30));
  EXPECT_EQ(l.max_unauth_frame, 65536u);
  EXPECT_EQ(l.max_unauth_connections, 1024u);
  EXPECT_EQ(l.max_connections, 20000u);
  EXPECT_EQ(l.max_connections_per_source, 64u);
  EXPECT_EQ(l.write_stall_timeout, std::chrono::seconds(60));
  EXPECT_EQ(l.ping_after, std::chrono::seconds(60));
  EXPECT_EQ(l.ping_timeout, std::chrono::seconds(30));
  EXPECT_DOUBLE_EQ(l.login_failures_per_account.burst, 10);
  EXPECT_DOUBLE_EQ(l.login_failures_per_source.burst, 30);
  EXPECT_DOUBLE_EQ(l.registrations_per_source.burst, 5);
  EXPECT_DOUBLE_EQ(l.sends_per_user.per_second, 200);
  EXPECT_DOUBLE_EQ(l.sends_per_user.burst, 1000);
  EXPECT_EQ(l.max_hash_queue, 64u);
  EXPECT_EQ(l.max_waiting_per_user, 100000u);
  EXPECT_EQ(l.max_waiting_bytes_per_user, 256u << 20);
  EXPECT_EQ(l.max_group_members, 1000u);
  EXPECT_EQ(l.max_groups_per_user, 100u);
  EXPECT_EQ(l.max_group_log_entries, 100000u);
  EXPECT_EQ(l.max_group_log_bytes, 256u << 20);
  EXPECT_EQ(l.group_log_check, std::chrono::seconds(10));
  EXPECT_EQ(l.group_hold_wait, std::chrono::seconds(3));
  EXPECT_EQ(l.group_hold_entries, 256u);
  EXPECT_EQ(l.group_hold_bytes, 1u << 20);
}

TEST(LimitFlags, SecondsAndPerMinuteAndTheLastValueWins) {
  const Limits l = Parse({"--hello-timeout", "0.25", "--ping-after", "2", "--login-failures-per-account", "3",
                          "--registrations-per-ip", "5", "--registrations-per-ip", "0", "--sends-per-second", "7.5"});
  EXPECT_EQ(l.hello_timeout, std::chrono::milliseconds(250));
  EXPECT_EQ(l.ping_after, std::chrono::seconds(2));
  EXPECT_DOUBLE_EQ(l.login_failures_per_account.burst, 3);
  EXPECT_DOUBLE_EQ(l.login_failures_per_account.per_second, 3.0 / 60);
  EXPECT_TRUE(l.registrations_per_source.off());
  EXPECT_DOUBLE_EQ(l.sends_per_user.per_second, 7.5);
}

TEST(LimitFlags, NegativeDurationsAreRejected) {
  EXPECT_THROW(Parse({"--login-timeout", "-1"}), CLI::ValidationError);
}

TEST(LimitFlags, CheckLimitsKeepsTheFrameBeforeLoginUsable) {
  Limits l;
  EXPECT_EQ(CheckLimits(l, 1u << 20), "");
  l.max_unauth_frame = 100;
  EXPECT_NE(CheckLimits(l, 1u << 20), "");
  l.max_unauth_frame = 1u << 21;
  EXPECT_NE(CheckLimits(l, 1u << 20), "");
  l.max_unauth_frame = 0;  // the same as --max-frame
  EXPECT_EQ(CheckLimits(l, 1u << 20), "");
}

TEST(LimitFlags, ConnectionsFitUnderTheOpenFileLimit) {
  Limits l;
  EXPECT_EQ(FitToFileLimit(&l, 1u << 20), "");
  EXPECT_EQ(l.max_connections, 20000u);
  const std::string note = FitToFileLimit(&l, 1024);
  EXPECT_EQ(l.max_connections, 1024u - 64u);
  EXPECT_NE(note.find("lowered to 960"), std::string::npos) << note;
  l.max_connections = 0;  // "only the file limit"
  FitToFileLimit(&l, 4096);
  EXPECT_EQ(l.max_connections, 4096u - 64u);
  l.reserved_fds = 5000;  // more reserved than there are: still one connection
  FitToFileLimit(&l, 4096);
  EXPECT_EQ(l.max_connections, 1u);
}

}  // namespace
}  // namespace fastchat::server
