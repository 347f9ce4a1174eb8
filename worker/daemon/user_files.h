// The files of a torchscript trial on this worker's host (docs/models.md):
// the module, fetched from the coordinator by its hash into a cache and
// checked against that hash; and the data files, read by path (a shared
// filesystem, as on Slurm clusters) and checked against the size and
// SHA-256 the client recorded at submit, once per (path, size, mtime): a
// file that differs fails the trial, naming the file and both hashes.
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
  // the field, the file and what differs, for a file outside the data roots
  // or one that changed since submit.
  Status CheckDataFiles(const nlohmann::json& dataset);

 private:
  struct Hashed {
    int64_t bytes = 0;
    int64_t mtime_ns = 0;
    std::string sha256;
  };
  const std::string model_dir_;
  const std::vector<std::string> data_roots_;
  Mutex fetch_mu_;  // one module fetch at a time
  Mutex mu_;
  std::map<std::string, Hashed> hashed_ GUARDED_BY(mu_);  // by path
};

}  // namespace megabatch::worker

#endif  // MEGABATCH_WORKER_DAEMON_USER_FILES_H_
