#include "worker/trainer/data/npy.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <regex>
#include <utility>

namespace megabatch::trainer {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicBytes = 6;

struct Dtype {
  std::string_view descr;
  NpyType type;
};
// As numpy.lib.format writes them on a little-endian machine.
constexpr Dtype kDtypes[] = {
    {"<f4", NpyType::kFloat32}, {"<f2", NpyType::kFloat16},
    {"|u1", NpyType::kUInt8},   {"<u1", NpyType::kUInt8},
    {"<i8", NpyType::kInt64},   {"<i4", NpyType::kInt32},
    {"<u2", NpyType::kUInt16},  {"<u4", NpyType::kUInt32},
};

uint32_t LittleEndian(const unsigned char* p, int bytes) {
  uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

std::string_view NpyTypeName(NpyType type) {
  switch (type) {
    case NpyType::kFloat32:
      return "float32";
    case NpyType::kFloat16:
      return "float16";
    case NpyType::kUInt8:
      return "uint8";
    case NpyType::kInt64:
      return "int64";
    case NpyType::kInt32:
      return "int32";
    case NpyType::kUInt16:
      return "uint16";
    case NpyType::kUInt32:
      return "uint32";
  }
  return "?";
}

size_t NpyTypeSize(NpyType type) {
  switch (type) {
    case NpyType::kFloat32:
    case NpyType::kInt32:
    case NpyType::kUInt32:
      return 4;
    case NpyType::kFloat16:
    case NpyType::kUInt16:
      return 2;
    case NpyType::kUInt8:
      return 1;
    case NpyType::kInt64:
      return 8;
  }
  return 0;
}

Result<NpyArray> NpyArray::Map(const std::string& path,
                               const std::string& field, size_t min_bytes,
                               const std::string& too_small) {
  const std::string where = field + ": " + path + ": ";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFoundError(where + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgumentError(where + "not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < min_bytes || size == 0) {
    ::close(fd);
    return InvalidArgumentError(where + too_small + " (" +
                                std::to_string(size) + " bytes)");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);
  if (map == MAP_FAILED) {
    return Status(StatusCode::kInternal,
                  where + "mmap: " + std::strerror(mmap_errno));
  }
  NpyArray a;
  a.map_ = map;
  a.map_bytes_ = size;
  return a;
}

Result<NpyArray> NpyArray::OpenFlat(const std::string& path,
                                    const std::string& field, NpyType type) {
  const size_t item = NpyTypeSize(type);
  MEGABATCH_ASSIGN_OR_RETURN(NpyArray a, Map(path, field, item, "empty"));
  if (a.map_bytes_ % item != 0) {
    return InvalidArgumentError(
        field + ": " + path + ": " + std::to_string(a.map_bytes_) +
        " bytes is not a whole number of " + std::string(NpyTypeName(type)) +
        " values (dataset.dtype)");
  }
  a.type_ = type;
  a.shape_ = {static_cast<int64_t>(a.map_bytes_ / item)};
  a.data_ = a.map_;
  a.data_bytes_ = a.map_bytes_;
  return a;
}

Result<NpyArray> NpyArray::Open(const std::string& path,
                                const std::string& field) {
  const std::string where = field + ": " + path + ": ";
  auto bad = [&](const std::string& why) {
    return InvalidArgumentError(where + why);
  };
  MEGABATCH_ASSIGN_OR_RETURN(
      NpyArray a, Map(path, field, kMagicBytes + 4, "not a .npy file"));
  const size_t size = a.map_bytes_;
  const auto* bytes = static_cast<const unsigned char*>(a.map_);
  if (std::memcmp(bytes, kMagic, kMagicBytes) != 0) {
    return bad("not a .npy file (no \\x93NUMPY magic)");
  }
  const int major = bytes[6];
  if (major < 1 || major > 3) {
    return bad(".npy format version " + std::to_string(major) +
               " (1 to 3 are read)");
  }
  const size_t len_bytes = major == 1 ? 2 : 4;
  const size_t header_at = 8 + len_bytes;
  if (size < header_at) return bad("truncated header");
  const size_t header_len =
      LittleEndian(bytes + 8, static_cast<int>(len_bytes));
  if (header_len > size - header_at) return bad("truncated header");
  const std::string header(reinterpret_cast<const char*>(bytes + header_at),
                           header_len);

  std::smatch m;
  if (!std::regex_search(header, m, std::regex(R"('descr'\s*:\s*'([^']*)')"))) {
    return bad("header has no 'descr'");
  }
  const std::string descr = m[1];
  bool known = false;
  for (const Dtype& d : kDtypes) {
    if (d.descr == descr) {
      a.type_ = d.type;
      known = true;
    }
  }
  if (!known) {
    return bad("dtype '" + descr + "' cannot be used" +
               (!descr.empty() && descr[0] == '>' ? " (big-endian)" : "") +
               "; supported: float32, float16, uint8 (inputs), int64, int32 "
               "(labels), uint16, uint32 (tokens), little-endian");
  }
  if (!std::regex_search(header, m,
                         std::regex(R"('fortran_order'\s*:\s*(True|False))"))) {
    return bad("header has no 'fortran_order'");
  }
  if (m[1] == "True") {
    return bad("Fortran order; save it in C order (numpy.ascontiguousarray)");
  }
  if (!std::regex_search(header, m,
                         std::regex(R"('shape'\s*:\s*\(([^)]*)\))"))) {
    return bad("header has no 'shape'");
  }
  const std::string dims = m[1];
  uint64_t elements = 1;
  constexpr uint64_t kMaxElements = uint64_t{1} << 50;
  const std::regex number(R"(\d+)");
  for (std::sregex_iterator it(dims.begin(), dims.end(), number), end;
       it != end; ++it) {
    const std::string digits = (*it)[0];
    if (digits.size() > 15) return bad("shape too large: (" + dims + ")");
    const int64_t d = std::stoll(digits);
    a.shape_.push_back(d);
    if (d != 0 && elements > kMaxElements / static_cast<uint64_t>(d)) {
      return bad("shape too large: (" + dims + ")");
    }
    elements *= static_cast<uint64_t>(d);
  }
  const size_t data_at = header_at + header_len;
  const uint64_t need = elements * NpyTypeSize(a.type_);
  if (size - data_at != need) {
    return bad("holds " + std::to_string(size - data_at) +
               " bytes of data; its shape (" + dims + ") of " +
               std::string(NpyTypeName(a.type_)) + " needs " +
               std::to_string(need));
  }
  a.data_ = bytes + data_at;
  a.data_bytes_ = static_cast<size_t>(need);
  return a;
}

NpyArray::NpyArray(NpyArray&& other) noexcept { *this = std::move(other); }

NpyArray& NpyArray::operator=(NpyArray&& other) noexcept {
  if (this != &other) {
    if (map_ != nullptr) ::munmap(map_, map_bytes_);
    type_ = other.type_;
    shape_ = std::move(other.shape_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    data_ = std::exchange(other.data_, nullptr);
    data_bytes_ = std::exchange(other.data_bytes_, 0);
  }
  return *this;
}

NpyArray::~NpyArray() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

namespace {

// The first element of a float array that is NaN or infinite, or -1.
int64_t FirstNonFinite(const NpyArray& a) {
  const size_t n = a.data_bytes() / NpyTypeSize(a.type());
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

// The smallest of an int64 or int32 array's values (0 when none is below).
int64_t MinLabel(const NpyArray& a) {
  int64_t low = 0;
  const size_t n = a.data_bytes() / NpyTypeSize(a.type());
  for (size_t i = 0; i < n; ++i) {
    low =
        std::min(low, a.type() == NpyType::kInt64
                          ? static_cast<const int64_t*>(a.data())[i]
                          : int64_t{static_cast<const int32_t*>(a.data())[i]});
  }
  return low;
}

}  // namespace

Status CheckLabeledSplit(const std::string& field, const NpyArray& x,
                         const std::string& x_path, const NpyArray& y,
                         const std::string& y_path) {
  const std::string xf = field + ".x: " + x_path + ": ";
  const std::string yf = field + ".y: " + y_path + ": ";
  if (x.type() != NpyType::kFloat32 && x.type() != NpyType::kFloat16 &&
      x.type() != NpyType::kUInt8) {
    return InvalidArgumentError(xf + "dtype " +
                                std::string(NpyTypeName(x.type())) +
                                "; inputs must be float32, float16 or uint8");
  }
  if (x.shape().empty() || x.rows() == 0) {
    return InvalidArgumentError(xf + "holds no samples (shape [N, ...])");
  }
  if (y.type() != NpyType::kInt64 && y.type() != NpyType::kInt32) {
    return InvalidArgumentError(
        yf + "dtype " + std::string(NpyTypeName(y.type())) +
        "; labels must be int64 or int32 class indices");
  }
  if (y.shape().size() != 1) {
    return InvalidArgumentError(yf + "labels must be 1-D [N], got " +
                                std::to_string(y.shape().size()) + " dims");
  }
  if (y.rows() != x.rows()) {
    return InvalidArgumentError(yf + std::to_string(y.rows()) +
                                " labels for the " + std::to_string(x.rows()) +
                                " samples of " + field + ".x");
  }
  if (const int64_t bad = FirstNonFinite(x); bad >= 0) {
    return InvalidArgumentError(xf + "sample " +
                                std::to_string(bad / x.row_elements()) +
                                " holds NaN or infinity");
  }
  if (const int64_t low = MinLabel(y); low < 0) {
    return InvalidArgumentError(
        yf + "label " + std::to_string(low) +
        " is negative; labels are class indices 0..C-1");
  }
  return Status();
}

int64_t NpyArray::row_elements() const {
  int64_t n = 1;
  for (size_t i = 1; i < shape_.size(); ++i) n *= shape_[i];
  return n;
}

}  // namespace megabatch::trainer
