#include "worker/trainer/trial_config.h"

#include <cmath>
#include <map>
#include <string_view>

#include "common/model_catalog.h"
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
  const json& model =
      model_it != doc.end() && model_it->is_object() ? *model_it : no_fields;
  MEGABATCH_RETURN_IF_ERROR(Read(model, "type", &c.model_type));
  // Options, defaults and ranges: common/model_catalog.h, as the spec has them.
  const ModelInfo* info = FindModel(c.model_type);
  if (info == nullptr) {
    return InvalidArgumentError("model.type: unknown model '" + c.model_type +
                                "'; supported: " + std::string(kModelNames));
  }
  const bool text = info->dataset == "text";
  const std::map<std::string_view, std::vector<int64_t>*> lists = {
      {"hidden", &c.hidden}, {"channels", &c.channels}};
  for (const ModelWidthList& list : info->lists) {
    if (list.name.empty()) continue;
    std::vector<int64_t>* widths = lists.at(list.name);
    widths->clear();
    for (int64_t w : list.default_widths) {
      if (w > 0) widths->push_back(w);
    }
    MEGABATCH_RETURN_IF_ERROR(Read(model, std::string(list.name), widths));
    if (widths->size() > list.max_entries) {
      return InvalidArgumentError("model." + std::string(list.name) +
                                  ": at most " +
                                  std::to_string(list.max_entries) + " widths");
    }
    for (int64_t w : *widths) {
      if (w < 1 || w > kMaxWidth) {
        return InvalidArgumentError("model." + std::string(list.name) +
                                    ": widths must be between 1 and " +
                                    std::to_string(kMaxWidth));
      }
    }
  }
  const std::map<std::string_view, int64_t*> ints = {
      {"hidden", &c.width},         {"layers", &c.layers},
      {"seq_len", &c.seq_len},      {"embedding", &c.embedding},
      {"heads", &c.heads},          {"ffn", &c.ffn},
      {"vocab_size", &c.vocab_size}};
  for (const ModelIntOption& o : info->ints) {
    if (o.name.empty()) continue;
    int64_t* value = ints.at(o.name);
    *value = DefaultOf(o, c.width);
    MEGABATCH_RETURN_IF_ERROR(Read(model, std::string(o.name), value));
    if (*value < o.lo || *value > o.hi) {
      return InvalidArgumentError("model." + std::string(o.name) +
                                  ": must be between " + std::to_string(o.lo) +
                                  " and " + std::to_string(o.hi) + ", got " +
                                  std::to_string(*value));
    }
  }
  if (info->has_bias) MEGABATCH_RETURN_IF_ERROR(Read(model, "bias", &c.bias));
  if (c.model_type == "tiny_bert" && c.width % c.heads != 0) {
    return InvalidArgumentError("model.heads: " + std::to_string(c.heads) +
                                " must divide model.hidden " +
                                std::to_string(c.width));
  }
  c.dataset_name = std::string(info->dataset);
  if (text) c.dataset_path = kDefaultTextCorpusPath;
  if (auto ds = doc.find("dataset"); ds != doc.end() && ds->is_object()) {
    MEGABATCH_RETURN_IF_ERROR(Read(*ds, "name", &c.dataset_name));
    MEGABATCH_RETURN_IF_ERROR(Read(*ds, "path", &c.dataset_path));
    MEGABATCH_RETURN_IF_ERROR(
        Read(*ds, "validation_fraction", &c.validation_fraction));
    MEGABATCH_RETURN_IF_ERROR(Read(*ds, "cache_dir", &c.cache_dir));
  }
  if (c.dataset_name != info->dataset) {
    return InvalidArgumentError("dataset.name: model " + c.model_type +
                                " trains on " + std::string(info->dataset) +
                                ", not '" + c.dataset_name + "'");
  }
  if (!(c.validation_fraction > 0 && c.validation_fraction < 1)) {
    return InvalidArgumentError(
        "dataset.validation_fraction: must be in (0, 1)");
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
    return InvalidArgumentError("micro_batch_size: must divide batch_size " +
                                std::to_string(c.batch_size) + ", got " +
                                std::to_string(c.micro_batch_size));
  }
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "lr", &c.lr));
  if (!(c.lr > 0) || !std::isfinite(c.lr)) {
    return InvalidArgumentError("lr: must be a positive number");
  }
  if (auto s = doc.find("schedule"); s != doc.end()) {
    MEGABATCH_RETURN_IF_ERROR(
        ReadOptional(*s, "warmup_steps", &c.warmup_steps));
    MEGABATCH_RETURN_IF_ERROR(
        ReadOptional(*s, "warmup_epochs", &c.warmup_epochs));
    std::string decay = "constant";
    MEGABATCH_RETURN_IF_ERROR(Read(*s, "decay", &decay));
    if (decay == "poly") {
      c.decay = Decay::kPoly;
    } else if (decay == "cosine") {
      c.decay = Decay::kCosine;
    } else if (decay != "constant") {
      return InvalidArgumentError("schedule.decay: unknown decay '" + decay +
                                  "'");
    }
    MEGABATCH_RETURN_IF_ERROR(Read(*s, "power", &c.power));
    MEGABATCH_RETURN_IF_ERROR(Read(*s, "warmup_start_lr", &c.warmup_start_lr));
    if (!(c.warmup_start_lr >= 0) || c.warmup_start_lr > c.lr) {
      return InvalidArgumentError(
          "schedule.warmup_start_lr: must be in [0, lr]");
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
  MEGABATCH_RETURN_IF_ERROR(
      Read(doc, "eval_every_samples", &c.eval_every_samples));
  if (c.eval_every_steps < 0 || c.eval_every_samples < 0) {
    return InvalidArgumentError(
        "eval_every_steps, eval_every_samples: must be >= 0");
  }
  if (c.eval_every_steps > 0 && c.eval_every_samples > 0) {
    return InvalidArgumentError(
        "eval_every_samples: give it or eval_every_steps, not both");
  }
  if (auto t = doc.find("target"); t != doc.end() && t->is_object()) {
    MEGABATCH_RETURN_IF_ERROR(Read(*t, "metric", &c.target_metric));
    MEGABATCH_RETURN_IF_ERROR(Read(*t, "value", &c.target_value));
    MEGABATCH_RETURN_IF_ERROR(Read(*t, "stop", &c.target_stop));
    c.target_metric = std::string(CanonicalSelectionMetric(c.target_metric));
    if (FindSelectionMetric(c.target_metric) == nullptr) {
      return InvalidArgumentError("target.metric: unknown metric '" +
                                  c.target_metric +
                                  "'; supported: " + SelectionMetricNames());
    }
  }
  MEGABATCH_RETURN_IF_ERROR(Read(doc, "noise_scale", &c.noise_scale));
  if (c.noise_scale != "auto" && c.noise_scale != "always" &&
      c.noise_scale != "off") {
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
    return InvalidArgumentError("precision: unknown precision '" + c.precision +
                                "'; supported: fp32, bf16, fp16");
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
  MEGABATCH_RETURN_IF_ERROR(
      Read(doc, "checkpoint_per_step", &c.checkpoint_per_step));
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
    return InvalidArgumentError(
        "distributed.world_size: must be between 1 and 4096");
  }
  if (c.rank < 0 || c.rank >= c.world_size) {
    return InvalidArgumentError(
        "distributed.rank: must be in [0, world_size), got " +
        std::to_string(c.rank));
  }
  if (c.world_size > 1) {
    if (c.rendezvous_host.empty()) {
      return InvalidArgumentError(
          "distributed.host: required with world_size > 1");
    }
    if (c.rendezvous_port < 1 || c.rendezvous_port > 65535) {
      return InvalidArgumentError(
          "distributed.port: must be between 1 and 65535");
    }
    if (c.collective_timeout_s < 1) {
      return InvalidArgumentError("distributed.timeout_s: must be positive");
    }
    if (c.batch_size % (c.micro_batch_size * c.world_size) != 0) {
      return InvalidArgumentError(
          "batch_size: " + std::to_string(c.batch_size) +
          " must be a multiple of " + "micro_batch_size x world_size (" +
          std::to_string(c.micro_batch_size) + " x " +
          std::to_string(c.world_size) + ")");
    }
  }
  json fingerprint = doc;
  fingerprint.erase("distributed");
  fingerprint.erase("threads");
  fingerprint.erase("checkpoint_path");
  fingerprint.erase("checkpoint_per_step");
  if (auto ds = fingerprint.find("dataset");
      ds != fingerprint.end() && ds->is_object()) {
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
      1, static_cast<int64_t>(
             std::ceil(epochs * StepsPerEpoch(c, train_samples) - 1e-9)));
}

int64_t WarmupSteps(const TrialConfig& c, int64_t train_samples) {
  if (c.warmup_epochs) {
    return static_cast<int64_t>(
        std::round(*c.warmup_epochs * StepsPerEpoch(c, train_samples)));
  }
  return c.warmup_steps.value_or(0);
}

}  // namespace megabatch::trainer
