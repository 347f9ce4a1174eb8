// LAMB (You et al. 2019), written the way LibTorch writes AdamW: options via
// TORCH_ARG, lazily created per-parameter state, save()/load() through the
// serialize macros. The update, per tensor (docs/method.md, "Optimizers"):
//   m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
//   u  = m^ / (sqrt(v^) + eps) + wd w      (m^, v^ bias-corrected if enabled)
//   r  = ||w|| / ||u||  (1 if either is 0, or if adaptation does not apply)
//   w <- w - lr r u
// with optional global gradient clipping to max_grad_norm first (one norm
// over every parameter of every group), and optional trust_clip (r <= 1).
// Adaptation applies when always_adapt is set or weight_decay != 0, so a
// group with always_adapt(false).weight_decay(0) (biases, norms) is plain Adam.
//
// Contiguous float32 CPU tensors take a fused two-pass path; everything else
// (CUDA, other dtypes) runs the same math as tensor ops with no host sync.
#ifndef MEGABATCH_WORKER_TRAINER_OPTIM_LAMB_H_
#define MEGABATCH_WORKER_TRAINER_OPTIM_LAMB_H_

#include <torch/optim/optimizer.h>
#include <torch/optim/serialize.h>

#include <tuple>
#include <utility>
#include <vector>

#include "worker/trainer/optim/trust_ratios.h"

namespace megabatch::optim {

struct LambOptions
    : public torch::optim::OptimizerCloneableOptions<LambOptions> {
  LambOptions(double lr = 1e-3);  // NOLINT: implicit, as LibTorch's options
  TORCH_ARG(double, lr) = 1e-3;
  typedef std::tuple<double, double> betas_t;
  TORCH_ARG(betas_t, betas) = std::make_tuple(0.9, 0.999);
  TORCH_ARG(double, eps) = 1e-6;
  TORCH_ARG(double, weight_decay) = 0.01;
  TORCH_ARG(bool, bias_correction) = true;
  TORCH_ARG(bool, always_adapt) = true;
  TORCH_ARG(bool, trust_clip) = false;
  // Global clipping threshold; 0 turns clipping off. Read from the
  // optimizer's defaults (it is one norm over all groups).
  TORCH_ARG(double, max_grad_norm) = 0.0;

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  double get_lr() const override;
  void set_lr(const double lr) override;
};

struct LambParamState
    : public torch::optim::OptimizerCloneableParamState<LambParamState> {
  TORCH_ARG(int64_t, step) = 0;
  TORCH_ARG(torch::Tensor, exp_avg);
  TORCH_ARG(torch::Tensor, exp_avg_sq);

 public:
  void serialize(torch::serialize::InputArchive& archive) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
};

// Thread-compatible, like every LibTorch optimizer.
class Lamb : public torch::optim::Optimizer {
 public:
  explicit Lamb(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                LambOptions defaults = {});
  explicit Lamb(std::vector<torch::Tensor> params, LambOptions defaults = {})
      : Lamb({torch::optim::OptimizerParamGroup(std::move(params))},
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
    _TORCH_OPTIM_SERIALIZE_WITH_TEMPLATE_ARG(Lamb);
  }
};

}  // namespace megabatch::optim

#endif  // MEGABATCH_WORKER_TRAINER_OPTIM_LAMB_H_
