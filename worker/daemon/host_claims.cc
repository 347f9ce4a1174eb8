#include "worker/daemon/host_claims.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <thread>

#include "worker/daemon/private_files.h"

namespace megabatch::worker {
namespace {

constexpr const char* kPrefix = "worker-";

bool Alive(pid_t pid) {
  return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
}

}  // namespace

int UsableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
    return CPU_COUNT(&set);
  }
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

ThreadPlan PlanThreads(int cores, int slots, int requested,
                       int claimed_by_others) {
  ThreadPlan plan;
  const int free_cores = std::max(0, cores - claimed_by_others);
  plan.threads_per_slot =
      requested > 0 ? requested : std::max(1, free_cores / slots);
  const int wanted = slots * plan.threads_per_slot;
  plan.oversubscribed = wanted > free_cores;
  if (plan.oversubscribed) {
    plan.warning =
        std::to_string(slots) + " slots x " +
        std::to_string(plan.threads_per_slot) +
        " threads = " + std::to_string(wanted) + " threads, but " +
        std::to_string(free_cores) + " of this host's " +
        std::to_string(cores) +
        " cores are free (other megabatch workers claim " +
        std::to_string(claimed_by_others) +
        "): trainers will share cores, run slower, and their time figures "
        "(seconds_to_target, samples_per_second) are marked as shared in "
        "reports; give fewer --slots or --threads-per-slot";
  }
  return plan;
}

HostClaims::HostClaims(std::string dir)
    : dir_(std::move(dir)),
      file_(
          (std::filesystem::path(dir_) / (kPrefix + std::to_string(::getpid())))
              .string()) {}

Result<std::unique_ptr<HostClaims>> HostClaims::Open(const std::string& dir) {
  if (Status s = EnsurePrivateDir(dir); !s.ok()) {
    return Status(s.code(), "host claims directory " + s.message());
  }
  if (::access(dir.c_str(), W_OK) != 0) {
    return UnavailableError("host claims directory " + dir + ": not writable");
  }
  return std::unique_ptr<HostClaims>(new HostClaims(dir));
}

HostClaims::~HostClaims() {
  MutexLock lock(&mu_);
  if (published_) ::unlink(file_.c_str());
}

HostClaims::Totals HostClaims::Read() const {
  Totals totals;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(kPrefix, 0) != 0 || name.find('.') != std::string::npos)
      continue;
    const pid_t pid =
        static_cast<pid_t>(std::atol(name.c_str() + std::strlen(kPrefix)));
    if (pid == ::getpid()) continue;
    if (!Alive(pid)) {
      std::error_code ignored;
      std::filesystem::remove(entry.path(),
                              ignored);  // left by a killed worker
      continue;
    }
    Result<std::string> claim = ReadOwnFile(entry.path().string());
    if (!claim.ok()) continue;  // not this user's
    std::istringstream in(*claim);
    int capacity = 0, active = 0;
    if (in >> capacity >> active) {
      totals.others_capacity += std::max(0, capacity);
      totals.active += std::max(0, active);
    }
  }
  MutexLock lock(&mu_);
  totals.active += active_;
  return totals;
}

Status HostClaims::Publish(int capacity) {
  MutexLock lock(&mu_);
  capacity_ = capacity;
  return WriteLocked();
}

void HostClaims::AddActive(int threads) {
  MutexLock lock(&mu_);
  active_ = std::max(0, active_ + threads);
  // Best effort: a count left stale only mislabels sharing, never a result.
  if (published_) (void)WriteLocked();
}

Status HostClaims::WriteLocked() {
  // Readers see the old claim or the new one, never half of one.
  Status written = WriteFileAtomically(
      file_, std::to_string(capacity_) + " " + std::to_string(active_) + "\n");
  if (!written.ok()) {
    return Status(written.code(), "host claim " + written.message());
  }
  published_ = true;
  return Status();
}

}  // namespace megabatch::worker
