#include "worker/trainer/models/models.h"

namespace megabatch::trainer {
namespace {
constexpr int64_t kImagePixels = 28 * 28;
constexpr int64_t kClasses = 10;

constexpr int64_t kImageSide = 28;
}  // namespace

Result<torch::nn::Sequential> BuildModel(const TrialConfig& config) {
  torch::nn::Sequential net;
  int64_t in = kImagePixels;
  if (config.model_type == "cnn") {
    int64_t channels = 1, side = kImageSide;
    for (int64_t out : config.channels) {
      if (side < 2) {
        return InvalidArgumentError(
            "model.channels: too many pooling stages for 28x28 images");
      }
      net->push_back(torch::nn::Conv2d(
          torch::nn::Conv2dOptions(channels, out, 3).padding(1).bias(false)));
      net->push_back(torch::nn::BatchNorm2d(out));
      net->push_back(torch::nn::ReLU());
      net->push_back(torch::nn::MaxPool2d(2));
      channels = out;
      side /= 2;
    }
    in = channels * side * side;
  } else if (config.model_type != "mlp") {
    return InvalidArgumentError("model.type: unknown model '" +
                                config.model_type + "'");
  }
  net->push_back(torch::nn::Flatten());
  for (int64_t width : config.hidden) {
    net->push_back(torch::nn::Linear(in, width));
    net->push_back(torch::nn::ReLU());
    in = width;
  }
  net->push_back(torch::nn::Linear(in, kClasses));
  return net;
}

}  // namespace megabatch::trainer
