// A Task is what a trial trains: a model, its data and its loss. RunTrial
// (trainer.h) owns the loop, the optimizer, the schedule, accumulation,
// data parallelism, checkpoints and diagnostics; a task says how to build the
// model, how many training samples an epoch has, the loss of any subset of a
// step's batch, and how to evaluate on the held-out split.
//
//   mlp, cnn    Fashion-MNIST classification  val_loss, val_accuracy
//                                             (test_* once, at the end)
//   char_lstm   next-byte prediction          + val_bpc (bits per char)
//   tiny_bert   masked-language modelling     + val_mlm_loss,
//                                               val_mlm_accuracy
//   torchscript the user's module and files   classification: as mlp;
//               (docs/models.md)              language_model: + val_perplexity,
//                                               val_bits_per_token
#ifndef MEGABATCH_WORKER_TRAINER_TASKS_TASK_H_
#define MEGABATCH_WORKER_TRAINER_TASKS_TASK_H_

#include <torch/torch.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "worker/trainer/data/fashion_mnist.h"
#include "worker/trainer/trial_config.h"

namespace megabatch::trainer {

using Metrics = std::vector<std::pair<std::string, double>>;

// A fault in the user's model or data found while training (logits of the
// wrong shape, a label or token out of the model's range): the trial fails
// and is not retried, since a retry would fail the same way. Its message
// names the spec field (model.path, dataset.train.y, ...).
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The held-out splits: validation (every evaluation; what targets, ASHA and
// the best lr read) and test (once, when the trial ends; image tasks only).
enum class Split { kValidation, kTest };

struct Evaluation {
  // Every task reports the split's mean loss in nats and its top-1
  // accuracy, logged as val_loss/val_accuracy or test_loss/test_accuracy.
  // `extra` are the task's own metrics, named in full (val_bpc, ...).
  double loss = 0;
  double accuracy = 0;
  Metrics extra;
};

// The summed cross-entropy of `logits` [N, C] against `targets` [N] and the
// number of top-1 hits, both still on the device: what every Evaluate() adds
// up.
struct Score {
  torch::Tensor loss_sum;
  torch::Tensor hits;
};
Score ScoreLogits(const torch::Tensor& logits, const torch::Tensor& targets);

// Samples per forward when a classifier is evaluated: one value for the
// built-in image task and a torchscript classifier, whose sums then agree
// bit for bit.
inline constexpr int64_t kEvalSamples = 2000;

class Task {
 public:
  virtual ~Task() = default;
  // Builds the model on the CPU from the global RNG (seeded by RunTrial).
  virtual Result<std::shared_ptr<torch::nn::Module>> BuildModel() = 0;
  // Moves the data the task keeps onto `device` (the model is moved by
  // RunTrial).
  virtual void To(torch::Device device) = 0;
  // Training samples in an epoch.
  virtual int64_t train_size() const = 0;
  // Called once per optimizer step `step` (1-based) with the global batch:
  // the indices of its samples, in order, on the CPU. Anything random
  // about the step (MLM masks) is drawn here, from (seed, step) alone, so
  // that it does not depend on the micro-batch size, the number of ranks or
  // a resume.
  virtual void BeginStep(int64_t /*step*/, const torch::Tensor& /*batch*/) {}
  // The loss of the samples `samples` (indices on the device), which are
  // entries [offset, offset + n) of this step's batch, scaled so that the
  // batch's loss is the sum over its parts of Loss(part) * n / batch_size.
  // Runs the forward pass (under the caller's autocast).
  virtual torch::Tensor Loss(const torch::Tensor& samples, int64_t offset) = 0;
  // Evaluates the model on `split` (the caller sets eval mode and no-grad).
  virtual Evaluation Evaluate(Split split) = 0;
  // Whether the task has a test split apart from its validation split.
  virtual bool has_test_split() const { return false; }
};

// The task for `config.model_type`, with its data loaded (and, for
// tiny_bert, its tokenizer trained or read from the cache). Errors name the
// config field (dataset.path, model.*).
Result<std::unique_ptr<Task>> MakeTask(const TrialConfig& config);

// The task of a torchscript model (tasks/files_tasks.cc): the files of
// config.dataset_kind, mapped and checked (dtypes, shapes, lengths, NaN).
Result<std::unique_ptr<Task>> MakeFilesTask(const TrialConfig& config);

// An image-classification task on data already loaded (tests share one copy
// of Fashion-MNIST).
std::unique_ptr<Task> MakeImageTask(const TrialConfig& config,
                                    const ImageDataset& data);

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_TASKS_TASK_H_
