#include <gtest/gtest.h>

#include <cmath>

#include "common/trainer_protocol.h"
#include "tests/testing/status_matchers.h"
#include "worker/daemon/line_reader.h"
#include "worker/daemon/worker.h"

namespace megabatch::worker {
namespace {

TEST(TrainerLineTest, MetricsLineBecomesPoints) {
  auto line = ParseTrainerLine(
      R"({"step": 7, "metrics": {"train_loss": 0.5, "lr": null}})");
  ASSERT_OK(line);
  ASSERT_EQ(line->points.size(), 2u);
  EXPECT_EQ(line->points[0].name(), "lr");
  EXPECT_TRUE(std::isnan(line->points[0].value()));
  EXPECT_EQ(line->points[1].step(), 7);
  EXPECT_DOUBLE_EQ(line->points[1].value(), 0.5);
}

TEST(TrainerLineTest, EventLine) {
  auto line = ParseTrainerLine(R"({"event": "diverged", "message": "nan"})");
  ASSERT_OK(line);
  EXPECT_EQ(line->event, "diverged");
  EXPECT_EQ(line->message, "nan");
}

TEST(TrainerLineTest, CheckpointEventCarriesItsStepAndFile) {
  auto line = ParseTrainerLine(
      R"({"event": "checkpoint", "step": 120, "path": "/a/lease-2/step-120.pt"})");
  ASSERT_OK(line);
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

TEST(TrainerLineTest, WhatTheTrainerWritesTheWorkerReadsBack) {
  // Both sides use common/trainer_protocol.h: a round trip keeps everything.
  const std::vector<std::pair<std::string, double>> metrics = {
      {"train_loss", 0.25}, {"grad_norm", INFINITY}};
  auto line = ParseTrainerLine(protocol::MetricsLine(9, metrics));
  ASSERT_OK(line);
  ASSERT_EQ(line->points.size(), 2u);
  EXPECT_EQ(line->points[0].name(), "grad_norm");
  EXPECT_TRUE(
      std::isnan(line->points[0].value()));  // non-finite travels as null
  EXPECT_EQ(line->points[1].value(), 0.25);
  EXPECT_EQ(line->points[1].step(), 9);
  auto checkpoint =
      ParseTrainerLine(protocol::CheckpointLine(9, "/ck/step-9.pt"));
  ASSERT_OK(checkpoint);
  EXPECT_EQ(checkpoint->event, protocol::kCheckpoint);
  EXPECT_EQ(checkpoint->checkpoint_step, 9);
  EXPECT_EQ(checkpoint->checkpoint_path, "/ck/step-9.pt");
  auto end =
      ParseTrainerLine(protocol::EventLine(protocol::kDiverged, "loss is nan"));
  ASSERT_OK(end);
  EXPECT_EQ(end->event, protocol::kDiverged);
  EXPECT_EQ(end->message, "loss is nan");
  auto request =
      protocol::ParseServeRequest(protocol::ServeRequest("t.json", ""));
  ASSERT_OK(request);
  EXPECT_EQ(request->config, "t.json");
  EXPECT_EQ(request->resume, "");
  EXPECT_EQ(protocol::ParseServeRequest(R"({"resume": "x"})").status().code(),
            StatusCode::kInvalidArgument);
}

TEST(LineReaderTest, APartialLineWaitsForItsEndAcrossReads) {
  LineReader reader;
  std::string line;
  reader.Append("{\"a\"");
  EXPECT_FALSE(reader.Next(&line));
  EXPECT_EQ(reader.pending_bytes(), 4u);
  reader.Append(": 1}\n\n{\"b\": 2}\n{\"c");
  ASSERT_TRUE(reader.Next(&line));
  EXPECT_EQ(line, "{\"a\": 1}");
  ASSERT_TRUE(reader.Next(&line));  // the empty line is skipped
  EXPECT_EQ(line, "{\"b\": 2}");
  EXPECT_FALSE(reader.Next(&line));
  EXPECT_EQ(reader.pending_bytes(), 3u);  // read lines are dropped
  reader.Append("\": 3}\n");
  ASSERT_TRUE(reader.Next(&line));
  EXPECT_EQ(line, "{\"c\": 3}");
}

TEST(LineReaderTest, TheTailKeepsOnlyTheLastBytes) {
  TailBuffer tail(8);
  tail.Append("abc");
  EXPECT_EQ(tail.str(), "abc");
  tail.Append("defghijkl");
  EXPECT_EQ(tail.str(), "efghijkl");
}

}  // namespace
}  // namespace megabatch::worker
