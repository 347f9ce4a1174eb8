// The models a sweep may name, with every option's default and valid range.
// One table serves the coordinator (spec validation, defaults written into
// the stored spec) and the trainer (reading a trial's config), so the two
// can never disagree — as common/optimizer_catalog.h does for optimizers.
// Header-only and dependency-free.
#ifndef MEGABATCH_COMMON_MODEL_CATALOG_H_
#define MEGABATCH_COMMON_MODEL_CATALOG_H_

#include <array>
#include <cstdint>
#include <string_view>

namespace megabatch {

// One integer option of a text model.
struct ModelIntOption {
  std::string_view name;
  int64_t default_value;  // 0 with default_per_hidden: that many times `hidden`
  int64_t lo;
  int64_t hi;
  int64_t default_per_hidden;
};

// A list of layer widths (mlp, cnn).
struct ModelWidthList {
  std::string_view name;
  size_t max_entries;
  std::array<int64_t, 2> default_widths;  // 0 entries unused
};

struct ModelInfo {
  std::string_view name;
  // "fashion_mnist" or "text"; "files" for torchscript, which trains on
  // the user's own data files (dataset.kind).
  std::string_view dataset;
  std::array<ModelWidthList, 2> lists;  // unused entries have an empty name
  std::array<ModelIntOption, 7> ints;   // unused entries have an empty name
  bool has_bias = false;                // a bool option "bias", default true
};

inline constexpr int64_t kMaxWidth = 65536;

inline constexpr std::string_view kTorchScriptModel = "torchscript";

inline constexpr std::array<ModelInfo, 5> kModels = {{
    {"mlp", "fashion_mnist", {{{"hidden", 64, {512, 512}}}}, {}, false},
    // Each conv stage halves the 28x28 image: at most 4 stages.
    {"cnn",
     "fashion_mnist",
     {{{"channels", 4, {32, 64}}, {"hidden", 64, {128, 0}}}},
     {},
     false},
    {"char_lstm",
     "text",
     {},
     {{{"hidden", 256, 1, kMaxWidth, 0},
       {"layers", 1, 1, 64, 0},
       {"seq_len", 128, 2, kMaxWidth, 0},
       {"embedding", 64, 1, kMaxWidth, 0}}},
     false},
    {"tiny_bert",
     "text",
     {},
     {{{"hidden", 128, 1, kMaxWidth, 0},
       {"layers", 2, 1, 64, 0},
       {"seq_len", 128, 2, kMaxWidth, 0},
       {"heads", 2, 1, 1024, 0},
       {"ffn", 0, 1, int64_t{1} << 20, 4},
       {"vocab_size", 2048, 300, int64_t{1} << 20, 0}}},
     true},
    // The user's own module (docs/models.md): its options are strings
    // (model.path, model.sha256; common/trial_config.h), not in this table.
    {kTorchScriptModel, "files", {}, {}, false},
}};

inline constexpr std::string_view kModelNames =
    "mlp, cnn, char_lstm, tiny_bert, torchscript";

// nullptr for an unknown name.
constexpr const ModelInfo* FindModel(std::string_view name) {
  for (const ModelInfo& m : kModels) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

// An option's default given the model's hidden width.
constexpr int64_t DefaultOf(const ModelIntOption& o, int64_t hidden) {
  return o.default_per_hidden > 0 ? o.default_per_hidden * hidden
                                  : o.default_value;
}

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_MODEL_CATALOG_H_
