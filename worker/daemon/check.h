// `megabatch-worker --check`, the first thing to run on a new machine: what
// the trainer sees (megabatch-trainer --check: LibTorch, threads, BLAS,
// CUDA, bf16, c10d backends, a 20-step smoke training per device, the LAMB
// step rate), the GPUs NVML reports, whether the coordinator answers, and
// whether the work and artifacts directories take files. LibTorch-free.
#ifndef MEGABATCH_WORKER_DAEMON_CHECK_H_
#define MEGABATCH_WORKER_DAEMON_CHECK_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <ostream>
#include <string>

namespace megabatch::worker {

struct CheckOptions {
  std::string trainer_path;
  int threads = 1;
  std::string coordinator;  // its address, for the report
  std::shared_ptr<grpc::Channel> channel;
  std::string work_dir;
  std::string artifacts_dir;  // empty: none given here
};

// Prints the findings to `out`, then each problem that would make trials
// fail; returns 0 when there is none, else 1.
int RunCheck(const CheckOptions& options, std::ostream& out);

}  // namespace megabatch::worker

#endif  // MEGABATCH_WORKER_DAEMON_CHECK_H_
