#include "worker/trainer/trial_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/status_matchers.h"

namespace megabatch::trainer {
namespace {

using nlohmann::json;

TEST(TrialConfigTest, StepsFromEpochsSamplesAndWarmupEpochs) {
  auto c = ParseTrialConfig(json{{"batch_size", 1000},
                                 {"lr", 0.1},
                                 {"optimizer", {{"name", "sgd"}}},
                                 {"budget", {{"epochs", 2.5}}},
                                 {"schedule", {{"warmup_epochs", 0.5}}}});
  ASSERT_OK(c);
  EXPECT_EQ(StepsPerEpoch(*c, 60000), 60);
  EXPECT_EQ(TotalSteps(*c, 60000), 150);
  EXPECT_EQ(WarmupSteps(*c, 60000), 30);
  c->budget_epochs.reset();
  c->budget_samples = 2500;
  EXPECT_EQ(TotalSteps(*c, 60000), 3);
}

TEST(TrialConfigTest, EpochsMeanTheSameSamplesAtEveryBatchSize) {
  // 55,000 samples: floor(n / b) would give 1 step an epoch at b = 32768
  // (drop 40% of it); in samples, 2.5 epochs are ceil(4.196) = 5 steps,
  // 163,840 samples against 137,500 wanted: never fewer, at most one batch
  // more.
  for (int64_t b : {128, 1000, 4096, 32768}) {
    auto c = ParseTrialConfig(json{{"batch_size", b},
                                   {"lr", 0.1},
                                   {"budget", {{"epochs", 2.5}}},
                                   {"schedule", {{"warmup_epochs", 0.5}}}});
    ASSERT_OK(c);
    const int64_t samples = TotalSteps(*c, 55000) * b;
    EXPECT_GE(samples, 137500) << b;
    EXPECT_LT(samples, 137500 + b) << b;
    EXPECT_NEAR(WarmupSteps(*c, 55000) * b, 27500, b) << b;
  }
}

TEST(TrialConfigTest, TargetsReadValidationMetricsAndOldNamesStillParse) {
  auto c = ParseTrialConfig(
      json{{"target", {{"metric", "test_accuracy"}, {"value", 0.8}}}});
  ASSERT_OK(c);
  EXPECT_EQ(c->target_metric, "val_accuracy");
  c = ParseTrialConfig(json{{"target", {{"metric", "val_bpc"}, {"value", 2}}},
                            {"model", {{"type", "char_lstm"}}}});
  ASSERT_OK(c);
  EXPECT_EQ(c->target_metric, "val_bpc");
  auto bad = ParseTrialConfig(
      json{{"target", {{"metric", "train_loss"}, {"value", 1}}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), ::testing::HasSubstr("target.metric"));
}

TEST(TrialConfigTest, BadFieldsAreNamed) {
  auto bad = [](json doc, const std::string& field) {
    auto c = ParseTrialConfig(doc);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(), ::testing::HasSubstr(field));
  };
  bad({{"batch_size", 100}, {"micro_batch_size", 30}}, "micro_batch_size");
  bad({{"lr", -1}}, "lr");
  bad({{"optimizer", {{"name", "adagrad"}}}}, "optimizer.name");
  bad({{"model", {{"type", "vit"}}}}, "model.type");
  bad({{"batch_size", "big"}}, "batch_size");
  bad({{"budget", {{"epochs", 1}, {"steps", 2}}}}, "budget");
  bad({{"device", "tpu"}}, "device: unknown value 'tpu'");
  bad({{"precision", "fp8"}}, "precision: unknown value 'fp8'");
}

}  // namespace
}  // namespace megabatch::trainer
