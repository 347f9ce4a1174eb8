// The optimizers a sweep may name, with every option's default and valid
// range. One table serves the coordinator (spec validation, defaults stored
// with each trial) and the trainer (building the LibTorch optimizer), so the
// two can never disagree. Header-only and dependency-free.
#ifndef MEGABATCH_COMMON_OPTIMIZER_CATALOG_H_
#define MEGABATCH_COMMON_OPTIMIZER_CATALOG_H_

#include <array>
#include <limits>
#include <string_view>

namespace megabatch {

enum class OptionKind {
  kNumber,  // a real number in [lo, hi] (or open ends, see below)
  kBool,
  kPair,  // two numbers, each in the range, e.g. betas
};

struct OptimizerOption {
  std::string_view name;
  OptionKind kind;
  double default_value;   // kBool: 0 or 1; kPair: the first element
  double default_second;  // kPair only
  double lo;
  double hi;
  bool hi_open;  // true: value < hi; false: value <= hi (lo is always closed)
  std::string_view help;
};

struct OptimizerInfo {
  std::string_view name;
  std::string_view description;
  std::array<OptimizerOption, 8> options;  // unused entries have an empty name
};

inline constexpr double kInf = std::numeric_limits<double>::infinity();

inline constexpr std::array<OptimizerInfo, 4> kOptimizers = {{
    {"sgd",
     "SGD with momentum (LibTorch's torch::optim::SGD)",
     {{{"momentum", OptionKind::kNumber, 0.9, 0, 0, 1, true, "momentum"},
       {"weight_decay", OptionKind::kNumber, 0.0, 0, 0, kInf, true,
        "L2 penalty added to the gradient"},
       {"nesterov", OptionKind::kBool, 0, 0, 0, 1, false, "Nesterov momentum"},
       {"max_grad_norm", OptionKind::kNumber, 0.0, 0, 0, kInf, true,
        "global gradient clipping threshold; 0 is off"},
       {"exclude_bias_and_norm", OptionKind::kBool, 0, 0, 0, 1, false,
        "biases and normalisation parameters get no weight decay"}}}},
    {"adamw",
     "AdamW (LibTorch's torch::optim::AdamW), decoupled weight decay",
     {{{"betas", OptionKind::kPair, 0.9, 0.999, 0, 1, true, "(beta1, beta2)"},
       {"eps", OptionKind::kNumber, 1e-8, 0, 1e-300, 1, false,
        "denominator epsilon"},
       {"weight_decay", OptionKind::kNumber, 0.01, 0, 0, kInf, true,
        "decoupled weight decay"},
       {"max_grad_norm", OptionKind::kNumber, 0.0, 0, 0, kInf, true,
        "global gradient clipping threshold; 0 is off"},
       {"exclude_bias_and_norm", OptionKind::kBool, 0, 0, 0, 1, false,
        "biases and normalisation parameters get no weight decay (BERT's "
        "AdamW recipe)"}}}},
    {"lamb",
     "LAMB (You et al. 2019): Adam with a per-tensor trust ratio",
     {{{"betas", OptionKind::kPair, 0.9, 0.999, 0, 1, true, "(beta1, beta2)"},
       {"eps", OptionKind::kNumber, 1e-6, 0, 1e-300, 1, false,
        "denominator epsilon"},
       {"weight_decay", OptionKind::kNumber, 0.01, 0, 0, kInf, true,
        "decoupled weight decay, inside the trust ratio"},
       {"bias_correction", OptionKind::kBool, 1, 0, 0, 1, false,
        "Adam bias correction of the moments"},
       {"always_adapt", OptionKind::kBool, 1, 0, 0, 1, false,
        "apply the trust ratio also where weight_decay is 0 (off: apex)"},
       {"trust_clip", OptionKind::kBool, 0, 0, 0, 1, false,
        "clip the trust ratio at 1"},
       {"max_grad_norm", OptionKind::kNumber, 0.0, 0, 0, kInf, true,
        "global gradient clipping threshold; 0 is off"},
       {"exclude_bias_and_norm", OptionKind::kBool, 1, 0, 0, 1, false,
        "biases and normalisation parameters get no weight decay and no "
        "adaptation"}}}},
    {"lars",
     "LARS (You, Gitman, Ginsburg 2017): momentum SGD with a layer-wise rate",
     {{{"momentum", OptionKind::kNumber, 0.9, 0, 0, 1, true, "momentum"},
       {"weight_decay", OptionKind::kNumber, 5e-4, 0, 0, kInf, true,
        "weight decay, inside the update"},
       {"trust_coefficient", OptionKind::kNumber, 0.001, 0, 1e-300, kInf, true,
        "eta: the trust coefficient"},
       {"eps", OptionKind::kNumber, 1e-9, 0, 0, 1, false,
        "denominator epsilon"},
       {"nesterov", OptionKind::kBool, 0, 0, 0, 1, false, "Nesterov momentum"},
       {"max_grad_norm", OptionKind::kNumber, 0.0, 0, 0, kInf, true,
        "global gradient clipping threshold; 0 is off"},
       {"exclude_bias_and_norm", OptionKind::kBool, 1, 0, 0, 1, false,
        "biases and normalisation parameters get no weight decay and no "
        "adaptation"}}}},
}};

// Returns the catalog entry for `name`, or nullptr if there is none.
inline const OptimizerInfo* FindOptimizer(std::string_view name) {
  for (const auto& info : kOptimizers) {
    if (info.name == name) return &info;
  }
  return nullptr;
}

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_OPTIMIZER_CATALOG_H_
