// The learning-rate schedule (docs/method.md, "Schedule"): linear warmup
// from `start` to the peak over W steps, then poly, cosine or constant decay
// over the remaining steps. No step runs at lr 0: the first warmup step runs
// at start + (peak - start) / W, the last decay step at the value the decay
// reaches one step before its end. Header-only and LibTorch-free.
#ifndef MEGABATCH_WORKER_TRAINER_SCHEDULE_LR_SCHEDULE_H_
#define MEGABATCH_WORKER_TRAINER_SCHEDULE_LR_SCHEDULE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/trial_config.h"

namespace megabatch::trainer {

using megabatch::Decay;

struct LrSchedule {
  double peak = 0;
  int64_t warmup_steps = 0;  // W
  int64_t total_steps = 0;   // T
  Decay decay = Decay::kConstant;
  double power = 1.0;
  double start = 0;  // the lr warmup rises from

  // The lr of the t-th update, t >= 1.
  double At(int64_t t) const {
    if (t <= warmup_steps) {
      return start + (peak - start) * static_cast<double>(t) /
                         static_cast<double>(warmup_steps);
    }
    if (decay == Decay::kConstant || total_steps <= warmup_steps) return peak;
    // Step W + 1 runs at the peak, step T at (T - W - 1) / (T - W) of the way.
    double progress = static_cast<double>(t - warmup_steps - 1) /
                      static_cast<double>(total_steps - warmup_steps);
    progress = std::min(progress, 1.0);
    if (decay == Decay::kPoly) return peak * std::pow(1.0 - progress, power);
    return peak * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
};

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_SCHEDULE_LR_SCHEDULE_H_
