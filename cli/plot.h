// The report's figure as a standalone SVG: steps to target against batch
// size (log-log, one line per optimizer, with each optimizer's perfect-
// scaling line S(b0)·b0/b dashed) and the best target metric against batch
// size. Series are <polyline class="series steps|metric"
// data-optimizer="NAME">, so scripts can find them.
#ifndef MEGABATCH_CLI_PLOT_H_
#define MEGABATCH_CLI_PLOT_H_

#include <string>

#include "megabatch/v1/megabatch.pb.h"

namespace megabatch::cli {

std::string ScalingPlotSvg(const v1::SweepReport& report);

}  // namespace megabatch::cli

#endif  // MEGABATCH_CLI_PLOT_H_
