#include "store_worker.h"

#include <exception>

#include <spdlog/spdlog.h>

namespace fastchat::server {

StoreWorker::StoreWorker(std::unique_ptr<Store> store, asio::any_io_executor home)
    : store_(std::move(store)), home_(std::move(home)), thread_([this] { Loop(); }) {}

StoreWorker::~StoreWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
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
  return batches_;
}

std::uint64_t StoreWorker::jobs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_;
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
    RunBatch(batch);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++batches_;
      jobs_ += batch.size();
    }
    batch.clear();
  }
}

void StoreWorker::RunBatch(std::vector<Job>& batch) {
  Store& store = *store_;
  const bool batched = store.BeginBatch().ok();  // if not, each job is its own transaction
  for (Job& job : batch) {
    const bool unit = job.unit && store.BeginUnit().ok();
    bool ok = false;
    try {
      ok = job.run(store);
    } catch (const std::exception& e) {
      spdlog::error("store job failed: {}", e.what());
      job.fail(Status(Code::kInternal, "internal error"));
    }
    if (unit) store.EndUnit(ok);
  }
  Status commit = batched ? store.CommitBatch() : Status::OK();
  if (!commit.ok()) {
    spdlog::error("store batch of {} requests not committed: {}", batch.size(), commit.ToString());
    for (Job& job : batch) job.fail(commit);
  }
  // One hop back to the event loop for the whole batch.
  std::vector<std::function<void()>> done;
  done.reserve(batch.size());
  for (Job& job : batch) done.push_back(std::move(job.done));
  asio::post(home_, [done = std::move(done)]() mutable {
    for (auto& d : done) d();
  });
}

}  // namespace fastchat::server
