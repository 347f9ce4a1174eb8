#include "worker/trainer/models/models.h"

namespace megabatch::trainer {
namespace {
constexpr int64_t kImagePixels = 28 * 28;
constexpr int64_t kClasses = 10;
}  // namespace

Result<torch::nn::Sequential> BuildModel(const TrialConfig& config) {
  if (config.model_type != "mlp") {
    return InvalidArgumentError("model.type: unknown model '" +
                                config.model_type + "'");
  }
  torch::nn::Sequential net;
  net->push_back(torch::nn::Flatten());
  int64_t in = kImagePixels;
  for (int64_t width : config.hidden) {
    net->push_back(torch::nn::Linear(in, width));
    net->push_back(torch::nn::ReLU());
    in = width;
  }
  net->push_back(torch::nn::Linear(in, kClasses));
  return net;
}

}  // namespace megabatch::trainer
