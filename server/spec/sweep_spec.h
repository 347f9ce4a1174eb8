// Sweep specs: parsing, validation and expansion into trials.
//
// A spec is YAML or JSON with one schema (docs/spec.md). Parsing
// validates every field and fails with INVALID_ARGUMENT naming the first bad
// field ("batch_sizes[1]: must be a positive integer, got 0"). Expansion turns
// a valid spec into optimizers x batch_sizes x lr_multipliers x seeds trials,
// each with the complete JSON config megabatch-trainer runs.
#ifndef MEGABATCH_SERVER_SPEC_SWEEP_SPEC_H_
#define MEGABATCH_SERVER_SPEC_SWEEP_SPEC_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace megabatch::spec {

enum class SpecFormat { kAuto, kYaml, kJson };

enum class LrScaling { kNone, kLinear, kSqrt };

// The upper bound on the number of trials one sweep may expand to.
inline constexpr int64_t kMaxTrialsPerSweep = 10000;
inline constexpr int64_t kMaxRanksPerTrial = 64;
// The largest spec text accepted, in bytes.
inline constexpr size_t kMaxSpecBytes = 1 << 20;
// The deepest nesting of lists and mappings a spec may have (a spec needs
// four); checked on the text, before anything walks the parsed tree.
inline constexpr int kMaxSpecDepth = 32;
// The longest name the coordinator accepts anywhere: a sweep's, a worker's, a
// request id, a metric's, a rendezvous host.
inline constexpr size_t kMaxNameLength = 200;
// budget.epochs and an adaptive strategy's span at most.
inline constexpr int64_t kMaxEpochs = 10000;
inline constexpr int64_t kMaxAdaptiveSpan = 1024;

struct OptimizerSpec {
  std::string name;
  // This optimizer's own base lr (the entry's `lr`), replacing base.lr for
  // its trials; 0 when the entry has none.
  double base_lr = 0;
  // The optimizer's options with every default filled in, e.g.
  // {"momentum": 0.9, "weight_decay": 0.0, "nesterov": false} for sgd.
  nlohmann::json options;

  bool operator==(const OptimizerSpec& o) const {
    return name == o.name && base_lr == o.base_lr && options == o.options;
  }
};

// A validated sweep spec with every default filled in.
struct SweepSpec {
  std::string name;
  nlohmann::json model;    // {"type": "mlp", "hidden": [...]}
  nlohmann::json dataset;  // {"name": "fashion_mnist", "path": "..."}
  std::vector<OptimizerSpec> optimizers;
  std::vector<int64_t> batch_sizes;
  int64_t base_batch_size = 0;
  double base_lr = 0;
  LrScaling lr_scaling = LrScaling::kNone;
  std::vector<double> lr_multipliers;
  // {"warmup_steps"|"warmup_epochs", "decay", "power", "warmup_from":
  // zero|base}
  nlohmann::json schedule;
  int64_t micro_batch_size = 0;  // 0: no gradient accumulation
  nlohmann::json budget;         // exactly one of epochs | steps | samples
  // null, or {"metric", "value", "stop"}; metric is a validation metric of
  // common/selection_metrics.h (test_accuracy/test_loss are read as val_*).
  nlohmann::json target;
  // null, or {"rule": "asha", "metric", "min_samples", "reduction_factor"}
  nlohmann::json early_stopping;
  // null (a grid: the trials ExpandSweep makes), or an adaptive study the
  // coordinator plans as results arrive (server/planner/adaptive.h):
  // {"type": "adaptive", "max_batch_size", "batch_sizes" (how many),
  //  "lr_trials_per_batch", "search_fraction", "finish_lrs", "span"}.
  // batch_sizes (the list) is then empty.
  nlohmann::json strategy;
  // A grid that adds lrs past an edge as results arrive
  // (server/planner/lr_edges.h): "off" or "extend", and at most how many
  // lrs beyond each end of lr_multipliers.
  std::string lr_edges = "off";
  int32_t lr_edges_max = 3;
  // The training split's size (Fashion-MNIST: 55,000; text: unknown, 0).
  int64_t train_samples = 0;
  // Evaluate every K steps, or every K samples (the same data points at
  // every batch size); both 0: whenever an epoch's worth of samples ends.
  int64_t eval_every_steps = 0;
  int64_t eval_every_samples = 0;
  // Gradient noise scale: auto (when a step has >= 2 micro-batches), always
  // (also by halves of a single-micro-batch step), off.
  std::string noise_scale = "auto";
  int64_t checkpoint_every_steps = 0;   // 0: no checkpoints
  int64_t diagnostics_every_steps = 0;  // 0: no per-tensor diagnostics
  double divergence_factor = 10.0;      // loss > factor x first loss: diverged
  std::string device =
      "auto";  // auto (cuda when the trainer has it) | cpu | cuda
  std::string precision = "fp32";  // fp32 | bf16 | fp16 (autocast, cuda only)
  std::vector<int64_t> seeds;
  int32_t max_parallel = 0;  // 0: no limit
  // Data parallel: each trial runs as this many ranks (slots, possibly on
  // different workers), each with its share of every global batch.
  int32_t ranks_per_trial = 1;
  int32_t max_retries = 2;
  int32_t priority = 0;

  // The spec as canonical JSON (defaults filled in), for storage.
  nlohmann::json ToJson() const;
};

// One point of the sweep's grid.
struct TrialSpec {
  int32_t index = 0;
  std::string optimizer;
  int64_t batch_size = 0;
  double lr = 0;  // peak lr: ScaledLr(...) x lr_multiplier
  double lr_multiplier = 1;
  int64_t seed = 0;
  int32_t ranks = 1;
  // The trainer's config for this trial, without "trial_id"/"sweep_id" (the
  // store adds those once it has assigned them).
  nlohmann::json config;
};

// The document of a spec's text (YAML or JSON), within the parser's limits
// on size, depth, aliases and encoding; nothing else is checked. The CLI
// reads a spec through it before it uploads a torchscript model.
Result<nlohmann::json> SpecTextToJson(std::string_view text,
                                      SpecFormat format = SpecFormat::kAuto);

// Parses and validates `text`. Errors: INVALID_ARGUMENT naming the field.
// With `data_roots` (default: DefaultDataRoots() of common/datasets.h), a
// dataset.path must lie under one of them, checked on
// the text before the coordinator looks at the file (so that a spec cannot
// ask it whether any other file exists); without, any path is looked at.
Result<SweepSpec> ParseSweepSpec(
    std::string_view text, SpecFormat format = SpecFormat::kAuto,
    const std::vector<std::string>* data_roots = nullptr);

// Validates an already-parsed JSON document (used for stored specs too).
Result<SweepSpec> SweepSpecFromJson(
    const nlohmann::json& doc,
    const std::vector<std::string>* data_roots = nullptr);

// The learning rate docs/method.md ("Learning rate") scales from
// (base_batch_size, base_lr) to `batch_size`, before the multiplier.
double ScaledLr(LrScaling scaling, double base_lr, int64_t base_batch_size,
                int64_t batch_size);

// The number of trainable parameters of a validated spec's model (as the
// trainer builds it: docs/spec.md), so that a coordinator can refuse a
// model no worker could hold (CoordinatorOptions::max_model_parameters).
int64_t EstimateParameters(const nlohmann::json& model);

// All trials of a valid spec in order optimizers x batch_sizes x
// lr_multipliers x seeds (none for an adaptive spec: its planner makes them).
std::vector<TrialSpec> ExpandSweep(const SweepSpec& spec);

// Reads every trial's config as the trainer will (ParseTrialConfig,
// common/trial_config.h): INVALID_ARGUMENT names the first trial that
// would not run, and why.
Status CheckTrialConfigs(const std::vector<TrialSpec>& trials);

// One trial of `spec`: `optimizer` at `batch_size` with peak lr `lr`
// (`multiplier` times the scaled lr, as recorded), `seed`, and `budget`
// (the spec's when null).
TrialSpec MakeTrial(const SweepSpec& spec, const OptimizerSpec& optimizer,
                    int64_t batch_size, double lr, double multiplier,
                    int64_t seed, int32_t index,
                    const nlohmann::json& budget = nullptr);

}  // namespace megabatch::spec

#endif  // MEGABATCH_SERVER_SPEC_SWEEP_SPEC_H_
