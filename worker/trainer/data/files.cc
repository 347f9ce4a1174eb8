#include "worker/trainer/data/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace megabatch::trainer {

Result<std::string> ReadFileBytes(const std::string& path,
                                  const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(what + " " + path + ": cannot open");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) return DataLossError(what + " " + path + ": read failed");
  return bytes.str();
}

Status WriteFileAtomically(const std::string& path, const std::string& bytes,
                           const std::string& what) {
  return WriteFileAtomically(path, std::vector<std::string_view>{bytes}, what);
}

Status WriteFileAtomically(const std::string& path,
                           const std::vector<std::string_view>& pieces,
                           const std::string& what) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return InternalError(what + " " + tmp + ": " + std::strerror(errno));
  }
  for (std::string_view piece : pieces) {
    size_t done = 0;
    while (done < piece.size()) {
      ssize_t n = ::write(fd, piece.data() + done, piece.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int error = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        return InternalError(what + " " + tmp + ": " + std::strerror(error));
      }
      done += static_cast<size_t>(n);
    }
  }
  bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(tmp.c_str());
    return InternalError(what + " " + path + ": " + std::strerror(error));
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status();
}

}  // namespace megabatch::trainer
