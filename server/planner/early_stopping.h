// Successive halving (a sweep's `early_stopping`, rule "asha"), as pure
// decisions the store applies inside its transactions: which rungs a point
// reaches, and whether a trial survives a rung given how many recorded
// values there beat it. No SQL here; see docs/method.md ("Early stopping").
#ifndef MEGABATCH_SERVER_PLANNER_EARLY_STOPPING_H_
#define MEGABATCH_SERVER_PLANNER_EARLY_STOPPING_H_

#include <cstdint>
#include <optional>
#include <string>

#include "server/spec/sweep_spec.h"

namespace megabatch::planner {

struct EarlyStoppingRule {
  std::string metric;  // canonical selection metric (val_accuracy, ...)
  bool lower_is_better = false;
  int64_t min_samples = 0;       // rung 0's boundary, in training samples
  int64_t reduction_factor = 3;  // each rung keeps the top 1/reduction_factor
};

// The rule of a parsed spec (whose early_stopping block the spec parser
// validated and filled with its defaults); nullopt when it has none.
std::optional<EarlyStoppingRule> EarlyStoppingOf(const spec::SweepSpec& spec);

// How many rungs a point at `samples` training samples has reached: rung k's
// boundary is min_samples * reduction_factor^k, up to a last rung past 2^50
// samples (never overflowing).
int RungsReached(const EarlyStoppingRule& rule, int64_t samples);

// The value a trial is ranked by: a non-finite value (a diverged loss)
// ranks last.
double RankedValue(const EarlyStoppingRule& rule, double value);

// At a rung where `recorded` values stand (this trial's included) and
// `better` of them beat this trial's, it survives when it is in the top
// max(1, recorded / reduction_factor).
struct RungVerdict {
  bool prune = false;
  int64_t keep = 0;  // how many the rung keeps
};
RungVerdict DecideRung(const EarlyStoppingRule& rule, int64_t recorded,
                       int64_t better);

// The 'trial_pruned' event's text.
std::string PruneMessage(const EarlyStoppingRule& rule, int rung,
                         int64_t samples, double value,
                         const RungVerdict& verdict, int64_t recorded);

}  // namespace megabatch::planner

#endif  // MEGABATCH_SERVER_PLANNER_EARLY_STOPPING_H_
