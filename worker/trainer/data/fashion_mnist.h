// Fashion-MNIST from the gzip IDX files Debian's dataset-fashion-mnist ships
// (/usr/share/datasets/fashion-mnist), decoded once into float tensors.
#ifndef MEGABATCH_WORKER_TRAINER_DATA_FASHION_MNIST_H_
#define MEGABATCH_WORKER_TRAINER_DATA_FASHION_MNIST_H_

#include <torch/torch.h>

#include <string>

#include "common/status.h"

namespace megabatch::trainer {

struct ImageDataset {
  torch::Tensor train_images;  // [60000, 1, 28, 28] float32, normalised
  torch::Tensor train_labels;  // [60000] int64
  torch::Tensor test_images;   // [10000, 1, 28, 28]
  torch::Tensor test_labels;   // [10000]
};

// Reads the four files under `dir`. Errors: NOT_FOUND for a missing file,
// DATA_LOSS for a truncated or malformed one; the message names the file.
Result<ImageDataset> LoadFashionMnist(const std::string& dir);

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_DATA_FASHION_MNIST_H_
