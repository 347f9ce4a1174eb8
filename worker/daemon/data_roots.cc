#include "worker/daemon/data_roots.h"

#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>

namespace megabatch::worker {
namespace {

// `path` with every symlink resolved; nullopt when it does not resolve.
std::optional<std::string> Resolved(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return std::nullopt;
  return std::string(buf);
}

// Whether the resolved path `resolved` is one of the resolved `roots` or
// below one.
bool Under(const std::string& resolved, const std::vector<std::string>& roots) {
  for (const std::string& r : roots) {
    if (resolved == r ||
        (resolved.size() > r.size() && resolved.compare(0, r.size(), r) == 0 &&
         (r.back() == '/' || resolved[r.size()] == '/'))) {
      return true;
    }
  }
  return false;
}

std::string RootList(const std::vector<std::string>& roots) {
  std::string out;
  for (const auto& r : roots) out += (out.empty() ? "" : ", ") + r;
  return out.empty() ? "none" : out;
}

// Whether `path`, which must resolve under one of `resolved_roots` (the
// `roots` as given, for messages) to a regular file or a directory, is a
// directory.
Result<bool> CheckOne(const std::string& path,
                      const std::vector<std::string>& resolved_roots,
                      const std::vector<std::string>& roots) {
  std::optional<std::string> resolved = Resolved(path);
  if (!resolved) {
    return FailedPreconditionError("dataset.path: " + path + ": " +
                                   std::strerror(errno) + " on this worker");
  }
  if (!Under(*resolved, resolved_roots)) {
    return FailedPreconditionError(
        "dataset.path: " + path +
        (*resolved == path ? "" : " (" + *resolved + ")") +
        " is not under a data root of this worker (--data-root: " +
        RootList(roots) + ")");
  }
  struct stat st {};
  if (::stat(resolved->c_str(), &st) != 0) {
    return FailedPreconditionError("dataset.path: " + path + ": " +
                                   std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
    return FailedPreconditionError(
        "dataset.path: " + path +
        " is not a regular file (a device, FIFO or socket is never read)");
  }
  return S_ISDIR(st.st_mode);
}

}  // namespace

Status CheckDataPath(const std::string& path,
                     const std::vector<std::string>& roots) {
  std::vector<std::string> resolved_roots;
  for (const std::string& root : roots) {
    if (std::optional<std::string> r = Resolved(root)) {
      resolved_roots.push_back(*r);
    }
  }
  Result<bool> is_directory = CheckOne(path, resolved_roots, roots);
  if (!is_directory.ok()) return is_directory.status();
  if (!*is_directory) return Status();
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
    Result<bool> checked =
        CheckOne(entry.path().string(), resolved_roots, roots);
    if (!checked.ok()) return checked.status();
  }
  if (ec) {
    return FailedPreconditionError("dataset.path: " + path + ": " +
                                   ec.message());
  }
  return Status();
}

}  // namespace megabatch::worker
