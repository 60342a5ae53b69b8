// Progress of a file transfer (issue 8), with real server and client
// processes: the sender's --json output carries "progress" events (bytes,
// total, percent, rate, time left) ending at 100%, the receiver's too
// ("receiving big.bin from alice: N%" in text), and text output that is not
// a terminal stays free of progress lines.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "harness/fastchat.h"

namespace fastchat::testing {
namespace {

// The "progress" lines of `lines`, checked: one direction, one file, bytes
// and percent never going back, ending with everything through.
void CheckProgress(const std::vector<json>& lines, const std::string& direction, std::uint64_t size) {
  std::vector<json> p;
  for (const auto& j : lines)
    if (Str(j, "type") == "progress" && Str(j, "direction") == direction) p.push_back(j);
  ASSERT_GE(p.size(), 2u) << "a first and a last report";
  std::uint64_t last_bytes = 0;
  int last_percent = 0;
  for (const auto& j : p) {
    EXPECT_EQ(Str(j, "title"), "big.bin") << j.dump();
    EXPECT_EQ(j.value("total", std::uint64_t{0}), size) << j.dump();
    EXPECT_GE(j.value("bytes", std::uint64_t{0}), last_bytes) << j.dump();
    EXPECT_GE(j.value("percent", 0), last_percent) << j.dump();
    EXPECT_TRUE(j.contains("rate_bps") && j.contains("eta_s")) << j.dump();
    last_bytes = j.value("bytes", std::uint64_t{0});
    last_percent = j.value("percent", 0);
  }
  EXPECT_EQ(p.back().value("bytes", std::uint64_t{0}), size) << p.back().dump();
  EXPECT_EQ(p.back().value("percent", 0), 100) << p.back().dump();
  EXPECT_LT(p.front().value("percent", 0), 100) << p.front().dump();
}

TEST(FileProgress, SenderAndReceiverSeeAFileGoThrough) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  auto ca = w.Chat(a);
  auto cb = w.Chat(b);
  w.MakeFriends(*ca, a, *cb, b);
  ASSERT_EQ(ca->Quit(), 0);

  const std::uint64_t size = 3 * 1024 * 1024 + 12345;
  const std::string src = w.tmp().Sub("big.bin");
  WriteFile(src, RandomBytes(size));
  RunResult r = w.Run(a, {"single_image", "bob", src});
  ASSERT_TRUE(r.ok()) << r.Describe();
  CheckProgress(r.lines, "send", size);
  for (const auto& j : r.lines)
    if (Str(j, "type") == "progress") {
      EXPECT_EQ(Str(j, "to"), "bob") << j.dump();
    }

  cb->WaitFor(Like({{"type", "image"}, {"from", "alice"}}), "the file at bob");
  std::vector<json> seen = cb->history();
  CheckProgress(seen, "receive", size);
  for (const auto& j : seen)
    if (Str(j, "type") == "progress") {
      EXPECT_EQ(Str(j, "from"), "alice") << j.dump();
    }

  // Text output to a pipe: the result line, no progress lines.
  std::vector<std::string> argv = w.GlobalArgs(a);
  argv.erase(std::remove(argv.begin(), argv.end(), "--json"), argv.end());
  argv.push_back("single_image");
  argv.push_back("bob");
  argv.push_back(src);
  RunResult text = RunClientOnce(argv, w.tmp().Sub("text.stderr"), Millis(60000));
  ASSERT_EQ(text.exit_code, 0) << text.Describe();
  EXPECT_EQ(text.out.find("sending big.bin"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("sent big.bin"), std::string::npos) << text.out;
}

// `argv` as one /bin/sh command line.
std::string ShellLine(const std::vector<std::string>& argv) {
  std::string line;
  for (const std::string& a : argv) {
    std::string q = "'";
    for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    line += (line.empty() ? "" : " ") + q + "'";
  }
  return line;
}

// Runs `argv` with its output on a pseudo-terminal (util-linux script(1)):
// what a person at a terminal sees, control characters included.
RunResult RunOnTerminal(World& w, std::vector<std::string> argv, const std::string& label) {
  std::vector<std::string> wrapped = {"/usr/bin/script", "-qec", ShellLine(argv), "/dev/null"};
  return RunClientOnce(wrapped, w.tmp().Sub(label + ".stderr"), Millis(60000));
}

TEST(FileProgress, OnATerminalOneLineIsRedrawnInPlace) {
  World w;
  User a = w.Register("alice");
  User b = w.Register("bob");
  ASSERT_TRUE(w.Run(a, {"add_friend", "bob"}).ok());
  ASSERT_TRUE(w.Run(b, {"accept", "alice"}).ok());
  const std::string src = w.tmp().Sub("big.bin");
  WriteFile(src, RandomBytes(2 * 1024 * 1024));

  auto human = [&w](const User& u, std::vector<std::string> args) {
    std::vector<std::string> argv = w.GlobalArgs(u);
    argv.erase(std::remove(argv.begin(), argv.end(), "--json"), argv.end());
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  };
  RunResult send = RunOnTerminal(w, human(a, {"single_image", "bob", src}), "send");
  ASSERT_EQ(send.exit_code, 0) << send.Describe();
  EXPECT_NE(send.out.find("\r\033[Ksending big.bin to bob: [....................] 0% 0 B/2.0 MiB"),
            std::string::npos) << send.out;
  EXPECT_NE(send.out.find("\r\033[Ksending big.bin to bob: [####################] 100% 2.0 MiB/2.0 MiB, "),
            std::string::npos) << send.out;
  EXPECT_NE(send.out.find("sent big.bin (2097152 bytes) to bob"), std::string::npos) << send.out;

  RunResult receive = RunOnTerminal(w, human(b, {"pending"}), "receive");
  ASSERT_EQ(receive.exit_code, 0) << receive.Describe();
  EXPECT_NE(receive.out.find("\r\033[Kreceiving big.bin from alice: 0%"), std::string::npos) << receive.out;
  EXPECT_NE(receive.out.find("\r\033[Kreceiving big.bin from alice: 100%"), std::string::npos) << receive.out;
  EXPECT_NE(receive.out.find("[alice] sent a file \"big.bin\""), std::string::npos) << receive.out;
}

}  // namespace
}  // namespace fastchat::testing
