// The language models: a character-level LSTM and a small pre-LayerNorm
// BERT-style encoder. bench/lm_throughput.py has the same two models in
// Python, layer for layer.
#ifndef MEGABATCH_WORKER_TRAINER_MODELS_LANGUAGE_MODELS_H_
#define MEGABATCH_WORKER_TRAINER_MODELS_LANGUAGE_MODELS_H_

#include <torch/torch.h>

namespace megabatch::trainer {

struct CharLstmOptions {
  int64_t vocab = 256;  // bytes
  int64_t embedding = 64;
  int64_t hidden = 256;
  int64_t layers = 1;
};

// Embedding -> LSTM (batch first; every window starts from a zero state) ->
// Linear to the vocabulary. forward: [N, L] int64 -> logits [N, L, vocab].
class CharLstmImpl : public torch::nn::Module {
 public:
  explicit CharLstmImpl(const CharLstmOptions& options);
  torch::Tensor forward(const torch::Tensor& tokens);

 private:
  torch::nn::Embedding embed_{nullptr};
  torch::nn::LSTM lstm_{nullptr};
  torch::nn::Linear head_{nullptr};
};
TORCH_MODULE(CharLstm);

struct TinyBertOptions {
  int64_t vocab = 2048;
  int64_t seq_len = 128;
  int64_t hidden = 128;
  int64_t layers = 2;
  int64_t heads = 2;
  int64_t ffn = 512;
  bool bias = true;  // biases in the linear layers (and the output)
};

// Pre-LayerNorm transformer encoder without dropout (Cramming):
//   x = LN(tok_embed[t] + pos_embed)
//   per layer: x += proj(attention(LN(x))); x += fc2(gelu(fc1(LN(x))))
//   h = LN(x)
// and an output layer tied to the token embedding: logits = h tok_embed^T
// (+ output bias). Linear weights and embeddings start from N(0, 0.02),
// biases from 0, as in BERT.
class TinyBertImpl : public torch::nn::Module {
 public:
  explicit TinyBertImpl(const TinyBertOptions& options);
  // [N, L] int64 -> hidden states [N, L, hidden].
  torch::Tensor forward(const torch::Tensor& tokens);
  // Hidden states [M, hidden] -> logits [M, vocab].
  torch::Tensor Logits(const torch::Tensor& hidden);

 private:
  struct Layer {
    torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
    torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr};
  };
  TinyBertOptions options_;
  torch::nn::Embedding tok_embed_{nullptr};
  torch::Tensor pos_embed_;
  torch::Tensor out_bias_;
  torch::nn::LayerNorm embed_norm_{nullptr}, final_norm_{nullptr};
  std::vector<Layer> layers_;
};
TORCH_MODULE(TinyBert);

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_MODELS_LANGUAGE_MODELS_H_
