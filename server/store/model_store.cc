#include "server/store/model_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

namespace megabatch::store {
namespace {

std::string Errno(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

std::string MiB(int64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

}  // namespace

Result<std::unique_ptr<ModelStore>> ModelStore::Open(const std::string& dir,
                                                     int64_t max_bytes) {
  std::error_code ec;
  if (std::filesystem::create_directories(dir, ec)) ::chmod(dir.c_str(), 0700);
  if (ec) {
    return InternalError("model store " + dir + ": " + ec.message());
  }
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return InternalError("model store " + dir + ": not a directory");
  }
  if (st.st_uid != ::geteuid() || (st.st_mode & 022) != 0) {
    return InternalError("model store " + dir +
                         ": owned by another user or writable by others");
  }
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().filename().string().rfind("upload-", 0) == 0) {
      std::filesystem::remove(entry.path(), ec);
    }
  }
  return std::unique_ptr<ModelStore>(new ModelStore(dir, max_bytes));
}

Result<std::unique_ptr<ModelStore::Upload>> ModelStore::Begin() const {
  std::string temp = dir_ + "/upload-XXXXXX";
  std::vector<char> name(temp.begin(), temp.end());
  name.push_back('\0');
  const int fd = ::mkstemp(name.data());
  if (fd < 0) return InternalError(Errno("model store " + dir_));
  return std::unique_ptr<Upload>(new Upload(this, name.data(), fd));
}

ModelStore::Upload::Upload(const ModelStore* store, std::string temp_path,
                           int fd)
    : store_(store), temp_path_(std::move(temp_path)), fd_(fd) {}

ModelStore::Upload::~Upload() {
  if (fd_ >= 0) ::close(fd_);
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
}

Status ModelStore::Upload::Append(std::string_view chunk) {
  if (bytes_ + static_cast<int64_t>(chunk.size()) > store_->max_bytes_) {
    return InvalidArgumentError(
        "model: larger than this coordinator's --max-model-bytes (" +
        MiB(store_->max_bytes_) + ")");
  }
  hash_.Update(chunk);
  bytes_ += static_cast<int64_t>(chunk.size());
  while (!chunk.empty()) {
    const ssize_t n = ::write(fd_, chunk.data(), chunk.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return InternalError(Errno("model store: write"));
    chunk.remove_prefix(static_cast<size_t>(n));
  }
  return Status();
}

Result<ModelStore::Stored> ModelStore::Upload::Commit() {
  if (bytes_ == 0) return InvalidArgumentError("model: the upload is empty");
  if (::fsync(fd_) != 0) return InternalError(Errno("model store: fsync"));
  ::close(fd_);
  fd_ = -1;
  Stored out;
  out.sha256 = hash_.FinishHex();
  out.bytes = bytes_;
  const std::string path = store_->PathOf(out.sha256);
  if (store_->Has(out.sha256)) {
    out.existed = true;  // the temp file goes in the destructor
    return out;
  }
  if (::rename(temp_path_.c_str(), path.c_str()) != 0) {
    return InternalError(Errno("model store: rename to " + path));
  }
  temp_path_.clear();
  // The rename is durable once the directory is.
  const int dir = ::open(store_->dir_.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return out;
}

int64_t ModelStore::SizeOf(std::string_view sha256) const {
  struct stat st;
  if (!Has(sha256) || ::stat(PathOf(sha256).c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_size);
}

bool ModelStore::Has(std::string_view sha256) const {
  if (!IsSha256Hex(sha256)) return false;
  struct stat st;
  return ::stat(PathOf(sha256).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string ModelStore::PathOf(std::string_view sha256) const {
  return dir_ + "/" + std::string(sha256) + ".pt";
}

}  // namespace megabatch::store
