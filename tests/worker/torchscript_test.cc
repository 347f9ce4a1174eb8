// A user's TorchScript module, exported by Debian's python3-torch as a user
// would, loads in the trainer with the module's own parameter names, and
// its forward, its own loss and their gradients equal PyTorch's; files that
// are not TorchScript are refused saying so.
#include "worker/trainer/models/torchscript.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "worker/trainer/data/npy.h"

namespace megabatch::trainer {
namespace {

using ::testing::HasSubstr;

constexpr const char* kExport = R"py(
import os, sys
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

d = sys.argv[1]
torch.manual_seed(0)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.LayerNorm(8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.body(x))

    @torch.jit.export
    def loss(self, x, y):
        return 2.0 * F.cross_entropy(self.forward(x), y)

net = Net()
torch.jit.save(torch.jit.script(net), os.path.join(d, 'scripted.pt'))
torch.jit.save(torch.jit.trace(nn.Sequential(nn.Linear(6, 2)), torch.zeros(1, 6)),
               os.path.join(d, 'traced.pt'))
x = torch.randn(5, 6)
y = torch.tensor([0, 2, 1, 1, 0])
np.save(os.path.join(d, 'x.npy'), x.numpy())
np.save(os.path.join(d, 'y.npy'), y.numpy())
logits = net(x)
np.save(os.path.join(d, 'logits.npy'), logits.detach().numpy())
loss = net.loss(x, y)
loss.backward()
np.save(os.path.join(d, 'loss.npy'), loss.detach().numpy().reshape(1))
np.save(os.path.join(d, 'head_grad.npy'), net.head.weight.grad.numpy())
with open(os.path.join(d, 'names.txt'), 'w') as f:
    f.write('\n'.join(n for n, _ in net.named_parameters()))
)py";

class TorchScriptTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const std::string script = dir_->File("export.py");
    std::ofstream(script) << kExport;
    ASSERT_EQ(
        std::system(("/usr/bin/python3 " + script + " " + dir_->path().string())
                        .c_str()),
        0);
  }
  static void TearDownTestSuite() { delete dir_; }

  static torch::Tensor Npy(const std::string& name) {
    auto a = NpyArray::Open(dir_->File(name), name);
    EXPECT_OK(a);
    if (!a.ok()) return torch::Tensor();
    std::vector<int64_t> shape = a->shape();
    const auto dtype =
        a->type() == NpyType::kInt64 ? torch::kInt64 : torch::kFloat32;
    return torch::from_blob(const_cast<void*>(a->data()), shape, dtype).clone();
  }

  static testing::TempDir* dir_;
};

testing::TempDir* TorchScriptTest::dir_ = nullptr;

TEST_F(TorchScriptTest, AScriptedModuleMatchesPyTorchUnderItsOwnNames) {
  ASSERT_OK_AND_ASSIGN(
      std::shared_ptr<TorchScriptModel> model,
      TorchScriptModel::Load(dir_->File("scripted.pt"), "model.path"));
  std::ifstream names_file(dir_->File("names.txt"));
  std::vector<std::string> names;
  for (std::string line; std::getline(names_file, line);) names.push_back(line);
  std::vector<std::string> got;
  for (const auto& p : model->named_parameters()) got.push_back(p.key());
  EXPECT_EQ(got, names);  // body.0.weight, ..., body.2.weight (LayerNorm), ...
  EXPECT_EQ(model->parameters().size(), names.size());

  const torch::Tensor x = Npy("x.npy");
  const torch::Tensor y = Npy("y.npy");
  EXPECT_TRUE(
      torch::allclose(model->Forward(x), Npy("logits.npy"), 1e-6, 1e-6));
  ASSERT_TRUE(model->has_loss());
  torch::Tensor loss = model->Loss(x, y);
  EXPECT_NEAR(loss.item<float>(), Npy("loss.npy")[0].item<float>(), 1e-6);
  loss.backward();
  const torch::Tensor* head = model->named_parameters().find("head.weight");
  ASSERT_NE(head, nullptr);
  EXPECT_TRUE(torch::allclose(head->grad(), Npy("head_grad.npy"), 1e-6, 1e-6));
}

TEST_F(TorchScriptTest, ATracedModuleLoadsWithoutALossOfItsOwn) {
  ASSERT_OK_AND_ASSIGN(
      std::shared_ptr<TorchScriptModel> model,
      TorchScriptModel::Load(dir_->File("traced.pt"), "model.path"));
  EXPECT_FALSE(model->has_loss());
  EXPECT_EQ(model->Forward(torch::zeros({4, 6})).sizes(),
            (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(model->named_parameters().keys().front(), "0.weight");
}

TEST_F(TorchScriptTest, FilesThatAreNotTorchScriptAreRefusedSayingSo) {
  auto npy = TorchScriptModel::Load(dir_->File("x.npy"), "model.path");
  ASSERT_FALSE(npy.ok());
  EXPECT_EQ(npy.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(npy.status().message(),
              HasSubstr("model.path: " + dir_->File("x.npy") +
                        ": not a TorchScript file"));
  EXPECT_EQ(npy.status().message().find('\n'), std::string::npos);
  EXPECT_EQ(TorchScriptModel::Load(dir_->File("none.pt"), "model.path")
                .status()
                .code(),
            StatusCode::kNotFound);
  EXPECT_EQ(TorchScriptModel::Load(dir_->path().string(), "model.path")
                .status()
                .code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace megabatch::trainer
