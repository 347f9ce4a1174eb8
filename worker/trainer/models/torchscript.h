// A model the user brings: a TorchScript module saved with torch.jit.save
// (from torch.jit.script or torch.jit.trace), trained by the trainer with its
// own optimizers. Its saved weights are where every trial starts. The
// contract: `forward(x[N, ...]) -> logits[N, C]` (classification) or
// `forward(tokens[N, T]) -> logits[N, T, V]` (language model), and an
// optional `loss(x, y) -> scalar` that replaces the trainer's cross-entropy.
#ifndef MEGABATCH_WORKER_TRAINER_MODELS_TORCHSCRIPT_H_
#define MEGABATCH_WORKER_TRAINER_MODELS_TORCHSCRIPT_H_

#include <torch/script.h>

#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace megabatch::trainer {

class TorchScriptModel {
 public:
  // Loads `path` onto the CPU. INVALID_ARGUMENT naming `field` and the path
  // when it is not a TorchScript file or has no forward method; NOT_FOUND
  // when it cannot be read.
  static Result<TorchScriptModel> Load(const std::string& path,
                                       const std::string& field);

  // The trainable parameters in the module's order, under the module's own
  // names ("encoder.0.weight"): what optimizers step, what bias and
  // normalisation exclusion and the per-tensor diagnostics go by.
  std::vector<std::pair<std::string, torch::Tensor>> NamedParameters() const;
  std::vector<torch::Tensor> Parameters() const;

  torch::Tensor Forward(const torch::Tensor& input);
  // Whether the module brings its own loss(x, y), and that loss.
  bool has_loss() const { return has_loss_; }
  torch::Tensor Loss(const torch::Tensor& input, const torch::Tensor& target);

  void Train(bool on) { module_.train(on); }
  void To(const torch::Device& device) { module_.to(device); }

 private:
  explicit TorchScriptModel(torch::jit::Module module);

  torch::jit::Module module_;
  bool has_loss_ = false;
};

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_MODELS_TORCHSCRIPT_H_
