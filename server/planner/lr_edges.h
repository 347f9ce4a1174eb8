// A grid that extends itself past its lr edges (spec `lr_edges: extend`,
// docs/method.md "Edges, ties and censoring"): once every trial of an
// (optimizer, batch size) has ended, if its best lr (seeds averaged, ranked
// as the report ranks them) is the largest tried and did not diverge, the
// lr twice as large is added for every seed; if it is the smallest tried,
// the lr half as large. This goes on until the best is interior or the next
// lr out diverged, at most `lr_edges_max` lrs beyond each end of the spec's
// grid. A pure function of the spec and the sweep's trials, called by the
// store in the transaction that ends a trial (as PlanAdaptive is).
// LibTorch- and SQLite-free.
#ifndef MEGABATCH_SERVER_PLANNER_LR_EDGES_H_
#define MEGABATCH_SERVER_PLANNER_LR_EDGES_H_

#include <cstdint>
#include <vector>

#include "server/planner/adaptive.h"
#include "server/spec/sweep_spec.h"

namespace megabatch::planner {

// The trials `spec` (a grid with lr_edges extend) needs next, given
// `trials` (in creation order); new trial indexes start at `next_index`.
PlanStep ExtendLrEdges(const spec::SweepSpec& spec,
                       const std::vector<PlannedTrial>& trials,
                       int32_t next_index);

}  // namespace megabatch::planner

#endif  // MEGABATCH_SERVER_PLANNER_LR_EDGES_H_
