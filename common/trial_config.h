// The trial config: the JSON document one trial runs from. The coordinator
// expands a sweep spec into one per trial (server/spec), stores it, adds the
// trial's ids and, for a data-parallel trial, its rendezvous; the worker adds
// what belongs to its host (threads, checkpoint files) and hands it to
// megabatch-trainer, which reads it with ParseTrialConfig. Every field is in
// kTrialConfigFields below, with its type, default, range or choices and the
// side that sets it; model options are in common/model_catalog.h and
// optimizer options in common/optimizer_catalog.h. The spec parser and the
// trainer check values with the same functions, so they refuse the same
// values with the same message, and unknown fields are errors on both sides.
// LibTorch-free (the trainer also builds on its own: it compiles
// trial_config.cc itself).
#ifndef MEGABATCH_COMMON_TRIAL_CONFIG_H_
#define MEGABATCH_COMMON_TRIAL_CONFIG_H_

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/datasets.h"
#include "common/status.h"

namespace megabatch {

enum class FieldType { kInt, kNumber, kString, kBool, kObject };

// Who writes a field into a trial's config.
enum class SetBy {
  kSpec,         // the sweep spec, expanded per trial by the coordinator
  kCoordinator,  // the coordinator, when it stores or leases the trial
  kWorker,       // the worker, for its own host (never part of a spec)
};

struct TrialConfigField {
  std::string_view path;  // "divergence_factor", "schedule.decay"
  FieldType type;
  SetBy set_by;
  bool has_default;  // false: absent means "not given"
  double default_number;
  std::string_view default_text;
  // Numbers: the valid range; lo_open excludes lo. Integers use lo and hi.
  double lo;
  double hi;
  bool lo_open;
  // Strings: "a, b, c"; with has_default and no default_text, the first is
  // the default.
  std::string_view choices;
  std::string_view meaning;
};

inline constexpr double kNoLimit = std::numeric_limits<double>::infinity();
inline constexpr int64_t kMaxWorldSize = 4096;

// clang-format off
inline constexpr TrialConfigField kTrialConfigFields[] = {
  {"trial_id", FieldType::kInt, SetBy::kCoordinator, true, 0, "", 0, kNoLimit, false, "",
   "the trial's id in the results database"},
  {"sweep_id", FieldType::kInt, SetBy::kCoordinator, true, 0, "", 0, kNoLimit, false, "",
   "the sweep's id"},
  {"seed", FieldType::kInt, SetBy::kSpec, true, 0, "", 0, kNoLimit, false, "",
   "data order, dropout and masking (the initial weights are the model's)"},
  {"model", FieldType::kObject, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "type and options: common/model_catalog.h"},
  {"model.path", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "torchscript: the saved module, as the spec named it"},
  {"model.sha256", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "torchscript: the module's SHA-256, written by the client that uploaded it"},
  {"model.bytes", FieldType::kInt, SetBy::kSpec, false, 0, "", 0, kNoLimit, false, "",
   "torchscript: the module's size"},
  {"model.file", FieldType::kString, SetBy::kWorker, false, 0, "", 0, 0, false, "",
   "torchscript: the worker's verified copy, loaded instead of model.path"},
  {"dataset", FieldType::kObject, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "what the model trains on"},
  {"dataset.kind", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false,
   "classification, language_model", "torchscript: what the data files hold (required)"},
  {"dataset.train", FieldType::kObject, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "torchscript: the training files (required)"},
  {"dataset.train.x", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "classification: inputs, .npy [N, ...]"},
  {"dataset.train.y", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "classification: labels, .npy [N]"},
  {"dataset.train.tokens", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "language_model: a flat token file"},
  {"dataset.val", FieldType::kObject, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "torchscript: the validation files (or val_fraction)"},
  {"dataset.val.x", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "classification: inputs"},
  {"dataset.val.y", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "classification: labels"},
  {"dataset.val.tokens", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "language_model: tokens"},
  {"dataset.test", FieldType::kObject, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "torchscript: the test files, evaluated once at the end (optional)"},
  {"dataset.test.x", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "classification: inputs"},
  {"dataset.test.y", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "classification: labels"},
  {"dataset.test.tokens", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "language_model: tokens"},
  {"dataset.val_fraction", FieldType::kNumber, SetBy::kSpec, false, 0, "", 0, 0.5, true, "",
   "torchscript: without val files, this share of train is held out (fixed rows)"},
  {"dataset.dtype", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false,
   "uint16, uint32", "language_model: the token files' type (default uint16)"},
  {"dataset.seq_len", FieldType::kInt, SetBy::kSpec, false, 0, "", 1, 1048576, false, "",
   "language_model: tokens a window predicts (required)"},
  {"dataset.files", FieldType::kObject, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "torchscript: each data file's bytes and SHA-256, recorded at submit"},
  {"dataset.name", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false,
   "fashion_mnist, text", "the model's dataset (the model catalog's default)"},
  {"dataset.path", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "its files (default: common/datasets.h)"},
  {"dataset.validation_fraction", FieldType::kNumber, SetBy::kSpec, true, 0.05, "", 0, 1, true, "",
   "text: the share of documents held out (below 1)"},
  {"dataset.cache_dir", FieldType::kString, SetBy::kWorker, false, 0, "", 0, 0, false, "",
   "decoded-data and tokenizer cache (default: common/datasets.h)"},
  {"optimizer", FieldType::kObject, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "name and options: common/optimizer_catalog.h"},
  {"batch_size", FieldType::kInt, SetBy::kSpec, true, 128, "", 1, kNoLimit, false, "",
   "samples per optimizer step (all ranks)"},
  {"micro_batch_size", FieldType::kInt, SetBy::kSpec, false, 0, "", 1, kNoLimit, false, "",
   "samples per forward pass (default batch_size; must divide it)"},
  {"lr", FieldType::kNumber, SetBy::kSpec, true, 0.01, "", 0, kNoLimit, true, "",
   "the peak learning rate"},
  {"schedule", FieldType::kObject, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "warmup and decay"},
  {"schedule.warmup_steps", FieldType::kInt, SetBy::kSpec, false, 0, "", 0, 1099511627776.0, false, "",
   "linear warmup length in steps (or warmup_epochs, not both)"},
  {"schedule.warmup_epochs", FieldType::kNumber, SetBy::kSpec, false, 0, "", 0, kNoLimit, false, "",
   "linear warmup length in epochs of samples"},
  {"schedule.warmup_start_lr", FieldType::kNumber, SetBy::kSpec, true, 0, "", 0, kNoLimit, false, "",
   "where warmup starts (at most lr)"},
  {"schedule.decay", FieldType::kString, SetBy::kSpec, true, 0, "", 0, 0, false,
   "constant, poly, cosine", "decay after warmup"},
  {"schedule.power", FieldType::kNumber, SetBy::kSpec, true, 1.0, "", 0, kNoLimit, true, "",
   "poly decay's power"},
  {"budget", FieldType::kObject, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "one of epochs, steps, samples (default 1 epoch)"},
  {"budget.epochs", FieldType::kNumber, SetBy::kSpec, false, 0, "", 0, kNoLimit, true, "",
   "epochs of samples (may be fractional)"},
  {"budget.steps", FieldType::kInt, SetBy::kSpec, false, 0, "", 1, kNoLimit, false, "",
   "optimizer steps"},
  {"budget.samples", FieldType::kInt, SetBy::kSpec, false, 0, "", 1, kNoLimit, false, "",
   "training samples"},
  {"eval_every_steps", FieldType::kInt, SetBy::kSpec, true, 0, "", 0, 1099511627776.0, false, "",
   "evaluate every K steps (0: see eval_every_samples)"},
  {"eval_every_samples", FieldType::kInt, SetBy::kSpec, true, 0, "", 0, 1125899906842624.0, false, "",
   "evaluate every K samples (both 0: every epoch)"},
  {"target", FieldType::kObject, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "where steps to target is read"},
  {"target.metric", FieldType::kString, SetBy::kSpec, false, 0, "", 0, 0, false, "",
   "a selection metric: common/selection_metrics.h"},
  {"target.value", FieldType::kNumber, SetBy::kSpec, true, 0, "", -kNoLimit, kNoLimit, false, "",
   "the value to reach"},
  {"target.stop", FieldType::kBool, SetBy::kSpec, true, 0, "", 0, 0, false, "",
   "end the trial once it reaches the target"},
  {"noise_scale", FieldType::kString, SetBy::kSpec, true, 0, "", 0, 0, false,
   "auto, always, off", "measure the gradient noise scale"},
  {"divergence_factor", FieldType::kNumber, SetBy::kSpec, true, 10.0, "", 1, kNoLimit, true, "",
   "a loss above this many times the first step's ends the trial as diverged"},
  {"device", FieldType::kString, SetBy::kSpec, true, 0, "", 0, 0, false,
   "auto, cpu, cuda", "auto: cuda when this LibTorch has it and a GPU is visible"},
  {"precision", FieldType::kString, SetBy::kSpec, true, 0, "", 0, 0, false,
   "fp32, bf16, fp16", "bf16 and fp16 autocast need cuda"},
  {"diagnostics_every_steps", FieldType::kInt, SetBy::kSpec, true, 0, "", 0, 1099511627776.0, false, "",
   "per-tensor norms and trust ratios every K steps (0: never)"},
  {"checkpoint_every_steps", FieldType::kInt, SetBy::kSpec, true, 0, "", 0, 1099511627776.0, false, "",
   "checkpoint every K steps (0: never)"},
  {"checkpoint_path", FieldType::kString, SetBy::kWorker, false, 0, "", 0, 0, false, "",
   "where checkpoints go"},
  {"checkpoint_per_step", FieldType::kBool, SetBy::kWorker, true, 0, "", 0, 0, false, "",
   "one file per checkpoint, announced on stdout"},
  {"threads", FieldType::kInt, SetBy::kWorker, true, 1, "", 1, 4096, false, "",
   "intra-op threads"},
  {"distributed", FieldType::kObject, SetBy::kCoordinator, false, 0, "", 0, 0, false, "",
   "a data-parallel trial's rank and rendezvous"},
  {"distributed.world_size", FieldType::kInt, SetBy::kCoordinator, true, 1, "", 1, kMaxWorldSize, false, "",
   "ranks"},
  {"distributed.rank", FieldType::kInt, SetBy::kCoordinator, true, 0, "", 0, kMaxWorldSize - 1, false, "",
   "this process's rank"},
  {"distributed.host", FieldType::kString, SetBy::kCoordinator, true, 0, "127.0.0.1", 0, 0, false, "",
   "rank 0's host"},
  {"distributed.port", FieldType::kInt, SetBy::kCoordinator, true, 0, "", 0, 65535, false, "",
   "rank 0's c10d TCPStore port"},
  {"distributed.timeout_s", FieldType::kInt, SetBy::kCoordinator, true, 120, "", 1, kNoLimit, false, "",
   "a collective slower than this ends the trial"},
};
// clang-format on

// The entry for `path` ("schedule.decay"), or nullptr.
const TrialConfigField* FindTrialConfigField(std::string_view path);

// The choices of a string field ("a, b, c"), in order.
std::vector<std::string_view> FieldChoices(const TrialConfigField& field);

// The value a field takes when it is absent (has_default fields only).
nlohmann::json TrialConfigDefault(const TrialConfigField& field);

// Checks a value given for `path` against its entry (type, range, choices).
// The spec parser and ParseTrialConfig both call it: their messages agree.
Status CheckTrialConfigValue(std::string_view path,
                             const nlohmann::json& value);

// Reads the field at `path` from `value` (nullptr: absent) into `out`:
// checked as above, or its default when absent (left as it is for a field
// without one). ParseTrialConfig and the spec parser both read through it.
template <typename T>
Status ReadTrialConfigValue(std::string_view path, const nlohmann::json* value,
                            T* out) {
  if (value == nullptr) {
    const TrialConfigField* field = FindTrialConfigField(path);
    if (field != nullptr && field->has_default) {
      *out = TrialConfigDefault(*field).get<T>();
    }
    return Status();
  }
  MEGABATCH_RETURN_IF_ERROR(CheckTrialConfigValue(path, *value));
  *out = value->get<T>();
  return Status();
}

// In the order of schedule.decay's choices.
enum class Decay { kConstant, kPoly, kCosine };

struct TrialConfig {
  int64_t trial_id = 0;
  int64_t sweep_id = 0;
  int64_t seed = 0;
  // The model and its options, filled from common/model_catalog.h.
  std::string model_type;
  std::vector<int64_t> hidden;    // mlp, cnn
  std::vector<int64_t> channels;  // cnn
  // char_lstm and tiny_bert (model.hidden is one width for them).
  // seq_len: the window (char_lstm: the truncation length; a torchscript
  // language model: dataset.seq_len).
  int64_t seq_len = 0;
  int64_t width = 0;  // hidden size
  int64_t layers = 0;
  int64_t embedding = 0;   // char_lstm: byte embedding size
  int64_t heads = 0;       // tiny_bert
  int64_t ffn = 0;         // tiny_bert: feed-forward width
  int64_t vocab_size = 0;  // tiny_bert: SentencePiece vocabulary
  bool bias = true;        // tiny_bert: biases in linear layers
  // model.type torchscript (docs/models.md): the saved module as the spec
  // named it, its hash and size, and the worker's verified copy (loaded
  // instead of model_path when set).
  std::string model_path;
  std::string model_sha256;
  int64_t model_bytes = 0;
  std::string model_file;
  std::string dataset_name;
  std::string dataset_path;
  // The user's data files (model torchscript; empty for the built-in
  // datasets): classification splits have x and y, language-model splits
  // tokens (of token_dtype, windows of seq_len + 1). Without val files,
  // val_fraction of the training rows (or tokens) is held out.
  std::string dataset_kind;
  struct SplitFiles {
    std::string x, y, tokens;
    bool empty() const { return x.empty() && y.empty() && tokens.empty(); }
  };
  SplitFiles train_files, val_files, test_files;
  double val_fraction = 0;
  std::string token_dtype;
  // dataset.files: {path: {"bytes": n, "sha256": hex, ...}} as the client
  // recorded them; the worker checks the files against it.
  nlohmann::json data_files;
  double validation_fraction = 0;
  std::string cache_dir;     // empty: DefaultCacheDir()
  nlohmann::json optimizer;  // {"name": ..., option: value, ...}
  int64_t batch_size = 0;
  int64_t micro_batch_size = 0;  // == batch_size: no accumulation
  double lr = 0;                 // peak lr
  // At most one of warmup_steps / warmup_epochs. Warmup rises linearly from
  // warmup_start_lr (0, or the unscaled small-batch lr when the spec says
  // warmup_from: base, as Goyal et al. 2017) to lr.
  std::optional<int64_t> warmup_steps;
  std::optional<double> warmup_epochs;
  double warmup_start_lr = 0;
  Decay decay = Decay::kConstant;
  double power = 0;
  // Exactly one budget: epochs (may be fractional), steps or samples.
  std::optional<double> budget_epochs;
  std::optional<int64_t> budget_steps;
  std::optional<int64_t> budget_samples;
  int64_t eval_every_samples = 0;
  int64_t eval_every_steps = 0;
  // Where the validation metric `target_metric` first reaches
  // `target_value`, interpolated between evaluations.
  std::string target_metric;
  double target_value = 0;
  bool target_stop = false;
  double divergence_factor = 0;
  // auto: measured when a step already has two or more micro-batches
  // (accumulation or ranks); always: also splits a one-micro-batch step.
  std::string noise_scale;
  int threads = 0;
  std::string device;     // auto: cuda when available, else cpu
  std::string precision;  // fp32, or bf16 / fp16 autocast (cuda only)
  int64_t diagnostics_every_steps = 0;
  int64_t checkpoint_every_steps = 0;
  std::string checkpoint_path;
  bool checkpoint_per_step = false;
  // Data parallel: this process is rank `rank` of `world_size`; rank 0
  // serves the c10d TCPStore at rendezvous_host:rendezvous_port.
  int world_size = 1;
  int rank = 0;
  std::string rendezvous_host;
  int rendezvous_port = 0;
  int collective_timeout_s = 0;
  // The config as given, less what the worker sets and the rendezvous (a
  // checkpoint resumes under any world size); a checkpoint records it and
  // only resumes a trial with the same fingerprint.
  std::string fingerprint;
};

// Parses and validates a config document. INVALID_ARGUMENT names the field.
Result<TrialConfig> ParseTrialConfig(const nlohmann::json& doc);

// The cache the trainer uses: the config's, else DefaultCacheDir().
inline std::string CacheDirOf(const TrialConfig& c) {
  return c.cache_dir.empty() ? DefaultCacheDir() : c.cache_dir;
}

// Every field ParseTrialConfig read, as a document it reads back to the same
// config (defaults written out; cache_dir only when given).
nlohmann::json TrialConfigToJson(const TrialConfig& config);

// The fields each side writes, and nothing else.
void SetCoordinatorIds(nlohmann::json* config, int64_t trial_id,
                       int64_t sweep_id);
struct Rendezvous {
  int world_size = 1;
  int rank = 0;
  std::string host;
  int port = 0;
  int timeout_s = 120;
};
void SetRendezvous(nlohmann::json* config, const Rendezvous& rendezvous);
void SetWorkerFields(nlohmann::json* config, int threads,
                     const std::string& checkpoint_path);

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_TRIAL_CONFIG_H_
