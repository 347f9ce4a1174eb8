// Helpers for tests of the trainer: a MetricSink that keeps everything, and
// the resume-exactness check.
#ifndef MEGABATCH_TESTS_TESTING_TRAINER_TESTING_H_
#define MEGABATCH_TESTS_TESTING_TRAINER_TESTING_H_

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "worker/trainer/trainer.h"

namespace megabatch::testing {

// Keeps every logged metric, in order.
class RecordingSink : public trainer::MetricSink {
 public:
  void Log(int64_t step, const trainer::Metrics& metrics) override {
    for (const auto& [name, value] : metrics)
      rows.push_back({step, name, value});
  }
  struct Row {
    int64_t step;
    std::string name;
    double value;
  };
  std::vector<Row> rows;

  std::vector<Row> Named(const std::string& name) const {
    std::vector<Row> out;
    for (const auto& r : rows) {
      if (r.name == name) out.push_back(r);
    }
    return out;
  }
};

// Runs `config` (which has checkpoint_path and checkpoint_every_steps) to the
// end, then again from its last checkpoint, on fresh tasks from `make_task`,
// and expects the resumed run to start after `resume_step` and to log every
// later metric (samples_per_second and times aside) and end with parameters
// exactly equal to the uninterrupted run's.
inline void ExpectResumeReproduces(
    const trainer::TrialConfig& config,
    const std::function<std::unique_ptr<trainer::Task>()>& make_task,
    int64_t resume_step) {
  RecordingSink full_sink;
  auto full_task = make_task();
  auto full = trainer::RunTrial(config, *full_task, &full_sink);
  ASSERT_TRUE(full.ok()) << full.status().ToString();

  RecordingSink resumed_sink;
  auto resumed_task = make_task();
  auto resumed = trainer::RunTrial(config, *resumed_task, &resumed_sink,
                                   config.checkpoint_path);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  ASSERT_FALSE(resumed_sink.rows.empty());
  EXPECT_EQ(resumed_sink.rows.front().step, resume_step + 1);
  std::vector<RecordingSink::Row> tail;
  for (const auto& row : full_sink.rows) {
    if (row.step > resume_step) tail.push_back(row);
  }
  ASSERT_EQ(tail.size(), resumed_sink.rows.size());
  for (size_t i = 0; i < tail.size(); ++i) {
    if (tail[i].name == "samples_per_second" ||
        tail[i].name == "target_reached_seconds") {
      continue;
    }
    EXPECT_EQ(tail[i].name, resumed_sink.rows[i].name);
    EXPECT_EQ(tail[i].value, resumed_sink.rows[i].value)
        << tail[i].name << " at step " << tail[i].step;
  }
  ASSERT_EQ(full->parameters.size(), resumed->parameters.size());
  for (size_t i = 0; i < full->parameters.size(); ++i) {
    EXPECT_TRUE(torch::equal(full->parameters[i], resumed->parameters[i]));
  }
}

}  // namespace megabatch::testing

#endif  // MEGABATCH_TESTS_TESTING_TRAINER_TESTING_H_
