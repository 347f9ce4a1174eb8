// The Scheduler on a real store: a lease request with nothing to do parks
// and answers at its deadline; a submission wakes parked requests (one batch
// for all of them, each trial to one worker); a request whose caller is gone
// gives its trial back; a silent worker's trial is requeued after the lease
// timeout; Stop() answers every waiter.
#include "server/scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::scheduler {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr const char* kSpec = R"(name: s
optimizers: [{name: sgd}]
batch_sizes: [64]
base: {lr: 0.1}
seeds: [0, 1, 2, 3, 4, 5]
budget: {steps: 1}
)";

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(store_,
                         store::SweepStore::Open(dir_.File("scheduler.db")));
    SchedulerOptions options;
    options.heartbeat_interval = milliseconds(100);
    options.lease_timeout = milliseconds(400);
    scheduler_ = std::make_unique<Scheduler>(store_.get(), options);
  }

  int64_t Register(const std::string& name) {
    auto id = store_->RegisterWorker(name, 1, NowSeconds());
    EXPECT_OK(id.status());
    return id.ok() ? *id : 0;
  }

  std::vector<store::TrialRow> Trials(int64_t sweep) {
    auto rows = store_->ListTrials(sweep);
    EXPECT_OK(rows.status());
    return rows.ok() ? *rows : std::vector<store::TrialRow>{};
  }

  testing::TempDir dir_;
  std::unique_ptr<store::SweepStore> store_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(SchedulerTest, ARequestWithNothingToDoAnswersAtItsDeadline) {
  const int64_t worker = Register("w");
  const auto start = Clock::now();
  ASSERT_OK_AND_ASSIGN(auto lease,
                       scheduler_->Lease(worker, milliseconds(300)));
  const auto waited = Clock::now() - start;
  EXPECT_FALSE(lease.has_value());
  EXPECT_GE(waited, milliseconds(300));
  EXPECT_LT(waited, milliseconds(3000));
}

TEST_F(SchedulerTest, ASubmissionWakesEveryParkedRequestWithATrialEach) {
  constexpr int kWorkers = 6;
  std::vector<int64_t> workers;
  for (int i = 0; i < kWorkers; ++i) {
    workers.push_back(Register("w" + std::to_string(i)));
  }
  std::vector<std::optional<store::Lease>> got(kWorkers);
  std::atomic<int> answered{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kWorkers; ++i) {
    threads.emplace_back([&, i] {
      auto lease = scheduler_->Lease(workers[i], milliseconds(20000));
      EXPECT_OK(lease.status());
      if (lease.ok()) got[i] = *lease;
      ++answered;
    });
  }
  // Let them park (nothing is queued yet), then submit.
  std::this_thread::yield();
  const auto submitted_at = Clock::now();
  ASSERT_OK_AND_ASSIGN(auto submitted,
                       scheduler_->Submit(kSpec, spec::SpecFormat::kYaml, ""));
  EXPECT_EQ(submitted.trials, kWorkers);
  ASSERT_TRUE(testing::WaitUntil([&] { return answered == kWorkers; },
                                 std::chrono::seconds(15)));
  for (auto& t : threads) t.join();
  // Woken by the submission, long before their 20 s deadline.
  EXPECT_LT(Clock::now() - submitted_at, std::chrono::seconds(15));
  std::set<int64_t> trials;
  for (const auto& lease : got) {
    ASSERT_TRUE(lease.has_value());
    trials.insert(lease->trial_id);
  }
  EXPECT_EQ(trials.size(), static_cast<size_t>(kWorkers));  // one each
  for (const auto& t : Trials(submitted.sweep_id)) {
    EXPECT_EQ(t.state, store::TrialState::kRunning);
  }
}

TEST_F(SchedulerTest, ALeaseItsCallerCannotReceiveGoesBackToTheQueue) {
  const int64_t worker = Register("w");
  ASSERT_OK_AND_ASSIGN(auto submitted,
                       scheduler_->Submit(kSpec, spec::SpecFormat::kYaml, ""));
  auto lease =
      scheduler_->Lease(worker, milliseconds(1000), [] { return true; });
  EXPECT_FALSE(lease.ok() && lease->has_value());
  for (const auto& t : Trials(submitted.sweep_id)) {
    EXPECT_EQ(t.state, store::TrialState::kQueued) << t.id;
  }
}

TEST_F(SchedulerTest, ASilentWorkersTrialIsRequeuedAfterTheLeaseTimeout) {
  const int64_t silent = Register("silent");
  ASSERT_OK_AND_ASSIGN(auto submitted,
                       scheduler_->Submit(kSpec, spec::SpecFormat::kYaml, ""));
  ASSERT_OK_AND_ASSIGN(auto lease, scheduler_->Lease(silent, milliseconds(0)));
  ASSERT_TRUE(lease.has_value());
  const int64_t trial = lease->trial_id;
  // No heartbeat: within a few lease timeouts the reaper requeues it.
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        for (const auto& t : Trials(submitted.sweep_id)) {
          if (t.id == trial) return t.state == store::TrialState::kQueued;
        }
        return false;
      },
      std::chrono::seconds(10)));
}

TEST_F(SchedulerTest, StopAnswersEveryWaiterUnavailable) {
  const int64_t worker = Register("w");
  std::atomic<bool> done{false};
  Status status;
  std::thread waiter([&] {
    status = scheduler_->Lease(worker, milliseconds(60000)).status();
    done = true;
  });
  std::this_thread::yield();
  scheduler_->Stop();
  ASSERT_TRUE(testing::WaitUntil([&] { return done.load(); },
                                 std::chrono::seconds(10)));
  waiter.join();
  EXPECT_EQ(status.code(), StatusCode::kUnavailable);
  // And from then on at once.
  EXPECT_EQ(scheduler_->Lease(worker, milliseconds(60000)).status().code(),
            StatusCode::kUnavailable);
}

}  // namespace
}  // namespace megabatch::scheduler
