#include "server/store/sweep_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>

#include "server/store/schema.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::store {
namespace {

using ::testing::HasSubstr;

constexpr const char* kSpec = R"yaml(
name: store-test
optimizers: [{name: sgd}, {name: adamw}]
batch_sizes: [128, 256]
base: {lr: 0.1}
max_retries: 1
)yaml";

class SweepStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = SweepStore::Open(dir_.File("store.db"));
    ASSERT_OK(s);
    store_ = std::move(*s);
  }

  int64_t Create(const std::string& spec_text = kSpec,
                 const std::string& request_id = "",
                 const std::string& owner = "") {
    auto spec = spec::ParseSweepSpec(spec_text);
    EXPECT_OK(spec);
    auto created = store_->CreateSweep(*spec, spec::ExpandSweep(*spec),
                                       request_id, 1000.0, owner);
    EXPECT_OK(created);
    return created->id;
  }

  Lease LeaseOne(int64_t worker) {
    auto lease = store_->LeaseNext(worker, 1001.0);
    EXPECT_OK(lease);
    EXPECT_TRUE(lease->has_value());
    return **lease;
  }

  testing::TempDir dir_;
  std::unique_ptr<SweepStore> store_;
};

TEST_F(SweepStoreTest, CreateStoresEveryTrialWithItsConfig) {
  int64_t id = Create();
  auto trials = store_->ListTrials(id);
  ASSERT_OK(trials);
  ASSERT_EQ(trials->size(), 4u);
  for (const TrialRow& t : *trials) EXPECT_EQ(t.state, TrialState::kQueued);
  auto sweep = store_->GetSweep(id);
  ASSERT_OK(sweep);
  EXPECT_EQ(sweep->state, SweepState::kQueued);
  EXPECT_EQ(sweep->trials_total, 4);
}

TEST_F(SweepStoreTest, RequestIdMakesCreateIdempotent) {
  int64_t first = Create(kSpec, "req-1");
  auto spec = spec::ParseSweepSpec(kSpec);
  auto again =
      store_->CreateSweep(*spec, spec::ExpandSweep(*spec), "req-1", 1002.0);
  ASSERT_OK(again);
  EXPECT_TRUE(again->existed);
  EXPECT_EQ(again->id, first);
  EXPECT_EQ(store_->ListSweeps()->size(), 1u);
  // Another owner's id is theirs alone; the same owner with another spec
  // is refused, naming the sweep.
  auto other_owner = store_->CreateSweep(*spec, spec::ExpandSweep(*spec),
                                         "req-1", 1003.0, "bob");
  ASSERT_OK(other_owner);
  EXPECT_FALSE(other_owner->existed);
  EXPECT_NE(other_owner->id, first);
  auto changed = spec::ParseSweepSpec(std::string(kSpec) + "seeds: [5]\n");
  ASSERT_OK(changed);
  auto clash = store_->CreateSweep(*changed, spec::ExpandSweep(*changed),
                                   "req-1", 1004.0);
  EXPECT_EQ(clash.status().code(), StatusCode::kAlreadyExists);
  EXPECT_THAT(clash.status().message(),
              HasSubstr("sweep " + std::to_string(first)));
  EXPECT_EQ(store_->ListSweeps()->size(), 2u);
}

TEST_F(SweepStoreTest, LeaseRespectsSlotsAndCarriesIdsInTheConfig) {
  int64_t sweep = Create();
  auto worker = store_->RegisterWorker("w", 1, 1000.0);
  ASSERT_OK(worker);
  Lease lease = LeaseOne(*worker);
  EXPECT_GT(lease.lease_id, 0);  // random: another worker cannot guess it
  auto config = nlohmann::json::parse(lease.config_json);
  EXPECT_EQ(config["trial_id"], lease.trial_id);
  EXPECT_EQ(config["sweep_id"], sweep);
  // One slot, one running trial: nothing more for this worker.
  auto none = store_->LeaseNext(*worker, 1001.0);
  ASSERT_OK(none);
  EXPECT_FALSE(none->has_value());
  EXPECT_EQ(store_->GetSweep(sweep)->state, SweepState::kRunning);
}

// The sweep each of `n` leases in one batch went to (0: none).
std::vector<int64_t> BatchSweeps(SweepStore& store, int64_t worker, int n) {
  std::vector<int64_t> out;
  for (auto& r : store.LeaseBatch(std::vector<int64_t>(n, worker), 1001.0)) {
    EXPECT_OK(r);
    out.push_back(r.ok() && r->has_value() ? (*r)->sweep_id : 0);
  }
  return out;
}

TEST_F(SweepStoreTest, LeasesShareThePoolFairlyWithinMaxParallel) {
  int64_t capped = Create(
      "name: capped\noptimizers: [{name: sgd}, {name: adamw}]\nbatch_sizes: "
      "[128, 256]\n"
      "base: {lr: 0.1}\nmax_parallel: 2\n");
  int64_t open = Create();
  auto worker = store_->RegisterWorker("big", 8, 1000.0);
  ASSERT_OK(worker);
  // Fewest running first (the older sweep on a tie); the capped sweep stops
  // at 2; 4 + 2 trials fit, the seventh lease finds nothing.
  EXPECT_EQ(BatchSweeps(*store_, *worker, 7),
            (std::vector<int64_t>{capped, open, capped, open, open, open, 0}));
}

TEST_F(SweepStoreTest, HigherPriorityLeasesFirstOneLeaseAtATime) {
  int64_t low = Create();
  int64_t high = Create(
      "name: urgent\noptimizers: [{name: sgd}]\nbatch_sizes: [128, 256]\nbase: "
      "{lr: 0.1}\n"
      "priority: 5\n");
  auto worker = store_->RegisterWorker("big", 8, 1000.0);
  ASSERT_OK(worker);
  std::vector<int64_t> order;
  for (int i = 0; i < 7; ++i) {
    auto lease = store_->LeaseNext(*worker, 1001.0);
    ASSERT_OK(lease);
    order.push_back(lease->has_value() ? (*lease)->sweep_id : 0);
  }
  EXPECT_EQ(order, (std::vector<int64_t>{high, high, low, low, low, low, 0}));
}

TEST_F(SweepStoreTest, ABatchGivesEachWorkerItsOwnAnswer) {
  int64_t sweep = Create();
  auto a = store_->RegisterWorker("a", 1, 1000.0);
  auto b = store_->RegisterWorker("b", 1, 1000.0);
  ASSERT_TRUE(a.ok() && b.ok());
  auto results = store_->LeaseBatch({*a, 999, *a, *b}, 1001.0);
  ASSERT_EQ(results.size(), 4u);
  ASSERT_TRUE(results[0].ok() && results[0]->has_value());
  EXPECT_EQ(results[1].status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(results[2].ok());
  EXPECT_FALSE(results[2]->has_value()) << "worker a has one slot";
  ASSERT_TRUE(results[3].ok() && results[3]->has_value());
  EXPECT_NE((*results[0])->trial_id, (*results[3])->trial_id);
  // Both leases were committed with the batch.
  int running = 0;
  auto trials = store_->ListTrials(sweep);
  ASSERT_OK(trials);
  for (const TrialRow& t : *trials) {
    running += t.state == TrialState::kRunning;
  }
  EXPECT_EQ(running, 2);
}
TEST_F(SweepStoreTest, MetricsAreUniquePerTrialNameAndStep) {
  Create();
  int64_t worker = *store_->RegisterWorker("w", 1, 1000.0);
  Lease lease = LeaseOne(worker);
  ASSERT_TRUE(store_
                  ->AppendMetrics(
                      lease.trial_id, lease.lease_id, worker,
                      {{"train_loss", 1, 2.0}, {"train_loss", 2, 1.5}}, 1002.0)
                  .ok());
  // A re-sent step overwrites instead of duplicating.
  ASSERT_TRUE(store_
                  ->AppendMetrics(lease.trial_id, lease.lease_id, worker,
                                  {{"train_loss", 2, 1.25}}, 1003.0)
                  .ok());
  auto trials = store_->ListTrials(lease.sweep_id);
  const TrialRow& t = (*trials)[0];
  EXPECT_DOUBLE_EQ(t.latest_metrics.at("train_loss"), 1.25);
}

TEST_F(SweepStoreTest, StaleLeaseIsAbortedAndChangesNothing) {
  Create();
  int64_t worker = *store_->RegisterWorker("w", 1, 1000.0);
  Lease lease = LeaseOne(worker);
  Status s = store_->AppendMetrics(lease.trial_id, lease.lease_id + 1, worker,
                                   {{"train_loss", 1, 9.0}}, 1002.0);
  EXPECT_EQ(s.code(), StatusCode::kAborted);
  auto finish = store_->FinishTrial(lease.trial_id, lease.lease_id, worker + 1,
                                    TrialState::kCompleted, "", "", 1003.0);
  EXPECT_EQ(finish.status().code(), StatusCode::kAborted);
  auto trials = store_->ListTrials(lease.sweep_id);
  EXPECT_TRUE((*trials)[0].latest_metrics.empty());
  EXPECT_EQ((*trials)[0].state, TrialState::kRunning);
}

// Reports and heartbeats from many threads share transactions (group
// commit), each in its own savepoint: a stale lease's report is refused and
// undoes nothing of the others', every accepted point is stored once, and
// heartbeats of an unknown worker fail alone.
TEST_F(SweepStoreTest, GroupedWritesFailAloneAndStoreEverythingElse) {
  Create();  // 4 trials
  std::vector<int64_t> workers;
  std::vector<Lease> leases;
  for (int i = 0; i < 4; ++i) {
    workers.push_back(
        *store_->RegisterWorker("w" + std::to_string(i), 1, 1000.0));
    leases.push_back(LeaseOne(workers.back()));
  }
  constexpr int kThreads = 8, kReports = 60;
  std::atomic<int> refused{0}, unknown{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const Lease& lease = leases[static_cast<size_t>(t % 4)];
      const int64_t worker = workers[static_cast<size_t>(t % 4)];
      // Threads 4..7 send under a stale lease (one past the current).
      const bool stale = t >= 4;
      for (int r = 0; r < kReports; ++r) {
        std::vector<MetricPoint> points;
        for (int k = 0; k < 5; ++k) {
          const int64_t step = (stale ? 100000 : 0) + r * 5 + k;
          points.push_back({"train_loss", step, 1.0 / (step + 1)});
        }
        Status s = store_->AppendMetrics(lease.trial_id,
                                         lease.lease_id + (stale ? 1 : 0),
                                         worker, points, 1001.0);
        if (s.code() == StatusCode::kAborted) {
          ++refused;
        } else if (!s.ok()) {
          ++failed;
        }
        auto beat = store_->Heartbeat(stale ? 9999 : worker, {}, 1002.0);
        if (beat.status().code() == StatusCode::kNotFound) {
          ++unknown;
        } else if (!beat.ok()) {
          ++failed;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(refused, 4 * kReports);
  EXPECT_EQ(unknown, 4 * kReports);
  auto trials = store_->ListTrials(leases[0].sweep_id);
  ASSERT_OK(trials);
  for (const TrialRow& t : *trials) {
    // Steps 0..299 of each trial, none of the stale ones.
    EXPECT_EQ(t.latest_metrics.at("train_loss"), 1.0 / 300) << t.id;
  }
  auto workers_now = store_->ListWorkers();
  ASSERT_OK(workers_now);
  for (const WorkerRow& w : *workers_now)
    EXPECT_EQ(w.last_heartbeat_at, 1002.0);
}

TEST_F(SweepStoreTest, FailedAttemptIsRetriedThenFailedWithStderr) {
  int64_t sweep = Create();  // max_retries: 1
  int64_t worker = *store_->RegisterWorker("w", 1, 1000.0);
  Lease first = LeaseOne(worker);
  auto state =
      store_->FinishTrial(first.trial_id, first.lease_id, worker,
                          TrialState::kFailed, "crash", "boom 1", 1002.0);
  ASSERT_OK(state);
  EXPECT_EQ(*state, TrialState::kQueued);
  Lease second = LeaseOne(worker);
  EXPECT_EQ(second.trial_id, first.trial_id);
  EXPECT_NE(second.lease_id, first.lease_id);
  state = store_->FinishTrial(second.trial_id, second.lease_id, worker,
                              TrialState::kFailed, "crash", "boom 2", 1003.0);
  ASSERT_OK(state);
  EXPECT_EQ(*state, TrialState::kFailed);
  auto trials = store_->ListTrials(sweep);
  EXPECT_EQ((*trials)[0].attempts, 2);
  EXPECT_EQ((*trials)[0].error, "crash");
}

TEST_F(SweepStoreTest, SweepCompletesWhenEveryTrialEnds) {
  int64_t sweep = Create();
  int64_t worker = *store_->RegisterWorker("w", 4, 1000.0);
  std::vector<Lease> leases;
  for (int i = 0; i < 4; ++i) leases.push_back(LeaseOne(worker));
  for (size_t i = 0; i < leases.size(); ++i) {
    TrialState outcome =
        i == 0 ? TrialState::kDiverged : TrialState::kCompleted;
    ASSERT_TRUE(store_
                    ->FinishTrial(leases[i].trial_id, leases[i].lease_id,
                                  worker, outcome, "", "", 1005.0)
                    .ok());
  }
  auto row = store_->GetSweep(sweep);
  EXPECT_EQ(row->state, SweepState::kCompleted);
  EXPECT_EQ(row->trial_counts[TrialState::kDiverged], 1);
  EXPECT_DOUBLE_EQ(row->finished_at, 1005.0);
}

// lr_edges: extend: a cell whose best lr is the largest tried gets the lr
// twice as large, in the transaction that ended its last trial, and the
// sweep runs on until it has.
TEST_F(SweepStoreTest, AGridWithLrEdgesExtendAddsTheNextLrWhenItsCellEnds) {
  int64_t sweep = Create(R"yaml(
name: edges
optimizers: [{name: sgd}]
batch_sizes: [128]
base: {lr: 0.1}
lr_multipliers: [1, 2]
target: {metric: val_accuracy, value: 0.8}
lr_edges: extend
)yaml");
  int64_t worker = *store_->RegisterWorker("w", 4, 1000.0);
  std::vector<Lease> leases = {LeaseOne(worker), LeaseOne(worker)};
  auto grid = store_->ListTrials(sweep);
  ASSERT_OK(grid);
  std::map<int64_t, double> lr_of;
  for (const auto& t : *grid) lr_of[t.id] = t.lr;
  for (const Lease& l : leases) {
    // The larger lr reaches the target sooner.
    const double steps = lr_of[l.trial_id] > 0.15 ? 500 : 900;
    ASSERT_OK(store_->AppendMetrics(
        l.trial_id, l.lease_id, worker,
        {{"target_reached_samples", static_cast<int64_t>(steps), steps * 128}},
        1002.0));
    ASSERT_OK(store_
                  ->FinishTrial(l.trial_id, l.lease_id, worker,
                                TrialState::kCompleted, "", "", 1003.0)
                  .status());
  }
  auto trials = store_->ListTrials(sweep);
  ASSERT_OK(trials);
  ASSERT_EQ(trials->size(), 3u);
  EXPECT_DOUBLE_EQ(trials->back().lr, 0.4);
  EXPECT_EQ(trials->back().state, TrialState::kQueued);
  EXPECT_EQ(store_->GetSweep(sweep)->state, SweepState::kRunning);
}

// Per-owner running quota (--max-running-trials-per-owner): with 2, alice's
// two sweeps of higher priority together hold 2 slots and bob's sweep gets
// 2; a sweep without an owner (no authentication) has no quota and takes
// the slots left.
TEST_F(SweepStoreTest, AnOwnerAtTheRunningQuotaWaitsWhileOthersLease) {
  store_->SetMaxRunningPerOwner(2);
  auto create = [&](const std::string& owner, int priority) {
    return Create(
        std::string(kSpec) + "priority: " + std::to_string(priority) + "\n", "",
        owner);
  };
  const int64_t alice1 = create("alice", 5), alice2 = create("alice", 5);
  const int64_t bob = create("bob", 1);
  int64_t worker = *store_->RegisterWorker("w", 5, 1000.0);
  auto lease_all = [&] {
    while (true) {
      auto lease = store_->LeaseNext(worker, 1001.0);
      ASSERT_OK(lease);
      if (!lease->has_value()) return;
    }
  };
  auto count = [&](int64_t sweep) {
    auto row = store_->GetSweep(sweep);
    EXPECT_OK(row);
    return row->trial_counts[TrialState::kRunning];
  };
  lease_all();
  EXPECT_EQ(count(alice1) + count(alice2), 2);
  EXPECT_EQ(count(bob), 2);
  const int64_t anonymous = create("", 0);
  lease_all();
  EXPECT_EQ(count(anonymous), 1);  // the fifth slot
  EXPECT_EQ(count(alice1) + count(alice2), 2);
}

TEST_F(SweepStoreTest, CancelCompletedSweepIsFailedPrecondition) {
  int64_t sweep = Create();
  auto cancelled = store_->CancelSweep(sweep, 1001.0);
  ASSERT_OK(cancelled);
  EXPECT_EQ(cancelled->state, SweepState::kCancelled);
  EXPECT_EQ(cancelled->trial_counts[TrialState::kCancelled], 4);
  auto again = store_->CancelSweep(sweep, 1002.0);
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(again.status().message(), HasSubstr("sweep 1 is cancelled"));
}

TEST_F(SweepStoreTest, UnknownIdsAreNotFound) {
  EXPECT_EQ(store_->GetSweep(99).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->ListTrials(99).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->CancelSweep(99, 1.0).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store_->Heartbeat(99, {}, 1.0).status().code(),
            StatusCode::kNotFound);
}

TEST_F(SweepStoreTest, SilentWorkerLosesItsTrialsAndHeartbeatSaysStop) {
  Create();
  int64_t worker = *store_->RegisterWorker("w", 2, 1000.0);
  Lease lease = LeaseOne(worker);
  auto requeued = store_->ExpireWorkers(/*deadline=*/1500.0, 1500.0);
  ASSERT_OK(requeued);
  EXPECT_EQ(*requeued, 1);
  auto stop =
      store_->Heartbeat(worker, {{lease.trial_id, lease.lease_id}}, 1501.0);
  ASSERT_OK(stop);
  EXPECT_EQ(*stop, std::vector<int64_t>{lease.trial_id});
  // The trial is leased again under a new lease id.
  Lease again = LeaseOne(worker);
  EXPECT_EQ(again.trial_id, lease.trial_id);
  EXPECT_NE(again.lease_id, lease.lease_id);
}

constexpr const char* kGangSpec =
    "name: gang\noptimizers: [{name: sgd}]\nbatch_sizes: [128, 256]\nbase: "
    "{lr: 0.1}\n"
    "ranks_per_trial: 2\n";

TEST_F(SweepStoreTest, AGangTrialIsPlacedAllAtOnceAcrossWorkersOrNotAtAll) {
  Create(kGangSpec);
  std::vector<int64_t> w;
  for (int i = 0; i < 3; ++i) {
    w.push_back(
        *store_->RegisterWorker("w" + std::to_string(i), 1, 1000.0,
                                {"10.0.0." + std::to_string(i + 1), 29600, 4}));
  }
  bool waiting = false;
  auto r = store_->LeaseBatch(w, 1001.0, &waiting);
  ASSERT_TRUE(r[0].ok() && r[0]->has_value());
  ASSERT_TRUE(r[1].ok() && r[1]->has_value());
  ASSERT_TRUE(r[2].ok());
  EXPECT_FALSE(r[2]->has_value())
      << "the second trial needs two slots; one is free";
  EXPECT_TRUE(waiting);
  const Lease& rank0 = **r[0];
  const Lease& rank1 = **r[1];
  EXPECT_EQ(rank0.trial_id, rank1.trial_id);
  EXPECT_EQ(rank0.lease_id, rank1.lease_id);
  EXPECT_EQ(rank0.rank, 0);
  EXPECT_EQ(rank1.rank, 1);
  for (const Lease* l : {&rank0, &rank1}) {
    auto d = nlohmann::json::parse(l->config_json)["distributed"];
    EXPECT_EQ(d["world_size"], 2);
    EXPECT_EQ(d["rank"], l->rank);
    EXPECT_EQ(d["host"], "10.0.0.1");  // rank 0's worker
    EXPECT_EQ(d["port"], 29600);
  }
  // Both ranks hold a slot; rank 1 heartbeats without being stopped.
  for (const auto& wr : *store_->ListWorkers())
    EXPECT_EQ(wr.busy_slots, wr.id == w[2] ? 0 : 1);
  EXPECT_TRUE(
      store_->Heartbeat(w[1], {{rank1.trial_id, rank1.lease_id, 1}}, 1002.0)
          ->empty());
  // Rank 1 exiting cleanly changes nothing; rank 0's outcome ends the trial.
  EXPECT_EQ(*store_->FinishTrial(rank1.trial_id, rank1.lease_id, w[1],
                                 TrialState::kCompleted, "", "", 1003.0, 1),
            TrialState::kRunning);
  EXPECT_EQ(*store_->FinishTrial(rank0.trial_id, rank0.lease_id, w[0],
                                 TrialState::kCompleted, "", "", 1003.0),
            TrialState::kCompleted);
  // Three free slots now: the second trial goes to the first two requests.
  auto next = store_->LeaseBatch({w[2], w[0], w[1]}, 1004.0, &waiting);
  ASSERT_TRUE(next[0].ok() && next[0]->has_value() && next[1].ok() &&
              next[1]->has_value());
  EXPECT_EQ((*next[0])->rank, 0);
  EXPECT_NE((*next[0])->trial_id, rank0.trial_id);
  EXPECT_EQ(
      nlohmann::json::parse((*next[1])->config_json)["distributed"]["host"],
      "10.0.0.3");
  EXPECT_FALSE(waiting);
}

TEST_F(SweepStoreTest, ALostRankRequeuesItsTrialAndTheOtherRankIsToldToStop) {
  Create(kGangSpec);
  int64_t a = *store_->RegisterWorker("a", 1, 1000.0);
  int64_t b = *store_->RegisterWorker("b", 1, 1000.0);
  auto r = store_->LeaseBatch({a, b}, 1001.0);
  ASSERT_TRUE(r[1].ok() && r[1]->has_value());
  const Lease rank0 = **r[0];
  // Only a heartbeats; b (rank 1) goes silent and is lost.
  ASSERT_TRUE(
      store_->Heartbeat(a, {{rank0.trial_id, rank0.lease_id, 0}}, 1400.0).ok());
  EXPECT_EQ(*store_->ExpireWorkers(1300.0, 1401.0), 1);
  EXPECT_EQ(
      *store_->Heartbeat(a, {{rank0.trial_id, rank0.lease_id, 0}}, 1402.0),
      std::vector<int64_t>{rank0.trial_id});
  EXPECT_EQ(store_
                ->AppendMetrics(rank0.trial_id, rank0.lease_id, a,
                                {{"x", 1, 1.0}}, 1403.0)
                .code(),
            StatusCode::kAborted);
  // A rank's crash ends the attempt for all ranks (and is retried).
  ASSERT_TRUE(store_->Heartbeat(b, {}, 1404.0).ok());
  auto again = store_->LeaseBatch({a, b}, 1405.0);
  ASSERT_TRUE(again[1].ok() && again[1]->has_value());
  const Lease retry1 = **again[1];
  EXPECT_EQ(*store_->FinishTrial(retry1.trial_id, retry1.lease_id, b,
                                 TrialState::kFailed, "rank 1 crashed", "",
                                 1406.0, 1),
            TrialState::kQueued);
  EXPECT_EQ(
      *store_->Heartbeat(a, {{retry1.trial_id, retry1.lease_id, 0}}, 1407.0),
      std::vector<int64_t>{retry1.trial_id});
}

TEST_F(SweepStoreTest,
       EveryTrialRunsWhenGangsAndSingleTrialsShareAFragmentedPool) {
  // Three one-slot workers; two 2-rank trials and four 1-rank trials. Each
  // round every idle worker asks at once; then rank 0 of every running trial
  // finishes it.
  const int64_t gang = Create(kGangSpec);
  const int64_t single = Create();
  std::vector<int64_t> w;
  for (int i = 0; i < 3; ++i)
    w.push_back(*store_->RegisterWorker("w", 1, 1000.0));
  auto completed = [&] {
    int n = 0;
    for (int64_t sweep : {gang, single}) {
      for (const TrialRow& t : *store_->ListTrials(sweep))
        n += t.state == TrialState::kCompleted;
    }
    return n;
  };
  for (int round = 0; round < 10 && completed() < 6; ++round) {
    auto results = store_->LeaseBatch(w, 1001.0 + round);
    std::map<int64_t, int> ranks_of;
    std::vector<std::pair<int64_t, Lease>> rank0;  // (worker, lease)
    for (size_t k = 0; k < w.size(); ++k) {
      ASSERT_TRUE(results[k].ok()) << results[k].status().ToString();
      if (!results[k]->has_value()) continue;
      const Lease& l = **results[k];
      ++ranks_of[l.trial_id];
      if (l.rank == 0) rank0.emplace_back(w[k], l);
    }
    ASSERT_FALSE(rank0.empty()) << "round " << round << ": nothing could run";
    // No partial placement: a gang trial has all its ranks or none.
    for (const auto& [worker, l] : rank0)
      EXPECT_EQ(ranks_of[l.trial_id], l.world_size);
    for (const auto& [worker, l] : rank0) {
      ASSERT_TRUE(store_
                      ->FinishTrial(l.trial_id, l.lease_id, worker,
                                    TrialState::kCompleted, "", "",
                                    1001.5 + round)
                      .ok());
    }
  }
  EXPECT_EQ(completed(), 6);
}

TEST_F(SweepStoreTest, AGangLargerThanThePoolDoesNotHoldUpOthers) {
  Create(
      "name: huge\noptimizers: [{name: sgd}]\nbatch_sizes: [128]\nbase: {lr: "
      "0.1}\n"
      "ranks_per_trial: 4\n");
  const int64_t single = Create();
  int64_t a = *store_->RegisterWorker("a", 2, 1000.0);
  bool waiting = true;
  auto r = store_->LeaseBatch({a, a}, 1001.0, &waiting);
  ASSERT_TRUE(r[0].ok() && r[0]->has_value());
  EXPECT_EQ((*r[0])->sweep_id, single);
  EXPECT_FALSE(waiting);
}

TEST_F(SweepStoreTest, ReopenKeepsEverything) {
  int64_t sweep = Create();
  store_.reset();
  auto reopened = SweepStore::Open(dir_.File("store.db"));
  ASSERT_OK(reopened);
  EXPECT_EQ((*reopened)->ListTrials(sweep)->size(), 4u);
}

TEST_F(SweepStoreTest, RefusesAForeignDatabase) {
  std::string path = dir_.File("foreign.db");
  {
    auto db = Db::Open(path);
    ASSERT_OK(db);
    ASSERT_TRUE((*db)->Exec("CREATE TABLE important (x INTEGER)").ok());
  }
  auto s = SweepStore::Open(path);
  EXPECT_EQ(s.status().code(), StatusCode::kDataLoss);
}

TEST_F(SweepStoreTest, RefusesANewerSchema) {
  std::string path = dir_.File("newer.db");
  {
    auto db = Db::Open(path);
    ASSERT_TRUE((*db)->Exec("PRAGMA user_version=999").ok());
  }
  auto s = SweepStore::Open(path);
  EXPECT_EQ(s.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.status().message(), HasSubstr("newer"));
}

TEST_F(SweepStoreTest, VersionOneDatabaseUpgradesOnOpenAndKeepsItsData) {
  std::string path = dir_.File("v1.db");
  {
    // A database as the first release wrote it.
    auto db = Db::Open(path);
    ASSERT_OK(db);
    ASSERT_TRUE((*db)->Exec(kMigrations[0]).ok());
    ASSERT_TRUE((*db)
                    ->Exec(R"sql(
      PRAGMA user_version=1;
      INSERT INTO sweeps (id, name, state, spec_json, request_id, created_at)
        VALUES (1, 'old', 'completed', '{"target": {"metric": "test_accuracy", "value": 0.5}}',
                'first-submit', 1);
      INSERT INTO trials (id, sweep_id, trial_index, optimizer, batch_size, lr,
                          lr_multiplier, seed, state, config_json)
        VALUES (1, 1, 0, 'sgd', 128, 0.1, 1, 0, 'completed', '{}');
      INSERT INTO metrics VALUES (1, 'train_loss', 10, 0.5, 2),
        (1, 'test_accuracy', 10, 0.6, 2), (1, 'target_reached_seconds', 10, 3.5, 2),
        (1, 'target_reached_samples', 10, 1280, 2);
    )sql")
                    .ok());
  }
  auto store = SweepStore::Open(path);
  ASSERT_OK(store);
  EXPECT_EQ((*store)->ListTrials(1)->at(0).latest_metrics.at("train_loss"),
            0.5);
  store->reset();
  auto db = Db::Open(path);
  auto version = (*db)->Prepare("PRAGMA user_version");
  ASSERT_TRUE(*version->Step());
  EXPECT_EQ(version->Int(0), kSchemaVersion);
  // Its request id now lives in sweep_requests, under no owner.
  auto request = (*db)->Prepare(
      "SELECT owner, sweep_id FROM sweep_requests "
      "WHERE request_id = 'first-submit'");
  ASSERT_OK(request);
  ASSERT_TRUE(*request->Step());
  EXPECT_EQ(request->Text(0), "");
  EXPECT_EQ(request->Int(1), 1);
  request->Reset();
  auto summary = (*db)->Prepare(
      "SELECT samples, samples_to_target FROM trial_summary WHERE trial_id = "
      "1");
  ASSERT_OK(summary);
  ASSERT_TRUE(*summary->Step());
  EXPECT_EQ(summary->Int(0), 1280);
  EXPECT_EQ(summary->Double(1), 1280.0);
  auto scaling = (*db)->Prepare(
      "SELECT best_lr, steps_to_target, scaling_efficiency FROM sweep_scaling");
  ASSERT_OK(scaling);
  ASSERT_TRUE(*scaling->Step());
  EXPECT_EQ(scaling->Double(0), 0.1);
  EXPECT_EQ(scaling->Double(1), 10.0);
  EXPECT_EQ(scaling->Double(2), 1.0);
}

TEST_F(SweepStoreTest, SuccessiveHalvingPrunesTrialsOutsideTheTopAtEachRung) {
  // Rung 0 at 1280 samples (step 10 at batch 128), rung 1 at 2560.
  int64_t sweep = Create(R"yaml(
name: asha
optimizers: [{name: sgd}]
batch_sizes: [128]
base: {lr: 0.1}
lr_multipliers: [1, 2, 3, 4]
early_stopping: {rule: asha, metric: val_accuracy, min_samples: 1280, reduction_factor: 2}
)yaml");
  int64_t worker = *store_->RegisterWorker("w", 4, 1000.0);
  std::vector<Lease> leases;
  for (int i = 0; i < 4; ++i) leases.push_back(LeaseOne(worker));
  auto report = [&](int i, int64_t step, double accuracy) {
    return store_->AppendMetrics(
        leases[i].trial_id, leases[i].lease_id, worker,
        {{"train_loss", step, 1.0}, {"val_accuracy", step, accuracy}}, 1002.0);
  };
  auto state = [&](int i) { return (*store_->ListTrials(sweep))[i].state; };
  // Before the first rung nothing is decided.
  ASSERT_TRUE(report(1, 5, 0.1).ok());
  EXPECT_EQ(state(1), TrialState::kRunning);
  // Rung 0, keep the top max(1, n/2): 0.8 (alone) goes on; 0.7 of [0.8, 0.7]
  // is out; 0.9 goes on; 0.75 of [0.9, 0.8, 0.75, 0.7] is third of a top 2.
  ASSERT_TRUE(report(0, 10, 0.8).ok());
  ASSERT_TRUE(report(1, 10, 0.7).ok());
  ASSERT_TRUE(report(2, 12, 0.9).ok());
  ASSERT_TRUE(report(3, 10, 0.75).ok());
  EXPECT_EQ(state(0), TrialState::kRunning);
  EXPECT_EQ(state(1), TrialState::kPruned);
  EXPECT_EQ(state(2), TrialState::kRunning);
  EXPECT_EQ(state(3), TrialState::kPruned);
  // A pruned trial's worker is told at its next report and heartbeat.
  EXPECT_EQ(report(1, 20, 0.95).code(), StatusCode::kAborted);
  auto stop = store_->Heartbeat(
      worker, {{leases[1].trial_id, leases[1].lease_id}}, 1003.0);
  EXPECT_THAT(*stop, ::testing::ElementsAre(leases[1].trial_id));
  // Rung 1 (2560 samples): 0.85 alone goes on, then 0.82 of two is out.
  ASSERT_TRUE(report(2, 20, 0.85).ok());
  ASSERT_TRUE(report(0, 25, 0.82).ok());
  EXPECT_EQ(state(2), TrialState::kRunning);
  EXPECT_EQ(state(0), TrialState::kPruned);
  // The points that decided it were stored, and the event says why.
  EXPECT_EQ((*store_->ListTrials(sweep))[0].latest_metrics.at("val_accuracy"),
            0.82);
  auto db = Db::Open(dir_.File("store.db"));
  auto why = (*db)->Prepare(
      "SELECT message FROM events WHERE kind = 'trial_pruned' AND trial_id = "
      "?");
  why->Bind(1, leases[0].trial_id);
  ASSERT_TRUE(*why->Step());
  EXPECT_EQ(
      why->Text(0),
      "rung 1 (3200 samples): val_accuracy 0.82 is not in the top 1 of 2");
  // The last trial completes; the sweep is complete, pruning is no failure.
  ASSERT_TRUE(store_
                  ->FinishTrial(leases[2].trial_id, leases[2].lease_id, worker,
                                TrialState::kCompleted, "", "", 1004.0)
                  .ok());
  auto row = store_->GetSweep(sweep);
  EXPECT_EQ(row->state, SweepState::kCompleted);
  EXPECT_EQ(row->trial_counts.at(TrialState::kPruned), 3);
}

TEST_F(SweepStoreTest,
       TheListenerHearsEachCommittedChangeAfterTheLockIsReleased) {
  std::vector<Change> heard;
  store_->SetListener([&](Change c) {
    // Called outside the store's lock: the store can be read from here.
    EXPECT_TRUE(store_->ListWorkers().ok());
    heard.push_back(c);
  });
  const int64_t sweep = Create();
  EXPECT_THAT(heard, ::testing::ElementsAre(Change::kWork));
  const int64_t worker = *store_->RegisterWorker("w", 1, 1000.0);
  EXPECT_THAT(heard, ::testing::ElementsAre(Change::kWork, Change::kView));
  const Lease lease = LeaseOne(worker);
  EXPECT_EQ(heard.back(), Change::kView);
  // Nothing to lease (the slot is taken) and a read: no change, no call.
  heard.clear();
  ASSERT_FALSE(store_->LeaseNext(worker, 1001.0)->has_value());
  ASSERT_TRUE(store_->ListTrials(sweep).ok());
  ASSERT_TRUE(store_
                  ->AppendMetrics(lease.trial_id, lease.lease_id, worker,
                                  {{"train_loss", 1, 0.5}}, 1002.0)
                  .ok());
  EXPECT_TRUE(heard.empty());
  // A stale write changes nothing either.
  EXPECT_EQ(store_
                ->FinishTrial(lease.trial_id, lease.lease_id + 1, worker,
                              TrialState::kCompleted, "", "", 1003.0)
                .status()
                .code(),
            StatusCode::kAborted);
  EXPECT_TRUE(heard.empty());
  ASSERT_TRUE(store_
                  ->FinishTrial(lease.trial_id, lease.lease_id, worker,
                                TrialState::kCompleted, "", "", 1003.0)
                  .ok());
  EXPECT_THAT(heard, ::testing::ElementsAre(Change::kWork));
  store_->SetListener(nullptr);
  ASSERT_TRUE(store_->CancelSweep(sweep, 1004.0).ok());
  EXPECT_EQ(heard.size(), 1u);
}

TEST_F(SweepStoreTest,
       AFullDatabaseRefusesAWholeBatchRetryablyAndTakesItOnceThereIsRoom) {
  Create();
  const int64_t worker = *store_->RegisterWorker("w", 1, 1000.0);
  const Lease lease = LeaseOne(worker);
  ASSERT_TRUE(store_->SetMaxBytes(1 << 20).ok());  // about 1 MiB
  auto batch = [](int64_t first) {
    std::vector<MetricPoint> points;
    for (int64_t step = first; step < first + 500; ++step) {
      points.push_back({"train_loss", step, 1.0 / step});
    }
    return points;
  };
  int64_t first = 1;
  Status full;
  while (first < 1000000) {
    full = store_->AppendMetrics(lease.trial_id, lease.lease_id, worker,
                                 batch(first), 1002.0);
    if (!full.ok()) break;
    first += 500;
  }
  ASSERT_EQ(full.code(), StatusCode::kResourceExhausted) << full.ToString();
  EXPECT_THAT(full.message(), HasSubstr("retry once space is freed"));
  auto db = Db::OpenReadOnly(dir_.File("store.db"));
  ASSERT_OK(db);
  auto count = [&] {
    auto q = (*db)->Prepare("SELECT count(*), max(step) FROM metrics");
    EXPECT_TRUE(*q->Step());
    return std::pair<int64_t, int64_t>(q->Int(0), q->Int(1));
  };
  // Nothing of the refused batch is stored: the steps before it, each once.
  EXPECT_EQ(count(), std::make_pair(first - 1, first - 1));
  // Reads and writes that need no new page still work (a heartbeat).
  EXPECT_TRUE(store_->Heartbeat(worker, {}, 1003.0).ok());
  // With room again the same batch lands, once.
  ASSERT_TRUE(store_->SetMaxBytes(0).ok());
  ASSERT_TRUE(store_
                  ->AppendMetrics(lease.trial_id, lease.lease_id, worker,
                                  batch(first), 1004.0)
                  .ok());
  EXPECT_EQ(count(), std::make_pair(first + 499, first + 499));
  auto check = (*db)->Prepare("PRAGMA integrity_check");
  ASSERT_TRUE(*check->Step());
  EXPECT_EQ(check->Text(0), "ok");
}

TEST_F(SweepStoreTest, TrialSummaryViewAnswersWithoutJoins) {
  Create();
  int64_t worker = *store_->RegisterWorker("w", 1, 1000.0);
  Lease lease = LeaseOne(worker);
  ASSERT_TRUE(store_
                  ->AppendMetrics(lease.trial_id, lease.lease_id, worker,
                                  {{"train_loss", 1, 2.0},
                                   {"train_loss", 2, 1.0},
                                   {"test_accuracy", 2, 0.7},
                                   {"test_accuracy", 4, 0.6}},
                                  1002.0)
                  .ok());
  auto db = Db::Open(dir_.File("store.db"));
  auto q = (*db)->Prepare(
      "SELECT steps, final_train_loss, final_test_accuracy, best_test_accuracy "
      "FROM trial_summary WHERE trial_id = ?");
  q->Bind(1, lease.trial_id);
  ASSERT_TRUE(*q->Step());
  EXPECT_EQ(q->Int(0), 2);
  EXPECT_DOUBLE_EQ(q->Double(1), 1.0);
  EXPECT_DOUBLE_EQ(q->Double(2), 0.6);
  EXPECT_DOUBLE_EQ(q->Double(3), 0.7);
}

}  // namespace
}  // namespace megabatch::store
