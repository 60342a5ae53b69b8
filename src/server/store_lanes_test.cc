// StoreWorker lanes: a batch of enqueues and acks split by recipient over
// several connections of a real PostgreSQL store (PgStore with a pool of 4:
// two lanes). Needs the PG* environment (pg_virtualenv, as ctest is run).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <gtest/gtest.h>

#include "harness/cluster.h"
#include "store/forwarding_store.h"
#include "store/pg_store.h"
#include "store_worker.h"

namespace fastchat::server {
namespace {

// Records which thread made each Enqueue call and for whom; can fail the
// commit of a batch that enqueued for a recipient of one parity.
class LaneWatch : public ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;

  struct Call {
    std::thread::id thread;
    std::vector<std::uint64_t> recipients;
  };

  Status BeginBatch() override {
    tl_parities_.clear();
    Status s = ForwardingStore::BeginBatch();
    ++begun;
    return s;
  }
  Status CommitBatch() override {
    const int fail = fail_parity.load();
    if (fail >= 0 && tl_parities_.count(fail) > 0) {
      inner().RollbackBatch();
      return Status(Code::kIOError, "commit failed (injected)");
    }
    return ForwardingStore::CommitBatch();
  }
  Status Enqueue(const std::vector<PendingItem>& items, std::vector<std::uint64_t>* seqs,
                 std::vector<Enqueued>* how) override {
    Call call{std::this_thread::get_id(), {}};
    for (const PendingItem& item : items) {
      call.recipients.push_back(item.recipient);
      tl_parities_.insert(static_cast<int>(item.recipient % 2));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      calls_.push_back(std::move(call));
    }
    return ForwardingStore::Enqueue(items, seqs, how);
  }

  std::vector<Call> calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

  std::atomic<int> begun{0};
  std::atomic<int> fail_parity{-1};  // >= 0: a batch enqueueing for such a recipient fails to commit

 private:
  std::mutex mu_;
  std::vector<Call> calls_;
  static thread_local std::set<int> tl_parities_;  // recipients' parities in this thread's batch
};
thread_local std::set<int> LaneWatch::tl_parities_;

class StoreLanesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::unique_ptr<PgStore> pg;
    const Status s = PgStore::Open(schema_.Conninfo(), 4, &pg);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_EQ(pg->BatchLanes(), 2);
    auto watched = std::make_unique<LaneWatch>(std::move(pg));
    store_ = watched.get();
    worker_ = std::make_unique<StoreWorker>(std::move(watched), io_.get_executor());
    for (int i = 0; i < 6; ++i) users_.push_back(MakeUser("u" + std::to_string(i)));
  }
  void TearDown() override { worker_.reset(); }

  template <class Pred>
  void RunUntil(Pred done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done() && std::chrono::steady_clock::now() < deadline) io_.run_for(std::chrono::milliseconds(5));
  }

  std::uint64_t MakeUser(const std::string& name) {
    struct Made {
      Status st;
      std::uint64_t id = 0;
    };
    Made made;
    bool done = false;
    worker_->Submit(
        [name](Store& s) {
          UserRecord u;
          u.name = name;
          u.password_hash = "h";
          u.x25519_public = std::string(32, 'x');
          u.ed25519_public = std::string(32, 'e');
          Made m;
          m.st = s.CreateUser(u, &m.id);
          return m;
        },
        [&](Made m) {
          made = m;
          done = true;
        });
    RunUntil([&] { return done; });
    EXPECT_TRUE(made.st.ok()) << made.st.ToString();
    return made.id;
  }

  std::uint64_t Pending(std::uint64_t user) {
    std::uint64_t n = 999;
    bool done = false;
    worker_->Submit([&n, user](Store& s) { return s.CountPending(user, &n); }, [&](Status) { done = true; });
    RunUntil([&] { return done; });
    return n;
  }

  // Occupies the store thread until `gate` is set; jobs submitted before
  // then form the next batch.
  void Hold(std::promise<void>* gate) {
    std::shared_future<void> opened = gate->get_future().share();
    const int begun = store_->begun.load();
    worker_->Submit([opened](Store&) { opened.wait(); return Status::OK(); }, [](Status) {});
    while (store_->begun.load() == begun) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  struct Answer {
    int index = -1;
    Status st;
    std::uint64_t seq = 0;
  };
  // Submits `n` one-item enqueues for users_[i % 6]; each answer is
  // appended to answers_ as it arrives.
  void SubmitEnqueues(int n, const std::string& tag) {
    for (int i = 0; i < n; ++i) {
      PendingItem item{users_[static_cast<std::size_t>(i) % users_.size()], tag + std::to_string(i), "payload"};
      worker_->SubmitEnqueue({item}, [this, i](const Status& st, std::span<const std::uint64_t> seqs,
                                               std::span<const Enqueued>) {
        answers_.push_back(Answer{i, st, seqs.empty() ? 0 : seqs[0]});
      });
    }
  }

  ::fastchat::testing::PgSchema schema_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_ = asio::make_work_guard(io_);
  LaneWatch* store_ = nullptr;
  std::unique_ptr<StoreWorker> worker_;
  std::vector<std::uint64_t> users_;
  std::vector<Answer> answers_;
};

TEST_F(StoreLanesTest, EnqueuesAreSplitByRecipientOverTwoConnectionsAndAnsweredInOrder) {
  std::promise<void> gate;
  Hold(&gate);
  const std::size_t calls_before = store_->calls().size();
  SubmitEnqueues(60, "k");
  gate.set_value();
  RunUntil([&] { return answers_.size() == 60; });
  ASSERT_EQ(answers_.size(), 60u);

  // Answered in submission order, every one stored.
  for (int i = 0; i < 60; ++i) {
    EXPECT_EQ(answers_[static_cast<std::size_t>(i)].index, i);
    EXPECT_TRUE(answers_[static_cast<std::size_t>(i)].st.ok()) << answers_[static_cast<std::size_t>(i)].st.ToString();
  }
  EXPECT_EQ(worker_->stats().split_batches, 1u);

  // Each Enqueue call of the split batch held one lane's recipients (one
  // parity), and the two lanes ran on two threads.
  const std::vector<LaneWatch::Call> calls = store_->calls();
  std::map<int, std::set<std::thread::id>> threads_by_parity;
  for (std::size_t c = calls_before; c < calls.size(); ++c) {
    std::set<int> parities;
    for (std::uint64_t r : calls[c].recipients) parities.insert(static_cast<int>(r % 2));
    EXPECT_EQ(parities.size(), 1u);
    threads_by_parity[*parities.begin()].insert(calls[c].thread);
  }
  ASSERT_EQ(threads_by_parity.size(), 2u);
  ASSERT_EQ(threads_by_parity[0].size(), 1u);
  ASSERT_EQ(threads_by_parity[1].size(), 1u);
  EXPECT_NE(*threads_by_parity[0].begin(), *threads_by_parity[1].begin());

  // One recipient's seqs rise in submission order; all rows are there.
  std::map<std::uint64_t, std::uint64_t> last_seq;
  for (const Answer& a : answers_) {
    const std::uint64_t user = users_[static_cast<std::size_t>(a.index) % users_.size()];
    EXPECT_GT(a.seq, last_seq[user]);
    last_seq[user] = a.seq;
  }
  for (std::uint64_t user : users_) EXPECT_EQ(Pending(user), 10u) << "user " << user;

  // Then the acks of every row, with new enqueues, in one split batch.
  std::map<std::uint64_t, std::vector<std::uint64_t>> seqs_of;
  for (const Answer& a : answers_) seqs_of[users_[static_cast<std::size_t>(a.index) % users_.size()]].push_back(a.seq);
  answers_.clear();
  std::promise<void> gate2;
  Hold(&gate2);
  for (auto& [user, seqs] : seqs_of) worker_->SubmitAck(user, seqs);
  SubmitEnqueues(12, "again");
  gate2.set_value();
  RunUntil([&] { return answers_.size() == 12; });
  ASSERT_EQ(answers_.size(), 12u);
  for (const Answer& a : answers_) EXPECT_TRUE(a.st.ok()) << a.st.ToString();
  EXPECT_EQ(worker_->stats().split_batches, 2u);
  for (std::uint64_t user : users_) EXPECT_EQ(Pending(user), 2u) << "user " << user;
}

TEST_F(StoreLanesTest, ALaneWhoseCommitFailsFailsOnlyItsOwnJobs) {
  std::promise<void> gate;
  Hold(&gate);
  store_->fail_parity = 1;
  SubmitEnqueues(30, "k");
  gate.set_value();
  RunUntil([&] { return answers_.size() == 30; });
  ASSERT_EQ(answers_.size(), 30u);
  store_->fail_parity = -1;
  EXPECT_EQ(worker_->stats().split_batches, 1u);
  EXPECT_EQ(worker_->stats().failed_commits, 1u);
  for (const Answer& a : answers_) {
    const std::uint64_t user = users_[static_cast<std::size_t>(a.index) % users_.size()];
    if (user % 2 == 1) {
      EXPECT_EQ(a.st.code(), Code::kIOError) << a.index;
    } else {
      EXPECT_TRUE(a.st.ok()) << a.index << ": " << a.st.ToString();
    }
  }
  for (std::uint64_t user : users_) EXPECT_EQ(Pending(user), user % 2 == 1 ? 0u : 5u) << "user " << user;
}

// A batch holding any other job is not split: it runs on one connection.
TEST_F(StoreLanesTest, ABatchWithAnotherJobRunsAsOne) {
  std::promise<void> gate;
  Hold(&gate);
  const std::size_t calls_before = store_->calls().size();
  SubmitEnqueues(10, "k");
  bool other = false;
  worker_->Submit([](Store&) { return Status::OK(); }, [&](Status) { other = true; });
  gate.set_value();
  RunUntil([&] { return answers_.size() == 10 && other; });
  ASSERT_EQ(answers_.size(), 10u);
  EXPECT_EQ(worker_->stats().split_batches, 0u);
  const std::vector<LaneWatch::Call> calls = store_->calls();
  ASSERT_GT(calls.size(), calls_before);
  for (std::size_t c = calls_before; c < calls.size(); ++c) EXPECT_EQ(calls[c].thread, calls[calls_before].thread);
}

}  // namespace
}  // namespace fastchat::server
