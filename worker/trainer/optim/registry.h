// The optimizer registry: builds the LibTorch optimizer a trial names, with
// the options of common/optimizer_catalog.h. New optimizers are added here
// and in the catalog, nowhere else.
#ifndef MEGABATCH_WORKER_TRAINER_OPTIM_REGISTRY_H_
#define MEGABATCH_WORKER_TRAINER_OPTIM_REGISTRY_H_

#include <torch/torch.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "common/status.h"

namespace megabatch::trainer {

// Builds the optimizer described by `config` ({"name": ..., options}; options
// missing from it take the catalog's defaults) over `module`'s parameters,
// with learning rate `lr`. INVALID_ARGUMENT for an unknown name or option.
Result<std::unique_ptr<torch::optim::Optimizer>> MakeOptimizer(
    const nlohmann::json& config, const torch::nn::Module& module, double lr);

// A module's parameters split the way LAMB/LARS recipes want: tensors of
// dimension <= 1 (biases, LayerNorm/BatchNorm weights) apart from the rest.
struct ParameterSplit {
  std::vector<torch::Tensor> regular;
  std::vector<torch::Tensor> excluded;
};
ParameterSplit SplitBiasAndNorm(const torch::nn::Module& module);

// The global gradient-norm threshold the trainer clips to before the step
// (sgd, adamw and lars: their max_grad_norm option); 0 for none. LAMB clips
// inside its own step.
double TrainerClipNorm(const nlohmann::json& config);

// Sets the learning rate of every parameter group.
void SetLearningRate(torch::optim::Optimizer& optimizer, double lr);

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_OPTIM_REGISTRY_H_
