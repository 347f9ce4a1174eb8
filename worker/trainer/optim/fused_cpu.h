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

// Compiles a loop kernel twice, for AVX2 and for the baseline, and picks one
// at run time. No FMA: the arithmetic is the same in both, only the width of
// the partial sums (and so their rounding) differs.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MEGABATCH_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define MEGABATCH_MULTIVERSION
#endif

namespace megabatch::optim::fused {

// Element-wise loops run over chunks of kChunk. Sums run over chunks of
// kSumChunk: a float partial sum per SIMD lane then adds about 512 values
// (relative error ~1e-7), and chunk totals are added in double, in order.
// Float lanes keep the norm passes memory-bound on SSE2, where a double
// accumulator would halve the width and make them compute-bound.
inline constexpr int64_t kChunk = 1 << 15;
inline constexpr int64_t kSumChunk = 1 << 11;

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

// Runs fn(begin, end) -> std::array<double, K> over kSumChunk chunks of
// [0, n) in parallel and returns the element-wise sum of the results, in chunk
// order.
template <size_t K, typename Fn>
std::array<double, K> ChunkedSums(int64_t n, Fn fn) {
  int64_t chunks = (n + kSumChunk - 1) / kSumChunk;
  std::vector<std::array<double, K>> partial(chunks);
  at::parallel_for(
      0, chunks, kChunk / kSumChunk, [&](int64_t first, int64_t last) {
        for (int64_t c = first; c < last; ++c) {
          partial[c] = fn(c * kSumChunk, std::min(n, (c + 1) * kSumChunk));
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
