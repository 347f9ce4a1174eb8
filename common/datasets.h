// Sizes of the datasets megabatch ships support for, shared by the
// coordinator (spec validation) and the trainer. Header-only.
#ifndef MEGABATCH_COMMON_DATASETS_H_
#define MEGABATCH_COMMON_DATASETS_H_

#include <cstdint>

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

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_DATASETS_H_
