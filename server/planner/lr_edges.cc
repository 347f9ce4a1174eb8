#include "server/planner/lr_edges.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>

#include "common/selection_metrics.h"

namespace megabatch::planner {
namespace {

// One lr of one cell: its seeds together, as the report averages them (to
// target only when every seed reached it; diverged when any seed did).
struct Lr {
  PlannedTrial merged;
  int seeds = 0;
  bool ended = true;
};

Lr Merge(const std::vector<const PlannedTrial*>& seeds) {
  Lr lr;
  lr.seeds = static_cast<int>(seeds.size());
  double to_target = 0, value = 0;
  int reached = 0, valued = 0;
  for (const PlannedTrial* t : seeds) {
    lr.merged.lr = t->lr;
    lr.merged.lr_multiplier = t->lr_multiplier;
    lr.ended = lr.ended && t->ended;
    lr.merged.diverged = lr.merged.diverged || t->diverged;
    if (t->samples_to_target) {
      to_target += *t->samples_to_target;
      ++reached;
    }
    if (t->best_target_value) {
      value += *t->best_target_value;
      ++valued;
    }
  }
  if (reached == lr.seeds) lr.merged.samples_to_target = to_target / reached;
  if (valued > 0) lr.merged.best_target_value = value / valued;
  return lr;
}

// x ranks before y as sweep_scaling ranks lrs (server/store/schema.h): fewest
// samples to target, then no divergence, then the better target value.
bool RanksBefore(const PlannedTrial& x, const PlannedTrial& y, bool higher) {
  if (x.samples_to_target.has_value() != y.samples_to_target.has_value()) {
    return x.samples_to_target.has_value();
  }
  if (x.samples_to_target && *x.samples_to_target != *y.samples_to_target) {
    return *x.samples_to_target < *y.samples_to_target;
  }
  if (x.diverged != y.diverged) return y.diverged;
  if (x.best_target_value.has_value() != y.best_target_value.has_value()) {
    return x.best_target_value.has_value();
  }
  if (!x.best_target_value) return false;
  return higher ? *x.best_target_value > *y.best_target_value
                : *x.best_target_value < *y.best_target_value;
}

}  // namespace

PlanStep ExtendLrEdges(const spec::SweepSpec& spec,
                       const std::vector<PlannedTrial>& trials,
                       int32_t next_index) {
  PlanStep step;
  const std::string metric = spec.target.is_object()
                                 ? spec.target["metric"].get<std::string>()
                                 : std::string("val_accuracy");
  const bool higher = HigherIsBetter(metric);
  // Plain variables, not a structured binding: lambdas below use them.
  const double grid_low =
      *std::min_element(spec.lr_multipliers.begin(), spec.lr_multipliers.end());
  const double grid_high =
      *std::max_element(spec.lr_multipliers.begin(), spec.lr_multipliers.end());
  // (optimizer, batch size) -> lr -> its seeds' trials.
  std::map<std::pair<std::string, int64_t>,
           std::map<double, std::vector<const PlannedTrial*>>>
      cells;
  for (const PlannedTrial& t : trials) {
    cells[{t.optimizer, t.batch_size}][t.lr].push_back(&t);
  }
  for (const spec::OptimizerSpec& opt : spec.optimizers) {
    for (int64_t b : spec.batch_sizes) {
      auto cell = cells.find({opt.name, b});
      if (cell == cells.end()) continue;
      std::vector<Lr> lrs;
      bool waiting = false;
      for (const auto& [lr, seeds] : cell->second) {
        lrs.push_back(Merge(seeds));
        waiting = waiting || !lrs.back().ended;
      }
      if (waiting || lrs.empty()) continue;
      const Lr& best = *std::min_element(
          lrs.begin(), lrs.end(), [&](const Lr& x, const Lr& y) {
            return RanksBefore(x.merged, y.merged, higher);
          });
      // lrs is ordered by lr (the map's order).
      const bool at_top = best.merged.lr == lrs.back().merged.lr;
      const bool at_bottom = best.merged.lr == lrs.front().merged.lr;
      const std::string cell_name = opt.name + " at batch " + std::to_string(b);
      auto extend = [&](double factor, const char* side) {
        const double multiplier = best.merged.lr_multiplier * factor;
        // Lrs already beyond the spec's grid on this side.
        int beyond = 0;
        for (const Lr& lr : lrs) {
          beyond += factor > 1 ? lr.merged.lr_multiplier > grid_high
                               : lr.merged.lr_multiplier < grid_low;
        }
        // At the cap the report's best_lr_edge says the figures are bounds.
        if (beyond >= spec.lr_edges_max) return;
        const double lr = best.merged.lr * factor;
        for (int64_t seed : spec.seeds) {
          step.trials.push_back(spec::MakeTrial(spec, opt, b, lr, multiplier,
                                                seed, next_index++));
          step.phases.push_back("");
        }
        step.decisions.push_back("lr_edges: " + cell_name + ": best lr " +
                                 PlanNumber(best.merged.lr) + " is the " +
                                 side + " tried; trying " + PlanNumber(lr));
      };
      if (at_top && !best.merged.diverged) extend(2, "largest");
      if (at_bottom) extend(0.5, "smallest");
    }
  }
  return step;
}

}  // namespace megabatch::planner
