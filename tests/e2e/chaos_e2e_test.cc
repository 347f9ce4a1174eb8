// The chaos soak: a sweep of 12 checkpointing trials on 3 workers runs while
// faults strike at random, seeded moments: kill -9 of trainers, of workers
// and of the coordinator, workers frozen (SIGSTOP) past their lease, a
// coordinator restart while every worker is frozen, and a trainer killed
// while the coordinator is down. The workers run different intra-op thread
// counts (worker-0 two, the others one), and a trial's numbers depend on its
// threads, so a resume must keep the threads its checkpoint was made with.
// The oracle is the same sweep run first without faults, once on the
// two-thread worker alone and once on the one-thread workers: training is
// bit-deterministic and a resume bit-identical, so every stored point
// (trial, metric, step) and value must equal the undisturbed run's with the
// trial's threads, no trainer may outlive its worker, and the database must
// pass integrity_check.
//
// MEGABATCH_CHAOS_SEED replays a seed (each run prints its own);
// MEGABATCH_CHAOS_SECONDS sets how long faults are injected (default 45).
// scripts/chaos_soak.sh runs it for a long time over many seeds.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "tests/e2e/e2e_fixture.h"
#include "tests/testing/status_matchers.h"

namespace megabatch {
namespace {

using Millis = std::chrono::milliseconds;

constexpr int kWorkers = 3;
constexpr int kLeaseTimeoutMs = 3000;
constexpr int kTrials = 12;
constexpr int kSteps = 3000;

// 2 optimizers x 2 batch sizes x 3 learning rates, checkpointing every 50
// steps; retries enough for any number of faults.
constexpr const char* kSpec = R"yaml(
model: {type: mlp, hidden: [64]}
optimizers: [{name: lamb}, {name: adamw}]
batch_sizes: [128, 256]
base: {lr: 0.002}
lr_multipliers: [0.5, 1, 2]
budget: {steps: 3000}
eval_every_steps: 1000
checkpoint_every_steps: 50
max_retries: 100
)yaml";

// Values that measure time or record where an attempt ran (the worker's
// threads and shared_cores, at each attempt's first step), not training.
constexpr const char* kNotTraining =
    "m.name NOT LIKE '%seconds' AND m.name NOT IN ('samples_per_second', "
    "'threads', 'shared_cores')";

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoll(v) : fallback;
}

// The parent pid of `pid` (0 when it is gone).
pid_t ParentOf(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return 0;
  // pid (comm) state ppid ...: comm may hold spaces; parse after the ')'.
  std::istringstream rest(line.substr(line.rfind(')') + 1));
  std::string state;
  pid_t ppid = 0;
  rest >> state >> ppid;
  return ppid;
}

class ChaosE2ETest : public SweepE2ETest {
 protected:
  // The test starts its own workers, each with its thread count.
  int WorkerCount() const override { return 0; }
  std::vector<std::string> CoordinatorFlags() const override {
    return {
        "--artifacts", dir_.File("artifacts"), "--heartbeat-interval-ms",
        "500",         "--lease-timeout-ms",   std::to_string(kLeaseTimeoutMs)};
  }

  // Submits the spec as sweep `name` and returns its id.
  int64_t Submit(const std::string& name) {
    auto r = Cli(
        {"submit", WriteSpec(name + ".yaml", "name: " + name + "\n" + kSpec)});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return static_cast<int64_t>(Scalar("SELECT max(id) FROM sweeps"));
  }

  bool SweepDone(int64_t sweep) {
    return Scalar("SELECT count(*) FROM sweeps WHERE id = " +
                  std::to_string(sweep) + " AND state = 'completed'") == 1;
  }

  std::string WorkerDir(int i) const {
    return dir_.File("worker-" + std::to_string(i));
  }
  std::vector<pid_t> TrainersOf(int i) const {
    return testing::FindProcesses("--serve --work-dir " + WorkerDir(i));
  }

  // Every stored training point of `sweep`, keyed by trial index:
  // "index name step" -> value, with NULL (a diverged loss) as "null".
  std::map<std::string, std::string> Points(int64_t sweep) {
    auto db = store::Db::Open(db_path_);
    EXPECT_OK(db);
    auto q = (*db)->Prepare(
        std::string("SELECT t.trial_index, m.name, m.step, m.value FROM "
                    "metrics m JOIN trials t ON t.id = m.trial_id WHERE "
                    "t.sweep_id = ? AND ") +
        kNotTraining);
    EXPECT_OK(q);
    q->Bind(1, sweep);
    std::map<std::string, std::string> out;
    while (true) {
      auto row = q->Step();
      EXPECT_OK(row);
      if (!row.ok() || !*row) break;
      std::ostringstream value;
      value.precision(17);
      if (q->IsNull(3)) {
        value << "null";
      } else {
        value << q->Double(3);
      }
      out[std::to_string(q->Int(0)) + " " + q->Text(1) + " " +
          std::to_string(q->Int(2))] = value.str();
    }
    return out;
  }

  // Freezes or thaws every worker daemon.
  void SignalWorkers(int signal) {
    for (auto& w : workers_) kill(w->pid(), signal);
  }

  static int ThreadsOf(int worker) { return worker == 0 ? 2 : 1; }

  void RestartWorker(int i) {
    auto started = testing::StartWorkers(
        MEGABATCH_WORKER_BIN, address_, dir_.path().string(), 1,
        {"--threads-per-slot", std::to_string(ThreadsOf(i))}, i);
    if (workers_.size() <= static_cast<size_t>(i)) workers_.resize(i + 1);
    workers_[static_cast<size_t>(i)] = std::move(started[0]);
  }

  // The threads each trial of `sweep` ran with, by trial index: every
  // attempt's record (the worker's "threads" point at its first step) must
  // agree, since a resume keeps its checkpoint's threads.
  std::map<int64_t, int> TrialThreads(int64_t sweep) {
    auto db = store::Db::Open(db_path_);
    EXPECT_OK(db);
    auto q = (*db)->Prepare(
        "SELECT t.trial_index, min(m.value), max(m.value) FROM metrics m JOIN "
        "trials t ON t.id = m.trial_id WHERE t.sweep_id = ? AND m.name = "
        "'threads' GROUP BY t.trial_index");
    EXPECT_OK(q);
    q->Bind(1, sweep);
    std::map<int64_t, int> out;
    while (true) {
      auto row = q->Step();
      EXPECT_OK(row);
      if (!row.ok() || !*row) break;
      EXPECT_EQ(q->Double(1), q->Double(2))
          << "trial " << q->Int(0) << " ran attempts with different threads";
      out[q->Int(0)] = static_cast<int>(q->Double(2));
    }
    return out;
  }
};

TEST_F(ChaosE2ETest, RandomFaultsLeaveEveryTrialAsAnUndisturbedRunWouldEndIt) {
  const uint64_t seed = static_cast<uint64_t>(EnvInt(
      "MEGABATCH_CHAOS_SEED",
      std::chrono::system_clock::now().time_since_epoch().count() % 1000000));
  const auto chaos_for =
      std::chrono::seconds(EnvInt("MEGABATCH_CHAOS_SECONDS", 45));
  std::printf("chaos seed %llu (replay: MEGABATCH_CHAOS_SEED=%llu)\n",
              static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  SCOPED_TRACE("chaos seed " + std::to_string(seed));

  // The oracles: the sweep without faults, on two threads (worker-0 alone),
  // then on one (the others).
  std::map<int, int64_t> oracle;
  RestartWorker(0);
  ASSERT_TRUE(WaitForWorkers(1)) << coordinator_->Log();
  oracle[2] = Submit("oracle-2-threads");
  ASSERT_TRUE(testing::WaitUntil([&] { return SweepDone(oracle[2]); },
                                 std::chrono::seconds(300)))
      << coordinator_->Log();
  workers_[0]->Kill(SIGTERM);
  ASSERT_EQ(workers_[0]->Wait(std::chrono::seconds(30)), 0);
  for (int i = 1; i < kWorkers; ++i) RestartWorker(i);
  oracle[1] = Submit("oracle-1-thread");
  ASSERT_TRUE(testing::WaitUntil([&] { return SweepDone(oracle[1]); },
                                 std::chrono::seconds(300)))
      << coordinator_->Log();
  RestartWorker(0);

  const int64_t chaos = Submit("chaos");
  std::mt19937_64 rng(seed);
  auto uniform_ms = [&](int lo, int hi) {
    return Millis(std::uniform_int_distribution<int>(lo, hi)(rng));
  };
  auto pick_worker = [&] {
    return std::uniform_int_distribution<int>(0, kWorkers - 1)(rng);
  };
  // Each fault kind, and what happened, in order.
  std::map<std::string, int> counts;
  std::vector<std::string> log;
  auto note = [&](const std::string& what) {
    ++counts[what.substr(0, what.find(' '))];
    log.push_back(what);
  };
  auto kill_a_trainer = [&](int w) {
    std::vector<pid_t> trainers = TrainersOf(w);
    if (trainers.empty()) return false;
    kill(trainers[0], SIGKILL);
    return true;
  };

  const auto stop_at = std::chrono::steady_clock::now() + chaos_for;
  while (std::chrono::steady_clock::now() < stop_at && !SweepDone(chaos)) {
    std::this_thread::sleep_for(uniform_ms(300, 2500));
    const int w = pick_worker();
    switch (std::uniform_int_distribution<int>(0, 5)(rng)) {
      case 0:
      case 1:  // the most common fault: a trainer dies
        if (kill_a_trainer(w)) note("trainer-kill worker-" + std::to_string(w));
        break;
      case 2: {  // a worker's machine dies; it comes back later
        workers_[static_cast<size_t>(w)]->Kill(SIGKILL);
        const Millis down = uniform_ms(0, 4000);
        std::this_thread::sleep_for(down);
        RestartWorker(w);
        note("worker-kill worker-" + std::to_string(w) + " down " +
             std::to_string(down.count()) + " ms");
        break;
      }
      case 3: {  // a worker freezes past its lease, then wakes up
        kill(workers_[static_cast<size_t>(w)]->pid(), SIGSTOP);
        const Millis frozen = uniform_ms(kLeaseTimeoutMs + 200, 6000);
        std::this_thread::sleep_for(frozen);
        kill(workers_[static_cast<size_t>(w)]->pid(), SIGCONT);
        note("worker-freeze worker-" + std::to_string(w) + " for " +
             std::to_string(frozen.count()) + " ms");
        break;
      }
      case 4: {  // the coordinator dies; a trainer may die meanwhile
        coordinator_->Kill(SIGKILL);
        const bool trainer =
            std::bernoulli_distribution(0.5)(rng) && kill_a_trainer(w);
        const Millis down = uniform_ms(0, 3000);
        std::this_thread::sleep_for(down);
        StartCoordinator();
        note(std::string("coordinator-kill down ") +
             std::to_string(down.count()) + " ms" +
             (trainer ? ", a trainer of worker-" + std::to_string(w) +
                            " killed meanwhile"
                      : ""));
        break;
      }
      case 5: {  // the coordinator restarts while no worker can reach it
        SignalWorkers(SIGSTOP);
        coordinator_->Kill(SIGKILL);
        StartCoordinator();
        const Millis frozen = uniform_ms(500, 5000);
        std::this_thread::sleep_for(frozen);
        SignalWorkers(SIGCONT);
        note("coordinator-restart-unreachable workers frozen " +
             std::to_string(frozen.count()) + " ms");
        break;
      }
    }
  }
  SignalWorkers(SIGCONT);
  std::string summary = "seed " + std::to_string(seed) + ":";
  for (const auto& [kind, n] : counts)
    summary += " " + kind + " x" + std::to_string(n);
  std::printf("%s\n", summary.c_str());
  for (const auto& line : log) std::printf("  %s\n", line.c_str());
  std::fflush(stdout);
  SCOPED_TRACE(summary);

  ASSERT_TRUE(testing::WaitUntil([&] { return SweepDone(chaos); },
                                 std::chrono::seconds(300)))
      << coordinator_->Log();
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE sweep_id = " +
                   std::to_string(chaos) + " AND state = 'completed'"),
            kTrials);

  // The oracle: every point the undisturbed run with the trial's threads
  // stored, with its value, and no other; so every step of every trial is
  // there exactly once.
  const auto threads = TrialThreads(chaos);
  ASSERT_EQ(threads.size(), static_cast<size_t>(kTrials));
  std::map<int, std::map<std::string, std::string>> undisturbed;
  for (const auto& [t, sweep] : oracle) {
    undisturbed[t] = Points(sweep);
    EXPECT_EQ(Scalar("SELECT count(*) FROM metrics m JOIN trials t ON t.id = "
                     "m.trial_id WHERE m.name = 'train_loss' AND "
                     "t.sweep_id = " +
                     std::to_string(sweep)),
              kTrials * kSteps);
    for (const auto& [index, n] : TrialThreads(sweep)) EXPECT_EQ(n, t);
  }
  // The two oracles must differ, or this test could not see a resume that
  // changed its threads.
  EXPECT_NE(undisturbed[1], undisturbed[2]);
  std::map<std::string, std::string> expected;
  for (const auto& [key, value] : undisturbed[1]) {
    const int64_t index = std::atoll(key.c_str());
    const int t = threads.count(index) ? threads.at(index) : 1;
    expected[key] = undisturbed[t].count(key) ? undisturbed[t].at(key) : "";
  }
  // How often the case this guards happened in this run.
  int crossed = 0;
  for (int i = 0; i < kWorkers; ++i) {
    std::ifstream log(WorkerDir(i) + ".log");
    for (std::string line; std::getline(log, line);) {
      crossed +=
          line.find("resuming with its checkpoint's") != std::string::npos;
    }
  }
  std::printf("resumes with other threads than the slot's: %d\n", crossed);
  std::printf("trials by threads:");
  for (const auto& [index, t] : threads)
    std::printf(" %lld:%d", static_cast<long long>(index), t);
  std::printf("\n");
  const auto got = Points(chaos);
  EXPECT_EQ(got.size(), expected.size());
  int mismatches = 0;
  for (const auto& [key, value] : expected) {
    auto it = got.find(key);
    if (it == got.end() || it->second != value) {
      if (++mismatches <= 10) {
        ADD_FAILURE() << key << ": undisturbed " << value << ", under faults "
                      << (it == got.end() ? "missing" : it->second);
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
  for (const auto& [key, value] : got) {
    EXPECT_TRUE(expected.count(key)) << key << " stored only under faults";
  }

  // No trainer outlives its worker daemon: each one left is a warm trainer
  // of a live worker.
  std::set<pid_t> live;
  for (auto& w : workers_) live.insert(w->pid());
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        for (pid_t t : testing::FindProcesses("--serve --work-dir " +
                                              dir_.path().string())) {
          if (live.count(ParentOf(t)) == 0 && ParentOf(t) != 0) return false;
        }
        return true;
      },
      std::chrono::seconds(20)))
      << "a trainer outlived its worker";
  EXPECT_EQ(IntegrityProblems(), 0);
}

}  // namespace
}  // namespace megabatch
