// The user's own model and data (model.type torchscript, docs/models.md):
// classification over .npy arrays and language modelling over flat token
// files. Files are memory-mapped (data/npy.h), so the trainers of a host
// share the page cache's one copy; a step copies only its own batch.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <sstream>

#include "common/metric_catalog.h"
#include "worker/trainer/data/npy.h"
#include "worker/trainer/models/torchscript.h"
#include "worker/trainer/tasks/masking.h"
#include "worker/trainer/tasks/task.h"

namespace megabatch::trainer {
namespace {

namespace F = torch::nn::functional;

constexpr double kLn2 = 0.69314718055994530942;
// Windows per evaluation forward of a language model.
constexpr int64_t kEvalWindows = 64;
// The rows val_fraction holds out: a fixed permutation, the same for every
// trial, seed and host.
constexpr uint64_t kHoldOutSeed = 20261203;

using SplitFiles = TrialConfig::SplitFiles;

torch::ScalarType TorchType(NpyType type) {
  switch (type) {
    case NpyType::kFloat32:
      return torch::kFloat32;
    case NpyType::kFloat16:
      return torch::kFloat16;
    case NpyType::kUInt8:
      return torch::kUInt8;
    case NpyType::kInt64:
      return torch::kInt64;
    case NpyType::kInt32:
      return torch::kInt32;
    case NpyType::kUInt16:
    case NpyType::kUInt32:
      break;  // no such tensor type in LibTorch 1.13: read by Gather
  }
  return torch::kFloat32;
}

// The mapped array as a CPU tensor, without a copy. Read-only by contract:
// nothing writes into it (the mapping is PROT_READ).
torch::Tensor View(const NpyArray& a) {
  return torch::from_blob(const_cast<void*>(a.data()), a.shape(),
                          TorchType(a.type()));
}

std::string ShapeText(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

// What is worth showing of an error from a module's method: the
// interpreter's last line ("RuntimeError: index out of range in self"), or
// an operator's first, without tracebacks.
std::string ErrorText(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  std::string what = c10 != nullptr ? c10->what_without_backtrace() : e.what();
  if (what.find("Traceback of TorchScript") == std::string::npos) {
    return what.substr(0, what.find('\n'));
  }
  while (!what.empty() && what.back() == '\n') what.pop_back();
  return what.substr(what.rfind('\n') + 1);
}

// Whether an error is the host's (memory), not the model's or the data's.
bool IsResourceError(const std::string& text) {
  for (const char* sign : {"out of memory", "can't allocate memory",
                           "Cannot allocate memory", "CUDA error"}) {
    if (text.find(sign) != std::string::npos) return true;
  }
  return false;
}

// Runs one of the module's methods; an error becomes an InputError naming
// the model, except running out of memory (which may not happen on another
// host: the trial is retried).
template <typename Fn>
torch::Tensor Call(const char* method, Fn&& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    const std::string text = ErrorText(e);
    if (IsResourceError(e.what())) throw;
    throw InputError("model.path: the module's " + std::string(method) +
                     " failed: " + text);
  }
}

// Runs `probe` (a forward of one sample) with the model in eval mode (no
// dropout draw, no batch-norm update) and without gradients, so that a
// model that does not fit the data fails before training, with
// INVALID_ARGUMENT.
template <typename Fn>
Status Probe(torch::nn::Module& model, Fn&& probe) {
  torch::NoGradGuard no_grad;
  model.eval();
  try {
    probe();
  } catch (const InputError& e) {
    model.train();
    return InvalidArgumentError(e.what());
  }
  model.train();
  return Status();
}

// A module's own loss must be a scalar.
torch::Tensor CheckScalarLoss(const torch::Tensor& loss) {
  if (loss.numel() != 1) {
    throw InputError("model.path: the module's loss returned shape " +
                     ShapeText(loss) + "; it must return a scalar");
  }
  return loss.reshape({});
}

// The module of a torchscript trial: the worker's verified copy when it set
// one, else model.path (a trainer run by hand).
Result<std::shared_ptr<TorchScriptModel>> LoadModel(const TrialConfig& config) {
  return TorchScriptModel::Load(
      config.model_file.empty() ? config.model_path : config.model_file,
      "model.path");
}

// ---------------------------------------------------------------------------
// Classification: x [N, ...] (float32, float16 or uint8, given to the model
// as float32 with the values stored) and y [N] (int64 or int32 labels).

struct LabeledSplit {
  std::string field;  // "dataset.val"
  torch::Tensor x, y;
  int64_t max_label = 0;
};

// Opens and checks one split's x and y, keeping their maps in `maps`.
Result<LabeledSplit> OpenLabeled(const std::string& field,
                                 const SplitFiles& files,
                                 std::vector<NpyArray>* maps) {
  MEGABATCH_ASSIGN_OR_RETURN(NpyArray x, NpyArray::Open(files.x, field + ".x"));
  MEGABATCH_ASSIGN_OR_RETURN(NpyArray y, NpyArray::Open(files.y, field + ".y"));
  MEGABATCH_RETURN_IF_ERROR(CheckLabeledSplit(field, x, files.x, y, files.y));
  LabeledSplit s;
  s.field = field;
  s.x = View(x);
  s.y = View(y);
  s.max_label = s.y.max().item<int64_t>();
  maps->push_back(std::move(x));
  maps->push_back(std::move(y));
  return s;
}

// `rows` of `s` (index_select copies them: the held-out split is small).
LabeledSplit Rows(const LabeledSplit& s, const std::string& field,
                  const torch::Tensor& rows) {
  LabeledSplit out{field, s.x.index_select(0, rows), s.y.index_select(0, rows),
                   0};
  out.max_label = out.y.max().item<int64_t>();
  return out;
}

class ClassificationFilesTask : public Task {
 public:
  static Result<std::unique_ptr<Task>> Make(const TrialConfig& config) {
    auto task = std::unique_ptr<ClassificationFilesTask>(
        new ClassificationFilesTask(config));
    MEGABATCH_ASSIGN_OR_RETURN(
        task->train_,
        OpenLabeled("dataset.train", config.train_files, &task->maps_));
    if (!config.val_files.empty()) {
      MEGABATCH_ASSIGN_OR_RETURN(
          task->val_,
          OpenLabeled("dataset.val", config.val_files, &task->maps_));
    } else {
      MEGABATCH_RETURN_IF_ERROR(task->HoldOut(config.val_fraction));
    }
    if (!config.test_files.empty()) {
      MEGABATCH_ASSIGN_OR_RETURN(
          task->test_,
          OpenLabeled("dataset.test", config.test_files, &task->maps_));
    }
    for (const LabeledSplit* s : {&task->val_, &task->test_}) {
      if (!s->x.defined()) continue;
      if (s->x.sizes().slice(1) != task->train_.x.sizes().slice(1)) {
        return InvalidArgumentError(
            s->field + ".x: samples of shape " + ShapeText(s->x[0]) +
            ", but dataset.train.x's are " + ShapeText(task->train_.x[0]));
      }
    }
    return std::unique_ptr<Task>(std::move(task));
  }

  Result<std::shared_ptr<torch::nn::Module>> BuildModel() override {
    MEGABATCH_ASSIGN_OR_RETURN(model_, LoadModel(config_));
    MEGABATCH_RETURN_IF_ERROR(Probe(*model_, [&] {
      for (const LabeledSplit* s : {&train_, &val_, &test_}) {
        if (s->x.defined()) Logits(Inputs(s->x.slice(0, 0, 1)), *s);
      }
    }));
    return std::shared_ptr<torch::nn::Module>(model_);
  }

  void To(torch::Device device) override {
    if (device.is_cpu()) return;  // the mapped files themselves
    for (LabeledSplit* s : {&train_, &val_, &test_}) {
      if (!s->x.defined()) continue;
      s->x = s->x.to(device);
      s->y = s->y.to(device);
    }
    if (train_rows_.defined()) train_rows_ = train_rows_.to(device);
  }

  int64_t train_size() const override {
    return train_rows_.defined() ? train_rows_.size(0) : train_.x.size(0);
  }

  torch::Tensor Loss(const torch::Tensor& samples,
                     int64_t /*offset*/) override {
    const torch::Tensor rows =
        train_rows_.defined() ? train_rows_.index_select(0, samples) : samples;
    const torch::Tensor x = Inputs(train_.x.index_select(0, rows));
    const torch::Tensor y = train_.y.index_select(0, rows).to(torch::kInt64);
    if (model_->has_loss()) {
      return CheckScalarLoss(Call("loss", [&] { return model_->Loss(x, y); }));
    }
    return F::cross_entropy(Logits(x, train_), y);
  }

  bool has_test_split() const override { return test_.x.defined(); }

  Evaluation Evaluate(Split split) override {
    const LabeledSplit& s = split == Split::kTest ? test_ : val_;
    const int64_t n = s.x.size(0);
    double loss_sum = 0;
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i += kEvalSamples) {
      const int64_t end = std::min(n, i + kEvalSamples);
      const torch::Tensor x = Inputs(s.x.slice(0, i, end));
      const torch::Tensor y = s.y.slice(0, i, end).to(torch::kInt64);
      Score score = ScoreLogits(Logits(x, s), y);
      if (model_->has_loss()) {
        loss_sum +=
            CheckScalarLoss(Call("loss", [&] { return model_->Loss(x, y); }))
                .item<double>() *
            static_cast<double>(end - i);
      } else {
        loss_sum += score.loss_sum.item<double>();
      }
      correct += score.hits.item<int64_t>();
    }
    return {loss_sum / n, static_cast<double>(correct) / n, {}};
  }

 private:
  explicit ClassificationFilesTask(const TrialConfig& config)
      : config_(config) {}

  // dataset.val_fraction: a fixed share of the training rows, drawn by a
  // fixed permutation, becomes the validation split.
  Status HoldOut(double fraction) {
    const int64_t n = train_.x.size(0);
    const int64_t held =
        static_cast<int64_t>(std::llround(fraction * static_cast<double>(n)));
    if (held < 1 || held >= n) {
      return InvalidArgumentError(
          "dataset.val_fraction: " + std::to_string(fraction) + " of " +
          std::to_string(n) +
          " samples leaves no validation or no training "
          "samples");
    }
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(kHoldOutSeed);
    const torch::Tensor order = torch::randperm(n, g, torch::kInt64);
    val_ = Rows(train_, "dataset.train",
                std::get<0>(order.slice(0, 0, held).sort()));
    train_rows_ = std::get<0>(order.slice(0, held).sort());
    return Status();
  }

  static torch::Tensor Inputs(const torch::Tensor& x) {
    return x.scalar_type() == torch::kFloat32 ? x : x.to(torch::kFloat32);
  }

  // The model's logits for `x`, checked against the split's labels.
  torch::Tensor Logits(const torch::Tensor& x, const LabeledSplit& s) {
    torch::Tensor logits = Call("forward", [&] { return model_->Forward(x); });
    if (logits.dim() != 2 || logits.size(0) != x.size(0)) {
      throw InputError("model.path: forward returned " + ShapeText(logits) +
                       " for inputs " + ShapeText(x) +
                       "; a classification model returns logits [N, C]");
    }
    if (s.max_label >= logits.size(1)) {
      throw InputError(s.field + ".y: label " + std::to_string(s.max_label) +
                       " is out of range for the model's " +
                       std::to_string(logits.size(1)) + " logits");
    }
    return logits;
  }

  const TrialConfig config_;
  std::vector<NpyArray> maps_;  // keeps the views' memory mapped
  LabeledSplit train_, val_, test_;
  // With val_fraction: the training rows, in file order (else all rows).
  torch::Tensor train_rows_;
  std::shared_ptr<TorchScriptModel> model_;
};

// ---------------------------------------------------------------------------
// Language modelling: a sample is a window of seq_len + 1 tokens (the model
// sees the first seq_len and predicts the next token at each). An epoch is
// the windows at multiples of seq_len; at optimizer step s, sample i starts
// at i * seq_len plus an offset in [0, seq_len) drawn from (seed, s), so a
// sample does not depend on micro-batches, ranks or a resume, and training
// sees every position. Held-out splits use the aligned windows.

struct TokenSplit {
  std::string field;  // "dataset.val.tokens"
  const NpyArray* file = nullptr;
  int64_t begin = 0;  // its tokens: [begin, begin + count) of the file
  int64_t count = 0;
};

// [n, len] int64: the tokens of `split` from each of `starts` (relative to
// the split) on.
torch::Tensor Gather(const TokenSplit& split, const int64_t* starts, int64_t n,
                     int64_t len) {
  torch::Tensor out = torch::empty({n, len}, torch::kInt64);
  int64_t* dst = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t at = split.begin + starts[i];
    if (split.file->type() == NpyType::kUInt16) {
      const auto* src = static_cast<const uint16_t*>(split.file->data()) + at;
      std::copy(src, src + len, dst + i * len);
    } else {
      const auto* src = static_cast<const uint32_t*>(split.file->data()) + at;
      std::copy(src, src + len, dst + i * len);
    }
  }
  return out;
}

class LanguageModelFilesTask : public Task {
 public:
  static Result<std::unique_ptr<Task>> Make(const TrialConfig& config) {
    auto task = std::unique_ptr<LanguageModelFilesTask>(
        new LanguageModelFilesTask(config));
    const NpyType type =
        config.token_dtype == "uint32" ? NpyType::kUInt32 : NpyType::kUInt16;
    auto& maps = task->maps_;
    maps.reserve(3);  // the splits point into it
    auto open = [&](const std::string& field,
                    const std::string& path) -> Result<TokenSplit> {
      MEGABATCH_ASSIGN_OR_RETURN(NpyArray file,
                                 NpyArray::OpenFlat(path, field, type));
      maps.push_back(std::move(file));
      return TokenSplit{field, &maps.back(), 0, maps.back().rows()};
    };
    MEGABATCH_ASSIGN_OR_RETURN(
        task->train_, open("dataset.train.tokens", config.train_files.tokens));
    if (!config.val_files.empty()) {
      MEGABATCH_ASSIGN_OR_RETURN(
          task->val_, open("dataset.val.tokens", config.val_files.tokens));
    } else {
      // The last val_fraction of the training tokens.
      TokenSplit& train = task->train_;
      const int64_t held = static_cast<int64_t>(
          std::llround(config.val_fraction * static_cast<double>(train.count)));
      task->val_ = {"dataset.train.tokens", train.file, train.count - held,
                    held};
      train.count -= held;
    }
    if (!config.test_files.empty()) {
      MEGABATCH_ASSIGN_OR_RETURN(
          task->test_, open("dataset.test.tokens", config.test_files.tokens));
    }
    for (const TokenSplit* s : {&task->train_, &task->val_, &task->test_}) {
      if (s->file == nullptr || s->count >= config.seq_len + 1) continue;
      return InvalidArgumentError(
          s->field + ": " + std::to_string(s->count) +
          " tokens is shorter than one window of dataset.seq_len + 1 = " +
          std::to_string(config.seq_len + 1));
    }
    return std::unique_ptr<Task>(std::move(task));
  }

  Result<std::shared_ptr<torch::nn::Module>> BuildModel() override {
    MEGABATCH_ASSIGN_OR_RETURN(model_, LoadModel(config_));
    vocab_ = 0;
    MEGABATCH_RETURN_IF_ERROR(Probe(*model_, [&] {
      const int64_t first = 0;
      const torch::Tensor rows = Gather(train_, &first, 1, config_.seq_len + 1);
      vocab_ = Logits(rows.slice(1, 0, config_.seq_len)).size(2);
    }));
    return std::shared_ptr<torch::nn::Module>(model_);
  }
  void To(torch::Device device) override { device_ = device; }
  int64_t train_size() const override { return Windows(train_); }

  void BeginStep(int64_t step, const torch::Tensor& batch) override {
    at::Generator g = StepGenerator(config_.seed, step);
    offsets_ =
        torch::randint(0, config_.seq_len, {batch.size(0)}, g, torch::kInt64);
  }

  torch::Tensor Loss(const torch::Tensor& samples, int64_t offset) override {
    const torch::Tensor index = samples.to(torch::kCPU);
    const int64_t n = index.size(0);
    const int64_t last = train_.count - (config_.seq_len + 1);
    torch::Tensor starts =
        (index * config_.seq_len + offsets_.slice(0, offset, offset + n))
            .clamp_max(last)
            .contiguous();
    const torch::Tensor rows =
        ReadWindows(train_, starts.data_ptr<int64_t>(), n);
    const torch::Tensor inputs = rows.slice(1, 0, config_.seq_len);
    const torch::Tensor targets = rows.slice(1, 1);
    if (model_->has_loss()) {
      return CheckScalarLoss(
          Call("loss", [&] { return model_->Loss(inputs, targets); }));
    }
    const torch::Tensor logits = Logits(inputs);
    return F::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                            targets.reshape({-1}));
  }

  bool has_test_split() const override { return test_.file != nullptr; }

  Evaluation Evaluate(Split split) override {
    const TokenSplit& s = split == Split::kTest ? test_ : val_;
    const int64_t n = Windows(s);
    double loss_sum = 0;
    int64_t correct = 0;
    std::vector<int64_t> starts;
    for (int64_t i = 0; i < n; i += kEvalWindows) {
      const int64_t end = std::min(n, i + kEvalWindows);
      starts.clear();
      for (int64_t w = i; w < end; ++w) starts.push_back(w * config_.seq_len);
      const torch::Tensor rows = ReadWindows(s, starts.data(), end - i);
      const torch::Tensor inputs = rows.slice(1, 0, config_.seq_len);
      const torch::Tensor targets = rows.slice(1, 1);
      const torch::Tensor logits = Logits(inputs);
      Score score = ScoreLogits(logits.reshape({-1, logits.size(-1)}),
                                targets.reshape({-1}));
      if (model_->has_loss()) {
        loss_sum +=
            CheckScalarLoss(
                Call("loss", [&] { return model_->Loss(inputs, targets); }))
                .item<double>() *
            static_cast<double>(targets.numel());
      } else {
        loss_sum += score.loss_sum.item<double>();
      }
      correct += score.hits.item<int64_t>();
    }
    const double tokens = static_cast<double>(n * config_.seq_len);
    const double loss = loss_sum / tokens;
    return {loss,
            correct / tokens,
            {{metric::kValPerplexity, std::exp(loss)},
             {metric::kValBitsPerToken, loss / kLn2}}};
  }

 private:
  explicit LanguageModelFilesTask(const TrialConfig& config)
      : config_(config) {}

  // Windows at multiples of seq_len that fit in the split.
  int64_t Windows(const TokenSplit& s) const {
    return (s.count - (config_.seq_len + 1)) / config_.seq_len + 1;
  }

  // The windows of `s` from `starts` ([n, seq_len + 1]) on the device,
  // every token checked below the model's vocabulary (known from the probe:
  // the module's embedding would fail on one with a less useful message),
  // once per window and on the CPU, before the copy.
  torch::Tensor ReadWindows(const TokenSplit& s, const int64_t* starts,
                            int64_t n) const {
    const torch::Tensor rows = Gather(s, starts, n, config_.seq_len + 1);
    if (const int64_t top = rows.max().item<int64_t>(); top >= vocab_) {
      throw InputError(s.field + ": token " + std::to_string(top) +
                       " is out of range for the model's vocabulary of " +
                       std::to_string(vocab_));
    }
    return rows.to(device_);
  }

  // The model's logits for `inputs` [N, T], checked: [N, T, V].
  torch::Tensor Logits(const torch::Tensor& inputs) {
    torch::Tensor logits =
        Call("forward", [&] { return model_->Forward(inputs); });
    if (logits.dim() != 3 || logits.size(0) != inputs.size(0) ||
        logits.size(1) != inputs.size(1)) {
      throw InputError("model.path: forward returned " + ShapeText(logits) +
                       " for tokens " + ShapeText(inputs) +
                       "; a language model returns logits [N, T, V]");
    }
    return logits;
  }

  const TrialConfig config_;
  std::vector<NpyArray> maps_;
  TokenSplit train_, val_, test_;
  torch::Device device_ = torch::kCPU;
  torch::Tensor offsets_;  // this step's window offsets, one per sample
  int64_t vocab_ = 0;      // the model's V, from the probe
  std::shared_ptr<TorchScriptModel> model_;
};

}  // namespace

Result<std::unique_ptr<Task>> MakeFilesTask(const TrialConfig& config) {
  if (config.dataset_kind == "language_model") {
    return LanguageModelFilesTask::Make(config);
  }
  return ClassificationFilesTask::Make(config);
}

}  // namespace megabatch::trainer
