// LAMB/LARS behaviour beyond single updates: per-group options reaching
// step(), save/load round trips, convergence, and the registry's groups.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "tests/testing/status_matchers.h"
#include "worker/trainer/optim/lamb.h"
#include "worker/trainer/optim/lars.h"
#include "worker/trainer/optim/registry.h"

namespace megabatch::optim {
namespace {

using torch::optim::OptimizerParamGroup;

TEST(LambTest, EachGroupsOwnOptionsReachStep) {
  torch::manual_seed(1);
  torch::Tensor adapted = torch::randn({5, 4});
  torch::Tensor plain = torch::randn({4});
  torch::Tensor a0 = adapted.clone(), p0 = plain.clone();
  std::vector<OptimizerParamGroup> groups;
  groups.emplace_back(
      std::vector<torch::Tensor>{adapted},
      std::make_unique<LambOptions>(LambOptions(0.1).weight_decay(0.01)));
  groups.emplace_back(
      std::vector<torch::Tensor>{plain},
      std::make_unique<LambOptions>(
          LambOptions(0.5).weight_decay(0).always_adapt(false)));
  // The defaults differ from both groups: a group falling back to them shows.
  Lamb lamb(std::move(groups), LambOptions(7.0).weight_decay(0.3));
  torch::Tensor g_adapted = torch::randn({5, 4}), g_plain = torch::randn({4});
  adapted.mutable_grad() = g_adapted;
  plain.mutable_grad() = g_plain;
  lamb.step();
  // Adapted group: the trust ratio makes ||dw|| = lr ||w|| exactly.
  double moved = (adapted - a0).norm().item<double>();
  EXPECT_NEAR(moved, 0.1 * a0.norm().item<double>(), 1e-6 * moved);
  // Plain group: first step of bias-corrected Adam, g / (|g| + eps), lr 0.5.
  torch::Tensor want = p0 - 0.5 * g_plain / (g_plain.abs() + 1e-6);
  EXPECT_TRUE(torch::allclose(plain, want, 1e-6, 1e-7));
}

TEST(LarsTest, EachGroupsOwnOptionsReachStep) {
  torch::manual_seed(2);
  torch::Tensor adapted = torch::randn({6, 3});
  torch::Tensor plain = torch::randn({3});
  torch::Tensor a0 = adapted.clone(), p0 = plain.clone();
  std::vector<OptimizerParamGroup> groups;
  groups.emplace_back(
      std::vector<torch::Tensor>{adapted},
      std::make_unique<LarsOptions>(
          LarsOptions(2.0).weight_decay(0).trust_coefficient(0.01)));
  groups.emplace_back(std::vector<torch::Tensor>{plain},
                      std::make_unique<LarsOptions>(
                          LarsOptions(0.25).weight_decay(0).adapt(false)));
  Lars lars(std::move(groups), LarsOptions(9.0));
  torch::Tensor g_adapted = torch::randn({6, 3}), g_plain = torch::randn({3});
  adapted.mutable_grad() = g_adapted;
  plain.mutable_grad() = g_plain;
  lars.step();
  // First step: dw = lr * tc * ||w|| / ||g|| * g, so ||dw|| = lr tc ||w||.
  double moved = (adapted - a0).norm().item<double>();
  EXPECT_NEAR(moved, 2.0 * 0.01 * a0.norm().item<double>(), 1e-6 * moved);
  EXPECT_TRUE(torch::allclose(plain, p0 - 0.25 * g_plain, 1e-6, 1e-7));
}

template <typename Opt, typename Options>
void ExpectSaveLoadRoundTrip(Options options) {
  torch::manual_seed(3);
  std::vector<torch::Tensor> a = {torch::randn({8, 5}), torch::randn({5})};
  Opt first(a, options);
  auto feed = [](std::vector<torch::Tensor>& ps, int seed) {
    torch::manual_seed(seed);
    for (auto& p : ps) p.mutable_grad() = torch::randn(p.sizes());
  };
  for (int s = 0; s < 3; ++s) {
    feed(a, 10 + s);
    first.step();
  }
  std::stringstream saved;
  {
    torch::serialize::OutputArchive archive;
    first.save(archive);
    archive.save_to(saved);
  }
  std::vector<torch::Tensor> b = {a[0].clone(), a[1].clone()};
  Opt second(b, options);
  torch::serialize::InputArchive archive;
  archive.load_from(saved);
  second.load(archive);
  for (int s = 0; s < 3; ++s) {
    feed(a, 20 + s);
    feed(b, 20 + s);
    first.step();
    second.step();
  }
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i]));
}

TEST(LambTest, SaveLoadRoundTripIsExact) {
  ExpectSaveLoadRoundTrip<Lamb>(LambOptions(0.01).max_grad_norm(1.0));
}

TEST(LarsTest, SaveLoadRoundTripIsExact) {
  ExpectSaveLoadRoundTrip<Lars>(LarsOptions(1.0).nesterov(true));
}

// A small MLP fitting a smooth function: each optimizer reaches a low loss.
double TrainToy(nlohmann::json optimizer_config, double lr, int steps) {
  std::string name = optimizer_config["name"];
  torch::manual_seed(4);
  torch::nn::Sequential net(torch::nn::Linear(4, 32), torch::nn::Tanh(),
                            torch::nn::Linear(32, 1));
  torch::Tensor x = torch::randn({256, 4});
  torch::Tensor y =
      torch::sin(x.sum(1, true)) + 0.5 * x.select(1, 0).unsqueeze(1);
  auto optimizer = trainer::MakeOptimizer(optimizer_config, *net, lr);
  EXPECT_OK(optimizer);
  double first = 0, last = 0;
  for (int s = 0; s < steps; ++s) {
    (*optimizer)->zero_grad();
    torch::Tensor loss = torch::mse_loss(net->forward(x), y);
    loss.backward();
    (*optimizer)->step();
    (s == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, 0.05 * first) << name;
  return last;
}

TEST(ConvergenceTest, EveryOptimizerFitsAToyProblem) {
  EXPECT_LT(TrainToy({{"name", "lamb"}}, 0.02, 400), 0.02);
  // Biases and norms take LARS's global lr unadapted, so the toy uses a
  // moderate lr and a larger trust coefficient.
  EXPECT_LT(TrainToy({{"name", "lars"}, {"trust_coefficient", 0.02}}, 1.0, 400),
            0.02);
  EXPECT_LT(TrainToy({{"name", "adamw"}}, 0.01, 400), 0.02);
  EXPECT_LT(TrainToy({{"name", "sgd"}}, 0.05, 400), 0.02);
}

TEST(RegistryTest, LambExcludesBiasesFromDecayAndAdaptation) {
  torch::nn::Sequential net(
      torch::nn::Linear(10, 8),
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({8})),
      torch::nn::Linear(8, 3));
  auto optimizer = trainer::MakeOptimizer({{"name", "lamb"}}, *net, 0.01);
  ASSERT_OK(optimizer);
  auto& groups = (*optimizer)->param_groups();
  ASSERT_EQ(groups.size(), 2u);
  // Two Linear weights adapted; two biases + LayerNorm weight and bias not.
  EXPECT_EQ(groups[0].params().size(), 2u);
  EXPECT_EQ(groups[1].params().size(), 4u);
  for (const auto& p : groups[0].params()) EXPECT_EQ(p.dim(), 2);
  const auto& plain = static_cast<const LambOptions&>(groups[1].options());
  EXPECT_EQ(plain.weight_decay(), 0);
  EXPECT_FALSE(plain.always_adapt());
  const auto& regular = static_cast<const LambOptions&>(groups[0].options());
  EXPECT_EQ(regular.weight_decay(), 0.01);

  auto one_group = trainer::MakeOptimizer(
      {{"name", "lars"}, {"exclude_bias_and_norm", false}}, *net, 1.0);
  ASSERT_OK(one_group);
  EXPECT_EQ((*one_group)->param_groups().size(), 1u);
}

TEST(RegistryTest, UnknownOptionIsInvalidArgument) {
  torch::nn::Linear net(2, 2);
  auto optimizer =
      trainer::MakeOptimizer({{"name", "lars"}, {"beta", 1}}, *net, 1.0);
  EXPECT_EQ(optimizer.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace megabatch::optim
