#include <gtest/gtest.h>

#include <cmath>

#include "worker/daemon/worker.h"

namespace megabatch::worker {
namespace {

TEST(TrainerLineTest, MetricsLineBecomesPoints) {
  auto line = ParseTrainerLine(
      R"({"step": 7, "metrics": {"train_loss": 0.5, "lr": null}})");
  ASSERT_TRUE(line.ok()) << line.status().ToString();
  ASSERT_EQ(line->points.size(), 2u);
  EXPECT_EQ(line->points[0].name(), "lr");
  EXPECT_TRUE(std::isnan(line->points[0].value()));
  EXPECT_EQ(line->points[1].step(), 7);
  EXPECT_DOUBLE_EQ(line->points[1].value(), 0.5);
}

TEST(TrainerLineTest, EventLine) {
  auto line = ParseTrainerLine(R"({"event": "diverged", "message": "nan"})");
  ASSERT_TRUE(line.ok());
  EXPECT_EQ(line->event, "diverged");
  EXPECT_EQ(line->message, "nan");
}

TEST(TrainerLineTest, CheckpointEventCarriesItsStepAndFile) {
  auto line = ParseTrainerLine(
      R"({"event": "checkpoint", "step": 120, "path": "/a/lease-2/step-120.pt"})");
  ASSERT_TRUE(line.ok()) << line.status().ToString();
  EXPECT_EQ(line->event, "checkpoint");
  EXPECT_EQ(line->checkpoint_step, 120);
  EXPECT_EQ(line->checkpoint_path, "/a/lease-2/step-120.pt");
  EXPECT_TRUE(line->points.empty());
  EXPECT_FALSE(ParseTrainerLine(R"({"event": "checkpoint", "step": 1})").ok());
}

TEST(TrainerLineTest, GarbageIsInvalid) {
  EXPECT_FALSE(ParseTrainerLine("Segmentation fault").ok());
  EXPECT_FALSE(ParseTrainerLine(R"({"step": "x", "metrics": {}})").ok());
  EXPECT_FALSE(ParseTrainerLine(R"({"step": 1, "metrics": {"a": "b"}})").ok());
}

}  // namespace
}  // namespace megabatch::worker
