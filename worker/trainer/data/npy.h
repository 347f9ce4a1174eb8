// NumPy .npy files, memory-mapped read-only: the data files of a study of
// the user's own model (x and y arrays). The pages are the page cache's, so
// every trainer on a host shares one copy and none is made per trainer.
// Format: numpy.lib.format, versions 1.0-3.0, C order only; the dtypes a
// trainer can use: float32, float16, uint8 (inputs, kept as stored),
// int64, int32 (labels) and uint16, uint32 (tokens), little-endian. A
// language model's token file is flat (no header), read by OpenFlat.
// LibTorch-free.
#ifndef MEGABATCH_WORKER_TRAINER_DATA_NPY_H_
#define MEGABATCH_WORKER_TRAINER_DATA_NPY_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace megabatch::trainer {

enum class NpyType {
  kFloat32,
  kFloat16,
  kUInt8,
  kInt64,
  kInt32,
  kUInt16,
  kUInt32
};

// The dtype's NumPy name ("float32") and its size in bytes.
std::string_view NpyTypeName(NpyType type);
size_t NpyTypeSize(NpyType type);

class NpyArray {
 public:
  // Maps `path`. INVALID_ARGUMENT naming `field` (the spec's name for the
  // file, e.g. "dataset.train.x") and the path for anything that is not a
  // usable .npy: bad magic or header, Fortran order, an unsupported or
  // big-endian dtype, a size that does not match the shape; NOT_FOUND when
  // it cannot be opened.
  static Result<NpyArray> Open(const std::string& path,
                               const std::string& field);
  // Maps a flat file of `type` values (a token file) as a 1-D array.
  // INVALID_ARGUMENT naming `field` when it is empty or not a whole number
  // of values.
  static Result<NpyArray> OpenFlat(const std::string& path,
                                   const std::string& field, NpyType type);
  NpyArray(NpyArray&& other) noexcept;
  NpyArray& operator=(NpyArray&& other) noexcept;
  NpyArray(const NpyArray&) = delete;
  NpyArray& operator=(const NpyArray&) = delete;
  ~NpyArray();

  NpyType type() const { return type_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  // shape()[0]: the number of samples (1 for a 0-d array).
  int64_t rows() const { return shape_.empty() ? 1 : shape_[0]; }
  // Elements of one row (the product of the other dimensions).
  int64_t row_elements() const;
  // The array's bytes, C order, as stored.
  const void* data() const { return data_; }
  size_t data_bytes() const { return data_bytes_; }

 private:
  NpyArray() = default;
  // Maps the whole of `path` (a regular file of at least `min_bytes`; else
  // INVALID_ARGUMENT saying `too_small`).
  static Result<NpyArray> Map(const std::string& path, const std::string& field,
                              size_t min_bytes, const std::string& too_small);

  NpyType type_ = NpyType::kFloat32;
  std::vector<int64_t> shape_;
  void* map_ = nullptr;  // the whole file
  size_t map_bytes_ = 0;
  const void* data_ = nullptr;
  size_t data_bytes_ = 0;
};

// Checks one classification split (`field` is "dataset.train", ...): inputs
// `x` (file `x_path`) of float32, float16 or uint8 with at least one sample,
// all finite; labels `y` (file `y_path`) of int64 or int32, 1-D, one per
// sample, none negative. INVALID_ARGUMENT naming the field and the file. The
// trainer checks every split it trains on with it, and the client every
// split it submits (docs/models.md).
Status CheckLabeledSplit(const std::string& field, const NpyArray& x,
                         const std::string& x_path, const NpyArray& y,
                         const std::string& y_path);

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_DATA_NPY_H_
