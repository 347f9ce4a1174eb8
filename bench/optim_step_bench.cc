// Optimizer-step benchmark: megabatch's Lamb and Lars against LibTorch's Adam
// and SGD(momentum), on 1M, 25M and 100M parameters shaped like transformer
// blocks (matrices plus bias and LayerNorm vectors), with a STREAM-style
// triad measured in the same run as the bandwidth ceiling.
//
// Every optimizer steps the same parameters and gradients. Each round runs
// the triad and the four optimizers once, in rotating order; a ratio
// (lamb/adam, lars/sgd, x/triad) is taken within each round and the median
// over rounds is printed, so slow drift of a shared machine cancels out.
// Bandwidth counts each algorithm's minimal memory traffic per parameter
// (float32): Adam 7 streams (read w g m v, write w m v), Lamb 10 (its two
// passes: read g m v w, write m v; read m v w, write w), SGD 5 (read w g buf,
// write w buf), Lars 7 (read w g; read w g buf, write w buf). Triad a = b + s c
// counts 3.
//
// Usage: optim_step_bench [--sizes 1,25,100] [--rounds N]
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "worker/trainer/optim/fused_cpu.h"
#include "worker/trainer/optim/lamb.h"
#include "worker/trainer/optim/lars.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  int64_t millions;
  int64_t d;
  int64_t blocks;
};

// Per block: Wqkv [d, 3d], Wo [d, d], W1 [d, 4d], W2 [4d, d], their biases,
// and two LayerNorms (weight, bias): 12 d^2 + 13 d parameters.
std::vector<torch::Tensor> MakeParams(const Shape& s) {
  std::vector<torch::Tensor> params;
  auto add = [&](std::vector<int64_t> shape) {
    params.push_back(torch::randn(shape) * 0.02);
  };
  for (int64_t b = 0; b < s.blocks; ++b) {
    add({s.d, 3 * s.d});
    add({3 * s.d});
    add({s.d, s.d});
    add({s.d});
    add({s.d, 4 * s.d});
    add({4 * s.d});
    add({4 * s.d, s.d});
    add({s.d});
    for (int i = 0; i < 4; ++i) add({s.d});
  }
  return params;
}

// The triad, built for the best vector width the machine has, like the
// fused optimizer loops it is compared with.
MEGABATCH_MULTIVERSION void Triad(float* a, const float* b, const float* c,
                                  int64_t lo, int64_t hi) {
#pragma omp simd
  for (int64_t i = lo; i < hi; ++i) a[i] = b[i] + 3.0f * c[i];
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double TimeOnce(const std::function<void()>& fn) {
  auto start = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Entry {
  std::string name;
  double streams;  // float32 streams of minimal traffic per parameter
  std::function<void()> step;
  std::vector<double> seconds;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> sizes = {1, 25, 100};
  int rounds = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--sizes") && i + 1 < argc) {
      sizes.clear();
      for (char* tok = std::strtok(argv[++i], ","); tok;
           tok = std::strtok(nullptr, ",")) {
        sizes.push_back(std::atoll(tok));
      }
    } else if (!std::strcmp(argv[i], "--rounds") && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: optim_step_bench [--sizes 1,25,100] [--rounds N]\n");
      return 2;
    }
  }
  const std::vector<Shape> shapes = {{1, 288, 1}, {25, 512, 8}, {100, 1024, 8}};
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;
  std::printf("threads: %d (at::get_num_threads)\n", at::get_num_threads());
  std::printf("%-6s %11s %10s %10s %10s %10s %9s %9s %8s %8s %8s %8s %8s\n",
              "params", "triad GB/s", "lamb ms", "adam ms", "lars ms", "sgd ms",
              "lamb/adam", "lars/sgd", "lamb %", "adam %", "lars %", "sgd %",
              "rounds");
  for (const Shape& shape : shapes) {
    if (std::find(sizes.begin(), sizes.end(), shape.millions) == sizes.end())
      continue;
    std::vector<torch::Tensor> params = MakeParams(shape);
    int64_t n = 0;
    for (auto& p : params) {
      p.mutable_grad() = torch::randn(p.sizes()) * 1e-3;
      n += p.numel();
    }
    megabatch::optim::Lamb lamb(params, megabatch::optim::LambOptions(1e-4));
    megabatch::optim::Lars lars(params, megabatch::optim::LarsOptions(1e-2));
    torch::optim::Adam adam(params, torch::optim::AdamOptions(1e-4));
    torch::optim::SGD sgd(params, torch::optim::SGDOptions(1e-4).momentum(0.9));

    torch::Tensor a = torch::empty({n}), b = torch::rand({n}),
                  c = torch::rand({n});
    float* ap = a.data_ptr<float>();
    const float* bp = b.data_ptr<float>();
    const float* cp = c.data_ptr<float>();
    std::vector<Entry> entries = {
        {"triad",
         3,
         [&] {
           at::parallel_for(0, n, 1 << 15, [&](int64_t lo, int64_t hi) {
             Triad(ap, bp, cp, lo, hi);
           });
         },
         {}},
        {"lamb", 10, [&] { lamb.step(); }, {}},
        {"adam", 7, [&] { adam.step(); }, {}},
        {"lars", 7, [&] { lars.step(); }, {}},
        {"sgd", 5, [&] { sgd.step(); }, {}},
    };
    for (auto& e : entries) e.step();  // warm-up: allocates optimizer state
    int r = rounds > 0 ? rounds
                       : (shape.millions >= 100  ? 7
                          : shape.millions >= 25 ? 15
                                                 : 41);
    for (int round = 0; round < r; ++round) {
      for (size_t k = 0; k < entries.size(); ++k) {
        Entry& e = entries[(k + round) % entries.size()];
        e.seconds.push_back(TimeOnce(e.step));
      }
    }
    auto find = [&](const char* name) -> const Entry& {
      for (auto& e : entries) {
        if (e.name == name) return e;
      }
      throw std::logic_error(name);
    };
    auto median_ms = [&](const char* name) {
      return Median(find(name).seconds) * 1e3;
    };
    // Median over rounds of the within-round ratio a/b.
    auto ratio = [&](const char* a, const char* b) {
      std::vector<double> r;
      for (size_t i = 0; i < find(a).seconds.size(); ++i) {
        r.push_back(find(a).seconds[i] / find(b).seconds[i]);
      }
      return Median(r);
    };
    // Bandwidth achieved as a share of the triad's, within each round.
    auto share = [&](const char* name) {
      return ratio("triad", name) * find(name).streams / find("triad").streams;
    };
    double triad_gbps = 3 * 4.0 * n / Median(find("triad").seconds) / 1e9;
    std::printf(
        "%-6s %11.2f %10.2f %10.2f %10.2f %10.2f %9.3f %9.3f %7.0f%% %7.0f%% "
        "%7.0f%% %7.0f%% %8d\n",
        (std::to_string(n / 1000000) + "." + std::to_string(n / 100000 % 10) +
         "M")
            .c_str(),
        triad_gbps, median_ms("lamb"), median_ms("adam"), median_ms("lars"),
        median_ms("sgd"), ratio("lamb", "adam"), ratio("lars", "sgd"),
        100 * share("lamb"), 100 * share("adam"), 100 * share("lars"),
        100 * share("sgd"), r);
    std::fflush(stdout);
  }
  return 0;
}
