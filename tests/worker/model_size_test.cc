// The coordinator's estimate of a model's parameters (which it holds
// against --max-model-parameters) against the model the trainer builds from
// the same spec: equal for every model type.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

#include "server/spec/sweep_spec.h"
#include "tests/testing/status_matchers.h"
#include "worker/trainer/tasks/task.h"
#include "worker/trainer/trial_config.h"

namespace megabatch {
namespace {

int64_t BuiltParameters(const std::string& spec_text) {
  auto spec = spec::ParseSweepSpec(spec_text);
  EXPECT_OK(spec);
  if (!spec.ok()) return -1;
  nlohmann::json config = spec::ExpandSweep(*spec).front().config;
  config["trial_id"] = 1;
  config["sweep_id"] = 1;
  auto parsed = trainer::ParseTrialConfig(config);
  EXPECT_OK(parsed);
  if (!parsed.ok()) return -1;
  auto task = trainer::MakeTask(*parsed);
  EXPECT_OK(task);
  if (!task.ok()) return -1;
  auto model = (*task)->BuildModel();
  EXPECT_OK(model);
  if (!model.ok()) return -1;
  int64_t n = 0;
  for (const auto& p : (*model)->parameters()) n += p.numel();
  return n;
}

TEST(ModelSizeTest, TheEstimateIsWhatTheTrainerBuilds) {
  ::setenv("MEGABATCH_TOKENIZE", MEGABATCH_TOKENIZE_BIN, 1);
  ::setenv("MEGABATCH_CACHE_DIR", MEGABATCH_TEST_CACHE_DIR, 1);
  const std::string rest =
      "optimizers: [{name: lamb}]\nbatch_sizes: [64]\nbase: {lr: 0.01}\n";
  for (const std::string model :
       {"{type: mlp, hidden: [300, 100]}", "{type: mlp}",
        "{type: cnn, channels: [8, 16], hidden: [32]}",
        "{type: char_lstm, hidden: 64, layers: 2, embedding: 16, seq_len: 32}",
        "{type: tiny_bert, hidden: 64, layers: 2, heads: 2, ffn: 96, "
        "seq_len: 32, vocab_size: 512}",
        "{type: tiny_bert, hidden: 64, layers: 1, heads: 4, seq_len: 16, "
        "vocab_size: 512, bias: false}"}) {
    SCOPED_TRACE(model);
    const std::string text = "name: size\nmodel: " + model + "\n" + rest;
    auto spec = spec::ParseSweepSpec(text);
    ASSERT_OK(spec);
    EXPECT_EQ(spec::EstimateParameters(spec->model), BuiltParameters(text));
  }
  // What no worker can hold: 65,536 wide, eight deep.
  auto huge = spec::ParseSweepSpec(
      "name: huge\nmodel: {type: mlp, hidden: [65536, 65536, 65536, 65536, "
      "65536, 65536, 65536, 65536]}\n" +
      rest);
  ASSERT_OK(huge);
  EXPECT_GT(spec::EstimateParameters(huge->model), int64_t{30000000000});
}

}  // namespace
}  // namespace megabatch
