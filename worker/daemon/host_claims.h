// The cores of one host, given out once among every megabatch worker on it.
//
// Each worker keeps a claim file in a directory the workers of one user share
// (default DefaultRuntimeDir()/cores, private to that user: a claim another
// local user could plant or redirect is never read or followed):
// "worker-<pid>" holding the threads it may run at
// once (slots x threads per slot) and the threads its trainers run now. A
// worker starting next to others sizes its threads to the cores they left
// (PlanThreads), and every trial learns whether the host's running trainers
// outnumber its cores, so that its time figures can be marked as shared
// (docs/running.md, "Cores, threads and warm trainers"). Claims of processes
// that are gone are ignored and removed, so a kill -9 leaves nothing that
// counts. LibTorch-free; thread-safe.
#ifndef MEGABATCH_WORKER_DAEMON_HOST_CLAIMS_H_
#define MEGABATCH_WORKER_DAEMON_HOST_CLAIMS_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "common/mutex.h"
#include "common/status.h"
#include "common/thread_annotations.h"

namespace megabatch::worker {

// The cores this process may run on (its CPU affinity), at least 1.
int UsableCores();

struct ThreadPlan {
  int threads_per_slot = 1;
  // slots x threads_per_slot exceeds the cores the other workers left.
  bool oversubscribed = false;
  std::string warning;  // set when oversubscribed: what and why
};
// Threads per slot for `slots` slots on `cores` cores of which other workers
// claimed `claimed_by_others`: `requested` when given (> 0), else the free
// cores divided among the slots (at least 1).
ThreadPlan PlanThreads(int cores, int slots, int requested,
                       int claimed_by_others);

class HostClaims {
 public:
  struct Totals {
    int others_capacity = 0;  // threads other live workers may run at once
    int active = 0;           // threads running now, this worker's included
  };

  // Opens `dir` (EnsurePrivateDir: made 0700, or an existing directory of
  // this user that no one else can write). Publish() makes the claim; the
  // destructor withdraws it. Files in it that are not this user's regular
  // files are ignored.
  static Result<std::unique_ptr<HostClaims>> Open(const std::string& dir);
  ~HostClaims();
  HostClaims(const HostClaims&) = delete;
  HostClaims& operator=(const HostClaims&) = delete;

  // The claims of the other live workers and of this one.
  Totals Read() const;
  // Claims `capacity` threads for this worker.
  Status Publish(int capacity);
  // This worker's trainers run `threads` more (or fewer, when negative)
  // threads from now on.
  void AddActive(int threads);

 private:
  explicit HostClaims(std::string dir);
  Status WriteLocked() REQUIRES(mu_);

  const std::string dir_;
  const std::string file_;  // this worker's claim
  mutable Mutex mu_;
  int capacity_ GUARDED_BY(mu_) = 0;
  int active_ GUARDED_BY(mu_) = 0;
  bool published_ GUARDED_BY(mu_) = false;
};

}  // namespace megabatch::worker

#endif  // MEGABATCH_WORKER_DAEMON_HOST_CLAIMS_H_
