// The report and the sweep_scaling view on the fixture of
// tests/testing/report_fixture.cc, against figures worked out by hand.
#include "server/report/report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/store/read_only.h"
#include "tests/testing/report_fixture.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::report {
namespace {

using ::testing::HasSubstr;

struct Expected {
  const char* optimizer;
  int64_t batch;
  double best_lr;
  std::optional<double> steps;  // mean over the seeds of the best lr
  double accuracy;              // mean best accuracy of the best lr
  std::optional<double> efficiency;
  int trials, diverged;
  std::optional<double> max_stable_lr;
  std::optional<double> noise_scale;
};

// Best lr per (optimizer, batch): fewest mean steps to target where every
// seed reached it, then no divergence, then accuracy. Efficiency E(b) =
// S(b0)·b0 / (S(b)·b) with b0 = 128 for both optimizers.
const Expected kExpected[] = {
    // lamb 128: lr 0.02 seeds 4900 and 5100 beat lr 0.01's 6000.
    {"lamb", 128, 0.02, 5000, 0.85, 1.0, 4, 0, 0.02, {}},
    {"lamb", 256, 0.02, 3000, 0.87, 5000.0 * 128 / (3000 * 256), 4, 0, 0.02, {}},
    {"lamb", 512, 0.02, 2000, 0.88, 5000.0 * 128 / (2000 * 512), 4, 0, 0.02, {}},
    // lr 0.02 diverged on both seeds; the noise scale is the mean of 300, 340.
    {"lamb", 1024, 0.01, 1500, 0.83, 5000.0 * 128 / (1500 * 1024), 4, 2, 0.01, 320},
    {"adamw", 128, 0.01, 4000, 0.84, 1.0, 4, 0, 0.02, {}},
    {"adamw", 256, 0.02, 2600, 0.85, 4000.0 * 128 / (2600 * 256), 4, 0, 0.02, {}},
    // lr 0.02 reached the target on one seed only, so lr 0.01 is best.
    {"adamw", 512, 0.01, 1800, 0.82, 4000.0 * 128 / (1800 * 512), 4, 0, 0.02, {}},
    // Nothing reached the target; lr 0.02 had a divergence, so lr 0.01.
    {"adamw", 1024, 0.01, {}, 0.775, {}, 4, 1, 0.01, {}},
};

class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sweep_ = testing::BuildReportFixture(path_);
    ASSERT_GT(sweep_, 0);
    auto db = store::ReadOnlyDb(path_).Connect();
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(*db);
  }

  ::megabatch::testing::TempDir dir_;
  std::string path_ = dir_.File("fixture.db");
  int64_t sweep_ = 0;
  std::unique_ptr<store::Db> db_;
};

void ExpectNear(const std::optional<double>& actual,
                const std::optional<double>& expected, const std::string& what) {
  ASSERT_EQ(actual.has_value(), expected.has_value()) << what;
  if (expected) EXPECT_NEAR(*actual, *expected, 1e-9 * std::abs(*expected)) << what;
}

TEST_F(ReportTest, EveryFigureEqualsTheHandComputedOne) {
  auto report = BuildReport(*db_, sweep_);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->target_metric, "test_accuracy");
  EXPECT_EQ(report->target_value, 0.8);
  ASSERT_EQ(report->rows.size(), std::size(kExpected));
  for (size_t i = 0; i < std::size(kExpected); ++i) {
    const Expected& e = kExpected[i];
    const ScalingRow& r = report->rows[i];
    std::string what = std::string(e.optimizer) + " b=" + std::to_string(e.batch);
    EXPECT_EQ(r.optimizer, e.optimizer) << what;
    EXPECT_EQ(r.batch_size, e.batch) << what;
    EXPECT_DOUBLE_EQ(r.best_lr, e.best_lr) << what;
    EXPECT_EQ(r.lrs_tried, 2) << what;
    EXPECT_EQ(r.trials, e.trials) << what;
    EXPECT_EQ(r.diverged_trials, e.diverged) << what;
    ExpectNear(r.max_stable_lr, e.max_stable_lr, what + " max_stable_lr");
    ExpectNear(r.steps_to_target, e.steps, what + " steps");
    ExpectNear(r.samples_to_target,
               e.steps ? std::optional<double>(*e.steps * e.batch) : std::nullopt,
               what + " samples");
    ExpectNear(r.seconds_to_target,
               e.steps ? std::optional<double>(*e.steps / 100) : std::nullopt,
               what + " seconds");
    ExpectNear(r.best_test_accuracy, e.accuracy, what + " accuracy");
    ExpectNear(r.best_test_loss, 1 - e.accuracy, what + " loss");
    ExpectNear(r.scaling_efficiency, e.efficiency, what + " efficiency");
    ExpectNear(r.gradient_noise_scale, e.noise_scale, what + " noise scale");
  }

  ASSERT_EQ(report->fits.size(), 2u);
  // lamb: S = 1000·(1 + 512/b) exactly, at all four batch sizes.
  const CriticalBatchFit& lamb = report->fits[0];
  EXPECT_EQ(lamb.optimizer, "lamb");
  EXPECT_EQ(lamb.points, 4);
  ExpectNear(lamb.s_min, 1000.0, "lamb s_min");
  ExpectNear(lamb.b_crit, 512.0, "lamb b_crit");
  EXPECT_NEAR(*lamb.r_squared, 1.0, 1e-12);
  // adamw: (128, 4000), (256, 2600), (512, 1800). With u = 512/b = 4, 2, 1:
  // mean u 7/3, mean S 2800, Suu 14/3, SuS 3400, so S = 1100 + (5100/7)·u,
  // S_min = 1100, B_crit = 512·(5100/7)/1100; residuals -100/7, 300/7,
  // -200/7 against a total sum of squares of 2,480,000.
  const CriticalBatchFit& adamw = report->fits[1];
  EXPECT_EQ(adamw.optimizer, "adamw");
  EXPECT_EQ(adamw.points, 3);
  ExpectNear(adamw.s_min, 1100.0, "adamw s_min");
  ExpectNear(adamw.b_crit, 512.0 * (5100.0 / 7) / 1100, "adamw b_crit");
  ExpectNear(adamw.r_squared, 1 - (140000.0 / 49) / 2480000, "adamw r2");
  EXPECT_TRUE(adamw.note.empty()) << adamw.note;

  ASSERT_EQ(report->diverged.size(), 2u);
  EXPECT_EQ(report->diverged[0].optimizer, "adamw");
  EXPECT_EQ(report->diverged[0].batch_size, 1024);
  EXPECT_DOUBLE_EQ(report->diverged[0].lr, 0.02);
  EXPECT_EQ(report->diverged[0].diverged, 1);
  EXPECT_EQ(report->diverged[0].trials, 2);
  EXPECT_EQ(report->diverged[1].optimizer, "lamb");
  EXPECT_EQ(report->diverged[1].diverged, 2);
}

TEST_F(ReportTest, SweepScalingViewGivesTheReportsNumbers) {
  auto report = BuildReport(*db_, sweep_);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  auto q = db_->Prepare(
      "SELECT optimizer, batch_size, best_lr, steps_to_target, "
      "scaling_efficiency, best_test_accuracy, diverged_trials "
      "FROM sweep_scaling WHERE sweep_id = ? ORDER BY optimizer DESC, batch_size");
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  q->Bind(1, sweep_);
  size_t i = 0;
  ASSERT_TRUE(store::ForEachRow(*q, [&](store::Statement& row) {
                ASSERT_LT(i, report->rows.size());
                const ScalingRow& r = report->rows[i++];
                EXPECT_EQ(row.Text(0), r.optimizer);
                EXPECT_EQ(row.Int(1), r.batch_size);
                EXPECT_EQ(row.Double(2), r.best_lr);
                EXPECT_EQ(row.IsNull(3), !r.steps_to_target.has_value());
                if (r.steps_to_target) EXPECT_EQ(row.Double(3), *r.steps_to_target);
                if (r.scaling_efficiency) EXPECT_EQ(row.Double(4), *r.scaling_efficiency);
                EXPECT_EQ(row.Double(5), *r.best_test_accuracy);
                EXPECT_EQ(row.Int(6), r.diverged_trials);
              }).ok());
  EXPECT_EQ(i, std::size(kExpected));
}

TEST_F(ReportTest, TrialSummaryHasPerTrialTargetFigures) {
  auto q = db_->Prepare(
      "SELECT steps, samples, steps_to_target, samples_to_target, "
      "seconds_to_target, best_test_loss, diverged FROM trial_summary "
      "WHERE optimizer = 'lamb' AND batch_size = 128 AND seed = 1 "
      "AND lr_multiplier = 2");
  ASSERT_TRUE(q.ok());
  ASSERT_TRUE(*q->Step());
  EXPECT_EQ(q->Int(0), 5100);
  EXPECT_EQ(q->Int(1), 5100 * 128);
  EXPECT_EQ(q->Int(2), 5100);
  EXPECT_EQ(q->Double(3), 5100.0 * 128);
  EXPECT_EQ(q->Double(4), 51.0);
  EXPECT_NEAR(q->Double(5), 0.16, 1e-12);
  EXPECT_EQ(q->Int(6), 0);
}

TEST_F(ReportTest, UnknownSweepIsNotFound) {
  auto report = BuildReport(*db_, sweep_ + 1);
  EXPECT_EQ(report.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(report.status().message(), HasSubstr("sweep"));
}

TEST(CriticalBatchFitTest, SaysWhyThereIsNoFit) {
  EXPECT_THAT(FitCriticalBatch({{128, 100}}).note, HasSubstr("2 or more batch sizes"));
  // Steps that do not fall with the batch: past the critical batch size.
  auto flat = FitCriticalBatch({{128, 100}, {256, 110}});
  EXPECT_FALSE(flat.b_crit.has_value());
  EXPECT_THAT(flat.note, HasSubstr("below the smallest batch"));
  // Falling faster than 1/b: S_min would be negative.
  auto steep = FitCriticalBatch({{128, 1000}, {256, 400}});
  EXPECT_FALSE(steep.b_crit.has_value());
  EXPECT_THAT(steep.note, HasSubstr("beyond the largest batch"));
}

}  // namespace
}  // namespace megabatch::report
