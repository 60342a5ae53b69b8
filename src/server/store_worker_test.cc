// StoreWorker: group commit, per-job undo, failed commits, throwing jobs.
// Real SQLite files under a forwarding store that counts (and can break)
// batch commits.
#include "store_worker.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <stdexcept>
#include <span>
#include <string>
#include <thread>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <gtest/gtest.h>

#include "store/forwarding_store.h"
#include "test_records.h"

namespace fastchat::server {
namespace {

// Counts batch commits; can make them slow (standing in for fdatasync) or
// fail (standing in for a full disk), in which case the batch is undone.
class WatchedStore : public ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  Status BeginBatch() override {
    if (fail_begins > 0) {
      --fail_begins;
      return Status(Code::kIOError, "cannot begin (injected)");
    }
    ++begun;
    creates_in_batch = 0;
    enqueues_in_batch = 0;
    Status s = ForwardingStore::BeginBatch();
    in_batch = s.ok();
    return s;
  }
  // Units are what SQLite gives outside a batch too (a savepoint there is a
  // transaction of its own); with `units_only_in_batch`, like PgStore, a
  // unit outside a batch is nothing.
  Status BeginUnit() override {
    if (units_only_in_batch && !in_batch) return Status::OK();
    return ForwardingStore::BeginUnit();
  }
  void EndUnit(bool keep) override {
    if (units_only_in_batch && !in_batch) return;
    ForwardingStore::EndUnit(keep);
  }
  Status CommitBatch() override {
    in_batch = false;
    std::this_thread::sleep_for(std::chrono::milliseconds(sync_delay_ms.load()));
    if (fail_commits) {
      inner().RollbackBatch();
      return Status(Code::kIOError, "disk full (injected)");
    }
    Status s = ForwardingStore::CommitBatch();
    if (s.ok()) ++committed;
    return s;
  }
  Status Enqueue(const std::vector<PendingItem>& items, std::vector<std::uint64_t>* seqs,
                 std::vector<Enqueued>* how) override {
    ++enqueue_calls;
    ++enqueues_in_batch;
    Status s = ForwardingStore::Enqueue(items, seqs, how);
    if (s.ok() && short_answer && !seqs->empty()) {  // a store that lost track of an item
      seqs->pop_back();
      how->pop_back();
    }
    return s;
  }
  Status AckMany(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& recipient_seqs) override {
    ++ack_many_calls;
    if (enqueues_in_batch > 0 && ack_lock_orders > 0) {
      --ack_lock_orders;
      return Status(Code::kLockOrder, "out of lock order (injected)");
    }
    return ForwardingStore::AckMany(recipient_seqs);
  }
  Status AckGroups(const std::vector<GroupCursorAck>& acks) override {
    ++ack_groups_calls;
    group_acks_seen += static_cast<int>(acks.size());
    return ForwardingStore::AckGroups(acks);
  }
  std::atomic<int> ack_groups_calls{0};
  std::atomic<int> group_acks_seen{0};
  // The next this many AckMany calls after an Enqueue of their batch answer
  // kLockOrder and delete nothing (as PgStore does when the enqueue took a
  // stream lock above the ack's).
  std::atomic<int> ack_lock_orders{0};
  int enqueues_in_batch = 0;
  std::atomic<int> begun{0};
  std::atomic<int> committed{0};
  std::atomic<int> enqueue_calls{0};
  std::atomic<int> ack_many_calls{0};
  std::atomic<int> sync_delay_ms{0};
  std::atomic<bool> fail_commits{false};
  std::atomic<bool> short_answer{false};  // Enqueue answers one seq fewer than its items
  std::atomic<int> fail_begins{0};  // the next this many BeginBatch calls fail
  std::atomic<bool> units_only_in_batch{false};
  bool in_batch = false;
  // The next this many CreateUser calls that are not their batch's first
  // answer kLockOrder and store nothing (as PgStore does for a write that
  // would wait for a lock out of the batch's lock order).
  std::atomic<int> lock_orders{0};
  int creates_in_batch = 0;
  Status CreateUser(const UserRecord& user, std::uint64_t* id) override {
    if (creates_in_batch++ > 0 && lock_orders > 0) {
      --lock_orders;
      return Status(Code::kLockOrder, "out of lock order (injected)");
    }
    return ForwardingStore::CreateUser(user, id);
  }
};

// A user record named `name`.
UserRecord Record(std::string name) { return TestUserRecord(std::move(name)); }

struct Made {
  Status st;
  std::uint64_t id = 0;
  int batch = 0;  // the batch the job ran in (WatchedStore::begun then)
};

class StoreWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fastchat_worker_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::unique_ptr<Store> sqlite;
    ASSERT_TRUE(OpenSqliteStore(dir_ + "/server.db", &sqlite).ok());
    auto watched = std::make_unique<WatchedStore>(std::move(sqlite));
    store_ = watched.get();
    worker_ = std::make_unique<StoreWorker>(std::move(watched), io_.get_executor());
  }
  void TearDown() override {
    worker_.reset();
    std::filesystem::remove_all(dir_);
  }

  // A job that registers `name`.
  auto MakeUser(std::string name) {
    WatchedStore* w = store_;
    return [w, name = std::move(name)](Store& s) {
      Made m;
      m.st = s.CreateUser(Record(name), &m.id);
      m.batch = w->begun.load();
      return m;
    };
  }

  // Runs the event loop until `done()` or 10 s.
  template <class Pred>
  void RunUntil(Pred done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      io_.run_for(std::chrono::milliseconds(5));
    }
  }

  std::size_t UserCount() {
    struct Loaded {
      Status st;
      DirectoryState state;
    };
    bool got = false;
    std::size_t n = 0;
    worker_->Submit(
        [](Store& s) {
          Loaded l;
          l.st = s.LoadDirectory(&l.state);
          return l;
        },
        [&](Loaded l) {
          EXPECT_TRUE(l.st.ok()) << l.st.ToString();
          n = l.state.users.size();
          got = true;
        });
    RunUntil([&] { return got; });
    return n;
  }

  // Rows waiting for `user`, read through the worker.
  std::uint64_t Pending(std::uint64_t user) {
    std::uint64_t n = 99;
    bool counted = false;
    worker_->Submit([&](Store& s) { return s.CountPending(user, &n); }, [&](Status) { counted = true; });
    RunUntil([&] { return counted; });
    return n;
  }

  // Occupies the store thread with a job that waits until the returned
  // promise is set, and returns once its batch has begun: jobs submitted
  // until then all run in the next batch. Returns the batches begun before.
  int HoldStoreThread(std::promise<void>* gate) {
    std::shared_future<void> opened = gate->get_future().share();
    // Read before submitting: the store thread may begin the gate's batch
    // before this thread reads the count, and then waiting for it to change
    // would wait forever (it did under ASan).
    const int begun = store_->begun.load();
    worker_->Submit([opened](Store&) { opened.wait(); return Status::OK(); }, [](Status) {});
    while (store_->begun.load() == begun) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return begun;
  }

  std::string dir_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_ = asio::make_work_guard(io_);
  WatchedStore* store_ = nullptr;
  std::unique_ptr<StoreWorker> worker_;
};

TEST_F(StoreWorkerTest, JobsQueuedDuringASyncShareTheNextCommitAndAnswerOnlyAfterIt) {
  store_->sync_delay_ms = 20;  // each commit "syncs" for 20 ms
  constexpr int kJobs = 200;
  int done = 0;
  int answered_before_commit = 0;
  for (int i = 0; i < kJobs; ++i) {
    worker_->Submit(MakeUser("u" + std::to_string(i)), [&](Made m) {
      EXPECT_TRUE(m.st.ok()) << m.st.ToString();
      // The batch this job ran in must have committed before we hear of it.
      if (store_->committed.load() < m.batch) ++answered_before_commit;
      ++done;
    });
  }
  RunUntil([&] { return done == kJobs; });
  ASSERT_EQ(done, kJobs);
  const StoreWorker::Stats st = worker_->stats();  // before UserCount() runs a job of its own
  EXPECT_EQ(answered_before_commit, 0);
  // 200 requests, a handful of commits (not 200).
  EXPECT_LE(worker_->batches(), 5u) << "batches: " << worker_->batches();
  EXPECT_EQ(worker_->jobs(), static_cast<std::uint64_t>(kJobs));
  EXPECT_EQ(store_->committed.load(), static_cast<int>(worker_->batches()));
  EXPECT_EQ(UserCount(), static_cast<std::size_t>(kJobs));
  // What /metrics shows: every batch's size and time, the sync included.
  EXPECT_GE(st.batches, 1u);
  EXPECT_LE(st.batches, 5u);
  EXPECT_EQ(st.jobs, static_cast<std::uint64_t>(kJobs));
  EXPECT_EQ(st.failed_commits, 0u);
  EXPECT_EQ(st.batch_jobs.count(), st.batches);
  EXPECT_DOUBLE_EQ(st.batch_jobs.sum(), kJobs);
  EXPECT_EQ(st.batch_seconds.count(), st.batches);
  EXPECT_GE(st.batch_seconds.sum(), 0.020 * static_cast<double>(st.batches));
  std::uint64_t big = 0;  // batches of more than 16 jobs (buckets past le=16)
  for (std::size_t i = 0; i < st.batch_jobs.counts().size(); ++i) {
    if (i >= st.batch_jobs.bounds().size() || st.batch_jobs.bounds()[i] > 16) big += st.batch_jobs.counts()[i];
  }
  EXPECT_GE(big, 1u);
}

// Issue 7: PostgreSQL deadlocks between two servers' batches, each holding
// stream locks from an earlier write that the other's later write waited
// for. PgStore answers such a later write kLockOrder instead of waiting; the
// worker commits the jobs before it and runs it (and everything after it,
// in order) first in the next batch, where waiting is safe.
TEST_F(StoreWorkerTest, AJobOutOfLockOrderEndsTheBatchAndRunsFirstInTheNext) {
  store_->lock_orders = 1;
  // Holds the store thread until the three jobs are queued, so at least two
  // of them share a batch, whichever way the queue is taken.
  std::atomic<bool> go{false};
  bool held = false;
  worker_->Submit(
      [&go](Store&) {
        while (!go) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return Status::OK();
      },
      [&](Status) { held = true; });
  std::vector<Made> made(3);
  int done = 0;
  for (int i = 0; i < 3; ++i) {
    worker_->Submit(MakeUser("u" + std::to_string(i)), [&, i](Made m) {
      made[static_cast<std::size_t>(i)] = m;
      ++done;
    });
  }
  go = true;
  RunUntil([&] { return held && done == 3; });
  ASSERT_EQ(done, 3);
  for (const Made& m : made) EXPECT_TRUE(m.st.ok()) << m.st.ToString();
  EXPECT_EQ(store_->lock_orders.load(), 0);  // one was refused...
  EXPECT_EQ(worker_->stats().cut_batches, 1u);  // ...which cut its batch
  EXPECT_LT(made[0].id, made[1].id);  // and decision order was kept
  EXPECT_LT(made[1].id, made[2].id);
  EXPECT_EQ(worker_->jobs(), 4u);
  EXPECT_EQ(UserCount(), 3u);
}

// Issue 7: acks take their recipients' stream locks on PostgreSQL (a resend
// racing an ack was stored twice), so an ack merged after the enqueues of
// its batch may be refused kLockOrder. It was logged and dropped (the row
// stayed until the next login); now it runs first in the next batch, alone,
// where it may wait.
TEST_F(StoreWorkerTest, AnAckOutOfLockOrderRunsFirstInTheNextBatch) {
  Made bob;
  bool made = false;
  worker_->Submit(MakeUser("bob"), [&](Made m) {
    bob = m;
    made = true;
  });
  RunUntil([&] { return made; });
  ASSERT_TRUE(bob.st.ok()) << bob.st.ToString();
  const std::uint64_t b = bob.id;
  std::vector<std::uint64_t> first;
  bool stored = false;
  worker_->SubmitEnqueue({{b, "k1", "one"}}, [&](const Status& st, std::span<const std::uint64_t> seqs,
                                                 std::span<const Enqueued>) {
    EXPECT_TRUE(st.ok()) << st.ToString();
    first.assign(seqs.begin(), seqs.end());
    stored = true;
  });
  RunUntil([&] { return stored; });
  ASSERT_EQ(first.size(), 1u);

  store_->ack_lock_orders = 1;
  std::promise<void> gate;
  const int before = HoldStoreThread(&gate);
  bool second = false;
  worker_->SubmitEnqueue({{b, "k2", "two"}}, [&](const Status& st, std::span<const std::uint64_t>,
                                                 std::span<const Enqueued>) {
    EXPECT_TRUE(st.ok()) << st.ToString();
    second = true;
  });
  worker_->SubmitAck(b, {first[0]});
  gate.set_value();
  RunUntil([&] { return second; });
  ASSERT_TRUE(second);
  EXPECT_EQ(Pending(b), 1u);  // k1 acknowledged, k2 waiting
  EXPECT_EQ(store_->ack_lock_orders.load(), 0);  // the ack was refused once...
  EXPECT_EQ(store_->ack_many_calls.load(), 2);   // ...and run again
  EXPECT_GE(store_->begun.load(), before + 2);
}

TEST_F(StoreWorkerTest, FailedCommitFailsEveryJobOfTheBatchAndKeepsNothing) {
  store_->fail_commits = true;
  int failed = 0;
  for (int i = 0; i < 10; ++i) {
    worker_->Submit(MakeUser("lost" + std::to_string(i)), [&](Made m) {
      EXPECT_EQ(m.st.code(), Code::kIOError) << m.st.ToString();
      ++failed;
    });
  }
  RunUntil([&] { return failed == 10; });
  EXPECT_EQ(failed, 10);
  EXPECT_GE(worker_->stats().failed_commits, 1u);
  EXPECT_EQ(worker_->stats().failed_commits, worker_->batches());
  store_->fail_commits = false;
  EXPECT_EQ(UserCount(), 0u);
  // The worker goes on after a failed commit.
  bool ok = false;
  worker_->Submit(MakeUser("after"), [&](Made m) { ok = m.st.ok(); });
  RunUntil([&] { return ok; });
  EXPECT_TRUE(ok);
  EXPECT_EQ(UserCount(), 1u);
}

// A job of several calls is one transaction only inside a batch (PgStore has
// no units outside one): a batch that cannot begin runs none of its jobs,
// each fails with the error, and nothing of them stays; one failed begin
// (a broken pooled connection) is retried.
TEST_F(StoreWorkerTest, ABatchThatCannotBeginRunsNoJobAndFailsEach) {
  store_->units_only_in_batch = true;
  // Two failed begins per batch (the begin and its retry); the two jobs may
  // be taken in one batch or in two (under TSan they often are two).
  store_->fail_begins = 4;
  Status two_steps;
  bool done = false;
  // Two calls: the second fails, so the first must be undone with it.
  worker_->Submit(
      [](Store& s) {
        const UserRecord u = Record("half");
        std::uint64_t id = 0;
        Status st = s.CreateUser(u, &id);
        if (!st.ok()) return st;
        return s.CreateUser(u, &id);  // kNameTaken
      },
      [&](Status st) {
        two_steps = st;
        done = true;
      });
  std::vector<std::uint64_t> seqs{1};
  Status enqueued;
  bool enqueue_done = false;
  worker_->SubmitEnqueue({}, [&](const Status& st, std::span<const std::uint64_t> got, std::span<const Enqueued>) {
    enqueued = st;
    seqs.assign(got.begin(), got.end());
    enqueue_done = true;
  });
  RunUntil([&] { return done && enqueue_done; });
  store_->fail_begins = 0;  // what one batch left unused
  EXPECT_EQ(two_steps.code(), Code::kIOError) << two_steps.ToString();
  EXPECT_EQ(enqueued.code(), Code::kIOError) << enqueued.ToString();
  EXPECT_TRUE(seqs.empty());
  EXPECT_EQ(UserCount(), 0u) << "a job ran outside a batch and half of it stayed";

  // One failed begin is retried: the batch runs.
  store_->fail_begins = 1;
  bool ok = false;
  worker_->Submit(MakeUser("after"), [&](Made m) { ok = m.st.ok(); });
  RunUntil([&] { return ok; });
  EXPECT_TRUE(ok);
  EXPECT_EQ(UserCount(), 1u);
}

TEST_F(StoreWorkerTest, AFailedJobIsUndoneAloneInsideItsBatch) {
  // Hold the store thread so the next three jobs form one batch.
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  int finished = 0;
  worker_->Submit(
      [opened](Store&) {
        opened.wait();
        return Status::OK();
      },
      [&](Status) { ++finished; });
  while (store_->begun.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Made a, b, c;
  worker_->Submit(MakeUser("a"), [&](Made m) { a = m; ++finished; });
  auto half_done = [make = MakeUser("b")](Store& s) mutable {
    Made m = make(s);  // writes b ...
    m.st = Status(Code::kNotFriends, "refused after writing");  // ... then fails
    return m;
  };
  worker_->Submit(half_done, [&](Made m) { b = m; ++finished; });
  worker_->Submit(MakeUser("c"), [&](Made m) { c = m; ++finished; });
  gate.set_value();
  RunUntil([&] { return finished == 4; });
  ASSERT_EQ(finished, 4);
  EXPECT_EQ(worker_->batches(), 2u);
  EXPECT_TRUE(a.st.ok());
  EXPECT_EQ(b.st.code(), Code::kNotFriends);
  EXPECT_TRUE(c.st.ok());
  EXPECT_EQ(a.batch, c.batch);
  EXPECT_EQ(UserCount(), 2u);  // a and c; b's write was undone
}

TEST_F(StoreWorkerTest, AThrowingJobFailsWithInternalAndTheWorkerGoesOn) {
  Status thrown;
  bool got = false;
  worker_->Submit(
      [](Store& s) -> Status {
        const UserRecord u = Record("ghost");
        std::uint64_t id = 0;
        Status st = s.CreateUser(u, &id);
        if (st.ok()) throw std::runtime_error("out of memory (injected)");
        return st;
      },
      [&](Status st) {
        thrown = st;
        got = true;
      });
  bool ok = false;
  worker_->Submit(MakeUser("alive"), [&](Made m) { ok = m.st.ok(); });
  RunUntil([&] { return got && ok; });
  EXPECT_EQ(thrown.code(), Code::kInternal);
  EXPECT_TRUE(ok);
  EXPECT_EQ(UserCount(), 1u);  // the throwing job's user was undone
}

// Each merged enqueue reads its share of one shared answer: a store that
// answers fewer seqs than items fails every enqueue of the call (INTERNAL)
// rather than hand one a share past the end.
TEST_F(StoreWorkerTest, AStoreAnsweringFewerSeqsThanItemsFailsItsEnqueuesWithInternal) {
  std::uint64_t bob = 0;
  worker_->Submit(MakeUser("bob"), [&](Made m) { bob = m.id; });
  RunUntil([&] { return bob != 0; });
  store_->short_answer = true;
  std::promise<void> gate;
  HoldStoreThread(&gate);
  std::vector<Status> sts(2);
  std::vector<std::size_t> shares(2, 99);
  int answered = 0;
  for (int i = 0; i < 2; ++i) {
    worker_->SubmitEnqueue({{bob, "k" + std::to_string(i), "p"}},
                           [&, i](const Status& st, std::span<const std::uint64_t> s, std::span<const Enqueued> h) {
                             sts[i] = st;
                             shares[i] = s.size() + h.size();
                             ++answered;
                           });
  }
  gate.set_value();
  RunUntil([&] { return answered == 2; });
  ASSERT_EQ(answered, 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(sts[i].code(), Code::kInternal) << i;
    EXPECT_EQ(shares[i], 0u) << i;
  }
  store_->short_answer = false;
}

TEST_F(StoreWorkerTest, ConsecutiveEnqueuesAndAcksOfABatchAreMergedYetAnsweredOneByOne) {
  std::uint64_t alice = 0, bob = 0;
  worker_->Submit(MakeUser("alice"), [&](Made m) { alice = m.id; });
  worker_->Submit(MakeUser("bob"), [&](Made m) { bob = m.id; });
  RunUntil([&] { return alice != 0 && bob != 0; });
  std::promise<void> gate;
  const int begun = HoldStoreThread(&gate);
  std::vector<std::vector<std::uint64_t>> seqs(3);
  std::vector<Status> sts(3);
  int answered = 0;
  for (int i = 0; i < 3; ++i) {
    std::vector<PendingItem> items{{bob, "k" + std::to_string(i), "p"}};
    if (i == 1) items.push_back({alice, "k1", "p"});
    worker_->SubmitEnqueue(std::move(items), [&, i](const Status& st, std::span<const std::uint64_t> s,
                                                    std::span<const Enqueued>) {
      sts[i] = st;
      seqs[i].assign(s.begin(), s.end());
      ++answered;
    });
  }
  gate.set_value();
  RunUntil([&] { return answered == 3; });
  ASSERT_EQ(answered, 3);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(sts[i].ok()) << sts[i].ToString();
  ASSERT_EQ(seqs[0].size(), 1u);
  ASSERT_EQ(seqs[1].size(), 2u);
  ASSERT_EQ(seqs[2].size(), 1u);
  EXPECT_LT(seqs[0][0], seqs[1][0]);
  EXPECT_LT(seqs[1][1], seqs[2][0]);
  EXPECT_EQ(store_->begun.load(), begun + 2);  // the gate's batch, then one for the three enqueues
  // Acks, merged too.
  worker_->SubmitAck(bob, {seqs[0][0], seqs[2][0]});
  worker_->SubmitAck(alice, {seqs[1][1]});
  const std::uint64_t left_bob = Pending(bob);
  const std::uint64_t left_alice = Pending(alice);
  EXPECT_EQ(left_bob, 1u);
  EXPECT_EQ(left_alice, 0u);
}

// Under load a batch holds many sessions' enqueues and acks interleaved
// (each client acks what it read and sends more); they still make one
// Enqueue and one AckMany call per batch, the acks after the enqueues, and
// each enqueue is answered with its own seqs in submission order.
TEST_F(StoreWorkerTest, InterleavedEnqueuesAndAcksOfABatchMakeOneEnqueueAndOneAckMany) {
  std::uint64_t alice = 0, bob = 0;
  worker_->Submit(MakeUser("alice"), [&](Made m) { alice = m.id; });
  worker_->Submit(MakeUser("bob"), [&](Made m) { bob = m.id; });
  RunUntil([&] { return alice != 0 && bob != 0; });
  // Two rows for bob, committed, to be acked in the next batch.
  std::vector<std::uint64_t> first;
  worker_->SubmitEnqueue({{bob, "a", "p"}, {bob, "b", "p"}},
                         [&](const Status& st, std::span<const std::uint64_t> s, std::span<const Enqueued>) {
                           EXPECT_TRUE(st.ok()) << st.ToString();
                           first.assign(s.begin(), s.end());
                         });
  RunUntil([&] { return first.size() == 2; });
  ASSERT_EQ(first.size(), 2u);

  std::promise<void> gate;
  const int begun = HoldStoreThread(&gate);
  const int enqueues_before = store_->enqueue_calls.load();
  const int acks_before = store_->ack_many_calls.load();
  // enqueue, ack, enqueue, ack, enqueue: all in the batch after the gate's.
  std::vector<std::vector<std::uint64_t>> seqs(3);
  std::vector<std::vector<Enqueued>> fresh(3);
  int answered = 0;
  auto enqueue = [&](int i, std::vector<PendingItem> items) {
    worker_->SubmitEnqueue(std::move(items), [&, i](const Status& st, std::span<const std::uint64_t> s,
                                                    std::span<const Enqueued> f) {
      EXPECT_TRUE(st.ok()) << st.ToString();
      seqs[i].assign(s.begin(), s.end());
      fresh[i].assign(f.begin(), f.end());
      ++answered;
    });
  };
  enqueue(0, {{alice, "x", "p"}});
  worker_->SubmitAck(bob, {first[0]});
  enqueue(1, {{alice, "y", "p"}, {bob, "c", "p"}});
  worker_->SubmitAck(bob, {first[1]});
  enqueue(2, {{alice, "z", "p"}, {alice, "x", "p"}});  // "x" again: the row of enqueue 0
  gate.set_value();
  RunUntil([&] { return answered == 3; });
  ASSERT_EQ(answered, 3);
  EXPECT_EQ(store_->begun.load(), begun + 2);  // the gate's batch, then one for all five
  EXPECT_EQ(store_->enqueue_calls.load() - enqueues_before, 1);
  EXPECT_EQ(store_->ack_many_calls.load() - acks_before, 1);
  ASSERT_EQ(seqs[0].size(), 1u);
  ASSERT_EQ(seqs[1].size(), 2u);
  ASSERT_EQ(seqs[2].size(), 2u);
  EXPECT_LT(seqs[0][0], seqs[1][0]);
  EXPECT_LT(seqs[1][0], seqs[1][1]);
  EXPECT_LT(seqs[1][1], seqs[2][0]);
  EXPECT_EQ(seqs[2][1], seqs[0][0]);  // the repeated key keeps its seq
  using E = Enqueued;
  EXPECT_EQ(fresh[0], std::vector<E>({E::kStored}));
  EXPECT_EQ(fresh[1], std::vector<E>({E::kStored, E::kStored}));
  EXPECT_EQ(fresh[2], std::vector<E>({E::kStored, E::kQueued}));
  // Both acked rows are gone; bob's new row and alice's three stay.
  const std::uint64_t left_bob = Pending(bob);
  const std::uint64_t left_alice = Pending(alice);
  EXPECT_EQ(left_bob, 1u);
  EXPECT_EQ(left_alice, 3u);
}

// Group-log acknowledgements (cumulative cursors) of one batch go to the
// store in one AckGroups call with everything the acks named, and the
// cursors move: the log is trimmed after them.
TEST_F(StoreWorkerTest, GroupAcksOfABatchMakeOneAckGroupsCall) {
  struct Team {
    Status st;
    std::uint64_t alice = 0, bob = 0, carol = 0, g = 0, s1 = 0, s2 = 0;
  };
  Team t;
  bool made = false;
  worker_->Submit(
      [](Store& s) {
        Team r;
        bool fresh = false;
        r.st = s.CreateUser(Record("alice"), &r.alice);
        if (r.st.ok()) r.st = s.CreateUser(Record("bob"), &r.bob);
        if (r.st.ok()) r.st = s.CreateUser(Record("carol"), &r.carol);
        if (r.st.ok()) r.st = s.CreateGroup("team", r.alice, &r.g);
        if (r.st.ok()) r.st = s.AddMember(r.g, r.bob);
        if (r.st.ok()) r.st = s.AddMember(r.g, r.carol);
        if (r.st.ok()) r.st = s.AppendGroup(r.g, r.alice, {r.bob, r.carol}, "k1", "p", &r.s1, &fresh, nullptr, nullptr);
        if (r.st.ok()) r.st = s.AppendGroup(r.g, r.alice, {r.bob, r.carol}, "k2", "p", &r.s2, &fresh, nullptr, nullptr);
        return r;
      },
      [&](Team r) {
        t = r;
        made = true;
      });
  RunUntil([&] { return made; });
  ASSERT_TRUE(t.st.ok()) << t.st.ToString();

  std::promise<void> gate;
  const int begun = HoldStoreThread(&gate);
  const int calls_before = store_->ack_groups_calls.load();
  worker_->SubmitAck(t.bob, {}, {{t.g, t.s1}});
  worker_->SubmitAck(t.carol, {}, {{t.g, t.s2}});
  worker_->SubmitAck(t.bob, {}, {{t.g, t.s2}});
  gate.set_value();
  std::uint64_t entries = 99;
  bool trimmed = false;
  worker_->Submit(
      [&](Store& s) {
        Status st = s.TrimGroup(t.g);
        return st.ok() ? s.CountGroupLog(t.g, &entries) : st;
      },
      [&](Status st) {
        EXPECT_TRUE(st.ok()) << st.ToString();
        trimmed = true;
      });
  RunUntil([&] { return trimmed; });
  EXPECT_EQ(store_->begun.load(), begun + 2);  // the gate's batch, then one for the acks and the trim
  EXPECT_EQ(store_->ack_groups_calls.load() - calls_before, 1);
  EXPECT_EQ(store_->group_acks_seen.load(), 3);
  EXPECT_EQ(entries, 0u);  // both members passed both entries
}

// A batch's enqueues go to the store in calls of at most the store's
// MaxMergedEnqueue items (256 for SQLite), never splitting a job: a job bigger than the cap is one call of its own. Each enqueue is
// still answered with its own seqs, in submission order.
TEST_F(StoreWorkerTest, MergedEnqueuesAreCutIntoCallsOfAtMostTheCapWithoutSplittingAJob) {
  std::uint64_t bob = 0;
  worker_->Submit(MakeUser("bob"), [&](Made m) { bob = m.id; });
  RunUntil([&] { return bob != 0; });
  std::promise<void> gate;
  const int begun = HoldStoreThread(&gate);
  const int enqueues_before = store_->enqueue_calls.load();
  const std::size_t kCap = store_->MaxMergedEnqueue();
  ASSERT_LT(kCap, 10000u);
  // cap + 1 one-item jobs (two calls: cap, then 1), then one job of
  // cap + 5 items (a call of its own), then one more item (a fourth call).
  std::vector<std::size_t> sizes(kCap + 1, 1);
  sizes.push_back(kCap + 5);
  sizes.push_back(1);
  std::vector<std::vector<std::uint64_t>> seqs(sizes.size());
  std::size_t answered = 0;
  std::size_t key = 0;
  for (std::size_t j = 0; j < sizes.size(); ++j) {
    std::vector<PendingItem> items;
    for (std::size_t k = 0; k < sizes[j]; ++k) items.push_back({bob, "k" + std::to_string(key++), "p"});
    worker_->SubmitEnqueue(std::move(items), [&, j](const Status& st, std::span<const std::uint64_t> s,
                                                    std::span<const Enqueued>) {
      EXPECT_TRUE(st.ok()) << st.ToString();
      seqs[j].assign(s.begin(), s.end());
      ++answered;
    });
  }
  gate.set_value();
  RunUntil([&] { return answered == sizes.size(); });
  ASSERT_EQ(answered, sizes.size());
  EXPECT_EQ(store_->begun.load(), begun + 2);  // still one batch for them all
  EXPECT_EQ(store_->enqueue_calls.load() - enqueues_before, 4);
  std::uint64_t last = 0;
  for (std::size_t j = 0; j < sizes.size(); ++j) {
    ASSERT_EQ(seqs[j].size(), sizes[j]) << "job " << j;
    for (std::uint64_t s : seqs[j]) {
      EXPECT_GT(s, last) << "job " << j;
      last = s;
    }
  }
  EXPECT_EQ(Pending(bob), key);
}

}  // namespace
}  // namespace fastchat::server
