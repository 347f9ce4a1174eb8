// Scheduler: turns submitted specs into queued trials and hands them to
// workers, waking long-polling workers and watchers when something changes,
// and revoking the leases of workers that stop heartbeating.
#ifndef MEGABATCH_SERVER_SCHEDULER_SCHEDULER_H_
#define MEGABATCH_SERVER_SCHEDULER_SCHEDULER_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "server/spec/sweep_spec.h"
#include "server/store/model_store.h"
#include "server/store/sweep_store.h"

namespace megabatch::scheduler {

struct SchedulerOptions {
  // How often workers heartbeat, and how long a silent worker keeps its
  // leases before its trials are requeued.
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds lease_timeout{10000};
  // Told to workers at registration: a directory every worker can reach
  // where trial checkpoints live, so a requeued trial resumes on any worker.
  // Empty: checkpoints stay on the worker that wrote them.
  std::string artifacts_dir;
  // Told to workers at registration: how long they keep a trial's older
  // committed checkpoints (RegisterWorkerResponse.checkpoint_history_ms).
  std::chrono::milliseconds checkpoint_history{0};
  // Called with the seconds from a lease request meeting a queued trial (the
  // request's arrival, or the Notify() that released work to it while it
  // was parked) to the lease.
  std::function<void(double)> on_dispatch;
  // Where uploaded TorchScript modules are (docs/models.md); null: a sweep
  // of model.type torchscript is refused.
  const store::ModelStore* models = nullptr;
};

// Seconds since the Unix epoch, as stored in the database.
double NowSeconds();

// What a submitter may ask of the coordinator (CoordinatorOptions: set by
// the admin who runs it; users get one policy, admins another).
struct SubmitPolicy {
  int32_t max_priority = std::numeric_limits<int32_t>::max();
  // Queued and running trials of all the owner's sweeps; 0: no limit.
  int64_t max_pending_trials = 0;
  // Parameters of a sweep's model (spec::EstimateParameters); 0: no limit.
  int64_t max_model_parameters = 0;
  // Where a dataset.path may point (spec::ParseSweepSpec); empty: anywhere.
  std::vector<std::string> data_roots;
};

// Thread-safe. `store` must outlive the Scheduler.
class Scheduler {
 public:
  Scheduler(store::SweepStore* store, SchedulerOptions options);
  ~Scheduler();  // Stop()s and joins the reaper thread
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  const SchedulerOptions& options() const { return options_; }

  // Parses, validates, expands and stores a sweep owned by `owner` (a token
  // name; empty without auth) within `policy`; returns its id and trial
  // count. INVALID_ARGUMENT (naming the field) for a bad spec, a model
  // larger or a dataset.path elsewhere than the policy allows;
  // PERMISSION_DENIED for a priority above the policy's; RESOURCE_EXHAUSTED
  // when the owner's queued and running trials would pass the policy's
  // quota; nothing is stored then.
  struct Submitted {
    int64_t sweep_id = 0;
    int32_t trials = 0;
    bool repeated = false;  // the owner's request id named an existing sweep
  };
  Result<Submitted> Submit(std::string_view spec_text, spec::SpecFormat format,
                           const std::string& request_id,
                           const std::string& owner = "",
                           const SubmitPolicy& policy = {});

  Result<store::SweepRow> Cancel(int64_t sweep_id);

  // Leases a trial to the worker, waiting up to `wait` for one to become
  // available. nullopt if none did. `client_gone` is polled while waiting
  // and once a lease is granted: a lease its caller can no longer receive is
  // released at once (CANCELLED) instead of waiting out the lease timeout.
  Result<std::optional<store::Lease>> Lease(
      int64_t worker_id, std::chrono::milliseconds wait,
      const std::function<bool()>& client_gone = [] { return false; });

  Result<store::TrialState> Finish(int64_t trial_id, int64_t lease_id,
                                   int64_t worker_id, store::TrialState outcome,
                                   const std::string& message,
                                   const std::string& stderr_tail,
                                   int32_t rank = 0, bool retry = true);

  // Blocks until the store's version differs from `seen` or `deadline`
  // passes; returns the current version.
  int64_t WaitForChange(int64_t seen,
                        std::chrono::steady_clock::time_point deadline);

  // After a change that may let a waiting worker lease (a sweep submitted,
  // a slot freed, a trial requeued): runs one batch for every parked lease
  // request, and wakes the watchers. The store calls it (SetListener) after
  // each such commit; nothing else needs to.
  void Notify();

  // Wakes WaitForChange() callers only (a change that frees nothing); the
  // store calls it after the other commits.
  void NotifyWatchers();

  // Wakes every waiter for good: Lease() answers UNAVAILABLE from now on.
  // Idempotent; called before the server shuts down.
  void Stop();

 private:
  // Lease requests are served in batches, each in one store transaction:
  // requests that arrive while a batch runs queue up in `pending_`, and the
  // oldest of them leads the next batch (group commit). A request that finds
  // nothing is parked without waking its thread; Notify() moves every parked
  // request back to the queue and wakes one thread to lead. So 200 workers
  // woken by one submission cost one transaction and 200 wake-ups, not 200
  // of each plus a convoy on one mutex.
  struct PendingLease {
    enum class Where { kQueued, kInFlight, kParked, kDone };
    int64_t worker_id = 0;
    Where where = Where::kQueued;
    Result<std::optional<store::Lease>> result{std::optional<store::Lease>()};
    // When it last joined the queue: the start of its dispatch latency.
    std::chrono::steady_clock::time_point queued_at;
    // The store's version before the batch that found nothing for it.
    int64_t seen_version = 0;
    explicit PendingLease(Mutex* mu) : cv(mu) {}
    CondVar cv;
  };
  void Enqueue(PendingLease* p) REQUIRES(batch_mu_);
  void Unlist(PendingLease* p) REQUIRES(batch_mu_);
  // Leases for up to kMaxBatch queued requests; called with batch_mu_ held
  // and no batch running; releases it during the transaction.
  void LeadBatch() REQUIRES(batch_mu_);
  void ReapLoop();

  store::SweepStore* const store_;
  const SchedulerOptions options_;
  const double started_at_ = NowSeconds();

  Mutex mu_;
  CondVar changed_{&mu_};
  bool stopping_ GUARDED_BY(mu_) = false;
  std::thread reaper_;

  Mutex batch_mu_;
  std::deque<PendingLease*> pending_ GUARDED_BY(batch_mu_);
  std::vector<PendingLease*> parked_ GUARDED_BY(batch_mu_);
  bool leading_ GUARDED_BY(batch_mu_) = false;
  bool closed_ GUARDED_BY(batch_mu_) = false;
  // The last batch left a data-parallel trial waiting for more requests.
  bool gang_waiting_ GUARDED_BY(batch_mu_) = false;
  // Counts Notify() calls: a batch that overlapped one requeues the requests
  // it found nothing for instead of parking them.
  int64_t notify_seq_ GUARDED_BY(batch_mu_) = 0;
};

}  // namespace megabatch::scheduler

#endif  // MEGABATCH_SERVER_SCHEDULER_SCHEDULER_H_
