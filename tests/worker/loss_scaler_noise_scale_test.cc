// The trainer's loss scaler and noise-scale estimator as plain arithmetic,
// without LibTorch (their use in training: trainer_test, noise_scale_test).
#include <gtest/gtest.h>

#include <cmath>

#include "worker/trainer/loss_scaler.h"
#include "worker/trainer/noise_scale.h"

namespace megabatch::trainer {
namespace {

TEST(LossScalerTest, AnOverflowSkipsTheStepAndHalvesTheScale) {
  LossScaler scaler(true);
  EXPECT_EQ(scaler.scale(), 65536.0);
  EXPECT_FALSE(scaler.Update(true));
  EXPECT_EQ(scaler.clean_steps(), 1);
  EXPECT_TRUE(scaler.Update(false));
  EXPECT_EQ(scaler.scale(), 32768.0);
  EXPECT_EQ(scaler.clean_steps(), 0);
}

TEST(LossScalerTest, TheScaleDoublesAfterTwoThousandCleanStepsInARow) {
  LossScaler scaler(true);
  for (int i = 0; i < LossScaler::kGrowthInterval - 1; ++i)
    ASSERT_FALSE(scaler.Update(true));
  EXPECT_EQ(scaler.scale(), 65536.0);
  EXPECT_FALSE(scaler.Update(true));
  EXPECT_EQ(scaler.scale(), 131072.0);
  EXPECT_EQ(scaler.clean_steps(), 0);
  // Restored from a checkpoint, it goes on from there.
  scaler.Restore(1024.0, LossScaler::kGrowthInterval - 1);
  EXPECT_FALSE(scaler.Update(true));
  EXPECT_EQ(scaler.scale(), 2048.0);
}

TEST(LossScalerTest, DisabledItIsOneAndNeverSkips) {
  LossScaler scaler(false);
  EXPECT_EQ(scaler.scale(), 1.0);
  EXPECT_FALSE(scaler.Update(false));
  EXPECT_EQ(scaler.scale(), 1.0);
}

TEST(NoiseScaleEstimatorTest, ExactNormsGiveTheTraceOverTheSquaredGradient) {
  // With E|G_B|^2 = |G|^2 + tr(Sigma)/B: |G|^2 = 4, tr(Sigma) = 64,
  // B_small = 8, B_big = 32 (4 micro-batches): |G_small|^2 = 12, |G_big|^2 = 6.
  NoiseScaleEstimator noise(8, 32, 4, 100);
  EXPECT_FALSE(noise.has_value());
  noise.Add(4 * 12.0, 6.0);
  EXPECT_DOUBLE_EQ(noise.gradient_sq(), 4.0);
  EXPECT_DOUBLE_EQ(noise.trace(), 64.0);
  EXPECT_DOUBLE_EQ(noise.b_simple(), 16.0);
}

TEST(NoiseScaleEstimatorTest, TheEmasAverageOverFivePercentOfTheSteps) {
  NoiseScaleEstimator noise(8, 32, 4, 200);  // alpha = 1 / (0.05 * 200) = 0.1
  noise.Add(4 * 12.0, 6.0);                  // |G|^2 4, tr 64
  noise.Add(4 * 22.0, 16.0);                 // |G|^2 14, tr 64
  EXPECT_DOUBLE_EQ(noise.gradient_sq(), 0.9 * 4.0 + 0.1 * 14.0);
  EXPECT_DOUBLE_EQ(noise.trace(), 64.0);
}

TEST(NoiseScaleEstimatorTest, StepMetricsNameTheBudgetPoints) {
  NoiseScaleEstimator noise(8, 32, 4, 20);
  noise.Add(4 * 12.0, 6.0);
  auto has = [](const std::vector<std::pair<std::string, double>>& m,
                const char* name) {
    for (const auto& [n, v] : m) {
      if (n == name) return true;
    }
    return false;
  };
  EXPECT_TRUE(has(noise.StepMetrics(2), "noise_scale_at_10pct"));
  EXPECT_TRUE(has(noise.StepMetrics(10), "noise_scale_at_50pct"));
  EXPECT_TRUE(has(noise.StepMetrics(20), "noise_scale_at_100pct"));
  const auto plain = noise.StepMetrics(3);
  EXPECT_EQ(plain.size(), 3u);  // the two EMAs and B_simple
  EXPECT_TRUE(has(plain, "gradient_noise_scale"));
  // A non-positive |G|^2 (noise swamping the estimate) logs no B_simple.
  NoiseScaleEstimator swamped(8, 32, 4, 20);
  swamped.Add(4 * 12.0, 2.0);
  EXPECT_FALSE(swamped.has_value());
  EXPECT_EQ(swamped.StepMetrics(3).size(), 2u);
}

}  // namespace
}  // namespace megabatch::trainer
