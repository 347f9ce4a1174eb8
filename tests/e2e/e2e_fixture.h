// The end-to-end fixture: a real coordinator and real workers (each
// running real trainers) on loopback ports picked at run time, driven by the
// real CLI; assertions read the real SQLite file.
#ifndef MEGABATCH_TESTS_E2E_E2E_FIXTURE_H_
#define MEGABATCH_TESTS_E2E_E2E_FIXTURE_H_

#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/metric_catalog.h"
#include "server/store/db.h"
#include "tests/testing/http.h"
#include "tests/testing/process.h"
#include "tests/testing/temp_dir.h"

namespace megabatch {

constexpr auto kSweepTimeout = std::chrono::seconds(300);

class SweepE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    address_ = "127.0.0.1:" + std::to_string(testing::FreePort());
    db_path_ = dir_.File(DatabaseFile());
    coordinator_argv_ = {
        MEGABATCH_COORDINATOR_BIN, "--listen",   address_, "--db", db_path_,
        "--metrics-listen",        "127.0.0.1:0"};
    for (const auto& flag : CoordinatorFlags())
      coordinator_argv_.push_back(flag);
    StartCoordinator();
    workers_ = testing::StartWorkers(MEGABATCH_WORKER_BIN, address_,
                                     dir_.path().string(), WorkerCount(),
                                     WorkerFlags());
    ASSERT_TRUE(WaitForWorkers(WorkerCount())) << coordinator_->Log();
  }

  // Every metric name any process wrote is in common/metric_catalog.h.
  void TearDown() override {
    std::error_code ec;
    if (!std::filesystem::exists(db_path_, ec)) return;
    auto db = store::Db::Open(db_path_);
    if (!db.ok()) return;  // a test that broke its database on purpose
    auto q = (*db)->Prepare("SELECT DISTINCT name FROM metrics");
    if (!q.ok()) return;
    while (true) {
      auto row = q->Step();
      if (!row.ok() || !*row) break;
      if (fake_trainer_metrics_.count(q->Text(0)) != 0) continue;
      EXPECT_NE(FindMetricInfo(q->Text(0)), nullptr)
          << "a process wrote the metric '" << q->Text(0)
          << "', which common/metric_catalog.h lacks";
    }
  }

  // True once `n` workers are registered (bounded wait).
  bool WaitForWorkers(size_t n) {
    return testing::WaitUntil(
        [&] {
          auto r = Cli({"-o", "json", "workers"});
          return r.exit_code == 0 && nlohmann::json::parse(r.out).size() == n;
        },
        std::chrono::seconds(30));
  }

  // kill -9 worker-I and the trainers it started.
  void KillWorker(int i) {
    for (pid_t trainer :
         testing::FindProcesses("--serve --work-dir " +
                                dir_.File("worker-" + std::to_string(i)))) {
      kill(trainer, SIGKILL);
    }
    workers_[i]->Kill(SIGKILL);
  }

  // Stops the coordinator with SIGTERM (it drains and closes its database)
  // and waits for it to exit.
  void StopCoordinator() {
    coordinator_->Kill(SIGTERM);
    ASSERT_GE(coordinator_->Wait(std::chrono::seconds(30)), 0);
  }
  // The next StartCoordinator() serves /metrics on the free port returned,
  // not on any port, so that the test can read it.
  int PinMetricsPort() {
    const int port = testing::FreePort();
    for (std::string& arg : coordinator_argv_) {
      if (arg == "127.0.0.1:0") arg = "127.0.0.1:" + std::to_string(port);
    }
    return port;
  }
  // True once the coordinator (on `metrics_port`) has refused a
  // ReportMetrics because its database was full.
  static bool ReportsRefusedAsFull(int metrics_port) {
    return testing::HttpGet(metrics_port, "/metrics")
               .body.find(
                   "megabatch_rpcs_total{code=\"RESOURCE_EXHAUSTED\","
                   "method=\"ReportMetrics\"}") != std::string::npos;
  }
  // How many problems PRAGMA integrity_check finds in the database (0: ok).
  double IntegrityProblems() {
    return Scalar(
        "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check "
        "<> 'ok'");
  }

  // How many workers SetUp starts.
  virtual int WorkerCount() const { return 2; }
  // The coordinator's database, relative to the test's directory.
  virtual std::string DatabaseFile() const { return "megabatch.db"; }
  // Flags a test's fixture adds to the coordinator's, workers' and CLI's
  // command lines.
  // Specs may name data, and workers read it, under Debian's roots and the
  // test's data/.
  virtual std::vector<std::string> CoordinatorFlags() const {
    return DataRootFlags();
  }
  virtual std::vector<std::string> WorkerFlags() const {
    return DataRootFlags();
  }
  std::string DataDir() const { return dir_.File("data"); }
  std::vector<std::string> DataRootFlags() const {
    return {"--data-root", "/usr/share/datasets",
            "--data-root", "/usr/share/games/fortunes",
            "--data-root", DataDir()};
  }
  virtual std::vector<std::string> CliFlags() const { return {}; }

  // (Re)starts the coordinator with the same command line (same address and
  // database); its log is appended to.
  void StartCoordinator() {
    coordinator_ = std::make_unique<testing::Process>(
        coordinator_argv_, dir_.File("coordinator.log"));
  }

  // The committed-checkpoint markers workers left under `root` (a trial's
  // checkpoint directory), any attempt: a retry resumes from one of these.
  static std::vector<std::string> Committed(const std::string& root) {
    std::vector<std::string> found;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
         !ec && it != std::filesystem::recursive_directory_iterator();
         it.increment(ec)) {
      if (it->path().filename() == "committed")
        found.push_back(it->path().string());
    }
    return found;
  }

  testing::CommandResult Cli(std::vector<std::string> args) {
    return CliWith(CliFlags(), std::move(args));
  }
  testing::CommandResult CliWith(std::vector<std::string> flags,
                                 std::vector<std::string> args) {
    flags.insert(flags.begin(), {MEGABATCH_CLI_BIN, "--server", address_});
    flags.insert(flags.end(), args.begin(), args.end());
    return testing::RunCommand(flags);
  }

  std::string WriteSpec(const std::string& name, const std::string& text) {
    std::string path = dir_.File(name);
    std::ofstream(path) << text;
    return path;
  }

  // Steps 1..`steps` each have exactly one train_loss row, and there are no
  // others, among the metrics `filter` (an SQL condition) selects.
  void ExpectEveryStepOnce(const std::string& filter, int steps) {
    const std::string rows =
        "FROM metrics WHERE name = 'train_loss' AND " + filter;
    EXPECT_EQ(Scalar("SELECT count(*) " + rows), steps) << filter;
    EXPECT_EQ(Scalar("SELECT count(DISTINCT step) " + rows +
                     " AND step BETWEEN 1 AND " + std::to_string(steps)),
              steps)
        << filter;
  }

  // Runs one query returning a single integer or real.
  double Scalar(const std::string& sql) {
    auto db = store::Db::Open(db_path_);
    EXPECT_TRUE(db.ok());
    auto q = (*db)->Prepare(sql);
    EXPECT_TRUE(q.ok()) << q.status().ToString();
    auto row = q->Step();
    EXPECT_TRUE(row.ok() && *row) << sql;
    return q->Double(0);
  }

  testing::TempDir dir_;
  // What a test's stand-in trainer (a shell script) writes besides the
  // catalog's names.
  std::set<std::string> fake_trainer_metrics_;
  std::string address_, db_path_;
  std::vector<std::string> coordinator_argv_;
  std::unique_ptr<testing::Process> coordinator_;
  std::vector<std::unique_ptr<testing::Process>> workers_;
};

}  // namespace megabatch

#endif  // MEGABATCH_TESTS_E2E_E2E_FIXTURE_H_
