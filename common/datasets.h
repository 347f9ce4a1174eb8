// Sizes and places of the datasets megabatch ships support for, shared by
// the coordinator (spec validation), the worker and the trainer.
// Header-only.
#ifndef MEGABATCH_COMMON_DATASETS_H_
#define MEGABATCH_COMMON_DATASETS_H_

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace megabatch {

// Fashion-MNIST's training file holds 60,000 images. The last 5,000 of them
// (indices 55,000..59,999 in file order, the same on every machine) are the
// validation split every selection reads; the first 55,000 are trained on.
// The 10,000 test images are evaluated once, when a trial ends
// (docs/method.md, "Validation and test").
inline constexpr int64_t kFashionMnistFileImages = 60000;
inline constexpr int64_t kFashionMnistValidationImages = 5000;
inline constexpr int64_t kFashionMnistTrainImages =
    kFashionMnistFileImages - kFashionMnistValidationImages;

// Where each dataset is read from when a spec names no dataset.path:
// Debian's dataset-fashion-mnist and fortunes.
inline constexpr const char* kDefaultFashionMnistPath =
    "/usr/share/datasets/fashion-mnist";
inline constexpr const char* kDefaultTextCorpusPath =
    "/usr/share/games/fortunes";
inline constexpr const char* DefaultDatasetPath(std::string_view name) {
  return name == "text" ? kDefaultTextCorpusPath : kDefaultFashionMnistPath;
}

// Where the trainer caches derived data (decoded images, tokenizers, token
// ids): $MEGABATCH_CACHE_DIR, else $XDG_CACHE_HOME/megabatch, else
// ~/.cache/megabatch.
inline std::string DefaultCacheDir() {
  namespace fs = std::filesystem;
  if (const char* dir = std::getenv("MEGABATCH_CACHE_DIR"); dir && *dir) {
    return dir;
  }
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    return (fs::path(xdg) / "megabatch").string();
  }
  if (const char* home = std::getenv("HOME"); home && *home) {
    return (fs::path(home) / ".cache" / "megabatch").string();
  }
  return "/tmp/megabatch-cache";
}

// The directories of the data megabatch ships support for (Debian's
// dataset-fashion-mnist and fortunes): the default --data-root of
// coordinators (which look only there at a spec's dataset.path) and of
// workers (which read only there).
inline std::vector<std::string> DefaultDataRoots() {
  return {"/usr/share/datasets", "/usr/share/games/fortunes"};
}

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_DATASETS_H_
