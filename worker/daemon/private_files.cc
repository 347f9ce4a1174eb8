#include "worker/daemon/private_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace megabatch::worker {
namespace {

std::string Errno() { return std::strerror(errno); }

std::string OctalMode(mode_t mode) {
  char out[8];
  std::snprintf(out, sizeof out, "%04o", static_cast<unsigned>(mode & 07777));
  return out;
}

// Closes a file descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

std::string DefaultRuntimeDir() {
  if (const char* systemd = std::getenv("RUNTIME_DIRECTORY");
      systemd != nullptr && systemd[0] == '/') {
    // RuntimeDirectory=a b gives "/run/a:/run/b"; the first is ours.
    return std::string(systemd).substr(0, std::string(systemd).find(':'));
  }
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR");
      xdg != nullptr && xdg[0] == '/') {
    return std::string(xdg) + "/megabatch";
  }
  if (::geteuid() == 0) return "/run/megabatch";
  std::error_code ec;
  std::filesystem::path tmp = std::filesystem::temp_directory_path(ec);
  if (ec) tmp = "/tmp";
  return (tmp / ("megabatch-" + std::to_string(::geteuid()))).string();
}

Status EnsurePrivateDir(const std::string& path) {
  const std::filesystem::path p(path);
  if (p.has_parent_path() && p.parent_path() != p) {
    std::error_code ec;
    if (!std::filesystem::exists(p.parent_path(), ec)) {
      MEGABATCH_RETURN_IF_ERROR(EnsurePrivateDir(p.parent_path().string()));
    }
  }
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return FailedPreconditionError(path + ": cannot create: " + Errno());
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return FailedPreconditionError(path + ": " + Errno());
  }
  if (S_ISLNK(st.st_mode)) {
    return FailedPreconditionError(
        path +
        ": a symlink; a worker's state directory must be a directory "
        "it owns");
  }
  if (!S_ISDIR(st.st_mode)) {
    return FailedPreconditionError(path + ": not a directory");
  }
  if (st.st_uid != ::geteuid()) {
    return FailedPreconditionError(
        path + ": owned by uid " + std::to_string(st.st_uid) +
        ", not this worker's user (uid " + std::to_string(::geteuid()) +
        "); someone else made it: remove it or choose another directory");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return FailedPreconditionError(
        path + ": writable by group or others (mode " + OctalMode(st.st_mode) +
        "); a worker's state directory must not be: chmod go-w it");
  }
  return Status();
}

Result<std::string> MakePrivateTempDir(const std::string& parent,
                                       const std::string& prefix) {
  std::string tmpl =
      (std::filesystem::path(parent) / (prefix + "XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return FailedPreconditionError(parent +
                                   ": cannot make a directory: " + Errno());
  }
  return tmpl;
}

Status WriteFileAtomically(const std::string& path, std::string_view content) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  ::unlink(tmp.c_str());  // left by a killed writer of the same pid
  {
    Fd fd(::open(tmp.c_str(),
                 O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (fd.get() < 0) return UnavailableError(tmp + ": " + Errno());
    size_t done = 0;
    while (done < content.size()) {
      const ssize_t n =
          ::write(fd.get(), content.data() + done, content.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const std::string why = Errno();
        ::unlink(tmp.c_str());
        return UnavailableError(tmp + ": cannot write: " + why);
      }
      done += static_cast<size_t>(n);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = Errno();
    ::unlink(tmp.c_str());
    return UnavailableError(path + ": " + why);
  }
  return Status();
}

Result<std::string> ReadOwnFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return NotFoundError(path + ": no such file");
    return Status(StatusCode::kPermissionDenied, path + ": " + Errno());
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      st.st_uid != ::geteuid()) {
    return Status(StatusCode::kPermissionDenied,
                  path + ": not a regular file of this worker's user");
  }
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return UnavailableError(path + ": " + Errno());
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (1 << 20)) {
      return Status(StatusCode::kPermissionDenied, path + ": over 1 MiB");
    }
  }
  return out;
}

}  // namespace megabatch::worker
