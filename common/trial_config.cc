#include "common/trial_config.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "common/datasets.h"
#include "common/json_text.h"
#include "common/model_catalog.h"
#include "common/optimizer_catalog.h"
#include "common/selection_metrics.h"
#include "common/sha256.h"

namespace megabatch {
namespace {

using nlohmann::json;

std::string Format(double x, FieldType type) {
  if (type == FieldType::kInt) return std::to_string(static_cast<int64_t>(x));
  std::ostringstream s;
  s << x;
  return s.str();
}

// The parent object's path of "a.b" ("a"), and the last key ("b").
std::pair<std::string_view, std::string_view> Split(std::string_view path) {
  const size_t dot = path.rfind('.');
  if (dot == std::string_view::npos) return {"", path};
  return {path.substr(0, dot), path.substr(dot + 1)};
}

// Reads a config document's fields through kTrialConfigFields: each value is
// checked against its entry, absent ones take the entry's default.
class Reader {
 public:
  explicit Reader(const json& doc) : doc_(doc) {}

  // The value at `path`, or nullptr when it (or an object above it) is
  // absent.
  const json* Find(std::string_view path) const {
    const json* at = &doc_;
    while (true) {
      const size_t dot = path.find('.');
      if (!at->is_object()) return nullptr;
      auto it = at->find(std::string(path.substr(0, dot)));
      if (it == at->end() || it->is_null()) return nullptr;
      at = &*it;
      if (dot == std::string_view::npos) return at;
      path = path.substr(dot + 1);
    }
  }

  template <typename T>
  Status Read(std::string_view path, T* out) const {
    return ReadTrialConfigValue(path, Find(path), out);
  }

  template <typename T>
  Status ReadOptional(std::string_view path, std::optional<T>* out) const {
    if (Find(path) == nullptr) return Status();
    T value{};
    MEGABATCH_RETURN_IF_ERROR(Read(path, &value));
    *out = value;
    return Status();
  }

 private:
  const json& doc_;
};

// Unknown fields anywhere but in model and optimizer (their catalogs check
// theirs) and dataset.files (keyed by path) are errors: a mistyped field
// must not be ignored silently. `prefix` is the path of `doc` ("" or
// "dataset.").
Status CheckNoUnknownFields(const json& doc, const std::string& prefix = "") {
  for (const auto& [key, value] : doc.items()) {
    const std::string path = prefix + key;
    const TrialConfigField* field = FindTrialConfigField(path);
    if (field == nullptr) {
      return InvalidArgumentError(path + ": unknown field");
    }
    if (field->type != FieldType::kObject || path == "model" ||
        path == "optimizer" || path == "dataset.files" || !value.is_object()) {
      continue;
    }
    MEGABATCH_RETURN_IF_ERROR(CheckNoUnknownFields(value, path + "."));
  }
  return Status();
}

// model.type torchscript: the module file and its record, all strings but
// bytes (common/model_catalog.h has no string options).
Status ReadTorchScriptModel(const json& model, TrialConfig* c) {
  for (const auto& [key, value] : model.items()) {
    if (key == "type") continue;
    if (FindTrialConfigField("model." + key) == nullptr) {
      return InvalidArgumentError("model." + key + ": unknown field for " +
                                  c->model_type);
    }
  }
  auto at = [&](const char* key) -> const json* {
    auto it = model.find(key);
    return it == model.end() || it->is_null() ? nullptr : &*it;
  };
  MEGABATCH_RETURN_IF_ERROR(
      ReadTrialConfigValue("model.path", at("path"), &c->model_path));
  MEGABATCH_RETURN_IF_ERROR(
      ReadTrialConfigValue("model.sha256", at("sha256"), &c->model_sha256));
  MEGABATCH_RETURN_IF_ERROR(
      ReadTrialConfigValue("model.bytes", at("bytes"), &c->model_bytes));
  MEGABATCH_RETURN_IF_ERROR(
      ReadTrialConfigValue("model.file", at("file"), &c->model_file));
  if (c->model_path.empty() && c->model_file.empty()) {
    return InvalidArgumentError(
        "model.path: required for a torchscript model (the file saved with "
        "torch.jit.save)");
  }
  if (!c->model_sha256.empty() && !IsSha256Hex(c->model_sha256)) {
    return InvalidArgumentError(
        "model.sha256: must be 64 lowercase hex digits, got '" +
        c->model_sha256 + "'");
  }
  return Status();
}

Status ReadModel(const json& doc, TrialConfig* c) {
  const json no_fields = json::object();
  auto model_it = doc.find("model");
  const json& model =
      model_it != doc.end() && model_it->is_object() ? *model_it : no_fields;
  c->model_type = "mlp";
  if (auto t = model.find("type"); t != model.end()) {
    if (!t->is_string()) {
      return InvalidArgumentError("model.type: must be a string, got " +
                                  DescribeJson(*t));
    }
    c->model_type = t->get<std::string>();
  }
  if (c->model_type == kTorchScriptModel) return ReadTorchScriptModel(model, c);
  // Options, defaults and ranges: common/model_catalog.h, as the spec has them.
  const ModelInfo* info = FindModel(c->model_type);
  if (info == nullptr) {
    return InvalidArgumentError("model.type: unknown model '" + c->model_type +
                                "'; supported: " + std::string(kModelNames));
  }
  const std::map<std::string_view, std::vector<int64_t>*> lists = {
      {"hidden", &c->hidden}, {"channels", &c->channels}};
  const std::map<std::string_view, int64_t*> ints = {
      {"hidden", &c->width},         {"layers", &c->layers},
      {"seq_len", &c->seq_len},      {"embedding", &c->embedding},
      {"heads", &c->heads},          {"ffn", &c->ffn},
      {"vocab_size", &c->vocab_size}};
  auto known = [&](const std::string& key) {
    if (key == "type" || (key == "bias" && info->has_bias)) return true;
    for (const ModelWidthList& l : info->lists) {
      if (!l.name.empty() && l.name == key) return true;
    }
    for (const ModelIntOption& o : info->ints) {
      if (!o.name.empty() && o.name == key) return true;
    }
    return false;
  };
  for (const auto& [key, ignored] : model.items()) {
    if (!known(key)) {
      return InvalidArgumentError("model." + key + ": unknown field for " +
                                  c->model_type);
    }
  }
  auto read = [&](const std::string& key, auto* out) -> Status {
    auto it = model.find(key);
    if (it == model.end() || it->is_null()) return Status();
    try {
      *out = it->get<std::remove_pointer_t<decltype(out)>>();
    } catch (const json::exception&) {
      return InvalidArgumentError("model." + key + ": wrong type, got " +
                                  DescribeJson(*it));
    }
    return Status();
  };
  for (const ModelWidthList& list : info->lists) {
    if (list.name.empty()) continue;
    std::vector<int64_t>* widths = lists.at(list.name);
    widths->clear();
    for (int64_t w : list.default_widths) {
      if (w > 0) widths->push_back(w);
    }
    MEGABATCH_RETURN_IF_ERROR(read(std::string(list.name), widths));
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
  for (const ModelIntOption& o : info->ints) {
    if (o.name.empty()) continue;
    int64_t* value = ints.at(o.name);
    *value = DefaultOf(o, c->width);
    MEGABATCH_RETURN_IF_ERROR(read(std::string(o.name), value));
    if (*value < o.lo || *value > o.hi) {
      return InvalidArgumentError("model." + std::string(o.name) +
                                  ": must be between " + std::to_string(o.lo) +
                                  " and " + std::to_string(o.hi) + ", got " +
                                  std::to_string(*value));
    }
  }
  c->bias = true;
  if (info->has_bias) MEGABATCH_RETURN_IF_ERROR(read("bias", &c->bias));
  if (c->model_type == "tiny_bert" && c->width % c->heads != 0) {
    return InvalidArgumentError("model.heads: " + std::to_string(c->heads) +
                                " must divide model.hidden " +
                                std::to_string(c->width));
  }
  return Status();
}

// The dataset fields each kind of model takes: a built-in model's dataset
// (name, path, validation_fraction) or the user's own files (the rest).
bool IsBuiltInDatasetField(std::string_view key) {
  return key == "name" || key == "path" || key == "validation_fraction";
}

// dataset.kind and its files, for a torchscript model.
Status ReadDataFiles(const Reader& r, TrialConfig* c) {
  MEGABATCH_RETURN_IF_ERROR(r.Read("dataset.kind", &c->dataset_kind));
  if (c->dataset_kind.empty()) {
    return InvalidArgumentError(
        "dataset.kind: required for a torchscript model: classification or "
        "language_model");
  }
  const bool lm = c->dataset_kind == "language_model";
  for (auto [name, files] : {std::pair<std::string, TrialConfig::SplitFiles*>{
                                 "train", &c->train_files},
                             {"val", &c->val_files},
                             {"test", &c->test_files}}) {
    const std::string at = "dataset." + name + ".";
    MEGABATCH_RETURN_IF_ERROR(r.Read(at + "x", &files->x));
    MEGABATCH_RETURN_IF_ERROR(r.Read(at + "y", &files->y));
    MEGABATCH_RETURN_IF_ERROR(r.Read(at + "tokens", &files->tokens));
    if (lm && !(files->x.empty() && files->y.empty())) {
      return InvalidArgumentError(
          at + (files->x.empty() ? "y" : "x") +
          ": a language_model split is one token file (tokens), not x and y");
    }
    if (!lm && !files->tokens.empty()) {
      return InvalidArgumentError(
          at + "tokens: a classification split is x and y, not tokens");
    }
    if (!lm && files->x.empty() != files->y.empty()) {
      return InvalidArgumentError(at + (files->x.empty() ? "x" : "y") +
                                  ": required with " + at +
                                  (files->x.empty() ? "y" : "x"));
    }
  }
  if (c->train_files.empty()) {
    return InvalidArgumentError(
        std::string("dataset.train: required: ") +
        (lm ? "{tokens: FILE}" : "{x: FILE.npy, y: FILE.npy}"));
  }
  const bool fraction = r.Find("dataset.val_fraction") != nullptr;
  MEGABATCH_RETURN_IF_ERROR(r.Read("dataset.val_fraction", &c->val_fraction));
  if (fraction == !c->val_files.empty()) {
    return InvalidArgumentError(
        fraction ? "dataset.val_fraction: give it or dataset.val, not both"
                 : "dataset.val: required (or dataset.val_fraction, the "
                   "share of the training data held out)");
  }
  if (lm) {
    c->token_dtype = "uint16";
    MEGABATCH_RETURN_IF_ERROR(r.Read("dataset.dtype", &c->token_dtype));
    MEGABATCH_RETURN_IF_ERROR(r.Read("dataset.seq_len", &c->seq_len));
    if (c->seq_len == 0) {
      return InvalidArgumentError(
          "dataset.seq_len: required for a language_model: the tokens a "
          "window predicts");
    }
  } else {
    for (const char* path : {"dataset.dtype", "dataset.seq_len"}) {
      if (r.Find(path) != nullptr) {
        return InvalidArgumentError(std::string(path) +
                                    ": only for dataset.kind language_model");
      }
    }
  }
  if (const json* files = r.Find("dataset.files")) c->data_files = *files;
  return Status();
}

Status ReadDataset(const Reader& r, TrialConfig* c) {
  const json* dataset = r.Find("dataset");
  const bool own = c->model_type == kTorchScriptModel;
  if (dataset != nullptr) {
    for (const auto& [key, ignored] : dataset->items()) {
      if (key == "cache_dir" || IsBuiltInDatasetField(key) != own) continue;
      return InvalidArgumentError(
          "dataset." + key +
          (own ? ": not for a torchscript model, which trains on the files "
                 "of dataset.kind, dataset.train, ... (docs/models.md)"
               : ": only for model.type torchscript (the user's own data "
                 "files); model " +
                     c->model_type + " trains on dataset.name"));
    }
  }
  if (own) return ReadDataFiles(r, c);
  const ModelInfo* info = FindModel(c->model_type);
  c->dataset_name = std::string(info->dataset);
  MEGABATCH_RETURN_IF_ERROR(r.Read("dataset.name", &c->dataset_name));
  if (c->dataset_name != info->dataset) {
    return InvalidArgumentError("dataset.name: model " + c->model_type +
                                " trains on " + std::string(info->dataset) +
                                ", not '" + c->dataset_name + "'");
  }
  c->dataset_path = std::string(DefaultDatasetPath(info->dataset));
  MEGABATCH_RETURN_IF_ERROR(r.Read("dataset.path", &c->dataset_path));
  return r.Read("dataset.validation_fraction", &c->validation_fraction);
}

Status ReadOptimizer(const json& doc, TrialConfig* c) {
  c->optimizer = doc.value("optimizer", json{{"name", "sgd"}});
  if (!c->optimizer.is_object() || !c->optimizer.contains("name") ||
      !c->optimizer["name"].is_string()) {
    return InvalidArgumentError("optimizer: must be an object with a name");
  }
  const std::string name = c->optimizer["name"].get<std::string>();
  const OptimizerInfo* info = FindOptimizer(name);
  if (info == nullptr) {
    return InvalidArgumentError("optimizer.name: unknown optimizer '" + name +
                                "'");
  }
  for (const auto& [key, ignored] : c->optimizer.items()) {
    bool known = key == "name";
    for (const OptimizerOption& o : info->options) {
      known = known || (!o.name.empty() && o.name == key);
    }
    if (!known) {
      return InvalidArgumentError("optimizer." + key + ": unknown field for " +
                                  name);
    }
  }
  return Status();
}

Status ReadDistributed(const Reader& r, TrialConfig* c) {
  MEGABATCH_RETURN_IF_ERROR(r.Read("distributed.world_size", &c->world_size));
  MEGABATCH_RETURN_IF_ERROR(r.Read("distributed.rank", &c->rank));
  MEGABATCH_RETURN_IF_ERROR(r.Read("distributed.host", &c->rendezvous_host));
  MEGABATCH_RETURN_IF_ERROR(r.Read("distributed.port", &c->rendezvous_port));
  MEGABATCH_RETURN_IF_ERROR(
      r.Read("distributed.timeout_s", &c->collective_timeout_s));
  if (c->rank >= c->world_size) {
    return InvalidArgumentError(
        "distributed.rank: must be in [0, world_size), got " +
        std::to_string(c->rank));
  }
  if (c->world_size == 1) return Status();
  if (c->rendezvous_host.empty()) {
    return InvalidArgumentError(
        "distributed.host: required with world_size > 1");
  }
  if (c->rendezvous_port < 1) {
    return InvalidArgumentError(
        "distributed.port: must be between 1 and 65535");
  }
  if (c->batch_size % (c->micro_batch_size * c->world_size) != 0) {
    return InvalidArgumentError(
        "batch_size: " + std::to_string(c->batch_size) +
        " must be a multiple of micro_batch_size x world_size (" +
        std::to_string(c->micro_batch_size) + " x " +
        std::to_string(c->world_size) + ")");
  }
  return Status();
}

}  // namespace

const TrialConfigField* FindTrialConfigField(std::string_view path) {
  for (const TrialConfigField& f : kTrialConfigFields) {
    if (f.path == path) return &f;
  }
  return nullptr;
}

std::vector<std::string_view> FieldChoices(const TrialConfigField& field) {
  std::vector<std::string_view> out;
  std::string_view rest = field.choices;
  while (!rest.empty()) {
    const size_t comma = rest.find(", ");
    out.push_back(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? "" : rest.substr(comma + 2);
  }
  return out;
}

json TrialConfigDefault(const TrialConfigField& f) {
  switch (f.type) {
    case FieldType::kString:
      return std::string(f.default_text.empty() && !f.choices.empty()
                             ? FieldChoices(f).front()
                             : f.default_text);
    case FieldType::kBool:
      return f.default_number != 0;
    case FieldType::kInt:
      return static_cast<int64_t>(f.default_number);
    case FieldType::kNumber:
      return f.default_number;
    case FieldType::kObject:
      break;
  }
  return json::object();
}

Status CheckTrialConfigValue(std::string_view path, const json& v) {
  const TrialConfigField* f = FindTrialConfigField(path);
  const std::string p(path);
  if (f == nullptr) return InvalidArgumentError(p + ": unknown field");
  switch (f->type) {
    case FieldType::kObject:
      if (!v.is_object()) {
        return InvalidArgumentError(p + ": must be a mapping, got " +
                                    DescribeJson(v));
      }
      return Status();
    case FieldType::kBool:
      if (!v.is_boolean()) {
        return InvalidArgumentError(p + ": must be true or false, got " +
                                    DescribeJson(v));
      }
      return Status();
    case FieldType::kString: {
      if (!v.is_string()) {
        return InvalidArgumentError(p + ": must be a string, got " +
                                    DescribeJson(v));
      }
      const std::vector<std::string_view> choices = FieldChoices(*f);
      if (choices.empty()) return Status();
      for (std::string_view c : choices) {
        if (v.get<std::string>() == c) return Status();
      }
      return InvalidArgumentError(p + ": unknown value '" +
                                  v.get<std::string>() +
                                  "'; supported: " + std::string(f->choices));
    }
    case FieldType::kInt: {
      const double x = v.is_number() ? v.get<double>() : 0.5;
      if (!std::isfinite(x) || std::floor(x) != x || std::fabs(x) >= 9e15) {
        return InvalidArgumentError(p + ": must be an integer, got " +
                                    DescribeJson(v));
      }
      if (x < f->lo || x > f->hi) {
        std::string range =
            f->hi != kNoLimit
                ? "between " + Format(f->lo, f->type) + " and " +
                      Format(f->hi, f->type)
                : (f->lo == 1 ? "positive"
                              : "at least " + Format(f->lo, f->type));
        return InvalidArgumentError(p + ": must be " + range + ", got " +
                                    DescribeJson(v));
      }
      return Status();
    }
    case FieldType::kNumber: {
      if (!v.is_number() || !std::isfinite(v.get<double>())) {
        return InvalidArgumentError(p + ": must be a finite number, got " +
                                    DescribeJson(v));
      }
      const double x = v.get<double>();
      const bool above = f->lo_open ? x > f->lo : x >= f->lo;
      if (!above || (f->hi != kNoLimit && !(x < f->hi))) {
        std::string range =
            f->hi != kNoLimit ? std::string("in ") + (f->lo_open ? "(" : "[") +
                                    Format(f->lo, f->type) + ", " +
                                    Format(f->hi, f->type) + ")"
                              : std::string(f->lo_open ? "> " : ">= ") +
                                    Format(f->lo, f->type);
        return InvalidArgumentError(p + ": must be " + range + ", got " +
                                    DescribeJson(v));
      }
      return Status();
    }
  }
  return Status();
}

Result<TrialConfig> ParseTrialConfig(const json& doc) {
  if (!doc.is_object()) {
    return InvalidArgumentError("config: must be a JSON object");
  }
  MEGABATCH_RETURN_IF_ERROR(CheckNoUnknownFields(doc));
  const Reader r(doc);
  for (const TrialConfigField& f : kTrialConfigFields) {
    if (f.type != FieldType::kObject) continue;
    if (const json* v = r.Find(f.path)) {
      MEGABATCH_RETURN_IF_ERROR(CheckTrialConfigValue(f.path, *v));
    }
  }
  TrialConfig c;
  MEGABATCH_RETURN_IF_ERROR(r.Read("trial_id", &c.trial_id));
  MEGABATCH_RETURN_IF_ERROR(r.Read("sweep_id", &c.sweep_id));
  MEGABATCH_RETURN_IF_ERROR(r.Read("seed", &c.seed));
  MEGABATCH_RETURN_IF_ERROR(ReadModel(doc, &c));
  MEGABATCH_RETURN_IF_ERROR(r.Read("dataset.cache_dir", &c.cache_dir));
  MEGABATCH_RETURN_IF_ERROR(ReadDataset(r, &c));
  MEGABATCH_RETURN_IF_ERROR(ReadOptimizer(doc, &c));
  MEGABATCH_RETURN_IF_ERROR(r.Read("batch_size", &c.batch_size));
  c.micro_batch_size = c.batch_size;
  MEGABATCH_RETURN_IF_ERROR(r.Read("micro_batch_size", &c.micro_batch_size));
  if (c.micro_batch_size > c.batch_size ||
      c.batch_size % c.micro_batch_size != 0) {
    return InvalidArgumentError("micro_batch_size: must divide batch_size " +
                                std::to_string(c.batch_size) + ", got " +
                                std::to_string(c.micro_batch_size));
  }
  MEGABATCH_RETURN_IF_ERROR(r.Read("lr", &c.lr));
  if (r.Find("schedule.warmup_steps") && r.Find("schedule.warmup_epochs")) {
    return InvalidArgumentError(
        "schedule: give warmup_epochs or warmup_steps, not both");
  }
  MEGABATCH_RETURN_IF_ERROR(
      r.ReadOptional("schedule.warmup_steps", &c.warmup_steps));
  MEGABATCH_RETURN_IF_ERROR(
      r.ReadOptional("schedule.warmup_epochs", &c.warmup_epochs));
  MEGABATCH_RETURN_IF_ERROR(
      r.Read("schedule.warmup_start_lr", &c.warmup_start_lr));
  if (c.warmup_start_lr > c.lr) {
    return InvalidArgumentError("schedule.warmup_start_lr: must be in [0, lr]");
  }
  std::string decay;
  MEGABATCH_RETURN_IF_ERROR(r.Read("schedule.decay", &decay));
  const std::vector<std::string_view> decays =
      FieldChoices(*FindTrialConfigField("schedule.decay"));
  c.decay = static_cast<Decay>(std::find(decays.begin(), decays.end(), decay) -
                               decays.begin());
  MEGABATCH_RETURN_IF_ERROR(r.Read("schedule.power", &c.power));
  MEGABATCH_RETURN_IF_ERROR(r.ReadOptional("budget.epochs", &c.budget_epochs));
  MEGABATCH_RETURN_IF_ERROR(r.ReadOptional("budget.steps", &c.budget_steps));
  MEGABATCH_RETURN_IF_ERROR(
      r.ReadOptional("budget.samples", &c.budget_samples));
  const int budgets = c.budget_epochs.has_value() + c.budget_steps.has_value() +
                      c.budget_samples.has_value();
  if (budgets == 0) c.budget_epochs = 1.0;
  if (budgets > 1) {
    return InvalidArgumentError(
        "budget: give exactly one of epochs, steps or samples");
  }
  MEGABATCH_RETURN_IF_ERROR(r.Read("eval_every_steps", &c.eval_every_steps));
  MEGABATCH_RETURN_IF_ERROR(
      r.Read("eval_every_samples", &c.eval_every_samples));
  if (c.eval_every_steps > 0 && c.eval_every_samples > 0) {
    return InvalidArgumentError(
        "eval_every_samples: give it or eval_every_steps, not both");
  }
  if (r.Find("target") != nullptr) {
    MEGABATCH_RETURN_IF_ERROR(r.Read("target.metric", &c.target_metric));
    MEGABATCH_RETURN_IF_ERROR(r.Read("target.value", &c.target_value));
    MEGABATCH_RETURN_IF_ERROR(r.Read("target.stop", &c.target_stop));
    c.target_metric = std::string(CanonicalSelectionMetric(c.target_metric));
    if (FindSelectionMetric(c.target_metric) == nullptr) {
      return InvalidArgumentError("target.metric: unknown metric '" +
                                  c.target_metric +
                                  "'; supported: " + SelectionMetricNames());
    }
  }
  MEGABATCH_RETURN_IF_ERROR(r.Read("noise_scale", &c.noise_scale));
  MEGABATCH_RETURN_IF_ERROR(r.Read("divergence_factor", &c.divergence_factor));
  MEGABATCH_RETURN_IF_ERROR(r.Read("device", &c.device));
  MEGABATCH_RETURN_IF_ERROR(r.Read("precision", &c.precision));
  MEGABATCH_RETURN_IF_ERROR(r.Read("threads", &c.threads));
  MEGABATCH_RETURN_IF_ERROR(
      r.Read("diagnostics_every_steps", &c.diagnostics_every_steps));
  MEGABATCH_RETURN_IF_ERROR(
      r.Read("checkpoint_every_steps", &c.checkpoint_every_steps));
  MEGABATCH_RETURN_IF_ERROR(r.Read("checkpoint_path", &c.checkpoint_path));
  MEGABATCH_RETURN_IF_ERROR(
      r.Read("checkpoint_per_step", &c.checkpoint_per_step));
  if (c.checkpoint_every_steps > 0 && c.checkpoint_path.empty()) {
    return InvalidArgumentError(
        "checkpoint_path: required when checkpoint_every_steps > 0");
  }
  MEGABATCH_RETURN_IF_ERROR(ReadDistributed(r, &c));
  // What may differ between two runs of one trial: the worker's fields and
  // the rendezvous.
  json fingerprint = doc;
  for (const TrialConfigField& f : kTrialConfigFields) {
    if (f.set_by != SetBy::kWorker && f.path != "distributed") continue;
    auto [parent, key] = Split(f.path);
    if (parent.empty()) {
      fingerprint.erase(std::string(key));
    } else if (auto it = fingerprint.find(std::string(parent));
               it != fingerprint.end() && it->is_object()) {
      it->erase(std::string(key));
    }
  }
  c.fingerprint = fingerprint.dump();
  return c;
}

json TrialConfigToJson(const TrialConfig& c) {
  json model = {{"type", c.model_type}};
  const ModelInfo* info = FindModel(c.model_type);
  if (info != nullptr) {
    for (const ModelWidthList& l : info->lists) {
      if (l.name == "hidden") model["hidden"] = c.hidden;
      if (l.name == "channels") model["channels"] = c.channels;
    }
    const std::map<std::string_view, int64_t> ints = {
        {"hidden", c.width},         {"layers", c.layers},
        {"seq_len", c.seq_len},      {"embedding", c.embedding},
        {"heads", c.heads},          {"ffn", c.ffn},
        {"vocab_size", c.vocab_size}};
    for (const ModelIntOption& o : info->ints) {
      if (!o.name.empty()) model[std::string(o.name)] = ints.at(o.name);
    }
    if (info->has_bias) model["bias"] = c.bias;
  }
  json dataset;
  if (c.model_type == kTorchScriptModel) {
    model = {{"type", c.model_type}, {"path", c.model_path}};
    if (!c.model_sha256.empty()) model["sha256"] = c.model_sha256;
    if (c.model_bytes > 0) model["bytes"] = c.model_bytes;
    if (!c.model_file.empty()) model["file"] = c.model_file;
    dataset = {{"kind", c.dataset_kind}};
    for (const auto& [name, files] :
         {std::pair<const char*, const TrialConfig::SplitFiles*>{
              "train", &c.train_files},
          {"val", &c.val_files},
          {"test", &c.test_files}}) {
      json split = json::object();
      if (!files->x.empty()) split["x"] = files->x;
      if (!files->y.empty()) split["y"] = files->y;
      if (!files->tokens.empty()) split["tokens"] = files->tokens;
      if (!split.empty()) dataset[name] = split;
    }
    if (c.val_files.empty()) dataset["val_fraction"] = c.val_fraction;
    if (c.dataset_kind == "language_model") {
      dataset["dtype"] = c.token_dtype;
      dataset["seq_len"] = c.seq_len;
    }
    if (!c.data_files.is_null()) dataset["files"] = c.data_files;
  } else {
    dataset = {{"name", c.dataset_name},
               {"path", c.dataset_path},
               {"validation_fraction", c.validation_fraction}};
  }
  if (!c.cache_dir.empty()) dataset["cache_dir"] = c.cache_dir;
  const std::vector<std::string_view> decays =
      FieldChoices(*FindTrialConfigField("schedule.decay"));
  json schedule = {{"warmup_start_lr", c.warmup_start_lr},
                   {"decay", decays[static_cast<size_t>(c.decay)]},
                   {"power", c.power}};
  if (c.warmup_steps) schedule["warmup_steps"] = *c.warmup_steps;
  if (c.warmup_epochs) schedule["warmup_epochs"] = *c.warmup_epochs;
  json budget = json::object();
  if (c.budget_epochs) budget["epochs"] = *c.budget_epochs;
  if (c.budget_steps) budget["steps"] = *c.budget_steps;
  if (c.budget_samples) budget["samples"] = *c.budget_samples;
  json out = {{"trial_id", c.trial_id},
              {"sweep_id", c.sweep_id},
              {"seed", c.seed},
              {"model", model},
              {"dataset", dataset},
              {"optimizer", c.optimizer},
              {"batch_size", c.batch_size},
              {"micro_batch_size", c.micro_batch_size},
              {"lr", c.lr},
              {"schedule", schedule},
              {"budget", budget},
              {"eval_every_steps", c.eval_every_steps},
              {"eval_every_samples", c.eval_every_samples},
              {"noise_scale", c.noise_scale},
              {"divergence_factor", c.divergence_factor},
              {"device", c.device},
              {"precision", c.precision},
              {"threads", c.threads},
              {"diagnostics_every_steps", c.diagnostics_every_steps},
              {"checkpoint_every_steps", c.checkpoint_every_steps},
              {"checkpoint_per_step", c.checkpoint_per_step}};
  if (!c.checkpoint_path.empty()) out["checkpoint_path"] = c.checkpoint_path;
  if (!c.target_metric.empty()) {
    out["target"] = {{"metric", c.target_metric},
                     {"value", c.target_value},
                     {"stop", c.target_stop}};
  }
  if (c.world_size > 1) {
    SetRendezvous(&out, {c.world_size, c.rank, c.rendezvous_host,
                         c.rendezvous_port, c.collective_timeout_s});
  }
  return out;
}

void SetCoordinatorIds(json* config, int64_t trial_id, int64_t sweep_id) {
  (*config)["trial_id"] = trial_id;
  (*config)["sweep_id"] = sweep_id;
}

void SetRendezvous(json* config, const Rendezvous& r) {
  (*config)["distributed"] = {{"world_size", r.world_size},
                              {"rank", r.rank},
                              {"host", r.host},
                              {"port", r.port},
                              {"timeout_s", r.timeout_s}};
}

void SetWorkerFields(json* config, int threads,
                     const std::string& checkpoint_path) {
  (*config)["threads"] = threads;
  (*config)["checkpoint_path"] = checkpoint_path;
  (*config)["checkpoint_per_step"] = true;
}

}  // namespace megabatch
