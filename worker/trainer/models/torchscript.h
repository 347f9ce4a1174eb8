// A model the user brings: a TorchScript module saved with torch.jit.save
// (from torch.jit.script or torch.jit.trace), trained by the trainer with its
// own optimizers. Its saved weights are where every trial starts. The
// contract (docs/models.md): `forward(x[N, ...]) -> logits[N, C]`
// (classification) or `forward(tokens[N, T]) -> logits[N, T, V]` (language
// model), and an optional `loss(x, y) -> scalar` that replaces the trainer's
// cross-entropy.
//
// TorchScriptModel is a torch::nn::Module whose tree mirrors the script
// module's and holds the very same tensors: what RunTrial does to a built-in
// model (to(device), train()/eval(), the optimizers' in-place steps,
// checkpoints through save()/load()) happens to the script module too, and
// its parameters keep the module's own names ("encoder.0.weight"). A
// parameter saved with requires_grad=False is kept as a buffer (moved and
// checkpointed, not trained); a tensor shared by two submodules (tied
// weights) is one parameter, under its first name.
#ifndef MEGABATCH_WORKER_TRAINER_MODELS_TORCHSCRIPT_H_
#define MEGABATCH_WORKER_TRAINER_MODELS_TORCHSCRIPT_H_

#include <torch/script.h>
#include <torch/torch.h>

#include <memory>
#include <string>

#include "common/status.h"

namespace megabatch::trainer {

class TorchScriptModel : public torch::nn::Module {
 public:
  // Loads `path` onto the CPU. INVALID_ARGUMENT naming `field` and the path
  // when it is not a TorchScript file or has no forward method; NOT_FOUND
  // when it cannot be read.
  static Result<std::shared_ptr<TorchScriptModel>> Load(
      const std::string& path, const std::string& field);

  torch::Tensor Forward(const torch::Tensor& input);
  // Whether the module brings its own loss(x, y), and that loss.
  bool has_loss() const { return has_loss_; }
  torch::Tensor Loss(const torch::Tensor& input, const torch::Tensor& target);

  // Sets the script module's mode too (dropout, batch norm).
  void train(bool on = true) override;

 private:
  explicit TorchScriptModel(torch::jit::Module module);

  torch::jit::Module module_;
  bool has_loss_ = false;
};

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_MODELS_TORCHSCRIPT_H_
