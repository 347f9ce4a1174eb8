// A user's TorchScript model on the user's own data files (docs/models.md):
// the same numbers as the built-in mlp and as PyTorch's own optimizers, a
// language model that resumes bit for bit and accumulates exactly, tied
// weights trained once, and every bad input refused naming its field.
// Modules and data are exported by Debian's python3-torch as a user would.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/trainer_testing.h"
#include "worker/trainer/data/npy.h"
#include "worker/trainer/models/models.h"
#include "worker/trainer/models/torchscript.h"
#include "worker/trainer/optim/registry.h"
#include "worker/trainer/tasks/task.h"
#include "worker/trainer/trainer.h"

namespace megabatch::trainer {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using testing::RecordingSink;

constexpr int64_t kSeed = 7;
// Fashion-MNIST rows the oracle against the built-in mlp uses: the built-in
// image task holds out the second half of them as its validation split.
constexpr int64_t kImageRows = 3000;

constexpr const char* kExport = R"py(
import os, sys
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

d = sys.argv[1]
def path(name):
    return os.path.join(d, name)

# The built-in mlp's twin (hidden [32]), from the built-in's initial weights.
mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
with torch.no_grad():
    for name, p in mlp.named_parameters():
        p.copy_(torch.from_numpy(np.load(path('init_' + name + '.npy'))))
torch.jit.save(torch.jit.script(mlp), path('mlp.pt'))

# A small classifier, and PyTorch's own optimizers on its full batch.
torch.manual_seed(1)
net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
x = torch.randn(64, 6)
y = (x @ torch.randn(6, 3)).argmax(1)  # learnable
np.save(path('x.npy'), x.numpy())
np.save(path('y.npy'), y.numpy())
torch.jit.save(torch.jit.script(net), path('tiny.pt'))
for name, make in [('adamw', lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.01)),
                   ('sgd', lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))]:
    m = torch.jit.load(path('tiny.pt'))
    opt = make(m.parameters())
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = F.cross_entropy(m(x), y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    np.save(path(name + '_losses.npy'), np.array(losses, dtype=np.float32))

# Bad inputs.
np.save(path('y_short.npy'), y[:63].numpy())
np.save(path('y_big.npy'), torch.where(y == 2, 5, y).numpy())
x_nan = x.clone()
x_nan[17, 2] = float('nan')
np.save(path('x_nan.npy'), x_nan.numpy())
np.save(path('x_int.npy'), y.reshape(64, 1).numpy())
np.save(path('x_wide.npy'), torch.randn(64, 7).numpy())

class Sums(nn.Module):
    def forward(self, x):
        return x.sum(1)
torch.jit.save(torch.jit.script(Sums()), path('sums.pt'))

# A small language model with tied input and output embeddings, a
# LayerNorm, dropout and its own loss method.
class TinyLm(nn.Module):
    def __init__(self, vocab: int, width: int, seq: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(0.02 * torch.randn(seq, width))
        self.mix = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        h = self.embed(tokens) + self.pos[: tokens.size(1)]
        h = h + self.drop(torch.relu(self.mix(h)))
        return self.head(self.norm(h))

torch.manual_seed(2)
lm = TinyLm(64, 32, 16)
torch.jit.save(torch.jit.script(lm), path('lm.pt'))
with open(path('lm_names.txt'), 'w') as f:
    f.write('\n'.join(n for n, _ in lm.named_parameters()))
rng = np.random.RandomState(0)
# A repeating pattern with noise: learnable.
base = np.tile(np.arange(64), 80)
noise = rng.randint(0, 64, base.size)
tokens = np.where(rng.rand(base.size) < 0.1, noise, base).astype(np.uint16)
tokens[:4000].tofile(path('train.bin'))
tokens[4000:].tofile(path('val.bin'))
tokens[:4000].astype(np.uint32).tofile(path('train32.bin'))
np.array([1, 2, 3], dtype=np.uint16).tofile(path('short.bin'))
np.where((np.arange(4000) >= 999) & (np.arange(4000) < 1040), 100, tokens[:4000]).astype(np.uint16).tofile(path('big_token.bin'))
)py";

// Writes `t` (float32 or int64, contiguous) as a .npy file.
void WriteNpy(const std::string& path, const torch::Tensor& t) {
  std::ostringstream shape;
  for (int64_t d : t.sizes()) shape << d << ", ";
  std::string header = std::string("{'descr': '") +
                       (t.scalar_type() == torch::kInt64 ? "<i8" : "<f4") +
                       "', 'fortran_order': False, 'shape': (" + shape.str() +
                       "), }";
  header.resize((header.size() + 11 + 63) / 64 * 64 - 11, ' ');
  header += '\n';
  const torch::Tensor c = t.contiguous();
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.put(static_cast<char>(len & 0xff)).put(static_cast<char>(len >> 8));
  out << header;
  out.write(static_cast<const char*>(c.data_ptr()),
            static_cast<std::streamsize>(c.nbytes()));
}

torch::Tensor ReadNpy(const std::string& path) {
  auto a = NpyArray::Open(path, path);
  EXPECT_OK(a);
  if (!a.ok()) return torch::Tensor();
  return torch::from_blob(const_cast<void*>(a->data()), a->shape(),
                          torch::kFloat32)
      .clone();
}

class FilesTaskTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    auto data = LoadFashionMnist("/usr/share/datasets/fashion-mnist");
    ASSERT_OK(data);
    images_ =
        new ImageDataset{data->train_images.slice(0, 0, kImageRows).clone(),
                         data->train_labels.slice(0, 0, kImageRows).clone(),
                         data->test_images.slice(0, 0, 1000).clone(),
                         data->test_labels.slice(0, 0, 1000).clone()};
    const int64_t half = kImageRows / 2;
    WriteNpy(File("img_train_x.npy"), images_->train_images.slice(0, 0, half));
    WriteNpy(File("img_train_y.npy"), images_->train_labels.slice(0, 0, half));
    WriteNpy(File("img_val_x.npy"), images_->train_images.slice(0, half));
    WriteNpy(File("img_val_y.npy"), images_->train_labels.slice(0, half));
    // The built-in mlp's initial weights for kSeed, as RunTrial makes them.
    torch::manual_seed(kSeed);
    auto mlp = BuildModel(BuiltInConfig({}));
    ASSERT_OK(mlp);
    for (const auto& p : (*mlp)->named_parameters()) {
      WriteNpy(File("init_" + p.key() + ".npy"), p.value().detach());
    }
    const std::string script = File("export.py");
    std::ofstream(script) << kExport;
    ASSERT_EQ(
        std::system(("/usr/bin/python3 " + script + " " + dir_->path().string())
                        .c_str()),
        0);
  }
  static void TearDownTestSuite() {
    delete images_;
    delete dir_;
  }

  static std::string File(const std::string& name) { return dir_->File(name); }

  // `doc` with `overrides` merged in, parsed.
  static TrialConfig Parse(json doc, const json& overrides) {
    if (!overrides.is_null()) doc.merge_patch(overrides);
    auto c = ParseTrialConfig(doc);
    EXPECT_OK(c);
    return c.ok() ? *c : TrialConfig();
  }

  // LAMB at batch 100 for 30 steps, evaluated every 10, on `model` (and
  // `dataset`).
  static json Doc(const json& model, const json& dataset) {
    json doc = {{"seed", kSeed},
                {"model", model},
                {"optimizer", {{"name", "lamb"}}},
                {"batch_size", 100},
                {"lr", 0.01},
                {"budget", {{"steps", 30}}},
                {"eval_every_steps", 10},
                {"threads", 1}};
    if (!dataset.is_null()) doc["dataset"] = dataset;
    return doc;
  }

  static TrialConfig BuiltInConfig(const json& overrides) {
    return Parse(Doc({{"type", "mlp"}, {"hidden", {32}}}, nullptr), overrides);
  }

  // A torchscript classification config over `dataset` files.
  static TrialConfig ClassifierConfig(const std::string& model,
                                      const json& dataset,
                                      const json& overrides) {
    return Parse(Doc({{"type", "torchscript"}, {"path", File(model)}}, dataset),
                 overrides);
  }

  static json TinyData(const std::string& x = "x.npy",
                       const std::string& y = "y.npy") {
    return {{"kind", "classification"},
            {"train", {{"x", File(x)}, {"y", File(y)}}},
            {"val", {{"x", File("x.npy")}, {"y", File("y.npy")}}}};
  }

  static TrialConfig LmConfig(const json& overrides) {
    json doc = Doc({{"type", "torchscript"}, {"path", File("lm.pt")}},
                   {{"kind", "language_model"},
                    {"train", {{"tokens", File("train.bin")}}},
                    {"val", {{"tokens", File("val.bin")}}},
                    {"seq_len", 16}});
    doc.merge_patch({{"batch_size", 32},
                     {"budget", {{"steps", 24}}},
                     {"eval_every_steps", 8}});
    return Parse(doc, overrides);
  }

  static std::unique_ptr<Task> Make(const TrialConfig& c) {
    auto task = MakeTask(c);
    EXPECT_OK(task);
    return task.ok() ? std::move(*task) : nullptr;
  }

  static Result<TrialResult> Run(const TrialConfig& c, RecordingSink* sink) {
    auto task = MakeTask(c);
    if (!task.ok()) return task.status();
    return RunTrial(c, **task, sink);
  }

  // Why a run failed: its INVALID_ARGUMENT (found before training) or
  // the InputError it threw (during training); "" if it did not fail so.
  static std::string FailureOf(const TrialConfig& c) {
    RecordingSink sink;
    try {
      auto r = Run(c, &sink);
      if (r.ok()) return "";
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
      return r.status().message();
    } catch (const InputError& e) {
      return e.what();
    }
  }

  static testing::TempDir* dir_;
  static ImageDataset* images_;
};

testing::TempDir* FilesTaskTest::dir_ = nullptr;
ImageDataset* FilesTaskTest::images_ = nullptr;

TEST_F(FilesTaskTest, ATorchScriptMlpTrainsBitForBitAsTheBuiltInMlp) {
  for (const char* optimizer : {"lamb", "sgd"}) {
    SCOPED_TRACE(optimizer);
    const json opt = {{"optimizer", {{"name", optimizer}}}};
    RecordingSink built_in, scripted;
    ASSERT_OK(RunTrial(BuiltInConfig(opt), *images_, &built_in));
    const json dataset = {
        {"kind", "classification"},
        {"train",
         {{"x", File("img_train_x.npy")}, {"y", File("img_train_y.npy")}}},
        {"val", {{"x", File("img_val_x.npy")}, {"y", File("img_val_y.npy")}}}};
    ASSERT_OK(Run(ClassifierConfig("mlp.pt", dataset, opt), &scripted));
    for (const char* name :
         {"train_loss", "grad_norm", "val_loss", "val_accuracy"}) {
      SCOPED_TRACE(name);
      const auto a = built_in.Named(name), b = scripted.Named(name);
      ASSERT_EQ(a.size(), b.size());
      ASSERT_FALSE(a.empty());
      for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i].step, b[i].step);
        EXPECT_EQ(a[i].value, b[i].value) << "at step " << a[i].step;
      }
    }
  }
}

TEST_F(FilesTaskTest, FullBatchAdamWAndSgdMatchPyTorchsOwnOptimizers) {
  for (const auto& [name, lr] :
       {std::pair<const char*, double>{"adamw", 0.01}, {"sgd", 0.1}}) {
    SCOPED_TRACE(name);
    RecordingSink sink;
    ASSERT_OK(Run(ClassifierConfig("tiny.pt", TinyData(),
                                   {{"optimizer", {{"name", name}}},
                                    {"batch_size", 64},
                                    {"lr", lr},
                                    {"budget", {{"steps", 20}}}}),
                  &sink));
    const torch::Tensor want = ReadNpy(File(std::string(name) + "_losses.npy"));
    const auto got = sink.Named("train_loss");
    ASSERT_EQ(static_cast<int64_t>(got.size()), want.size(0));
    for (size_t i = 0; i < got.size(); ++i) {
      const double w = want[static_cast<int64_t>(i)].item<double>();
      EXPECT_NEAR(got[i].value, w, 1e-5 * std::abs(w)) << "step " << i + 1;
    }
    // And it learned (the oracle is not trivially flat).
    EXPECT_LT(got.back().value, 0.9 * got.front().value);
  }
}

TEST_F(FilesTaskTest, ALanguageModelResumesBitForBitWithItsDropout) {
  const TrialConfig c =
      LmConfig({{"checkpoint_every_steps", 10},
                {"checkpoint_path", File("lm-checkpoint.pt")}});
  testing::ExpectResumeReproduces(
      c, [&] { return Make(c); }, 20);
}

TEST_F(FilesTaskTest, FourMicroBatchesEqualOneBatch) {
  // The classifier has no dropout, whose draws depend on the micro-batch.
  for (const char* optimizer : {"lamb", "adamw"}) {
    SCOPED_TRACE(optimizer);
    const json base = {{"optimizer", {{"name", optimizer}}},
                       {"batch_size", 64},
                       {"budget", {{"steps", 20}}}};
    json micro = base;
    micro["micro_batch_size"] = 16;
    RecordingSink one, four;
    auto a = Run(ClassifierConfig("tiny.pt", TinyData(), base), &one);
    ASSERT_OK(a);
    auto b = Run(ClassifierConfig("tiny.pt", TinyData(), micro), &four);
    ASSERT_OK(b);
    const auto x = one.Named("train_loss"), y = four.Named("train_loss");
    ASSERT_EQ(x.size(), y.size());
    for (size_t i = 0; i < x.size(); ++i) {
      EXPECT_NEAR(y[i].value, x[i].value, 1e-5 * x[i].value) << "step " << i;
    }
    for (size_t i = 0; i < a->parameters.size(); ++i) {
      EXPECT_TRUE(
          torch::allclose(b->parameters[i], a->parameters[i], 1e-5, 1e-6));
    }
  }
}

TEST_F(FilesTaskTest, ALanguageModelReportsPerplexityAndBitsPerToken) {
  for (const char* dtype : {"uint16", "uint32"}) {
    SCOPED_TRACE(dtype);
    json o = {{"dataset", {{"dtype", dtype}}}};
    if (std::string(dtype) == "uint32") {
      o["dataset"]["train"] = {{"tokens", File("train32.bin")}};
      o["dataset"]["val"] = nullptr;
      o["dataset"]["val_fraction"] = 0.1;
    }
    RecordingSink sink;
    ASSERT_OK(Run(LmConfig(o), &sink));
    const auto loss = sink.Named("val_loss");
    const auto ppl = sink.Named("val_perplexity");
    const auto bits = sink.Named("val_bits_per_token");
    ASSERT_EQ(loss.size(), 3u);
    ASSERT_EQ(ppl.size(), 3u);
    ASSERT_EQ(bits.size(), 3u);
    for (size_t i = 0; i < loss.size(); ++i) {
      EXPECT_DOUBLE_EQ(ppl[i].value, std::exp(loss[i].value));
      EXPECT_DOUBLE_EQ(bits[i].value, loss[i].value / std::log(2.0));
    }
    EXPECT_LT(loss.back().value, loss.front().value);
    // 4000 tokens (less a tenth held out) in windows of 17 at steps of 16.
    EXPECT_EQ(sink.Named("train_samples")[0].value,
              std::string(dtype) == "uint16" ? 249 : 224);
  }
}

TEST_F(FilesTaskTest, TiedWeightsAreOneParameterAndOneDParametersAreExcluded) {
  ASSERT_OK_AND_ASSIGN(auto model,
                       TorchScriptModel::Load(File("lm.pt"), "model.path"));
  std::vector<std::string> names;
  for (const auto& p : model->named_parameters()) names.push_back(p.key());
  // PyTorch lists the tied head.weight once too, under embed.weight.
  std::ifstream file(File("lm_names.txt"));
  std::vector<std::string> want;
  for (std::string line; std::getline(file, line);) want.push_back(line);
  EXPECT_EQ(names, want);
  EXPECT_THAT(names, ::testing::Not(::testing::Contains("head.weight")));
  const ParameterSplit split = SplitBiasAndNorm(*model);
  EXPECT_EQ(split.regular.size(), 3u);   // embed, pos, mix.weight
  EXPECT_EQ(split.excluded.size(), 3u);  // mix.bias, norm.weight, norm.bias
  // A step moves the tied tensor inside the script module too: the head
  // (which reads embed.weight) sees the update.
  const torch::Tensor tokens = torch::arange(16).reshape({1, 16});
  model->eval();
  const torch::Tensor before = model->Forward(tokens).detach().clone();
  {
    torch::NoGradGuard no_grad;
    model->named_parameters()["embed.weight"].add_(1.0);
  }
  EXPECT_FALSE(torch::allclose(model->Forward(tokens), before));
}

TEST_F(FilesTaskTest, ValFractionHoldsOutTheSameRowsForEverySeed) {
  json dataset = {{"kind", "classification"},
                  {"train", {{"x", File("x.npy")}, {"y", File("y.npy")}}},
                  {"val_fraction", 0.25}};
  std::vector<double> losses;
  for (int64_t seed : {1, 2}) {
    auto task = Make(ClassifierConfig("tiny.pt", dataset, {{"seed", seed}}));
    ASSERT_NE(task, nullptr);
    EXPECT_EQ(task->train_size(), 48);
    ASSERT_OK(task->BuildModel());
    losses.push_back(task->Evaluate(Split::kValidation).loss);
  }
  EXPECT_EQ(losses[0], losses[1]);
}

TEST_F(FilesTaskTest, BadFilesAreRefusedBeforeTrainingNamingTheField) {
  struct Case {
    json dataset;
    std::string model;
    std::string error;
  };
  const std::vector<Case> cases = {
      {TinyData("x.npy", "y_short.npy"), "tiny.pt",
       "dataset.train.y: " + File("y_short.npy") +
           ": 63 labels for the 64 samples of dataset.train.x"},
      {TinyData("x_nan.npy"), "tiny.pt",
       "dataset.train.x: " + File("x_nan.npy") +
           ": sample 17 holds NaN or infinity"},
      {TinyData("x_int.npy"), "tiny.pt",
       "dtype int64; inputs must be float32, float16 or uint8"},
      {TinyData("x_wide.npy"), "tiny.pt",
       "dataset.val.x: samples of shape [6], but dataset.train.x's are [7]"},
      {TinyData(), "x.npy",
       "model.path: " + File("x.npy") + ": not a TorchScript file"},
      {{{"kind", "language_model"},
        {"train", {{"tokens", File("short.bin")}}},
        {"val_fraction", 0.1},
        {"seq_len", 16}},
       "lm.pt",
       "dataset.train.tokens: 3 tokens is shorter than one window of "
       "dataset.seq_len + 1 = 17"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.dataset.dump());
    RecordingSink sink;
    auto r = Run(ClassifierConfig(c.model, c.dataset, {}), &sink);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(c.error));
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
  }
}

TEST_F(FilesTaskTest, ModelsAndDataThatDoNotFitFailSayingWhy) {
  // A forward of one sample before training finds a model that does not fit
  // the data; a token beyond the vocabulary is found in the step that draws
  // it.
  EXPECT_THAT(
      FailureOf(ClassifierConfig("sums.pt", TinyData(), {{"batch_size", 64}})),
      HasSubstr("model.path: forward returned [1] for inputs "
                "[1, 6]; a classification model returns logits "
                "[N, C]"));
  EXPECT_THAT(
      FailureOf(ClassifierConfig("tiny.pt", TinyData("x.npy", "y_big.npy"),
                                 {{"batch_size", 64}})),
      HasSubstr("dataset.train.y: label 5 is out of range for the model's 3 "
                "logits"));
  EXPECT_THAT(
      FailureOf(LmConfig(
          {{"dataset", {{"train", {{"tokens", File("big_token.bin")}}}}},
           {"batch_size", 249}})),
      HasSubstr("dataset.train.tokens: token 100 is out of range for the "
                "model's vocabulary of 64"));
  // A classifier given to a language model's data: the module fails.
  EXPECT_THAT(FailureOf(LmConfig({{"model", {{"path", File("tiny.pt")}}}})),
              HasSubstr("model.path: the module's forward failed: "));
}

}  // namespace
}  // namespace megabatch::trainer
