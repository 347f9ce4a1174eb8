// The TorchScript modules users upload with a sweep (docs/models.md),
// stored content-addressed: <dir>/<sha256>.pt, written once through a temp
// file, fsync and a rename, never changed, so a sweep's model cannot change
// after submit and two sweeps of one model store it once. Workers fetch a
// module by its hash (WorkerService.FetchModel) and check the hash
// themselves. Thread-safe.
#ifndef MEGABATCH_SERVER_STORE_MODEL_STORE_H_
#define MEGABATCH_SERVER_STORE_MODEL_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/sha256.h"
#include "common/status.h"

namespace megabatch::store {

class ModelStore {
 public:
  // Creates `dir` (mode 0700) when missing; an existing one must be a
  // directory this user owns that no one else may write. Removes uploads a
  // crash left unfinished. Uploads larger than `max_bytes` are refused.
  static Result<std::unique_ptr<ModelStore>> Open(const std::string& dir,
                                                  int64_t max_bytes);

  struct Stored {
    std::string sha256;
    int64_t bytes = 0;
    bool existed = false;  // the same bytes were uploaded before
  };

  // One upload in progress: its bytes go to a temp file of its own.
  // Destroyed before Commit(), it leaves nothing behind.
  class Upload {
   public:
    ~Upload();
    Upload(const Upload&) = delete;
    Upload& operator=(const Upload&) = delete;
    // INVALID_ARGUMENT once the upload passes the store's max_bytes;
    // INTERNAL when the disk refuses it.
    Status Append(std::string_view chunk);
    // Stores the bytes under their hash. INVALID_ARGUMENT for an empty
    // upload.
    Result<Stored> Commit();

   private:
    friend class ModelStore;
    Upload(const ModelStore* store, std::string temp_path, int fd);
    const ModelStore* store_;
    std::string temp_path_;
    int fd_;
    int64_t bytes_ = 0;
    Sha256 hash_;
  };
  Result<std::unique_ptr<Upload>> Begin() const;

  // Whether a module with this hash is stored.
  bool Has(std::string_view sha256) const;
  // Its size in bytes (-1 when not stored).
  int64_t SizeOf(std::string_view sha256) const;
  // Its file (which exists when Has()).
  std::string PathOf(std::string_view sha256) const;
  int64_t max_bytes() const { return max_bytes_; }
  const std::string& dir() const { return dir_; }

 private:
  ModelStore(std::string dir, int64_t max_bytes)
      : dir_(std::move(dir)), max_bytes_(max_bytes) {}
  const std::string dir_;
  const int64_t max_bytes_;
};

}  // namespace megabatch::store

#endif  // MEGABATCH_SERVER_STORE_MODEL_STORE_H_
