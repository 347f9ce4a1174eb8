#include "worker/trainer/models/torchscript.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace megabatch::trainer {
namespace {

// The first line of a LibTorch error, without its C++ backtrace.
std::string FirstLine(const std::string& what) {
  return what.substr(0, what.find('\n'));
}

}  // namespace

TorchScriptModel::TorchScriptModel(torch::jit::Module module)
    : module_(std::move(module)),
      has_loss_(module_.find_method("loss").has_value()) {}

Result<TorchScriptModel> TorchScriptModel::Load(const std::string& path,
                                                const std::string& field) {
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
  return TorchScriptModel(std::move(module));
}

std::vector<std::pair<std::string, torch::Tensor>>
TorchScriptModel::NamedParameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
    if (p.value.requires_grad()) out.emplace_back(p.name, p.value);
  }
  return out;
}

std::vector<torch::Tensor> TorchScriptModel::Parameters() const {
  std::vector<torch::Tensor> out;
  for (auto& [name, tensor] : NamedParameters()) out.push_back(tensor);
  return out;
}

torch::Tensor TorchScriptModel::Forward(const torch::Tensor& input) {
  return module_.forward({input}).toTensor();
}

torch::Tensor TorchScriptModel::Loss(const torch::Tensor& input,
                                     const torch::Tensor& target) {
  return module_.get_method("loss")({input, target}).toTensor();
}

}  // namespace megabatch::trainer
