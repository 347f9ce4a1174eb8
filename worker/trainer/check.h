// `megabatch-trainer --check`: what a trainer on this machine sees and can
// do, for `megabatch-worker --check` (the first thing to run on a new
// machine): the LibTorch version, CPU threads and BLAS, CUDA devices, cuDNN,
// bf16, which c10d backends were built in, a 20-step smoke training of the
// MLP on every device a trial could use (fp32, and bf16 on a GPU), and the
// LAMB optimizer-step rate.
#ifndef MEGABATCH_WORKER_TRAINER_CHECK_H_
#define MEGABATCH_WORKER_TRAINER_CHECK_H_

#include <nlohmann/json.hpp>
#include <string>

namespace megabatch::trainer {

// The findings as one JSON object; "problems" lists, in words, whatever
// would make trials fail (empty when none would).
nlohmann::json RunSelfCheck(const std::string& dataset_dir, int threads);

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_CHECK_H_
