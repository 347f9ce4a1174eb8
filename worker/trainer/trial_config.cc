#include "worker/trainer/trial_config.h"

#include <algorithm>
#include <cmath>

namespace megabatch::trainer {

int64_t TotalSteps(const TrialConfig& c, int64_t train_samples) {
  if (c.budget_steps) return *c.budget_steps;
  if (c.budget_samples) {
    return (*c.budget_samples + c.batch_size - 1) / c.batch_size;
  }
  double epochs = c.budget_epochs.value_or(1.0);
  return std::max<int64_t>(
      1, static_cast<int64_t>(
             std::ceil(epochs * StepsPerEpoch(c, train_samples) - 1e-9)));
}

int64_t WarmupSteps(const TrialConfig& c, int64_t train_samples) {
  if (c.warmup_epochs) {
    return static_cast<int64_t>(
        std::round(*c.warmup_epochs * StepsPerEpoch(c, train_samples)));
  }
  return c.warmup_steps.value_or(0);
}

}  // namespace megabatch::trainer
