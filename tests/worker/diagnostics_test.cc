// DiagnosticsCollector on its own: weight and update norms of a step, and
// the trust ratios LAMB recorded (its use in a trial: TrainerTest).
#include "worker/trainer/diagnostics.h"

#include <gtest/gtest.h>

#include <map>

#include "worker/trainer/optim/lamb.h"

namespace megabatch::trainer {
namespace {

std::map<std::string, double> AsMap(const Metrics& metrics) {
  return {metrics.begin(), metrics.end()};
}

TEST(DiagnosticsTest, NormsOfTheWeightsAndOfTheUpdateBetweenBeginAndCollect) {
  torch::Tensor w = torch::tensor({3.0, 4.0}, torch::kFloat64);
  DiagnosticsCollector diagnostics({w}, {"w"}, nullptr);
  diagnostics.Begin();
  {
    torch::NoGradGuard no_grad;
    w.add_(torch::tensor({0.0, 1.0}, torch::kFloat64));  // 3,4 -> 3,5
  }
  const auto got = AsMap(diagnostics.Collect());
  EXPECT_DOUBLE_EQ(got.at("weight_norm/w"), std::sqrt(34.0));
  EXPECT_DOUBLE_EQ(got.at("update_norm/w"), 1.0);
  EXPECT_EQ(got.count("trust_ratio/w"), 0u);  // no recorder
}

TEST(DiagnosticsTest, LambsTrustRatiosAreRecordedOnlyWhileCollecting) {
  torch::Tensor w = torch::ones({4}, torch::requires_grad());
  optim::Lamb lamb(std::vector<torch::Tensor>{w}, optim::LambOptions(0.1));
  DiagnosticsCollector diagnostics({w}, {"w"}, &lamb.trust_ratios());
  w.mutable_grad() = torch::full({4}, 0.5);
  diagnostics.Begin();
  lamb.step();
  const auto got = AsMap(diagnostics.Collect());
  ASSERT_EQ(got.count("trust_ratio/w"), 1u);
  EXPECT_GT(got.at("trust_ratio/w"), 0.0);
  EXPECT_GT(got.at("update_norm/w"), 0.0);
  // Recording is off again after Collect.
  EXPECT_FALSE(lamb.trust_ratios().enabled());
}

}  // namespace
}  // namespace megabatch::trainer
