// fastchat-bench: a load generator for FastChat servers.
//
// One thread, one epoll loop, many non-blocking TCP connections speaking the
// real wire protocol (docs/protocol.md). This header holds what the three
// translation units share: options, the result record, the latency
// histogram, the per-stream order/loss checker and /proc sampling.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace fastchat::bench {

std::int64_t NowNs();  // steady_clock, nanoseconds

// ------------------------------------------------------------------ options
struct Options {
  std::vector<std::string> servers;  // HOST:PORT, users spread round-robin
  // dm: user i on server (i / 2) mod N instead of i mod N, so that both
  // users of a pair (i, i ^ 1) share a server and no DM crosses servers.
  bool pairs_together = false;
  // group: every member of group g on server g mod N instead of spread
  // round-robin, so that no delivery crosses servers.
  bool groups_together = false;
  // group: the senders of group g on server g mod N, its other members on
  // server (g + 1) mod N, so that every delivery crosses servers, each
  // member's through one link.
  bool groups_apart = false;
  std::vector<int> server_pids;
  std::vector<int> db_pids;
  std::string workload = "dm";       // dm | group | offline | login | idle
  int users = 1000;
  int groups = 1;
  int group_size = 1000;
  int senders = 10;                  // per group
  int payload = 100;                 // plaintext bytes per message
  int window = 16;                   // closed loop: un-Ok'd sends per sender
  double rate = 0;                   // open loop: offered msgs/s in total (0 = closed loop)
  double duration = 10;              // measured seconds
  double warmup = 2;                 // seconds before the measured window
  double drain = 5;                  // stop after this long without progress while draining
  long messages = 0;                 // offline: messages per sender (0 = send for --duration)
  bool encrypt = true;
  bool tls = false;                  // TLS 1.3 to the servers (certificate not verified)
  bool verify_signatures = false;    // group: receivers check Ed25519 signatures
  bool batch_add = false;            // group: add members with one GroupAdd per 1000 (more_users)
  std::string json_file;
  int sources = 1;                   // idle: source addresses 127.0.0.1..127.0.0.N
  int concurrency = 256;             // connections set up at once
  std::string password = "fastchat-bench-pw";
  std::string prefix;                // user-name prefix (default: random per run)
  double setup_timeout = 60;         // seconds without progress before a setup phase fails
  // Fault injection for testing the checker through the real receive path:
  // every Nth received message is dropped / handled twice / handled late.
  long inject_loss = 0;
  long inject_dup = 0;
  long inject_reorder = 0;
};

// ------------------------------------------------------------------ histogram
// Log-bucketed histogram (HdrHistogram-like): 128 sub-buckets per power of
// two, so a reported value is within 1/128 (0.8%) of the true one.
class Histogram {
 public:
  Histogram();
  void Record(std::int64_t value);
  std::uint64_t count() const { return count_; }
  std::int64_t max() const { return max_; }
  std::int64_t min() const { return count_ ? min_ : 0; }
  double mean() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0; }
  // Smallest bucket upper bound with at least q (0..1) of the samples at or below it.
  std::int64_t Percentile(double q) const;
  void Merge(const Histogram& other);

  static std::size_t BucketOf(std::uint64_t v);
  static std::uint64_t BucketHigh(std::size_t idx);  // largest value mapping to idx

 private:
  std::vector<std::uint64_t> buckets_;
  std::uint64_t count_ = 0;
  std::int64_t max_ = 0;
  std::int64_t min_ = 0;
  long double sum_ = 0;
};

// ------------------------------------------------------------------ checker
// One stream: the messages of one sender as seen by one receiver. Counters
// are dense from 0 in send order. Normal in-order arrival is O(1); `missing_`
// holds counters skipped over (a gap) until they arrive late or are lost.
class StreamState {
 public:
  enum class Arrival { kNew, kDuplicate, kOutOfOrder };
  Arrival Add(std::uint64_t counter);
  bool Seen(std::uint64_t counter) const;
  std::uint64_t end() const { return end_; }  // highest counter seen + 1
  const std::set<std::uint64_t>& missing() const { return missing_; }

 private:
  std::uint64_t end_ = 0;
  std::set<std::uint64_t> missing_;
};

// Per-sender send outcome of each counter.
enum : std::uint8_t { kSendPending = 0, kSendOk = 1, kSendError = 2 };

// Counts the messages a stream's receiver should have (Ok'd by the server)
// but never saw. `ok_prefix[c]` = number of Ok'd counters below c (size
// states.size() + 1).
std::uint64_t CountLost(const StreamState& s, const std::vector<std::uint8_t>& states,
                        const std::vector<std::uint64_t>& ok_prefix);
std::vector<std::uint64_t> OkPrefix(const std::vector<std::uint8_t>& states);

// Runs the checker and histogram on synthetic inputs; prints and returns
// the number of failed checks.
int SelfTest();

// ------------------------------------------------------------------ /proc
struct ProcSample {
  bool ok = false;
  double cpu_s = 0;     // utime + stime
  double rss_mib = 0;   // VmRSS
};
ProcSample SampleProc(int pid);  // pid 0 = this process
// Busy CPU seconds of the whole machine so far (all cores, /proc/stat).
double MachineBusySeconds();
// `pid` and its descendants (e.g. a PostgreSQL postmaster and its backends).
std::vector<int> WithDescendants(const std::vector<int>& pids);

// ------------------------------------------------------------------ results
struct PidCpu {
  int pid = 0;
  double cpu_s = 0;
  double rss_mib = 0;
  double peak_rss_mib = 0;
};

struct Results {
  Options opt;
  bool ok = true;              // false: the run failed (see errors)
  std::vector<std::string> errors;
  std::vector<std::string> notes;
  int payload_effective = 0;
  int users = 0;
  int senders = 0;
  int servers = 0;
  std::string tls_cipher;      // --tls: version and cipher of the first handshake

  // Ordered (name, value) pairs: setup timings and workload-specific numbers.
  std::vector<std::pair<std::string, double>> metrics;

  // Measured window.
  double window_s = 0;
  std::uint64_t sent = 0;          // sends issued in the window
  std::uint64_t oked = 0;          // Ok replies received in the window
  std::uint64_t delivered = 0;     // deliveries received in the window
  Histogram latency;               // delivery latency, ns (send in window)
  Histogram ok_latency;            // send -> Ok, ns (send in window)
  bool has_messages = false;

  // Whole run (including warmup and drain).
  std::uint64_t total_sent = 0;
  std::uint64_t total_oked = 0;
  std::uint64_t total_send_errors = 0;
  std::uint64_t total_unanswered = 0;
  std::uint64_t total_expected = 0;   // deliveries owed for Ok'd sends
  std::uint64_t total_delivered = 0;  // unique deliveries received
  std::uint64_t lost = 0;
  std::uint64_t duplicated = 0;
  std::uint64_t out_of_order = 0;
  std::uint64_t bad_messages = 0;     // failed to decrypt/verify/parse
  std::map<std::string, std::uint64_t> error_codes;
  double drain_s = 0;

  // Resources over the measured window.
  std::vector<PidCpu> server_cpu;
  std::vector<PidCpu> db_cpu;
  double server_cpu_s = 0;
  double db_cpu_s = 0;
  double server_rss_mib = 0;
  double bench_cpu_s = 0;
  double machine_cpu_s = 0;  // every process on the machine (others = machine - server - db - bench)
};

// Runs the workload against the servers; fills *r. Returns r->ok.
bool RunBench(const Options& opt, Results* r);

// Prints the human table to stdout and writes opt.json_file if set.
void Report(const Results& r);
// Non-zero if the run failed or the checker found lost/duplicated/out-of-order messages.
int ExitCode(const Results& r);

}  // namespace fastchat::bench
