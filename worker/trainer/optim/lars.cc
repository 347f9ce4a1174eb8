#include "worker/trainer/optim/lars.h"

#include <torch/torch.h>

#include <cmath>

#include "worker/trainer/optim/fused_cpu.h"
#include "worker/trainer/optim/state_key.h"

namespace megabatch::optim {
namespace {

// The sums of w^2 and g^2 over [b, e).
MEGABATCH_MULTIVERSION std::array<double, 2> Norms(const float* w,
                                                   const float* g, int64_t b,
                                                   int64_t e) {
  float sw = 0, sg = 0;
#pragma omp simd reduction(+ : sw, sg)
  for (int64_t i = b; i < e; ++i) {
    sw += w[i] * w[i];
    sg += g[i] * g[i];
  }
  return {sw, sg};
}

// buf <- mu buf + coef (g + wd w); w <- w - buf (or the Nesterov step).
MEGABATCH_MULTIVERSION void Update(float coef, float wd, float mu,
                                   bool nesterov, const float* g, float* buf,
                                   float* w, int64_t b, int64_t e) {
#pragma omp simd
  for (int64_t i = b; i < e; ++i) {
    float step = coef * (g[i] + wd * w[i]);
    float bi = mu * buf[i] + step;
    buf[i] = bi;
    w[i] -= nesterov ? mu * bi + step : bi;
  }
}

}  // namespace

LarsOptions::LarsOptions(double lr) : lr_(lr) {}

void LarsOptions::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(weight_decay);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(trust_coefficient);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(eps);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(nesterov);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(adapt);
}

void LarsOptions::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, lr);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, momentum);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, weight_decay);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, trust_coefficient);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, eps);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, nesterov);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, adapt);
}

double LarsOptions::get_lr() const { return lr(); }
void LarsOptions::set_lr(const double lr) { this->lr(lr); }

void LarsParamState::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(momentum_buffer);
}

void LarsParamState::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, momentum_buffer);
}

Lars::Lars(std::vector<torch::optim::OptimizerParamGroup> param_groups,
           LarsOptions defaults)
    : Optimizer(std::move(param_groups),
                std::make_unique<LarsOptions>(defaults)) {
  TORCH_CHECK(defaults.lr() >= 0, "Invalid learning rate: ", defaults.lr());
  TORCH_CHECK(defaults.momentum() >= 0,
              "Invalid momentum: ", defaults.momentum());
  TORCH_CHECK(defaults.weight_decay() >= 0,
              "Invalid weight_decay value: ", defaults.weight_decay());
  TORCH_CHECK(defaults.trust_coefficient() > 0,
              "Invalid trust_coefficient: ", defaults.trust_coefficient());
}

torch::Tensor Lars::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss = {};
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  trust_ratios_.Clear();
  for (auto& group : param_groups_) {
    const auto& options = static_cast<const LarsOptions&>(group.options());
    const double lr = options.lr(), mu = options.momentum();
    const double wd = options.weight_decay();
    const double tc = options.trust_coefficient(), eps = options.eps();
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const torch::Tensor& grad = p.grad();
      const auto key = StateKey(state_, p);
      auto it = state_.find(key);
      if (it == state_.end()) {
        auto fresh = std::make_unique<LarsParamState>();
        fresh->momentum_buffer(
            torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        it = state_.emplace(key, std::move(fresh)).first;
      }
      torch::Tensor& buf =
          static_cast<LarsParamState&>(*it->second).momentum_buffer();

      if (fused::Eligible({&p, &grad, &buf})) {
        float* w = p.data_ptr<float>();
        const float* g = grad.data_ptr<float>();
        float* bp = buf.data_ptr<float>();
        double local = 1.0;
        if (options.adapt()) {
          auto sums = fused::ChunkedSums<2>(
              p.numel(),
              [&](int64_t b, int64_t e) { return Norms(w, g, b, e); });
          double w_norm = std::sqrt(sums[0]), g_norm = std::sqrt(sums[1]);
          if (w_norm > 0 && g_norm > 0) {
            local = tc * w_norm / (g_norm + wd * w_norm + eps);
          }
          if (trust_ratios_.enabled()) {
            trust_ratios_.Record(p,
                                 torch::scalar_tensor(local, torch::kDouble));
          }
        }
        const float coef = float(lr * local), wd_f = float(wd),
                    mu_f = float(mu);
        const bool nesterov = options.nesterov();
        fused::ForChunks(p.numel(), [&](int64_t b, int64_t e) {
          Update(coef, wd_f, mu_f, nesterov, g, bp, w, b, e);
        });
        continue;
      }

      torch::Tensor d = wd != 0 ? grad.add(p, wd) : grad;
      torch::Tensor scaled;
      if (options.adapt()) {
        torch::Tensor w_norm = p.norm(), g_norm = grad.norm();
        torch::Tensor local =
            torch::where(w_norm.gt(0).logical_and(g_norm.gt(0)),
                         tc * w_norm / (g_norm + wd * w_norm + eps),
                         torch::ones_like(w_norm));
        trust_ratios_.Record(p, local);
        scaled = d * (local * lr);
      } else {
        scaled = d * lr;
      }
      buf.mul_(mu).add_(scaled);
      if (options.nesterov()) {
        p.sub_(buf * mu + scaled);
      } else {
        p.sub_(buf);
      }
    }
  }
  return loss;
}

void Lars::save(torch::serialize::OutputArchive& archive) const {
  serialize(*this, archive);
}

void Lars::load(torch::serialize::InputArchive& archive) {
  serialize(*this, archive);
}

}  // namespace megabatch::optim
