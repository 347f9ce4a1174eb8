// TrustRatios: what Lamb and Lars record, per tensor, about their last step
// when asked to (for the trainer's per-layer diagnostics). Off by default, so
// a normal step pays nothing.
#ifndef MEGABATCH_WORKER_TRAINER_OPTIM_TRUST_RATIOS_H_
#define MEGABATCH_WORKER_TRAINER_OPTIM_TRUST_RATIOS_H_

#include <torch/types.h>

#include <utility>
#include <vector>

namespace megabatch::optim {

// Used only from the training thread.
class TrustRatios {
 public:
  void set_enabled(bool enabled) {
    enabled_ = enabled;
    entries_.clear();
  }
  bool enabled() const { return enabled_; }

  // Called by the optimizer at the start of step() and per adapted tensor.
  void Clear() { entries_.clear(); }
  void Record(const torch::Tensor& param, torch::Tensor ratio) {
    if (enabled_) entries_.emplace_back(param.unsafeGetTensorImpl(), ratio);
  }

  // (parameter, ratio) for every adapted tensor of the last step, in step
  // order. Reads device values, so it synchronises with a GPU.
  std::vector<std::pair<const c10::TensorImpl*, double>> Last() const {
    std::vector<std::pair<const c10::TensorImpl*, double>> out;
    for (const auto& [impl, ratio] : entries_) {
      out.emplace_back(impl, ratio.item<double>());
    }
    return out;
  }

 private:
  bool enabled_ = false;
  std::vector<std::pair<const c10::TensorImpl*, torch::Tensor>> entries_;
};

}  // namespace megabatch::optim

#endif  // MEGABATCH_WORKER_TRAINER_OPTIM_TRUST_RATIOS_H_
