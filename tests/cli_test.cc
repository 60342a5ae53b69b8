// Command lines and settings of the three programs (fastchat,
// fastchat-server, fastchat-balancer), run as real processes: options that
// can be repeated take one value each; the cluster secret file is read the
// same way by the server and the balancer.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "harness/cluster.h"
#include "harness/fastchat.h"

namespace fastchat::testing {
namespace {

// How a program that was expected to end ended.
struct Ended {
  int code = -1;
  std::string out;
  std::string err;
};

// Runs `argv` to its exit (stdin closed); throws if it is still running
// after 20 s.
Ended RunToExit(TempDir& tmp, const std::vector<std::string>& argv) {
  static int n = 0;
  SpawnOptions so;
  so.argv = argv;
  so.stderr_path = tmp.Sub("exit-" + std::to_string(++n) + ".stderr");
  auto p = Process::Spawn(so);
  p->CloseStdin();
  Ended e;
  bool timed_out = false;
  e.out = p->ReadToEof(kDefaultTimeout, &timed_out);
  if (timed_out) throw std::runtime_error(p->CommandLine() + " did not exit");
  e.code = p->Wait(kDefaultTimeout).value_or(-1);
  e.err = p->StderrTail();
  return e;
}

bool Has(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Nothing listens on these (ports below 1024 nobody here binds): connecting
// is refused at once, and the error names each address tried.
const char kNoOne1[] = "127.0.0.1:1";
const char kNoOne2[] = "127.0.0.1:2";
const char kSecret[] = "cli-test-cluster-secret";

TEST(Cli, ClientBalancerTakesOneValueEach) {
  TempDir tmp("fastchat-cli");
  const std::vector<std::string> common = {"--home", tmp.Sub("home"), "--password", "cli-password", "--json"};
  // Repeated, right before the command: both balancers are asked, and
  // "register alice" is the command.
  std::vector<std::string> argv = {ClientBinary()};
  argv.insert(argv.end(), common.begin(), common.end());
  argv.insert(argv.end(), {"--balancer", kNoOne1, "--balancer", kNoOne2, "register", "alice"});
  Ended e = RunToExit(tmp, argv);
  EXPECT_EQ(e.code, 1) << e.out << e.err;
  EXPECT_TRUE(Has(e.out, R"("cmd":"register")")) << e.out;
  EXPECT_TRUE(Has(e.out, "no balancer answered")) << e.out;
  EXPECT_TRUE(Has(e.out, kNoOne1) && Has(e.out, kNoOne2)) << e.out;

  // Comma-separated in one value works the same.
  argv = {ClientBinary()};
  argv.insert(argv.end(), common.begin(), common.end());
  argv.insert(argv.end(), {"--balancer", std::string(kNoOne1) + "," + kNoOne2, "register", "alice"});
  e = RunToExit(tmp, argv);
  EXPECT_TRUE(Has(e.out, R"("cmd":"register")") && Has(e.out, kNoOne1) && Has(e.out, kNoOne2)) << e.out;
}

TEST(Cli, ServerBalancerTakesOneValueEach) {
  TempDir tmp("fastchat-cli");
  {
    ServerOptions o;
    o.log_level = "info";
    o.extra_args = {"--cluster-secret", kSecret, "--balancer", kNoOne1, "--balancer", kNoOne2};
    ServerProcess s(tmp.Sub("repeated", true), o);
    EXPECT_TRUE(WaitForFileText(s.log_path(), "reporting load to 2 balancer(s)", kDefaultTimeout)) << s.StderrTail();
  }
  {
    // The list form of a --config file (examples/multi-machine) still works.
    const std::string conf = tmp.Sub("server.conf");
    WriteFile(conf, std::string("balancer = [\"") + kNoOne1 + "\", \"" + kNoOne2 + "\"]\n");
    ServerOptions o;
    o.log_level = "info";
    o.extra_args = {"--cluster-secret", kSecret, "--config", conf};
    ServerProcess s(tmp.Sub("config", true), o);
    EXPECT_TRUE(WaitForFileText(s.log_path(), "reporting load to 2 balancer(s)", kDefaultTimeout)) << s.StderrTail();
  }
  // Two values after one --balancer: refused, not taken as two balancers.
  Ended e = RunToExit(tmp, {ServerBinary(), "--db", tmp.Sub("refused.db"), "--listen", "127.0.0.1:0",
                            "--cluster-secret", kSecret, "--balancer", kNoOne1, kNoOne2});
  EXPECT_NE(e.code, 0);
  EXPECT_TRUE(Has(e.out + e.err, "not expected: " + std::string(kNoOne2))) << e.out << e.err;
}

TEST(Cli, ServerServesMetricsOnLoopbackOnly) {
  TempDir tmp("fastchat-cli");
  for (const char* where : {"0.0.0.0:0", "192.0.2.1:9464"}) {
    Ended e = RunToExit(tmp, {ServerBinary(), "--db", tmp.Sub("m.db"), "--listen", "127.0.0.1:0", "--pwhash", "min",
                              "--insecure-plain-tcp", "--metrics-listen", where});
    EXPECT_EQ(e.code, 2) << where;
    EXPECT_TRUE(Has(e.err, "metrics are served on a loopback address only")) << where << ": " << e.out << e.err;
  }
  Ended bad = RunToExit(tmp, {ServerBinary(), "--db", tmp.Sub("m.db"), "--metrics-listen", "localhost"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_TRUE(Has(bad.err, "--metrics-listen wants HOST:PORT")) << bad.err;
}

TEST(Cli, ServerAndBalancerReadOneSecretFileAlike) {
  TempDir tmp("fastchat-cli");
  const std::string secret = "cli-secret-" + RandomToken(20);
  const std::string file = tmp.Sub("cluster.secret");
  WriteFile(file, secret + "\n");
  ASSERT_EQ(::chmod(file.c_str(), 0600), 0);

  BalancerProcess balancer(tmp.Sub("balancer", true), "", 1500, {"--cluster-secret-file", file});
  // One server reads the file; another is given the secret, without the
  // newline, on the command line. The balancer accepts both, so the two
  // programs read the same bytes from the file, without its newline.
  ServerOptions o;
  o.log_level = "info";
  o.extra_args = {"--server-id", "from-file", "--cluster-secret-file", file, "--balancer", balancer.address()};
  ServerProcess from_file(tmp.Sub("from-file", true), o);
  o.extra_args = {"--server-id", "from-args", "--cluster-secret", secret, "--balancer", balancer.address()};
  ServerProcess from_args(tmp.Sub("from-args", true), o);
  EXPECT_TRUE(WaitForFileText(from_file.log_path(), "registered with balancer", kDefaultTimeout))
      << from_file.StderrTail() << "\nbalancer:\n" << balancer.LogTail();
  EXPECT_TRUE(WaitForFileText(from_args.log_path(), "registered with balancer", kDefaultTimeout))
      << from_args.StderrTail() << "\nbalancer:\n" << balancer.LogTail();
  // Only the command-line secret is warned about.
  EXPECT_TRUE(Has(FileText(from_args.log_path()), "visible to every local user in the process list"));
  EXPECT_FALSE(Has(FileText(from_file.log_path()), "process list"));
  EXPECT_FALSE(Has(FileText(balancer.log_path()), "process list"));

  // Readable by others: both programs refuse to start, saying why.
  ASSERT_EQ(::chmod(file.c_str(), 0644), 0);
  Ended b = RunToExit(tmp, {BalancerBinary(), "--listen", "127.0.0.1:0", "--cluster-secret-file", file});
  EXPECT_EQ(b.code, 2) << b.out << b.err;
  EXPECT_TRUE(Has(b.err, "chmod 600 " + file)) << b.err;
  Ended s = RunToExit(tmp, {ServerBinary(), "--db", tmp.Sub("refused.db"), "--listen", "127.0.0.1:0",
                            "--cluster-secret-file", file, "--balancer", balancer.address()});
  EXPECT_EQ(s.code, 2) << s.out << s.err;
  EXPECT_TRUE(Has(s.err, "chmod 600 " + file)) << s.err;
}

}  // namespace
}  // namespace fastchat::testing
