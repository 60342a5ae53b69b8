// StoreWorker: the store thread. Runs Store calls off the event loop and
// commits them in groups.
//
// Jobs are queued in submission order. The store thread takes everything
// queued (up to kMaxBatch jobs), runs the jobs in order inside one store
// batch (Store::BeginBatch), each in its own unit so a failed job is undone
// alone, and commits the batch with one sync to stable storage
// (Store::CommitBatch). Only then are the jobs' results handed back to the
// event loop, all in one post: a reply built from a result therefore leaves
// after the write behind it is durable. Jobs that arrive while a batch is
// syncing form the next batch, so under load many requests share one
// transaction and one fdatasync (group commit).
//
// If the batch cannot begin (Store::BeginBatch fails twice), no job of it
// runs and each gets that error. If the commit fails, every job of that
// batch gets the commit's error
// instead of its own result (see FailWith) and none of their changes stays.
// A job that throws is undone and fails with kInternal; the store thread
// goes on.
//
// A job (or merged run of enqueues) that fails with kLockOrder changed
// nothing and would have had to wait for a lock out of the batch's lock
// order (PgStore, where waiting could deadlock with another server's
// batch): the batch is cut there. The jobs before it commit as usual; it and
// every job after it go back to the front of the queue, in order, and form
// the next batch, where it runs first and so waits safely. (Only a job that
// already ran first in its batch gets kLockOrder as its result.)
//
// Lanes. A store whose BatchLanes() is N > 1 (PgStore: one connection
// each) gets N batches at once when a batch holds nothing but enqueues and
// acks: the jobs are split by recipient (an enqueue goes by its first
// item's recipient, an ack by its user; lane = id mod N) into N batches,
// run and committed at the same time on N threads (this one and N - 1
// helpers), so one recipient's rows are written by one lane, in
// submission order. The next batch is taken only after every lane has
// committed, and the results are handed back together, in submission
// order, as for one batch. A lane's commit failure fails only that lane's
// jobs; a lane cut short (kLockOrder) puts its rest back at the front of
// the queue as above, so jobs of another lane that came later may be
// answered first. A batch with any other job runs as one batch, on this
// thread.
//
// `Submit(job, done)` calls done(result) on the event loop; the coroutine
// form is `R r = co_await worker.Run(std::move(job))` (name the job first:
// see offload.h). A job's result type R is Status or a struct with a
// `Status st` member: that status says whether the job succeeded.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>

#include "fastchat/store.h"
#include "histogram.h"

namespace fastchat::server {

namespace store_result {
inline const Status& Of(const Status& s) { return s; }
template <class R>
const Status& Of(const R& r) {
  return r.st;
}
inline void Fail(Status* s, const Status& why) { *s = why; }
template <class R>
void Fail(R* r, const Status& why) {
  r->st = why;
}
}  // namespace store_result

class StoreWorker {
 public:
  static constexpr std::size_t kMaxBatch = 4096;

  // Results are handed back on `home` (the event loop).
  StoreWorker(std::unique_ptr<Store> store, asio::any_io_executor home);
  ~StoreWorker();  // Finish()

  // Runs the jobs queued so far (their results are posted to `home`), then
  // stops the thread; a job submitted later is never run. Idempotent.
  void Finish();

  StoreWorker(const StoreWorker&) = delete;
  StoreWorker& operator=(const StoreWorker&) = delete;

  // Queues job(store) for the next batch; done(result) runs on `home` once
  // the batch holding it has committed (or failed). `own_unit` false: the
  // job makes at most one store call (atomic by itself), so it needs no
  // unit of its own to be undone alone.
  template <class F, class Done>
  void Submit(F job, Done done, bool own_unit = true) {
    using R = std::invoke_result_t<F&, Store&>;
    auto result = std::make_shared<R>();
    Job j;
    j.run = [job = std::move(job), result](Store& s) mutable {
      *result = job(s);
      return store_result::Of(*result);
    };
    j.fail = [result](const Status& why) { store_result::Fail(result.get(), why); };
    j.done = [done = std::move(done), result]() mutable { done(std::move(*result)); };
    j.unit = own_unit;
    Enqueue(std::move(j));
  }

  // Stores `items` (Store::Enqueue); done(status, seqs, how) runs on
  // `home` after the commit. The items of the enqueues of one batch that
  // are not separated by another kind of job (acks do not separate them)
  // go to the store in one Enqueue call (one statement on PostgreSQL), or
  // in several of at most Store::MaxMergedEnqueue() items each.
  // The spans (one seq and one Enqueued per item, empty on failure) are
  // valid only during the call.
  using EnqueueDone =
      std::function<void(const Status&, std::span<const std::uint64_t> seqs, std::span<const Enqueued> how)>;
  void SubmitEnqueue(std::vector<PendingItem> items, EnqueueDone done);
  // Deletes acknowledged rows of `user` (Store::Ack); the acks of one batch
  // not separated by a job other than an enqueue go to the store in one
  // AckMany call, after those enqueues. No answer.
  // `groups`: (group, seq) cumulative acknowledgements of group logs; those
  // of one batch's stretch go to the store in one AckGroups call, after the
  // AckMany.
  void SubmitAck(std::uint64_t user, std::vector<std::uint64_t> seqs,
                 std::vector<std::pair<std::uint64_t, std::uint64_t>> groups = {});

  // Coroutine form of Submit.
  template <class F>
  auto Run(F&& f) -> asio::awaitable<std::invoke_result_t<std::decay_t<F>&, Store&>> {
    using Fn = std::decay_t<F>;
    using R = std::invoke_result_t<Fn&, Store&>;
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(R)>(
        [this](auto handler, Fn fn) {
          auto h = std::make_shared<decltype(handler)>(std::move(handler));
          this->Submit(std::move(fn), [h](R r) { std::move (*h)(std::move(r)); });
        },
        asio::use_awaitable, Fn(std::move(f)));
  }

  // Totals for tests and stats (any thread). A batch is counted here (and
  // in stats()) before its results are handed back.
  std::uint64_t batches() const;
  std::uint64_t jobs() const;

  // What the store thread has done, for /metrics (a copy, any thread):
  // batches run, jobs in them, batches whose commit failed, the jobs
  // waiting now, and per batch its job count and its time (from the first
  // job to the end of the commit's sync).
  struct Stats {
    std::uint64_t batches = 0;
    std::uint64_t jobs = 0;
    std::uint64_t failed_commits = 0;
    std::uint64_t cut_batches = 0;  // cut short by a kLockOrder job (see above)
    std::uint64_t split_batches = 0;  // run in more than one lane (see above)
    std::size_t queued = 0;
    Histogram batch_jobs{{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096}};
    Histogram batch_seconds{{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                             2.5, 10}};
  };
  Stats stats() const;

 private:
  // What one Store::Enqueue call of merged enqueues answered.
  struct MergedEnqueue {
    Status st;
    std::vector<std::uint64_t> seqs;
    std::vector<Enqueued> how;
  };
  struct Job {
    std::function<Status(Store&)> run;        // the job's status
    std::function<void(const Status&)> fail;  // replaces the result with an error
    std::function<void()> done;               // hands the result back (on home)
    bool unit = true;                         // run inside its own savepoint
    // Set instead of `run` for the jobs merged across a batch:
    enum class Kind { kRun, kEnqueue, kAck } kind = Kind::kRun;
    std::vector<PendingItem> items;             // kEnqueue
    EnqueueDone enqueued;                       // kEnqueue
    // kEnqueue, once run: the results of its stretch's Enqueue call (shared
    // by every enqueue of the stretch), where its own begin, and the error
    // that replaces them if the batch failed.
    std::shared_ptr<const MergedEnqueue> merged;
    std::size_t merged_at = 0;
    Status failed;
    std::uint64_t user = 0;                     // kAck
    std::vector<std::uint64_t> seqs;            // kAck
    std::vector<std::pair<std::uint64_t, std::uint64_t>> groups;  // kAck: (group, seq)
    std::size_t order = 0;                      // place in its batch, while split into lanes
  };
  // A helper thread that runs one lane's share of a split batch.
  struct Lane {
    std::vector<Job> jobs;  // handed over and back under lane_mu_
    bool busy = false;      // jobs handed over, not yet run
    bool committed = true;
    std::thread thread;
  };
  // Runs batch[*i] and the enqueues and acks after it up to the next other
  // job: all the enqueues in one Store::Enqueue call (in order), then all
  // the acks in one Store::AckMany call; advances *i past them. False (*i
  // unchanged) if the store said kLockOrder to the enqueues: nothing ran.
  // Acks the store said kLockOrder to are moved into `retry_acks` (to run
  // first in the next batch).
  bool RunMerged(std::vector<Job>& batch, std::size_t* i, std::vector<Job>* retry_acks);
  void Enqueue(Job job);
  void Loop();
  // Returns false if the batch could not begin or its commit failed. Jobs
  // cut off (kLockOrder) are moved from the end of `batch` back to the
  // front of the queue. The results stay in `batch` for PostDone.
  bool RunBatch(std::vector<Job>& batch);
  // Hands the batch's results back to the event loop.
  void PostDone(std::vector<Job>& batch);
  // True if `batch` may be split into lanes: there are helpers, and it
  // holds two or more jobs, all enqueues and acks.
  bool Splittable(const std::vector<Job>& batch) const;
  // Runs `batch` split into lanes (see the header comment); false if any
  // lane's batch could not begin or commit. Leaves in `batch` the jobs that
  // ran, in submission order.
  bool RunInLanes(std::vector<Job>& batch);
  void LaneLoop(Lane* lane);

  std::unique_ptr<Store> store_;
  asio::any_io_executor home_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<Job> queue_;
  bool stop_ = false;
  Stats stats_;  // guarded by mu_
  // Helpers: store_->BatchLanes() - 1 of them.
  std::mutex lane_mu_;
  std::condition_variable lane_wake_;  // work handed over, or stopping
  std::condition_variable lane_done_;  // a lane finished its share
  bool lanes_stop_ = false;            // guarded by lane_mu_
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace fastchat::server
