#include "worker/trainer/optim/registry.h"

#include "common/optimizer_catalog.h"
#include "worker/trainer/optim/lamb.h"
#include "worker/trainer/optim/lars.h"

namespace megabatch::trainer {
namespace {

using nlohmann::json;

// The value of option `name` in `config`, or the catalog default.
class Options {
 public:
  Options(const json& config, const OptimizerInfo& info)
      : config_(config), info_(info) {}

  double Number(std::string_view name, int element = 0) const {
    const OptimizerOption& opt = Find(name);
    auto it = config_.find(std::string(name));
    if (it != config_.end() && !it->is_null()) {
      return opt.kind == OptionKind::kPair ? (*it)[element].get<double>()
                                           : it->get<double>();
    }
    return element == 0 ? opt.default_value : opt.default_second;
  }
  bool Bool(std::string_view name) const {
    auto it = config_.find(std::string(name));
    if (it != config_.end() && !it->is_null()) return it->get<bool>();
    return Find(name).default_value != 0;
  }

 private:
  const OptimizerOption& Find(std::string_view name) const {
    for (const auto& opt : info_.options) {
      if (opt.name == name) return opt;
    }
    throw std::logic_error("optimizer " + std::string(info_.name) +
                           " has no option " + std::string(name));
  }
  const json& config_;
  const OptimizerInfo& info_;
};

Status CheckKnownOptions(const json& config, const OptimizerInfo& info) {
  for (const auto& [key, value] : config.items()) {
    if (key == "name") continue;
    bool known = false;
    for (const auto& opt : info.options) known |= opt.name == key;
    if (!known) {
      return InvalidArgumentError("optimizer." + key + ": unknown option of " +
                                  std::string(info.name));
    }
  }
  return Status();
}

// An optimizer over `split.regular` with `options`, and over `split.excluded`
// (if any) with `plain`.
template <typename Opt, typename OptOptions>
std::unique_ptr<torch::optim::Optimizer> WithExclusionGroup(
    const ParameterSplit& split, const OptOptions& options,
    const OptOptions& plain) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(split.regular, std::make_unique<OptOptions>(options));
  if (!split.excluded.empty()) {
    groups.emplace_back(split.excluded, std::make_unique<OptOptions>(plain));
  }
  return std::make_unique<Opt>(std::move(groups), options);
}

}  // namespace

ParameterSplit SplitBiasAndNorm(const torch::nn::Module& module) {
  ParameterSplit split;
  for (const auto& item : module.named_parameters()) {
    (item.value().dim() <= 1 ? split.excluded : split.regular)
        .push_back(item.value());
  }
  return split;
}

Result<std::unique_ptr<torch::optim::Optimizer>> MakeOptimizer(
    const json& config, const torch::nn::Module& module, double lr) {
  std::string name = config.value("name", "");
  const OptimizerInfo* info = FindOptimizer(name);
  if (info == nullptr) {
    return InvalidArgumentError("optimizer.name: unknown optimizer '" + name +
                                "'");
  }
  MEGABATCH_RETURN_IF_ERROR(CheckKnownOptions(config, *info));
  std::vector<torch::Tensor> params = module.parameters();
  try {
    Options o(config, *info);
    // Biases and norms in a group of their own with no weight decay (and,
    // for LAMB and LARS, no adaptation) when exclude_bias_and_norm is on.
    ParameterSplit split;
    if (o.Bool("exclude_bias_and_norm")) {
      split = SplitBiasAndNorm(module);
    } else {
      split.regular = params;
    }
    if (name == "sgd") {
      auto options = torch::optim::SGDOptions(lr)
                         .momentum(o.Number("momentum"))
                         .weight_decay(o.Number("weight_decay"))
                         .nesterov(o.Bool("nesterov"));
      auto plain = options;
      plain.weight_decay(0);
      return WithExclusionGroup<torch::optim::SGD>(split, options, plain);
    }
    if (name == "adamw") {
      auto options = torch::optim::AdamWOptions(lr)
                         .betas({o.Number("betas", 0), o.Number("betas", 1)})
                         .eps(o.Number("eps"))
                         .weight_decay(o.Number("weight_decay"));
      auto plain = options;
      plain.weight_decay(0);
      return WithExclusionGroup<torch::optim::AdamW>(split, options, plain);
    }
    if (name == "lamb") {
      optim::LambOptions options =
          optim::LambOptions(lr)
              .betas({o.Number("betas", 0), o.Number("betas", 1)})
              .eps(o.Number("eps"))
              .weight_decay(o.Number("weight_decay"))
              .bias_correction(o.Bool("bias_correction"))
              .always_adapt(o.Bool("always_adapt"))
              .trust_clip(o.Bool("trust_clip"))
              .max_grad_norm(o.Number("max_grad_norm"));
      optim::LambOptions plain = options;
      plain.weight_decay(0).always_adapt(false);
      return WithExclusionGroup<optim::Lamb>(split, options, plain);
    }
    if (name == "lars") {
      optim::LarsOptions options =
          optim::LarsOptions(lr)
              .momentum(o.Number("momentum"))
              .weight_decay(o.Number("weight_decay"))
              .trust_coefficient(o.Number("trust_coefficient"))
              .eps(o.Number("eps"))
              .nesterov(o.Bool("nesterov"));
      optim::LarsOptions plain = options;
      plain.weight_decay(0).adapt(false);
      return WithExclusionGroup<optim::Lars>(split, options, plain);
    }
  } catch (const std::exception& e) {
    return InvalidArgumentError("optimizer " + name + ": " + e.what());
  }
  return InternalError("optimizer " + name +
                       " is in the catalog but not in the registry");
}

double TrainerClipNorm(const json& config) {
  const std::string name = config.value("name", "");
  const OptimizerInfo* info = FindOptimizer(name);
  // LAMB clips inside its step (before its moments), as its reference does.
  if (info == nullptr || name == "lamb") return 0;
  return Options(config, *info).Number("max_grad_norm");
}

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace megabatch::trainer
