// The models a trial can train. BuildModel() is the one place that maps a
// model config to a LibTorch module.
#ifndef MEGABATCH_WORKER_TRAINER_MODELS_MODELS_H_
#define MEGABATCH_WORKER_TRAINER_MODELS_MODELS_H_

#include <torch/torch.h>

#include "common/status.h"
#include "worker/trainer/trial_config.h"

namespace megabatch::trainer {

// A classifier for [N, 1, 28, 28] images into 10 classes.
// mlp: flatten, then Linear+ReLU per hidden width, then Linear to 10.
// cnn: per entry of `channels` a 3x3 Conv (padding 1) + BatchNorm + ReLU +
// 2x2 max-pool, then flatten, Linear+ReLU per hidden width, Linear to 10.
// With gradient accumulation BatchNorm normalises each micro-batch by its
// own statistics.
Result<torch::nn::Sequential> BuildModel(const TrialConfig& config);

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_MODELS_MODELS_H_
