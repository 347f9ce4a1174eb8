// The learning-rate schedule of LARGE_BATCH.md: linear warmup to the peak
// over W steps, then poly, cosine or constant decay to step T. Continuous at
// t = W. Header-only and LibTorch-free.
#ifndef MEGABATCH_WORKER_TRAINER_SCHEDULE_LR_SCHEDULE_H_
#define MEGABATCH_WORKER_TRAINER_SCHEDULE_LR_SCHEDULE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace megabatch::trainer {

enum class Decay { kConstant, kPoly, kCosine };

struct LrSchedule {
  double peak = 0;
  int64_t warmup_steps = 0;  // W
  int64_t total_steps = 0;   // T
  Decay decay = Decay::kConstant;
  double power = 1.0;

  // The lr of the t-th update, t >= 1.
  double At(int64_t t) const {
    if (t <= warmup_steps) {
      return peak * static_cast<double>(t) / static_cast<double>(warmup_steps);
    }
    if (decay == Decay::kConstant || total_steps <= warmup_steps) return peak;
    double progress = static_cast<double>(t - warmup_steps) /
                      static_cast<double>(total_steps - warmup_steps);
    progress = std::min(progress, 1.0);
    if (decay == Decay::kPoly) return peak * std::pow(1.0 - progress, power);
    return peak * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
};

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_SCHEDULE_LR_SCHEDULE_H_
