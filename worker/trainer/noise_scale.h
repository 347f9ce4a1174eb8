// The gradient noise scale B_simple = tr(Sigma) / |G|^2 (docs/method.md,
// "Gradient noise scale"; McCandlish et al. 2018, App. A), estimated from
// the squared norms of small (micro-batch) and big (whole-batch) gradients
// at every step and smoothed with EMAs over a fixed share of the trial's
// steps. Plain arithmetic, no LibTorch: the trainer measures the norms.
#ifndef MEGABATCH_WORKER_TRAINER_NOISE_SCALE_H_
#define MEGABATCH_WORKER_TRAINER_NOISE_SCALE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/metric_catalog.h"

namespace megabatch::trainer {

class NoiseScaleEstimator {
 public:
  // The EMAs average over this fraction of the trial's steps, so every trial
  // averages over the same share of its budget whatever its batch size.
  static constexpr double kWindow = 0.05;

  // Unconfigured (a placeholder until the trial's sizes are known).
  NoiseScaleEstimator() : NoiseScaleEstimator(1, 2, 1, 1) {}
  // `small` samples per micro-batch, `big` per step, `micro_batches` of them
  // per step (over all ranks), `total_steps` in the trial.
  NoiseScaleEstimator(int64_t small, int64_t big, int64_t micro_batches,
                      int64_t total_steps)
      : small_(static_cast<double>(small)),
        big_(static_cast<double>(big)),
        micro_batches_(static_cast<double>(micro_batches)),
        total_steps_(total_steps),
        alpha_(std::min(1.0,
                        1.0 / (kWindow * static_cast<double>(total_steps)))) {}

  // One step's measurement: the sum over its micro-batches of |G_small|^2
  // and the whole batch's |G_big|^2.
  void Add(double small_sq_sum, double big_sq) {
    const double g_small = small_sq_sum / micro_batches_;
    const double g2 = (big_ * big_sq - small_ * g_small) / (big_ - small_);
    const double trace = (g_small - big_sq) / (1.0 / small_ - 1.0 / big_);
    gradient_sq_ = Ema(gradient_sq_, g2);
    trace_ = Ema(trace_, trace);
  }

  // The smoothed |G|^2 and tr(Sigma); NaN before the first Add.
  double gradient_sq() const { return gradient_sq_; }
  double trace() const { return trace_; }
  // B_simple, when |G|^2 is positive.
  bool has_value() const { return gradient_sq_ > 0; }
  double b_simple() const { return trace_ / gradient_sq_; }

  // The metrics a step logs after Add: the EMAs, B_simple, and at 10%, 50%
  // and 100% of the budget B_simple under its own name for comparison
  // across trials.
  std::vector<std::pair<std::string, double>> StepMetrics(int64_t step) const {
    std::vector<std::pair<std::string, double>> out = {
        {metric::kGnsGradientSq, gradient_sq_}, {metric::kGnsTrace, trace_}};
    if (!has_value()) return out;
    out.push_back({metric::kGradientNoiseScale, b_simple()});
    constexpr std::pair<double, const char*> kPoints[] = {
        {0.1, metric::kNoiseScaleAt10Pct},
        {0.5, metric::kNoiseScaleAt50Pct},
        {1.0, metric::kNoiseScaleAt100Pct}};
    for (const auto& [fraction, name] : kPoints) {
      const auto at =
          static_cast<int64_t>(std::ceil(fraction * total_steps_ - 1e-9));
      if (step == std::max<int64_t>(1, at)) out.push_back({name, b_simple()});
    }
    return out;
  }

  // From a checkpoint.
  void Restore(double gradient_sq, double trace) {
    gradient_sq_ = gradient_sq;
    trace_ = trace;
  }

 private:
  double Ema(double prev, double x) const {
    return std::isnan(prev) ? x : (1 - alpha_) * prev + alpha_ * x;
  }

  double small_, big_, micro_batches_;
  int64_t total_steps_;
  double alpha_;
  double gradient_sq_ = std::nan("");
  double trace_ = std::nan("");
};

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_NOISE_SCALE_H_
