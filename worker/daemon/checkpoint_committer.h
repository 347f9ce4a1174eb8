// Which checkpoint a trial resumes from. A trainer announces each checkpoint
// it writes (protocol::kCheckpoint) after printing that step's metrics; the
// worker commits it (lease-N/committed names it, replaced atomically) only
// once every point printed before it is stored at the coordinator, so a
// resume never skips a step. Each attempt (lease) writes into its own
// directory, so an attempt that lost its lease but still runs cannot
// overwrite its successor's.
#ifndef MEGABATCH_WORKER_DAEMON_CHECKPOINT_COMMITTER_H_
#define MEGABATCH_WORKER_DAEMON_CHECKPOINT_COMMITTER_H_

#include <cstdint>
#include <filesystem>
#include <string>

namespace megabatch::worker {

class CheckpointCommitter {
 public:
  explicit CheckpointCommitter(std::filesystem::path lease_dir)
      : lease_dir_(std::move(lease_dir)) {}

  // The trainer wrote `path` holding `step`: every point before it has
  // been read. Replaces an earlier announcement not yet committed.
  void Announce(int64_t step, std::string path);
  // Commits the newest announcement when `all_stored` (nothing read is
  // waiting to be sent) and deletes the lease's older step-N.pt files.
  // True when it committed one; false (and a warning) when it could not.
  bool CommitIfStored(bool all_stored);
  bool has_announced() const { return !announced_.empty(); }

  // The committed checkpoint of the newest attempt before `lease_id` in
  // `trial_dir` (its lease-N/committed), or "" when there is none.
  static std::string Latest(const std::filesystem::path& trial_dir,
                            int64_t lease_id);

 private:
  std::filesystem::path lease_dir_;
  int64_t step_ = 0;
  std::string announced_;
};

}  // namespace megabatch::worker

#endif  // MEGABATCH_WORKER_DAEMON_CHECKPOINT_COMMITTER_H_
