// The gradient noise scale B_simple (docs/method.md, "Gradient noise
// scale") against its analytic value: least-squares linear regression, whose
// per-example gradients are known in closed form, measured at the initial
// weights (a learning rate too small to move them).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <iostream>

#include "tests/testing/status_matchers.h"
#include "tests/testing/trainer_testing.h"
#include "worker/trainer/trainer.h"

namespace megabatch::trainer {
namespace {

using nlohmann::json;
using testing::RecordingSink;

constexpr int64_t kSamples = 32768;
constexpr int64_t kDims = 20;

// y = x·w* + noise, loss 0.5·(x·w - y)^2 per example.
class LinearRegressionTask : public Task {
 public:
  LinearRegressionTask() {
    torch::manual_seed(3);
    x_ = torch::randn({kSamples, kDims}, torch::kFloat64);
    torch::Tensor w_star = torch::randn({kDims, 1}, torch::kFloat64);
    y_ = x_.matmul(w_star) + torch::randn({kSamples, 1}, torch::kFloat64);
  }
  Result<std::shared_ptr<torch::nn::Module>> BuildModel() override {
    model_ = torch::nn::Linear(torch::nn::LinearOptions(kDims, 1).bias(false));
    model_->to(torch::kFloat64);
    return std::shared_ptr<torch::nn::Module>(model_.ptr());
  }
  void To(torch::Device) override {}
  int64_t train_size() const override { return kSamples; }
  torch::Tensor Loss(const torch::Tensor& samples, int64_t) override {
    torch::Tensor r = model_->forward(x_.index_select(0, samples)) -
                      y_.index_select(0, samples);
    return 0.5 * r.pow(2).mean();
  }
  Evaluation Evaluate(Split) override {
    return {
        (0.5 * (model_->forward(x_) - y_).pow(2).mean()).item<double>(), 0, {}};
  }

  // tr(Sigma) / |G|^2 over the whole set at the current weights, with
  // per-example gradients g_i = (x_i·w - y_i)·x_i.
  double AnalyticNoiseScale() {
    torch::NoGradGuard no_grad;
    torch::Tensor g = (model_->forward(x_) - y_) * x_;  // [n, d]
    torch::Tensor mean = g.mean(0);
    const double g2 = mean.pow(2).sum().item<double>();
    const double trace = g.pow(2).sum(1).mean().item<double>() - g2;
    return trace / g2;
  }

 private:
  torch::Tensor x_, y_;
  torch::nn::Linear model_{nullptr};
};

double Measured(json overrides, double* analytic) {
  json doc = {{"seed", 1},
              {"optimizer", {{"name", "sgd"}, {"momentum", 0}}},
              {"lr", 1e-12},
              {"batch_size", 1024},
              {"budget", {{"steps", 200}}},
              {"threads", 2}};
  doc.merge_patch(overrides);
  auto config = ParseTrialConfig(doc);
  EXPECT_OK(config);
  LinearRegressionTask task;
  RecordingSink sink;
  auto r = RunTrial(*config, task, &sink);
  EXPECT_OK(r);
  *analytic = task.AnalyticNoiseScale();
  auto at_end = sink.Named("noise_scale_at_100pct");
  if (!at_end.empty()) {
    std::cout << "B_simple: analytic " << *analytic << ", measured "
              << at_end[0].value << "\n";
  }
  EXPECT_EQ(at_end.size(), 1u);
  EXPECT_EQ(sink.Named("noise_scale_at_10pct").size(), 1u);
  EXPECT_EQ(sink.Named("noise_scale_at_50pct").size(), 1u);
  return at_end.empty() ? 0 : at_end[0].value;
}

TEST(NoiseScaleTest, AccumulationMeasuresTheAnalyticNoiseScale) {
  double analytic = 0;
  const double measured = Measured({{"micro_batch_size", 128}}, &analytic);
  // About d + 1 + sigma^2·d / |w - w*|^2 here.
  EXPECT_GT(analytic, kDims);
  EXPECT_NEAR(measured, analytic, 0.10 * analytic);
}

TEST(NoiseScaleTest, HalvesOfOneBatchMeasureItWithoutAccumulation) {
  double analytic = 0;
  const double measured = Measured({{"noise_scale", "always"}}, &analytic);
  EXPECT_NEAR(measured, analytic, 0.10 * analytic);
}

TEST(NoiseScaleTest, OffAndSingleMicroBatchLogNone) {
  for (json overrides :
       {json{{"noise_scale", "off"}, {"micro_batch_size", 128}},
        json::object()}) {
    json doc = {{"optimizer", {{"name", "sgd"}}},
                {"lr", 1e-12},
                {"batch_size", 256},
                {"budget", {{"steps", 3}}}};
    doc.merge_patch(overrides);
    auto config = ParseTrialConfig(doc);
    ASSERT_OK(config);
    LinearRegressionTask task;
    RecordingSink sink;
    ASSERT_TRUE(RunTrial(*config, task, &sink).ok());
    EXPECT_TRUE(sink.Named("gradient_noise_scale").empty()) << overrides.dump();
  }
}

}  // namespace
}  // namespace megabatch::trainer
