#include "worker/trainer/trial_config.h"

#include <cmath>
#include <tuple>

#include "common/optimizer_catalog.h"
#include "common/selection_metrics.h"
#include "worker/trainer/data/text_corpus.h"

namespace megabatch::trainer {
namespace {

using nlohmann::json;

// Reads doc[key] as T when present; a wrong type names the field.
template <typename T>
Status Read(const json& doc, const std::string& key, T* out) {
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) return Status();
  try {
    *out = it->get<T>();
  } catch (const json::exception& e) {
    return InvalidArgumentError(key + ": " + e.what());
  }
  return Status();
}

template <typename T>
Status ReadOptional(const json& doc, const std::string& key,
                    std::optional<T>* out) {
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) return Status();
  T value;
  MEGABATCH_RETURN_IF_ERROR(Read(doc, key, &value));
  *out = value;
  return Status();
}

}  // namespace

Result<TrialConfig> ParseTrialConfig(const json& doc) {
  if (!doc.is_object()) {
    return InvalidArgumentError("config: must be a JSON object");
  }
  TrialConfig c;
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "trial_id", &c.trial_id));
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "sweep_id", &c.sweep_id));
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "seed", &c.seed));
  const json no_fields = json::object();
  auto model_it = doc.find("model");
  const json& model = model_it != doc.end() && model_it->is_object() ? *model_it : no_fields;
  MEGABATCH_RETURN_IF_ERROR(Read(model, "type", &c.model_type));
  const bool text = c.model_type == "char_lstm" || c.model_type == "tiny_bert";
  if (c.model_type == "mlp" || c.model_type == "cnn") {
    MEGABATCH_RETURN_IF_ERROR(Read(model, "hidden", &c.hidden));
    MEGABATCH_RETURN_IF_ERROR(Read(model, "channels", &c.channels));
  } else if (text) {
    if (c.model_type == "tiny_bert") {
      c.width = 128;
      c.layers = 2;
    }
    MEGABATCH_RETURN_IF_ERROR(Read(model, "hidden", &c.width));
    MEGABATCH_RETURN_IF_ERROR(Read(model, "layers", &c.layers));
    MEGABATCH_RETURN_IF_ERROR(Read(model, "seq_len", &c.seq_len));
    MEGABATCH_RETURN_IF_ERROR(Read(model, "embedding", &c.embedding));
    MEGABATCH_RETURN_IF_ERROR(Read(model, "heads", &c.heads));
    MEGABATCH_RETURN_IF_ERROR(Read(model, "ffn", &c.ffn));
    MEGABATCH_RETURN_IF_ERROR(Read(model, "vocab_size", &c.vocab_size));
    MEGABATCH_RETURN_IF_ERROR(Read(model, "bias", &c.bias));
    for (auto [name, value, low, high] :
         {std::tuple{"hidden", c.width, 1, 65536}, {"layers", c.layers, 1, 64},
          {"seq_len", c.seq_len, 2, 65536}, {"embedding", c.embedding, 1, 65536},
          {"heads", c.heads, 1, 1024}, {"ffn", c.ffn, 1, 1 << 20},
          {"vocab_size", c.vocab_size, 300, 1 << 20}}) {
      if (value < low || value > high) {
        return InvalidArgumentError("model." + std::string(name) + ": must be between " +
                                    std::to_string(low) + " and " + std::to_string(high) +
                                    ", got " + std::to_string(value));
      }
    }
    if (c.model_type == "tiny_bert" && c.width % c.heads != 0) {
      return InvalidArgumentError("model.heads: " + std::to_string(c.heads) +
                                  " must divide model.hidden " + std::to_string(c.width));
    }
  } else {
    return InvalidArgumentError("model.type: unknown model '" + c.model_type +
                                "'; supported: mlp, cnn, char_lstm, tiny_bert");
  }
  for (int64_t h : c.hidden) {
    if (h < 1) return InvalidArgumentError("model.hidden: widths must be positive");
  }
  for (int64_t ch : c.channels) {
    if (ch < 1) return InvalidArgumentError("model.channels: must be positive");
  }
  c.dataset_name = text ? "text" : "fashion_mnist";
  if (text) c.dataset_path = kDefaultTextCorpusPath;
  if (auto ds = doc.find("dataset"); ds != doc.end() && ds->is_object()) {
    MEGABATCH_RETURN_IF_ERROR(Read(*ds, "name", &c.dataset_name));
    MEGABATCH_RETURN_IF_ERROR(Read(*ds, "path", &c.dataset_path));
    MEGABATCH_RETURN_IF_ERROR(Read(*ds, "validation_fraction", &c.validation_fraction));
    MEGABATCH_RETURN_IF_ERROR(Read(*ds, "cache_dir", &c.cache_dir));
  }
  if (c.dataset_name != (text ? "text" : "fashion_mnist")) {
    return InvalidArgumentError("dataset.name: model " + c.model_type + " trains on " +
                                (text ? "text" : "fashion_mnist") + ", not '" +
                                c.dataset_name + "'");
  }
  if (!(c.validation_fraction > 0 && c.validation_fraction < 1)) {
    return InvalidArgumentError("dataset.validation_fraction: must be in (0, 1)");
  }
  if (c.cache_dir.empty()) c.cache_dir = DefaultCacheDir();
  c.optimizer = doc.value("optimizer", json{{"name", "sgd"}});
  if (!c.optimizer.is_object() || !c.optimizer.contains("name") ||
      !c.optimizer["name"].is_string()) {
    return InvalidArgumentError("optimizer: must be an object with a name");
  }
  if (FindOptimizer(c.optimizer["name"].get<std::string>()) == nullptr) {
    return InvalidArgumentError("optimizer.name: unknown optimizer '" +
                                c.optimizer["name"].get<std::string>() + "'");
  }
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "batch_size", &c.batch_size));
  c.micro_batch_size = c.batch_size;
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "micro_batch_size", &c.micro_batch_size));
  if (c.batch_size < 1) {
    return InvalidArgumentError("batch_size: must be positive");
  }
  if (c.micro_batch_size < 1 || c.micro_batch_size > c.batch_size ||
      c.batch_size % c.micro_batch_size != 0) {
    return InvalidArgumentError(
        "micro_batch_size: must divide batch_size " +
        std::to_string(c.batch_size) + ", got " +
        std::to_string(c.micro_batch_size));
  }
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "lr", &c.lr));
  if (!(c.lr > 0) || !std::isfinite(c.lr)) {
    return InvalidArgumentError("lr: must be a positive number");
  }
  if (auto s = doc.find("schedule"); s != doc.end()) {
    MEGABATCH_RETURN_IF_ERROR(ReadOptional(*s, "warmup_steps", &c.warmup_steps));
    MEGABATCH_RETURN_IF_ERROR(
        ReadOptional(*s, "warmup_epochs", &c.warmup_epochs));
    std::string decay = "constant";
    MEGABATCH_RETURN_IF_ERROR(Read(*s, "decay", &decay));
    if (decay == "poly") {
      c.decay = Decay::kPoly;
    } else if (decay == "cosine") {
      c.decay = Decay::kCosine;
    } else if (decay != "constant") {
      return InvalidArgumentError("schedule.decay: unknown decay '" + decay + "'");
    }
    MEGABATCH_RETURN_IF_ERROR(Read(*s, "power", &c.power));
    MEGABATCH_RETURN_IF_ERROR(Read(*s, "warmup_start_lr", &c.warmup_start_lr));
    if (!(c.warmup_start_lr >= 0) || c.warmup_start_lr > c.lr) {
      return InvalidArgumentError("schedule.warmup_start_lr: must be in [0, lr]");
    }
  }
  if (auto b = doc.find("budget"); b != doc.end()) {
    MEGABATCH_RETURN_IF_ERROR(ReadOptional(*b, "epochs", &c.budget_epochs));
    MEGABATCH_RETURN_IF_ERROR(ReadOptional(*b, "steps", &c.budget_steps));
    MEGABATCH_RETURN_IF_ERROR(ReadOptional(*b, "samples", &c.budget_samples));
  }
  int budgets = c.budget_epochs.has_value() + c.budget_steps.has_value() +
                c.budget_samples.has_value();
  if (budgets == 0) c.budget_epochs = 1.0;
  if (budgets > 1) {
    return InvalidArgumentError("budget: give one of epochs, steps, samples");
  }
  if ((c.budget_epochs && !(*c.budget_epochs > 0)) ||
      (c.budget_steps && *c.budget_steps < 1) ||
      (c.budget_samples && *c.budget_samples < 1)) {
    return InvalidArgumentError("budget: must be positive");
  }
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "eval_every_steps", &c.eval_every_steps));
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "eval_every_samples", &c.eval_every_samples));
  if (c.eval_every_steps < 0 || c.eval_every_samples < 0) {
    return InvalidArgumentError("eval_every_steps, eval_every_samples: must be >= 0");
  }
  if (c.eval_every_steps > 0 && c.eval_every_samples > 0) {
    return InvalidArgumentError("eval_every_samples: give it or eval_every_steps, not both");
  }
  if (auto t = doc.find("target"); t != doc.end() && t->is_object()) {
    MEGABATCH_RETURN_IF_ERROR(Read(*t, "metric", &c.target_metric));
    MEGABATCH_RETURN_IF_ERROR(Read(*t, "value", &c.target_value));
    MEGABATCH_RETURN_IF_ERROR(Read(*t, "stop", &c.target_stop));
    c.target_metric = std::string(CanonicalSelectionMetric(c.target_metric));
    if (FindSelectionMetric(c.target_metric) == nullptr) {
      return InvalidArgumentError("target.metric: unknown metric '" + c.target_metric +
                                  "'; supported: " + SelectionMetricNames());
    }
  }
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "noise_scale", &c.noise_scale));
  if (c.noise_scale != "auto" && c.noise_scale != "always" && c.noise_scale != "off") {
    return InvalidArgumentError("noise_scale: unknown mode '" + c.noise_scale +
                                "'; supported: auto, always, off");
  }
  MEGABATCH_RETURN_IF_ERROR(
      Read(doc, "divergence_factor", &c.divergence_factor));
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "device", &c.device));
  if (c.device != "auto" && c.device != "cpu" && c.device != "cuda") {
    return InvalidArgumentError("device: unknown device '" + c.device +
                                "'; supported: auto, cpu, cuda");
  }
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "precision", &c.precision));
  if (c.precision != "fp32" && c.precision != "bf16" && c.precision != "fp16") {
    return InvalidArgumentError("precision: unknown precision '" +
                                c.precision + "'; supported: fp32, bf16, fp16");
  }
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "threads", &c.threads));
  if (c.threads < 1) return InvalidArgumentError("threads: must be positive");
  MEGABATCH_RETURN_IF_ERROR(
      Read(doc, "checkpoint_every_steps", &c.checkpoint_every_steps));
  MEGABATCH_RETURN_IF_ERROR(
      Read(doc, "diagnostics_every_steps", &c.diagnostics_every_steps));
  if (c.diagnostics_every_steps < 0) {
    return InvalidArgumentError("diagnostics_every_steps: must be >= 0");
  }
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "checkpoint_path", &c.checkpoint_path));
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "checkpoint_per_step", &c.checkpoint_per_step));
  if (c.checkpoint_every_steps < 0) {
    return InvalidArgumentError("checkpoint_every_steps: must be >= 0");
  }
  if (c.checkpoint_every_steps > 0 && c.checkpoint_path.empty()) {
    return InvalidArgumentError(
        "checkpoint_path: required when checkpoint_every_steps > 0");
  }
  if (auto d = doc.find("distributed"); d != doc.end()) {
    MEGABATCH_RETURN_IF_ERROR(Read(*d, "world_size", &c.world_size));
    MEGABATCH_RETURN_IF_ERROR(Read(*d, "rank", &c.rank));
    MEGABATCH_RETURN_IF_ERROR(Read(*d, "host", &c.rendezvous_host));
    MEGABATCH_RETURN_IF_ERROR(Read(*d, "port", &c.rendezvous_port));
    MEGABATCH_RETURN_IF_ERROR(Read(*d, "timeout_s", &c.collective_timeout_s));
  }
  if (c.world_size < 1 || c.world_size > 4096) {
    return InvalidArgumentError("distributed.world_size: must be between 1 and 4096");
  }
  if (c.rank < 0 || c.rank >= c.world_size) {
    return InvalidArgumentError("distributed.rank: must be in [0, world_size), got " +
                                std::to_string(c.rank));
  }
  if (c.world_size > 1) {
    if (c.rendezvous_host.empty()) {
      return InvalidArgumentError("distributed.host: required with world_size > 1");
    }
    if (c.rendezvous_port < 1 || c.rendezvous_port > 65535) {
      return InvalidArgumentError("distributed.port: must be between 1 and 65535");
    }
    if (c.collective_timeout_s < 1) {
      return InvalidArgumentError("distributed.timeout_s: must be positive");
    }
    if (c.batch_size % (c.micro_batch_size * c.world_size) != 0) {
      return InvalidArgumentError(
          "batch_size: " + std::to_string(c.batch_size) + " must be a multiple of " +
          "micro_batch_size x world_size (" + std::to_string(c.micro_batch_size) + " x " +
          std::to_string(c.world_size) + ")");
    }
  }
  json fingerprint = doc;
  fingerprint.erase("distributed");
  fingerprint.erase("threads");
  fingerprint.erase("checkpoint_path");
  fingerprint.erase("checkpoint_per_step");
  if (auto ds = fingerprint.find("dataset"); ds != fingerprint.end() && ds->is_object()) {
    ds->erase("cache_dir");
  }
  c.fingerprint = fingerprint.dump();
  return c;
}

int64_t TotalSteps(const TrialConfig& c, int64_t train_samples) {
  if (c.budget_steps) return *c.budget_steps;
  if (c.budget_samples) {
    return (*c.budget_samples + c.batch_size - 1) / c.batch_size;
  }
  double epochs = c.budget_epochs.value_or(1.0);
  return std::max<int64_t>(
      1, static_cast<int64_t>(std::ceil(epochs * StepsPerEpoch(c, train_samples) - 1e-9)));
}

int64_t WarmupSteps(const TrialConfig& c, int64_t train_samples) {
  if (c.warmup_epochs) {
    return static_cast<int64_t>(
        std::round(*c.warmup_epochs * StepsPerEpoch(c, train_samples)));
  }
  return c.warmup_steps.value_or(0);
}

}  // namespace megabatch::trainer
