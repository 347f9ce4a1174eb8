// TrialConfig: what megabatch-trainer runs, read from the JSON file given by
// --config (the worker writes it from the coordinator's lease; users may write
// one by hand, see docs/running.md "Running one trial by hand"). LibTorch-free.
#ifndef MEGABATCH_WORKER_TRAINER_TRIAL_CONFIG_H_
#define MEGABATCH_WORKER_TRAINER_TRIAL_CONFIG_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/trainer/schedule/lr_schedule.h"

namespace megabatch::trainer {

struct TrialConfig {
  int64_t trial_id = 0;
  int64_t sweep_id = 0;
  int64_t seed = 0;
  std::string model_type = "mlp";
  std::vector<int64_t> hidden = {512, 512};
  std::vector<int64_t> channels = {32, 64};  // cnn only
  // char_lstm and tiny_bert (model.hidden is one width for them).
  int64_t seq_len =
      128;              // window (char_lstm: the truncation length) or sequence
  int64_t width = 256;  // hidden size: 256 char_lstm, 128 tiny_bert
  int64_t layers = 1;   // 1 char_lstm, 2 tiny_bert
  int64_t embedding = 64;     // char_lstm: byte embedding size
  int64_t heads = 2;          // tiny_bert
  int64_t ffn = 512;          // tiny_bert: feed-forward width
  int64_t vocab_size = 2048;  // tiny_bert: SentencePiece vocabulary
  bool bias = true;           // tiny_bert: biases in linear layers
  // fashion_mnist for mlp/cnn, text for char_lstm/tiny_bert.
  std::string dataset_name = "fashion_mnist";
  std::string dataset_path = "/usr/share/datasets/fashion-mnist";
  double validation_fraction = 0.05;  // text: documents held out
  std::string cache_dir;  // tokenizer and decoded-dataset cache (default below)
  nlohmann::json optimizer;  // {"name": ..., option: value, ...}
  int64_t batch_size = 128;
  int64_t micro_batch_size = 128;  // == batch_size: no accumulation
  double lr = 0.01;                // peak lr
  // Exactly one of warmup_steps / warmup_epochs is used. Warmup rises
  // linearly from warmup_start_lr (0, or the unscaled small-batch lr when the
  // spec says warmup_from: base, as Goyal et al. 2017) to lr.
  std::optional<int64_t> warmup_steps;
  std::optional<double> warmup_epochs;
  double warmup_start_lr = 0;
  Decay decay = Decay::kConstant;
  double power = 1.0;
  // Exactly one budget: epochs (may be fractional), steps or samples.
  std::optional<double> budget_epochs;
  std::optional<int64_t> budget_steps;
  std::optional<int64_t> budget_samples;
  // Evaluate every K samples (the same data points at every batch size), or
  // every K steps, or (both 0) whenever an epoch's worth of samples ends.
  int64_t eval_every_samples = 0;
  int64_t eval_every_steps = 0;
  // Target: where the validation metric `target_metric` (one of
  // kSelectionMetrics; test_accuracy/test_loss mean val_accuracy/val_loss)
  // first reaches `target_value`, interpolated between evaluations.
  std::string target_metric;
  double target_value = 0;
  bool target_stop = false;
  // A loss above divergence_factor x the first step's loss (or non-finite)
  // ends the trial as diverged.
  double divergence_factor = 10.0;
  // Gradient noise scale: "auto" measures it when a step already has two or
  // more micro-batches (accumulation or ranks); "always" also splits a
  // single-micro-batch step into two halves to measure it; "off" never.
  std::string noise_scale = "auto";
  int threads = 1;  // intra-op threads
  // auto: cuda when this LibTorch has CUDA and a GPU is visible (the worker
  // picks one per slot with CUDA_VISIBLE_DEVICES), else cpu.
  std::string device = "auto";
  // fp32, or bf16 / fp16 autocast (cuda only; fp16 with dynamic loss scaling).
  std::string precision = "fp32";
  // Every K steps (0: never) log per-tensor weight_norm/NAME,
  // update_norm/NAME and (LAMB, LARS) trust_ratio/NAME.
  int64_t diagnostics_every_steps = 0;
  // Every N steps (0: never) the trainer writes a checkpoint to
  // checkpoint_path, atomically; --resume continues from one.
  int64_t checkpoint_every_steps = 0;
  std::string checkpoint_path;
  // Instead of replacing checkpoint_path, write each checkpoint to its own
  // file step-N.pt beside it and announce it on stdout (the worker keeps the
  // newest one whose metrics are all stored, and deletes the rest).
  bool checkpoint_per_step = false;
  // Data parallel: this process is rank `rank` of `world_size`; rank 0
  // serves the c10d TCPStore at rendezvous_host:rendezvous_port. Each rank
  // takes its own 1/world_size of every global batch (batch_size), in
  // micro-batches; gradients are summed over the ranks every step; rank 0
  // alone evaluates, reports and checkpoints. A collective that does not
  // complete in collective_timeout_s ends the trial (a rank is gone).
  // JSON: "distributed": {"world_size", "rank", "host", "port", "timeout_s"}.
  int world_size = 1;
  int rank = 0;
  std::string rendezvous_host = "127.0.0.1";
  int rendezvous_port = 0;
  int collective_timeout_s = 120;
  // The config as given, less the fields that may differ between two runs of
  // the same trial (threads, checkpoint_*, distributed: a checkpoint
  // resumes under any world size); a checkpoint records it and only resumes
  // a trial with the same fingerprint.
  std::string fingerprint;
};

// Parses and validates a config document. INVALID_ARGUMENT names the field.
Result<TrialConfig> ParseTrialConfig(const nlohmann::json& doc);

// The total number of optimizer steps of the trial given the training-set
// size, and the warmup length in steps. Epochs are counted in samples
// (docs/method.md, "Epochs are counted in samples"): an epoch is train_samples
// samples at every batch size, the data is one endless stream of shuffled
// epochs, and a batch may span the end of one epoch and the start of the next.
// So `budget.epochs: E` is ceil(E * n / b) steps and nothing is dropped.
int64_t TotalSteps(const TrialConfig& c, int64_t train_samples);
int64_t WarmupSteps(const TrialConfig& c, int64_t train_samples);
inline double StepsPerEpoch(const TrialConfig& c, int64_t train_samples) {
  return static_cast<double>(train_samples) / static_cast<double>(c.batch_size);
}

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_TRIAL_CONFIG_H_
