#include "worker/trainer/trial_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace megabatch::trainer {
namespace {

using nlohmann::json;

TEST(TrialConfigTest, StepsFromEpochsSamplesAndWarmupEpochs) {
  auto c = ParseTrialConfig(json{{"batch_size", 1000},
                                 {"lr", 0.1},
                                 {"optimizer", {{"name", "sgd"}}},
                                 {"budget", {{"epochs", 2.5}}},
                                 {"schedule", {{"warmup_epochs", 0.5}}}});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(StepsPerEpoch(*c, 60000), 60);
  EXPECT_EQ(TotalSteps(*c, 60000), 150);
  EXPECT_EQ(WarmupSteps(*c, 60000), 30);
  c->budget_epochs.reset();
  c->budget_samples = 2500;
  EXPECT_EQ(TotalSteps(*c, 60000), 3);
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
  bad({{"device", "tpu"}}, "device: unknown device 'tpu'");
  bad({{"precision", "fp8"}}, "precision: unknown precision 'fp8'");
}

}  // namespace
}  // namespace megabatch::trainer
