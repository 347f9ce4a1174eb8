#include "cli/own_model.h"

#include <cmath>
#include <cstring>
#include <map>

#include "common/model_catalog.h"
#include "common/sha256.h"
#include "worker/trainer/data/npy.h"

namespace megabatch::cli {
namespace {

using nlohmann::json;
using trainer::NpyArray;
using trainer::NpyType;

std::string Absolute(const std::string& path,
                     const std::filesystem::path& base) {
  std::filesystem::path p(path);
  if (p.is_relative()) p = base / p;
  return p.lexically_normal().string();
}

bool IsInput(NpyType t) {
  return t == NpyType::kFloat32 || t == NpyType::kFloat16 ||
         t == NpyType::kUInt8;
}

// The first element of a float array that is NaN or infinite, or -1.
int64_t FirstNonFinite(const NpyArray& a) {
  const size_t n = a.data_bytes() / trainer::NpyTypeSize(a.type());
  if (a.type() == NpyType::kFloat32) {
    const auto* v = static_cast<const float*>(a.data());
    for (size_t i = 0; i < n; ++i) {
      if (!std::isfinite(v[i])) return static_cast<int64_t>(i);
    }
  } else if (a.type() == NpyType::kFloat16) {
    const auto* v = static_cast<const uint16_t*>(a.data());
    for (size_t i = 0; i < n; ++i) {
      if ((v[i] & 0x7c00) == 0x7c00) return static_cast<int64_t>(i);
    }
  }
  return -1;
}

// The smallest label of an int64 or int32 array.
int64_t MinLabel(const NpyArray& a) {
  int64_t low = 0;
  const size_t n = a.data_bytes() / trainer::NpyTypeSize(a.type());
  for (size_t i = 0; i < n; ++i) {
    const int64_t v = a.type() == NpyType::kInt64
                          ? static_cast<const int64_t*>(a.data())[i]
                          : static_cast<const int32_t*>(a.data())[i];
    low = std::min(low, v);
  }
  return low;
}

// Checks one classification split's x and y from their headers and
// contents, and records their dtype and shape.
Status CheckLabeledSplit(const std::string& at, const std::string& x_path,
                         const std::string& y_path, json* files) {
  MEGABATCH_ASSIGN_OR_RETURN(NpyArray x, NpyArray::Open(x_path, at + ".x"));
  MEGABATCH_ASSIGN_OR_RETURN(NpyArray y, NpyArray::Open(y_path, at + ".y"));
  const std::string xf = at + ".x: " + x_path + ": ";
  const std::string yf = at + ".y: " + y_path + ": ";
  if (!IsInput(x.type())) {
    return InvalidArgumentError(xf + "dtype " +
                                std::string(trainer::NpyTypeName(x.type())) +
                                "; inputs must be float32, float16 or uint8");
  }
  if (y.type() != NpyType::kInt64 && y.type() != NpyType::kInt32) {
    return InvalidArgumentError(
        yf + "dtype " + std::string(trainer::NpyTypeName(y.type())) +
        "; labels must be int64 or int32 class indices");
  }
  if (y.shape().size() != 1) {
    return InvalidArgumentError(yf + "labels must be 1-D [N]");
  }
  if (x.shape().empty() || x.rows() != y.rows()) {
    return InvalidArgumentError(
        yf + std::to_string(y.rows()) + " labels for the " +
        std::to_string(x.shape().empty() ? 0 : x.rows()) + " samples of " + at +
        ".x");
  }
  if (const int64_t bad = FirstNonFinite(x); bad >= 0) {
    return InvalidArgumentError(xf + "sample " +
                                std::to_string(bad / x.row_elements()) +
                                " holds NaN or infinity");
  }
  if (const int64_t low = MinLabel(y); low < 0) {
    return InvalidArgumentError(yf + "label " + std::to_string(low) +
                                " is negative; labels are class indices");
  }
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
          CheckLabeledSplit(at, (*s)["x"], (*s)["y"], &files));
    }
  }
  dataset["files"] = files;
  return spec;
}

}  // namespace megabatch::cli
