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
#include <memory>
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

  // Asks for a trial for the worker, waiting up to `wait` for one to
  // become available. `done` is called exactly once, from the scheduler's
  // dispatch thread (or the caller's, on shutdown or CancelLease), with the
  // lease, nullopt if none came within `wait`, UNAVAILABLE once Stop()ped or
  // CANCELLED after CancelLease(); it must not block. No thread waits while
  // the request is parked: a coordinator with 1,000 long-polling workers
  // holds one dispatch thread, not 1,000 (docs/design.md).
  struct LeaseRequest;
  using LeaseDone = std::function<void(Result<std::optional<store::Lease>>)>;
  std::shared_ptr<LeaseRequest> LeaseAsync(int64_t worker_id,
                                           std::chrono::milliseconds wait,
                                           LeaseDone done);
  // The request's caller went away: a waiting request is answered CANCELLED
  // now; one in a batch is answered when the batch ends, and a lease it got
  // is released at once (not left to the lease timeout). A no-op once
  // answered.
  void CancelLease(const std::shared_ptr<LeaseRequest>& request);

  // Lease requests queued or parked now (not yet answered).
  size_t WaitingLeases() EXCLUDES(batch_mu_);

  // Gives back a lease its caller can no longer receive, so the trial is
  // requeued at once instead of after the lease timeout; returns the
  // CANCELLED status to answer with (or the store's error).
  Status ReleaseUnreceived(const store::Lease& lease, int64_t worker_id);

  // LeaseAsync() for a caller with a thread to spare: blocks until answered.
  // `client_gone` is polled while waiting (CancelLease when it says so).
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
  // Lease requests are served in batches, each in one store transaction,
  // by one dispatch thread: requests that arrive while a batch runs queue up
  // in `pending_` and go in the next batch (group commit). A request that
  // finds nothing is parked until its deadline; Notify() moves every parked
  // request back to the queue. So 200 workers woken by one submission cost
  // one transaction, and no thread waits for any of them.
  using Reply = std::pair<LeaseDone, Result<std::optional<store::Lease>>>;
  void Enqueue(const std::shared_ptr<LeaseRequest>& p) REQUIRES(batch_mu_);
  void Unlist(LeaseRequest* p) REQUIRES(batch_mu_);
  // Marks `p` answered with `result`; the answer is delivered (its callback
  // called) by whoever holds `replies`, after releasing batch_mu_.
  void Answer(LeaseRequest* p, Result<std::optional<store::Lease>> result,
              std::vector<Reply>* replies) REQUIRES(batch_mu_);
  // Leases for up to kMaxBatch queued requests; called with batch_mu_ held;
  // releases it during the transaction.
  void LeadBatch(std::vector<Reply>* replies) REQUIRES(batch_mu_);
  void DispatchLoop();
  void ReapLoop();

  store::SweepStore* const store_;
  const SchedulerOptions options_;
  const double started_at_ = NowSeconds();

  Mutex mu_;
  CondVar changed_{&mu_};
  bool stopping_ GUARDED_BY(mu_) = false;
  std::thread reaper_;
  std::thread dispatcher_;

  Mutex batch_mu_;
  // Signalled when a request is queued, cancelled, or the scheduler stops.
  CondVar dispatch_cv_{&batch_mu_};
  std::deque<std::shared_ptr<LeaseRequest>> pending_ GUARDED_BY(batch_mu_);
  std::vector<std::shared_ptr<LeaseRequest>> parked_ GUARDED_BY(batch_mu_);
  bool closed_ GUARDED_BY(batch_mu_) = false;
  // The last batch left a data-parallel trial waiting for more requests.
  bool gang_waiting_ GUARDED_BY(batch_mu_) = false;
  // Counts Notify() calls: a batch that overlapped one requeues the requests
  // it found nothing for instead of parking them.
  int64_t notify_seq_ GUARDED_BY(batch_mu_) = 0;
};

}  // namespace megabatch::scheduler

#endif  // MEGABATCH_SERVER_SCHEDULER_SCHEDULER_H_
