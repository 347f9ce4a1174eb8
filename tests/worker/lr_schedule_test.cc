#include "worker/trainer/schedule/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

namespace megabatch::trainer {
namespace {

TEST(LrScheduleTest, LinearWarmupReachesThePeakAtW) {
  LrSchedule s{0.4, 4, 20, Decay::kPoly, 1.0};
  EXPECT_DOUBLE_EQ(s.At(1), 0.1);
  EXPECT_DOUBLE_EQ(s.At(2), 0.2);
  EXPECT_DOUBLE_EQ(s.At(4), 0.4);
}

TEST(LrScheduleTest, PolyDecayStartsAtThePeakAndNeverReachesZero) {
  LrSchedule s{1.0, 10, 110, Decay::kPoly, 2.0};
  EXPECT_DOUBLE_EQ(s.At(10), 1.0);
  EXPECT_DOUBLE_EQ(s.At(11), 1.0);
  EXPECT_NEAR(s.At(12), std::pow(1 - 1.0 / 100, 2.0), 1e-15);
  EXPECT_NEAR(s.At(61), 0.25, 1e-15);
  EXPECT_NEAR(s.At(110), std::pow(1.0 / 100, 2.0), 1e-15);
  EXPECT_GT(s.At(110), 0.0);
}

TEST(LrScheduleTest, CosineDecay) {
  LrSchedule s{2.0, 0, 100, Decay::kCosine, 1.0};
  EXPECT_DOUBLE_EQ(s.At(1), 2.0);
  EXPECT_NEAR(s.At(51), 1.0, 1e-12);
  EXPECT_NEAR(s.At(26), 2.0 * 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-12);
  EXPECT_GT(s.At(100), 0.0);
  EXPECT_NEAR(s.At(100), 2.0 * 0.5 * (1 + std::cos(M_PI * 0.99)), 1e-12);
}

TEST(LrScheduleTest, WarmupFromTheBaseLrRisesLinearlyToThePeak) {
  // Goyal et al. 2017: from the small-batch lr 0.1 to 0.1 x k = 0.8.
  LrSchedule s{0.8, 7, 100, Decay::kConstant, 1.0, 0.1};
  EXPECT_DOUBLE_EQ(s.At(1), 0.2);
  EXPECT_DOUBLE_EQ(s.At(4), 0.5);
  EXPECT_DOUBLE_EQ(s.At(7), 0.8);
  EXPECT_DOUBLE_EQ(s.At(8), 0.8);
}

TEST(LrScheduleTest, ConstantAfterWarmup) {
  LrSchedule s{0.3, 3, 100, Decay::kConstant, 1.0};
  EXPECT_DOUBLE_EQ(s.At(1), 0.1);
  EXPECT_DOUBLE_EQ(s.At(3), 0.3);
  EXPECT_DOUBLE_EQ(s.At(99), 0.3);
}

}  // namespace
}  // namespace megabatch::trainer
