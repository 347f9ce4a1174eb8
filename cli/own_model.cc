#include "cli/own_model.h"

#include "common/model_catalog.h"
#include "common/sha256.h"
#include "worker/trainer/data/npy.h"

namespace megabatch::cli {
namespace {

using nlohmann::json;
using trainer::NpyArray;

std::string Absolute(const std::string& path,
                     const std::filesystem::path& base) {
  std::filesystem::path p(path);
  if (p.is_relative()) p = base / p;
  return p.lexically_normal().string();
}

// Checks one classification split's x and y from their headers and
// contents (trainer::CheckLabeledSplit, as the trainer will), and records
// their dtype and shape.
Status RecordLabeledSplit(const std::string& at, const std::string& x_path,
                          const std::string& y_path, json* files) {
  MEGABATCH_ASSIGN_OR_RETURN(NpyArray x, NpyArray::Open(x_path, at + ".x"));
  MEGABATCH_ASSIGN_OR_RETURN(NpyArray y, NpyArray::Open(y_path, at + ".y"));
  MEGABATCH_RETURN_IF_ERROR(
      trainer::CheckLabeledSplit(at, x, x_path, y, y_path));
  for (const NpyArray* a : {&x, &y}) {
    json& record = (*files)[a == &x ? x_path : y_path];
    record["dtype"] = std::string(trainer::NpyTypeName(a->type()));
    record["shape"] = a->shape();
  }
  return Status();
}

}  // namespace

bool IsOwnModelSpec(const json& spec) {
  const auto model = spec.find("model");
  return spec.is_object() && model != spec.end() && model->is_object() &&
         model->value("type", "") == kTorchScriptModel;
}

Result<json> PrepareOwnModelSpec(json spec, const std::filesystem::path& base,
                                 const UploadModelFn& upload) {
  json& model = spec["model"];
  const auto model_path = model.find("path");
  if (model_path == model.end() || !model_path->is_string()) {
    return InvalidArgumentError(
        "model.path: required: the module file saved with torch.jit.save");
  }
  const std::string module = Absolute(*model_path, base);
  MEGABATCH_ASSIGN_OR_RETURN(UploadedModel uploaded, upload(module));
  model["path"] = module;
  model["sha256"] = uploaded.sha256;
  model["bytes"] = uploaded.bytes;

  json& dataset = spec["dataset"];
  if (!dataset.is_object())
    return spec;  // the coordinator says what is missing
  json files = json::object();
  const bool lm = dataset.value("kind", "") == "language_model";
  const std::string dtype = dataset.value("dtype", "uint16");
  const int64_t seq_len = dataset.value("seq_len", int64_t{0});
  for (const char* split : {"train", "val", "test"}) {
    auto s = dataset.find(split);
    if (s == dataset.end() || !s->is_object()) continue;
    const std::string at = std::string("dataset.") + split;
    for (auto& [key, value] : s->items()) {
      if (!value.is_string()) continue;
      const std::string path = Absolute(value.get<std::string>(), base);
      value = path;
      auto digest = Sha256File(path);
      if (!digest.ok()) {
        return Status(digest.status().code(),
                      at + "." + key + ": " + digest.status().message());
      }
      files[path] = {{"bytes", digest->bytes}, {"sha256", digest->sha256}};
      if (key == "tokens" && lm) {
        const int64_t item = dtype == "uint32" ? 4 : 2;
        if (digest->bytes % item != 0) {
          return InvalidArgumentError(at + ".tokens: " + path + ": " +
                                      std::to_string(digest->bytes) +
                                      " bytes is not a whole number of " +
                                      dtype + " tokens (dataset.dtype)");
        }
        if (seq_len > 0 && digest->bytes / item < seq_len + 1 &&
            !(std::string(split) == "train" &&
              dataset.contains("val_fraction"))) {
          return InvalidArgumentError(
              at + ".tokens: " + path + ": " +
              std::to_string(digest->bytes / item) +
              " tokens is shorter than one window of dataset.seq_len + 1 = " +
              std::to_string(seq_len + 1));
        }
      }
    }
    if (!lm && s->contains("x") && s->contains("y") && (*s)["x"].is_string() &&
        (*s)["y"].is_string()) {
      MEGABATCH_RETURN_IF_ERROR(
          RecordLabeledSplit(at, (*s)["x"], (*s)["y"], &files));
    }
  }
  dataset["files"] = files;
  return spec;
}

}  // namespace megabatch::cli
