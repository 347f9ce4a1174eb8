#include "worker/daemon/checkpoint_committer.h"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <fstream>
#include <map>

#include "worker/daemon/private_files.h"

namespace megabatch::worker {
namespace {

namespace fs = std::filesystem;

// A lease directory's "committed" file names its newest checkpoint whose
// step's metrics (and every earlier step's) the coordinator has stored.
constexpr const char* kCommitted = "committed";

// The step of a checkpoint file named step-K.pt; -1 for any other name.
int64_t StepOf(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() <= 8 ||
      name.compare(name.size() - 3, 3, ".pt") != 0) {
    return -1;
  }
  char* end = nullptr;
  const long long step = std::strtoll(name.c_str() + 5, &end, 10);
  return end == name.c_str() + name.size() - 3 && step >= 0 ? step : -1;
}

// The lease directory's step-K.pt files by K.
std::map<int64_t, fs::path> StepFiles(const fs::path& lease_dir) {
  std::map<int64_t, fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(lease_dir, ec)) {
    const int64_t step = StepOf(entry.path().filename().string());
    if (step >= 0) files[step] = entry.path();
  }
  return files;
}

bool Commit(const fs::path& lease_dir, int64_t step,
            const std::string& checkpoint, std::chrono::milliseconds history) {
  if (Status written =
          WriteFileAtomically((lease_dir / kCommitted).string(),
                              fs::path(checkpoint).filename().string() + "\n");
      !written.ok()) {
    spdlog::warn("cannot commit checkpoint {}: {}", checkpoint,
                 written.message());
    return false;
  }
  // Older ones: those written within `history` stay, and so does the newest
  // written before it; the rest go.
  std::error_code ec;
  const auto cutoff = fs::file_time_type::clock::now() - history;
  bool kept_one_older = false;
  const auto files = StepFiles(lease_dir);
  for (auto it = files.rbegin(); it != files.rend(); ++it) {
    if (it->first >= step) continue;
    if (history.count() > 0) {
      const auto written = fs::last_write_time(it->second, ec);
      if (!ec && written >= cutoff) continue;
      if (!ec && !kept_one_older) {
        kept_one_older = true;
        continue;
      }
    }
    fs::remove(it->second, ec);
  }
  return true;
}

}  // namespace

void CheckpointCommitter::Announce(int64_t step, std::string path) {
  step_ = step;
  announced_ = std::move(path);
}

bool CheckpointCommitter::CommitIfStored(bool all_stored) {
  if (announced_.empty() || !all_stored) return false;
  const bool committed = Commit(lease_dir_, step_, announced_, history_);
  announced_.clear();
  return committed;
}

std::string CheckpointCommitter::Latest(const fs::path& trial_dir,
                                        int64_t lease_id,
                                        std::optional<int64_t> max_step) {
  int64_t best_step = -1, best_lease = -1, skipped = -1;
  std::string path;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(trial_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("lease-", 0) != 0) continue;
    const int64_t n = std::atoll(name.c_str() + 6);
    std::ifstream committed(entry.path() / kCommitted);
    std::string file;
    if (n == lease_id || !std::getline(committed, file)) continue;
    const int64_t committed_step = StepOf(file);
    for (const auto& [step, candidate] : StepFiles(entry.path())) {
      if (step > committed_step) break;
      if (max_step && step > *max_step) {
        skipped = std::max(skipped, step);
        break;
      }
      if (step > best_step || (step == best_step && n > best_lease)) {
        best_step = step;
        best_lease = n;
        path = candidate.string();
      }
    }
  }
  if (skipped > best_step) {
    spdlog::warn(
        "{}: a checkpoint at step {} is past step {}, the last the "
        "coordinator has stored (a database restored from a backup): "
        "resuming from {}",
        trial_dir.string(), skipped, *max_step,
        path.empty() ? std::string("scratch") : path);
  }
  return path;
}

}  // namespace megabatch::worker
