#include "server/spec/sweep_spec.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <set>
#include <sstream>

#include "common/datasets.h"
#include "common/json_text.h"
#include "common/metric_catalog.h"
#include "common/model_catalog.h"
#include "common/optimizer_catalog.h"
#include "common/selection_metrics.h"
#include "common/sha256.h"
#include "common/trial_config.h"

namespace megabatch::spec {
namespace {

using nlohmann::json;

constexpr size_t kMaxListLength = 1000;

// Converts a YAML node to JSON. Plain scalars become numbers, booleans or null
// where they read as such (YAML 1.2 core schema); quoted scalars stay strings.
json YamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const auto& item : node) out.push_back(YamlToJson(item));
      return out;
    }
    case YAML::NodeType::Map: {
      json out = json::object();
      for (const auto& kv : node) {
        out[kv.first.as<std::string>()] = YamlToJson(kv.second);
      }
      return out;
    }
    case YAML::NodeType::Scalar:
      break;
  }
  const std::string& s = node.Scalar();
  if (node.Tag() == "!") return s;  // quoted
  if (s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  // Whole-string numbers only: "12abc" stays a string.
  json number = json::parse(s, nullptr, /*allow_exceptions=*/false);
  if (number.is_number()) return number;
  if (s == ".inf" || s == ".Inf")
    return std::numeric_limits<double>::infinity();
  if (s == ".nan" || s == ".NaN") return std::nan("");
  return s;
}

// Reads the fields of one JSON object, remembering which were read so that
// unknown (mistyped) fields are reported. `path` prefixes every error.
class Fields {
 public:
  Fields(const json& obj, std::string path)
      : obj_(obj), path_(std::move(path)) {}

  std::string Path(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }

  const json* Get(std::string_view key) {
    seen_.insert(std::string(key));
    auto it = obj_.find(std::string(key));
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  Status Require(std::string_view key, const json** out) {
    *out = Get(key);
    if (*out == nullptr) return InvalidArgumentError(Path(key) + ": required");
    return Status::Ok();
  }

  Status String(std::string_view key, std::string* out,
                std::optional<std::string> fallback = std::nullopt) {
    const json* v = Get(key);
    if (v == nullptr) {
      if (fallback) {
        *out = *fallback;
        return Status::Ok();
      }
      return InvalidArgumentError(Path(key) + ": required");
    }
    if (!v->is_string()) {
      return InvalidArgumentError(Path(key) + ": must be a string, got " +
                                  DescribeJson(*v));
    }
    *out = v->get<std::string>();
    if (out->empty() || out->size() > kMaxNameLength) {
      return InvalidArgumentError(Path(key) + ": must be 1 to " +
                                  std::to_string(kMaxNameLength) +
                                  " characters long");
    }
    return Status::Ok();
  }

  // A field the trial config carries as it is (common/trial_config.h):
  // checked, and defaulted, by its entry there, as the trainer does.
  template <typename T>
  Status Trial(std::string_view key, T* out) {
    return ReadTrialConfigValue(Path(key), Get(key), out);
  }

  // A string that must be one of `choices`; the first is the default.
  Status Choice(std::string_view key, std::string* out,
                std::initializer_list<const char*> choices) {
    MEGABATCH_RETURN_IF_ERROR(String(key, out, std::string(*choices.begin())));
    std::string names;
    for (const char* c : choices) {
      if (*out == c) return Status::Ok();
      names += names.empty() ? c : std::string(", ") + c;
    }
    return InvalidArgumentError(Path(key) + ": unknown value '" + *out +
                                "'; supported: " + names);
  }

  // An integer in [lo, hi].
  Status Int(std::string_view key, int64_t* out,
             std::optional<int64_t> fallback, int64_t lo, int64_t hi) {
    const json* v = Get(key);
    if (v == nullptr) {
      if (fallback) {
        *out = *fallback;
        return Status::Ok();
      }
      return InvalidArgumentError(Path(key) + ": required");
    }
    return IntValue(*v, Path(key), out, lo, hi);
  }

  // A finite number > lo (lo_open) or >= lo; `fallback` when absent.
  Status Number(std::string_view key, double* out,
                std::optional<double> fallback, double lo, bool lo_open) {
    const json* v = Get(key);
    if (v == nullptr) {
      if (fallback) {
        *out = *fallback;
        return Status::Ok();
      }
      return InvalidArgumentError(Path(key) + ": required");
    }
    return NumberValue(*v, Path(key), out, lo, lo_open);
  }

  Status Bool(std::string_view key, bool* out, bool fallback) {
    const json* v = Get(key);
    if (v == nullptr) {
      *out = fallback;
      return Status::Ok();
    }
    if (!v->is_boolean()) {
      return InvalidArgumentError(Path(key) + ": must be true or false, got " +
                                  DescribeJson(*v));
    }
    *out = v->get<bool>();
    return Status::Ok();
  }

  // Fails on the first field of the object that no Get() asked for.
  Status NoUnknown() const {
    for (const auto& [key, value] : obj_.items()) {
      if (!seen_.count(key)) {
        return InvalidArgumentError(Path(key) + ": unknown field");
      }
    }
    return Status::Ok();
  }

  static Status IntValue(const json& v, const std::string& path, int64_t* out,
                         int64_t lo, int64_t hi) {
    bool integral = v.is_number_integer() ||
                    (v.is_number_float() && std::isfinite(v.get<double>()) &&
                     std::floor(v.get<double>()) == v.get<double>() &&
                     std::fabs(v.get<double>()) < 9e15);
    if (!integral) {
      return InvalidArgumentError(path + ": must be an integer, got " +
                                  DescribeJson(v));
    }
    int64_t x = v.is_number_float() ? static_cast<int64_t>(v.get<double>())
                                    : v.get<int64_t>();
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) {
      x = INT64_MAX;
    }
    if (x < lo || x > hi) {
      std::ostringstream m;
      m << path << ": must be ";
      if (hi == INT64_MAX) {
        m << (lo == 1 ? "positive" : "at least " + std::to_string(lo));
      } else {
        m << "between " << lo << " and " << hi;
      }
      m << ", got " << DescribeJson(v);
      return InvalidArgumentError(m.str());
    }
    *out = x;
    return Status::Ok();
  }

  static Status NumberValue(const json& v, const std::string& path, double* out,
                            double lo, bool lo_open) {
    if (!v.is_number() || !std::isfinite(v.get<double>())) {
      return InvalidArgumentError(path + ": must be a finite number, got " +
                                  DescribeJson(v));
    }
    double x = v.get<double>();
    if (lo_open ? !(x > lo) : !(x >= lo)) {
      std::ostringstream m;
      m << path << ": must be " << (lo_open ? "> " : ">= ") << lo << ", got "
        << DescribeJson(v);
      return InvalidArgumentError(m.str());
    }
    *out = x;
    return Status::Ok();
  }

 private:
  const json& obj_;
  std::string path_;
  std::set<std::string> seen_;
};

Status RequireObject(const json* v, const std::string& path) {
  if (v != nullptr && !v->is_object()) {
    return InvalidArgumentError(path + ": must be a mapping, got " +
                                DescribeJson(*v));
  }
  return Status::Ok();
}

Status RequireList(const json* v, const std::string& path) {
  if (v == nullptr) return Status::Ok();
  if (!v->is_array()) {
    return InvalidArgumentError(path + ": must be a list, got " +
                                DescribeJson(*v));
  }
  if (v->empty()) return InvalidArgumentError(path + ": must not be empty");
  if (v->size() > kMaxListLength) {
    return InvalidArgumentError(path + ": at most " +
                                std::to_string(kMaxListLength) + " entries");
  }
  return Status::Ok();
}

// A list of 1..max_len integers in [1, 65536], or `fallback` when absent.
Status WidthList(Fields& f, std::string_view key, size_t max_len,
                 std::vector<int64_t> fallback, std::vector<int64_t>* out) {
  *out = std::move(fallback);
  const json* v = f.Get(key);
  if (v == nullptr) return Status::Ok();
  std::string path = f.Path(key);
  if (!v->is_array())
    return InvalidArgumentError(path + ": must be a list of widths");
  if (v->size() > max_len) {
    return InvalidArgumentError(path + ": at most " + std::to_string(max_len) +
                                " entries");
  }
  out->clear();
  for (size_t i = 0; i < v->size(); ++i) {
    int64_t width;
    MEGABATCH_RETURN_IF_ERROR(Fields::IntValue(
        (*v)[i], path + "[" + std::to_string(i) + "]", &width, 1, 65536));
    out->push_back(width);
  }
  return Status::Ok();
}

// The longest data or model path a spec may name.
constexpr size_t kMaxPathLength = 4096;

// model.type torchscript: the module the client uploaded at submit
// (model.sha256, model.bytes) and the path it read it from, for the record.
Status ParseTorchScriptModel(Fields& f, json* out) {
  std::string path, sha256;
  int64_t bytes = 0;
  MEGABATCH_RETURN_IF_ERROR(f.Trial("path", &path));
  MEGABATCH_RETURN_IF_ERROR(f.Trial("sha256", &sha256));
  MEGABATCH_RETURN_IF_ERROR(f.Trial("bytes", &bytes));
  if (path.empty() || path.size() > kMaxPathLength) {
    return InvalidArgumentError(
        "model.path: required: the module file saved with torch.jit.save "
        "(docs/models.md)");
  }
  if (sha256.empty() || bytes < 1) {
    return InvalidArgumentError(
        std::string(sha256.empty() ? "model.sha256" : "model.bytes") +
        ": required: the client uploads model.path at submit and writes its "
        "SHA-256 and size here; submit with megabatch submit or the Python "
        "client");
  }
  if (!IsSha256Hex(sha256)) {
    return InvalidArgumentError(
        "model.sha256: must be 64 lowercase hex digits, got '" + sha256 + "'");
  }
  *out = {{"type", kTorchScriptModel},
          {"path", path},
          {"sha256", sha256},
          {"bytes", bytes}};
  return f.NoUnknown();
}

Status ParseModel(Fields& top, json* out) {
  const json* v = top.Get("model");
  MEGABATCH_RETURN_IF_ERROR(RequireObject(v, "model"));
  json empty = json::object();
  Fields f(v ? *v : empty, "model");
  std::string type;
  MEGABATCH_RETURN_IF_ERROR(f.String("type", &type, std::string("mlp")));
  if (type == kTorchScriptModel) return ParseTorchScriptModel(f, out);
  const ModelInfo* model = FindModel(type);
  if (model == nullptr) {
    return InvalidArgumentError("model.type: unknown model '" + type +
                                "'; supported: " + std::string(kModelNames));
  }
  // Every option is written out with its default (common/model_catalog.h),
  // so that the stored spec says what ran.
  *out = {{"type", type}};
  for (const ModelWidthList& list : model->lists) {
    if (list.name.empty()) continue;
    std::vector<int64_t> fallback, widths;
    for (int64_t w : list.default_widths) {
      if (w > 0) fallback.push_back(w);
    }
    MEGABATCH_RETURN_IF_ERROR(
        WidthList(f, list.name, list.max_entries, fallback, &widths));
    (*out)[std::string(list.name)] = widths;
  }
  int64_t hidden = 0;
  for (const ModelIntOption& o : model->ints) {
    if (o.name.empty()) continue;
    int64_t value;
    MEGABATCH_RETURN_IF_ERROR(
        f.Int(o.name, &value, DefaultOf(o, hidden), o.lo, o.hi));
    if (o.name == "hidden") hidden = value;
    (*out)[std::string(o.name)] = value;
  }
  if (model->has_bias) {
    bool bias;
    MEGABATCH_RETURN_IF_ERROR(f.Bool("bias", &bias, true));
    (*out)["bias"] = bias;
  }
  if (out->contains("heads") && hidden % (*out)["heads"].get<int64_t>() != 0) {
    return InvalidArgumentError("model.heads: " + (*out)["heads"].dump() +
                                " must divide model.hidden " +
                                std::to_string(hidden));
  }
  return f.NoUnknown();
}

// The bytes of text a corpus path holds: the file, or a directory's regular
// files (what LoadTextCorpus reads, binary files included: an upper bound).
int64_t CorpusBytes(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) {
    auto size = std::filesystem::file_size(path, ec);
    return ec ? 0 : static_cast<int64_t>(size);
  }
  int64_t total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
    if (entry.is_symlink(ec) || !entry.is_regular_file(ec)) continue;
    auto size = entry.file_size(ec);
    if (!ec) total += static_cast<int64_t>(size);
  }
  return total;
}

// OK when `path` (the value of `field`) is absolute and, once "." and ".."
// are resolved (on the text: nothing is looked at), lies under one of
// `roots`.
Status CheckUnderDataRoot(const std::string& path,
                          const std::vector<std::string>& roots,
                          const std::string& field = "dataset.path") {
  const std::filesystem::path p =
      std::filesystem::path(path).lexically_normal();
  if (p.is_absolute()) {
    for (const std::string& root : roots) {
      const std::filesystem::path r =
          std::filesystem::path(root).lexically_normal();
      const auto rel = p.lexically_relative(r);
      if (!rel.empty() && *rel.begin() != "..") return Status::Ok();
    }
  }
  std::string list;
  for (const auto& r : roots) list += (list.empty() ? "" : ", ") + r;
  return InvalidArgumentError(
      field + ": " + path +
      " is not under a data root of this coordinator (--data-root: " +
      (list.empty() ? "none" : list) + ")");
}

// What the client recorded of one data file (dataset.files), checked.
struct FileRecord {
  int64_t bytes = 0;
  std::string dtype;           // .npy files
  std::vector<int64_t> shape;  // .npy files
};

Result<FileRecord> ReadFileRecord(const json& files, const std::string& path,
                                  const std::string& field) {
  auto it = files.find(path);
  const std::string where = "dataset.files[\"" + path + "\"]";
  if (it == files.end() || !it->is_object()) {
    return InvalidArgumentError(
        where + ": required: the size and SHA-256 of " + field +
        ", recorded by the client at submit (megabatch submit and the Python "
        "client write it)");
  }
  FileRecord r;
  const json& rec = *it;
  if (!rec.contains("bytes") || !rec["bytes"].is_number_integer() ||
      rec["bytes"].get<int64_t>() < 0) {
    return InvalidArgumentError(where + ".bytes: must be a size in bytes");
  }
  r.bytes = rec["bytes"].get<int64_t>();
  if (!rec.contains("sha256") || !rec["sha256"].is_string() ||
      !IsSha256Hex(rec["sha256"].get<std::string>())) {
    return InvalidArgumentError(where +
                                ".sha256: must be 64 lowercase hex "
                                "digits");
  }
  for (const auto& [key, value] : rec.items()) {
    if (key == "bytes" || key == "sha256") continue;
    if (key == "dtype" && value.is_string()) {
      r.dtype = value.get<std::string>();
    } else if (key == "shape" && value.is_array()) {
      for (const json& d : value) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0) {
          return InvalidArgumentError(where +
                                      ".shape: must be a list of sizes");
        }
        r.shape.push_back(d.get<int64_t>());
      }
    } else {
      return InvalidArgumentError(where + "." + key + ": unknown field");
    }
  }
  return r;
}

// The user's data files of a torchscript model (docs/models.md), passed to
// the trial config as given. Paths are absolute (the client resolves them)
// and under the coordinator's data roots. The coordinator never opens them:
// it checks what the client recorded of each (dataset.files: size, SHA-256
// and a .npy file's dtype and shape), and the worker checks the files
// against that record. What the trial config reader checks (kind, splits,
// val or val_fraction) it checks for every trial (CheckTrialConfigs).
Status ParseDataFiles(Fields& f, const std::vector<std::string>* data_roots,
                      json* out, int64_t* train_samples) {
  std::string kind, dtype = "uint16";
  double val_fraction = 0;
  int64_t seq_len = 0;
  MEGABATCH_RETURN_IF_ERROR(f.Trial("kind", &kind));
  MEGABATCH_RETURN_IF_ERROR(f.Trial("val_fraction", &val_fraction));
  MEGABATCH_RETURN_IF_ERROR(f.Trial("dtype", &dtype));
  MEGABATCH_RETURN_IF_ERROR(f.Trial("seq_len", &seq_len));
  const json* files = f.Get("files");
  if (files == nullptr || !files->is_object()) {
    return InvalidArgumentError(
        "dataset.files: required: each data file's size and SHA-256, "
        "recorded by the client at submit (megabatch submit and the Python "
        "client write it)");
  }
  *out = json::object();
  for (const char* key : {"kind", "val_fraction", "dtype", "seq_len"}) {
    if (const json* v = f.Get(key)) (*out)[key] = *v;
  }
  (*out)["files"] = *files;
  std::map<std::string, FileRecord> records;  // by field: "train.x"
  for (const char* split : {"train", "val", "test"}) {
    const json* v = f.Get(split);
    if (v == nullptr) continue;
    const std::string at = std::string("dataset.") + split;
    MEGABATCH_RETURN_IF_ERROR(RequireObject(v, at));
    Fields sf(*v, at);
    for (const char* key : {"x", "y", "tokens"}) {
      std::string path;
      MEGABATCH_RETURN_IF_ERROR(sf.Trial(key, &path));
      if (path.empty()) continue;
      const std::string field = sf.Path(key);
      if (path.size() > kMaxPathLength) {
        return InvalidArgumentError(field + ": longer than " +
                                    std::to_string(kMaxPathLength) +
                                    " characters");
      }
      if (data_roots != nullptr) {
        MEGABATCH_RETURN_IF_ERROR(CheckUnderDataRoot(path, *data_roots, field));
      }
      MEGABATCH_ASSIGN_OR_RETURN(FileRecord record,
                                 ReadFileRecord(*files, path, field));
      records[std::string(split) + "." + key] = std::move(record);
      (*out)[split][key] = path;
    }
    MEGABATCH_RETURN_IF_ERROR(sf.NoUnknown());
  }
  MEGABATCH_RETURN_IF_ERROR(f.NoUnknown());
  // The batch-size limit: the training split's samples, from the records
  // (the trainer counts again and refuses a larger batch).
  auto held_out = [&](int64_t n) {
    return n - static_cast<int64_t>(
                   std::llround(val_fraction * static_cast<double>(n)));
  };
  if (kind == "language_model") {
    auto train = records.find("train.tokens");
    if (train == records.end() || seq_len < 1) return Status::Ok();
    const int64_t tokens =
        held_out(train->second.bytes / (dtype == "uint32" ? 4 : 2));
    if (tokens < seq_len + 1) {
      return InvalidArgumentError(
          "dataset.train.tokens: " + std::to_string(tokens) +
          " tokens for training is shorter than one window of "
          "dataset.seq_len + 1 = " +
          std::to_string(seq_len + 1));
    }
    *train_samples = (tokens - (seq_len + 1)) / seq_len + 1;
    return Status::Ok();
  }
  for (const char* split : {"train", "val", "test"}) {
    auto x = records.find(std::string(split) + ".x");
    auto y = records.find(std::string(split) + ".y");
    if (x == records.end() || y == records.end()) continue;
    const std::string at = std::string("dataset.") + split;
    for (const auto& [key, record] : {*x, *y}) {
      if (record.shape.empty() || record.dtype.empty()) {
        return InvalidArgumentError(
            "dataset.files[\"" +
            (*out)[split][key.substr(key.find('.') + 1)].get<std::string>() +
            "\"]: needs the .npy file's dtype and shape (the client reads "
            "them from its header)");
      }
    }
    if (y->second.shape.size() != 1) {
      return InvalidArgumentError(at + ".y: labels must be 1-D [N], got " +
                                  std::to_string(y->second.shape.size()) +
                                  " dims");
    }
    if (x->second.shape[0] != y->second.shape[0]) {
      return InvalidArgumentError(
          at + ".y: " + std::to_string(y->second.shape[0]) +
          " labels for the " + std::to_string(x->second.shape[0]) +
          " samples of " + at + ".x");
    }
    if (std::string(split) == "train") {
      *train_samples = held_out(x->second.shape[0]);
    }
  }
  return Status::Ok();
}

// `model` is the parsed model: mlp and cnn train on fashion_mnist (the
// default dataset for them), char_lstm and tiny_bert on text, torchscript
// on the user's files.
Status ParseDataset(Fields& top, const json& model,
                    const std::vector<std::string>* data_roots, json* out,
                    int64_t* train_samples) {
  const json* v = top.Get("dataset");
  MEGABATCH_RETURN_IF_ERROR(RequireObject(v, "dataset"));
  json empty = json::object();
  Fields f(v ? *v : empty, "dataset");
  const std::string type = model["type"];
  if (type == kTorchScriptModel) {
    return ParseDataFiles(f, data_roots, out, train_samples);
  }
  const std::string wanted(FindModel(type)->dataset);  // ParseModel knew it
  const bool text = wanted == "text";
  std::string name, path;
  MEGABATCH_RETURN_IF_ERROR(f.String("name", &name, wanted));
  if (name != "fashion_mnist" && name != "text") {
    return InvalidArgumentError("dataset.name: unknown dataset '" + name +
                                "'; supported: fashion_mnist, text");
  }
  if (name != wanted) {
    return InvalidArgumentError("dataset.name: model " + type + " trains on " +
                                wanted + ", not " + name);
  }
  std::error_code ec;
  if (text) {
    MEGABATCH_RETURN_IF_ERROR(
        f.String("path", &path, std::string(kDefaultTextCorpusPath)));
    if (data_roots != nullptr) {
      MEGABATCH_RETURN_IF_ERROR(CheckUnderDataRoot(path, *data_roots));
    }
    if (!std::filesystem::exists(path, ec)) {
      return InvalidArgumentError("dataset.path: no such file or directory: " +
                                  path);
    }
    double fraction;
    MEGABATCH_RETURN_IF_ERROR(f.Trial("validation_fraction", &fraction));
    MEGABATCH_RETURN_IF_ERROR(f.NoUnknown());
    *out = {{"name", name}, {"path", path}, {"validation_fraction", fraction}};
    // An upper bound (the trainer counts exactly and refuses a batch larger
    // than its training set): tokens and windows are at least a byte each.
    *train_samples = std::max<int64_t>(
        1, CorpusBytes(path) / model["seq_len"].get<int64_t>());
    return Status::Ok();
  }
  MEGABATCH_RETURN_IF_ERROR(
      f.String("path", &path, std::string(kDefaultFashionMnistPath)));
  if (data_roots != nullptr) {
    MEGABATCH_RETURN_IF_ERROR(CheckUnderDataRoot(path, *data_roots));
  }
  if (!std::filesystem::is_directory(path, ec)) {
    return InvalidArgumentError("dataset.path: no such directory: " + path);
  }
  for (const char* file :
       {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    if (!std::filesystem::exists(std::filesystem::path(path) / file, ec)) {
      return InvalidArgumentError("dataset.path: " + path + " has no " + file);
    }
  }
  MEGABATCH_RETURN_IF_ERROR(f.NoUnknown());
  *out = {{"name", name}, {"path", path}};
  *train_samples = kFashionMnistTrainImages;
  return Status::Ok();
}

Status ParseOptimizer(const json& v, const std::string& path,
                      OptimizerSpec* out) {
  MEGABATCH_RETURN_IF_ERROR(RequireObject(&v, path));
  Fields f(v, path);
  MEGABATCH_RETURN_IF_ERROR(f.String("name", &out->name));
  const OptimizerInfo* info = FindOptimizer(out->name);
  if (info == nullptr) {
    std::string known;
    for (const auto& o : kOptimizers) {
      known += (known.empty() ? "" : ", ") + std::string(o.name);
    }
    return InvalidArgumentError(path + ".name: unknown optimizer '" +
                                out->name + "'; supported: " + known);
  }
  if (f.Get("lr") != nullptr) {
    MEGABATCH_RETURN_IF_ERROR(f.Number("lr", &out->base_lr, {}, 0, true));
  }
  out->options = json::object();
  for (const OptimizerOption& opt : info->options) {
    if (opt.name.empty()) continue;
    std::string key(opt.name);
    std::string opt_path = f.Path(key);
    const json* given = f.Get(key);
    auto check_range = [&](double x) -> Status {
      bool ok = x >= opt.lo && (opt.hi_open ? x < opt.hi : x <= opt.hi);
      if (!ok) {
        std::ostringstream m;
        m << opt_path << ": must be in [" << opt.lo << ", " << opt.hi
          << (opt.hi_open ? ")" : "]") << ", got " << x;
        return InvalidArgumentError(m.str());
      }
      return Status::Ok();
    };
    switch (opt.kind) {
      case OptionKind::kBool: {
        bool b;
        MEGABATCH_RETURN_IF_ERROR(f.Bool(key, &b, opt.default_value != 0));
        out->options[key] = b;
        break;
      }
      case OptionKind::kNumber: {
        double x;
        MEGABATCH_RETURN_IF_ERROR(
            f.Number(key, &x, opt.default_value, -kInf, false));
        MEGABATCH_RETURN_IF_ERROR(check_range(x));
        out->options[key] = x;
        break;
      }
      case OptionKind::kPair: {
        json pair = {opt.default_value, opt.default_second};
        if (given != nullptr) {
          if (!given->is_array() || given->size() != 2) {
            return InvalidArgumentError(
                opt_path + ": must be a list of two numbers, got " +
                DescribeJson(*given));
          }
          for (int i = 0; i < 2; ++i) {
            double x;
            MEGABATCH_RETURN_IF_ERROR(Fields::NumberValue(
                (*given)[i], opt_path + "[" + std::to_string(i) + "]", &x,
                -kInf, false));
            MEGABATCH_RETURN_IF_ERROR(check_range(x));
            pair[i] = x;
          }
        }
        out->options[key] = pair;
        break;
      }
    }
  }
  return f.NoUnknown();
}

Status ParseSchedule(Fields& top, json* out) {
  const json* v = top.Get("schedule");
  MEGABATCH_RETURN_IF_ERROR(RequireObject(v, "schedule"));
  json empty = json::object();
  Fields f(v ? *v : empty, "schedule");
  *out = json::object();
  const json* we = f.Get("warmup_epochs");
  const json* ws = f.Get("warmup_steps");
  if (we && ws) {
    return InvalidArgumentError(
        "schedule: give warmup_epochs or warmup_steps, not both");
  }
  if (we) {
    double x;
    MEGABATCH_RETURN_IF_ERROR(f.Number("warmup_epochs", &x, {}, 0, false));
    (*out)["warmup_epochs"] = x;
  } else {
    int64_t steps;
    MEGABATCH_RETURN_IF_ERROR(
        f.Int("warmup_steps", &steps, 0, 0, int64_t{1} << 40));
    (*out)["warmup_steps"] = steps;
  }
  std::string decay;
  MEGABATCH_RETURN_IF_ERROR(f.Trial("decay", &decay));
  (*out)["decay"] = decay;
  double power;
  MEGABATCH_RETURN_IF_ERROR(f.Trial("power", &power));
  (*out)["power"] = power;
  std::string from;
  MEGABATCH_RETURN_IF_ERROR(f.Choice("warmup_from", &from, {"zero", "base"}));
  (*out)["warmup_from"] = from;
  return f.NoUnknown();
}

// `budget: {epochs|steps|samples: N}`, or `budget: {until_target: true,
// max_epochs|max_steps|max_samples: N}`: every trial runs until it reaches
// the target or the cap (docs/spec.md). The latter is stored as the cap
// with `*until_target` set; the caller makes the target stop its trials.
Status ParseBudget(Fields& top, json* out, bool* until_target) {
  *until_target = false;
  const json* v = top.Get("budget");
  MEGABATCH_RETURN_IF_ERROR(RequireObject(v, "budget"));
  if (v == nullptr) {
    *out = {{"epochs", 1.0}};
    return Status::Ok();
  }
  Fields f(*v, "budget");
  MEGABATCH_RETURN_IF_ERROR(f.Bool("until_target", until_target, false));
  const std::string prefix = *until_target ? "max_" : "";
  int given = 0;
  for (const char* key : {"epochs", "steps", "samples"})
    given += f.Get(prefix + key) != nullptr;
  if (given != 1) {
    return InvalidArgumentError(
        *until_target
            ? "budget: with until_target, give exactly one of max_epochs, "
              "max_steps or max_samples (the cap)"
            : "budget: give exactly one of epochs, steps or samples");
  }
  if (f.Get(prefix + "epochs")) {
    double epochs;
    MEGABATCH_RETURN_IF_ERROR(
        f.Number(prefix + "epochs", &epochs, {}, 0, true));
    if (epochs > kMaxEpochs) {
      return InvalidArgumentError(f.Path(prefix + "epochs") + ": at most " +
                                  std::to_string(kMaxEpochs) + ", got " +
                                  DescribeJson(*f.Get(prefix + "epochs")));
    }
    *out = {{"epochs", epochs}};
  } else {
    const std::string key = f.Get(prefix + "steps") ? "steps" : "samples";
    int64_t n;
    MEGABATCH_RETURN_IF_ERROR(f.Int(prefix + key, &n, {}, 1, int64_t{1} << 40));
    *out = {{key, n}};
  }
  return f.NoUnknown();
}

// A selection metric (targets, early stopping) the spec's model reports;
// the old names test_accuracy and test_loss mean the validation metrics.
Status SelectionMetricOf(Fields& f, const json& model, std::string* metric) {
  MEGABATCH_RETURN_IF_ERROR(
      f.String("metric", metric, std::string("val_accuracy")));
  *metric = std::string(CanonicalSelectionMetric(*metric));
  const SelectionMetric* m = FindSelectionMetric(*metric);
  if (m == nullptr) {
    return InvalidArgumentError(f.Path("metric") + ": unknown metric '" +
                                *metric +
                                "'; supported: " + SelectionMetricNames());
  }
  const std::string type = model["type"];
  if (!m->model.empty() && m->model != type) {
    return InvalidArgumentError(f.Path("metric") + ": " + *metric +
                                " is reported by model " +
                                std::string(m->model) + ", not " + type);
  }
  return Status::Ok();
}

Status ParseTarget(Fields& top, const json& model, json* out) {
  const json* v = top.Get("target");
  MEGABATCH_RETURN_IF_ERROR(RequireObject(v, "target"));
  if (v == nullptr) {
    *out = nullptr;
    return Status::Ok();
  }
  Fields f(*v, "target");
  if (f.Get("metric") == nullptr)
    return InvalidArgumentError("target.metric: required");
  std::string metric;
  MEGABATCH_RETURN_IF_ERROR(SelectionMetricOf(f, model, &metric));
  double value;
  MEGABATCH_RETURN_IF_ERROR(f.Number("value", &value, {}, -kInf, false));
  bool stop;
  MEGABATCH_RETURN_IF_ERROR(f.Bool("stop", &stop, false));
  *out = {{"metric", metric}, {"value", value}, {"stop", stop}};
  return f.NoUnknown();
}

Status ParseEarlyStopping(Fields& top, const json& model, json* out) {
  const json* v = top.Get("early_stopping");
  MEGABATCH_RETURN_IF_ERROR(RequireObject(v, "early_stopping"));
  if (v == nullptr) {
    *out = nullptr;
    return Status::Ok();
  }
  Fields f(*v, "early_stopping");
  std::string rule, metric;
  MEGABATCH_RETURN_IF_ERROR(f.Choice("rule", &rule, {"asha"}));
  MEGABATCH_RETURN_IF_ERROR(SelectionMetricOf(f, model, &metric));
  int64_t min_samples, reduction_factor;
  MEGABATCH_RETURN_IF_ERROR(
      f.Int("min_samples", &min_samples, std::nullopt, 1, int64_t{1} << 50));
  MEGABATCH_RETURN_IF_ERROR(
      f.Int("reduction_factor", &reduction_factor, 3, 2, 100));
  *out = {{"rule", rule},
          {"metric", metric},
          {"min_samples", min_samples},
          {"reduction_factor", reduction_factor}};
  return f.NoUnknown();
}

template <typename T, typename ParseOne>
Status ParseList(Fields& top, std::string_view key, std::vector<T>* out,
                 std::vector<T> fallback, ParseOne parse_one) {
  const json* v = top.Get(key);
  std::string path = top.Path(key);
  MEGABATCH_RETURN_IF_ERROR(RequireList(v, path));
  if (v == nullptr) {
    if (fallback.empty()) return InvalidArgumentError(path + ": required");
    *out = std::move(fallback);
    return Status::Ok();
  }
  out->clear();
  for (size_t i = 0; i < v->size(); ++i) {
    T x;
    std::string item_path = path + "[" + std::to_string(i) + "]";
    MEGABATCH_RETURN_IF_ERROR(parse_one((*v)[i], item_path, &x));
    if (std::find(out->begin(), out->end(), x) != out->end()) {
      return InvalidArgumentError(item_path +
                                  ": duplicate of an earlier entry");
    }
    out->push_back(std::move(x));
  }
  return Status::Ok();
}

// strategy: null (a grid) or an adaptive study's settings, defaults filled
// in. `train_samples` (0 when unknown) caps the batch sizes.
Status ParseStrategy(Fields& top, int64_t train_samples, json* out) {
  const json* v = top.Get("strategy");
  MEGABATCH_RETURN_IF_ERROR(RequireObject(v, "strategy"));
  if (v == nullptr) {
    *out = nullptr;
    return Status::Ok();
  }
  Fields f(*v, "strategy");
  std::string type;
  MEGABATCH_RETURN_IF_ERROR(f.Choice("type", &type, {"grid", "adaptive"}));
  if (type == "grid") {
    *out = nullptr;
    return f.NoUnknown();
  }
  const int64_t largest = train_samples > 0 ? train_samples : int64_t{1} << 30;
  int64_t max_batch = 0, batch_sizes = 0, lr_trials = 0, finish_lrs = 0;
  double search_fraction = 0, span = 0;
  MEGABATCH_RETURN_IF_ERROR(
      f.Int("max_batch_size", &max_batch, largest, 2, largest));
  MEGABATCH_RETURN_IF_ERROR(f.Int("batch_sizes", &batch_sizes, 6, 2, 16));
  MEGABATCH_RETURN_IF_ERROR(f.Int("lr_trials_per_batch", &lr_trials, 5, 3, 20));
  MEGABATCH_RETURN_IF_ERROR(
      f.Number("search_fraction", &search_fraction, 0.2, 0, true));
  MEGABATCH_RETURN_IF_ERROR(f.Int("finish_lrs", &finish_lrs, 2, 1, 5));
  MEGABATCH_RETURN_IF_ERROR(f.Number("span", &span, 16, 2, false));
  if (span > kMaxAdaptiveSpan) {
    return InvalidArgumentError("strategy.span: must be at most " +
                                std::to_string(kMaxAdaptiveSpan) + ", got " +
                                DescribeJson(*f.Get("span")));
  }
  if (search_fraction > 1) {
    return InvalidArgumentError(
        "strategy.search_fraction: must be at most 1, got " +
        DescribeJson(*f.Get("search_fraction")));
  }
  *out = {{"type", type},
          {"max_batch_size", max_batch},
          {"batch_sizes", batch_sizes},
          {"lr_trials_per_batch", lr_trials},
          {"search_fraction", search_fraction},
          {"finish_lrs", finish_lrs},
          {"span", span}};
  return f.NoUnknown();
}

}  // namespace

double ScaledLr(LrScaling scaling, double base_lr, int64_t base_batch_size,
                int64_t batch_size) {
  double ratio = static_cast<double>(batch_size) / base_batch_size;
  switch (scaling) {
    case LrScaling::kLinear:
      return base_lr * ratio;
    case LrScaling::kSqrt:
      return base_lr * std::sqrt(ratio);
    case LrScaling::kNone:
      break;
  }
  return base_lr;
}

Result<SweepSpec> SweepSpecFromJson(
    const json& doc, const std::vector<std::string>* data_roots) {
  if (!doc.is_object()) {
    return InvalidArgumentError("spec: must be a mapping of fields, got " +
                                DescribeJson(doc));
  }
  SweepSpec s;
  Fields top(doc, "");
  MEGABATCH_RETURN_IF_ERROR(top.String("name", &s.name));
  MEGABATCH_RETURN_IF_ERROR(ParseModel(top, &s.model));
  int64_t train_samples = 0;
  MEGABATCH_RETURN_IF_ERROR(
      ParseDataset(top, s.model, data_roots, &s.dataset, &train_samples));

  MEGABATCH_RETURN_IF_ERROR(ParseList<OptimizerSpec>(
      top, "optimizers", &s.optimizers, {},
      [](const json& v, const std::string& path, OptimizerSpec* o) {
        return ParseOptimizer(v, path, o);
      }));
  // Two entries of one optimizer with different options are a legitimate
  // comparison; the same name twice with the same options is a mistake, which
  // ParseList catches through OptimizerSpec's ==.
  s.train_samples = train_samples;
  MEGABATCH_RETURN_IF_ERROR(ParseStrategy(top, train_samples, &s.strategy));
  const bool adaptive = !s.strategy.is_null();
  MEGABATCH_RETURN_IF_ERROR(
      top.Choice("lr_edges", &s.lr_edges, {"off", "extend"}));
  int64_t lr_edges_max = 0;
  MEGABATCH_RETURN_IF_ERROR(top.Int("lr_edges_max", &lr_edges_max, 3, 1, 10));
  s.lr_edges_max = static_cast<int32_t>(lr_edges_max);
  if (adaptive) {
    // The planner places the batch sizes and the lrs.
    for (const char* key : {"batch_sizes", "lr_multipliers", "early_stopping",
                            "lr_edges", "lr_edges_max"}) {
      if (top.Get(key) != nullptr) {
        return InvalidArgumentError(
            std::string(key) +
            ": not with strategy adaptive, which chooses the batch "
            "sizes and lrs itself");
      }
    }
  } else {
    MEGABATCH_RETURN_IF_ERROR(ParseList<int64_t>(
        top, "batch_sizes", &s.batch_sizes, {},
        [&](const json& v, const std::string& path, int64_t* b) {
          MEGABATCH_RETURN_IF_ERROR(
              Fields::IntValue(v, path, b, 1, train_samples));
          return Status::Ok();
        }));
  }

  const json* base = nullptr;
  MEGABATCH_RETURN_IF_ERROR(top.Require("base", &base));
  MEGABATCH_RETURN_IF_ERROR(RequireObject(base, "base"));
  Fields bf(*base, "base");
  MEGABATCH_RETURN_IF_ERROR(bf.Number("lr", &s.base_lr, {}, 0, true));
  if (adaptive) {
    MEGABATCH_RETURN_IF_ERROR(
        bf.Int("batch_size", &s.base_batch_size, {}, 2,
               s.strategy["max_batch_size"].get<int64_t>() / 2));
  } else {
    int64_t smallest =
        *std::min_element(s.batch_sizes.begin(), s.batch_sizes.end());
    MEGABATCH_RETURN_IF_ERROR(
        bf.Int("batch_size", &s.base_batch_size, smallest, 1, INT64_MAX));
  }
  MEGABATCH_RETURN_IF_ERROR(bf.NoUnknown());

  std::string scaling;
  MEGABATCH_RETURN_IF_ERROR(
      top.String("lr_scaling", &scaling, std::string("none")));
  if (scaling == "linear") {
    s.lr_scaling = LrScaling::kLinear;
  } else if (scaling == "sqrt") {
    s.lr_scaling = LrScaling::kSqrt;
  } else if (scaling == "none") {
    s.lr_scaling = LrScaling::kNone;
  } else {
    return InvalidArgumentError("lr_scaling: unknown rule '" + scaling +
                                "'; supported: linear, sqrt, none");
  }
  MEGABATCH_RETURN_IF_ERROR(
      ParseList<double>(top, "lr_multipliers", &s.lr_multipliers, {1.0},
                        [](const json& v, const std::string& path, double* m) {
                          return Fields::NumberValue(v, path, m, 0, true);
                        }));
  MEGABATCH_RETURN_IF_ERROR(ParseSchedule(top, &s.schedule));
  MEGABATCH_RETURN_IF_ERROR(
      top.Int("micro_batch_size", &s.micro_batch_size, 0, 1, train_samples));
  int64_t ranks = 1;
  MEGABATCH_RETURN_IF_ERROR(
      top.Int("ranks_per_trial", &ranks, 1, 1, kMaxRanksPerTrial));
  s.ranks_per_trial = static_cast<int32_t>(ranks);
  for (int64_t b : s.batch_sizes) {
    // Each rank takes b / ranks of every batch, in micro-batches.
    if (b % ranks != 0) {
      return InvalidArgumentError("ranks_per_trial: batch size " +
                                  std::to_string(b) + " is not a multiple of " +
                                  std::to_string(ranks));
    }
    const int64_t local = b / ranks;
    if (s.micro_batch_size > 0 && local > s.micro_batch_size &&
        local % s.micro_batch_size != 0) {
      return InvalidArgumentError(
          "micro_batch_size: batch size " + std::to_string(b) +
          (ranks > 1 ? " / " + std::to_string(ranks) + " ranks"
                     : std::string()) +
          " is not a multiple of " + std::to_string(s.micro_batch_size));
    }
  }
  bool until_target = false;
  MEGABATCH_RETURN_IF_ERROR(ParseBudget(top, &s.budget, &until_target));
  MEGABATCH_RETURN_IF_ERROR(ParseTarget(top, s.model, &s.target));
  if (until_target) {
    if (s.target.is_null()) {
      return InvalidArgumentError(
          "budget.until_target: needs a target (target: {metric, value})");
    }
    s.target["stop"] = true;
  }

  MEGABATCH_RETURN_IF_ERROR(
      ParseEarlyStopping(top, s.model, &s.early_stopping));
  // A torchscript classifier logs no language-model metric.
  if (s.model["type"] == kTorchScriptModel &&
      s.dataset.value("kind", "") != "language_model") {
    for (const auto& [field, rule] :
         {std::pair<const char*, const json*>{"target", &s.target},
          {"early_stopping", &s.early_stopping}}) {
      const std::string metric =
          rule->is_object() ? rule->value("metric", "") : "";
      if (metric == metric::kValPerplexity ||
          metric == metric::kValBitsPerToken) {
        return InvalidArgumentError(
            std::string(field) + ".metric: " + metric +
            " is logged for dataset.kind language_model, not " +
            s.dataset.value("kind", "classification"));
      }
    }
  }
  MEGABATCH_RETURN_IF_ERROR(
      top.Int("eval_every_steps", &s.eval_every_steps, 0, 0, int64_t{1} << 40));
  MEGABATCH_RETURN_IF_ERROR(top.Int("eval_every_samples", &s.eval_every_samples,
                                    0, 0, int64_t{1} << 50));
  if (s.eval_every_steps > 0 && s.eval_every_samples > 0) {
    return InvalidArgumentError(
        "eval_every_samples: give it or eval_every_steps, not both");
  }
  MEGABATCH_RETURN_IF_ERROR(top.Trial("noise_scale", &s.noise_scale));
  for (int64_t b : s.batch_sizes) {
    // A step of one micro-batch on one rank is measured by its two halves.
    const bool one_part =
        ranks == 1 && (s.micro_batch_size == 0 || s.micro_batch_size >= b);
    if (s.noise_scale == "always" && one_part && b % 2 != 0) {
      return InvalidArgumentError("noise_scale: always measures batch size " +
                                  std::to_string(b) +
                                  " by its two halves, so it must be even");
    }
  }
  MEGABATCH_RETURN_IF_ERROR(top.Int("checkpoint_every_steps",
                                    &s.checkpoint_every_steps, 0, 0,
                                    int64_t{1} << 40));
  MEGABATCH_RETURN_IF_ERROR(top.Int("diagnostics_every_steps",
                                    &s.diagnostics_every_steps, 0, 0,
                                    int64_t{1} << 40));
  MEGABATCH_RETURN_IF_ERROR(
      top.Trial("divergence_factor", &s.divergence_factor));
  MEGABATCH_RETURN_IF_ERROR(top.Trial("device", &s.device));
  MEGABATCH_RETURN_IF_ERROR(top.Trial("precision", &s.precision));
  if (s.precision != "fp32" && s.device == "cpu") {
    return InvalidArgumentError("precision: " + s.precision +
                                " autocast needs device cuda or auto");
  }
  MEGABATCH_RETURN_IF_ERROR(ParseList<int64_t>(
      top, "seeds", &s.seeds, {0},
      [](const json& v, const std::string& path, int64_t* seed) {
        return Fields::IntValue(v, path, seed, 0, INT32_MAX);
      }));
  int64_t n;
  MEGABATCH_RETURN_IF_ERROR(top.Int("max_parallel", &n, 0, 0, 100000));
  s.max_parallel = static_cast<int32_t>(n);
  MEGABATCH_RETURN_IF_ERROR(top.Int("max_retries", &n, 2, 0, 100));
  s.max_retries = static_cast<int32_t>(n);
  MEGABATCH_RETURN_IF_ERROR(top.Int("priority", &n, 0, -1000000, 1000000));
  s.priority = static_cast<int32_t>(n);
  MEGABATCH_RETURN_IF_ERROR(top.NoUnknown());
  if (adaptive) {
    // Search trials run a fraction of the budget's samples, and steps to
    // target are compared at the same samples for every batch size.
    if (!s.budget.contains("epochs") && !s.budget.contains("samples")) {
      return InvalidArgumentError(
          "budget: strategy adaptive needs a budget in epochs or samples (the "
          "same data at "
          "every batch size), not steps");
    }
    if (s.budget.contains("epochs") && s.train_samples == 0) {
      return InvalidArgumentError(
          "budget: strategy adaptive needs a budget in samples for this "
          "dataset");
    }
    if (s.target.is_null()) {
      return InvalidArgumentError(
          "target: required by strategy adaptive (its lrs are ranked and its "
          "critical batch "
          "size fitted by steps to target)");
    }
    if (s.base_batch_size % 2 != 0) {
      return InvalidArgumentError(
          "base.batch_size: strategy adaptive measures the noise "
          "scale by halves of the base batch, so it must be even");
    }
    // The planner's batch sizes are multiples of ranks x micro-batch; the
    // base must split the same way.
    const int64_t local = s.base_batch_size / s.ranks_per_trial;
    if (s.base_batch_size % s.ranks_per_trial != 0 ||
        (s.micro_batch_size > 0 && local > s.micro_batch_size &&
         local % s.micro_batch_size != 0)) {
      return InvalidArgumentError(
          "base.batch_size: " + std::to_string(s.base_batch_size) +
          " does not split into ranks_per_trial x micro_batch_size");
    }
  }

  int64_t trials = static_cast<int64_t>(s.optimizers.size()) *
                   s.batch_sizes.size() * s.lr_multipliers.size() *
                   s.seeds.size();
  if (trials > kMaxTrialsPerSweep) {
    return InvalidArgumentError(
        "spec: expands to " + std::to_string(trials) + " trials; at most " +
        std::to_string(kMaxTrialsPerSweep) + " per sweep");
  }
  return s;
}

namespace {

// The offset of the first byte that is not part of well-formed UTF-8 (no
// overlong forms, surrogates or code points past U+10FFFF); npos if none.
size_t InvalidUtf8At(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    int extra = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      extra = 1;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      extra = 2;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (i + static_cast<size_t>(extra) >= text.size()) return i;
    for (int k = 1; k <= extra; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3f);
    }
    const uint32_t min[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return i;
    i += extra + 1;
  }
  return std::string_view::npos;
}

// OK when every string and key in `v` is UTF-8; YAML escapes such as "\x80"
// can make raw bytes out of UTF-8 text. Names the first offending path.
Status CheckStringsAreUtf8(const json& v, const std::string& path) {
  if (v.is_string()) {
    if (InvalidUtf8At(v.get_ref<const std::string&>()) !=
        std::string_view::npos) {
      return InvalidArgumentError((path.empty() ? "spec" : path) +
                                  ": not UTF-8 text");
    }
  } else if (v.is_object()) {
    for (const auto& [key, value] : v.items()) {
      if (InvalidUtf8At(key) != std::string_view::npos) {
        return InvalidArgumentError((path.empty() ? "spec" : path) +
                                    ": a key is not UTF-8 text");
      }
      MEGABATCH_RETURN_IF_ERROR(
          CheckStringsAreUtf8(value, path.empty() ? key : path + "." + key));
    }
  } else if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) {
      MEGABATCH_RETURN_IF_ERROR(
          CheckStringsAreUtf8(v[i], path + "[" + std::to_string(i) + "]"));
    }
  }
  return Status();
}

Status TooDeep(const std::string& where) {
  return InvalidArgumentError("spec: nested deeper than " +
                              std::to_string(kMaxSpecDepth) +
                              " lists and mappings (" + where + ")");
}

// OK when JSON text nests arrays and objects at most kMaxSpecDepth deep
// (strings skipped). Counted on the text so that neither the parser nor any
// walk of the parsed tree recurses deeper.
Status CheckJsonDepth(std::string_view text) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxSpecDepth) {
        return TooDeep("byte " + std::to_string(i));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return Status();
}

// Reads the first YAML document as events, before it is loaded into nodes:
// refuses aliases (a spec needs none, and ten aliases a level expand to
// 10^levels nodes when converted) and nesting past kMaxSpecDepth.
class YamlGuard : public YAML::EventHandler {
 public:
  Status status() const { return status_; }

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    Fail(InvalidArgumentError("spec: YAML aliases (*name) are not allowed (" +
                              Where(mark) + ")"));
  }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark& mark, const std::string&,
                       YAML::anchor_t, YAML::EmitterStyle::value) override {
    Enter(mark);
  }
  void OnSequenceEnd() override { --depth_; }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    Enter(mark);
  }
  void OnMapEnd() override { --depth_; }

 private:
  static std::string Where(const YAML::Mark& mark) {
    return "line " + std::to_string(mark.line + 1) + ", column " +
           std::to_string(mark.column + 1);
  }
  void Enter(const YAML::Mark& mark) {
    if (++depth_ > kMaxSpecDepth) Fail(TooDeep(Where(mark)));
  }
  void Fail(Status s) {
    if (status_.ok()) status_ = std::move(s);
  }

  int depth_ = 0;
  Status status_;
};

Status MalformedYaml(const YAML::Exception& e) {
  return InvalidArgumentError("spec: malformed YAML at line " +
                              std::to_string(e.mark.line + 1) + ", column " +
                              std::to_string(e.mark.column + 1) + ": " + e.msg);
}

}  // namespace

Result<json> SpecTextToJson(std::string_view text, SpecFormat format) {
  if (text.size() > kMaxSpecBytes) {
    return InvalidArgumentError("spec: " + std::to_string(text.size()) +
                                " bytes; at most " +
                                std::to_string(kMaxSpecBytes));
  }
  if (size_t bad = InvalidUtf8At(text); bad != std::string_view::npos) {
    return InvalidArgumentError("spec: not UTF-8 text (byte " +
                                std::to_string(bad) + ")");
  }
  if (format == SpecFormat::kAuto) {
    size_t first = text.find_first_not_of(" \t\r\n");
    format = (first != std::string_view::npos && text[first] == '{')
                 ? SpecFormat::kJson
                 : SpecFormat::kYaml;
  }
  json doc;
  if (format == SpecFormat::kJson) {
    MEGABATCH_RETURN_IF_ERROR(CheckJsonDepth(text));
    try {
      doc = json::parse(text);
    } catch (const json::parse_error& e) {
      return InvalidArgumentError(std::string("spec: malformed JSON: ") +
                                  e.what());
    }
  } else {
    const std::string yaml(text);
    YamlGuard guard;
    try {
      std::istringstream in(yaml);
      YAML::Parser parser(in);
      parser.HandleNextDocument(guard);
      MEGABATCH_RETURN_IF_ERROR(guard.status());
      doc = YamlToJson(YAML::Load(yaml));
    } catch (const YAML::Exception& e) {
      // What the guard found first (yaml-cpp's own depth limit throws too).
      MEGABATCH_RETURN_IF_ERROR(guard.status());
      return MalformedYaml(e);
    }
  }
  MEGABATCH_RETURN_IF_ERROR(CheckStringsAreUtf8(doc, ""));
  return doc;
}

Result<SweepSpec> ParseSweepSpec(std::string_view text, SpecFormat format,
                                 const std::vector<std::string>* data_roots) {
  MEGABATCH_ASSIGN_OR_RETURN(json doc, SpecTextToJson(text, format));
  return SweepSpecFromJson(doc, data_roots);
}

json SweepSpec::ToJson() const {
  json optimizers_json = json::array();
  for (const auto& o : optimizers) {
    json entry = o.options;
    entry["name"] = o.name;
    if (o.base_lr > 0) entry["lr"] = o.base_lr;
    optimizers_json.push_back(entry);
  }
  const char* scaling = lr_scaling == LrScaling::kLinear ? "linear"
                        : lr_scaling == LrScaling::kSqrt ? "sqrt"
                                                         : "none";
  json out = {{"name", name},
              {"model", model},
              {"dataset", dataset},
              {"optimizers", optimizers_json},
              {"batch_sizes", batch_sizes},
              {"base", {{"batch_size", base_batch_size}, {"lr", base_lr}}},
              {"lr_scaling", scaling},
              {"lr_multipliers", lr_multipliers},
              {"schedule", schedule},
              {"budget", budget},
              {"eval_every_steps", eval_every_steps},
              {"eval_every_samples", eval_every_samples},
              {"noise_scale", noise_scale},
              {"checkpoint_every_steps", checkpoint_every_steps},
              {"diagnostics_every_steps", diagnostics_every_steps},
              {"divergence_factor", divergence_factor},
              {"device", device},
              {"precision", precision},
              {"seeds", seeds},
              {"max_parallel", max_parallel},
              {"ranks_per_trial", ranks_per_trial},
              {"max_retries", max_retries},
              {"priority", priority}};
  if (micro_batch_size > 0) out["micro_batch_size"] = micro_batch_size;
  if (!target.is_null()) out["target"] = target;
  if (!early_stopping.is_null()) out["early_stopping"] = early_stopping;
  if (lr_edges != "off") {
    out["lr_edges"] = lr_edges;
    out["lr_edges_max"] = lr_edges_max;
  }
  if (!strategy.is_null()) {
    out["strategy"] = strategy;
    out.erase("batch_sizes");
    out.erase("lr_multipliers");
  }
  return out;
}

TrialSpec MakeTrial(const SweepSpec& spec, const OptimizerSpec& opt, int64_t b,
                    double lr, double mult, int64_t seed, int32_t index,
                    const json& budget) {
  const double base_lr = opt.base_lr > 0 ? opt.base_lr : spec.base_lr;
  TrialSpec t;
  t.index = index;
  t.optimizer = opt.name;
  t.batch_size = b;
  t.lr_multiplier = mult;
  t.lr = lr;
  t.seed = seed;
  t.ranks = spec.ranks_per_trial;
  const int64_t local = b / spec.ranks_per_trial;
  json optimizer = opt.options;
  optimizer["name"] = opt.name;
  // warmup_from: base rises from the unscaled lr (Goyal et al. 2017), never
  // above the peak.
  json schedule = spec.schedule;
  if (schedule.value("warmup_from", "zero") == "base") {
    schedule["warmup_start_lr"] = std::min(base_lr * mult, t.lr);
  }
  schedule.erase("warmup_from");
  t.config = {{"seed", seed},
              {"model", spec.model},
              {"dataset", spec.dataset},
              {"optimizer", optimizer},
              {"batch_size", b},
              {"micro_batch_size", spec.micro_batch_size > 0
                                       ? std::min(spec.micro_batch_size, local)
                                       : local},
              {"lr", t.lr},
              {"schedule", schedule},
              {"budget", budget.is_null() ? spec.budget : budget},
              {"eval_every_steps", spec.eval_every_steps},
              {"eval_every_samples", spec.eval_every_samples},
              {"noise_scale", spec.noise_scale},
              {"checkpoint_every_steps", spec.checkpoint_every_steps},
              {"diagnostics_every_steps", spec.diagnostics_every_steps},
              {"divergence_factor", spec.divergence_factor},
              {"device", spec.device},
              {"precision", spec.precision}};
  if (!spec.target.is_null()) t.config["target"] = spec.target;
  return t;
}

int64_t EstimateParameters(const json& model) {
  // Saturates instead of overflowing: any sum past 2^62 is "too many".
  static constexpr int64_t kHuge = int64_t{1} << 62;
  auto mul = [](int64_t a, int64_t b) {
    return a != 0 && b > kHuge / a ? kHuge : a * b;
  };
  auto add = [](int64_t a, int64_t b) { return std::min(kHuge, a + b); };
  auto linear = [&](int64_t in, int64_t out) { return add(mul(in, out), out); };
  const std::string type = model.value("type", "");
  auto get = [&](const char* name) { return model.value(name, int64_t{0}); };
  int64_t n = 0;
  // A torchscript module's weights, if they are float32 (its file holds
  // little else).
  if (type == kTorchScriptModel) return get("bytes") / 4;
  if (type == "mlp" || type == "cnn") {
    constexpr int64_t kPixels = 28 * 28, kClasses = 10;
    int64_t in = kPixels, side = 28, channels = 1;
    if (type == "cnn") {
      for (int64_t out : model.value("channels", std::vector<int64_t>{})) {
        n = add(n, add(mul(9 * channels, out), 2 * out));  // conv, batch norm
        channels = out;
        side /= 2;
      }
      in = mul(channels, side * side);
    }
    for (int64_t width : model.value("hidden", std::vector<int64_t>{})) {
      n = add(n, linear(in, width));
      in = width;
    }
    return add(n, linear(in, kClasses));
  }
  const int64_t hidden = get("hidden"), layers = get("layers");
  if (type == "char_lstm") {
    constexpr int64_t kBytes = 256;
    const int64_t embedding = get("embedding");
    n = mul(kBytes, embedding);
    for (int64_t l = 0; l < layers; ++l) {
      const int64_t in = l == 0 ? embedding : hidden;
      n = add(n, mul(4 * hidden, add(add(in, hidden), 2)));
    }
    return add(n, linear(hidden, kBytes));
  }
  if (type == "tiny_bert") {
    const int64_t vocab = get("vocab_size"), ffn = get("ffn");
    const bool bias = model.value("bias", true);
    auto dense = [&](int64_t in, int64_t out) {
      return bias ? linear(in, out) : mul(in, out);
    };
    const int64_t norm = 2 * hidden;
    // Token and position embeddings, their norm and the final norm.
    n = add(add(mul(vocab, hidden), mul(get("seq_len"), hidden)), 2 * norm);
    const int64_t block =
        add(add(dense(hidden, mul(3, hidden)), dense(hidden, hidden)),
            add(add(dense(hidden, ffn), dense(ffn, hidden)), 2 * norm));
    // The output is tied to the token embedding; it has its own bias.
    return add(add(n, mul(layers, block)), bias ? vocab : 0);
  }
  return 0;
}

Status CheckTrialConfigs(const std::vector<TrialSpec>& trials) {
  for (const TrialSpec& t : trials) {
    // As a worker hands it over: with its own fields and, for a
    // data-parallel trial, a rendezvous.
    json runnable = t.config;
    SetWorkerFields(&runnable, 1, "checkpoint.pt");
    if (t.ranks > 1) {
      Rendezvous r;
      r.world_size = t.ranks;
      r.host = "127.0.0.1";
      r.port = 1;
      SetRendezvous(&runnable, r);
    }
    Result<TrialConfig> config = ParseTrialConfig(runnable);
    if (!config.ok()) {
      return InvalidArgumentError(
          "trial " + std::to_string(t.index) + " (" + t.optimizer + ", batch " +
          std::to_string(t.batch_size) + "): " + config.status().message());
    }
  }
  return Status::Ok();
}

std::vector<TrialSpec> ExpandSweep(const SweepSpec& spec) {
  std::vector<TrialSpec> trials;
  int32_t index = 0;
  for (const auto& opt : spec.optimizers) {
    const double base_lr = opt.base_lr > 0 ? opt.base_lr : spec.base_lr;
    for (int64_t b : spec.batch_sizes) {
      const double scaled =
          ScaledLr(spec.lr_scaling, base_lr, spec.base_batch_size, b);
      for (double mult : spec.lr_multipliers) {
        for (int64_t seed : spec.seeds) {
          trials.push_back(
              MakeTrial(spec, opt, b, scaled * mult, mult, seed, index++));
        }
      }
    }
  }
  return trials;
}

}  // namespace megabatch::spec
