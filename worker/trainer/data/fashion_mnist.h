// Fashion-MNIST from the gzip IDX files Debian's dataset-fashion-mnist ships
// (/usr/share/datasets/fashion-mnist), decoded into float tensors, and a
// decoded copy cached on disk that later trainers map instead of decoding.
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

// LoadFashionMnist through a cache of the decoded tensors in `cache_dir`
// (fashion-mnist-<key>.f32, about 220 MB). The first trainer decodes the gzip
// files and writes the cache atomically; later ones map it read-only
// (copy-on-write), so its pages are shared by every trainer on the host and
// start-up skips the decode (bench/trainer_startup.py). The key hashes the
// dataset directory and each file's size and modification time, so a changed
// file makes a new cache. The tensors are the same bits either way. A cache
// that cannot be written or read is reported on stderr and skipped: the
// trial decodes as before. `cache_dir` empty: no cache.
Result<ImageDataset> LoadFashionMnistCached(const std::string& dir,
                                            const std::string& cache_dir);

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_DATA_FASHION_MNIST_H_
