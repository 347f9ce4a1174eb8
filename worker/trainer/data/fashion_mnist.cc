#include "worker/trainer/data/fashion_mnist.h"

#include <zlib.h>

#include <filesystem>
#include <vector>

namespace megabatch::trainer {
namespace {

// Channel statistics of the Fashion-MNIST training set.
constexpr float kMean = 0.2860f;
constexpr float kStd = 0.3530f;
constexpr uint32_t kImagesMagic = 2051;
constexpr uint32_t kLabelsMagic = 2049;

Result<std::vector<uint8_t>> ReadGzip(const std::string& path) {
  if (!std::filesystem::exists(path)) {
    return NotFoundError("dataset file " + path + " does not exist");
  }
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return NotFoundError("cannot open dataset file " + path);
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.insert(out.end(), buf, buf + n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  std::string error = (n < 0 && msg) ? msg : "";
  gzclose(f);
  if (n < 0) return DataLossError("dataset file " + path + ": " + error);
  return out;
}

uint32_t BigEndian(const std::vector<uint8_t>& b, size_t offset) {
  return (uint32_t{b[offset]} << 24) | (uint32_t{b[offset + 1]} << 16) |
         (uint32_t{b[offset + 2]} << 8) | uint32_t{b[offset + 3]};
}

Result<torch::Tensor> ReadImages(const std::string& path) {
  auto bytes = ReadGzip(path);
  if (!bytes.ok()) return bytes.status();
  const auto& b = *bytes;
  if (b.size() < 16 || BigEndian(b, 0) != kImagesMagic) {
    return DataLossError("dataset file " + path + ": not an IDX image file");
  }
  int64_t n = BigEndian(b, 4), rows = BigEndian(b, 8), cols = BigEndian(b, 12);
  if (b.size() != 16 + static_cast<size_t>(n * rows * cols)) {
    return DataLossError("dataset file " + path + ": truncated");
  }
  torch::Tensor raw = torch::from_blob(const_cast<uint8_t*>(b.data() + 16),
                                       {n, 1, rows, cols}, torch::kUInt8);
  return ((raw.to(torch::kFloat32) / 255.0f) - kMean) / kStd;
}

Result<torch::Tensor> ReadLabels(const std::string& path) {
  auto bytes = ReadGzip(path);
  if (!bytes.ok()) return bytes.status();
  const auto& b = *bytes;
  if (b.size() < 8 || BigEndian(b, 0) != kLabelsMagic) {
    return DataLossError("dataset file " + path + ": not an IDX label file");
  }
  int64_t n = BigEndian(b, 4);
  if (b.size() != 8 + static_cast<size_t>(n)) {
    return DataLossError("dataset file " + path + ": truncated");
  }
  return torch::from_blob(const_cast<uint8_t*>(b.data() + 8), {n},
                          torch::kUInt8)
      .to(torch::kInt64);
}

}  // namespace

Result<ImageDataset> LoadFashionMnist(const std::string& dir) {
  ImageDataset ds;
  struct Part {
    const char* file;
    torch::Tensor* out;
    bool images;
  } parts[] = {{"train-images-idx3-ubyte.gz", &ds.train_images, true},
               {"train-labels-idx1-ubyte.gz", &ds.train_labels, false},
               {"t10k-images-idx3-ubyte.gz", &ds.test_images, true},
               {"t10k-labels-idx1-ubyte.gz", &ds.test_labels, false}};
  for (const Part& p : parts) {
    std::string path = (std::filesystem::path(dir) / p.file).string();
    auto t = p.images ? ReadImages(path) : ReadLabels(path);
    if (!t.ok()) return t.status();
    *p.out = std::move(*t);
  }
  if (ds.train_images.size(0) != ds.train_labels.size(0) ||
      ds.test_images.size(0) != ds.test_labels.size(0)) {
    return DataLossError("dataset " + dir + ": image and label counts differ");
  }
  return ds;
}

}  // namespace megabatch::trainer
