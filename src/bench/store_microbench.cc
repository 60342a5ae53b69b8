// fastchat-store-microbench: the SQLite store's cost per direct message on
// the delivery path, as the store thread pays it (Google Benchmark).
//
// One iteration is what the StoreWorker does for N direct messages that
// arrive together: one batch enqueuing N rows (one per recipient, a
// 200-byte Deliver event each, the size of a 100-byte DM's, a fresh dedupe
// key each), committed with one
// sync, then one batch acknowledging them (AckMany: each recipient acks its
// row), as StoreWorker::RunMerged calls the store (enqueues in calls of at
// most MaxMergedEnqueue items).
// CPU time per item is the store's floor per delivered DM: the server's
// whole cost per DM cannot be lower (docs/performance.md).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "sqlite_store.h"

namespace {

using fastchat::PendingItem;
using fastchat::SqliteStore;

struct Fixture {
  std::string dir;
  std::unique_ptr<SqliteStore> store;
  std::vector<std::uint64_t> users;

  explicit Fixture(int n_users) {
    char tmpl[] = "/tmp/fastchat-store-bench-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) std::abort();
    dir = tmpl;
    if (!SqliteStore::Open(dir + "/server.db", &store, /*exclusive=*/true).ok()) std::abort();
    for (int i = 0; i < n_users; ++i) {
      fastchat::UserRecord u;
      u.name = "user" + std::to_string(i);
      u.password_hash = "x";
      u.x25519_public.assign(32, 'k');
      u.ed25519_public.assign(32, 's');
      std::uint64_t id = 0;
      if (!store->CreateUser(u, &id).ok()) std::abort();
      users.push_back(id);
    }
  }
  ~Fixture() {
    store.reset();
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((dir + "/server.db" + suffix).c_str());
    rmdir(dir.c_str());
  }
};

// range(0): messages per batch (one per recipient, round-robin over 1000
// users); range(1): batches left unacknowledged before the oldest is acked
// (a standing backlog, as a server has with W messages in flight per sender).
void BM_SqliteEnqueueThenAck(benchmark::State& state) {
  Fixture f(1000);
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  const std::size_t backlog = static_cast<std::size_t>(state.range(1));
  const std::string payload(200, 'p');
  std::uint64_t counter = 0;
  std::vector<PendingItem> items(n);
  std::deque<std::vector<std::pair<std::uint64_t, std::uint64_t>>> unacked;
  std::vector<std::uint64_t> seqs;
  std::vector<PendingItem> part;
  const std::size_t chunk = f.store->MaxMergedEnqueue();
  for (auto _ : state) {
    for (std::size_t i = 0; i < n; ++i) {
      items[i].recipient = f.users[i % f.users.size()];
      items[i].dedupe_key = "d/1/" + std::to_string(++counter) + "/0";
      items[i].payload = payload;
      // The server's default bounds on a recipient's waiting rows (peer_limits.h).
      items[i].max_waiting = 100000;
      items[i].max_waiting_bytes = std::uint64_t{256} << 20;
    }
    // In calls of at most MaxMergedEnqueue items, as the StoreWorker cuts them.
    bool ok = f.store->BeginBatch().ok();
    unacked.emplace_back();
    for (std::size_t from = 0; ok && from < n; from += chunk) {
      part.assign(items.begin() + static_cast<std::ptrdiff_t>(from),
                  items.begin() + static_cast<std::ptrdiff_t>(std::min(n, from + chunk)));
      ok = f.store->Enqueue(part, &seqs, nullptr).ok();
      for (std::size_t i = 0; ok && i < part.size(); ++i) unacked.back().emplace_back(part[i].recipient, seqs[i]);
    }
    if (!ok || !f.store->CommitBatch().ok()) {
      state.SkipWithError("enqueue failed");
      break;
    }
    if (unacked.size() <= backlog) continue;
    if (!f.store->BeginBatch().ok() || !f.store->AckMany(unacked.front()).ok() || !f.store->CommitBatch().ok()) {
      state.SkipWithError("ack failed");
      break;
    }
    unacked.pop_front();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
BENCHMARK(BM_SqliteEnqueueThenAck)
    ->Args({100, 0})
    ->Args({1000, 0})
    ->Args({1000, 16})
    ->Unit(benchmark::kMicrosecond);

// The drain at login, as the store thread pays for its acknowledgements:
// a backlog of range(0) rows waits, spread round-robin over 1000 recipients
// (as offline senders leave them: one recipient's rows far apart in the
// table). One iteration is one AckMany, committed, naming 20 consecutive
// rows of each of 50 recipients (their oldest), as a batch of the
// acknowledgements of 50 draining sessions; then, untimed, as many new rows
// are enqueued so the backlog keeps its size. CPU time per item is the
// store's cost per acknowledged row. With range(1) = 1 each iteration first
// reads those rows as the catch-up does (FetchPending, a page of 20 per
// recipient), so it costs what the store thread pays per drained row.
void BM_SqliteAckDrain(benchmark::State& state) {
  Fixture f(1000);
  const std::size_t backlog = static_cast<std::size_t>(state.range(0));
  const std::string payload(200, 'p');
  std::uint64_t counter = 0;
  std::size_t next_recipient = 0;
  std::vector<std::deque<std::uint64_t>> waiting(f.users.size());  // seqs per recipient, oldest first
  std::vector<PendingItem> items;
  std::vector<std::uint64_t> seqs;
  auto enqueue = [&](std::size_t n) {
    bool ok = f.store->BeginBatch().ok();
    for (std::size_t from = 0; ok && from < n; from += f.store->MaxMergedEnqueue()) {
      items.resize(std::min(n - from, f.store->MaxMergedEnqueue()));
      std::vector<std::size_t> who(items.size());
      for (std::size_t i = 0; i < items.size(); ++i) {
        who[i] = next_recipient++ % f.users.size();
        items[i].recipient = f.users[who[i]];
        items[i].dedupe_key = "d/1/" + std::to_string(++counter) + "/0";
        items[i].payload = payload;
      }
      ok = f.store->Enqueue(items, &seqs, nullptr).ok();
      for (std::size_t i = 0; ok && i < items.size(); ++i) waiting[who[i]].push_back(seqs[i]);
    }
    return ok && f.store->CommitBatch().ok();
  };
  if (!enqueue(backlog)) {
    state.SkipWithError("enqueue failed");
    return;
  }
  std::size_t next_drainer = 0;
  std::int64_t acked = 0;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> acks;
  const bool fetch = state.range(1) != 0;
  std::vector<fastchat::PendingRow> page;
  for (auto _ : state) {
    state.PauseTiming();
    acks.clear();
    for (int r = 0; r < 50; ++r) {
      const std::size_t u = next_drainer++ % f.users.size();
      for (int k = 0; k < 20 && !waiting[u].empty(); ++k) {
        acks.emplace_back(f.users[u], waiting[u].front());
        waiting[u].pop_front();
      }
    }
    acked += static_cast<std::int64_t>(acks.size());
    state.ResumeTiming();
    for (std::size_t i = 0; fetch && i < acks.size(); i += 20) {
      if (!f.store->FetchPending(acks[i].first, 0, 20, &page).ok() || page.empty() || page[0].seq != acks[i].second) {
        state.SkipWithError("fetch failed");
        return;
      }
    }
    if (!f.store->BeginBatch().ok() || !f.store->AckMany(acks).ok() || !f.store->CommitBatch().ok()) {
      state.SkipWithError("ack failed");
      break;
    }
    state.PauseTiming();
    const bool ok = enqueue(acks.size());
    state.ResumeTiming();
    if (!ok) {
      state.SkipWithError("enqueue failed");
      break;
    }
  }
  state.SetItemsProcessed(acked);
}
BENCHMARK(BM_SqliteAckDrain)->Args({200000, 0})->Args({200000, 1})->Unit(benchmark::kMicrosecond);

// A rotation (sqlite_store.h) as the insert that triggers it pays for it.
// rotation_rows() is range(0). Untimed: the rows that make the head full,
// stored (round-robin over 1000 recipients, 200-byte payloads) and
// acknowledged in batches of 1000, so they are left there dead. Timed, one
// iteration: the one committed Enqueue that rotates, emptying the old
// table of the range(0) rows before them. The time per iteration is the
// stall a rotation adds to the batch that triggers it; 65,536 is the
// default rotation_rows(), a larger size stands for the head after a long
// drain without inserts (a login drain of an offline backlog).
void BM_SqliteRotation(benchmark::State& state) {
  Fixture f(1000);
  const std::size_t rows = static_cast<std::size_t>(state.range(0));
  f.store->set_rotation_rows(rows);  // no rotation inside fill()
  const std::string payload(200, 'p');
  std::uint64_t counter = 0;
  std::vector<PendingItem> items;
  std::vector<std::uint64_t> seqs;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> acks;
  // Stores and acknowledges n rows in batches of 1000.
  auto fill = [&](std::size_t n) {
    for (std::size_t from = 0; from < n; from += 1000) {
      items.resize(std::min<std::size_t>(1000, n - from));
      for (std::size_t i = 0; i < items.size(); ++i) {
        items[i].recipient = f.users[(from + i) % f.users.size()];
        items[i].dedupe_key = "d/1/" + std::to_string(++counter) + "/0";
        items[i].payload = payload;
      }
      if (!f.store->BeginBatch().ok() || !f.store->Enqueue(items, &seqs, nullptr).ok() ||
          !f.store->CommitBatch().ok()) {
        return false;
      }
      acks.clear();
      for (std::size_t i = 0; i < items.size(); ++i) acks.emplace_back(items[i].recipient, seqs[i]);
      if (!f.store->BeginBatch().ok() || !f.store->AckMany(acks).ok() || !f.store->CommitBatch().ok()) return false;
    }
    return true;
  };
  auto insert_one = [&]() {
    items.resize(1);
    items[0].recipient = f.users[0];
    items[0].dedupe_key = "d/1/" + std::to_string(++counter) + "/0";
    items[0].payload = payload;
    return f.store->BeginBatch().ok() && f.store->Enqueue(items, &seqs, nullptr).ok() && f.store->CommitBatch().ok();
  };
  // The first rotation, at the (rows + 1)-th insert, empties an empty old
  // table. After it, insert_one()'s row and fill(rows - 1) make the head
  // full, and the next insert_one() rotates: the old table it empties
  // holds `rows` rows, all dead but one.
  if (!fill(rows) || !insert_one()) {
    state.SkipWithError("setup failed");
    return;
  }
  for (auto _ : state) {
    state.PauseTiming();
    const bool filled = fill(rows - 1);
    state.ResumeTiming();
    if (!filled || !insert_one()) {
      state.SkipWithError("rotation failed");
      break;
    }
  }
  state.counters["cleared_rows"] = static_cast<double>(rows);
}
BENCHMARK(BM_SqliteRotation)->Arg(65536)->Arg(1 << 20)->Iterations(4)->Unit(benchmark::kMillisecond);

// Opening a store whose group log holds range(0) entries: the open reads
// every entry's key into the in-memory index (group_keys_, migration 12),
// and with range(1) = 1 the entries were trimmed instead, so it reads their
// kept keys (group_kept_keys rows) into group_kept_. Untimed: one group of
// 10, the entries appended in committed batches of 1000 (200-byte
// payloads); then, with range(1), every member acknowledges and the log is
// trimmed. Timed, one iteration: closing and opening the store (exclusive,
// as the server opens it). The time is what a restart adds per entry.
void BM_SqliteOpenWithGroupLog(benchmark::State& state) {
  Fixture f(10);
  const std::size_t entries = static_cast<std::size_t>(state.range(0));
  const bool trimmed = state.range(1) != 0;
  std::uint64_t g = 0;
  bool ok = f.store->CreateGroup("team", f.users[0], &g).ok();
  for (std::size_t i = 1; ok && i < f.users.size(); ++i) ok = f.store->AddMember(g, f.users[i]).ok();
  const std::vector<std::uint64_t> others(f.users.begin() + 1, f.users.end());
  const std::string payload(200, 'p');
  std::uint64_t seq = 0;
  for (std::size_t from = 0; ok && from < entries; from += 1000) {
    ok = f.store->BeginBatch().ok();
    for (std::size_t i = from; ok && i < std::min(entries, from + 1000); ++i) {
      bool fresh = false;
      const std::string key = "g/1/1/" + std::to_string(i) + "/0";
      ok = f.store->AppendGroup(g, f.users[0], others, key, payload, &seq, &fresh, nullptr, nullptr).ok() && fresh;
    }
    ok = ok && f.store->CommitBatch().ok();
  }
  if (ok && trimmed) {
    for (std::uint64_t u : others) ok = ok && f.store->AckGroup(u, g, seq).ok();
    ok = ok && f.store->TrimGroup(g).ok();
  }
  if (!ok) {
    state.SkipWithError("setup failed");
    return;
  }
  const std::string path = f.dir + "/server.db";
  for (auto _ : state) {
    f.store.reset();
    if (!SqliteStore::Open(path, &f.store, /*exclusive=*/true).ok()) {
      state.SkipWithError("open failed");
      break;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(entries));
}
BENCHMARK(BM_SqliteOpenWithGroupLog)
    ->Args({100000, 0})
    ->Args({100000, 1})
    ->Args({1000000, 0})
    ->Args({1000000, 1})
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
