// Helpers for the optimizers' fused CPU paths: which tensors qualify, and a
// parallel loop over fixed-size chunks whose partial sums are added in chunk
// order, so norms do not depend on the number of threads.
#ifndef MEGABATCH_WORKER_TRAINER_OPTIM_FUSED_CPU_H_
#define MEGABATCH_WORKER_TRAINER_OPTIM_FUSED_CPU_H_

#include <ATen/Parallel.h>
#include <torch/types.h>

#include <algorithm>
#include <array>
#include <vector>

namespace megabatch::optim::fused {

inline constexpr int64_t kChunk = 1 << 15;

// True when every tensor is a defined, contiguous float32 CPU tensor.
inline bool Eligible(std::initializer_list<const torch::Tensor*> tensors) {
  for (const torch::Tensor* t : tensors) {
    if (!t->defined() || !t->device().is_cpu() ||
        t->scalar_type() != torch::kFloat || !t->is_contiguous()) {
      return false;
    }
  }
  return true;
}

// Runs fn(begin, end) -> std::array<double, K> over chunks of [0, n) in
// parallel and returns the element-wise sum of the results, in chunk order.
template <size_t K, typename Fn>
std::array<double, K> ChunkedSums(int64_t n, Fn fn) {
  int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<std::array<double, K>> partial(chunks);
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      partial[c] = fn(c * kChunk, std::min(n, (c + 1) * kChunk));
    }
  });
  std::array<double, K> total{};
  for (const auto& p : partial) {
    for (size_t k = 0; k < K; ++k) total[k] += p[k];
  }
  return total;
}

// Runs fn(begin, end) over chunks of [0, n) in parallel.
template <typename Fn>
void ForChunks(int64_t n, Fn fn) {
  at::parallel_for(0, n, kChunk, fn);
}

}  // namespace megabatch::optim::fused

#endif  // MEGABATCH_WORKER_TRAINER_OPTIM_FUSED_CPU_H_
