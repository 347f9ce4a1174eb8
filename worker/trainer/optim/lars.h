// LARS (You, Gitman, Ginsburg 2017), written the way LibTorch writes SGD.
// The update, per tensor (docs/method.md, "Optimizers"):
//   local = tc ||w|| / (||g|| + wd ||w|| + eps)  (1 if ||w|| or ||g|| is 0,
//                                                 or if adapt is off)
//   buf  <- m buf + lr local (g + wd w)          (lr inside the buffer)
//   w    <- w - buf          (nesterov: w <- w - (m buf + lr local (g + wd w)))
// `adapt(false)` with `weight_decay(0)` gives the group of biases and norms
// plain momentum SGD.
//
// Contiguous float32 CPU tensors take a fused two-pass path; everything else
// (CUDA, other dtypes) runs the same math as tensor ops with no host sync.
#ifndef MEGABATCH_WORKER_TRAINER_OPTIM_LARS_H_
#define MEGABATCH_WORKER_TRAINER_OPTIM_LARS_H_

#include <torch/optim/optimizer.h>
#include <torch/optim/serialize.h>

#include <utility>
#include <vector>

#include "worker/trainer/optim/trust_ratios.h"

namespace megabatch::optim {

struct LarsOptions
    : public torch::optim::OptimizerCloneableOptions<LarsOptions> {
  LarsOptions(double lr = 1.0);  // NOLINT: implicit, as LibTorch's options
  TORCH_ARG(double, lr) = 1.0;
  TORCH_ARG(double, momentum) = 0.9;
  TORCH_ARG(double, weight_decay) = 5e-4;
  TORCH_ARG(double, trust_coefficient) = 0.001;
  TORCH_ARG(double, eps) = 1e-9;
  TORCH_ARG(bool, nesterov) = false;
  // Layer-wise adaptation on (the default) or off for this group.
  TORCH_ARG(bool, adapt) = true;

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override;
  void set_lr(const double lr) override;
};

struct LarsParamState
    : public torch::optim::OptimizerCloneableParamState<LarsParamState> {
  TORCH_ARG(torch::Tensor, momentum_buffer);

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
};

// Thread-compatible, like every LibTorch optimizer.
class Lars : public torch::optim::Optimizer {
 public:
  explicit Lars(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                LarsOptions defaults = {});
  explicit Lars(std::vector<torch::Tensor> params, LarsOptions defaults = {})
      : Lars({torch::optim::OptimizerParamGroup(std::move(params))},
             std::move(defaults)) {}

  torch::Tensor step(LossClosure closure = nullptr) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

  // Per-tensor trust ratios of the last step, when enabled.
  TrustRatios& trust_ratios() { return trust_ratios_; }

 private:
  TrustRatios trust_ratios_;

  template <typename Self, typename Archive>
  static void serialize(Self& self, Archive& archive) {
    _TORCH_OPTIM_SERIALIZE_WITH_TEMPLATE_ARG(Lars);
  }
};

}  // namespace megabatch::optim

#endif  // MEGABATCH_WORKER_TRAINER_OPTIM_LARS_H_
