// fp16 dynamic loss scaling, as torch.cuda.amp.GradScaler does it with its
// defaults: start at 2^16, halve on an overflowed gradient (and skip that
// step), double after 2000 clean steps in a row. Plain arithmetic, no
// LibTorch: the trainer multiplies the loss by scale() and divides the
// gradients by it.
#ifndef MEGABATCH_WORKER_TRAINER_LOSS_SCALER_H_
#define MEGABATCH_WORKER_TRAINER_LOSS_SCALER_H_

#include <cstdint>

namespace megabatch::trainer {

class LossScaler {
 public:
  static constexpr double kInitialScale = 65536.0;
  static constexpr int64_t kGrowthInterval = 2000;

  // Disabled: scale() is 1 and Update() never skips.
  explicit LossScaler(bool enabled)
      : enabled_(enabled), scale_(enabled ? kInitialScale : 1.0) {}

  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  int64_t clean_steps() const { return clean_steps_; }

  // After the backward pass: `finite` says whether the gradient is. Returns
  // whether the optimizer step must be skipped (an overflow).
  bool Update(bool finite) {
    if (!enabled_) return false;
    if (!finite) {
      scale_ /= 2;
      clean_steps_ = 0;
      return true;
    }
    if (++clean_steps_ == kGrowthInterval) {
      scale_ *= 2;
      clean_steps_ = 0;
    }
    return false;
  }

  // From a checkpoint.
  void Restore(double scale, int64_t clean_steps) {
    scale_ = scale;
    clean_steps_ = clean_steps;
  }

 private:
  bool enabled_;
  double scale_;
  int64_t clean_steps_ = 0;
};

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_LOSS_SCALER_H_
