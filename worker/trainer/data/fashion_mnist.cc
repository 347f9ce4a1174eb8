#include "worker/trainer/data/fashion_mnist.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <vector>

#include "worker/trainer/data/files.h"
#include "worker/trainer/data/text_corpus.h"

namespace megabatch::trainer {
namespace {

// Channel statistics of the Fashion-MNIST training set.
constexpr float kMean = 0.2860f;
constexpr float kStd = 0.3530f;
constexpr uint32_t kImagesMagic = 2051;
constexpr uint32_t kLabelsMagic = 2049;
constexpr const char* kFiles[] = {
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

Result<std::vector<uint8_t>> ReadGzip(const std::string& path) {
  if (!std::filesystem::exists(path)) {
    return NotFoundError("dataset file " + path + " does not exist");
  }
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return NotFoundError("cannot open dataset file " + path);
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0)
    out.insert(out.end(), buf, buf + n);
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
  // In place: the same bits as ((x / 255) - mean) / std, one buffer.
  return raw.to(torch::kFloat32).div_(255.0f).sub_(kMean).div_(kStd);
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
  } parts[] = {{kFiles[0], &ds.train_images, true},
               {kFiles[1], &ds.train_labels, false},
               {kFiles[2], &ds.test_images, true},
               {kFiles[3], &ds.test_labels, false}};
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

namespace {

// The cache file: a 64-byte header (magic, then train count, test count,
// rows, cols as int64), then train images and test images (float32), train
// labels and test labels (int64), each starting at a multiple of 64 bytes.
constexpr char kCacheMagic[8] = {'M', 'B', 'F', 'M', 'N', 'S', 'T', '1'};
constexpr size_t kHeaderBytes = 64;

struct CacheLayout {
  int64_t train = 0, test = 0, rows = 0, cols = 0;
  size_t offsets[4] =
      {};  // train images, test images, train labels, test labels
  size_t total = 0;
};

CacheLayout Layout(int64_t train, int64_t test, int64_t rows, int64_t cols) {
  CacheLayout l{train, test, rows, cols};
  const size_t sizes[4] = {
      static_cast<size_t>(train * rows * cols) * sizeof(float),
      static_cast<size_t>(test * rows * cols) * sizeof(float),
      static_cast<size_t>(train) * sizeof(int64_t),
      static_cast<size_t>(test) * sizeof(int64_t)};
  size_t at = kHeaderBytes;
  for (int i = 0; i < 4; ++i) {
    l.offsets[i] = at;
    at = (at + sizes[i] + 63) / 64 * 64;
  }
  l.total = at;
  return l;
}

// The cache's file name for the dataset in `dir`, or "" when a file cannot
// be stat()ed (LoadFashionMnist then reports it).
std::string CacheName(const std::string& dir) {
  std::error_code ec;
  std::string key_text =
      "fashion-mnist cache 1|" + std::filesystem::absolute(dir, ec).string();
  for (const char* file : kFiles) {
    struct stat st {};
    if (::stat((std::filesystem::path(dir) / file).c_str(), &st) != 0)
      return "";
    key_text += "|" + std::string(file) + ":" + std::to_string(st.st_size) +
                ":" + std::to_string(st.st_mtim.tv_sec) + "." +
                std::to_string(st.st_mtim.tv_nsec);
  }
  char name[64];
  std::snprintf(name, sizeof(name), "fashion-mnist-%016llx.f32",
                static_cast<unsigned long long>(Fnv1a64(key_text)));
  return name;
}

Result<ImageDataset> MapCache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NotFoundError("dataset cache " + path + ": " + std::strerror(errno));
  struct stat st {};
  int64_t header[5] = {};
  bool read_ok =
      ::fstat(fd, &st) == 0 && ::pread(fd, header, sizeof(header), 0) ==
                                   static_cast<ssize_t>(sizeof(header));
  if (!read_ok || std::memcmp(header, kCacheMagic, sizeof(kCacheMagic)) != 0) {
    ::close(fd);
    return DataLossError("dataset cache " + path +
                         ": not a megabatch Fashion-MNIST cache");
  }
  CacheLayout l = Layout(header[1], header[2], header[3], header[4]);
  if (header[1] <= 0 || header[2] <= 0 || header[3] <= 0 || header[4] <= 0 ||
      static_cast<size_t>(st.st_size) != l.total) {
    ::close(fd);
    return DataLossError("dataset cache " + path + ": truncated");
  }
  // Private and writable: pages stay shared with every other trainer until
  // one is written (nothing writes them; an in-place op would copy, not
  // corrupt the cache).
  void* base =
      ::mmap(nullptr, l.total, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) {
    return InternalError("dataset cache " + path +
                         ": mmap: " + std::strerror(errno));
  }
  auto mapping = std::shared_ptr<void>(
      base, [size = l.total](void* p) { ::munmap(p, size); });
  auto view = [&](int part, std::vector<int64_t> shape, torch::Dtype dtype) {
    return torch::from_blob(
        static_cast<char*>(base) + l.offsets[part], shape, [mapping](void*) {},
        torch::TensorOptions().dtype(dtype));
  };
  ImageDataset ds;
  ds.train_images = view(0, {l.train, 1, l.rows, l.cols}, torch::kFloat32);
  ds.test_images = view(1, {l.test, 1, l.rows, l.cols}, torch::kFloat32);
  ds.train_labels = view(2, {l.train}, torch::kInt64);
  ds.test_labels = view(3, {l.test}, torch::kInt64);
  return ds;
}

Status WriteCache(const ImageDataset& ds, const std::string& path) {
  const CacheLayout l =
      Layout(ds.train_images.size(0), ds.test_images.size(0),
             ds.train_images.size(2), ds.train_images.size(3));
  std::string header(kHeaderBytes, '\0');
  std::memcpy(header.data(), kCacheMagic, sizeof(kCacheMagic));
  const int64_t dims[4] = {l.train, l.test, l.rows, l.cols};
  std::memcpy(header.data() + 8, dims, sizeof(dims));
  // Each part starts at its offset: zeros pad the gap after the one before.
  const std::string zeros(64, '\0');
  const torch::Tensor parts[4] = {
      ds.train_images.contiguous(), ds.test_images.contiguous(),
      ds.train_labels.contiguous(), ds.test_labels.contiguous()};
  std::vector<std::string_view> pieces = {header};
  size_t at = kHeaderBytes;
  for (int i = 0; i < 4; ++i) {
    pieces.push_back(std::string_view(zeros).substr(0, l.offsets[i] - at));
    const size_t size = parts[i].numel() * parts[i].element_size();
    pieces.emplace_back(static_cast<const char*>(parts[i].data_ptr()), size);
    at = l.offsets[i] + size;
  }
  pieces.push_back(std::string_view(zeros).substr(0, l.total - at));
  return WriteFileAtomically(path, pieces, "dataset cache");
}

}  // namespace

Result<ImageDataset> LoadFashionMnistCached(const std::string& dir,
                                            const std::string& cache_dir) {
  const std::string name = cache_dir.empty() ? "" : CacheName(dir);
  if (name.empty()) return LoadFashionMnist(dir);
  const std::string path = (std::filesystem::path(cache_dir) / name).string();
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    auto mapped = MapCache(path);
    if (mapped.ok()) return mapped;
    std::cerr << "megabatch-trainer: " << mapped.status().ToString()
              << "; decoding the dataset instead\n";
  }
  auto data = LoadFashionMnist(dir);
  if (!data.ok()) return data;
  std::filesystem::create_directories(cache_dir, ec);
  Status written =
      ec ? InternalError("dataset cache " + cache_dir + ": " + ec.message())
         : WriteCache(*data, path);
  if (!written.ok()) {
    std::cerr << "megabatch-trainer: " << written.ToString()
              << " (not cached)\n";
  }
  return data;
}

}  // namespace megabatch::trainer
