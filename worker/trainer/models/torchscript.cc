#include "worker/trainer/models/torchscript.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <unordered_set>

namespace megabatch::trainer {
namespace {

// The first line of a LibTorch error, without its C++ backtrace.
std::string FirstLine(const std::string& what) {
  return what.substr(0, what.find('\n'));
}

// One submodule of the mirror: the script submodule's own parameters and
// buffers (the same tensors), and a child per script child. `seen` holds
// the tensors already registered anywhere in the tree.
void Mirror(const torch::jit::Module& script, torch::nn::Module& node,
            std::unordered_set<const void*>* seen) {
  for (const auto& p : script.named_parameters(/*recurse=*/false)) {
    if (!seen->insert(p.value.unsafeGetTensorImpl()).second) continue;
    if (p.value.requires_grad()) {
      node.register_parameter(p.name, p.value);
    } else {
      node.register_buffer(p.name, p.value);
    }
  }
  for (const auto& b : script.named_buffers(/*recurse=*/false)) {
    if (!seen->insert(b.value.unsafeGetTensorImpl()).second) continue;
    node.register_buffer(b.name, b.value);
  }
  for (const auto& child : script.named_children()) {
    auto mirrored = std::make_shared<torch::nn::Module>(child.name);
    Mirror(child.value, *mirrored, seen);
    node.register_module(child.name, mirrored);
  }
}

}  // namespace

TorchScriptModel::TorchScriptModel(torch::jit::Module module)
    : torch::nn::Module("TorchScriptModel"),
      module_(std::move(module)),
      has_loss_(module_.find_method("loss").has_value()) {
  std::unordered_set<const void*> seen;
  Mirror(module_, *this, &seen);
}

Result<std::shared_ptr<TorchScriptModel>> TorchScriptModel::Load(
    const std::string& path, const std::string& field) {
  const std::string where = field + ": " + path + ": ";
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return NotFoundError(where + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return InvalidArgumentError(where + "not a regular file");
  }
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, torch::kCPU);
  } catch (const std::exception& e) {
    return InvalidArgumentError(
        where +
        "not a TorchScript file (save one with torch.jit.save of a "
        "torch.jit.script or torch.jit.trace module): " +
        FirstLine(e.what()));
  }
  if (!module.find_method("forward").has_value()) {
    return InvalidArgumentError(where + "the module has no forward method");
  }
  return std::shared_ptr<TorchScriptModel>(
      new TorchScriptModel(std::move(module)));
}

torch::Tensor TorchScriptModel::Forward(const torch::Tensor& input) {
  return module_.forward({input}).toTensor();
}

torch::Tensor TorchScriptModel::Loss(const torch::Tensor& input,
                                     const torch::Tensor& target) {
  return module_.get_method("loss")({input, target}).toTensor();
}

void TorchScriptModel::train(bool on) {
  torch::nn::Module::train(on);
  module_.train(on);
}

}  // namespace megabatch::trainer
