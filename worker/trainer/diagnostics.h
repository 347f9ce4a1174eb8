// Per-parameter diagnostics at every diagnostics_every_steps-th step: each
// tensor's weight norm, the norm of the step's update, and (LAMB, LARS) the
// trust ratio the optimizer applied. Begin() before optimizer.step(),
// Collect() after it.
#ifndef MEGABATCH_WORKER_TRAINER_DIAGNOSTICS_H_
#define MEGABATCH_WORKER_TRAINER_DIAGNOSTICS_H_

#include <torch/torch.h>

#include <string>
#include <vector>

#include "worker/trainer/optim/trust_ratios.h"
#include "worker/trainer/tasks/task.h"

namespace megabatch::trainer {

class DiagnosticsCollector {
 public:
  // `trust_ratios`: the optimizer's recorder, or nullptr for one without.
  DiagnosticsCollector(std::vector<torch::Tensor> params,
                       std::vector<std::string> names,
                       optim::TrustRatios* trust_ratios);

  // Snapshots the weights and turns trust-ratio recording on.
  void Begin();
  // weight_norm/NAME, update_norm/NAME and trust_ratio/NAME for every
  // parameter; turns recording off again.
  Metrics Collect();

 private:
  std::vector<torch::Tensor> params_;
  std::vector<std::string> names_;
  optim::TrustRatios* trust_ratios_;
  std::vector<torch::Tensor> before_;
};

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_DIAGNOSTICS_H_
