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

bool Under(const std::string& resolved, const std::vector<std::string>& roots) {
  for (const std::string& root : roots) {
    std::optional<std::string> r = Resolved(root);
    if (!r) continue;
    if (resolved == *r || (resolved.size() > r->size() &&
                           resolved.compare(0, r->size(), *r) == 0 &&
                           (r->back() == '/' || resolved[r->size()] == '/'))) {
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

// OK when `path` resolves under a root to a regular file or (when
// `directory_ok`) a directory.
Status CheckOne(const std::string& path, const std::vector<std::string>& roots,
                bool directory_ok, bool* is_directory) {
  std::optional<std::string> resolved = Resolved(path);
  if (!resolved) {
    return FailedPreconditionError("dataset.path: " + path + ": " +
                                   std::strerror(errno) + " on this worker");
  }
  if (!Under(*resolved, roots)) {
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
  *is_directory = S_ISDIR(st.st_mode);
  if (!S_ISREG(st.st_mode) && !(directory_ok && *is_directory)) {
    return FailedPreconditionError(
        "dataset.path: " + path +
        " is not a regular file (a device, FIFO or socket is never read)");
  }
  return Status();
}

}  // namespace

Status CheckDataPath(const std::string& path,
                     const std::vector<std::string>& roots) {
  bool is_directory = false;
  MEGABATCH_RETURN_IF_ERROR(CheckOne(path, roots, true, &is_directory));
  if (!is_directory) return Status();
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
    bool sub_directory = false;
    MEGABATCH_RETURN_IF_ERROR(
        CheckOne(entry.path().string(), roots, true, &sub_directory));
  }
  if (ec) {
    return FailedPreconditionError("dataset.path: " + path + ": " +
                                   ec.message());
  }
  return Status();
}

}  // namespace megabatch::worker
