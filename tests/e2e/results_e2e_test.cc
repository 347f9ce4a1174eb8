// `megabatch query`, `report` and `export` as a user runs them: the real CLI
// against a real coordinator on the fixture database (known numbers, see
// tests/testing/report_fixture.cc).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/testing/process.h"
#include "tests/testing/report_fixture.h"
#include "tests/testing/temp_dir.h"

namespace megabatch {
namespace {

using ::testing::HasSubstr;
using testing::Process;
using testing::RunCommand;

class ResultsE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    sweep_ = testing::BuildReportFixture(db_path_);
    ASSERT_GT(sweep_, 0);
    address_ = "127.0.0.1:" + std::to_string(testing::FreePort());
    coordinator_ = std::make_unique<Process>(
        std::vector<std::string>{MEGABATCH_COORDINATOR_BIN, "--listen",
                                 address_, "--db", db_path_, "--metrics-listen",
                                 "127.0.0.1:0"},
        dir_.File("coordinator.log"));
    ASSERT_TRUE(testing::WaitUntil([&] { return Cli({"list"}).exit_code == 0; },
                                   std::chrono::seconds(30)))
        << coordinator_->Log();
    before_ = testing::DumpDatabase(db_path_);
  }

  testing::CommandResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {MEGABATCH_CLI_BIN, "--server", address_});
    return RunCommand(args);
  }

  testing::TempDir dir_;
  std::string db_path_ = dir_.File("results.db");
  std::string address_;
  int64_t sweep_ = 0;
  std::unique_ptr<Process> coordinator_;
  std::string before_;
};

TEST_F(ResultsE2ETest, ReportInEveryFormatWithAPlot) {
  std::string id = std::to_string(sweep_);
  std::string svg = dir_.File("scaling.svg");
  auto r = Cli({"-o", "json", "report", id, "--plot", svg});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto report = nlohmann::json::parse(r.out);
  // The fixture's spec said test_accuracy: stored as val_accuracy.
  EXPECT_EQ(report["target_metric"], "val_accuracy");
  ASSERT_EQ(report["rows"].size(), 8u);
  EXPECT_EQ(report["rows"][0]["optimizer"], "lamb");
  EXPECT_EQ(report["rows"][0]["best_lr"], 0.02);
  EXPECT_EQ(report["rows"][0]["steps_to_target"], 5000.0);
  EXPECT_TRUE(report["rows"][7]["steps_to_target"].is_null());
  EXPECT_NEAR(report["critical_batch"][0]["b_crit"].get<double>(), 512, 1e-6);
  EXPECT_EQ(report["diverged"].size(), 2u);

  // The SVG is well-formed XML with one steps series and one metric series
  // per optimizer (python3's parser, installed by scripts/install_deps.sh).
  auto parsed = RunCommand(
      {"/usr/bin/python3", "-c",
       "import sys, xml.etree.ElementTree as ET\n"
       "root = ET.parse(sys.argv[1]).getroot()\n"
       "ns = '{http://www.w3.org/2000/svg}'\n"
       "for cls in ('series steps', 'series metric', 'perfect', 'fit'):\n"
       "  print(cls, sorted(p.get('data-optimizer') for p in root.iter(ns + "
       "'polyline')"
       " if p.get('class') == cls))\n",
       svg});
  ASSERT_EQ(parsed.exit_code, 0) << parsed.err;
  EXPECT_EQ(parsed.out,
            "series steps ['adamw', 'lamb']\n"
            "series metric ['adamw', 'lamb']\n"
            "perfect ['adamw', 'lamb']\n"
            "fit ['adamw', 'lamb']\n");

  auto table = Cli({"report", id});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("target val_accuracy >= 0.8"));
  EXPECT_THAT(table.out, HasSubstr("Critical batch size"));
  auto md = Cli({"-o", "md", "report", id});
  ASSERT_EQ(md.exit_code, 0) << md.err;
  EXPECT_THAT(md.out, HasSubstr("| optimizer | batch_size | best_lr |"));
  auto csv = Cli({"-o", "csv", "report", id});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  // A database from before the validation split: no val_* figures; the
  // best target value and the test figures come from its test_* series.
  EXPECT_THAT(csv.out, HasSubstr("lamb,1024,0.01,2,4,2,0.01,,,0.83,0.83,"));
  EXPECT_EQ(std::count(csv.out.begin(), csv.out.end(), '\n'), 9);

  auto missing = Cli({"report", "999"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("NOT_FOUND: sweep 999"));
}

TEST_F(ResultsE2ETest, QueryReadsAndRefusesWritesWithoutChangingTheFile) {
  auto ok = Cli({"-o", "csv", "query",
                 "SELECT optimizer, batch_size, best_lr FROM sweep_scaling "
                 "WHERE optimizer = 'adamw' ORDER BY batch_size"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(
      ok.out,
      "optimizer,batch_size,best_lr\n"
      "adamw,128,0.01\nadamw,256,0.02\nadamw,512,0.01\nadamw,1024,0.01\n");
  for (const char* sql :
       {"DELETE FROM metrics", "DROP TABLE trials",
        "UPDATE sweeps SET name = 'x'", "PRAGMA journal_mode=DELETE",
        "SELECT 1; DELETE FROM metrics"}) {
    auto r = Cli({"query", sql});
    EXPECT_EQ(r.exit_code, 1) << sql;
    EXPECT_THAT(r.err, HasSubstr("megabatch: INVALID_ARGUMENT: query:")) << sql;
  }
  auto runaway =
      Cli({"query", "--timeout-ms", "300",
           "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
           "SELECT count(*) FROM n"});
  EXPECT_EQ(runaway.exit_code, 1);
  EXPECT_THAT(runaway.err,
              HasSubstr("DEADLINE_EXCEEDED: query: stopped by the time cap"));
  auto capped = Cli({"query", "--max-rows", "3", "SELECT * FROM metrics"});
  EXPECT_EQ(capped.exit_code, 0);
  EXPECT_THAT(capped.err, HasSubstr("truncated at 3 rows"));
  EXPECT_EQ(testing::DumpDatabase(db_path_), before_);
}

TEST_F(ResultsE2ETest, ExportStreamsEveryMetricAsCsvOrJsonLines) {
  std::string id = std::to_string(sweep_);
  auto csv = Cli({"export", id});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  std::istringstream lines(csv.out);
  std::string header, line;
  std::getline(lines, header);
  EXPECT_EQ(
      header,
      "trial_id,optimizer,batch_size,lr,seed,name,step,value,recorded_at");
  int rows = 0;
  while (std::getline(lines, line)) ++rows;
  auto count =
      Cli({"-o", "json", "query", "SELECT count(*) AS n FROM metrics"});
  ASSERT_EQ(count.exit_code, 0) << count.err;
  EXPECT_EQ(rows, nlohmann::json::parse(count.out)[0]["n"].get<int>());
  EXPECT_THAT(csv.err, HasSubstr("exported " + std::to_string(rows)));

  auto jsonl =
      Cli({"-o", "json", "export", id, "--metric", "gradient_noise_scale"});
  ASSERT_EQ(jsonl.exit_code, 0) << jsonl.err;
  std::istringstream json_lines(jsonl.out);
  std::vector<nlohmann::json> values;
  while (std::getline(json_lines, line))
    values.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(values.size(), 4u);  // two trials, two values each
  EXPECT_EQ(values[0]["optimizer"], "lamb");
  EXPECT_EQ(values[0]["batch_size"], 1024);
  EXPECT_EQ(values[0]["name"], "gradient_noise_scale");
  EXPECT_EQ(values[1]["value"], 300.0);

  auto missing = Cli({"export", "999"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("NOT_FOUND"));
}

}  // namespace
}  // namespace megabatch
