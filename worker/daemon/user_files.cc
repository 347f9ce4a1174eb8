#include "worker/daemon/user_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/sha256.h"
#include "worker/daemon/data_roots.h"

namespace megabatch::worker {
namespace {

std::string Short(const std::string& sha256) { return sha256.substr(0, 12); }

}  // namespace

UserFiles::UserFiles(std::string model_dir, std::vector<std::string> data_roots)
    : model_dir_(std::move(model_dir)), data_roots_(std::move(data_roots)) {}

Result<std::string> UserFiles::Model(const std::string& sha256,
                                     const Fetch& fetch) {
  if (!IsSha256Hex(sha256)) {
    return InvalidArgumentError("model.sha256: not a SHA-256: " + sha256);
  }
  const std::string path = model_dir_ + "/" + sha256 + ".pt";
  auto cached = [&] {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
  };
  if (cached()) return path;  // without waiting for another slot's fetch
  MutexLock lock(&fetch_mu_);
  if (cached()) return path;
  std::error_code ec;
  std::filesystem::create_directories(model_dir_, ec);
  ::chmod(model_dir_.c_str(), 0700);
  std::string temp = model_dir_ + "/fetch-XXXXXX";
  std::vector<char> name(temp.begin(), temp.end());
  name.push_back('\0');
  const int fd = ::mkstemp(name.data());
  if (fd < 0) {
    return InternalError("model cache " + model_dir_ + ": " +
                         std::strerror(errno));
  }
  temp = name.data();
  Sha256 hash;
  Status fetched = fetch([&](std::string_view chunk) -> Status {
    hash.Update(chunk);
    while (!chunk.empty()) {
      const ssize_t n = ::write(fd, chunk.data(), chunk.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return InternalError("model cache " + temp + ": " +
                             std::strerror(errno));
      }
      chunk.remove_prefix(static_cast<size_t>(n));
    }
    return Status();
  });
  const bool synced = fetched.ok() && ::fsync(fd) == 0;
  ::close(fd);
  if (!fetched.ok() || !synced) {
    ::unlink(temp.c_str());
    return fetched.ok() ? InternalError("model cache: fsync " + temp) : fetched;
  }
  if (const std::string got = hash.FinishHex(); got != sha256) {
    ::unlink(temp.c_str());
    return Status(StatusCode::kDataLoss, "model " + Short(sha256) +
                                             ": the coordinator sent bytes "
                                             "whose SHA-256 is " +
                                             got);
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    ::unlink(temp.c_str());
    return InternalError("model cache: rename to " + path + ": " +
                         std::strerror(errno));
  }
  return path;
}

Status UserFiles::CheckDataFiles(const nlohmann::json& dataset, bool* changed) {
  *changed = false;
  const auto files = dataset.find("files");
  for (const char* split : {"train", "val", "test"}) {
    const auto s = dataset.find(split);
    if (s == dataset.end() || !s->is_object()) continue;
    for (const auto& [key, value] : s->items()) {
      if (!value.is_string()) continue;
      const std::string path = value.get<std::string>();
      const std::string field = std::string("dataset.") + split + "." + key;
      MEGABATCH_RETURN_IF_ERROR(CheckDataPath(path, data_roots_));
      if (files == dataset.end() || !files->contains(path) ||
          !(*files)[path].is_object()) {
        return FailedPreconditionError(field + ": " + path +
                                       " has no record in dataset.files");
      }
      const nlohmann::json& record = (*files)[path];
      const std::string want = record.value("sha256", "");
      struct stat st;
      if (::stat(path.c_str(), &st) != 0) {
        return FailedPreconditionError(field + ": " + path + ": " +
                                       std::strerror(errno));
      }
      Hashed now;
      now.device = st.st_dev;
      now.inode = st.st_ino;
      now.bytes = st.st_size;
      now.mtime_ns =
          int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
      now.ctime_ns =
          int64_t{st.st_ctim.tv_sec} * 1000000000 + st.st_ctim.tv_nsec;
      std::string got;
      {
        MutexLock lock(&mu_);
        auto it = hashed_.find(path);
        if (it != hashed_.end() && it->second == now) got = it->second.sha256;
      }
      if (got.empty()) {
        MEGABATCH_ASSIGN_OR_RETURN(FileDigest digest, Sha256File(path));
        got = digest.sha256;
        now.sha256 = got;
        MutexLock lock(&mu_);
        hashed_[path] = now;
      }
      if (got != want) {
        *changed = true;
        return FailedPreconditionError(
            field + ": " + path +
            " changed since the sweep was submitted: its SHA-256 is " + got +
            " on this host, " + want + " at submit (" +
            std::to_string(st.st_size) + " bytes now, " +
            std::to_string(record.value("bytes", int64_t{-1})) + " then)");
      }
    }
  }
  return Status();
}

}  // namespace megabatch::worker
