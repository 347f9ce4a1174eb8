// The files of a torchscript trial on this worker's host (docs/models.md):
// the module, fetched from the coordinator by its hash into a cache and
// checked against that hash; and the data files, read by path (a shared
// filesystem, as on Slurm clusters) and checked against the size and
// SHA-256 the client recorded at submit, once per (path, device, inode,
// size, mtime, ctime): a file that differs fails the trial, naming the file
// and both hashes. (The trainer maps the files afterwards: a file changed
// between this check and the trainer's reads is not caught.)
// LibTorch-free; thread-safe.
#ifndef MEGABATCH_WORKER_DAEMON_USER_FILES_H_
#define MEGABATCH_WORKER_DAEMON_USER_FILES_H_

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "common/thread_annotations.h"

namespace megabatch::worker {

class UserFiles {
 public:
  // Modules are cached in `model_dir` (created 0700); data files are read
  // only under `data_roots` (CheckDataPath).
  UserFiles(std::string model_dir, std::vector<std::string> data_roots);

  // Streams a module's bytes to `sink` in order; its status is the fetch's.
  using Fetch = std::function<Status(
      const std::function<Status(std::string_view)>& sink)>;
  // The local file of module `sha256`: the cached one, or fetched with
  // `fetch` and kept once its bytes hash to `sha256` (DATA_LOSS if they
  // do not).
  Result<std::string> Model(const std::string& sha256, const Fetch& fetch);

  // Checks every file a trial config's dataset names (train/val/test x, y,
  // tokens) against its record in dataset.files. FAILED_PRECONDITION, naming
  // the field and the file, for one that is missing here or outside the
  // data roots (this host's problem: the trial may run elsewhere), and for
  // one that changed since submit, which also sets `*changed` (a retry
  // anywhere would fail the same way).
  Status CheckDataFiles(const nlohmann::json& dataset, bool* changed);

 private:
  // A file as it was hashed: a file rewritten in place keeping its size
  // and mtime (cp -p, touch -r) still has a new ctime.
  struct Hashed {
    uint64_t device = 0;
    uint64_t inode = 0;
    int64_t bytes = 0;
    int64_t mtime_ns = 0;
    int64_t ctime_ns = 0;
    std::string sha256;
    bool operator==(const Hashed& o) const {
      return device == o.device && inode == o.inode && bytes == o.bytes &&
             mtime_ns == o.mtime_ns && ctime_ns == o.ctime_ns;
    }
  };
  const std::string model_dir_;
  const std::vector<std::string> data_roots_;
  Mutex fetch_mu_;  // one module fetch at a time
  Mutex mu_;
  std::map<std::string, Hashed> hashed_ GUARDED_BY(mu_);  // by path
};

}  // namespace megabatch::worker

#endif  // MEGABATCH_WORKER_DAEMON_USER_FILES_H_
