// Which checkpoint a trial resumes from. A trainer announces each checkpoint
// it writes (protocol::kCheckpoint) after printing that step's metrics; the
// worker commits it (lease-N/committed names it, replaced atomically) only
// once every point printed before it is stored at the coordinator, so a
// resume never skips a step. Each attempt (lease) writes into its own
// directory, so an attempt that lost its lease but still runs cannot
// overwrite its successor's.
#ifndef MEGABATCH_WORKER_DAEMON_CHECKPOINT_COMMITTER_H_
#define MEGABATCH_WORKER_DAEMON_CHECKPOINT_COMMITTER_H_

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace megabatch::worker {

class CheckpointCommitter {
 public:
  // `history`: how long older committed checkpoints are kept besides the
  // newest (and then the newest one older than that), so that a database
  // restored from a backup that old finds one at or before its last stored
  // step. 0: only the newest.
  explicit CheckpointCommitter(
      std::filesystem::path lease_dir,
      std::chrono::milliseconds history = std::chrono::milliseconds(0))
      : lease_dir_(std::move(lease_dir)), history_(history) {}

  // The trainer wrote `path` holding `step`: every point before it has
  // been read. Replaces an earlier announcement not yet committed.
  void Announce(int64_t step, std::string path);
  // Commits the newest announcement when `all_stored` (nothing read is
  // waiting to be sent) and deletes the lease's older step-N.pt files that
  // the history does not keep. True when it committed one; false (and a
  // warning) when it could not.
  bool CommitIfStored(bool all_stored);
  bool has_announced() const { return !announced_.empty(); }

  // The checkpoint a new attempt (lease `lease_id`) of the trial whose
  // checkpoints are in `trial_dir` resumes from: of the other attempts'
  // lease-N directories, the step-K.pt with the highest K at or before the
  // directory's committed step and, if given, at or before `max_step` (the
  // coordinator's last stored step); "" when there is none.
  static std::string Latest(const std::filesystem::path& trial_dir,
                            int64_t lease_id,
                            std::optional<int64_t> max_step = std::nullopt);

 private:
  std::filesystem::path lease_dir_;
  std::chrono::milliseconds history_;
  int64_t step_ = 0;
  std::string announced_;
};

}  // namespace megabatch::worker

#endif  // MEGABATCH_WORKER_DAEMON_CHECKPOINT_COMMITTER_H_
