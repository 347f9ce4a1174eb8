// Replays tests/worker/optim/reference_values.json (an independent float64
// implementation of docs/method.md, tests/worker/optim/reference.py) through
// megabatch::optim::Lamb and Lars, on the fused float32 CPU path, on the
// generic tensor-op path in float32 (non-contiguous tensors) and in float64.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "worker/trainer/optim/lamb.h"
#include "worker/trainer/optim/lars.h"

namespace megabatch::optim {
namespace {

using nlohmann::json;

enum class Variant { kFusedFloat, kGenericFloat, kGenericDouble };

std::string Name(Variant v) {
  switch (v) {
    case Variant::kFusedFloat:
      return "fused float32";
    case Variant::kGenericFloat:
      return "generic float32";
    case Variant::kGenericDouble:
      return "generic float64";
  }
  return "";
}

json LoadReference() {
  std::ifstream in(MEGABATCH_OPTIM_REFERENCE);
  EXPECT_TRUE(in.good()) << MEGABATCH_OPTIM_REFERENCE;
  return json::parse(in);
}

torch::Tensor FromJson(const json& t, Variant variant) {
  std::vector<int64_t> shape = t["shape"].get<std::vector<int64_t>>();
  auto values =
      torch::tensor(t["values"].get<std::vector<double>>(), torch::kDouble)
          .reshape(shape);
  if (variant == Variant::kGenericDouble) return values.clone();
  if (variant == Variant::kFusedFloat) return values.to(torch::kFloat);
  // A float32 tensor with doubled strides: not contiguous, so the optimizer
  // must take its generic path.
  std::vector<int64_t> strides(shape.size());
  int64_t stride = 2;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = stride;
    stride *= shape[i];
  }
  torch::Tensor t_nc = torch::zeros({values.numel() * 2}, torch::kFloat)
                           .as_strided(shape, strides);
  t_nc.copy_(values);
  EXPECT_FALSE(t_nc.is_contiguous());
  return t_nc;
}

std::unique_ptr<torch::optim::Optimizer> Make(
    const json& c, std::vector<torch::Tensor> params) {
  const json& o = c["options"];
  if (c["optimizer"] == "lamb") {
    return std::make_unique<Lamb>(
        params,
        LambOptions(c["lrs"][0].get<double>())
            .betas({o["betas"][0].get<double>(), o["betas"][1].get<double>()})
            .eps(o["eps"].get<double>())
            .weight_decay(o["weight_decay"].get<double>())
            .bias_correction(o["bias_correction"].get<bool>())
            .always_adapt(o["always_adapt"].get<bool>())
            .trust_clip(o["trust_clip"].get<bool>())
            .max_grad_norm(o["max_grad_norm"].get<double>()));
  }
  return std::make_unique<Lars>(
      params, LarsOptions(c["lrs"][0].get<double>())
                  .momentum(o["momentum"].get<double>())
                  .weight_decay(o["weight_decay"].get<double>())
                  .trust_coefficient(o["trust_coefficient"].get<double>())
                  .eps(o["eps"].get<double>())
                  .nesterov(o["nesterov"].get<bool>()));
}

// Largest error relative to max(|expected|, rms(expected)) per element.
double RelativeError(const torch::Tensor& got, const torch::Tensor& want) {
  torch::Tensor g = got.to(torch::kDouble);
  double rms = want.pow(2).mean().sqrt().item<double>();
  torch::Tensor scale = torch::clamp_min(want.abs(), std::max(rms, 1e-30));
  return ((g - want).abs() / scale).max().item<double>();
}

class OptimReferenceTest : public ::testing::TestWithParam<Variant> {};

TEST_P(OptimReferenceTest, MatchesTheFloat64Reference) {
  const Variant variant = GetParam();
  const double tolerance = variant == Variant::kGenericDouble ? 1e-10 : 1e-6;
  json ref = LoadReference();
  ASSERT_GE(ref["cases"].size(), 10u);
  for (const json& c : ref["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>() + " on the " + Name(variant) +
                 " path");
    std::vector<torch::Tensor> params;
    for (const json& p : c["params"]) params.push_back(FromJson(p, variant));
    auto optimizer = Make(c, params);
    for (size_t step = 0; step < c["lrs"].size(); ++step) {
      for (auto& group : optimizer->param_groups()) {
        group.options().set_lr(c["lrs"][step].get<double>());
      }
      for (size_t i = 0; i < params.size(); ++i) {
        torch::Tensor g = FromJson(c["grads"][step][i], Variant::kGenericDouble)
                              .to(params[i].scalar_type());
        params[i].mutable_grad() = g;
      }
      optimizer->step();
      for (size_t i = 0; i < params.size(); ++i) {
        torch::Tensor want =
            FromJson(c["expected"][step][i], Variant::kGenericDouble);
        ASSERT_FALSE(params[i].isnan().any().item<bool>());
        double err = RelativeError(params[i], want);
        EXPECT_LE(err, tolerance)
            << "tensor " << i << " after step " << step + 1;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, OptimReferenceTest,
                         ::testing::Values(Variant::kFusedFloat,
                                           Variant::kGenericFloat,
                                           Variant::kGenericDouble));

}  // namespace
}  // namespace megabatch::optim
