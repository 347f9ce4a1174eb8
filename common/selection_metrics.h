// The metrics a study selects by (targets, successive halving, the best lr),
// and the rule that turns two evaluations into steps to target. One table
// serves the coordinator (spec validation) and the trainer (deciding a
// target), so the two can never disagree. Header-only and dependency-free.
//
// Selection always reads the validation split (docs/method.md, "Validation
// and test"): the test split is evaluated once, at the end of a trial, and is
// never used to choose anything.
#ifndef MEGABATCH_COMMON_SELECTION_METRICS_H_
#define MEGABATCH_COMMON_SELECTION_METRICS_H_

#include <array>
#include <cmath>
#include <optional>
#include <string>
#include <string_view>

namespace megabatch {

struct SelectionMetric {
  std::string_view name;
  bool higher_is_better;
  std::string_view model;  // the one model type that reports it; empty: all
  std::string_view help;
};

inline constexpr std::array<SelectionMetric, 7> kSelectionMetrics = {{
    {"val_accuracy", true, "", "top-1 accuracy on the validation split"},
    {"val_loss", false, "",
     "mean cross-entropy (nats) on the validation split"},
    {"val_bpc", false, "char_lstm",
     "bits per character on the validation split"},
    {"val_mlm_loss", false, "tiny_bert",
     "masked-LM loss on the validation split"},
    {"val_mlm_accuracy", true, "tiny_bert",
     "masked-token accuracy on the validation split"},
    {"val_perplexity", false, "torchscript",
     "a language model's perplexity per token on the validation split"},
    {"val_bits_per_token", false, "torchscript",
     "a language model's bits per token on the validation split"},
}};

// The names specs accepted before there was a validation split; they mean
// the validation metric now.
inline std::string_view CanonicalSelectionMetric(std::string_view name) {
  if (name == "test_accuracy") return "val_accuracy";
  if (name == "test_loss") return "val_loss";
  return name;
}

inline const SelectionMetric* FindSelectionMetric(std::string_view name) {
  for (const auto& m : kSelectionMetrics) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

// Whether larger values of `metric` (a selection metric, or an old name) are
// better.
inline bool HigherIsBetter(std::string_view metric) {
  const SelectionMetric* m =
      FindSelectionMetric(CanonicalSelectionMetric(metric));
  return m != nullptr ? m->higher_is_better
                      : metric.find("accuracy") != std::string_view::npos;
}

// "val_accuracy, val_loss, ..." for error messages.
inline std::string SelectionMetricNames() {
  std::string out;
  for (const auto& m : kSelectionMetrics) {
    if (!out.empty()) out += ", ";
    out += m.name;
  }
  return out;
}

// One evaluation of the target metric: after `samples` training samples and
// `seconds` of training time.
struct EvalPoint {
  double samples = 0;
  double seconds = 0;
  double value = 0;
};

// Where the target was crossed. `samples` and `seconds` are interpolated
// linearly in the metric between the two evaluations that bracket the target
// (docs/method.md, "Steps to target"): `lower_samples` is the last
// evaluation that had not reached it (0 samples when there was none),
// `upper_samples` the first that had.
struct Crossing {
  double samples = 0;
  double seconds = 0;
  double lower_samples = 0;
  double upper_samples = 0;
  bool interpolated = false;  // false: no usable evaluation before `upper`
};

inline bool Reaches(double value, double target, bool higher_is_better) {
  return higher_is_better ? value >= target : value <= target;
}

// The crossing between `before` (the previous evaluation, none for the first)
// and `at`, or nullopt when `at` does not reach the target. Without a
// previous evaluation that is finite and short of the target, the crossing is
// `at` itself.
inline std::optional<Crossing> InterpolateCrossing(
    const std::optional<EvalPoint>& before, const EvalPoint& at, double target,
    bool higher_is_better) {
  if (!std::isfinite(at.value) ||
      !Reaches(at.value, target, higher_is_better)) {
    return std::nullopt;
  }
  Crossing c;
  c.samples = at.samples;
  c.seconds = at.seconds;
  c.upper_samples = at.samples;
  if (!before || !std::isfinite(before->value) ||
      Reaches(before->value, target, higher_is_better) ||
      before->value == at.value) {
    if (before) c.lower_samples = before->samples;
    return c;
  }
  const double f = (target - before->value) / (at.value - before->value);
  c.samples = before->samples + f * (at.samples - before->samples);
  c.seconds = before->seconds + f * (at.seconds - before->seconds);
  c.lower_samples = before->samples;
  c.interpolated = true;
  return c;
}

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_SELECTION_METRICS_H_
