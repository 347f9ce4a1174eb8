#include "worker/trainer/diagnostics.h"

#include <map>

#include "common/metric_catalog.h"

namespace megabatch::trainer {

DiagnosticsCollector::DiagnosticsCollector(std::vector<torch::Tensor> params,
                                           std::vector<std::string> names,
                                           optim::TrustRatios* trust_ratios)
    : params_(std::move(params)),
      names_(std::move(names)),
      trust_ratios_(trust_ratios) {}

void DiagnosticsCollector::Begin() {
  before_.clear();
  for (const auto& p : params_) before_.push_back(p.detach().clone());
  if (trust_ratios_) trust_ratios_->set_enabled(true);
}

Metrics DiagnosticsCollector::Collect() {
  std::map<const c10::TensorImpl*, double> ratio_of;
  if (trust_ratios_) {
    for (const auto& [impl, ratio] : trust_ratios_->Last())
      ratio_of[impl] = ratio;
    trust_ratios_->set_enabled(false);
  }
  Metrics out;
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = names_[i];
    out.push_back(
        {metric::kWeightNormPrefix + name, params_[i].norm().item<double>()});
    out.push_back({metric::kUpdateNormPrefix + name,
                   (params_[i] - before_[i]).norm().item<double>()});
    auto it = ratio_of.find(params_[i].unsafeGetTensorImpl());
    if (it != ratio_of.end())
      out.push_back({metric::kTrustRatioPrefix + name, it->second});
  }
  before_.clear();
  return out;
}

}  // namespace megabatch::trainer
