// The language-model tasks: char_lstm (bits per character) and tiny_bert
// (masked-language modelling), both on a TextCorpus.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <iostream>

#include "common/metric_catalog.h"
#include "common/model_catalog.h"
#include "worker/trainer/data/text_corpus.h"
#include "worker/trainer/data/tokenize_client.h"
#include "worker/trainer/data/tokenizer.h"
#include "worker/trainer/models/language_models.h"
#include "worker/trainer/tasks/masking.h"
#include "worker/trainer/tasks/task.h"

namespace megabatch::trainer {

namespace F = torch::nn::functional;

MaskedTokens MaskTokens(const torch::Tensor& tokens, const MaskingRule& rule,
                        at::Generator& generator) {
  auto shape = tokens.sizes();
  torch::Tensor choose = torch::rand(shape, generator);
  torch::Tensor action = torch::rand(shape, generator);
  torch::Tensor random = torch::randint(rule.first_ordinary, rule.vocab, shape,
                                        generator, torch::kInt64);
  torch::Tensor chosen =
      choose.lt(rule.rate).logical_and(tokens.ge(rule.first_ordinary));
  torch::Tensor inputs =
      torch::where(chosen.logical_and(action.lt(0.8)),
                   torch::full_like(tokens, rule.mask_id), tokens);
  inputs = torch::where(
      chosen.logical_and(action.ge(0.8)).logical_and(action.lt(0.9)), random,
      inputs);
  return {inputs, chosen};
}

at::Generator StepGenerator(int64_t seed, int64_t step) {
  // splitmix64 of the pair: neighbouring (seed, step) give unrelated streams.
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  return at::make_generator<at::CPUGeneratorImpl>(
      mix(static_cast<uint64_t>(seed) ^ mix(static_cast<uint64_t>(step))));
}

namespace {

constexpr double kLn2 = 0.69314718055994530942;
// Evaluation batches, in windows or sequences.
constexpr int64_t kEvalRows = 256;
// Validation masks are the same for every trial and every evaluation.
constexpr int64_t kValidationMaskSeed = 20190401;

// Cuts `ids` into consecutive rows of `len` + `extra` (rows overlap by
// `extra`), dropping the remainder: [rows, len + extra].
torch::Tensor Windows(const torch::Tensor& ids, int64_t len, int64_t extra) {
  int64_t rows = (ids.size(0) - extra) / len;
  if (rows <= 0) return torch::empty({0, len + extra}, torch::kInt64);
  return ids.unfold(0, len + extra, len).slice(0, 0, rows).contiguous();
}

torch::Tensor Bytes(const std::string& text) {
  return torch::from_blob(const_cast<char*>(text.data()),
                          {static_cast<int64_t>(text.size())}, torch::kUInt8)
      .to(torch::kInt64);
}

Status NeedRows(const torch::Tensor& rows, const char* split,
                const std::string& what) {
  if (rows.size(0) > 0) return Status();
  return InvalidArgumentError(std::string("dataset.path: the ") + split +
                              " split is shorter than one " + what);
}

// Character-level language modelling. A sample is a window of seq_len bytes
// predicting the next byte at each position; back-propagation is truncated
// at the window (each starts from a zero state), so batches can be shuffled,
// split into micro-batches and across ranks exactly. bpc counts bytes
// (characters, for ASCII text).
class CharLmTask : public Task {
 public:
  static Result<std::unique_ptr<Task>> Make(const TrialConfig& config,
                                            const TextCorpus& corpus) {
    auto task = std::unique_ptr<CharLmTask>(new CharLmTask(config));
    task->train_ =
        Windows(Bytes(JoinDocuments(corpus.train)), config.seq_len, 1);
    task->validation_ =
        Windows(Bytes(JoinDocuments(corpus.validation)), config.seq_len, 1);
    std::string window = std::to_string(config.seq_len + 1) + "-byte window";
    MEGABATCH_RETURN_IF_ERROR(NeedRows(task->train_, "training", window));
    MEGABATCH_RETURN_IF_ERROR(
        NeedRows(task->validation_, "validation", window));
    return std::unique_ptr<Task>(std::move(task));
  }

  Result<std::shared_ptr<torch::nn::Module>> BuildModel() override {
    model_ = CharLstm(
        CharLstmOptions{256, config_.embedding, config_.width, config_.layers});
    return std::shared_ptr<torch::nn::Module>(model_.ptr());
  }
  void To(torch::Device device) override {
    train_ = train_.to(device);
    validation_ = validation_.to(device);
  }
  int64_t train_size() const override { return train_.size(0); }

  torch::Tensor Loss(const torch::Tensor& samples,
                     int64_t /*offset*/) override {
    torch::Tensor rows = train_.index_select(0, samples);
    torch::Tensor logits = model_->forward(rows.slice(1, 0, config_.seq_len));
    return F::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                            rows.slice(1, 1).reshape({-1}));
  }

  Evaluation Evaluate(Split /*split*/) override {
    double loss_sum = 0;
    int64_t correct = 0;
    const int64_t n = validation_.size(0);
    for (int64_t i = 0; i < n; i += kEvalRows) {
      torch::Tensor rows = validation_.slice(0, i, std::min(n, i + kEvalRows));
      torch::Tensor logits = model_->forward(rows.slice(1, 0, config_.seq_len));
      Score score = ScoreLogits(logits.reshape({-1, logits.size(-1)}),
                                rows.slice(1, 1).reshape({-1}));
      loss_sum += score.loss_sum.item<double>();
      correct += score.hits.item<int64_t>();
    }
    const double chars = static_cast<double>(n * config_.seq_len);
    const double loss = loss_sum / chars;
    return {loss, correct / chars, {{metric::kValBpc, loss / kLn2}}};
  }

 private:
  explicit CharLmTask(const TrialConfig& config) : config_(config) {}
  const TrialConfig config_;
  torch::Tensor train_, validation_;  // [windows, seq_len + 1]
  CharLstm model_{nullptr};
};

// Masked-language modelling. Each document is tokenized and ends with the
// separator; the token stream is cut into sequences of seq_len. Each step
// masks its whole batch with BERT's rule from (seed, step); the loss is the
// mean cross-entropy over the batch's chosen tokens, computed only at those
// positions. Validation masks are drawn once from a fixed seed.
class MlmTask : public Task {
 public:
  static Result<std::unique_ptr<Task>> Make(const TrialConfig& config) {
    auto ids = LoadTokenIds(config);
    if (!ids.ok()) return ids.status();
    auto task = std::unique_ptr<MlmTask>(new MlmTask(config));
    task->rule_ = {0.15, Tokenizer::kMaskId, Tokenizer::kFirstOrdinaryId,
                   ids->vocab_size};
    task->train_ = Windows(Tensor(ids->train), config.seq_len, 0);
    MEGABATCH_RETURN_IF_ERROR(NeedRows(task->train_, "training", "sequence"));
    torch::Tensor validation =
        Windows(Tensor(ids->validation), config.seq_len, 0);
    MEGABATCH_RETURN_IF_ERROR(NeedRows(validation, "validation", "sequence"));
    at::Generator fixed = StepGenerator(kValidationMaskSeed, 0);
    task->validation_ = MaskTokens(validation, task->rule_, fixed);
    task->validation_targets_ = validation;
    std::cerr << "megabatch-trainer: tokenizer " << ids->model_path << ": "
              << task->train_.size(0) << " training and " << validation.size(0)
              << " validation sequences of " << config.seq_len << " tokens\n";
    return std::unique_ptr<Task>(std::move(task));
  }

  Result<std::shared_ptr<torch::nn::Module>> BuildModel() override {
    if (config_.width % config_.heads != 0) {
      return InvalidArgumentError(
          "model.heads: " + std::to_string(config_.heads) +
          " must divide model.hidden " + std::to_string(config_.width));
    }
    model_ = TinyBert(TinyBertOptions{
        rule_.vocab, config_.seq_len, config_.width, config_.layers,
        config_.heads, config_.ffn, config_.bias});
    return std::shared_ptr<torch::nn::Module>(model_.ptr());
  }
  void To(torch::Device device) override {
    device_ = device;
    validation_.inputs = validation_.inputs.to(device);
    validation_.chosen = validation_.chosen.to(device);
    validation_targets_ = validation_targets_.to(device);
  }
  int64_t train_size() const override { return train_.size(0); }

  void BeginStep(int64_t step, const torch::Tensor& batch) override {
    batch_targets_ = train_.index_select(0, batch);
    at::Generator generator = StepGenerator(config_.seed, step);
    batch_ = MaskTokens(batch_targets_, rule_, generator);
    batch_chosen_ = std::max<int64_t>(1, batch_.chosen.sum().item<int64_t>());
  }

  torch::Tensor Loss(const torch::Tensor& samples, int64_t offset) override {
    const int64_t n = samples.size(0);
    auto part = [&](const torch::Tensor& t) {
      return t.slice(0, offset, offset + n).to(device_);
    };
    torch::Tensor chosen = part(batch_.chosen);
    torch::Tensor loss_sum =
        ScoreChosen(part(batch_.inputs), chosen, part(batch_targets_)).loss_sum;
    // Mean over the batch's chosen tokens once the trainer scales by n / batch.
    return loss_sum *
           (static_cast<double>(batch_targets_.size(0)) / n / batch_chosen_);
  }

  Evaluation Evaluate(Split /*split*/) override {
    double loss_sum = 0;
    int64_t correct = 0, chosen_total = 0;
    const int64_t n = validation_targets_.size(0);
    for (int64_t i = 0; i < n; i += kEvalRows) {
      const int64_t end = std::min(n, i + kEvalRows);
      torch::Tensor chosen = validation_.chosen.slice(0, i, end);
      Score score = ScoreChosen(validation_.inputs.slice(0, i, end), chosen,
                                validation_targets_.slice(0, i, end));
      loss_sum += score.loss_sum.item<double>();
      correct += score.hits.item<int64_t>();
      chosen_total += chosen.sum().item<int64_t>();
    }
    const double count =
        static_cast<double>(std::max<int64_t>(1, chosen_total));
    const double loss = loss_sum / count, accuracy = correct / count;
    return {loss,
            accuracy,
            {{metric::kValMlmLoss, loss}, {metric::kValMlmAccuracy, accuracy}}};
  }

 private:
  explicit MlmTask(const TrialConfig& config) : config_(config) {}

  static torch::Tensor Tensor(const std::vector<int32_t>& ids) {
    return torch::tensor(ids, torch::kInt32).to(torch::kInt64);
  }

  // The model's score at the chosen positions of `inputs`.
  Score ScoreChosen(const torch::Tensor& inputs, const torch::Tensor& chosen,
                    const torch::Tensor& targets) {
    torch::Tensor hidden = model_->forward(inputs);
    return ScoreLogits(model_->Logits(hidden.index({chosen})),
                       targets.index({chosen}));
  }

  const TrialConfig config_;
  MaskingRule rule_;
  torch::Device device_ = torch::kCPU;
  torch::Tensor train_;  // [sequences, seq_len]
  MaskedTokens validation_;
  torch::Tensor validation_targets_;
  // This step's batch (CPU): its tokens, masked inputs and chosen count.
  torch::Tensor batch_targets_;
  MaskedTokens batch_;
  int64_t batch_chosen_ = 1;
  TinyBert model_{nullptr};
};

}  // namespace

Result<std::unique_ptr<Task>> MakeTask(const TrialConfig& config) {
  if (config.model_type == kTorchScriptModel) return MakeFilesTask(config);
  if (config.model_type == "mlp" || config.model_type == "cnn") {
    auto data = LoadFashionMnistCached(config.dataset_path, CacheDirOf(config));
    if (!data.ok()) return data.status();
    return MakeImageTask(config, *data);
  }
  if (config.model_type == "tiny_bert") return MlmTask::Make(config);
  auto corpus = LoadTextCorpus(config.dataset_path, config.validation_fraction);
  if (!corpus.ok()) return corpus.status();
  return CharLmTask::Make(config, *corpus);
}

}  // namespace megabatch::trainer
