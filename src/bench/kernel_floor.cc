// The kernel's and the disk's floor under a delivery, with nothing of
// FastChat in the way (docs/performance.md, "The kernel's and the disk's
// floor per delivery", compares them with what the server pays).
//
// Sending: what one sendmsg of K frames over loopback TCP costs the thread
// that sends it, per frame. On loopback the sender's system call also runs
// the receiving side's TCP work (softirq) and wakes the reader, as it does
// for the server writing to a local bench; the reader here is another
// thread, so its recv is not counted. Frames are laid out as the server's
// writer sends Deliver frames: a short prefix and the shared event, two
// iovecs per frame, all of a batch in one sendmsg.
//
// Reading: what one recv of K frames costs the thread that reads, from a
// connection that always has more waiting.
//
// The disk under a durable Ok: how long an 8 KiB write and fdatasync of one
// file (the WAL) takes while another thread writes N random 4 KiB pages of
// a second file on the same file system and fsyncs it every 100 ms (a
// checkpoint copying the WAL into the database), as percentiles of the
// syncs in the run. The files are made in TMPDIR (or /tmp), the file
// system the bench's database uses.
#include <benchmark/benchmark.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::size_t kPrefixBytes = 16;
constexpr std::size_t kEventBytes = 184;  // a Deliver of a 100-byte plaintext DM is ~200 bytes

// A connected loopback TCP pair: `out` (TCP_NODELAY, as the server's) and
// `in`, closed with it.
struct LoopbackPair {
  int out = -1;
  int in = -1;
  LoopbackPair() = default;
  LoopbackPair(const LoopbackPair&) = delete;
  LoopbackPair& operator=(const LoopbackPair&) = delete;
  ~LoopbackPair() {
    if (out >= 0) ::close(out);
    if (in >= 0) ::close(in);
  }
};

// Connects `pair`, or marks the benchmark skipped and returns false.
bool Connect(benchmark::State& state, LoopbackPair* pair) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  bool ok = listener >= 0 && ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
            ::listen(listener, 1) == 0 && ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  pair->out = ok ? ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1;
  ok = ok && pair->out >= 0 && ::connect(pair->out, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  pair->in = ok ? ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC) : -1;
  if (listener >= 0) ::close(listener);
  const int one = 1;
  ok = ok && pair->in >= 0 && ::setsockopt(pair->out, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0;
  if (!ok) state.SkipWithError("no loopback TCP pair");
  return ok;
}

void BM_LoopbackSendmsgPerFrame(benchmark::State& state) {
  LoopbackPair pair;
  if (!Connect(state, &pair)) return;
  const int out = pair.out;
  const int in = pair.in;
  const auto frames = static_cast<std::size_t>(state.range(0));
  // The reader drains everything, on its own thread (its CPU is not the
  // benchmark's).
  std::atomic<bool> stop{false};
  std::thread reader([in, &stop] {
    std::vector<char> buf(256 * 1024);
    while (!stop.load(std::memory_order_relaxed)) {
      if (::recv(in, buf.data(), buf.size(), 0) <= 0) break;
    }
  });
  const std::string prefix(kPrefixBytes, 'p');
  const std::string event(kEventBytes, 'e');
  std::vector<iovec> iov;
  for (std::size_t i = 0; i < frames; ++i) {
    iov.push_back({const_cast<char*>(prefix.data()), prefix.size()});
    iov.push_back({const_cast<char*>(event.data()), event.size()});
  }
  const std::size_t bytes = frames * (kPrefixBytes + kEventBytes);
  for (auto _ : state) {
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = iov.size();
    const ssize_t n = ::sendmsg(out, &msg, MSG_NOSIGNAL);
    if (n != static_cast<ssize_t>(bytes)) {
      state.SkipWithError("short or failed sendmsg");
      break;
    }
  }
  stop.store(true);
  ::shutdown(out, SHUT_WR);
  reader.join();
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * frames));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
}
BENCHMARK(BM_LoopbackSendmsgPerFrame)->Arg(1)->Arg(2)->Arg(5)->Arg(9)->Arg(16)->Arg(32)->Arg(64)->Arg(128)->Arg(256)->Arg(512);

// The other direction: what the reading thread pays per frame when its
// recv takes K frames each time from a connection that always has more
// waiting (a busy server reading a busy client: no sleep and wake-up per
// read). A writer thread keeps the connection full; its CPU is not counted.
void BM_LoopbackRecvPerFrame(benchmark::State& state) {
  LoopbackPair pair;
  if (!Connect(state, &pair)) return;
  const int out = pair.out;
  const int in = pair.in;
  const auto frames = static_cast<std::size_t>(state.range(0));
  const std::size_t bytes = frames * (kPrefixBytes + kEventBytes);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    const std::string chunk(64 * 1024, 'f');
    while (!stop.load(std::memory_order_relaxed)) {
      if (::send(out, chunk.data(), chunk.size(), MSG_NOSIGNAL) <= 0) return;
    }
  });
  std::vector<char> buf(bytes);
  for (auto _ : state) {
    if (::recv(in, buf.data(), bytes, MSG_WAITALL) != static_cast<ssize_t>(bytes)) {
      state.SkipWithError("recv failed");
      break;
    }
  }
  stop.store(true);
  ::shutdown(in, SHUT_RDWR);
  ::shutdown(out, SHUT_RDWR);
  writer.join();
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * frames));
}
BENCHMARK(BM_LoopbackRecvPerFrame)->Arg(1)->Arg(2)->Arg(5)->Arg(9)->Arg(16)->Arg(32)->Arg(64);

std::string TempPath(const char* name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir != nullptr && dir[0] != '\0' ? dir : "/tmp") + "/" + name;
}

void BM_WalSyncWhileAnotherFileSyncs(benchmark::State& state) {
  const int pages = static_cast<int>(state.range(0));
  const std::string wal_path = TempPath("fastchat-floor-wal");
  const std::string db_path = TempPath("fastchat-floor-db");
  const int wal = ::open(wal_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int db = ::open(db_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  constexpr off_t kWalBytes = 1 << 20;
  constexpr off_t kDbPages = 16384;  // 64 MiB
  if (wal < 0 || db < 0 || ::ftruncate(wal, kWalBytes) != 0 || ::ftruncate(db, kDbPages * 4096) != 0 ||
      ::fsync(wal) != 0 || ::fsync(db) != 0) {
    state.SkipWithError("cannot make the files");
    return;
  }
  std::atomic<bool> stop{false};
  std::thread checkpointer([&] {
    if (pages == 0) return;
    std::mt19937_64 rng(7);
    std::vector<char> page(4096, 'c');
    while (!stop.load(std::memory_order_relaxed)) {
      for (int i = 0; i < pages; ++i) {
        if (::pwrite(db, page.data(), page.size(), static_cast<off_t>(rng() % kDbPages) * 4096) < 0) return;
      }
      if (::fsync(db) != 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::vector<char> frame(8192, 'w');
  std::vector<double> us;
  off_t at = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    if (::pwrite(wal, frame.data(), frame.size(), at) != static_cast<ssize_t>(frame.size()) || ::fdatasync(wal) != 0) {
      state.SkipWithError("write or sync failed");
      break;
    }
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    at = (at + static_cast<off_t>(frame.size())) % kWalBytes;
  }
  stop.store(true);
  checkpointer.join();
  ::close(wal);
  ::close(db);
  ::unlink(wal_path.c_str());
  ::unlink(db_path.c_str());
  if (us.empty()) return;
  std::sort(us.begin(), us.end());
  auto at_q = [&](double q) { return us[std::min(us.size() - 1, static_cast<std::size_t>(q * static_cast<double>(us.size())))]; };
  state.counters["p50_us"] = at_q(0.5);
  state.counters["p99_us"] = at_q(0.99);
  state.counters["p999_us"] = at_q(0.999);
  state.counters["max_us"] = us.back();
  state.counters["over_5ms"] = static_cast<double>(us.end() - std::upper_bound(us.begin(), us.end(), 5000.0));
}
// A fixed time per run (the percentiles need thousands of syncs), real time:
// the thread waits on the disk.
BENCHMARK(BM_WalSyncWhileAnotherFileSyncs)->Arg(0)->Arg(100)->Arg(500)->MinTime(5)->UseRealTime();

}  // namespace
