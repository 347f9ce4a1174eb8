#include "worker/trainer/check.h"

#include <ATen/Version.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "worker/trainer/data/fashion_mnist.h"
#include "worker/trainer/optim/registry.h"
#include "worker/trainer/trainer.h"

namespace megabatch::trainer {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

class CollectingSink : public MetricSink {
 public:
  void Log(int64_t /*step*/, const Metrics& metrics) override {
    for (const auto& [name, value] : metrics) {
      if (name == "train_loss") losses.push_back(value);
      if (name == "samples_per_second") speeds.push_back(value);
    }
  }
  std::vector<double> losses, speeds;
};

// 20 steps of the MLP with LAMB on `device` in `precision`: ok when it ran
// and the loss fell.
json Smoke(const ImageDataset& data, const std::string& device,
           const std::string& precision, int threads) {
  json result = {{"device", device}, {"precision", precision}};
  auto config =
      ParseTrialConfig({{"model", {{"type", "mlp"}, {"hidden", {256}}}},
                        {"optimizer", {{"name", "lamb"}}},
                        {"batch_size", 512},
                        {"lr", 0.01},
                        {"budget", {{"steps", 20}}},
                        {"device", device},
                        {"precision", precision},
                        {"threads", threads}});
  if (!config.ok()) {
    result["error"] = config.status().ToString();
    return result;
  }
  CollectingSink sink;
  auto run = RunTrial(*config, data, &sink);
  if (!run.ok()) {
    result["error"] = run.status().ToString();
  } else if (sink.losses.size() != 20 ||
             !(sink.losses.back() < sink.losses.front())) {
    result["error"] = "the loss did not fall in 20 steps";
  } else {
    std::vector<double> speeds(sink.speeds.begin() + 5, sink.speeds.end());
    std::sort(speeds.begin(), speeds.end());
    result["samples_per_second"] = speeds[speeds.size() / 2];
    result["first_loss"] = sink.losses.front();
    result["last_loss"] = sink.losses.back();
  }
  result["ok"] = !result.contains("error");
  return result;
}

// LAMB steps on a 1,000 x 1,000 layer (1M parameters): parameters per second.
double OptimizerStepRate(int threads) {
  torch::set_num_threads(threads);
  torch::nn::Linear layer(1000, 1000);
  for (auto& p : layer->parameters()) p.mutable_grad() = torch::randn_like(p);
  auto optimizer = MakeOptimizer({{"name", "lamb"}}, *layer, 0.001);
  if (!optimizer.ok()) return 0;
  (*optimizer)->step();  // state allocated outside the timing
  const auto start = Clock::now();
  constexpr int kSteps = 20;
  for (int i = 0; i < kSteps; ++i) (*optimizer)->step();
  const double seconds =
      std::chrono::duration<double>(Clock::now() - start).count();
  return kSteps * 1001000.0 / seconds;
}

}  // namespace

json RunSelfCheck(const std::string& dataset_dir, int threads) {
  json out;
  json problems = json::array();
  out["libtorch"] = TORCH_VERSION;
  out["threads"] = threads;
  out["cpu_cores"] = std::thread::hardware_concurrency();
  // The BLAS LibTorch was built for, and the library this process loaded
  // (Debian's LibTorch calls the system one: netlib's reference BLAS is
  // ~15x slower than OpenBLAS).
  const std::string config = at::show_config();
  std::string blas = "BLAS_INFO not reported";
  if (auto at = config.find("BLAS_INFO="); at != std::string::npos) {
    blas = config.substr(at, config.find(',', at) - at);
  }
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto path = line.find('/');
    if (path == std::string::npos ||
        line.find("cublas", path) != std::string::npos)
      continue;
    if (line.find("blas", path) != std::string::npos ||
        line.find("libmkl", path) != std::string::npos) {
      blas += "; loaded " + line.substr(path);
      break;
    }
  }
  out["blas"] = blas;
  const bool cuda = torch::cuda::is_available();
  json gpu = {{"available", cuda},
              {"devices", cuda ? torch::cuda::device_count() : 0},
              {"cudnn", cuda && torch::cuda::cudnn_is_available()}};
  if (cuda) {
    try {
      auto a = torch::ones({16, 16},
                           torch::dtype(torch::kBFloat16).device(torch::kCUDA));
      gpu["bf16"] = a.matmul(a).sum().item<float>() == 16.0f * 256;
    } catch (const std::exception&) {
      gpu["bf16"] = false;
    }
  }
  out["cuda"] = gpu;
#ifdef MEGABATCH_C10D_GLOO
  out["gloo"] = true;
#else
  out["gloo"] = false;
#endif
#ifdef MEGABATCH_C10D_NCCL
  out["nccl"] = true;
#else
  out["nccl"] = false;
#endif
  auto data = LoadFashionMnist(dataset_dir);
  json smoke = json::array();
  if (!data.ok()) {
    problems.push_back(
        "Fashion-MNIST at " + dataset_dir + ": " + data.status().ToString() +
        " (image trials would fail; install dataset-fashion-mnist)");
  } else {
    smoke.push_back(Smoke(*data, "cpu", "fp32", threads));
    if (cuda) {
      smoke.push_back(Smoke(*data, "cuda", "fp32", threads));
      smoke.push_back(Smoke(*data, "cuda", "bf16", threads));
    }
    for (const json& s : smoke) {
      if (!s["ok"].get<bool>()) {
        problems.push_back("smoke training on " +
                           s["device"].get<std::string>() + " " +
                           s["precision"].get<std::string>() + ": " +
                           s["error"].get<std::string>());
      }
    }
  }
  out["smoke"] = smoke;
  out["lamb_parameters_per_second"] = OptimizerStepRate(threads);
  out["problems"] = problems;
  return out;
}

}  // namespace megabatch::trainer
