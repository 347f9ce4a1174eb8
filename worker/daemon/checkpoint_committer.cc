#include "worker/daemon/checkpoint_committer.h"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <fstream>

namespace megabatch::worker {
namespace {

// A lease directory's "committed" file names its newest checkpoint whose
// step's metrics (and every earlier step's) the coordinator has stored.
constexpr const char* kCommitted = "committed";

bool Commit(const std::filesystem::path& lease_dir, int64_t step,
            const std::string& checkpoint) {
  namespace fs = std::filesystem;
  fs::path tmp = lease_dir / (std::string(kCommitted) + ".tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << fs::path(checkpoint).filename().string() << "\n";
    out.flush();
    if (!out) {
      spdlog::warn("cannot write {}", tmp.string());
      return false;
    }
  }
  std::error_code ec;
  fs::rename(tmp, lease_dir / kCommitted, ec);
  if (ec) {
    spdlog::warn("cannot commit checkpoint {}: {}", checkpoint, ec.message());
    return false;
  }
  for (const auto& entry : fs::directory_iterator(lease_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("step-", 0) == 0 && std::atoll(name.c_str() + 5) < step) {
      fs::remove(entry.path(), ec);
    }
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
  const bool committed = Commit(lease_dir_, step_, announced_);
  announced_.clear();
  return committed;
}

std::string CheckpointCommitter::Latest(const std::filesystem::path& trial_dir,
                                        int64_t lease_id) {
  namespace fs = std::filesystem;
  int64_t best = -1;
  std::string path;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(trial_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("lease-", 0) != 0) continue;
    int64_t n = std::atoll(name.c_str() + 6);
    std::ifstream committed(entry.path() / kCommitted);
    std::string file;
    if (n == lease_id || n <= best || !std::getline(committed, file)) continue;
    fs::path candidate = entry.path() / file;
    if (fs::exists(candidate, ec)) {
      best = n;
      path = candidate.string();
    }
  }
  return path;
}

}  // namespace megabatch::worker
