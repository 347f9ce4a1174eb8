// The adaptive study: a sweep that plans its own trials from the results of
// the ones before (docs/method.md, "Adaptive study").
//
//   probe   one run of the first optimizer at the base batch and lr, for a
//           search budget (search_fraction of the samples), measuring the
//           gradient noise scale B_simple; B_crit is predicted as B_simple
//           at the probe's end (McCandlish et al. 2018: B_crit ~ B_noise).
//   place   strategy.batch_sizes batch sizes, geometric from the base batch
//           to `span` (16) x the prediction (capped by max_batch_size), the
//           one nearest the prediction moved onto it.
//   search  per optimizer and batch size, lrs around the scaling rule's
//           prediction (spec lr_scaling, else sqrt for LAMB/AdamW and linear
//           for SGD/LARS) in powers of 2: first x1/2, x1, x2; then outward
//           while the best is at an edge, then halfway toward each
//           neighbour, until the best is bracketed within a factor of 2 or
//           lr_trials_per_batch trials ran. Each runs the search budget;
//           lrs rank as the report ranks them (fewest samples to target,
//           then the best target metric); a diverged lr bounds the search
//           from above.
//   finish  the best `finish_lrs` (2) lrs of each batch size's search, once
//           per seed, on the whole budget; the report picks the best of them
//           and fits B_crit to those.
//
// PlanAdaptive is a pure function of the spec and the sweep's trials so
// far: it returns the trials still missing, never one that exists. The
// store calls it in the transaction that ends a trial, so the plan and the
// results can never disagree, and a restarted coordinator simply carries on.
// LibTorch- and SQLite-free.
#ifndef MEGABATCH_SERVER_PLANNER_ADAPTIVE_H_
#define MEGABATCH_SERVER_PLANNER_ADAPTIVE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "server/spec/sweep_spec.h"

namespace megabatch::planner {

inline constexpr const char* kPhaseProbe = "probe";
inline constexpr const char* kPhaseSearch = "search";
inline constexpr const char* kPhaseFinish = "finish";

// What the planner reads of one trial of the sweep.
struct PlannedTrial {
  std::string phase;  // probe | search | finish
  std::string optimizer;
  int64_t batch_size = 0;
  double lr = 0;
  int64_t seed = 0;
  bool ended = false;  // completed, diverged, pruned, failed or cancelled
  bool diverged = false;
  bool completed = false;
  double lr_multiplier = 1;  // as recorded: lr = scaled lr x this
  std::optional<double> samples_to_target;
  std::optional<double> best_target_value;
  std::optional<double> noise_scale;  // B_simple at the end of the run
};

struct PlanStep {
  std::vector<spec::TrialSpec> trials;  // to create, indexes from `next_index`
  std::vector<std::string> phases;      // each new trial's phase
  // What was decided and why, one sentence each, for the sweep's events.
  std::vector<std::string> decisions;
};

// The trials `spec` (adaptive) needs next, given `trials` (in creation
// order); new trial indexes start at `next_index`.
PlanStep PlanAdaptive(const spec::SweepSpec& spec,
                      const std::vector<PlannedTrial>& trials,
                      int32_t next_index);

// A number as the planners' decisions print it (4 significant digits).
std::string PlanNumber(double v);

// The batch sizes the plan places for a predicted B_crit (exposed for tests).
std::vector<int64_t> PlaceBatchSizes(const spec::SweepSpec& spec,
                                     double predicted_b_crit);

}  // namespace megabatch::planner

#endif  // MEGABATCH_SERVER_PLANNER_ADAPTIVE_H_
