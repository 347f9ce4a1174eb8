// Sizes and places of the datasets megabatch ships support for, shared by
// the coordinator (spec validation), the worker and the trainer.
// Header-only.
#ifndef MEGABATCH_COMMON_DATASETS_H_
#define MEGABATCH_COMMON_DATASETS_H_

#include <cstdint>
#include <string>
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

// The directories of the data megabatch ships support for (Debian's
// dataset-fashion-mnist and fortunes): the default --data-root of
// coordinators (which look only there at a spec's dataset.path) and of
// workers (which read only there).
inline std::vector<std::string> DefaultDataRoots() {
  return {"/usr/share/datasets", "/usr/share/games/fortunes"};
}

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_DATASETS_H_
