// Data-parallel trials through torch's own c10d: a process group over the
// trial's ranks (Gloo on CPU, NCCL on CUDA when this LibTorch has it) and the
// per-step gradient all-reduce, in flat buckets. c10d stays out of this
// header; trainer.cc includes only this.
#ifndef MEGABATCH_WORKER_TRAINER_DISTRIBUTED_DATA_PARALLEL_H_
#define MEGABATCH_WORKER_TRAINER_DISTRIBUTED_DATA_PARALLEL_H_

#include <torch/types.h>

#include <memory>
#include <vector>

#include "common/status.h"
#include "worker/trainer/trial_config.h"

namespace megabatch::trainer {

class DataParallel {
 public:
  // Joins the trial's process group: rank 0 serves the c10d TCPStore at
  // config.rendezvous_host:rendezvous_port, every rank connects to it, and
  // every collective then fails after config.collective_timeout_s instead of
  // hanging on a lost rank. UNAVAILABLE (naming the rendezvous) when the
  // group cannot be formed in that time; UNIMPLEMENTED when this LibTorch
  // was built without the backend the device needs.
  static Result<std::unique_ptr<DataParallel>> Join(const TrialConfig& config,
                                                    torch::Device device);
  ~DataParallel();

  // Sums every parameter's gradient over the ranks, in place: the gradients
  // are packed into flat buckets of at most 25 MB, each bucket all-reduced
  // by one call (all buckets in flight at once), then unpacked. Parameters
  // without a gradient get zeros first, so every rank sends the same layout.
  // UNAVAILABLE when a rank failed or the collective timed out.
  Status SumGradients(const std::vector<torch::Tensor>& params);

  // Sums `values` over the ranks (float64; losses, flags).
  Result<std::vector<double>> Sum(const std::vector<double>& values);

  // Seconds spent in gradient all-reduces during the last SumGradients, and
  // the bytes it moved per rank (for the bandwidth figure).
  double last_seconds() const { return last_seconds_; }
  int64_t last_bytes() const { return last_bytes_; }

 private:
  struct Group;
  explicit DataParallel(std::unique_ptr<Group> group);

  std::unique_ptr<Group> group_;
  double last_seconds_ = 0;
  int64_t last_bytes_ = 0;
};

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_DISTRIBUTED_DATA_PARALLEL_H_
