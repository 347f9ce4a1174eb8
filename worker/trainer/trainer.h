// RunTrial: trains one trial to its budget (or its target, or divergence),
// reporting every step's metrics to a MetricSink.
#ifndef MEGABATCH_WORKER_TRAINER_TRAINER_H_
#define MEGABATCH_WORKER_TRAINER_TRAINER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "worker/trainer/data/fashion_mnist.h"
#include "worker/trainer/tasks/task.h"
#include "worker/trainer/trial_config.h"

namespace megabatch::trainer {

// Receives metrics as they are produced. Used only from the training thread.
class MetricSink {
 public:
  virtual ~MetricSink() = default;
  // Metrics logged at optimizer step `step` (1-based).
  virtual void Log(int64_t step, const Metrics& metrics) = 0;
  // A checkpoint of the state after `step` is complete at `path`.
  virtual void Checkpointed(int64_t /*step*/, const std::string& /*path*/) {}
};

// kPreempted: RequestPreemption() came; the trial stopped after a step,
// with a checkpoint of it written, to be resumed elsewhere.
enum class Outcome { kCompleted, kDiverged, kPreempted };

// Asks the running trial to stop at its next step boundary with a
// checkpoint (the worker's drain: SIGUSR1 to the trainer). Async-signal-safe.
// A data-parallel trial does not stop (its ranks would have to agree); its
// worker gives it back from its last periodic checkpoint.
void RequestPreemption();

struct TrialResult {
  Outcome outcome = Outcome::kCompleted;
  int64_t steps = 0;
  std::string message;
  // The model's parameters when the trial ended (copies).
  std::vector<torch::Tensor> parameters;
};

// Trains `config`'s model on `task` (docs/method.md has every formula). Per
// step it logs train_loss, lr, samples_per_second and grad_norm (the global
// gradient norm before clipping), train_samples at step 1, and, when the
// gradient noise scale is measured, gns_gradient_sq, gns_trace and
// gradient_noise_scale (EMAs over 5% of the trial's steps) and
// noise_scale_at_{10,50,100}pct at those points of the budget. At each
// evaluation (and at step 0 when there is a target) val_loss, val_accuracy,
// epoch (samples / n) and the task's own metrics (val_bpc; val_mlm_loss,
// val_mlm_accuracy); when the target is first reached
// target_reached_samples, target_reached_steps and target_reached_seconds
// (interpolated between the evaluations that bracket it),
// target_bracket_samples (the earlier of the two) and noise_scale_at_target.
// A trial that completes logs test_loss and test_accuracy once, at its last
// step (image tasks). `sink` must outlive the call.
//
// With a non-empty `resume_from` it first restores that checkpoint (model,
// optimizer, data order, RNG and loop state) and continues after its step, so
// that every later metric equals the uninterrupted run's (samples_per_second
// aside). Errors: NOT_FOUND / DATA_LOSS for a missing or unreadable
// checkpoint, INVALID_ARGUMENT for one written by a different config.
Result<TrialResult> RunTrial(const TrialConfig& config, Task& task,
                             MetricSink* sink,
                             const std::string& resume_from = "");
// The image task (mlp, cnn) on `data`.
Result<TrialResult> RunTrial(const TrialConfig& config,
                             const ImageDataset& data, MetricSink* sink,
                             const std::string& resume_from = "");

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_TRAINER_H_
