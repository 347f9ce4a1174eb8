// Steps to target at sub-evaluation resolution (docs/method.md, "Steps to
// target"): a metric series with a known crossing is recovered exactly.
#include "common/selection_metrics.h"

#include <gtest/gtest.h>

#include <vector>

namespace megabatch {
namespace {

// Evaluates a piecewise-linear series on a grid and returns the first
// crossing, as the trainer does evaluation by evaluation.
std::optional<Crossing> FirstCrossing(const std::vector<EvalPoint>& evals,
                                      double target, bool higher_is_better) {
  std::optional<EvalPoint> before;
  for (const EvalPoint& at : evals) {
    auto c = InterpolateCrossing(before, at, target, higher_is_better);
    if (c) return c;
    before = at;
  }
  return std::nullopt;
}

TEST(SelectionMetricsTest, AKnownLinearCrossingIsRecoveredExactly) {
  // Accuracy rises linearly 0.5 -> 0.9 over 0..40,000 samples: it crosses
  // 0.8 at exactly 30,000 samples, between the evaluations at 25,600 and
  // 32,000 (every 6,400 samples, i.e. every 50 steps at batch 128).
  std::vector<EvalPoint> evals;
  for (int k = 0; k <= 6; ++k) {
    const double samples = 6400.0 * k;
    evals.push_back({samples, samples / 1000, 0.5 + 0.4 * samples / 40000});
  }
  auto c = FirstCrossing(evals, 0.8, true);
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(c->interpolated);
  EXPECT_NEAR(c->samples, 30000, 1e-9);
  EXPECT_NEAR(c->seconds, 30, 1e-12);
  EXPECT_EQ(c->lower_samples, 25600);
  EXPECT_EQ(c->upper_samples, 32000);
}

TEST(SelectionMetricsTest, ALossTargetIsCrossedFromAbove) {
  std::vector<EvalPoint> evals = {{0, 0, 2.0}, {1000, 1, 1.0}, {2000, 2, 0.5}};
  auto c = FirstCrossing(evals, 0.75, false);
  ASSERT_TRUE(c.has_value());
  EXPECT_DOUBLE_EQ(c->samples, 1500);
  EXPECT_EQ(c->lower_samples, 1000);
}

TEST(SelectionMetricsTest,
     WithoutAnEarlierEvaluationTheCrossingIsTheEvaluation) {
  auto c = InterpolateCrossing(std::nullopt, {5000, 3, 0.9}, 0.8, true);
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(c->interpolated);
  EXPECT_EQ(c->samples, 5000);
  EXPECT_EQ(c->lower_samples, 0);
}

TEST(SelectionMetricsTest, NoCrossingWhileTheTargetIsNotReached) {
  EXPECT_FALSE(
      InterpolateCrossing(EvalPoint{0, 0, 0.1}, {100, 1, 0.79}, 0.8, true));
  EXPECT_FALSE(
      InterpolateCrossing(EvalPoint{0, 0, 0.1}, {100, 1, NAN}, 0.8, true));
  EXPECT_FALSE(
      InterpolateCrossing(EvalPoint{0, 0, 2.0}, {100, 1, 1.1}, 1.0, false));
}

TEST(SelectionMetricsTest, OldMetricNamesMeanTheValidationMetrics) {
  EXPECT_EQ(CanonicalSelectionMetric("test_accuracy"), "val_accuracy");
  EXPECT_EQ(CanonicalSelectionMetric("test_loss"), "val_loss");
  EXPECT_EQ(CanonicalSelectionMetric("val_bpc"), "val_bpc");
  EXPECT_TRUE(HigherIsBetter("test_accuracy"));
  EXPECT_FALSE(HigherIsBetter("val_bpc"));
  EXPECT_TRUE(HigherIsBetter("val_mlm_accuracy"));
  EXPECT_EQ(FindSelectionMetric("train_loss"), nullptr);
}

}  // namespace
}  // namespace megabatch
