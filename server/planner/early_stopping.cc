#include "server/planner/early_stopping.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/selection_metrics.h"

namespace megabatch::planner {

std::optional<EarlyStoppingRule> EarlyStoppingOf(const spec::SweepSpec& spec) {
  const nlohmann::json& e = spec.early_stopping;
  if (!e.is_object()) return std::nullopt;
  EarlyStoppingRule rule;
  // Specs stored before the validation split may say test_*.
  rule.metric =
      std::string(CanonicalSelectionMetric(e.at("metric").get<std::string>()));
  const SelectionMetric* known = FindSelectionMetric(rule.metric);
  rule.lower_is_better = known != nullptr && !known->higher_is_better;
  rule.min_samples = e.at("min_samples").get<int64_t>();
  rule.reduction_factor = e.at("reduction_factor").get<int64_t>();
  return rule;
}

int RungsReached(const EarlyStoppingRule& rule, int64_t samples) {
  if (rule.min_samples <= 0 || rule.reduction_factor < 2) return 0;
  // Boundaries stop growing past 2^50 samples: the last rung.
  constexpr int64_t kLastBoundary = int64_t{1} << 50;
  int rungs = 0;
  for (int64_t boundary = rule.min_samples; boundary <= samples; ++rungs) {
    if (boundary > kLastBoundary / rule.reduction_factor) return rungs + 1;
    boundary *= rule.reduction_factor;
  }
  return rungs;
}

double RankedValue(const EarlyStoppingRule& rule, double value) {
  if (std::isfinite(value)) return value;
  return rule.lower_is_better ? INFINITY : -INFINITY;
}

RungVerdict DecideRung(const EarlyStoppingRule& rule, int64_t recorded,
                       int64_t better) {
  RungVerdict v;
  v.keep = std::max<int64_t>(1, recorded / rule.reduction_factor);
  v.prune = better >= v.keep;
  return v;
}

std::string PruneMessage(const EarlyStoppingRule& rule, int rung,
                         int64_t samples, double value,
                         const RungVerdict& verdict, int64_t recorded) {
  char message[256];
  std::snprintf(
      message, sizeof(message),
      "rung %d (%lld samples): %s %.6g is not in the top %lld of %lld", rung,
      static_cast<long long>(samples), rule.metric.c_str(), value,
      static_cast<long long>(verdict.keep), static_cast<long long>(recorded));
  return message;
}

}  // namespace megabatch::planner
