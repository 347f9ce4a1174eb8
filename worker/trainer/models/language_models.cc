#include "worker/trainer/models/language_models.h"

#include <cmath>
#include <string>

namespace megabatch::trainer {

namespace F = torch::nn::functional;

CharLstmImpl::CharLstmImpl(const CharLstmOptions& o) {
  embed_ = register_module("embed", torch::nn::Embedding(o.vocab, o.embedding));
  lstm_ = register_module(
      "lstm", torch::nn::LSTM(torch::nn::LSTMOptions(o.embedding, o.hidden)
                                  .num_layers(o.layers)
                                  .batch_first(true)));
  head_ = register_module("head", torch::nn::Linear(o.hidden, o.vocab));
}

torch::Tensor CharLstmImpl::forward(const torch::Tensor& tokens) {
  torch::Tensor out = std::get<0>(lstm_->forward(embed_->forward(tokens)));
  return head_->forward(out);
}

TinyBertImpl::TinyBertImpl(const TinyBertOptions& o) : options_(o) {
  constexpr double kInitStd = 0.02;
  tok_embed_ =
      register_module("tok_embed", torch::nn::Embedding(o.vocab, o.hidden));
  pos_embed_ =
      register_parameter("pos_embed", torch::zeros({o.seq_len, o.hidden}));
  embed_norm_ = register_module(
      "embed_norm",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden})));
  auto linear = [&](const std::string& name, int64_t in, int64_t out) {
    return register_module(
        name,
        torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(o.bias)));
  };
  auto norm = [&](const std::string& name) {
    return register_module(
        name, torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden})));
  };
  for (int64_t i = 0; i < o.layers; ++i) {
    const std::string p = "layer" + std::to_string(i) + "_";
    Layer l;
    l.norm1 = norm(p + "norm1");
    l.qkv = linear(p + "qkv", o.hidden, 3 * o.hidden);
    l.proj = linear(p + "proj", o.hidden, o.hidden);
    l.norm2 = norm(p + "norm2");
    l.fc1 = linear(p + "fc1", o.hidden, o.ffn);
    l.fc2 = linear(p + "fc2", o.ffn, o.hidden);
    layers_.push_back(l);
  }
  final_norm_ = norm("final_norm");
  if (o.bias)
    out_bias_ = register_parameter("out_bias", torch::zeros({o.vocab}));
  torch::NoGradGuard no_grad;
  for (auto& item : named_parameters()) {
    if (item.value().dim() == 2) {
      item.value().normal_(0, kInitStd);
    } else if (item.key().find("norm") == std::string::npos) {
      item.value().zero_();  // biases; LayerNorm keeps weight 1, bias 0
    }
  }
}

torch::Tensor TinyBertImpl::forward(const torch::Tensor& tokens) {
  const int64_t n = tokens.size(0), len = tokens.size(1);
  const int64_t h = options_.hidden, heads = options_.heads, d = h / heads;
  torch::Tensor x = embed_norm_->forward(tok_embed_->forward(tokens) +
                                         pos_embed_.slice(0, 0, len));
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (auto& l : layers_) {
    // [N, L, 3, heads, d] -> three [N, heads, L, d]
    torch::Tensor qkv = l.qkv->forward(l.norm1->forward(x))
                            .view({n, len, 3, heads, d})
                            .permute({2, 0, 3, 1, 4});
    torch::Tensor attention = torch::softmax(
        torch::matmul(qkv[0], qkv[1].transpose(-2, -1)) * scale, -1);
    torch::Tensor mixed =
        torch::matmul(attention, qkv[2]).transpose(1, 2).reshape({n, len, h});
    x = x + l.proj->forward(mixed);
    x = x + l.fc2->forward(F::gelu(l.fc1->forward(l.norm2->forward(x))));
  }
  return final_norm_->forward(x);
}

torch::Tensor TinyBertImpl::Logits(const torch::Tensor& hidden) {
  torch::Tensor logits = torch::matmul(hidden, tok_embed_->weight.t());
  return out_bias_.defined() ? logits + out_bias_ : logits;
}

}  // namespace megabatch::trainer
