#include "store_worker.h"

#include <algorithm>
#include <chrono>
#include <exception>

#include <spdlog/spdlog.h>

namespace fastchat::server {

namespace {
// More lanes than this would not pay on any machine we run on.
constexpr int kMaxLanes = 16;
}  // namespace

StoreWorker::StoreWorker(std::unique_ptr<Store> store, asio::any_io_executor home)
    : store_(std::move(store)), home_(std::move(home)) {
  const int n = std::clamp(store_->BatchLanes(), 1, kMaxLanes);
  for (int k = 1; k < n; ++k) {
    lanes_.push_back(std::make_unique<Lane>());
    Lane* lane = lanes_.back().get();
    lane->thread = std::thread([this, lane] { LaneLoop(lane); });
  }
  thread_ = std::thread([this] { Loop(); });
}

StoreWorker::~StoreWorker() { Finish(); }

void StoreWorker::Finish() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
  // Loop has returned, so no lane has work.
  {
    std::lock_guard<std::mutex> lock(lane_mu_);
    lanes_stop_ = true;
  }
  lane_wake_.notify_all();
  for (auto& lane : lanes_) lane->thread.join();
}

void StoreWorker::Enqueue(Job job) {
  bool was_empty;
  {
    std::lock_guard<std::mutex> lock(mu_);
    was_empty = queue_.empty();
    queue_.push_back(std::move(job));
  }
  if (was_empty) wake_.notify_one();
}

std::uint64_t StoreWorker::batches() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_.batches;
}

std::uint64_t StoreWorker::jobs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_.jobs;
}

StoreWorker::Stats StoreWorker::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s = stats_;
  s.queued = queue_.size();
  return s;
}

void StoreWorker::SubmitEnqueue(std::vector<PendingItem> items, EnqueueDone done) {
  Job j;
  j.kind = Job::Kind::kEnqueue;
  j.items = std::move(items);
  j.enqueued = std::move(done);
  Enqueue(std::move(j));
}

void StoreWorker::SubmitAck(std::uint64_t user, std::vector<std::uint64_t> seqs,
                            std::vector<std::pair<std::uint64_t, std::uint64_t>> groups) {
  Job j;
  j.kind = Job::Kind::kAck;
  j.user = user;
  j.seqs = std::move(seqs);
  j.groups = std::move(groups);
  Enqueue(std::move(j));
}

bool StoreWorker::RunMerged(std::vector<Job>& batch, std::size_t* i, std::vector<Job>* retry_acks) {
  Store& store = *store_;
  // The stretch of enqueues and acks starting at *i, up to the next other
  // job or the job that would take its enqueued items past the store's
  // MaxMergedEnqueue (a stretch holds at least one job). Acks that begin
  // the batch are a stretch of their own: they run before the batch holds
  // any lock, so the store never answers them kLockOrder (see below).
  const std::size_t max_items = store.MaxMergedEnqueue();
  const bool leading_acks = *i == 0 && batch[0].kind == Job::Kind::kAck;
  std::size_t end = *i;
  std::size_t merged_items = 0;
  while (end < batch.size() && batch[end].kind != Job::Kind::kRun) {
    if (leading_acks && batch[end].kind != Job::Kind::kAck) break;
    if (batch[end].kind == Job::Kind::kEnqueue) {
      if (end > *i && merged_items + batch[end].items.size() > max_items) break;
      merged_items += batch[end].items.size();
    }
    ++end;
  }

  // Every enqueue of the stretch, in order, in one Enqueue call.
  std::vector<PendingItem> items;
  items.reserve(merged_items);
  for (std::size_t k = *i; k < end; ++k) {
    if (batch[k].kind != Job::Kind::kEnqueue) continue;
    for (PendingItem& item : batch[k].items) items.push_back(std::move(item));
  }
  auto merged = std::make_shared<MergedEnqueue>();
  Status& st = merged->st;
  if (!items.empty()) {
    try {
      st = store.Enqueue(items, &merged->seqs, &merged->how);
    } catch (const std::exception& e) {
      spdlog::error("store enqueue failed: {}", e.what());
      st = Status(Code::kInternal, "internal error");
    }
  }
  if (st.code() == Code::kLockOrder && *i > 0) {
    // Nothing was stored (and no ack of the stretch ran): give the items
    // back for the next batch.
    std::size_t at = 0;
    for (std::size_t k = *i; k < end; ++k) {
      if (batch[k].kind != Job::Kind::kEnqueue) continue;
      for (PendingItem& item : batch[k].items) item = std::move(items[at++]);
    }
    return false;
  }
  // Each enqueue's share of the results: where its items begin in the
  // merged call (a failure answers every enqueue of the stretch).
  if (st.ok() && (merged->seqs.size() != items.size() || merged->how.size() != items.size())) {
    spdlog::error("store enqueue answered {} seqs for {} items", merged->seqs.size(), items.size());
    st = Status(Code::kInternal, "internal error");
  }
  std::size_t at = 0;
  for (std::size_t k = *i; k < end; ++k) {
    Job& job = batch[k];
    if (job.kind != Job::Kind::kEnqueue) continue;
    job.merged = merged;
    job.merged_at = at;
    at += job.items.size();
  }

  // Then every ack of the stretch in one AckMany call. An ack only names
  // rows delivered after an earlier batch committed, never a row of this
  // stretch, so running the acks after the enqueues changes no row an ack
  // deletes; an enqueue of a key whose row an ack of the stretch deletes
  // finds that row (Enqueued::kQueued) instead of storing it again.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> acks;
  std::size_t ack_jobs = 0;
  for (std::size_t k = *i; k < end; ++k) {
    if (batch[k].kind != Job::Kind::kAck) continue;
    ++ack_jobs;
    for (std::uint64_t seq : batch[k].seqs) acks.emplace_back(batch[k].user, seq);
  }
  if (!acks.empty()) {
    Status ack_st = store.AckMany(acks);
    if (ack_st.code() == Code::kLockOrder) {
      // Nothing was deleted: the acks go back to the front of the queue and
      // run first in the next batch, where they may wait for their locks.
      for (std::size_t k = *i; k < end; ++k) {
        if (batch[k].kind != Job::Kind::kAck) continue;
        Job again;
        again.kind = Job::Kind::kAck;
        again.user = batch[k].user;
        again.seqs = std::move(batch[k].seqs);
        again.groups = std::move(batch[k].groups);
        retry_acks->push_back(std::move(again));
      }
      *i = end;
      return true;
    }
    if (!ack_st.ok()) spdlog::error("acks of {} requests failed: {}", ack_jobs, ack_st.ToString());
  }
  // Then the stretch's group acknowledgements (cursors, cumulative) in one
  // AckGroups call.
  std::vector<Store::GroupCursorAck> group_acks;
  for (std::size_t k = *i; k < end; ++k) {
    if (batch[k].kind != Job::Kind::kAck) continue;
    for (const auto& [group, seq] : batch[k].groups) group_acks.push_back({group, batch[k].user, seq});
  }
  if (!group_acks.empty()) {
    if (Status st_groups = store.AckGroups(group_acks); !st_groups.ok()) {
      spdlog::error("group acks of {} requests failed: {}", ack_jobs, st_groups.ToString());
    }
  }
  *i = end;
  return true;
}

void StoreWorker::Loop() {
  std::vector<Job> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left to run
      if (queue_.size() <= kMaxBatch) {
        batch.swap(queue_);
      } else {
        batch.assign(std::make_move_iterator(queue_.begin()),
                     std::make_move_iterator(queue_.begin() + kMaxBatch));
        queue_.erase(queue_.begin(), queue_.begin() + kMaxBatch);
      }
    }
    const auto start = std::chrono::steady_clock::now();
    const bool split = Splittable(batch);
    const bool committed = split ? RunInLanes(batch) : RunBatch(batch);
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.batches;
      if (split) ++stats_.split_batches;
      stats_.jobs += batch.size();
      if (!committed) ++stats_.failed_commits;
      stats_.batch_jobs.Observe(static_cast<double>(batch.size()));
      stats_.batch_seconds.Observe(took.count());
    }
    // Counted first: whoever hears a job's answer finds its batch in stats().
    PostDone(batch);
    batch.clear();
  }
}

bool StoreWorker::RunBatch(std::vector<Job>& batch) {
  Store& store = *store_;
  // Jobs never run outside a batch: there a job of several calls would not
  // be one transaction (PgStore has no units outside a batch). One retry
  // (a broken pooled connection is reopened by it); then every job fails.
  Status begun = store.BeginBatch();
  if (!begun.ok()) begun = store.BeginBatch();
  if (!begun.ok()) {
    spdlog::error("store batch of {} requests not begun: {}", batch.size(), begun.ToString());
    for (Job& job : batch) {
      if (job.kind == Job::Kind::kEnqueue) {
        job.failed = begun;
      } else if (job.fail) {
        job.fail(begun);
      }
    }
    return false;
  }
  std::size_t cut = batch.size();
  std::vector<Job> retry_acks;
  for (std::size_t i = 0; i < batch.size();) {
    if (batch[i].kind != Job::Kind::kRun) {
      if (!RunMerged(batch, &i, &retry_acks)) {
        cut = i;
        break;
      }
      continue;
    }
    Job& job = batch[i];
    const bool unit = job.unit && store.BeginUnit().ok();
    Status st;
    try {
      st = job.run(store);
    } catch (const std::exception& e) {
      spdlog::error("store job failed: {}", e.what());
      st = Status(Code::kInternal, "internal error");
      job.fail(st);
    }
    if (unit) store.EndUnit(st.ok());
    if (st.code() == Code::kLockOrder && i > 0) {
      cut = i;
      break;
    }
    ++i;
  }
  // The jobs from `cut` on go back to the front of the queue (see the
  // header), and before them the acks the store put off.
  if (cut < batch.size() || !retry_acks.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (cut < batch.size()) {
      queue_.insert(queue_.begin(), std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(cut)),
                    std::make_move_iterator(batch.end()));
      batch.resize(cut);
      ++stats_.cut_batches;
    }
    queue_.insert(queue_.begin(), std::make_move_iterator(retry_acks.begin()),
                  std::make_move_iterator(retry_acks.end()));
  }
  Status commit = store.CommitBatch();
  if (!commit.ok()) {
    spdlog::error("store batch of {} requests not committed: {}", batch.size(), commit.ToString());
    for (Job& job : batch) {
      if (job.kind == Job::Kind::kEnqueue) job.failed = commit;
      if (job.fail) job.fail(commit);
    }
  }
  return commit.ok();
}

bool StoreWorker::Splittable(const std::vector<Job>& batch) const {
  if (lanes_.empty() || batch.size() < 2) return false;
  for (const Job& job : batch) {
    if (job.kind == Job::Kind::kRun) return false;
  }
  return true;
}

bool StoreWorker::RunInLanes(std::vector<Job>& batch) {
  const std::size_t n = lanes_.size() + 1;
  std::vector<std::vector<Job>> parts(n);
  for (std::size_t k = 0; k < batch.size(); ++k) {
    Job& job = batch[k];
    job.order = k;
    std::uint64_t user = job.user;
    if (job.kind == Job::Kind::kEnqueue) user = job.items.empty() ? 0 : job.items.front().recipient;
    parts[user % n].push_back(std::move(job));
  }
  {
    std::lock_guard<std::mutex> lock(lane_mu_);
    for (std::size_t l = 1; l < n; ++l) {
      Lane& lane = *lanes_[l - 1];
      lane.jobs.swap(parts[l]);
      lane.busy = true;
    }
  }
  lane_wake_.notify_all();
  bool committed = parts[0].empty() || RunBatch(parts[0]);
  {
    std::unique_lock<std::mutex> lock(lane_mu_);
    for (std::size_t l = 1; l < n; ++l) {
      Lane& lane = *lanes_[l - 1];
      lane_done_.wait(lock, [&lane] { return !lane.busy; });
      committed = committed && lane.committed;
      parts[l].swap(lane.jobs);
    }
  }
  // Back into one batch, in submission order (each part is in order).
  batch.clear();
  for (auto& part : parts) {
    for (Job& job : part) batch.push_back(std::move(job));
  }
  std::sort(batch.begin(), batch.end(), [](const Job& a, const Job& b) { return a.order < b.order; });
  return committed;
}

void StoreWorker::LaneLoop(Lane* lane) {
  std::unique_lock<std::mutex> lock(lane_mu_);
  for (;;) {
    lane_wake_.wait(lock, [this, lane] { return lanes_stop_ || lane->busy; });
    if (!lane->busy) return;  // stopping
    std::vector<Job> jobs;
    jobs.swap(lane->jobs);
    lock.unlock();
    const bool committed = jobs.empty() || RunBatch(jobs);
    lock.lock();
    lane->jobs.swap(jobs);
    lane->committed = committed;
    lane->busy = false;
    lane_done_.notify_all();
  }
}

void StoreWorker::PostDone(std::vector<Job>& batch) {
  // One hop back to the event loop for the whole batch. An enqueue's answer
  // is read from its stretch's shared results: nothing copied per job.
  struct Done {
    std::function<void()> done;  // a job of Submit
    EnqueueDone enqueued;        // or an enqueue
    std::shared_ptr<const MergedEnqueue> merged;
    std::size_t at = 0;
    std::size_t n = 0;
    Status failed;
  };
  std::vector<Done> done;
  done.reserve(batch.size());
  for (Job& job : batch) {
    if (job.kind == Job::Kind::kEnqueue) {
      done.push_back(Done{{}, std::move(job.enqueued), std::move(job.merged), job.merged_at, job.items.size(),
                          std::move(job.failed)});
    } else if (job.done) {
      done.push_back(Done{std::move(job.done), {}, nullptr, 0, 0, Status::OK()});
    }
  }
  asio::post(home_, [done = std::move(done)]() mutable {
    for (Done& d : done) {
      if (d.done) {
        d.done();
        continue;
      }
      if (!d.failed.ok() || d.merged == nullptr || !d.merged->st.ok()) {
        d.enqueued(!d.failed.ok() ? d.failed : d.merged != nullptr ? d.merged->st : Status(Code::kInternal, "not run"),
                   {}, {});
        continue;
      }
      const MergedEnqueue& m = *d.merged;
      d.enqueued(m.st, std::span<const std::uint64_t>(m.seqs).subspan(d.at, d.n),
                 std::span<const Enqueued>(m.how).subspan(d.at, d.n));
    }
  });
}

}  // namespace fastchat::server
