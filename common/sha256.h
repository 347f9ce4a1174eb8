// SHA-256 of bytes and files, as lowercase hex: how a torchscript model is
// addressed in the coordinator's model store and how a worker checks a
// user's data files against what the client recorded at submit
// (docs/models.md). IsSha256Hex is header-only (the trainer checks a
// config's model.sha256 with it); the rest is in megabatch_sha256 (OpenSSL).
#ifndef MEGABATCH_COMMON_SHA256_H_
#define MEGABATCH_COMMON_SHA256_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace megabatch {

inline constexpr size_t kSha256HexChars = 64;

// 64 lowercase hex digits.
inline bool IsSha256Hex(std::string_view s) {
  if (s.size() != kSha256HexChars) return false;
  for (char ch : s) {
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
  }
  return true;
}

std::string Sha256Hex(std::string_view data);

// An incremental digest, for data that arrives in chunks.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::string_view chunk);
  // The digest of everything given; the object is spent.
  std::string FinishHex();

 private:
  struct Context;
  std::unique_ptr<Context> context_;
};

struct FileDigest {
  int64_t bytes = 0;
  std::string sha256;
};
// Reads `path` once. NOT_FOUND when it cannot be opened, INTERNAL on a read
// error; both name the path.
Result<FileDigest> Sha256File(const std::string& path);

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_SHA256_H_
