#include "server/spec/sweep_spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "common/datasets.h"
#include "tests/testing/shipped_specs.h"
#include "tests/testing/status_matchers.h"

namespace megabatch::spec {
namespace {

using ::testing::HasSubstr;

constexpr const char* kValid = R"yaml(
name: test-sweep
model: {type: mlp, hidden: [64, 32]}
dataset: {name: fashion_mnist}
optimizers: [{name: sgd, momentum: 0.8}, {name: adamw}]
batch_sizes: [128, 512]
base: {batch_size: 128, lr: 0.01}
lr_scaling: sqrt
lr_multipliers: [0.5, 1]
schedule: {warmup_epochs: 1, decay: poly, power: 2}
budget: {epochs: 2.5}
seeds: [0, 1]
)yaml";

// Replaces the first line starting with `key:` in kValid (or appends it).
std::string WithLine(const std::string& key, const std::string& line) {
  std::string spec = kValid;
  size_t pos = spec.find("\n" + key + ":");
  if (pos == std::string::npos) return spec + line + "\n";
  size_t end = spec.find('\n', pos + 1);
  return spec.substr(0, pos + 1) + line + spec.substr(end);
}

void ExpectInvalid(const std::string& spec, const std::string& field,
                   SpecFormat format = SpecFormat::kAuto) {
  auto r = ParseSweepSpec(spec, format);
  ASSERT_FALSE(r.ok()) << "accepted: " << spec;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr(field)) << r.status().message();
}

TEST(SweepSpecTest, ValidYamlParsesWithDefaults) {
  auto r = ParseSweepSpec(kValid);
  ASSERT_OK(r);
  EXPECT_EQ(r->name, "test-sweep");
  ASSERT_EQ(r->optimizers.size(), 2u);
  EXPECT_EQ(r->optimizers[0].options["momentum"], 0.8);
  EXPECT_EQ(r->optimizers[0].options["nesterov"], false);
  EXPECT_EQ(r->optimizers[1].options["weight_decay"], 0.01);
  EXPECT_EQ(r->optimizers[1].options["betas"][1], 0.999);
  EXPECT_EQ(r->dataset["path"], "/usr/share/datasets/fashion-mnist");
  EXPECT_EQ(r->max_retries, 2);
  EXPECT_DOUBLE_EQ(r->budget["epochs"].get<double>(), 2.5);
}

// budget: {until_target: true, max_epochs: E} runs each trial to its target
// or the cap (the report marks a cell stopped by the cap censored).
TEST(SweepSpecTest, AnUntilTargetBudgetStopsTrialsAtTheTargetOrTheCap) {
  const std::string target = "target: {metric: val_accuracy, value: 0.85}\n";
  auto r = ParseSweepSpec(
      WithLine("budget", "budget: {until_target: true, max_epochs: 12}") +
      target);
  ASSERT_OK(r);
  EXPECT_EQ(r->budget, nlohmann::json({{"epochs", 12.0}}));
  EXPECT_EQ(r->target["stop"], true);
  // The same by steps; the cap must be given, and a target.
  r = ParseSweepSpec(
      WithLine("budget", "budget: {until_target: true, max_steps: 5000}") +
      target);
  ASSERT_OK(r);
  EXPECT_EQ(r->budget["steps"], 5000);
  ExpectInvalid(
      WithLine("budget", "budget: {until_target: true, epochs: 12}") + target,
      "max_epochs, max_steps or max_samples");
  ExpectInvalid(
      WithLine("budget", "budget: {until_target: true, max_epochs: 12}"),
      "budget.until_target: needs a target");
}

// A decay over the budget anneals large batches (which cross late in their
// budget) more than small ones: the lr is constant after warmup unless the
// spec names a decay (docs/method.md, "Schedule").
TEST(SweepSpecTest, ATargetStudyDecaysNothingUnlessItSaysSo) {
  const std::string target = "target: {metric: val_accuracy, value: 0.85}\n";
  auto r = ParseSweepSpec(WithLine("schedule", "schedule: {warmup_steps: 50}") +
                          target);
  ASSERT_OK(r);
  EXPECT_EQ(r->schedule["decay"], "constant");
  r = ParseSweepSpec(kValid + target);  // decay: poly, power 2
  ASSERT_OK(r);
  EXPECT_EQ(r->schedule["decay"], "poly");
}

TEST(SweepSpecTest, EarlyStoppingIsParsedWithDefaultsAndChecked) {
  auto r = ParseSweepSpec(
      WithLine("early_stopping", "early_stopping: {min_samples: 60000}"));
  ASSERT_OK(r);
  EXPECT_EQ(r->early_stopping, nlohmann::json({{"rule", "asha"},
                                               {"metric", "val_accuracy"},
                                               {"min_samples", 60000},
                                               {"reduction_factor", 3}}));
  EXPECT_EQ(r->ToJson()["early_stopping"]["min_samples"], 60000);
  ExpectInvalid(
      WithLine("early_stopping", "early_stopping: {reduction_factor: 2}"),
      "early_stopping.min_samples");
  ExpectInvalid(WithLine("early_stopping", "early_stopping: {min_samples: 0}"),
                "early_stopping.min_samples");
  ExpectInvalid(
      WithLine("early_stopping",
               "early_stopping: {min_samples: 10, reduction_factor: 1}"),
      "early_stopping.reduction_factor");
  ExpectInvalid(WithLine("early_stopping",
                         "early_stopping: {min_samples: 10, rule: hyperband}"),
                "early_stopping.rule");
  ExpectInvalid(WithLine("early_stopping",
                         "early_stopping: {min_samples: 10, metric: lr}"),
                "early_stopping.metric");
  ExpectInvalid(WithLine("early_stopping",
                         "early_stopping: {min_samples: 10, patience: 3}"),
                "early_stopping.patience");
}

TEST(SweepSpecTest, SelectionMetricsAreValidationMetricsOfTheModel) {
  // The old names mean the validation split now.
  auto r = ParseSweepSpec(
      WithLine("target", "target: {metric: test_loss, value: 0.4}"));
  ASSERT_OK(r);
  EXPECT_EQ(r->target["metric"], "val_loss");
  ExpectInvalid(
      WithLine("target", "target: {metric: val_bpc, value: 2}"),
      "target.metric: val_bpc is reported by model char_lstm, not mlp");
  ExpectInvalid(
      WithLine("target", "target: {metric: train_loss, value: 2}"),
      "target.metric: unknown metric 'train_loss'; supported: val_accuracy");
  ExpectInvalid(WithLine("target", "target: {value: 2}"),
                "target.metric: required");
  r = ParseSweepSpec(R"yaml(
name: lm
model: {type: char_lstm}
optimizers: [{name: adamw}]
batch_sizes: [64]
base: {lr: 0.01}
target: {metric: val_bpc, value: 3}
early_stopping: {metric: val_bpc, min_samples: 1000}
)yaml");
  ASSERT_OK(r);
  EXPECT_EQ(r->early_stopping["metric"], "val_bpc");
}

TEST(SweepSpecTest, EvaluationBySamplesNoiseScaleAndWarmupFromTheBaseLr) {
  auto r = ParseSweepSpec(std::string(kValid) +
                          "eval_every_samples: 16384\nnoise_scale: always\n");
  ASSERT_OK(r);
  EXPECT_EQ(r->eval_every_samples, 16384);
  auto trials = ExpandSweep(*r);
  EXPECT_EQ(trials[0].config["eval_every_samples"], 16384);
  EXPECT_EQ(trials[0].config["noise_scale"], "always");
  // Default warmup rises from 0.
  EXPECT_FALSE(trials[0].config["schedule"].contains("warmup_start_lr"));
  EXPECT_FALSE(trials[0].config["schedule"].contains("warmup_from"));
  ExpectInvalid(
      std::string(kValid) + "eval_every_samples: 100\neval_every_steps: 10\n",
      "eval_every_samples: give it or eval_every_steps, not both");
  ExpectInvalid(
      WithLine("batch_sizes", "batch_sizes: [127]") + "noise_scale: always\n",
      "noise_scale: always measures batch size 127 by its two halves");
  ExpectInvalid(std::string(kValid) + "noise_scale: sometimes\n",
                "noise_scale");

  // Goyal et al.: from the base lr (times the multiplier), never above the
  // peak.
  r = ParseSweepSpec(
      WithLine("schedule",
               "schedule: {warmup_epochs: 1, decay: poly, warmup_from: base}"));
  ASSERT_OK(r);
  trials = ExpandSweep(*r);
  for (const TrialSpec& t : trials) {
    const double start = t.config["schedule"]["warmup_start_lr"];
    EXPECT_DOUBLE_EQ(start, std::min(0.01 * t.lr_multiplier, t.lr)) << t.index;
    EXPECT_FALSE(t.config["schedule"].contains("warmup_from"));
  }
  // b = 512 at sqrt scaling, multiplier 0.5: 0.02 x 0.5, from 0.01 x 0.5.
  ASSERT_EQ(trials[4].batch_size, 512);
  EXPECT_DOUBLE_EQ(
      trials[4].config["schedule"]["warmup_start_lr"].get<double>(), 0.005);
  EXPECT_DOUBLE_EQ(trials[4].lr, 0.01);
  ExpectInvalid(WithLine("schedule", "schedule: {warmup_from: one}"),
                "schedule.warmup_from");
}

TEST(SweepSpecTest, AdamWAndSgdTakeTheSameExclusionAndClippingOptionsAsLamb) {
  auto r =
      ParseSweepSpec(WithLine("optimizers",
                              "optimizers: [{name: sgd, exclude_bias_and_norm: "
                              "true, max_grad_norm: 1}, "
                              "{name: adamw, exclude_bias_and_norm: true, "
                              "max_grad_norm: 1}, {name: lamb}]"));
  ASSERT_OK(r);
  for (const auto& o : r->optimizers) {
    EXPECT_EQ(o.options["exclude_bias_and_norm"], true) << o.name;
    EXPECT_EQ(o.options["max_grad_norm"], o.name == "lamb" ? 0.0 : 1.0)
        << o.name;
  }
}

TEST(SweepSpecTest, JsonAndYamlGiveTheSameSpec) {
  auto yaml = ParseSweepSpec(kValid);
  ASSERT_OK(yaml);
  auto json = ParseSweepSpec(yaml->ToJson().dump(), SpecFormat::kJson);
  ASSERT_OK(json);
  EXPECT_EQ(json->ToJson(), yaml->ToJson());
}

TEST(SweepSpecTest, ExpandsTheFullGridWithScaledLr) {
  auto r = ParseSweepSpec(kValid);
  ASSERT_OK(r);
  std::vector<TrialSpec> trials = ExpandSweep(*r);
  ASSERT_EQ(trials.size(), 2u * 2u * 2u * 2u);
  // Order: optimizers x batch_sizes x lr_multipliers x seeds.
  EXPECT_EQ(trials[0].optimizer, "sgd");
  EXPECT_EQ(trials[0].batch_size, 128);
  EXPECT_DOUBLE_EQ(trials[0].lr, 0.005);
  EXPECT_EQ(trials[1].seed, 1);
  const TrialSpec& t = trials[6];  // sgd, 512, x1, seed 0
  EXPECT_EQ(t.batch_size, 512);
  EXPECT_DOUBLE_EQ(t.lr_multiplier, 1.0);
  EXPECT_DOUBLE_EQ(t.lr, 0.01 * 2.0);  // sqrt(512 / 128) = 2
  EXPECT_DOUBLE_EQ(t.config["lr"].get<double>(), t.lr);
  EXPECT_EQ(t.config["optimizer"]["name"], "sgd");
  EXPECT_EQ(t.config["micro_batch_size"], 512);
  EXPECT_EQ(trials.back().optimizer, "adamw");
}

TEST(SweepSpecTest, OptimizerEntryLrReplacesTheBaseLr) {
  auto r = ParseSweepSpec(
      WithLine("optimizers",
               "optimizers: [{name: lars, lr: 4.0, trust_coefficient: 0.002}, "
               "{name: lamb, always_adapt: false}]"));
  ASSERT_OK(r);
  auto trials = ExpandSweep(*r);
  // lars at batch 512: 4.0 x sqrt(512 / 128) x multiplier 1.
  EXPECT_EQ(trials[6].optimizer, "lars");
  EXPECT_DOUBLE_EQ(trials[6].lr, 8.0);
  EXPECT_EQ(trials[6].config["optimizer"]["trust_coefficient"], 0.002);
  EXPECT_EQ(trials[6].config["optimizer"]["exclude_bias_and_norm"], true);
  EXPECT_FALSE(trials[6].config["optimizer"].contains("lr"));
  // lamb falls back to base.lr.
  EXPECT_DOUBLE_EQ(trials[14].lr, 0.02);
  EXPECT_EQ(trials[14].config["optimizer"]["always_adapt"], false);
  EXPECT_EQ(trials[14].config["optimizer"]["eps"], 1e-6);
  ExpectInvalid(WithLine("optimizers", "optimizers: [{name: lamb, lr: 0}]"),
                "optimizers[0].lr: must be > 0");
  ExpectInvalid(WithLine("optimizers", "optimizers: [{name: lars, eps: -1}]"),
                "optimizers[0].eps");
}

TEST(SweepSpecTest, LrScalingRules) {
  EXPECT_DOUBLE_EQ(ScaledLr(LrScaling::kLinear, 0.1, 256, 1024), 0.4);
  EXPECT_DOUBLE_EQ(ScaledLr(LrScaling::kSqrt, 0.1, 256, 1024), 0.2);
  EXPECT_DOUBLE_EQ(ScaledLr(LrScaling::kNone, 0.1, 256, 1024), 0.1);
}

TEST(SweepSpecTest, MicroBatchCapsAtTheBatch) {
  auto r =
      ParseSweepSpec(WithLine("micro_batch_size", "micro_batch_size: 256"));
  ASSERT_OK(r);
  auto trials = ExpandSweep(*r);
  EXPECT_EQ(trials[0].config["micro_batch_size"], 128);
  EXPECT_EQ(trials[4].config["micro_batch_size"], 256);
}

TEST(SweepSpecTest, UnknownOptimizerNamesTheField) {
  ExpectInvalid(WithLine("optimizers", "optimizers: [{name: adamax}]"),
                "optimizers[0].name: unknown optimizer 'adamax'");
}

TEST(SweepSpecTest, UnknownOptimizerOptionNamesTheField) {
  ExpectInvalid(WithLine("optimizers", "optimizers: [{name: sgd, beta: 1}]"),
                "optimizers[0].beta: unknown field");
}

TEST(SweepSpecTest, OptimizerOptionOutOfRange) {
  ExpectInvalid(
      WithLine("optimizers", "optimizers: [{name: sgd, momentum: 1.5}]"),
      "optimizers[0].momentum: must be in [0, 1)");
  ExpectInvalid(
      WithLine("optimizers", "optimizers: [{name: adamw, betas: [0.9, 2]}]"),
      "optimizers[0].betas");
}

TEST(SweepSpecTest, NonPositiveBatchSizeNamesTheEntry) {
  ExpectInvalid(WithLine("batch_sizes", "batch_sizes: [128, 0]"),
                "batch_sizes[1]: must be between 1 and 55000");
  ExpectInvalid(WithLine("batch_sizes", "batch_sizes: [-4]"), "batch_sizes[0]");
  ExpectInvalid(WithLine("batch_sizes", "batch_sizes: [12.5]"),
                "batch_sizes[0]: must be an integer");
}

TEST(SweepSpecTest, BatchLargerThanDataset) {
  ExpectInvalid(WithLine("batch_sizes", "batch_sizes: [60001]"),
                "batch_sizes[0]");
}

TEST(SweepSpecTest, NonPositiveLr) {
  ExpectInvalid(WithLine("base", "base: {batch_size: 128, lr: 0}"),
                "base.lr: must be > 0");
  ExpectInvalid(WithLine("base", "base: {batch_size: 128, lr: -0.1}"),
                "base.lr");
  ExpectInvalid(WithLine("lr_multipliers", "lr_multipliers: [1, 0]"),
                "lr_multipliers[1]: must be > 0");
}

TEST(SweepSpecTest, EmptyGridIsRejected) {
  ExpectInvalid(WithLine("optimizers", "optimizers: []"),
                "optimizers: must not be empty");
  ExpectInvalid(WithLine("batch_sizes", "batch_sizes: []"),
                "batch_sizes: must not be empty");
  ExpectInvalid(WithLine("lr_multipliers", "lr_multipliers: []"),
                "lr_multipliers: must not be empty");
  ExpectInvalid(WithLine("seeds", "seeds: []"), "seeds: must not be empty");
}

TEST(SweepSpecTest, MissingRequiredFields) {
  ExpectInvalid(WithLine("name", "other: 1"), "name: required");
  ExpectInvalid(WithLine("base", "base: {batch_size: 128}"),
                "base.lr: required");
}

TEST(SweepSpecTest, UnknownModelOrDataset) {
  ExpectInvalid(WithLine("model", "model: {type: resnet50}"),
                "model.type: unknown model 'resnet50'");
  ExpectInvalid(WithLine("dataset", "dataset: {name: imagenet}"),
                "dataset.name: unknown dataset 'imagenet'");
  ExpectInvalid(WithLine("model", "model: {type: mlp, hidden: [64, 0]}"),
                "model.hidden[1]");
  ExpectInvalid(
      WithLine("model", "model: {type: cnn, channels: [8, 8, 8, 8, 8]}"),
      "model.channels: at most 4 entries");
  ExpectInvalid(WithLine("model", "model: {type: mlp, channels: [8]}"),
                "model.channels: unknown field");
  auto cnn = ParseSweepSpec(WithLine("model", "model: {type: cnn}"));
  ASSERT_OK(cnn);
  EXPECT_EQ(cnn->model["channels"], nlohmann::json({32, 64}));
  EXPECT_EQ(cnn->model["hidden"], nlohmann::json({128}));
}

TEST(SweepSpecTest, MissingDatasetFiles) {
  ExpectInvalid(
      WithLine("dataset", "dataset: {name: fashion_mnist, path: /nonexistent}"),
      "dataset.path: no such directory: /nonexistent");
  ExpectInvalid(
      WithLine("dataset", "dataset: {name: fashion_mnist, path: /tmp}"),
      "dataset.path: /tmp has no train-images-idx3-ubyte.gz");
}

TEST(SweepSpecTest, MalformedYamlNamesTheLine) {
  ExpectInvalid("name: x\noptimizers: [sgd\n", "spec: malformed YAML at line");
  ExpectInvalid("- just\n- a list\n", "spec: must be a mapping");
}

TEST(SweepSpecTest, MalformedJson) {
  ExpectInvalid("{\"name\": \"x\",", "spec: malformed JSON", SpecFormat::kJson);
}

TEST(SweepSpecTest, UnknownTopLevelFieldIsATypo) {
  ExpectInvalid(WithLine("batch_size", "batch_size: 128"),
                "batch_size: unknown field");
}

TEST(SweepSpecTest, WrongTypes) {
  ExpectInvalid(WithLine("name", "name: [a, b]"), "name: must be a string");
  ExpectInvalid(WithLine("budget", "budget: 10"), "budget: must be a mapping");
  ExpectInvalid(WithLine("budget", "budget: {epochs: 20000}"),
                "budget.epochs: at most 10000, got 20000");
  ExpectInvalid(WithLine("budget", "budget: {epochs: 1, steps: 5}"),
                "budget: give exactly one");
  ExpectInvalid(WithLine("lr_scaling", "lr_scaling: cubic"),
                "lr_scaling: unknown rule 'cubic'");
  ExpectInvalid(WithLine("schedule", "schedule: {decay: step}"),
                "schedule.decay: unknown value 'step'");
  ExpectInvalid(
      WithLine("schedule", "schedule: {warmup_epochs: 1, warmup_steps: 5}"),
      "schedule: give warmup_epochs or warmup_steps");
}

TEST(SweepSpecTest, MicroBatchMustDivideBatches) {
  ExpectInvalid(WithLine("micro_batch_size", "micro_batch_size: 96"),
                "micro_batch_size: batch size 128 is not a multiple of 96");
}

TEST(SweepSpecTest, DuplicateGridEntries) {
  ExpectInvalid(WithLine("batch_sizes", "batch_sizes: [128, 128]"),
                "batch_sizes[1]: duplicate");
}

TEST(SweepSpecTest, TooManyTrials) {
  std::string seeds = "seeds: [";
  for (int i = 0; i < 700; ++i) seeds += (i ? "," : "") + std::to_string(i);
  std::string spec = WithLine("seeds", seeds + "]");
  size_t pos = spec.find("lr_multipliers: [0.5, 1]");
  spec.replace(pos, 24, "lr_multipliers: [0.5, 1, 2, 4]");
  ExpectInvalid(spec, "expands to 11200 trials; at most 10000");
}

TEST(SweepSpecTest, CheckpointIntervalReachesTheTrialConfig) {
  auto r = ParseSweepSpec(
      WithLine("checkpoint_every_steps", "checkpoint_every_steps: 200"));
  ASSERT_OK(r);
  EXPECT_EQ(ExpandSweep(*r)[0].config["checkpoint_every_steps"], 200);
  ExpectInvalid(
      WithLine("checkpoint_every_steps", "checkpoint_every_steps: -1"),
      "checkpoint_every_steps");
}

TEST(SweepSpecTest, DiagnosticsAndDivergenceReachTheTrialConfig) {
  auto r = ParseSweepSpec(
      WithLine("diagnostics_every_steps", "diagnostics_every_steps: 50") +
      "divergence_factor: 4\n");
  ASSERT_OK(r);
  auto config = ExpandSweep(*r)[0].config;
  EXPECT_EQ(config["diagnostics_every_steps"], 50);
  EXPECT_EQ(config["divergence_factor"], 4.0);
  EXPECT_EQ(ExpandSweep(*ParseSweepSpec(kValid))[0].config["divergence_factor"],
            10.0);
  ExpectInvalid(WithLine("divergence_factor", "divergence_factor: 1"),
                "divergence_factor: must be > 1");
}

TEST(SweepSpecTest, DeviceAndPrecisionReachTheTrialConfig) {
  auto config = ExpandSweep(*ParseSweepSpec(kValid))[0].config;
  EXPECT_EQ(config["device"], "auto");
  EXPECT_EQ(config["precision"], "fp32");
  auto r =
      ParseSweepSpec(std::string(kValid) + "device: cuda\nprecision: bf16\n");
  ASSERT_OK(r);
  config = ExpandSweep(*r)[0].config;
  EXPECT_EQ(config["device"], "cuda");
  EXPECT_EQ(config["precision"], "bf16");
  ExpectInvalid(std::string(kValid) + "device: gpu\n",
                "device: unknown value 'gpu'; supported: auto, cpu, cuda");
  ExpectInvalid(std::string(kValid) + "precision: fp8\n",
                "precision: unknown value");
  ExpectInvalid(std::string(kValid) + "device: cpu\nprecision: fp16\n",
                "precision: fp16 autocast needs device cuda");
}

TEST(SweepSpecTest, RanksPerTrialSplitEachBatchIntoMicroBatchesPerRank) {
  ExpectInvalid(WithLine("ranks_per_trial", "ranks_per_trial: 0"),
                "ranks_per_trial");
  ExpectInvalid(WithLine("ranks_per_trial", "ranks_per_trial: 65"),
                "ranks_per_trial");
  ExpectInvalid(WithLine("ranks_per_trial", "ranks_per_trial: 3"),
                "ranks_per_trial: batch size 128 is not a multiple of 3");
  ExpectInvalid(
      WithLine("ranks_per_trial", "ranks_per_trial: 2\nmicro_batch_size: 48"),
      "micro_batch_size: batch size 128 / 2 ranks is not a multiple of 48");
  auto spec = ParseSweepSpec(
      WithLine("ranks_per_trial", "ranks_per_trial: 4\nmicro_batch_size: 64"));
  ASSERT_OK(spec);
  EXPECT_EQ(spec->ranks_per_trial, 4);
  for (const TrialSpec& t : ExpandSweep(*spec)) {
    EXPECT_EQ(t.ranks, 4);
    // Each rank's share: 128 / 4 = 32 (one micro-batch), 512 / 4 = 128 (two).
    EXPECT_EQ(t.config["micro_batch_size"],
              std::min<int64_t>(64, t.batch_size / 4));
  }
}

TEST(SweepSpecTest, TextThatIsNotUtf8IsRefusedWithItsOffset) {
  // Found by the spec fuzzer: such a name reached the JSON writer and threw.
  const std::string base =
      "optimizers: [{name: sgd}]\nbatch_sizes: [128]\nbase: {lr: 0.1}\n";
  for (const std::string& bad :
       {std::string("name: a\xff\n"), std::string("name: \xc0\x80\n"),
        std::string("name: \xed\xa0\x80\n"), std::string("name: x\xe2\x82")}) {
    auto spec = ParseSweepSpec(bad + base);
    ASSERT_FALSE(spec.ok()) << bad;
    EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(spec.status().message(), HasSubstr("not UTF-8 text (byte "));
  }
  // Found by the fuzzer: "\x01\0\0\0" makes yaml-cpp read UTF-32, and
  // "c0}}" becomes a code point past U+10FFFF, written as bytes that are not
  // UTF-8; describing it in an error message threw.
  auto utf32 = ParseSweepSpec(std::string("\x01\0\0\0c0}}", 8));
  ASSERT_FALSE(utf32.ok());
  EXPECT_EQ(utf32.status().code(), StatusCode::kInvalidArgument);
  auto fine =
      ParseSweepSpec("name: \xc3\xa9t\xc3\xa9 \xf0\x9f\x9a\x80\n" + base);
  ASSERT_OK(fine);
  EXPECT_EQ(fine->name, "\xc3\xa9t\xc3\xa9 \xf0\x9f\x9a\x80");
}

TEST(SweepSpecTest, QuotedNumbersStayStrings) {
  ExpectInvalid(WithLine("batch_sizes", "batch_sizes: ['128']"),
                "batch_sizes[0]: must be an integer");
}

TEST(SweepSpecTest,
     LanguageModelsDefaultToTheTextCorpusAndWriteOutTheirOptions) {
  auto lstm = ParseSweepSpec(R"yaml(
name: lm
model: {type: char_lstm, hidden: 128}
optimizers: [{name: lamb}]
batch_sizes: [64]
base: {lr: 0.01}
)yaml");
  ASSERT_OK(lstm);
  EXPECT_EQ(lstm->model["hidden"], 128);
  EXPECT_EQ(lstm->model["seq_len"], 128);
  EXPECT_EQ(lstm->model["embedding"], 64);
  EXPECT_EQ(lstm->dataset["name"], "text");
  EXPECT_EQ(lstm->dataset["path"], "/usr/share/games/fortunes");
  EXPECT_EQ(lstm->dataset["validation_fraction"], 0.05);
  auto trials = ExpandSweep(*lstm);
  ASSERT_EQ(trials.size(), 1u);
  EXPECT_EQ(trials[0].config["model"]["type"], "char_lstm");
  EXPECT_EQ(trials[0].config["dataset"]["name"], "text");

  auto bert = ParseSweepSpec(R"yaml(
name: bert
model: {type: tiny_bert, bias: false, hidden: 256, heads: 4}
dataset: {name: text, validation_fraction: 0.1}
optimizers: [{name: lamb}]
batch_sizes: [64]
base: {lr: 0.01}
)yaml");
  ASSERT_OK(bert);
  EXPECT_EQ(bert->model["bias"], false);
  EXPECT_EQ(bert->model["ffn"], 1024);  // 4 x hidden
  EXPECT_EQ(bert->model["vocab_size"], 2048);
  EXPECT_EQ(bert->model["layers"], 2);
}

TEST(SweepSpecTest, LanguageModelErrorsNameTheField) {
  const std::string head =
      "name: lm\noptimizers: [{name: lamb}]\nbase: {lr: 0.01}\n";
  ExpectInvalid(head +
                    "batch_sizes: [64]\nmodel: {type: tiny_bert, hidden: 100, "
                    "heads: 3}\n",
                "model.heads");
  ExpectInvalid(
      head + "batch_sizes: [64]\nmodel: {type: char_lstm, seq_len: 1}\n",
      "model.seq_len");
  ExpectInvalid(
      head + "batch_sizes: [64]\nmodel: {type: tiny_bert, vocab_size: 10}\n",
      "model.vocab_size");
  ExpectInvalid(
      head + "batch_sizes: [64]\nmodel: {type: char_lstm, channels: [3]}\n",
      "model.channels");
  ExpectInvalid(head +
                    "batch_sizes: [64]\nmodel: {type: char_lstm}\ndataset: "
                    "{name: fashion_mnist}\n",
                "dataset.name");
  ExpectInvalid(
      head + "batch_sizes: [64]\nmodel: {type: mlp}\ndataset: {name: text}\n",
      "dataset.name");
  ExpectInvalid(head +
                    "batch_sizes: [64]\nmodel: {type: char_lstm}\ndataset: "
                    "{path: /nonexistent}\n",
                "dataset.path");
  ExpectInvalid(head +
                    "batch_sizes: [64]\nmodel: {type: char_lstm}\n"
                    "dataset: {validation_fraction: 1.5}\n",
                "dataset.validation_fraction");
  // More windows than the corpus has bytes.
  ExpectInvalid(head + "batch_sizes: [100000000]\nmodel: {type: char_lstm}\n",
                "batch_sizes[0]");
}

// A 40 KB JSON spec nested 20,000 deep crashed the coordinator (the parsed
// tree was walked recursively); a 500-byte YAML spec of anchors and aliases
// expanded to 10^7 nodes before anything was checked.
TEST(SweepSpecTest, DeepNestingIsRefusedBeforeParsing) {
  const std::string deep_json =
      "{\"name\":\"d\",\"x\":" + std::string(20000, '[') +
      std::string(20000, ']') + "}";
  auto r = ParseSweepSpec(deep_json);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(),
              HasSubstr("nested deeper than " + std::to_string(kMaxSpecDepth)));
  // Brackets inside strings are text, not nesting.
  EXPECT_TRUE(ParseSweepSpec("{\"name\": \"" + std::string(100, '[') +
                             "\", \"optimizers\": [{\"name\": \"sgd\"}], "
                             "\"batch_sizes\": [128], \"base\": {\"lr\": 0.1}}")
                  .ok());
  std::string deep_yaml = "name: d\nx: ";
  for (int i = 0; i < 1000; ++i) deep_yaml += "[";
  for (int i = 0; i < 1000; ++i) deep_yaml += "]";
  auto y = ParseSweepSpec(deep_yaml + "\n");
  ASSERT_FALSE(y.ok());
  EXPECT_THAT(y.status().message(), HasSubstr("nested deeper than"));
  EXPECT_THAT(y.status().message(), HasSubstr("line 2"));
}

TEST(SweepSpecTest, YamlAliasesAreRefusedBeforeTheyExpand) {
  std::string bomb = "x0: &x0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n";
  for (int level = 1; level <= 9; ++level) {
    const std::string prev = "*x" + std::to_string(level - 1);
    bomb += "x" + std::to_string(level) + ": &x" + std::to_string(level) + " [";
    for (int k = 0; k < 10; ++k) bomb += (k ? ", " : "") + prev;
    bomb += "]\n";
  }
  // Expanded, nine levels are 10^10 nodes: this would not return.
  auto r = ParseSweepSpec("name: bomb\n" + bomb);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("YAML aliases"));
  EXPECT_THAT(r.status().message(), HasSubstr("line 3"));
  // An anchor alone is harmless.
  EXPECT_TRUE(
      ParseSweepSpec(WithLine("batch_sizes", "batch_sizes: &b [128]")).ok());
}

// dataset.path told any user whether a file existed on the coordinator's
// host, and its size: with data roots nothing outside them is looked at.
TEST(SweepSpecTest, DataPathsOutsideTheDataRootsAreRefusedUnseen) {
  const std::vector<std::string> roots = DefaultDataRoots();
  EXPECT_TRUE(ParseSweepSpec(kValid, SpecFormat::kAuto, &roots).ok());
  for (const char* path :
       {"/etc", "/usr/share/datasets/../../../etc", "relative/dir",
        "/usr/share/datasets-elsewhere", "/no/such/dir"}) {
    SCOPED_TRACE(path);
    auto r = ParseSweepSpec(
        WithLine("dataset", std::string("dataset: {name: fashion_mnist, "
                                        "path: ") +
                                path + "}"),
        SpecFormat::kAuto, &roots);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(),
                HasSubstr("is not under a data root of this coordinator "
                          "(--data-root: /usr/share/datasets, "
                          "/usr/share/games/fortunes)"));
  }
  // Inside a root the files are checked as before.
  auto missing = ParseSweepSpec(
      WithLine("dataset",
               "dataset: {name: fashion_mnist, path: /usr/share/datasets/x}"),
      SpecFormat::kAuto, &roots);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("no such directory"));
}

// A torchscript spec as the client submits it (docs/models.md): checked
// from the client's record of each file, without opening one.
TEST(SweepSpecTest, ATorchScriptSpecIsCheckedFromItsFilesRecord) {
  using nlohmann::json;
  const std::string hash(64, 'a');
  const json good = {{"name", "own"},
                     {"model",
                      {{"type", "torchscript"},
                       {"path", "/m.pt"},
                       {"sha256", hash},
                       {"bytes", 4000}}},
                     {"dataset",
                      {{"kind", "classification"},
                       {"train", {{"x", "/data/x.npy"}, {"y", "/data/y.npy"}}},
                       {"val_fraction", 0.2},
                       {"files",
                        {{"/data/x.npy",
                          {{"bytes", 100},
                           {"sha256", hash},
                           {"dtype", "float32"},
                           {"shape", {1000, 6}}}},
                         {"/data/y.npy",
                          {{"bytes", 100},
                           {"sha256", hash},
                           {"dtype", "int64"},
                           {"shape", {1000}}}}}}}},
                     {"optimizers", {{{"name", "lamb"}}}},
                     {"batch_sizes", {64, 800}},
                     {"base", {{"lr", 0.01}}},
                     {"target", {{"metric", "val_accuracy"}, {"value", 0.9}}}};
  const std::vector<std::string> roots = {"/data"};
  ASSERT_OK_AND_ASSIGN(SweepSpec spec,
                       ParseSweepSpec(good.dump(), SpecFormat::kJson, &roots));
  EXPECT_EQ(spec.model["sha256"], hash);
  EXPECT_EQ(spec.dataset["files"].size(), 2u);
  // 1000 samples less a fifth held out: 800 is the largest batch.
  struct Case {
    json patch;
    std::string error;
  };
  const std::vector<Case> cases = {
      {{{"batch_sizes", {801}}}, "batch_sizes[0]: must be between 1 and 800"},
      {{{"model", {{"sha256", nullptr}}}},
       "model.sha256: required: the client"},
      {{{"model", {{"file", "/cache/m.pt"}}}}, "model.file: unknown field"},
      {{{"dataset", {{"files", nullptr}}}}, "dataset.files: required"},
      {{{"dataset", {{"train", {{"x", "/elsewhere/x.npy"}}}}}},
       "dataset.train.x: /elsewhere/x.npy is not under a data root"},
      {{{"dataset", {{"train", {{"y", "/data/z.npy"}}}}}},
       "dataset.files[\"/data/z.npy\"]: required"},
      {{{"dataset", {{"files", {{"/data/y.npy", {{"shape", {999}}}}}}}}},
       "dataset.train.y: 999 labels for the 1000 samples of dataset.train.x"},
      {{{"dataset", {{"files", {{"/data/y.npy", {{"shape", {1000, 2}}}}}}}}},
       "dataset.train.y: labels must be 1-D"},
      {{{"dataset", {{"kind", "regression"}}}},
       "dataset.kind: unknown value 'regression'"},
      {{{"target", {{"metric", "val_perplexity"}}}},
       "target.metric: val_perplexity is logged for dataset.kind "
       "language_model, not classification"},
  };
  for (const Case& c : cases) {
    json doc = good;
    doc.merge_patch(c.patch);
    SCOPED_TRACE(c.patch.dump());
    auto r = ParseSweepSpec(doc.dump(), SpecFormat::kJson, &roots);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(c.error));
  }
}

TEST(SweepSpecTest, EveryShippedExperimentParses) {
  int files = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(MEGABATCH_EXPERIMENTS_DIR)) {
    if (entry.path().extension() != ".yaml") continue;
    std::ifstream in(entry.path());
    std::string text((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    auto r = ParseSweepSpec(testing::AsSubmitted(text));
    ASSERT_OK(r);
    // A grid expands to its trials; an adaptive study plans them as it runs.
    EXPECT_NE(ExpandSweep(*r).empty(), r->strategy.is_null()) << entry.path();
    ++files;
  }
  EXPECT_GE(files, 5);
}

std::string ReadWhole(const char* path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(SweepSpecTest, DocsSpecExampleParsesAndNamesEveryTopLevelField) {
  // docs/spec.md's annotated example is a spec the parser takes as it is ...
  const std::string doc = ReadWhole(MEGABATCH_SPEC_DOC);
  const size_t start = doc.find("```yaml\n");
  ASSERT_NE(start, std::string::npos);
  const size_t end = doc.find("```", start + 8);
  const std::string example = doc.substr(start + 8, end - start - 8);
  auto parsed = ParseSweepSpec(example);
  ASSERT_OK(parsed);
  // ... and it names every top-level field the parser reads (as a field,
  // or in a comment beside its alternative).
  const std::string source = ReadWhole(MEGABATCH_SPEC_SOURCE);
  const std::regex read(R"re((?:top(?:\.\w+)?\(|\(\s*top,)\s*"(\w+)")re");
  std::set<std::string> fields;
  for (std::sregex_iterator it(source.begin(), source.end(), read), stop;
       it != stop; ++it) {
    fields.insert((*it)[1]);
  }
  EXPECT_GE(fields.size(), 25u);
  for (const std::string& field : fields) {
    EXPECT_TRUE(
        std::regex_search(example, std::regex("(^|[^a-z_])" + field + ":")))
        << "docs/spec.md's example lacks the field " << field;
  }
}

}  // namespace
}  // namespace megabatch::spec
