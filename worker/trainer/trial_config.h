// What the trainer derives from a trial's config (common/trial_config.h, the
// JSON file given by --config): its length in steps and its warmup.
// LibTorch-free.
#ifndef MEGABATCH_WORKER_TRAINER_TRIAL_CONFIG_H_
#define MEGABATCH_WORKER_TRAINER_TRIAL_CONFIG_H_

#include <cstdint>

#include "common/trial_config.h"

namespace megabatch::trainer {

using megabatch::ParseTrialConfig;
using megabatch::TrialConfig;

// The total number of optimizer steps of the trial given the training-set
// size, and the warmup length in steps. Epochs are counted in samples
// (docs/method.md, "Epochs are counted in samples"): an epoch is train_samples
// samples at every batch size, the data is one endless stream of shuffled
// epochs, and a batch may span the end of one epoch and the start of the next.
// So `budget.epochs: E` is ceil(E * n / b) steps and nothing is dropped.
int64_t TotalSteps(const TrialConfig& c, int64_t train_samples);
int64_t WarmupSteps(const TrialConfig& c, int64_t train_samples);
inline double StepsPerEpoch(const TrialConfig& c, int64_t train_samples) {
  return static_cast<double>(train_samples) / static_cast<double>(c.batch_size);
}

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_TRIAL_CONFIG_H_
