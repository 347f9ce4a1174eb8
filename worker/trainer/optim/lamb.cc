#include "worker/trainer/optim/lamb.h"

#include <torch/torch.h>

#include <cmath>

#include "worker/trainer/optim/fused_cpu.h"
#include "worker/trainer/optim/state_key.h"

namespace megabatch::optim {
namespace {

// The per-element LAMB direction; pass 1 and pass 2 of the fused path call
// the same function so they agree bit for bit.
struct LambElement {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float bc1, bc2, eps, weight_decay;

  inline float Direction(float m, float v, float w) const {
    return (m / bc1) / (std::sqrt(v / bc2) + eps) + weight_decay * w;
  }
};

MEGABATCH_MULTIVERSION float SumSquares(const float* x, int64_t b, int64_t e) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = b; i < e; ++i) s += x[i] * x[i];
  return s;
}

// Pass 1 over [b, e): updates the moments in place and returns the sums of
// w^2 and u^2.
MEGABATCH_MULTIVERSION std::array<double, 2> MomentsAndNorms(
    const LambElement& el, float clip, const float* g, float* m, float* v,
    const float* w, int64_t b, int64_t e) {
  float sw = 0, su = 0;
#pragma omp simd reduction(+ : sw, su)
  for (int64_t i = b; i < e; ++i) {
    float gi = g[i] * clip;
    float mi = el.beta1 * m[i] + el.one_minus_beta1 * gi;
    float vi = el.beta2 * v[i] + el.one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float ui = el.Direction(mi, vi, w[i]);
    sw += w[i] * w[i];
    su += ui * ui;
  }
  return {sw, su};
}

// Pass 2 over [b, e): w <- w - step_size * u, u recomputed from the moments.
MEGABATCH_MULTIVERSION void ApplyDirection(const LambElement& el,
                                           float step_size, const float* m,
                                           const float* v, float* w, int64_t b,
                                           int64_t e) {
#pragma omp simd
  for (int64_t i = b; i < e; ++i)
    w[i] -= step_size * el.Direction(m[i], v[i], w[i]);
}

// Returns the sum of squares of a contiguous float tensor, in double.
double SquaredNorm(const torch::Tensor& t) {
  const float* x = t.data_ptr<float>();
  return fused::ChunkedSums<1>(t.numel(), [&](int64_t b, int64_t e) {
    return std::array<double, 1>{SumSquares(x, b, e)};
  })[0];
}

}  // namespace

LambOptions::LambOptions(double lr) : lr_(lr) {}

void LambOptions::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(lr);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(betas);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(eps);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(weight_decay);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(bias_correction);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(always_adapt);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(trust_clip);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(max_grad_norm);
}

void LambOptions::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, lr);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(betas_t, betas);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, eps);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, weight_decay);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, bias_correction);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, always_adapt);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(bool, trust_clip);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(double, max_grad_norm);
}

double LambOptions::get_lr() const { return lr(); }
void LambOptions::set_lr(const double lr) { this->lr(lr); }

void LambParamState::serialize(torch::serialize::OutputArchive& archive) const {
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(step);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(exp_avg);
  _TORCH_OPTIM_SERIALIZE_TORCH_ARG(exp_avg_sq);
}

void LambParamState::serialize(torch::serialize::InputArchive& archive) {
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(int64_t, step);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, exp_avg);
  _TORCH_OPTIM_DESERIALIZE_TORCH_ARG(torch::Tensor, exp_avg_sq);
}

Lamb::Lamb(std::vector<torch::optim::OptimizerParamGroup> param_groups,
           LambOptions defaults)
    : Optimizer(std::move(param_groups),
                std::make_unique<LambOptions>(defaults)) {
  TORCH_CHECK(defaults.lr() >= 0, "Invalid learning rate: ", defaults.lr());
  TORCH_CHECK(defaults.eps() >= 0, "Invalid epsilon value: ", defaults.eps());
  auto [beta1, beta2] = defaults.betas();
  TORCH_CHECK(0 <= beta1 && beta1 < 1, "Invalid beta1: ", beta1);
  TORCH_CHECK(0 <= beta2 && beta2 < 1, "Invalid beta2: ", beta2);
  TORCH_CHECK(defaults.weight_decay() >= 0,
              "Invalid weight_decay value: ", defaults.weight_decay());
  TORCH_CHECK(defaults.max_grad_norm() >= 0,
              "Invalid max_grad_norm value: ", defaults.max_grad_norm());
}

torch::Tensor Lamb::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss = {};
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }

  trust_ratios_.Clear();
  // One fused or one generic step for all parameters: the fused path needs
  // every gradient on the CPU as contiguous float32.
  bool fused_step = true;
  for (const auto& group : param_groups_) {
    for (const auto& p : group.params()) {
      if (p.grad().defined()) {
        fused_step = fused_step && fused::Eligible({&p, &p.grad()});
      }
    }
  }

  // Global clipping coefficient: max_norm / max(G, max_norm), 1 when G fits.
  const double max_norm =
      static_cast<const LambOptions&>(defaults()).max_grad_norm();
  double clip = 1.0;
  torch::Tensor clip_t;
  if (max_norm > 0) {
    if (fused_step) {
      double sum = 0;
      for (const auto& group : param_groups_) {
        for (const auto& p : group.params()) {
          if (p.grad().defined()) sum += SquaredNorm(p.grad());
        }
      }
      double g_norm = std::sqrt(sum);
      if (g_norm > max_norm) clip = max_norm / g_norm;
    } else {
      std::vector<torch::Tensor> norms;
      for (const auto& group : param_groups_) {
        for (const auto& p : group.params()) {
          if (p.grad().defined()) norms.push_back(p.grad().norm());
        }
      }
      if (!norms.empty()) {
        torch::Tensor g_norm = torch::stack(norms).norm();
        clip_t = max_norm / torch::clamp_min(g_norm, max_norm);
      }
    }
  }

  for (auto& group : param_groups_) {
    const auto& options = static_cast<const LambOptions&>(group.options());
    const auto [beta1, beta2] = options.betas();
    const double wd = options.weight_decay();
    const bool adapt = options.always_adapt() || wd != 0;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const torch::Tensor& grad = p.grad();
      const auto key = StateKey(state_, p);
      auto it = state_.find(key);
      if (it == state_.end()) {
        auto fresh = std::make_unique<LambParamState>();
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        fresh->exp_avg_sq(
            torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        it = state_.emplace(key, std::move(fresh)).first;
      }
      auto& state = static_cast<LambParamState&>(*it->second);
      state.step(state.step() + 1);
      const double bc1 =
          options.bias_correction() ? 1 - std::pow(beta1, state.step()) : 1.0;
      const double bc2 =
          options.bias_correction() ? 1 - std::pow(beta2, state.step()) : 1.0;
      torch::Tensor& m = state.exp_avg();
      torch::Tensor& v = state.exp_avg_sq();

      if (fused_step && fused::Eligible({&m, &v})) {
        const LambElement el{float(beta1),         float(1 - beta1),
                             float(beta2),         float(1 - beta2),
                             float(bc1),           float(bc2),
                             float(options.eps()), float(wd)};
        const float clip_f = float(clip);
        float* w = p.data_ptr<float>();
        const float* g = grad.data_ptr<float>();
        float* mp = m.data_ptr<float>();
        float* vp = v.data_ptr<float>();
        // Pass 1: moments, and the norms of w and of the direction u.
        auto sums = fused::ChunkedSums<2>(p.numel(), [&](int64_t b, int64_t e) {
          return MomentsAndNorms(el, clip_f, g, mp, vp, w, b, e);
        });
        double ratio = 1.0;
        if (adapt && sums[0] > 0 && sums[1] > 0) {
          ratio = std::sqrt(sums[0]) / std::sqrt(sums[1]);
          if (options.trust_clip()) ratio = std::min(ratio, 1.0);
        }
        if (adapt && trust_ratios_.enabled()) {
          trust_ratios_.Record(p, torch::scalar_tensor(ratio, torch::kDouble));
        }
        const float step_size = float(options.lr() * ratio);
        // Pass 2: recompute u from the new moments and apply it.
        fused::ForChunks(p.numel(), [&](int64_t b, int64_t e) {
          ApplyDirection(el, step_size, mp, vp, w, b, e);
        });
        continue;
      }

      // The clip coefficient is a tensor on the generic path, a double when
      // a fused step falls back here for one tensor (e.g. non-float state).
      torch::Tensor g = grad;
      if (clip_t.defined()) {
        g = grad * clip_t;
      } else if (clip != 1.0) {
        g = grad * clip;
      }
      m.mul_(beta1).add_(g, 1 - beta1);
      v.mul_(beta2).addcmul_(g, g, 1 - beta2);
      torch::Tensor u = (m / bc1).div_((v / bc2).sqrt_().add_(options.eps()));
      if (wd != 0) u.add_(p, wd);
      if (!adapt) {
        p.add_(u, -options.lr());
        continue;
      }
      torch::Tensor w_norm = p.norm();
      torch::Tensor u_norm = u.norm();
      torch::Tensor ratio =
          torch::where(w_norm.gt(0).logical_and(u_norm.gt(0)), w_norm / u_norm,
                       torch::ones_like(w_norm));
      if (options.trust_clip()) ratio = torch::clamp_max(ratio, 1.0);
      trust_ratios_.Record(p, ratio);
      p.addcmul_(u, ratio, -options.lr());
    }
  }
  return loss;
}

void Lamb::save(torch::serialize::OutputArchive& archive) const {
  serialize(*this, archive);
}

void Lamb::load(torch::serialize::InputArchive& archive) {
  serialize(*this, archive);
}

}  // namespace megabatch::optim
