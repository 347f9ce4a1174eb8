// Every metric a trial's processes write into the results database: its
// name, unit, meaning, which direction is better, who writes it, whether a
// spec may target it, and whether the coordinator exports a live Prometheus
// series of it. The trainer and the worker write names from here, the
// exporter and the CLI read them from here, the store's views are checked
// against it (tests/common/metric_catalog_test.cc), and every end-to-end test
// fails when a process wrote a name that is not here. docs/results-database.md
// lists them. Header-only and dependency-free.
#ifndef MEGABATCH_COMMON_METRIC_CATALOG_H_
#define MEGABATCH_COMMON_METRIC_CATALOG_H_

#include <string_view>

namespace megabatch {

namespace metric {
// Every step (the trainer).
inline constexpr const char* kTrainLoss = "train_loss";
inline constexpr const char* kLr = "lr";
inline constexpr const char* kSamplesPerSecond = "samples_per_second";
inline constexpr const char* kTrainSamples = "train_samples";
inline constexpr const char* kGradNorm = "grad_norm";
inline constexpr const char* kLossScale = "loss_scale";
inline constexpr const char* kAllreduceSeconds = "allreduce_seconds";
inline constexpr const char* kGnsGradientSq = "gns_gradient_sq";
inline constexpr const char* kGnsTrace = "gns_trace";
inline constexpr const char* kGradientNoiseScale = "gradient_noise_scale";
inline constexpr const char* kNoiseScaleAt10Pct = "noise_scale_at_10pct";
inline constexpr const char* kNoiseScaleAt50Pct = "noise_scale_at_50pct";
inline constexpr const char* kNoiseScaleAt100Pct = "noise_scale_at_100pct";
inline constexpr const char* kCheckpointFailed = "checkpoint_failed";
// Every evaluation.
inline constexpr const char* kValLoss = "val_loss";
inline constexpr const char* kValAccuracy = "val_accuracy";
inline constexpr const char* kValBpc = "val_bpc";
inline constexpr const char* kValMlmLoss = "val_mlm_loss";
inline constexpr const char* kValMlmAccuracy = "val_mlm_accuracy";
inline constexpr const char* kValPerplexity = "val_perplexity";
inline constexpr const char* kValBitsPerToken = "val_bits_per_token";
inline constexpr const char* kEpoch = "epoch";
inline constexpr const char* kTargetReachedSamples = "target_reached_samples";
inline constexpr const char* kTargetReachedSteps = "target_reached_steps";
inline constexpr const char* kTargetReachedSeconds = "target_reached_seconds";
inline constexpr const char* kTargetBracketSamples = "target_bracket_samples";
inline constexpr const char* kNoiseScaleAtTarget = "noise_scale_at_target";
// Once, at the end.
inline constexpr const char* kTestLoss = "test_loss";
inline constexpr const char* kTestAccuracy = "test_accuracy";
// The worker, at each attempt's first step.
inline constexpr const char* kThreads = "threads";
inline constexpr const char* kSharedCores = "shared_cores";
// Per-tensor families (diagnostics_every_steps): the prefix, then the
// parameter's name.
inline constexpr const char* kWeightNormPrefix = "weight_norm/";
inline constexpr const char* kUpdateNormPrefix = "update_norm/";
inline constexpr const char* kTrustRatioPrefix = "trust_ratio/";
}  // namespace metric

enum class Better { kNeither, kHigher, kLower };
enum class MetricWriter { kTrainer, kWorker };

struct MetricInfo {
  std::string_view name;  // a family's ends in '/'
  std::string_view unit;
  Better better;
  MetricWriter writer;
  bool target;  // a spec's target.metric may name it (selection_metrics.h)
  bool live;    // the coordinator's /metrics has a series of its latest value
  std::string_view meaning;
};

// clang-format off
inline constexpr MetricInfo kMetricCatalog[] = {
  {metric::kTrainLoss, "nats", Better::kLower, MetricWriter::kTrainer, false, true,
   "training loss of the step (the task's loss: cross-entropy, or masked-LM)"},
  {metric::kLr, "", Better::kNeither, MetricWriter::kTrainer, false, true,
   "learning rate of the step"},
  {metric::kSamplesPerSecond, "samples/s", Better::kHigher, MetricWriter::kTrainer, false, true,
   "training samples per second of the step"},
  {metric::kTrainSamples, "samples", Better::kNeither, MetricWriter::kTrainer, false, false,
   "the training set's size, at the first step"},
  {metric::kGradNorm, "", Better::kNeither, MetricWriter::kTrainer, false, true,
   "global L2 norm of the step's gradient"},
  {metric::kLossScale, "", Better::kNeither, MetricWriter::kTrainer, false, false,
   "fp16 dynamic loss scale"},
  {metric::kAllreduceSeconds, "s", Better::kLower, MetricWriter::kTrainer, false, false,
   "data-parallel: time in the step's gradient all-reduce"},
  {metric::kGnsGradientSq, "", Better::kNeither, MetricWriter::kTrainer, false, false,
   "noise scale: unbiased |G|^2 estimate (smoothed)"},
  {metric::kGnsTrace, "", Better::kNeither, MetricWriter::kTrainer, false, false,
   "noise scale: unbiased tr(Sigma) estimate (smoothed)"},
  {metric::kGradientNoiseScale, "samples", Better::kNeither, MetricWriter::kTrainer, false, true,
   "gradient noise scale B_simple = tr(Sigma) / |G|^2"},
  {metric::kNoiseScaleAt10Pct, "samples", Better::kNeither, MetricWriter::kTrainer, false, false,
   "B_simple at 10% of the budget's steps"},
  {metric::kNoiseScaleAt50Pct, "samples", Better::kNeither, MetricWriter::kTrainer, false, false,
   "B_simple at half the budget's steps"},
  {metric::kNoiseScaleAt100Pct, "samples", Better::kNeither, MetricWriter::kTrainer, false, false,
   "B_simple at the budget's last step"},
  {metric::kCheckpointFailed, "", Better::kNeither, MetricWriter::kTrainer, false, false,
   "1 at a step whose checkpoint could not be written"},
  {metric::kValLoss, "nats", Better::kLower, MetricWriter::kTrainer, true, true,
   "mean cross-entropy on the validation split"},
  {metric::kValAccuracy, "", Better::kHigher, MetricWriter::kTrainer, true, true,
   "top-1 accuracy on the validation split"},
  {metric::kValBpc, "bits/char", Better::kLower, MetricWriter::kTrainer, true, false,
   "char_lstm: bits per character on the validation split"},
  {metric::kValMlmLoss, "nats", Better::kLower, MetricWriter::kTrainer, true, false,
   "tiny_bert: masked-LM loss on the validation split"},
  {metric::kValMlmAccuracy, "", Better::kHigher, MetricWriter::kTrainer, true, false,
   "tiny_bert: masked-token accuracy on the validation split"},
  {metric::kValPerplexity, "", Better::kLower, MetricWriter::kTrainer, true, false,
   "torchscript language model: exp(val_loss), per token"},
  {metric::kValBitsPerToken, "bits/token", Better::kLower, MetricWriter::kTrainer, true, false,
   "torchscript language model: val_loss in bits per token"},
  {metric::kEpoch, "epochs", Better::kNeither, MetricWriter::kTrainer, false, false,
   "samples seen / training-set size, at each evaluation"},
  {metric::kTargetReachedSamples, "samples", Better::kLower, MetricWriter::kTrainer, false, false,
   "samples to the target, interpolated between evaluations"},
  {metric::kTargetReachedSteps, "steps", Better::kLower, MetricWriter::kTrainer, false, false,
   "steps to the target (samples / batch size)"},
  {metric::kTargetReachedSeconds, "s", Better::kLower, MetricWriter::kTrainer, false, false,
   "training seconds to the target"},
  {metric::kTargetBracketSamples, "samples", Better::kNeither, MetricWriter::kTrainer, false, false,
   "the evaluation before the crossing (its bracket's lower end)"},
  {metric::kNoiseScaleAtTarget, "samples", Better::kNeither, MetricWriter::kTrainer, false, false,
   "gradient noise scale when the target was reached"},
  {metric::kTestLoss, "nats", Better::kLower, MetricWriter::kTrainer, false, false,
   "mean cross-entropy on the test split, once at the end"},
  {metric::kTestAccuracy, "", Better::kHigher, MetricWriter::kTrainer, false, false,
   "top-1 accuracy on the test split, once at the end"},
  {metric::kThreads, "threads", Better::kNeither, MetricWriter::kWorker, false, false,
   "intra-op threads the attempt ran with"},
  {metric::kSharedCores, "", Better::kNeither, MetricWriter::kWorker, false, false,
   "1 when the attempt shared cores with another trainer (timings not clean)"},
  {metric::kWeightNormPrefix, "", Better::kNeither, MetricWriter::kTrainer, false, false,
   "diagnostics: L2 norm of the named parameter"},
  {metric::kUpdateNormPrefix, "", Better::kNeither, MetricWriter::kTrainer, false, false,
   "diagnostics: L2 norm of the named parameter's update"},
  {metric::kTrustRatioPrefix, "", Better::kNeither, MetricWriter::kTrainer, false, false,
   "diagnostics: LAMB/LARS trust ratio of the named parameter"},
};
// clang-format on

// The entry of `name` (a family's for "weight_norm/fc1.weight"), or nullptr.
inline const MetricInfo* FindMetricInfo(std::string_view name) {
  for (const MetricInfo& m : kMetricCatalog) {
    const bool family = !m.name.empty() && m.name.back() == '/';
    if (family ? name.size() > m.name.size() &&
                     name.substr(0, m.name.size()) == m.name
               : name == m.name) {
      return &m;
    }
  }
  return nullptr;
}

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_METRIC_CATALOG_H_
