#include "worker/trainer/trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>

#include "worker/trainer/models/models.h"
#include "worker/trainer/optim/registry.h"

namespace megabatch::trainer {
namespace {

constexpr int64_t kEvalBatch = 2000;

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

struct Evaluation {
  double loss = 0;
  double accuracy = 0;
};

Evaluation Evaluate(torch::nn::Sequential& model, const torch::Tensor& images,
                    const torch::Tensor& labels) {
  torch::NoGradGuard no_grad;
  model->eval();
  int64_t n = images.size(0);
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t i = 0; i < n; i += kEvalBatch) {
    int64_t end = std::min(n, i + kEvalBatch);
    torch::Tensor logits = model->forward(images.slice(0, i, end));
    torch::Tensor y = labels.slice(0, i, end);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, y,
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(
                        torch::kSum))
                    .item<double>();
    correct += logits.argmax(1).eq(y).sum().item<int64_t>();
  }
  model->train();
  return {loss_sum / n, static_cast<double>(correct) / n};
}

}  // namespace

Result<TrialResult> RunTrial(const TrialConfig& config, const ImageDataset& data,
                             MetricSink* sink) {
  torch::manual_seed(static_cast<uint64_t>(config.seed));
  torch::set_num_threads(config.threads);
  auto model_or = BuildModel(config);
  if (!model_or.ok()) return model_or.status();
  torch::nn::Sequential model = *model_or;
  auto optimizer_or = MakeOptimizer(config.optimizer, *model, config.lr);
  if (!optimizer_or.ok()) return optimizer_or.status();
  torch::optim::Optimizer& optimizer = **optimizer_or;

  const int64_t n = data.train_images.size(0);
  if (config.batch_size > n) {
    return InvalidArgumentError("batch_size: " +
                                std::to_string(config.batch_size) +
                                " exceeds the training set's " +
                                std::to_string(n) + " samples");
  }
  const int64_t steps_per_epoch = StepsPerEpoch(config, n);
  const int64_t total_steps = TotalSteps(config, n);
  const LrSchedule schedule{config.lr, WarmupSteps(config, n), total_steps,
                            config.decay, config.power};
  const int64_t micro = config.micro_batch_size;
  const int64_t accumulation = config.batch_size / micro;
  // Each micro-batch loss is a mean over `micro` samples; scaling by
  // micro / batch makes the accumulated gradient the full batch's.
  const double loss_scale = static_cast<double>(micro) / config.batch_size;

  at::Generator shuffle = at::make_generator<at::CPUGeneratorImpl>(
      static_cast<uint64_t>(config.seed));
  torch::Tensor order;
  double first_loss = std::nan("");
  double train_seconds = 0;
  bool target_reached = false;
  model->train();

  TrialResult result;
  auto finish = [&]() -> Result<TrialResult> {
    for (const auto& p : model->parameters()) {
      result.parameters.push_back(p.detach().clone());
    }
    return result;
  };
  for (int64_t step = 1; step <= total_steps; ++step) {
    int64_t in_epoch = (step - 1) % steps_per_epoch;
    if (in_epoch == 0) order = torch::randperm(n, shuffle, torch::kInt64);
    auto start = Clock::now();
    double lr = schedule.At(step);
    SetLearningRate(optimizer, lr);
    optimizer.zero_grad();
    double loss_value = 0;
    for (int64_t k = 0; k < accumulation; ++k) {
      int64_t begin = in_epoch * config.batch_size + k * micro;
      torch::Tensor idx = order.slice(0, begin, begin + micro);
      torch::Tensor x = data.train_images.index_select(0, idx);
      torch::Tensor y = data.train_labels.index_select(0, idx);
      torch::Tensor loss =
          torch::nn::functional::cross_entropy(model->forward(x), y) *
          loss_scale;
      loss.backward();
      loss_value += loss.item<double>();
    }
    optimizer.step();
    double step_seconds = Seconds(Clock::now() - start);
    train_seconds += step_seconds;
    result.steps = step;

    sink->Log(step, {{"train_loss", loss_value},
                     {"lr", lr},
                     {"samples_per_second", config.batch_size / step_seconds}});
    if (step == 1) first_loss = loss_value;
    if (!std::isfinite(loss_value) ||
        loss_value > config.divergence_factor * first_loss) {
      result.outcome = Outcome::kDiverged;
      result.message = "train_loss " + std::to_string(loss_value) +
                       " at step " + std::to_string(step) +
                       " (first step: " + std::to_string(first_loss) + ")";
      return finish();
    }

    bool eval_now = config.eval_every_steps > 0
                        ? step % config.eval_every_steps == 0
                        : step % steps_per_epoch == 0;
    if (!eval_now && step != total_steps) continue;
    Evaluation ev = Evaluate(model, data.test_images, data.test_labels);
    Metrics eval_metrics = {
        {"test_loss", ev.loss},
        {"test_accuracy", ev.accuracy},
        {"epoch", static_cast<double>(step) / steps_per_epoch}};
    bool reached = false;
    if (!config.target_metric.empty() && !target_reached) {
      reached = config.target_metric == "test_accuracy"
                    ? ev.accuracy >= config.target_value
                    : ev.loss <= config.target_value;
    }
    if (reached) {
      target_reached = true;
      eval_metrics.push_back({"target_reached_seconds", train_seconds});
      eval_metrics.push_back(
          {"target_reached_samples",
           static_cast<double>(step) * static_cast<double>(config.batch_size)});
    }
    sink->Log(step, eval_metrics);
    if (reached && config.target_stop) {
      result.message = "target reached at step " + std::to_string(step);
      return finish();
    }
  }
  return finish();
}

}  // namespace megabatch::trainer
