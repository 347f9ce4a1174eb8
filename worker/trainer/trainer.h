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

enum class Outcome { kCompleted, kDiverged };

struct TrialResult {
  Outcome outcome = Outcome::kCompleted;
  int64_t steps = 0;
  std::string message;
  // The model's parameters when the trial ended (copies).
  std::vector<torch::Tensor> parameters;
};

// Trains `config`'s model on `task`. Per step it logs train_loss, lr,
// samples_per_second and grad_norm (the global gradient norm), and with
// gradient accumulation the gradient noise scale (gradient_noise_scale =
// gns_trace / gns_gradient_sq, each an EMA over steps, LARGE_BATCH.md); at
// each evaluation test_loss, test_accuracy, epoch and the task's own
// metrics (val_bpc; val_mlm_loss, val_mlm_accuracy);
// when a target is first reached target_reached_seconds and
// target_reached_samples. `sink` must outlive the call.
//
// With a non-empty `resume_from` it first restores that checkpoint (model,
// optimizer, data order, RNG and loop state) and continues after its step, so
// that every later metric equals the uninterrupted run's (samples_per_second
// aside). Errors: NOT_FOUND / DATA_LOSS for a missing or unreadable
// checkpoint, INVALID_ARGUMENT for one written by a different config.
Result<TrialResult> RunTrial(const TrialConfig& config, Task& task, MetricSink* sink,
                             const std::string& resume_from = "");
// The image task (mlp, cnn) on `data`.
Result<TrialResult> RunTrial(const TrialConfig& config, const ImageDataset& data,
                             MetricSink* sink,
                             const std::string& resume_from = "");

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_TRAINER_H_
