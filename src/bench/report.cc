// Histogram, stream checker, /proc sampling and the report (table + JSON).
#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "bench.h"

namespace fastchat::bench {

std::int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ================================================================== histogram

namespace {
constexpr int kSubBits = 7;  // 128 sub-buckets per power of two
constexpr std::uint64_t kSub = 1u << kSubBits;
constexpr std::size_t kBuckets = (64 - kSubBits + 1) * kSub;
}  // namespace

Histogram::Histogram() : buckets_(kBuckets, 0) {}

std::size_t Histogram::BucketOf(std::uint64_t v) {
  if (v < kSub) return static_cast<std::size_t>(v);
  const int msb = 63 - __builtin_clzll(v);
  const int shift = msb - kSubBits;
  return static_cast<std::size_t>(shift + 1) * kSub + static_cast<std::size_t>((v >> shift) - kSub);
}

std::uint64_t Histogram::BucketHigh(std::size_t idx) {
  if (idx < kSub) return idx;
  const std::size_t shift = idx / kSub - 1;
  const std::uint64_t low = (kSub + idx % kSub) << shift;
  return low + ((std::uint64_t{1} << shift) - 1);
}

void Histogram::Record(std::int64_t value) {
  if (value < 0) value = 0;
  ++buckets_[BucketOf(static_cast<std::uint64_t>(value))];
  if (count_ == 0 || value < min_) min_ = value;
  if (value > max_) max_ = value;
  ++count_;
  sum_ += value;
}

std::int64_t Histogram::Percentile(double q) const {
  if (count_ == 0) return 0;
  const auto want = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    seen += buckets_[i];
    if (seen >= std::max<std::uint64_t>(want, 1)) {
      return std::min<std::int64_t>(static_cast<std::int64_t>(BucketHigh(i)), max_);
    }
  }
  return max_;
}

void Histogram::Merge(const Histogram& other) {
  for (std::size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += other.buckets_[i];
  if (other.count_) {
    if (count_ == 0 || other.min_ < min_) min_ = other.min_;
    max_ = std::max(max_, other.max_);
  }
  count_ += other.count_;
  sum_ += other.sum_;
}

// ================================================================== checker

StreamState::Arrival StreamState::Add(std::uint64_t counter) {
  if (counter >= end_) {
    // Everything skipped over is missing until it shows up (late) or the
    // run ends (lost, if the server had Ok'd it).
    for (std::uint64_t c = end_; c < counter; ++c) missing_.insert(missing_.end(), c);
    end_ = counter + 1;
    return Arrival::kNew;
  }
  if (missing_.erase(counter) > 0) return Arrival::kOutOfOrder;
  return Arrival::kDuplicate;
}

bool StreamState::Seen(std::uint64_t counter) const { return counter < end_ && missing_.count(counter) == 0; }

std::vector<std::uint64_t> OkPrefix(const std::vector<std::uint8_t>& states) {
  std::vector<std::uint64_t> p(states.size() + 1, 0);
  for (std::size_t i = 0; i < states.size(); ++i) p[i + 1] = p[i] + (states[i] == kSendOk ? 1 : 0);
  return p;
}

std::uint64_t CountLost(const StreamState& s, const std::vector<std::uint8_t>& states,
                        const std::vector<std::uint64_t>& ok_prefix) {
  const std::uint64_t n = states.size();
  std::uint64_t lost = 0;
  // Never reached: every Ok'd counter at or past end().
  if (s.end() < n) lost += ok_prefix[n] - ok_prefix[s.end()];
  for (std::uint64_t c : s.missing()) {
    if (c < n && states[c] == kSendOk) ++lost;
  }
  return lost;
}

int SelfTest() {
  int failures = 0;
  auto check = [&](bool cond, const std::string& what) {
    std::cout << (cond ? "  ok    " : "  FAIL  ") << what << "\n";
    if (!cond) ++failures;
  };
  std::cout << "fastchat-bench self-test\n";

  {  // In order, nothing wrong.
    StreamState s;
    int odd = 0;
    for (std::uint64_t c = 0; c < 1000; ++c) odd += s.Add(c) != StreamState::Arrival::kNew;
    std::vector<std::uint8_t> st(1000, kSendOk);
    check(odd == 0 && CountLost(s, st, OkPrefix(st)) == 0, "in-order stream: no dup/ooo/loss");
  }
  {  // 0..9 sent and Ok'd; receiver sees 0 1 2 3 4 6 8 7 9 9 3: 5 lost, 7 late, 9 and 3 repeated.
    StreamState s;
    std::uint64_t dup = 0, ooo = 0, fresh = 0;
    for (std::uint64_t c : {0, 1, 2, 3, 4, 6, 8, 7, 9, 9, 3}) {
      switch (s.Add(c)) {
        case StreamState::Arrival::kNew: ++fresh; break;
        case StreamState::Arrival::kDuplicate: ++dup; break;
        case StreamState::Arrival::kOutOfOrder: ++ooo; break;
      }
    }
    std::vector<std::uint8_t> st(10, kSendOk);
    check(fresh == 8 && ooo == 1 && dup == 2, "gap/late/repeat classified (8 new, 1 out-of-order, 2 duplicates)");
    check(CountLost(s, st, OkPrefix(st)) == 1 && !s.Seen(5) && s.Seen(7), "counter 5 counted lost");
    st[5] = kSendError;  // the server refused 5: not owed
    check(CountLost(s, st, OkPrefix(st)) == 0, "refused send is not a loss");
  }
  {  // Tail loss: 0..99 Ok'd, only 0..49 arrive.
    StreamState s;
    for (std::uint64_t c = 0; c < 50; ++c) s.Add(c);
    std::vector<std::uint8_t> st(100, kSendOk);
    st[60] = kSendPending;  // never answered: not owed
    check(CountLost(s, st, OkPrefix(st)) == 49, "tail loss: 49 of the last 50 (1 unanswered)");
  }
  {  // Nothing received at all.
    StreamState s;
    std::vector<std::uint8_t> st(7, kSendOk);
    check(CountLost(s, st, OkPrefix(st)) == 7, "silent receiver: all 7 lost");
  }
  {  // Histogram accuracy.
    Histogram h;
    for (std::int64_t v = 1; v <= 1000000; ++v) h.Record(v * 1000);  // 1 us .. 1 s uniform
    auto near = [](std::int64_t got, double want) { return std::abs(static_cast<double>(got) - want) <= want * 0.01; };
    check(h.count() == 1000000 && near(h.Percentile(0.5), 5e8) && near(h.Percentile(0.99), 9.9e8) &&
              near(h.Percentile(0.999), 9.99e8) && h.max() == 1000000000,
          "histogram percentiles within 1%");
    bool mono = true;
    for (std::uint64_t v = 0; v < 100000; ++v) {
      std::size_t b = Histogram::BucketOf(v);
      if (Histogram::BucketHigh(b) < v || (b > 0 && Histogram::BucketHigh(b - 1) >= v)) mono = false;
    }
    check(mono, "histogram buckets cover every value exactly once");
  }
  std::cout << (failures == 0 ? "self-test passed\n" : "self-test FAILED\n");
  return failures;
}

// ================================================================== /proc

ProcSample SampleProc(int pid) {
  ProcSample s;
  const std::string base = pid == 0 ? std::string("/proc/self") : "/proc/" + std::to_string(pid);
  std::ifstream stat(base + "/stat");
  std::string line;
  if (!stat || !std::getline(stat, line)) return s;
  // Fields after the parenthesised command name (which may contain spaces).
  auto rp = line.rfind(')');
  if (rp == std::string::npos) return s;
  std::istringstream in(line.substr(rp + 2));
  std::vector<std::string> f;
  std::string tok;
  while (in >> tok) f.push_back(tok);
  // f[0] is field 3 (state); utime is field 14, stime 15.
  if (f.size() < 13) return s;
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  s.cpu_s = (std::stod(f[11]) + std::stod(f[12])) / tick;
  std::ifstream status(base + "/status");
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      s.rss_mib = std::stod(line.substr(6)) / 1024.0;  // kB
      break;
    }
  }
  s.ok = true;
  return s;
}

double MachineBusySeconds() {
  std::ifstream stat("/proc/stat");
  std::string cpu;
  double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  if (!(stat >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal)) return 0;
  return (user + nice + system + irq + softirq + steal) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::vector<int> WithDescendants(const std::vector<int>& pids) {
  std::vector<std::pair<int, int>> parent;  // (pid, ppid)
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      char* end = nullptr;
      long pid = std::strtol(e->d_name, &end, 10);
      if (*end != '\0' || pid <= 0) continue;
      std::ifstream stat("/proc/" + std::string(e->d_name) + "/stat");
      std::string line;
      if (!std::getline(stat, line)) continue;
      auto rp = line.rfind(')');
      if (rp == std::string::npos) continue;
      std::istringstream in(line.substr(rp + 2));
      std::string state;
      int ppid = 0;
      in >> state >> ppid;
      parent.emplace_back(static_cast<int>(pid), ppid);
    }
    closedir(d);
  }
  std::vector<int> out = pids;
  for (std::size_t i = 0; i < out.size(); ++i) {
    for (auto [pid, ppid] : parent) {
      if (ppid == out[i] && std::find(out.begin(), out.end(), pid) == out.end()) out.push_back(pid);
    }
  }
  return out;
}

// ================================================================== report

namespace {

double Ms(std::int64_t ns) { return static_cast<double>(ns) / 1e6; }

nlohmann::json HistJson(const Histogram& h) {
  return {{"count", h.count()},
          {"p50_ms", Ms(h.Percentile(0.50))},
          {"p90_ms", Ms(h.Percentile(0.90))},
          {"p99_ms", Ms(h.Percentile(0.99))},
          {"p999_ms", Ms(h.Percentile(0.999))},
          {"max_ms", Ms(h.max())},
          {"mean_ms", h.mean() / 1e6}};
}

std::string Fmt(double v, int prec = 2) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

std::string HistLine(const Histogram& h) {
  if (h.count() == 0) return "(no samples)";
  return "p50 " + Fmt(Ms(h.Percentile(0.5)), 3) + "  p99 " + Fmt(Ms(h.Percentile(0.99)), 3) + "  p99.9 " +
         Fmt(Ms(h.Percentile(0.999)), 3) + "  max " + Fmt(Ms(h.max()), 3) + "  (n=" + std::to_string(h.count()) +
         ")";
}

double PerSec(double n, double s) { return s > 0 ? n / s : 0; }

}  // namespace

void Report(const Results& r) {
  const Options& o = r.opt;
  const bool grp = o.workload == "group";
  std::ostringstream t;
  t << "fastchat-bench  workload=" << o.workload << "  servers=" << r.servers << "  users=" << r.users;
  if (o.workload == "dm" && r.servers > 1) {
    t << (o.pairs_together ? "  pairs on one server (no DM crosses servers)" : "  every DM crosses servers");
  }
  if (grp) t << "  groups=" << o.groups << "x" << o.group_size << "  senders/group=" << o.senders;
  if (grp && r.servers > 1) {
    t << (o.groups_together ? "  each group on one server (no delivery crosses servers)"
          : o.groups_apart  ? "  senders apart from the other members (every delivery crosses servers)"
                            : "  members spread over the servers");
  }
  t << "\n  transport=" << (o.tls ? "TLS (" + (r.tls_cipher.empty() ? std::string("no handshake") : r.tls_cipher) +
                                        "; server certificate not verified)"
                                  : std::string("plain TCP"));
  const bool msgs = o.workload == "dm" || grp || o.workload == "offline";
  if (msgs) {
  t << "\n  encrypted=" << (o.encrypt ? "yes (XChaCha20-Poly1305" : "NO (--no-encrypt: random bytes")
    << (grp ? (o.encrypt ? " + Ed25519 signatures" : ", random signatures") : "") << ")";
  if (grp && o.encrypt) t << "  receivers verify signatures=" << (o.verify_signatures ? "yes" : "no");
  t << "\n  payload=" << r.payload_effective << "B  ";
  if (o.rate > 0) {
    t << "open loop at " << Fmt(o.rate, 0) << " msgs/s offered";
  } else {
    t << "closed loop, window " << o.window << " per sender";
  }
  t << "  senders=" << r.senders;
  if (o.workload != "offline") t << "  warmup=" << Fmt(o.warmup, 1) << "s";
  if (o.workload != "offline" || o.messages == 0) t << "  duration=" << Fmt(o.duration, 1) << "s";
  if (o.workload == "offline" && o.messages > 0) t << "  messages/sender=" << o.messages;
  }
  t << "\n";
  for (const auto& n : r.notes) t << "  note: " << n << "\n";
  if (!r.metrics.empty()) {
    t << "numbers:\n";
    for (const auto& [k, v] : r.metrics) t << "  " << k << std::string(k.size() < 34 ? 34 - k.size() : 1, ' ') << Fmt(v, 3) << "\n";
  }
  if (r.has_messages) {
    t << "measured window " << Fmt(r.window_s, 2) << " s:\n";
    t << "  sent        " << r.sent << "  (" << Fmt(PerSec(static_cast<double>(r.sent), r.window_s), 1) << "/s)\n";
    t << "  ok'd        " << r.oked << "  (" << Fmt(PerSec(static_cast<double>(r.oked), r.window_s), 1) << "/s)\n";
    t << "  delivered   " << r.delivered << "  (" << Fmt(PerSec(static_cast<double>(r.delivered), r.window_s), 1)
      << " msgs/s)\n";
    t << "  delivery latency ms  " << HistLine(r.latency) << "\n";
    t << "  send->Ok latency ms  " << HistLine(r.ok_latency) << "\n";
  }
  if (!r.server_cpu.empty()) {
    t << "  server cpu s  " << Fmt(r.server_cpu_s, 2) << " (" << Fmt(100 * PerSec(r.server_cpu_s, r.window_s), 0)
      << "% of one core)";
    if (r.server_cpu.size() > 1) {
      for (const auto& p : r.server_cpu) t << "  [pid " << p.pid << ": " << Fmt(p.cpu_s, 2) << "]";
    }
    t << "\n";
    if (r.has_messages) {
      t << "  deliveries per server-cpu-second  "
        << Fmt(r.server_cpu_s > 0 ? static_cast<double>(r.delivered) / r.server_cpu_s : 0, 0) << "\n";
    }
    t << "  server rss MiB " << Fmt(r.server_rss_mib, 1);
    if (r.server_cpu.size() > 1) {
      for (const auto& p : r.server_cpu) t << "  [pid " << p.pid << ": " << Fmt(p.rss_mib, 1) << "]";
    }
    t << "\n";
  }
  if (!r.db_cpu.empty()) {
    t << "  db cpu s      " << Fmt(r.db_cpu_s, 2) << " (" << r.db_cpu.size() << " processes)\n";
  }
  t << "  bench cpu s   " << Fmt(r.bench_cpu_s, 2) << " (" << Fmt(100 * PerSec(r.bench_cpu_s, r.window_s), 0)
    << "% of one core)\n";
  const double other = r.machine_cpu_s - r.server_cpu_s - r.db_cpu_s - r.bench_cpu_s;
  t << "  other processes' cpu s " << Fmt(std::max(other, 0.0), 2) << " (machine busy " << Fmt(r.machine_cpu_s, 2)
    << " s of " << Fmt(r.window_s * static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN)), 2) << ")"
    << (other > 0.1 * r.window_s ? "  ** the machine was not idle: numbers may be disturbed **" : "") << "\n";
  if (r.has_messages) {
    t << "check (whole run, drain " << Fmt(r.drain_s, 2) << " s): sent " << r.total_sent << ", ok'd " << r.total_oked
      << ", deliveries owed " << r.total_expected << ", received " << r.total_delivered << "\n";
    t << "  lost " << r.lost << "  duplicated " << r.duplicated << "  out_of_order " << r.out_of_order
      << "  bad " << r.bad_messages << "  send errors " << r.total_send_errors << "  unanswered "
      << r.total_unanswered << "\n";
  }
  for (const auto& [code, n] : r.error_codes) t << "  error " << code << " x" << n << "\n";
  for (const auto& e : r.errors) t << "  ERROR: " << e << "\n";
  t << "result: " << (ExitCode(r) == 0 ? "PASS" : "FAIL") << "\n";
  std::cout << t.str() << std::flush;

  if (o.json_file.empty()) return;
  nlohmann::json j;
  j["workload"] = o.workload;
  j["parameters"] = {{"servers", o.servers},   {"users", r.users},       {"groups", o.groups},
                     {"group_size", o.group_size}, {"senders_per_group", o.senders},
                     {"senders", r.senders},   {"payload", r.payload_effective},
                     {"window", o.window},     {"rate", o.rate},         {"duration_s", o.duration},
                     {"warmup_s", o.warmup},   {"drain_idle_s", o.drain}, {"messages_per_sender", o.messages},
                     {"sources", o.sources},   {"concurrency", o.concurrency},
                     {"verify_signatures", o.verify_signatures}, {"tls", o.tls}, {"prefix", o.prefix},
                     {"inject_loss", o.inject_loss}, {"inject_dup", o.inject_dup},
                     {"inject_reorder", o.inject_reorder}, {"pairs_together", o.pairs_together},
                     {"groups_together", o.groups_together}, {"groups_apart", o.groups_apart}};
  j["encrypted"] = o.encrypt;
  j["tls"] = o.tls;
  j["tls_cipher"] = r.tls_cipher;  // "" without --tls
  j["window_s"] = r.window_s;  // the window CPU and (for message workloads) throughput were measured over
  j["ok"] = ExitCode(r) == 0;
  j["run_failed"] = !r.ok;
  j["errors"] = r.errors;
  j["notes"] = r.notes;
  nlohmann::json m = nlohmann::json::object();
  for (const auto& [k, v] : r.metrics) m[k] = v;
  j["metrics"] = m;
  if (r.has_messages) {
    j["duration_s"] = r.window_s;
    j["sent"] = r.sent;
    j["oked"] = r.oked;
    j["delivered"] = r.delivered;
    j["sent_per_s"] = PerSec(static_cast<double>(r.sent), r.window_s);
    j["oked_per_s"] = PerSec(static_cast<double>(r.oked), r.window_s);
    j["delivered_per_s"] = PerSec(static_cast<double>(r.delivered), r.window_s);
    j["latency"] = HistJson(r.latency);
    j["ok_latency"] = HistJson(r.ok_latency);
    j["deliveries_per_server_cpu_s"] = r.server_cpu_s > 0 ? static_cast<double>(r.delivered) / r.server_cpu_s : 0;
    j["check"] = {{"total_sent", r.total_sent},         {"total_oked", r.total_oked},
                  {"send_errors", r.total_send_errors}, {"unanswered", r.total_unanswered},
                  {"expected", r.total_expected},       {"received", r.total_delivered},
                  {"lost", r.lost},                     {"duplicated", r.duplicated},
                  {"out_of_order", r.out_of_order},     {"bad", r.bad_messages},
                  {"drain_s", r.drain_s}};
  }
  j["lost"] = r.lost;
  j["duplicated"] = r.duplicated;
  j["out_of_order"] = r.out_of_order;
  j["error_codes"] = r.error_codes;
  auto pids = [](const std::vector<PidCpu>& v) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& p : v) {
      a.push_back({{"pid", p.pid}, {"cpu_s", p.cpu_s}, {"rss_mib", p.rss_mib}, {"peak_rss_mib", p.peak_rss_mib}});
    }
    return a;
  };
  j["server_cpu_s"] = r.server_cpu_s;
  j["server_pids"] = pids(r.server_cpu);
  j["server_rss_mib"] = r.server_rss_mib;
  j["db_cpu_s"] = r.db_cpu_s;
  j["db_pids"] = pids(r.db_cpu);
  j["bench_cpu_s"] = r.bench_cpu_s;
  j["machine_cpu_s"] = r.machine_cpu_s;
  j["other_cpu_s"] = std::max(0.0, r.machine_cpu_s - r.server_cpu_s - r.db_cpu_s - r.bench_cpu_s);
  j["nproc"] = sysconf(_SC_NPROCESSORS_ONLN);
  std::ofstream out(o.json_file);
  out << j.dump(2) << "\n";
  if (!out) std::cerr << "fastchat-bench: cannot write " << o.json_file << "\n";
}

int ExitCode(const Results& r) {
  if (!r.ok) return 1;
  if (r.lost || r.duplicated || r.out_of_order || r.bad_messages || r.total_send_errors) return 1;
  return 0;
}

}  // namespace fastchat::bench
