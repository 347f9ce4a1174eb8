// Whole-system test: a real coordinator and two real workers (each running
// real trainers) on loopback ports picked at run time, driven by the real CLI;
// assertions read the real SQLite file.
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/channel.h"
#include "server/store/db.h"
#include "tests/e2e/e2e_fixture.h"
#include "tests/testing/http.h"
#include "tests/testing/process.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tls.h"

namespace megabatch {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::Process;
using testing::RunCommand;

// The language models through the whole system: spec, coordinator, workers,
// trainers (tiny_bert's running megabatch-tokenize), and their metrics in
// SQLite and the report.
TEST_F(SweepE2ETest, LanguageModelSweepsRunAndStoreTheirMetrics) {
  std::string lstm = WriteSpec("lstm.yaml", R"yaml(
name: e2e-char-lstm
model: {type: char_lstm, hidden: 64, embedding: 16, seq_len: 32}
dataset: {name: text, validation_fraction: 0.01}
optimizers: [{name: lamb, lr: 0.01}, {name: adamw, lr: 0.003}]
batch_sizes: [32, 128]
base: {lr: 0.003}
lr_scaling: sqrt
micro_batch_size: 64
budget: {samples: 1024}
eval_every_steps: 4
)yaml");
  std::string bert = WriteSpec("bert.yaml", R"yaml(
name: e2e-tiny-bert
model: {type: tiny_bert, hidden: 64, heads: 2, ffn: 128, seq_len: 32, vocab_size: 512, bias: false}
dataset: {name: text, validation_fraction: 0.01}
optimizers: [{name: lamb, lr: 0.01}]
batch_sizes: [32]
base: {lr: 0.01}
budget: {steps: 8}
eval_every_steps: 4
)yaml");
  for (const auto& spec : {lstm, bert}) {
    auto submit = Cli({"submit", spec, "--wait"});
    ASSERT_EQ(submit.exit_code, 0)
        << submit.err << coordinator_->Log() << workers_[0]->Log();
  }
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'completed'"), 5);
  // char_lstm: 1024 samples are 32 steps at batch 32 and 8 at 128.
  EXPECT_EQ(
      Scalar(
          "SELECT count(*) FROM metrics m JOIN trials t ON t.id = m.trial_id "
          "WHERE t.sweep_id = 1 AND m.name = 'train_loss'"),
      2 * 32 + 2 * 8);
  EXPECT_EQ(
      Scalar(
          "SELECT count(*) FROM metrics m JOIN trials t ON t.id = m.trial_id "
          "WHERE t.sweep_id = 1 AND m.name = 'val_bpc'"),
      2 * 8 + 2 * 2);
  EXPECT_LT(Scalar("SELECT max(value) FROM metrics WHERE name = 'val_bpc'"),
            8.0);
  EXPECT_EQ(
      Scalar(
          "SELECT count(*) FROM metrics m JOIN trials t ON t.id = m.trial_id "
          "WHERE t.sweep_id = 2 AND m.name = 'val_mlm_accuracy'"),
      2);
  EXPECT_EQ(Scalar("SELECT count(*) FROM trial_summary WHERE sweep_id = 2 AND "
                   "best_val_accuracy IS NOT NULL"),
            1);
  // The corpus has no test split: no test figures.
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics WHERE name LIKE 'test_%'"), 0);
  auto report = Cli({"report", "1"});
  EXPECT_EQ(report.exit_code, 0) << report.err;
}

// A slot keeps its trainer between the trials of a sweep; each trial still
// prints the bits a fresh process prints: every stored metric equals that of
// `megabatch-trainer --config` run alone on the trial's config (times aside).
TEST_F(SweepE2ETest, TrialsInAWarmTrainerMatchAFreshProcessBitForBit) {
  std::string spec = WriteSpec("warm.yaml", R"yaml(
name: warm
model: {type: mlp, hidden: [32]}
optimizers: [{name: lamb}, {name: sgd, momentum: 0.9}]
batch_sizes: [128, 256]
base: {batch_size: 128, lr: 0.01}
seeds: [0, 1]
budget: {steps: 30}
eval_every_steps: 10
noise_scale: always
)yaml");
  auto submit = Cli({"submit", spec, "--wait"});
  ASSERT_EQ(submit.exit_code, 0) << submit.err << workers_[0]->Log();
  const std::string logs = workers_[0]->Log() + workers_[1]->Log();
  EXPECT_THAT(logs, HasSubstr("(warm)")) << "no trial ran in a kept trainer";
  const std::string trainer =
      (std::filesystem::path(MEGABATCH_WORKER_BIN).parent_path() /
       "megabatch-trainer")
          .string();
  auto db = store::Db::Open(db_path_);
  ASSERT_OK(db);
  auto trials =
      (*db)->Prepare("SELECT id, config_json FROM trials ORDER BY id");
  ASSERT_OK(trials);
  int compared = 0;
  while (*trials->Step()) {
    const int64_t id = trials->Int(0);
    nlohmann::json config = nlohmann::json::parse(trials->Text(1));
    config["threads"] = 1;
    const std::string path = dir_.File("alone-" + std::to_string(id) + ".json");
    std::ofstream(path) << config.dump();
    auto alone = RunCommand({trainer, "--config", path});
    ASSERT_EQ(alone.exit_code, 0) << alone.err;
    std::map<std::pair<std::string, int64_t>, double> expected;
    std::istringstream lines(alone.out);
    for (std::string line; std::getline(lines, line);) {
      auto j = nlohmann::json::parse(line);
      if (!j.contains("metrics")) continue;
      for (const auto& [name, value] : j["metrics"].items()) {
        if (name.find("second") == std::string::npos && value.is_number()) {
          expected[{name, j["step"].get<int64_t>()}] = value.get<double>();
        }
      }
    }
    auto stored = (*db)->Prepare(
        "SELECT name, step, value FROM metrics WHERE trial_id = ? AND value IS "
        "NOT NULL AND "
        "name NOT LIKE '%second%' AND name NOT IN ('threads', 'shared_cores') "
        "ORDER BY name, step");
    ASSERT_OK(stored);
    stored->Bind(1, id);
    size_t rows = 0;
    while (*stored->Step()) {
      ++rows;
      auto it = expected.find({stored->Text(0), stored->Int(1)});
      ASSERT_NE(it, expected.end())
          << "trial " << id << ": " << stored->Text(0);
      EXPECT_EQ(stored->Double(2), it->second)
          << "trial " << id << ": " << stored->Text(0) << " at step "
          << stored->Int(1);
    }
    EXPECT_EQ(rows, expected.size()) << "trial " << id;
    ++compared;
  }
  EXPECT_EQ(compared, 8);
}

TEST_F(SweepE2ETest, AStudysReportAgreesWithOneRecomputedFromTheRawMetrics) {
  // Four batch sizes, two lrs, two seeds, evaluated every 4,096 samples: the
  // report (SQL views and C++ fit) against tests/e2e/recompute_report.py,
  // which reads only the metrics table and follows docs/method.md.
  std::string spec = WriteSpec("study.yaml", R"yaml(
name: study
model: {type: mlp, hidden: [32]}
optimizers: [{name: adamw, exclude_bias_and_norm: true}]
batch_sizes: [128, 256, 512, 1024]
base: {batch_size: 128, lr: 0.002}
lr_scaling: sqrt
lr_multipliers: [1, 2]
seeds: [0, 1]
schedule: {warmup_epochs: 0.05, warmup_from: base}
budget: {epochs: 1}
eval_every_samples: 4096
noise_scale: always
target: {metric: val_accuracy, value: 0.78, stop: true}
)yaml");
  auto submit = Cli({"submit", spec, "--wait"});
  ASSERT_EQ(submit.exit_code, 0)
      << submit.err << coordinator_->Log() << workers_[0]->Log();
  // Every trial evaluated at step 0 and on the 4,096-sample grid.
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics WHERE name = 'val_accuracy' "
                   "AND step = 0"),
            16);
  EXPECT_EQ(
      Scalar(
          "SELECT count(*) FROM metrics m JOIN trials t ON t.id = m.trial_id "
          "WHERE m.name = 'val_accuracy' AND (m.step * t.batch_size) % 4096 != "
          "0"),
      0);
  // The crossing lies between the bracketing evaluation and the one that
  // reached it.
  EXPECT_EQ(Scalar("SELECT count(*) FROM trial_summary WHERE steps_to_target "
                   "IS NOT NULL AND "
                   "NOT (samples_to_target > target_bracket_samples AND "
                   "samples_to_target <= steps * batch_size)"),
            0);
  EXPECT_GT(Scalar("SELECT count(*) FROM trial_summary WHERE steps_to_target "
                   "IS NOT NULL"),
            8);
  EXPECT_EQ(Scalar("SELECT count(*) FROM trial_summary WHERE "
                   "noise_scale_at_10pct IS NULL"),
            0);
  auto report = Cli({"-o", "json", "report", "1"});
  ASSERT_EQ(report.exit_code, 0) << report.err;
  std::ofstream(dir_.File("report.json")) << report.out;
  auto check = testing::RunCommand(
      {"/usr/bin/python3", MEGABATCH_RECOMPUTE_REPORT, "--db", db_path_,
       "--sweep", "1", "--report", dir_.File("report.json")});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err << report.out;
  EXPECT_THAT(check.out, HasSubstr("agree"));
}

TEST_F(SweepE2ETest, SweepRunsOnTwoWorkersAndLandsInSqlite) {
  std::string spec = WriteSpec("sweep.yaml", R"yaml(
name: e2e
model: {type: mlp, hidden: [128]}
optimizers:
  - {name: sgd, momentum: 0.9}
  - {name: adamw}
  - {name: lamb}
  - {name: lars, lr: 4.0}
batch_sizes: [256, 1024]
base: {batch_size: 256, lr: 0.02}
lr_scaling: sqrt
schedule: {warmup_steps: 5, decay: cosine}
budget: {epochs: 1}
)yaml");
  auto submit = Cli({"submit", spec, "--wait"});
  ASSERT_EQ(submit.exit_code, 0)
      << submit.err << coordinator_->Log() << workers_[0]->Log();
  EXPECT_THAT(submit.err, HasSubstr("completed: 8/8 done"));

  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'completed'"), 8);
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials"), 8);
  // LARS's own base lr, sqrt-scaled: 4.0 x sqrt(1024 / 256).
  EXPECT_DOUBLE_EQ(Scalar("SELECT lr FROM trials WHERE optimizer = 'lars' AND "
                          "batch_size = 1024"),
                   8.0);
  // Both workers ran trials.
  EXPECT_EQ(Scalar("SELECT count(DISTINCT worker_id) FROM events "
                   "WHERE kind = 'trial_leased'"),
            2);
  // Per-step train_loss for every step of one epoch of the 55,000 training
  // images: ceil(55000/256) = 215 and ceil(55000/1024) = 54.
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics m JOIN trials t ON "
                   "t.id = m.trial_id WHERE m.name = 'train_loss' AND "
                   "t.batch_size = 256"),
            4 * 215);
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics m JOIN trials t ON "
                   "t.id = m.trial_id WHERE m.name = 'train_loss' AND "
                   "t.batch_size = 1024"),
            4 * 54);
  EXPECT_EQ(Scalar("SELECT min(c) FROM (SELECT count(*) AS c FROM metrics "
                   "WHERE name = 'lr' GROUP BY trial_id)"),
            54);
  // One epoch: one validation row per trial, above 0.75, and the test split
  // once at the end.
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics WHERE name = 'val_accuracy'"),
            8);
  double worst =
      Scalar("SELECT min(value) FROM metrics WHERE name = 'val_accuracy'");
  EXPECT_GT(worst, 0.75);
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics WHERE name = 'test_accuracy'"),
            8);
  EXPECT_EQ(Scalar("SELECT count(*) FROM trial_summary WHERE "
                   "test_accuracy > 0.75 AND state = 'completed'"),
            8);

  auto trials = Cli({"-o", "json", "trials", "1"});
  ASSERT_EQ(trials.exit_code, 0) << trials.err;
  auto rows = nlohmann::json::parse(trials.out);
  ASSERT_EQ(rows.size(), 8u);
  EXPECT_EQ(rows[0]["state"], "completed");
  EXPECT_GT(rows[0]["val_accuracy"].get<double>(), 0.75);

  auto csv = Cli({"-o", "csv", "list"});
  EXPECT_EQ(csv.exit_code, 0);
  EXPECT_THAT(csv.out, HasSubstr("1,e2e,completed,8,"));

  // The study's answer: one row per (optimizer, batch size), no target.
  auto report = Cli({"-o", "json", "report", "1"});
  ASSERT_EQ(report.exit_code, 0) << report.err;
  auto answer = nlohmann::json::parse(report.out);
  ASSERT_EQ(answer["rows"].size(), 8u);
  EXPECT_GT(answer["rows"][0]["best_val_accuracy"].get<double>(), 0.75);
  EXPECT_GT(answer["rows"][0]["test_accuracy"].get<double>(), 0.75);
  EXPECT_EQ(answer["critical_batch"].size(), 4u);
  // Every stored value comes out of export exactly once.
  auto exported = Cli({"export", "1"});
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  EXPECT_EQ(std::count(exported.out.begin(), exported.out.end(), '\n') - 1,
            static_cast<long>(Scalar("SELECT count(*) FROM metrics")));
}

TEST_F(SweepE2ETest, WorkerCheckSaysWhatTrialsNeedAndFailsOnWhatWouldStopThem) {
  auto ok = RunCommand({MEGABATCH_WORKER_BIN, "--check", "--coordinator",
                        address_, "--work-dir", dir_.File("check-work")});
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("libtorch "));
  EXPECT_THAT(ok.out, HasSubstr("BLAS_INFO="));
  EXPECT_THAT(ok.out, HasSubstr("smoke training cpu fp32: ok"));
  EXPECT_THAT(ok.out, HasSubstr("LAMB optimizer step: "));
  EXPECT_THAT(ok.out, HasSubstr("coordinator " + address_ + ": reachable"));
  EXPECT_THAT(ok.out, HasSubstr("check passed"));
  // No coordinator there, and an artifacts "directory" that is a file.
  std::ofstream(dir_.File("not-a-dir")) << "x";
  auto bad = RunCommand({MEGABATCH_WORKER_BIN, "--check", "--coordinator",
                         "127.0.0.1:" + std::to_string(testing::FreePort()),
                         "--work-dir", dir_.File("check-work"), "--artifacts",
                         dir_.File("not-a-dir")});
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_THAT(bad.out, HasSubstr("PROBLEM: coordinator 127.0.0.1:"));
  EXPECT_THAT(bad.out,
              HasSubstr("PROBLEM: --artifacts " + dir_.File("not-a-dir")));
}

TEST_F(SweepE2ETest, BadSpecIsRejectedByTheCliAndNothingIsStored) {
  std::string spec = WriteSpec("bad.yaml", R"yaml(
name: bad
optimizers: [{name: sgd}]
batch_sizes: [0]
base: {lr: 0.1}
)yaml");
  auto r = Cli({"submit", spec});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT: batch_sizes[0]"));
  EXPECT_EQ(Scalar("SELECT count(*) FROM sweeps"), 0);

  auto missing = Cli({"submit", dir_.File("no-such-spec.yaml")});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("no-such-spec.yaml"));

  auto usage = Cli({"status"});
  EXPECT_EQ(usage.exit_code, 2);
  auto unknown = Cli({"status", "77"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.err, HasSubstr("NOT_FOUND: sweep 77 not found"));
}

TEST_F(SweepE2ETest, DivergingAndCrashingTrialsGetTheirOwnStates) {
  // lr 1e6 with SGD makes the loss explode on step 2: diverged, not failed.
  std::string diverge = WriteSpec("diverge.yaml", R"yaml(
name: diverge
model: {type: mlp, hidden: [32]}
optimizers: [{name: sgd, momentum: 0}]
batch_sizes: [512]
base: {lr: 1000000}
budget: {steps: 20}
)yaml");
  auto r = Cli({"submit", diverge, "--wait"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'diverged'"), 1);

  // A trainer that cannot read its dataset fails; with max_retries 1 it is
  // tried twice, then the sweep fails with the trainer's stderr stored.
  const std::string broken = DataDir() + "/broken";
  std::filesystem::create_directories(broken);
  for (const char* f :
       {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    std::ofstream(broken + "/" + f) << "not gzip";
  }
  std::string crash = WriteSpec("crash.yaml", R"yaml(
name: crash
dataset: {name: fashion_mnist, path: )yaml" + broken +
                                                  R"yaml(}
optimizers: [{name: sgd}]
batch_sizes: [128]
base: {lr: 0.1}
max_retries: 1
)yaml");
  r = Cli({"submit", crash, "--wait"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'failed' AND "
                   "attempts = 2"),
            1);
  EXPECT_EQ(Scalar("SELECT count(*) FROM events WHERE kind = 'trial_failed' "
                   "AND message LIKE '%trainer stderr%' AND message LIKE "
                   "'%not an IDX image file%'"),
            2);

  // A FIFO as a text corpus hung its trial forever, and /dev/zero was read
  // until memory ran out; the coordinator told anyone whether a path
  // existed. The coordinator looks only under its --data-root, the worker
  // reads regular files under its own only, and each says so.
  auto hostile = [&](const std::string& path) {
    return WriteSpec("hostile.yaml", R"yaml(
name: hostile
model: {type: char_lstm, hidden: 8, embedding: 4, seq_len: 2}
dataset: {name: text, path: )yaml" + path +
                                         R"yaml(}
optimizers: [{name: sgd}]
batch_sizes: [1]
base: {lr: 0.1}
budget: {steps: 10}
max_retries: 0
)yaml");
  };
  const int64_t sweeps = Scalar("SELECT count(*) FROM sweeps");
  for (const char* path : {"/dev/zero", "/etc/shadow", "/no/such/file"}) {
    r = Cli({"submit", hostile(path)});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.err, ::testing::HasSubstr(
                           "is not under a data root of this coordinator"));
  }
  EXPECT_EQ(Scalar("SELECT count(*) FROM sweeps"), sweeps);
  ASSERT_EQ(::mkfifo((DataDir() + "/fifo").c_str(), 0600), 0);
  r = Cli({"submit", hostile(DataDir() + "/fifo"), "--wait"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE sweep_id = (SELECT "
                   "max(id) FROM sweeps) AND state = 'failed' AND error LIKE "
                   "'%fifo is not a regular file%'"),
            1);
}

// An mlp of 65,536 x 8 was accepted (about 120 GB) and trainers ran with no
// memory limit: a worker's --trainer-memory limits each trainer, and a
// trial over it fails saying so, while one that fits completes.
TEST_F(SweepE2ETest, ATrialOverItsWorkersTrainerMemoryFailsAndSaysSo) {
  for (auto& w : workers_) w->Kill(SIGTERM);
  for (auto& w : workers_) EXPECT_EQ(w->Wait(std::chrono::seconds(10)), 0);
  workers_ = testing::StartWorkers(MEGABATCH_WORKER_BIN, address_,
                                   dir_.path().string(), 1,
                                   {"--trainer-memory", "1500M"}, 10);
  auto run = [&](const std::string& name, const std::string& hidden) {
    return Cli({"submit",
                WriteSpec(name + ".yaml", "name: " + name +
                                              "\nmodel: {type: mlp, "
                                              "hidden: " +
                                              hidden + R"yaml(}
optimizers: [{name: lamb}]
batch_sizes: [128]
base: {lr: 0.01}
budget: {steps: 5}
max_retries: 0
)yaml"),
                "--wait"});
  };
  auto fits = run("fits", "[64]");
  EXPECT_EQ(fits.exit_code, 0) << fits.err;
  auto too_big = run("too-big", "[8192, 8192, 8192]");
  EXPECT_EQ(too_big.exit_code, 1) << too_big.err;
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'failed' AND "
                   "error LIKE '%can''t allocate memory%' AND error LIKE "
                   "'%limits each trainer to 1500 MiB: --trainer-memory%'"),
            1);
  // The coordinator refuses what no worker could hold, before any runs.
  auto huge = run("huge", "[65536, 65536, 65536, 65536, 65536, 65536, 65536]");
  EXPECT_EQ(huge.exit_code, 1);
  EXPECT_THAT(huge.err, HasSubstr("--max-model-parameters"));
}

TEST_F(SweepE2ETest, CancelStopsRunningTrainersQuickly) {
  std::string spec = WriteSpec("long.yaml", R"yaml(
name: long
optimizers: [{name: sgd}, {name: adamw}]
batch_sizes: [64]
base: {lr: 0.01}
budget: {epochs: 50}
)yaml");
  auto submitted = Cli({"submit", spec});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        return Scalar(
                   "SELECT count(*) FROM metrics WHERE name = 'train_loss'") >
               0;
      },
      std::chrono::seconds(60)));
  auto start = std::chrono::steady_clock::now();
  auto cancel = Cli({"cancel", "1"});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  // The workers' trainers are gone within 5 s: no new metric rows arrive.
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        auto w = Cli({"-o", "json", "workers"});
        auto rows = nlohmann::json::parse(w.out);
        for (const auto& row : rows) {
          if (row["busy"] != 0) return false;
        }
        return testing::FindProcesses("--serve --work-dir " +
                                      dir_.path().string())
            .empty();
      },
      std::chrono::seconds(5)))
      << "trainers still running 5 s after cancel";
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(6));
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'cancelled'"), 2);
  auto again = Cli({"cancel", "1"});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_THAT(again.err, HasSubstr("FAILED_PRECONDITION"));
}

TEST_F(SweepE2ETest, KilledTrainerIsRetriedFromItsCheckpoint) {
  // One worker, so the retry runs where the checkpoint is. (A long poll of
  // the killed worker that the coordinator has not yet seen go away may
  // still be handed the trial; it comes back after the lease timeout, so
  // allow for an extra attempt.)
  workers_[1]->Kill(SIGKILL);
  // Long enough (a few seconds at least) that the kill lands mid-run.
  std::string spec = WriteSpec("ckpt.yaml", R"yaml(
name: ckpt
model: {type: mlp, hidden: [128]}
optimizers: [{name: lamb}]
batch_sizes: [256]
base: {lr: 0.01}
budget: {steps: 3000}
eval_every_steps: 1000
checkpoint_every_steps: 20
max_retries: 3
)yaml");
  auto submitted = Cli({"submit", spec});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  std::vector<pid_t> trainers;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        trainers = testing::FindProcesses("--serve --work-dir " +
                                          dir_.path().string());
        return trainers.size() == 1 &&
               !Committed(dir_.File("worker-0/trial-1")).empty();
      },
      std::chrono::seconds(120)))
      << workers_[0]->Log();
  ASSERT_EQ(kill(trainers[0], SIGKILL), 0);

  auto watch = Cli({"watch", "1"});
  EXPECT_EQ(watch.exit_code, 0)
      << watch.err << workers_[0]->Log() << coordinator_->Log();
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'completed' AND "
                   "attempts >= 2"),
            1)
      << coordinator_->Log();
  EXPECT_EQ(Scalar("SELECT count(*) FROM events WHERE kind = 'trial_failed' "
                   "AND message LIKE '%signal 9%'"),
            1)
      << workers_[0]->Log();
  EXPECT_THAT(workers_[0]->Log(), HasSubstr("resuming from"));
  // Every step exactly once, 1..3000, across both attempts.
  ExpectEveryStepOnce("1", 3000);
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics WHERE name = 'val_accuracy'"),
            3);
}

// Cores are given out once per host: a worker that asks for more threads
// than the cores says so loudly, one started beside it gets what is left,
// and trials that ran while the host's trainers outnumbered its cores say so
// (threads, shared_cores), so the report marks their time figures.
TEST_F(SweepE2ETest, TrialsThatShareCoresAreMarkedInTheReport) {
  for (auto& w : workers_) w->Kill(SIGTERM);
  for (auto& w : workers_) EXPECT_EQ(w->Wait(std::chrono::seconds(10)), 0);
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  const int cores = CPU_COUNT(&set);
  const std::string claims = dir_.File("claims");
  auto worker = [&](const std::string& name, std::vector<std::string> flags,
                    const std::string& claims_dir) {
    std::vector<std::string> argv = {
        MEGABATCH_WORKER_BIN, "--coordinator", address_,        "--name",  name,
        "--work-dir",         dir_.File(name), "--host-claims", claims_dir};
    argv.insert(argv.end(), flags.begin(), flags.end());
    return std::make_unique<Process>(argv, dir_.File(name + ".log"));
  };
  // Two slots of every core each: twice the cores when both run.
  auto greedy = worker(
      "greedy", {"--slots", "2", "--threads-per-slot", std::to_string(cores)},
      claims);
  auto registered = [](const std::unique_ptr<Process>& w) {
    return testing::WaitUntil(
        [&] { return w->Log().find("registered") != std::string::npos; },
        std::chrono::seconds(30));
  };
  ASSERT_TRUE(registered(greedy));
  EXPECT_THAT(greedy->Log(), HasSubstr("OVERSUBSCRIBED"));
  // A worker started beside it finds no core left: one thread, and a warning.
  auto late = worker("late", {"--slots", "1"}, claims);
  ASSERT_TRUE(registered(late));
  EXPECT_THAT(late->Log(), HasSubstr("OVERSUBSCRIBED"));
  EXPECT_THAT(late->Log(), HasSubstr("1 CPU slots x 1 threads"));
  late->Kill(SIGTERM);
  EXPECT_EQ(late->Wait(std::chrono::seconds(10)), 0);

  const std::string spec_text = R"yaml(
model: {type: mlp, hidden: [32]}
optimizers: [{name: adamw}]
batch_sizes: [128, 256]
base: {batch_size: 128, lr: 0.002}
budget: {steps: 300}
eval_every_steps: 20
target: {metric: val_accuracy, value: 0.5}
)yaml";
  auto shared =
      Cli({"submit", WriteSpec("shared.yaml", "name: shared" + spec_text),
           "--wait"});
  ASSERT_EQ(shared.exit_code, 0) << shared.err << greedy->Log();
  greedy->Kill(SIGTERM);
  EXPECT_EQ(greedy->Wait(std::chrono::seconds(10)), 0);
  EXPECT_EQ(Scalar("SELECT count(*) FROM trial_summary WHERE sweep_id = 1 AND "
                   "shared_cores = 1 "
                   "AND threads = " +
                   std::to_string(cores)),
            2);
  EXPECT_EQ(Scalar("SELECT sum(shared_core_trials) FROM sweep_scaling WHERE "
                   "sweep_id = 1"),
            2);
  auto report = Cli({"report", "1"});
  ASSERT_EQ(report.exit_code, 0) << report.err;
  EXPECT_THAT(report.out, HasSubstr(" (shared)"));
  EXPECT_THAT(report.out, HasSubstr("shared cores with other trainers"));
  auto trials = Cli({"trials", "1"});
  EXPECT_THAT(trials.out, HasSubstr(" (shared)"));
  auto json_report =
      nlohmann::json::parse(Cli({"-o", "json", "report", "1"}).out);
  for (const auto& row : json_report["rows"]) {
    EXPECT_EQ(row["shared_core_trials"], 1);
    EXPECT_TRUE(row["seconds_to_target"].is_number())
        << "JSON keeps the number";
  }

  // Alone on its cores (a claims directory of its own): nothing is marked.
  auto alone = worker("alone", {"--slots", "1", "--threads-per-slot", "1"},
                      dir_.File("own"));
  auto calm = Cli(
      {"submit", WriteSpec("calm.yaml", "name: calm" + spec_text), "--wait"});
  ASSERT_EQ(calm.exit_code, 0) << calm.err << alone->Log();
  EXPECT_THAT(alone->Log(), Not(HasSubstr("OVERSUBSCRIBED")));
  EXPECT_EQ(Scalar("SELECT count(*) FROM trial_summary WHERE sweep_id = 2 AND "
                   "shared_cores = 0 "
                   "AND threads = 1 AND samples_per_second > 0"),
            2);
  auto calm_report = Cli({"report", "2"});
  EXPECT_THAT(calm_report.out, Not(HasSubstr("(shared)")));
}

TEST_F(SweepE2ETest, GpuSlotsEachSeeOnlyTheirOwnGpu) {
  // Only a worker with --gpus 3,5 runs this sweep, with a stand-in trainer
  // that reports the CUDA_VISIBLE_DEVICES it was given (-1 when empty). Each
  // trainer waits (up to 60 s) until both have started, so both slots are
  // busy at once.
  for (auto& w : workers_) w->Kill(SIGTERM);
  for (auto& w : workers_) EXPECT_EQ(w->Wait(std::chrono::seconds(10)), 0);
  std::string started = dir_.File("started");
  std::filesystem::create_directories(started);
  std::string trainer = dir_.File("gpu-trainer.sh");
  fake_trainer_metrics_ = {"visible_gpu"};
  std::ofstream(trainer)
      << "#!/bin/sh\n"
         "touch "
      << started
      << "/$$\n"
         "i=0\n"
         "while [ $(ls "
      << started
      << " | wc -l) -lt 2 ] && "
         "[ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n"
         "echo \"{\\\"step\\\": 1, \\\"metrics\\\": "
         "{\\\"visible_gpu\\\": ${CUDA_VISIBLE_DEVICES:--1}}}\"\n";
  std::filesystem::permissions(trainer, std::filesystem::perms::owner_all);
  Process gpu_worker({MEGABATCH_WORKER_BIN, "--coordinator", address_, "--name",
                      "gpu-worker", "--gpus", "3,5", "--work-dir",
                      dir_.File("gpu-worker"), "--trainer", trainer},
                     dir_.File("gpu-worker.log"));
  std::string spec = WriteSpec("gpu.yaml", R"yaml(
name: gpus
model: {type: mlp}
optimizers: [{name: sgd}]
batch_sizes: [128, 256]
base: {batch_size: 128, lr: 0.1}
budget: {steps: 1}
)yaml");
  auto submit = Cli({"submit", spec, "--wait"});
  ASSERT_EQ(submit.exit_code, 0) << submit.err << gpu_worker.Log();
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics WHERE name = 'visible_gpu'"),
            2);
  EXPECT_EQ(Scalar("SELECT min(value) FROM metrics WHERE name = 'visible_gpu'"),
            3);
  EXPECT_EQ(Scalar("SELECT max(value) FROM metrics WHERE name = 'visible_gpu'"),
            5);
  auto workers = nlohmann::json::parse(Cli({"-o", "json", "workers"}).out);
  bool found = false;
  for (const auto& w : workers) {
    if (w["name"] == "gpu-worker") {
      found = true;
      EXPECT_EQ(w["slots"], 2);
    }
  }
  EXPECT_TRUE(found) << workers.dump();

  // --gpus and --slots exclude each other, and an id must be a number.
  auto both = RunCommand({MEGABATCH_WORKER_BIN, "--gpus", "0", "--slots", "2"});
  EXPECT_EQ(both.exit_code, 2);
  auto bad = RunCommand({MEGABATCH_WORKER_BIN, "--gpus", "0,x"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("--gpus: 'x' is not a GPU id"));
}

TEST_F(SweepE2ETest, SuccessiveHalvingStopsTheWorstTrialsEarly) {
  // Rungs at 2560, 5120, ... samples (steps 10, 20, ... at batch 256); lrs
  // from 1e-2 down to 1e-5 (hardly learns), best first: successive halving
  // judges a trial against those that reached the rung before it.
  std::string spec = WriteSpec("asha.yaml", R"yaml(
name: asha
model: {type: mlp, hidden: [64]}
optimizers: [{name: adamw}]
batch_sizes: [256]
base: {lr: 0.00001}
lr_multipliers: [1000, 100, 10, 1]
budget: {steps: 300}
eval_every_steps: 10
early_stopping: {rule: asha, metric: test_accuracy, min_samples: 2560, reduction_factor: 2}
)yaml");
  auto submit = Cli({"submit", spec, "--wait"});
  ASSERT_EQ(submit.exit_code, 0) << submit.err << workers_[0]->Log();
  const double pruned =
      Scalar("SELECT count(*) FROM trials WHERE state = 'pruned'");
  EXPECT_GE(pruned, 1);
  EXPECT_EQ(
      Scalar("SELECT count(*) FROM trials WHERE state = 'completed'") + pruned,
      4);
  EXPECT_EQ(Scalar("SELECT count(*) FROM events WHERE kind = 'trial_pruned'"),
            pruned);
  // Pruned trials stopped short of the budget; the smallest lr is among them.
  EXPECT_EQ(Scalar("SELECT count(*) FROM trial_summary WHERE state = 'pruned' "
                   "AND steps < 300"),
            pruned);
  EXPECT_EQ(
      Scalar("SELECT state = 'pruned' FROM trials WHERE lr_multiplier = 1"), 1);
  EXPECT_GE(Scalar("SELECT count(*) FROM trials WHERE state = 'completed'"), 1);
  EXPECT_THAT(submit.err,
              HasSubstr("pruned " + std::to_string(static_cast<int>(pruned))));
  // The sweep ends when its last trial is pruned; that trainer is stopped
  // by its worker at its next report.
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        return testing::FindProcesses("--serve --work-dir " +
                                      dir_.path().string())
            .empty();
      },
      std::chrono::seconds(5)))
      << "trainers still running 5 s after the sweep ended";
}

// Checkpoints in the coordinator's --artifacts, and a short lease timeout.
class SharedCheckpointE2ETest : public SweepE2ETest {
 protected:
  std::vector<std::string> CoordinatorFlags() const override {
    return {"--artifacts", dir_.File("artifacts"), "--heartbeat-interval-ms",
            "500",         "--lease-timeout-ms",   "3000"};
  }

  // Submits one LAMB trial of 3,000 steps that checkpoints every 20 and
  // returns once a checkpoint of it is committed.
  void SubmitALongTrialAndWaitForACheckpoint() {
    std::string spec = WriteSpec("long.yaml", R"yaml(
name: long-trial
model: {type: mlp, hidden: [128]}
optimizers: [{name: lamb}]
batch_sizes: [256]
base: {lr: 0.01}
budget: {steps: 3000}
eval_every_steps: 1000
checkpoint_every_steps: 20
max_retries: 2
)yaml");
    ASSERT_EQ(Cli({"submit", spec}).exit_code, 0);
    ASSERT_TRUE(testing::WaitUntil(
        [&] { return !Committed(dir_.File("artifacts/trial-1")).empty(); },
        std::chrono::seconds(120)))
        << workers_[0]->Log() << workers_[1]->Log();
  }

  // Which worker (0 or 1, by its name worker-I) runs trial 1 now.
  int WorkerOfTrialOne() {
    return static_cast<int>(
        Scalar("SELECT CAST(substr(w.name, 8) AS INTEGER) FROM trials t "
               "JOIN workers w ON w.id = t.worker_id WHERE t.id = 1"));
  }
};

TEST_F(SharedCheckpointE2ETest,
       KilledWorkersTrialResumesFromItsCheckpointOnTheOther) {
  ASSERT_NO_FATAL_FAILURE(SubmitALongTrialAndWaitForACheckpoint());
  // Kill the worker running the trial, daemon and trainer alike.
  const int victim = WorkerOfTrialOne();
  ASSERT_TRUE(victim == 0 || victim == 1);
  KillWorker(victim);

  auto watch = Cli({"watch", "1"});
  EXPECT_EQ(watch.exit_code, 0) << watch.err << coordinator_->Log();
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'completed' AND "
                   "attempts = 2"),
            1);
  EXPECT_EQ(Scalar("SELECT count(DISTINCT worker_id) FROM events WHERE kind = "
                   "'trial_leased'"),
            2);
  EXPECT_THAT(
      workers_[1 - victim]->Log(),
      HasSubstr("resuming from " + dir_.File("artifacts/trial-1/lease-")));
  // Every step exactly once, across both workers.
  ExpectEveryStepOnce("1", 3000);
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics WHERE name = 'val_accuracy'"),
            3);
  // A finished trial's checkpoints are removed.
  EXPECT_FALSE(std::filesystem::exists(dir_.File("artifacts/trial-1")));
}

// A drained worker (SIGTERM: Slurm's preemption, scancel, a pod deletion)
// gives its trial back: the trainer checkpoints at its next step, the trial
// is queued again at once (the lease timeout here is two minutes), marked
// preempted and not counted as an attempt, and the other worker resumes it
// from that checkpoint with every step stored once. A worker with
// --exit-when-idle leaves when there is no work.
class DrainE2ETest : public SharedCheckpointE2ETest {
 protected:
  std::vector<std::string> CoordinatorFlags() const override {
    return {"--artifacts", dir_.File("artifacts"), "--heartbeat-interval-ms",
            "500",         "--lease-timeout-ms",   "120000"};
  }
};

TEST_F(DrainE2ETest, ASigtermedWorkerGivesItsTrialBackAtOnce) {
  ASSERT_NO_FATAL_FAILURE(SubmitALongTrialAndWaitForACheckpoint());
  const int drained = WorkerOfTrialOne();
  ASSERT_TRUE(drained == 0 || drained == 1);
  const auto sent = std::chrono::steady_clock::now();
  workers_[drained]->Kill(SIGTERM);
  EXPECT_EQ(workers_[drained]->Wait(std::chrono::seconds(40)), 0)
      << workers_[drained]->Log();
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        return Scalar(
                   "SELECT count(*) FROM events WHERE kind = "
                   "'trial_leased'") == 2;
      },
      std::chrono::seconds(30)))
      << coordinator_->Log() << workers_[drained]->Log();
  const double requeued_after =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - sent)
          .count();
  EXPECT_LT(requeued_after, 30) << "not the 120 s lease timeout\n"
                                << workers_[drained]->Log();
  EXPECT_EQ(Scalar("SELECT count(*) FROM events WHERE kind = "
                   "'trial_preempted' AND message LIKE '%checkpoint written%'"),
            1)
      << workers_[drained]->Log();
  EXPECT_THAT(workers_[drained]->Log(), HasSubstr("draining"));

  auto watch = Cli({"watch", "1"});
  EXPECT_EQ(watch.exit_code, 0) << watch.err << coordinator_->Log();
  // The preempted attempt is not counted.
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'completed' AND "
                   "attempts = 1"),
            1);
  EXPECT_EQ(Scalar("SELECT count(*) FROM events WHERE kind = 'trial_failed'"),
            0);
  EXPECT_THAT(
      workers_[1 - drained]->Log(),
      HasSubstr("resuming from " + dir_.File("artifacts/trial-1/lease-")));
  ExpectEveryStepOnce("1", 3000);

  // Nothing queued: a pilot worker gives its node back.
  auto pilot = std::make_unique<Process>(
      std::vector<std::string>{MEGABATCH_WORKER_BIN, "--coordinator", address_,
                               "--name", "pilot", "--work-dir",
                               dir_.File("pilot"), "--exit-when-idle", "2"},
      dir_.File("pilot.log"));
  EXPECT_EQ(pilot->Wait(std::chrono::seconds(30)), 0) << pilot->Log();
  EXPECT_THAT(pilot->Log(), HasSubstr("--exit-when-idle"));
}

// A worker frozen past its lease (SIGSTOP: a GC pause, a partition) that
// wakes up later is fenced: its trial has been leased again, so nothing it
// reports lands, its trainer is stopped as soon as it hears, it commits no
// checkpoint and it does not end the trial. The new attempt resumes from
// the last checkpoint committed before the freeze and every step is stored
// once.
TEST_F(SharedCheckpointE2ETest,
       AFrozenWorkerThatWakesUpIsFencedOffItsOldLease) {
  ASSERT_NO_FATAL_FAILURE(SubmitALongTrialAndWaitForACheckpoint());
  const int zombie = WorkerOfTrialOne();
  ASSERT_TRUE(zombie == 0 || zombie == 1);
  const std::string zombie_dir = dir_.File("worker-" + std::to_string(zombie));
  // Freeze the worker daemon only: its trainer runs on until its stdout
  // pipe fills.
  ASSERT_EQ(kill(workers_[zombie]->pid(), SIGSTOP), 0);
  // Past the 3 s lease timeout the trial is requeued and leased to the
  // other worker.
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        return Scalar(
                   "SELECT count(*) FROM events WHERE kind = "
                   "'trial_leased'") == 2;
      },
      std::chrono::seconds(60)))
      << coordinator_->Log();
  const double lease_of_new =
      Scalar("SELECT lease_id FROM trials WHERE id = 1");
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        return workers_[1 - zombie]->Log().find("resuming from") !=
               std::string::npos;
      },
      std::chrono::seconds(30)))
      << workers_[1 - zombie]->Log();
  ASSERT_EQ(kill(workers_[zombie]->pid(), SIGCONT), 0);
  // The woken worker hears it lost the lease (its reports are ABORTED, its
  // heartbeat says stop) and stops its trainer.
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        return testing::FindProcesses("--serve --work-dir " + zombie_dir)
            .empty();
      },
      std::chrono::seconds(20)))
      << "the zombie's trainer still runs\n"
      << workers_[zombie]->Log();
  auto watch = Cli({"watch", "1"});
  EXPECT_EQ(watch.exit_code, 0) << watch.err << coordinator_->Log();
  // The second attempt, under the lease it was given, ended the trial; the
  // zombie's attempt ended nothing.
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'completed' "
                   "AND attempts = 2"),
            1);
  EXPECT_EQ(Scalar("SELECT lease_id FROM trials WHERE id = 1"), lease_of_new);
  EXPECT_EQ(Scalar("SELECT count(*) FROM events WHERE kind LIKE 'trial_%' AND "
                   "kind NOT IN ('trial_leased', 'trial_requeued')"),
            1);
  EXPECT_THAT(workers_[zombie]->Log(), HasSubstr("trial 1 stopped"));
  // Every step exactly once, whoever sent it.
  ExpectEveryStepOnce("1", 3000);
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics WHERE name = 'val_accuracy'"),
            3);
}

// A full database loses nothing: the coordinator restarted with its file
// capped just above its size (--max-db-bytes, the same SQLITE_FULL a full
// disk gives) refuses the workers' reports with RESOURCE_EXHAUSTED; they keep
// their points and retry, and once it has room again (restarted without the
// cap) every step lands exactly once and the sweep completes.
TEST_F(SweepE2ETest, AFullDatabaseLosesNoPointAndTakesThemOnceThereIsRoom) {
  ASSERT_NO_FATAL_FAILURE(StopCoordinator());
  const auto db_bytes = std::filesystem::file_size(db_path_);
  std::vector<std::string> plain = coordinator_argv_;
  const int metrics_port = PinMetricsPort();
  coordinator_argv_.push_back("--max-db-bytes");
  coordinator_argv_.push_back(std::to_string(db_bytes + 96 * 1024));
  StartCoordinator();
  ASSERT_TRUE(WaitForWorkers(2)) << coordinator_->Log();
  std::string spec = WriteSpec("full.yaml", R"yaml(
name: disk-full
model: {type: mlp, hidden: [64]}
optimizers: [{name: lamb}]
batch_sizes: [256]
base: {lr: 0.01}
budget: {steps: 2000}
eval_every_steps: 500
checkpoint_every_steps: 100
)yaml");
  ASSERT_EQ(Cli({"submit", spec}).exit_code, 0);
  // The reports start to be refused as the file reaches its cap.
  ASSERT_TRUE(
      testing::WaitUntil([&] { return ReportsRefusedAsFull(metrics_port); },
                         std::chrono::seconds(120)))
      << coordinator_->Log();
  // Heartbeats (which change a row in place) still go through: no worker
  // is lost and no trial requeued for the full database.
  EXPECT_EQ(testing::HttpGet(metrics_port, "/metrics")
                .body.find("code=\"RESOURCE_EXHAUSTED\",method=\"Heartbeat\""),
            std::string::npos);
  // Room again: the workers' kept points land, each once.
  ASSERT_NO_FATAL_FAILURE(StopCoordinator());
  coordinator_argv_ = plain;
  StartCoordinator();
  ASSERT_TRUE(WaitForWorkers(2)) << coordinator_->Log();
  auto watch = Cli({"watch", "1"});
  EXPECT_EQ(watch.exit_code, 0) << watch.err << coordinator_->Log();
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'completed' AND "
                   "attempts = 1"),
            1)
      << Cli({"query",
              "SELECT printf('%.2f', at - (SELECT min(at) FROM events)), kind, "
              "worker_id, message FROM events"})
             .out
      << coordinator_->Log() << workers_[0]->Log() << workers_[1]->Log();
  ExpectEveryStepOnce("1", 2000);
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics WHERE name = 'val_accuracy'"),
            4);
  EXPECT_EQ(IntegrityProblems(), 0);
}

// Workers keep older checkpoints for as long as a backup may be old.
class RestoreE2ETest : public SharedCheckpointE2ETest {
 protected:
  std::vector<std::string> CoordinatorFlags() const override {
    auto flags = SharedCheckpointE2ETest::CoordinatorFlags();
    flags.insert(flags.end(), {"--keep-checkpoints-for", "600"});
    return flags;
  }
};

// A backup taken while the coordinator serves, mid-trial; the trial goes on
// (newer checkpoints, more points), then the coordinator's machine is lost.
// Restored from the backup, the coordinator requeues the trial, the worker
// that ran it hears its lease is void, and the retry resumes from a
// checkpoint at or before the backup's last stored step (not a newer one,
// whose points the backup lacks): every step ends up stored once.
TEST_F(RestoreE2ETest, ABackupTakenMidTrialRestoresAndTheTrialResumesFromIt) {
  ASSERT_NO_FATAL_FAILURE(SubmitALongTrialAndWaitForACheckpoint());
  const std::string backup = dir_.File("backup.db");
  auto taken = RunCommand(
      {MEGABATCH_COORDINATOR_BIN, "--db", db_path_, "backup", backup});
  ASSERT_EQ(taken.exit_code, 0) << taken.err;
  auto backup_db = store::Db::OpenReadOnly(backup);
  ASSERT_OK(backup_db);
  auto q =
      (*backup_db)
          ->Prepare("SELECT max(step) FROM metrics WHERE name = 'train_loss'");
  ASSERT_TRUE(q.ok() && *q->Step());
  const int64_t backed_up = q->Int(0);
  backup_db->reset();
  ASSERT_GT(backed_up, 0);
  // A worker that joins after the backup: the restored database never
  // heard of it.
  auto late = testing::StartWorkers(MEGABATCH_WORKER_BIN, address_,
                                    dir_.path().string(), 1, {}, 2);
  ASSERT_TRUE(WaitForWorkers(3));
  // The trial goes on past the backup, committing newer checkpoints.
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        return Scalar(
                   "SELECT max(step) FROM metrics WHERE name = "
                   "'train_loss'") > backed_up + 300;
      },
      std::chrono::seconds(60)));
  // The machine is lost, its database with it.
  coordinator_->Kill(SIGKILL);
  for (const std::string suffix : {"", "-wal", "-shm"}) {
    std::filesystem::rename(db_path_ + suffix, db_path_ + suffix + ".lost");
  }
  auto restored = RunCommand(
      {MEGABATCH_COORDINATOR_BIN, "--db", db_path_, "restore", backup});
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_THAT(restored.err, HasSubstr("1 running trials back in the queue"));
  StartCoordinator();
  ASSERT_TRUE(
      testing::WaitUntil([&] { return Cli({"workers"}).exit_code == 0; },
                         std::chrono::seconds(30)))
      << coordinator_->Log();
  auto watch = Cli({"watch", "1"});
  EXPECT_EQ(watch.exit_code, 0) << watch.err << coordinator_->Log();
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'completed' AND "
                   "attempts = 2"),
            1);
  EXPECT_EQ(Scalar("SELECT count(*) FROM events WHERE kind = "
                   "'database_restored'"),
            1);
  // The late worker registered again, under an id past the gap (its old
  // one may never be given to another).
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        return Scalar(
                   "SELECT count(*) FROM workers WHERE name = 'worker-2' "
                   "AND id > 1000000") == 1;
      },
      std::chrono::seconds(30)))
      << late[0]->Log();
  EXPECT_THAT(late[0]->Log(), HasSubstr("registering again"));
  // The retry (on whichever worker leased it, the late one too) resumed
  // from a checkpoint the backup covers.
  const std::string logs =
      workers_[0]->Log() + workers_[1]->Log() + late[0]->Log();
  const auto at = logs.find("resuming from ");
  ASSERT_NE(at, std::string::npos) << logs;
  const auto step_at = logs.find("/step-", at);
  ASSERT_NE(step_at, std::string::npos);
  const int64_t resumed = std::atoll(logs.c_str() + step_at + 6);
  EXPECT_GT(resumed, 0);
  EXPECT_LE(resumed, backed_up);
  EXPECT_THAT(logs, HasSubstr("the last the coordinator has stored"));
  ExpectEveryStepOnce("1", 3000);
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics WHERE name = 'val_accuracy'"),
            3);
}

// The database and the checkpoints on real, small filesystems (tmpfs mounts
// the test makes; it needs root, and is skipped without): the database's
// fills mid-trial and is enlarged while everything runs; the checkpoints'
// has room for neither a checkpoint nor an attempt's directory.
class SmallFilesystemE2ETest : public SweepE2ETest {
 protected:
  void SetUp() override {
    if (geteuid() != 0 || !std::filesystem::exists("/usr/bin/mount")) {
      GTEST_SKIP() << "mounting a tmpfs needs root and /usr/bin/mount";
    }
    for (const auto& [dir, size] :
         {std::pair<std::string, std::string>{"db-fs", "size=512k"},
          // Room for one directory (the trial's), not for its attempt's.
          {"checkpoint-fs", "size=64k,nr_inodes=2"}}) {
      std::filesystem::create_directories(dir_.File(dir));
      auto mounted = RunCommand({"/usr/bin/mount", "-t", "tmpfs", "-o", size,
                                 "tmpfs", dir_.File(dir)});
      if (mounted.exit_code != 0) {
        GTEST_SKIP() << "cannot mount a tmpfs (not root?): " << mounted.err;
      }
      mounts_.push_back(dir_.File(dir));
    }
    SweepE2ETest::SetUp();
  }
  void TearDown() override {
    coordinator_.reset();
    workers_.clear();
    for (const auto& m : mounts_) RunCommand({"/usr/bin/umount", "-l", m});
  }
  std::string DatabaseFile() const override { return "db-fs/megabatch.db"; }
  std::vector<std::string> CoordinatorFlags() const override {
    return {"--artifacts", dir_.File("checkpoint-fs")};
  }
  std::vector<std::string> mounts_;
};

TEST_F(SmallFilesystemE2ETest, FullDisksLoseNothingAndTheTrialCompletes) {
  ASSERT_NO_FATAL_FAILURE(StopCoordinator());
  const int metrics_port = PinMetricsPort();
  StartCoordinator();
  ASSERT_TRUE(WaitForWorkers(2)) << coordinator_->Log();
  std::string spec = WriteSpec("small.yaml", R"yaml(
name: small-disks
model: {type: mlp, hidden: [64]}
optimizers: [{name: lamb}]
batch_sizes: [256]
base: {lr: 0.01}
budget: {steps: 3000}
eval_every_steps: 1000
checkpoint_every_steps: 100
)yaml");
  auto submitted = Cli({"submit", spec});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  // The database's filesystem fills: reports are refused, retryably.
  ASSERT_TRUE(
      testing::WaitUntil([&] { return ReportsRefusedAsFull(metrics_port); },
                         std::chrono::seconds(120)))
      << coordinator_->Log();
  // Room again, while everything runs.
  auto grown = RunCommand({"/usr/bin/mount", "-o", "remount,size=64m", "tmpfs",
                           dir_.File("db-fs")});
  ASSERT_EQ(grown.exit_code, 0) << grown.err;
  auto watch = Cli({"watch", "1"});
  EXPECT_EQ(watch.exit_code, 0) << watch.err << coordinator_->Log();
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'completed' AND "
                   "attempts = 1"),
            1)
      << workers_[0]->Log() << workers_[1]->Log();
  ExpectEveryStepOnce("1", 3000);
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics WHERE name = 'val_accuracy'"),
            3);
  // Not even the attempt's checkpoint directory fitted: the worker said so
  // and ran the trial anyway; each checkpoint (every 100 steps before the
  // last) failed, was recorded, and training went on.
  EXPECT_THAT(workers_[0]->Log() + workers_[1]->Log(),
              HasSubstr("training without checkpoints"));
  EXPECT_EQ(Scalar("SELECT count(*) FROM metrics WHERE name = "
                   "'checkpoint_failed'"),
            29);
  EXPECT_EQ(IntegrityProblems(), 0);
}

TEST_F(SharedCheckpointE2ETest, ATwoRankTrialOnTwoWorkersTrainsLikeOneRank) {
  // The same trial, global batch 256, once as 2 ranks (one per worker, each
  // 128 per step) and once on one rank (two micro-batches of 128).
  const std::string body = R"yaml(
model: {type: mlp, hidden: [64]}
optimizers: [{name: lamb, weight_decay: 0.01}]
batch_sizes: [256]
micro_batch_size: 128
base: {lr: 0.01}
budget: {steps: 40}
eval_every_steps: 20
)yaml";
  auto two =
      Cli({"submit",
           WriteSpec("two.yaml", "name: two-ranks\nranks_per_trial: 2" + body),
           "--wait"});
  ASSERT_EQ(two.exit_code, 0)
      << two.err << coordinator_->Log() << workers_[0]->Log();
  auto one =
      Cli({"submit", WriteSpec("one.yaml", "name: one-rank" + body), "--wait"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  // The two-rank trial ran on both workers at once, rank 1 on the other.
  EXPECT_EQ(
      Scalar(
          "SELECT count(*) FROM trial_ranks r JOIN trials t ON t.id = "
          "r.trial_id "
          "WHERE t.sweep_id = 1 AND r.rank = 1 AND r.worker_id != t.worker_id"),
      1);
  EXPECT_EQ(Scalar("SELECT count(*) FROM events WHERE kind = 'trial_leased' "
                   "AND message LIKE '%as 2 ranks on workers%'"),
            1);
  // Rank 0 alone reported: every step once, and the same values as one rank.
  ExpectEveryStepOnce("trial_id = 1", 40);
  EXPECT_EQ(
      Scalar("SELECT count(*) FROM metrics a JOIN metrics b ON b.trial_id = 2 "
             "AND b.name = a.name AND b.step = a.step WHERE a.trial_id = 1 "
             "AND a.name IN ('train_loss', 'grad_norm', 'val_accuracy', "
             "'val_loss')"),
      40 * 2 + 2 * 2);
  EXPECT_EQ(
      Scalar("SELECT count(*) FROM metrics a JOIN metrics b ON b.trial_id = 2 "
             "AND b.name = a.name AND b.step = a.step WHERE a.trial_id = 1 "
             "AND a.name IN ('train_loss', 'grad_norm', 'val_accuracy', "
             "'val_loss') "
             "AND abs(a.value - b.value) > 1e-5 * max(1, abs(b.value))"),
      0);
  EXPECT_GT(Scalar("SELECT count(*) FROM metrics WHERE trial_id = 1 AND name = "
                   "'allreduce_seconds'"),
            0);
}

TEST_F(SharedCheckpointE2ETest,
       KillingOneRanksWorkerGetsTheTrialResumedOnOthers) {
  // A third worker, so that two remain after one is killed.
  workers_.push_back(std::move(testing::StartWorkers(
      MEGABATCH_WORKER_BIN, address_, dir_.path().string(), 1, WorkerFlags(),
      /*first=*/2)[0]));
  ASSERT_TRUE(WaitForWorkers(3));
  std::string spec = WriteSpec("dp-resume.yaml", R"yaml(
name: dp-resume
model: {type: mlp, hidden: [128]}
optimizers: [{name: lamb}]
batch_sizes: [256]
base: {lr: 0.01}
budget: {steps: 2000}
eval_every_steps: 1000
checkpoint_every_steps: 20
max_retries: 3
ranks_per_trial: 2
)yaml");
  ASSERT_EQ(Cli({"submit", spec}).exit_code, 0);
  ASSERT_TRUE(testing::WaitUntil(
      [&] { return !Committed(dir_.File("artifacts/trial-1")).empty(); },
      std::chrono::seconds(120)))
      << coordinator_->Log();
  // Kill the worker running rank 1, daemon and trainer alike.
  const int victim = static_cast<int>(
      Scalar("SELECT CAST(substr(w.name, 8) AS INTEGER) FROM trial_ranks r "
             "JOIN workers w ON w.id = r.worker_id WHERE r.trial_id = 1 AND "
             "r.rank = 1"));
  ASSERT_TRUE(victim >= 0 && victim <= 2);
  KillWorker(victim);
  auto watch = Cli({"watch", "1"});
  EXPECT_EQ(watch.exit_code, 0) << watch.err << coordinator_->Log();
  EXPECT_GE(Scalar("SELECT attempts FROM trials WHERE id = 1"), 2);
  EXPECT_EQ(Scalar("SELECT state = 'completed' FROM trials WHERE id = 1"), 1);
  // Resumed from a checkpoint, not from scratch; every step exactly once.
  EXPECT_GE(Scalar("SELECT count(*) FROM events WHERE kind = 'trial_leased'"),
            2);
  const std::string resumed =
      "resuming from " + dir_.File("artifacts/trial-1/lease-");
  EXPECT_TRUE(std::any_of(workers_.begin(), workers_.end(), [&](const auto& w) {
    return w->Log().find(resumed) != std::string::npos;
  }));
  ExpectEveryStepOnce("trial_id = 1", 2000);
  // No rank was left hanging: all trainers are gone.
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        return testing::FindProcesses("--serve --work-dir " +
                                      dir_.path().string())
            .empty();
      },
      std::chrono::seconds(10)));
}

TEST_F(SweepE2ETest, CoordinatorKilledMidSweepRestartsAndTheSweepCompletes) {
  std::string spec = WriteSpec("restart.yaml", R"yaml(
name: survive-restart
model: {type: mlp, hidden: [128]}
optimizers: [{name: lamb}, {name: adamw}]
batch_sizes: [256]
base: {lr: 0.002}
budget: {steps: 2500}
eval_every_steps: 500
)yaml");
  ASSERT_EQ(Cli({"submit", spec}).exit_code, 0);
  // A watch started before the crash rides it out.
  Process watch({MEGABATCH_CLI_BIN, "--server", address_, "watch", "1"},
                dir_.File("watch.log"));
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        return Scalar(
                   "SELECT count(*) FROM (SELECT trial_id FROM metrics WHERE "
                   "name = 'train_loss' AND step >= 200 GROUP BY trial_id)") ==
               2;
      },
      std::chrono::seconds(120)));
  ASSERT_TRUE(testing::WaitUntil(
      [&] { return watch.Log().find("survive-restart") != std::string::npos; },
      std::chrono::seconds(30)))
      << watch.Log();
  coordinator_->Kill(SIGKILL);
  const double stored_before = Scalar("SELECT count(*) FROM metrics");
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        return watch.Log().find("coordinator unreachable") != std::string::npos;
      },
      std::chrono::seconds(30)))
      << watch.Log();
  StartCoordinator();
  // The watch reconnects and ends with the sweep's real outcome.
  EXPECT_EQ(watch.Wait(std::chrono::seconds(300)), 0)
      << watch.Log() << coordinator_->Log();
  EXPECT_THAT(watch.Log(), HasSubstr("reconnected to the coordinator"));
  EXPECT_THAT(watch.Log(), HasSubstr("completed"));
  // The trials went on under their leases: no retry, nothing lost or doubled.
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'completed' AND "
                   "attempts = 1"),
            2);
  EXPECT_GE(Scalar("SELECT count(*) FROM metrics"), stored_before);
  for (int trial = 1; trial <= 2; ++trial) {
    ExpectEveryStepOnce("trial_id = " + std::to_string(trial), 2500);
  }
  EXPECT_EQ(Scalar("SELECT count(*) FROM events WHERE kind = 'trial_leased'"),
            2);
}

// An adaptive study through the real system: the probe, the batch sizes it
// places, the lr searches and the finish runs, each planned as results
// arrive. A kill -9 of the coordinator mid-plan loses and repeats nothing
// (the plan is made in the transaction that stores each result); watch
// shows the phase; the report carries the fit, the probe's prediction and
// every decision.
TEST_F(SweepE2ETest, AnAdaptiveStudyPlansItselfAndSurvivesACoordinatorKill) {
  std::string spec = WriteSpec("adaptive.yaml", R"yaml(
name: adaptive
model: {type: mlp, hidden: [64]}
optimizers: [{name: adamw}]
base: {batch_size: 64, lr: 0.002}
strategy: {type: adaptive, max_batch_size: 2048, batch_sizes: 4, lr_trials_per_batch: 4,
           search_fraction: 0.25}
target: {metric: val_accuracy, value: 0.75}
budget: {epochs: 2}
eval_every_samples: 4096
)yaml");
  auto submit = Cli({"submit", spec});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  Process watch({MEGABATCH_CLI_BIN, "--server", address_, "watch", "1"},
                dir_.File("watch.log"));
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        return Scalar(
                   "SELECT count(*) FROM trials WHERE phase = 'search' AND "
                   "state IN ('completed', 'diverged')") >= 3 &&
               Scalar(
                   "SELECT count(*) FROM trials WHERE state IN ('queued', "
                   "'running')") > 0;
      },
      std::chrono::seconds(180)))
      << coordinator_->Log();
  coordinator_->Kill(SIGKILL);
  EXPECT_THAT(watch.Log(), HasSubstr("adaptive phase"));
  const double killed_at = Scalar("SELECT max(at) FROM events");
  StartCoordinator();
  EXPECT_EQ(watch.Wait(kSweepTimeout), 0) << watch.Log() << coordinator_->Log();
  EXPECT_THAT(watch.Log(), HasSubstr("adaptive phase done"));

  EXPECT_EQ(Scalar("SELECT count(*) FROM sweeps WHERE state = 'completed'"), 1);
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state NOT IN "
                   "('completed', 'diverged')"),
            0);
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE phase = 'probe'"), 1);
  // No trial planned twice, across the restart.
  EXPECT_EQ(Scalar("SELECT count(*) FROM (SELECT count(*) AS n FROM trials "
                   "GROUP BY phase, batch_size, lr, seed HAVING n > 1)"),
            0);
  // At most lr_trials_per_batch lrs searched at each batch size (the probe
  // is the base batch's first).
  EXPECT_LE(Scalar("SELECT max(n) FROM (SELECT count(*) AS n FROM trials "
                   "WHERE phase IN ('probe', 'search') GROUP BY batch_size)"),
            4);
  EXPECT_EQ(Scalar("SELECT count(DISTINCT batch_size) FROM trials WHERE phase "
                   "= 'search'"),
            4);
  // The best two lrs of each batch size's search go the whole way, each a
  // searched lr.
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE phase = 'finish'"), 8);
  EXPECT_EQ(Scalar("SELECT count(DISTINCT batch_size || '/' || lr) FROM trials "
                   "WHERE phase = 'finish'"),
            8);
  EXPECT_EQ(
      Scalar(
          "SELECT count(*) FROM trials f WHERE phase = 'finish' AND NOT EXISTS "
          "(SELECT 1 FROM trials s WHERE s.phase IN ('probe', 'search') AND "
          "s.batch_size = f.batch_size AND s.lr = f.lr)"),
      0);
  // The planner carried on after the restart, and said when it was done.
  EXPECT_GE(Scalar("SELECT count(*) FROM events WHERE kind = 'plan' AND at > " +
                   std::to_string(killed_at)),
            1);
  EXPECT_EQ(Scalar("SELECT count(*) FROM events WHERE kind = 'plan' AND "
                   "message LIKE 'done:%'"),
            1);

  auto report = Cli({"-o", "json", "report", "1"});
  ASSERT_EQ(report.exit_code, 0) << report.err;
  auto j = nlohmann::json::parse(report.out);
  EXPECT_TRUE(j["predicted_b_crit"].is_number()) << report.out;
  ASSERT_GE(j["plan"].size(), 6u);
  EXPECT_THAT(j["plan"][0].get<std::string>(), HasSubstr("probe"));
  EXPECT_THAT(j["plan"][1].get<std::string>(),
              HasSubstr("place: predicted B_crit"));
  // The report's rows are the finish runs only (search runs train a
  // fraction of the budget): two lrs per batch size.
  ASSERT_EQ(j["rows"].size(), 4u);
  for (const auto& row : j["rows"]) EXPECT_EQ(row["lrs_tried"], 2);
  EXPECT_TRUE(j["critical_batch"][0]["b_crit"].is_number()) << report.out;
  auto text = Cli({"report", "1"});
  EXPECT_THAT(text.out, HasSubstr("Adaptive plan (phase done)"));
  EXPECT_THAT(text.out, HasSubstr("The probe predicted B_crit"));
  auto trials = Cli({"trials", "1"});
  EXPECT_THAT(trials.out, HasSubstr("finish"));
}

// TLS with a CA made in the test, token authentication on, tokens made with
// the coordinator's own `token create`.
class SecuredE2ETest : public SweepE2ETest {
 protected:
  void SetUp() override {
    testing::MakeCertificates(dir_.path());
    if (HasFatalFailure()) return;
    // --db before the subcommand and after it: users type both.
    ASSERT_NO_FATAL_FAILURE(
        CreateToken("worker", "rack-1", "worker.token", false));
    ASSERT_NO_FATAL_FAILURE(CreateToken("user", "alice", "alice.token", true));
    SweepE2ETest::SetUp();
  }

  void CreateToken(const std::string& role, const std::string& name,
                   const std::string& file, bool db_last) {
    std::vector<std::string> args = {MEGABATCH_COORDINATOR_BIN,
                                     "token",
                                     "create",
                                     "--role",
                                     role,
                                     "--name",
                                     name};
    const std::vector<std::string> db = {"--db", dir_.File("megabatch.db")};
    args.insert(db_last ? args.end() : args.begin() + 1, db.begin(), db.end());
    auto r = RunCommand(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_THAT(r.err, HasSubstr("not shown again"));
    std::ofstream(dir_.File(file)) << r.out;
  }

  std::vector<std::string> CoordinatorFlags() const override {
    return {"--auth-file", dir_.File("admin.token"),
            "--tls-cert",  dir_.File("server.pem"),
            "--tls-key",   dir_.File("server.key")};
  }
  std::vector<std::string> WorkerFlags() const override {
    return {"--token-file", dir_.File("worker.token"), "--tls-ca",
            dir_.File("ca.pem")};
  }
  std::vector<std::string> CliFlags() const override {
    return {"--token-file", dir_.File("alice.token"), "--tls-ca",
            dir_.File("ca.pem")};
  }
};

TEST_F(SecuredE2ETest, ASweepRunsOverTlsWithTokensAndEachRoleStaysInItsLane) {
  std::string spec = WriteSpec("secured.yaml", R"yaml(
name: secured
model: {type: mlp, hidden: [32]}
optimizers: [{name: sgd}]
batch_sizes: [256, 512]
base: {lr: 0.05}
budget: {steps: 20}
)yaml");
  auto submit = Cli({"submit", spec, "--wait"});
  ASSERT_EQ(submit.exit_code, 0) << submit.err << coordinator_->Log();
  EXPECT_EQ(Scalar("SELECT count(*) FROM trials WHERE state = 'completed'"), 2);
  EXPECT_EQ(Scalar("SELECT count(*) FROM sweeps WHERE owner = 'alice'"), 1);
  // A worker token cannot use the CLI's service; no token, no service.
  const std::string ca = dir_.File("ca.pem");
  auto as_worker = CliWith(
      {"--token-file", dir_.File("worker.token"), "--tls-ca", ca}, {"list"});
  EXPECT_EQ(as_worker.exit_code, 1);
  EXPECT_THAT(as_worker.err, HasSubstr("PERMISSION_DENIED"));
  auto anonymous = CliWith({"--tls-ca", ca}, {"list"});
  EXPECT_EQ(anonymous.exit_code, 1);
  EXPECT_THAT(anonymous.err, HasSubstr("UNAUTHENTICATED"));
  // Plaintext does not reach a TLS coordinator.
  auto plain = CliWith({"--token-file", dir_.File("alice.token")}, {"list"});
  EXPECT_EQ(plain.exit_code, 1);
  // Revoked: refused at the next call.
  auto revoke = RunCommand(
      {MEGABATCH_COORDINATOR_BIN, "--db", db_path_, "token", "revoke", "2"});
  ASSERT_EQ(revoke.exit_code, 0) << revoke.err;
  auto revoked = Cli({"list"});
  EXPECT_EQ(revoked.exit_code, 1);
  EXPECT_THAT(revoked.err, HasSubstr("revoked"));
}

// 1,000 reflection streams opened without a token held 1,016 coordinator
// threads: with authentication on, only health answers without a token.
TEST_F(SecuredE2ETest, WithoutATokenOnlyHealthAnswers) {
  ChannelOptions o;
  o.tls_ca_file = dir_.File("ca.pem");
  auto channel = MakeChannel(address_, o);
  ASSERT_OK(channel);
  // One empty request to `method`, as a unary call; its status.
  auto call = [&](const std::string& method) {
    grpc::GenericStub stub(*channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
    grpc::Slice empty("");
    grpc::ByteBuffer request(&empty, 1), response;
    std::promise<grpc::Status> done;
    stub.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response,
                   [&](grpc::Status s) { done.set_value(s); });
    return done.get_future().get();
  };
  EXPECT_EQ(call("/grpc.health.v1.Health/Check").error_code(),
            grpc::StatusCode::OK);
  EXPECT_EQ(
      call("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
          .error_code(),
      grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(call("/megabatch.v1.SweepService/ListSweeps").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace megabatch
