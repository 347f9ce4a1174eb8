#include "server/scheduler/scheduler.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/model_catalog.h"
#include "common/printable.h"

namespace megabatch::scheduler {

double NowSeconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

Scheduler::Scheduler(store::SweepStore* store, SchedulerOptions options)
    : store_(store), options_(options) {
  // Every committed change reaches the scheduler through the store itself.
  store_->SetListener([this](store::Change change) {
    if (change == store::Change::kWork) {
      Notify();
    } else {
      NotifyWatchers();
    }
  });
  reaper_ = std::thread([this] { ReapLoop(); });
}

Scheduler::~Scheduler() {
  Stop();
  reaper_.join();
  store_->SetListener(nullptr);
}

void Scheduler::Stop() {
  {
    MutexLock lock(&batch_mu_);
    closed_ = true;
    for (PendingLease* p : pending_) p->cv.Signal();
    for (PendingLease* p : parked_) p->cv.Signal();
  }
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  changed_.SignalAll();
}

void Scheduler::Notify() {
  {
    MutexLock lock(&batch_mu_);
    ++notify_seq_;
    for (PendingLease* p : parked_) Enqueue(p);
    parked_.clear();
    if (!leading_ && !pending_.empty()) pending_.front()->cv.Signal();
  }
  NotifyWatchers();
}

void Scheduler::NotifyWatchers() {
  // Taking the mutex orders the notification after any waiter's check.
  { MutexLock lock(&mu_); }
  changed_.SignalAll();
}

Result<Scheduler::Submitted> Scheduler::Submit(std::string_view spec_text,
                                               spec::SpecFormat format,
                                               const std::string& request_id,
                                               const std::string& owner,
                                               const SubmitPolicy& policy) {
  MEGABATCH_ASSIGN_OR_RETURN(
      spec::SweepSpec spec,
      spec::ParseSweepSpec(
          spec_text, format,
          policy.data_roots.empty() ? nullptr : &policy.data_roots));
  if (spec.priority > policy.max_priority) {
    return Status(StatusCode::kPermissionDenied,
                  "priority: " + std::to_string(spec.priority) + " is above " +
                      std::to_string(policy.max_priority) + ", the most '" +
                      owner +
                      "' may set (an admin sets it: "
                      "--max-user-priority)");
  }
  if (const int64_t parameters = spec::EstimateParameters(spec.model);
      policy.max_model_parameters > 0 &&
      parameters > policy.max_model_parameters) {
    return InvalidArgumentError(
        "model: about " + std::to_string(parameters) + " parameters (" +
        std::to_string(parameters * 16 >> 30) +
        " GiB of weights, gradients and optimizer state); at most " +
        std::to_string(policy.max_model_parameters) +
        " (--max-model-parameters)");
  }
  if (spec.model.value("type", "") == kTorchScriptModel) {
    const std::string sha256 = spec.model["sha256"];
    if (options_.models == nullptr || !options_.models->Has(sha256)) {
      return FailedPreconditionError(
          "model.sha256: no module " + sha256 +
          " was uploaded to this coordinator; upload it first "
          "(SweepService.UploadModel: megabatch submit and the Python client "
          "do)");
    }
    // The size the parameter estimate reads is the stored file's.
    const int64_t stored = options_.models->SizeOf(sha256);
    if (spec.model["bytes"].get<int64_t>() != stored) {
      return InvalidArgumentError(
          "model.bytes: " + spec.model["bytes"].dump() + ", but module " +
          sha256.substr(0, 12) + " holds " + std::to_string(stored) + " bytes");
    }
  }
  std::vector<spec::TrialSpec> trials = spec::ExpandSweep(spec);
  MEGABATCH_RETURN_IF_ERROR(spec::CheckTrialConfigs(trials));
  if (policy.max_pending_trials > 0) {
    MEGABATCH_ASSIGN_OR_RETURN(int64_t pending, store_->PendingTrials(owner));
    if (pending + static_cast<int64_t>(trials.size()) >
        policy.max_pending_trials) {
      return Status(StatusCode::kResourceExhausted,
                    "'" + owner + "' has " + std::to_string(pending) +
                        " trials queued or running; this sweep's " +
                        std::to_string(trials.size()) +
                        " would pass the quota of " +
                        std::to_string(policy.max_pending_trials) +
                        " (--max-pending-trials-per-owner); wait for some "
                        "to finish or cancel a sweep");
    }
  }
  MEGABATCH_ASSIGN_OR_RETURN(
      store::SweepStore::CreatedSweep created,
      store_->CreateSweep(spec, trials, request_id, NowSeconds(), owner));
  const int64_t id = created.id;
  if (created.existed) {
    MEGABATCH_ASSIGN_OR_RETURN(store::SweepRow row, store_->GetSweep(id));
    return Submitted{id, row.trials_total, true};
  }
  spdlog::info("sweep {} '{}' submitted with {} trials", id,
               Printable(spec.name), trials.size());
  return Submitted{id, static_cast<int32_t>(trials.size())};
}

Result<store::SweepRow> Scheduler::Cancel(int64_t sweep_id) {
  Result<store::SweepRow> row = store_->CancelSweep(sweep_id, NowSeconds());
  if (row.ok()) {
    spdlog::info("sweep {} cancelled", sweep_id);
  }
  return row;
}

Result<std::optional<store::Lease>> Scheduler::Lease(
    int64_t worker_id, std::chrono::milliseconds wait,
    const std::function<bool()>& client_gone) {
  using Where = PendingLease::Where;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  // A parked request wakes this often to notice a caller that went away, or
  // a change that came without Notify().
  constexpr auto kSlice = std::chrono::milliseconds(200);
  PendingLease self(&batch_mu_);
  self.worker_id = worker_id;
  MutexLock lock(&batch_mu_);
  Enqueue(&self);
  if (gang_waiting_) {
    // A data-parallel trial waits for enough requests in one batch: bring
    // every idle one along with this newcomer.
    for (PendingLease* p : parked_) Enqueue(p);
    parked_.clear();
  }
  while (self.where != Where::kDone) {
    if (closed_ && self.where != Where::kInFlight) {
      Unlist(&self);
      return UnavailableError("coordinator is shutting down");
    }
    if (self.where == Where::kQueued && !leading_) {
      LeadBatch();
      continue;
    }
    const auto now = std::chrono::steady_clock::now();
    if (self.where == Where::kParked && (now >= deadline || client_gone())) {
      Unlist(&self);
      return std::optional<store::Lease>();
    }
    // Only a parked request answers at its deadline; a queued or in-flight
    // one waits for its batch whatever the time (a past deadline here once
    // made hundreds of them spin, starving the batch they waited for).
    self.cv.WaitUntil(self.where == Where::kParked
                          ? std::min(deadline, now + kSlice)
                          : now + kSlice);
    // Once a slice: a safety net for a change whose Notify() it missed.
    if (self.where == Where::kParked &&
        store_->version() != self.seen_version) {
      Unlist(&self);
      Enqueue(&self);
    }
  }
  lock.Unlock();
  // Only grants and errors are handed back; "nothing" parks the request.
  if (!self.result.ok()) return std::move(self.result);
  const store::Lease& l = **self.result;
  if (client_gone()) {
    MEGABATCH_RETURN_IF_ERROR(store_->ReleaseLease(
        l.trial_id, l.lease_id, worker_id, NowSeconds(), l.rank));
    return Status(
        StatusCode::kCancelled,
        "worker " + std::to_string(worker_id) + " went away; lease released");
  }
  if (options_.on_dispatch) {
    options_.on_dispatch(std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - self.queued_at)
                             .count());
  }
  return std::move(self.result);
}

void Scheduler::Enqueue(PendingLease* p) {
  p->where = PendingLease::Where::kQueued;
  p->queued_at = std::chrono::steady_clock::now();
  pending_.push_back(p);
}

void Scheduler::Unlist(PendingLease* p) {
  if (p->where == PendingLease::Where::kQueued) {
    pending_.erase(std::find(pending_.begin(), pending_.end(), p));
  } else if (p->where == PendingLease::Where::kParked) {
    parked_.erase(std::find(parked_.begin(), parked_.end(), p));
  }
}

void Scheduler::LeadBatch() {
  using Where = PendingLease::Where;
  // At most this many leases in one transaction, bounding its time.
  constexpr size_t kMaxBatch = 256;
  leading_ = true;
  const size_t n = std::min(pending_.size(), kMaxBatch);
  std::vector<PendingLease*> batch(pending_.begin(), pending_.begin() + n);
  pending_.erase(pending_.begin(), pending_.begin() + n);
  std::vector<int64_t> ids;
  ids.reserve(n);
  for (PendingLease* p : batch) {
    p->where = Where::kInFlight;
    ids.push_back(p->worker_id);
  }
  const int64_t seq = notify_seq_;
  batch_mu_.Unlock();
  const int64_t version = store_->version();
  bool gang_waiting = false;
  std::vector<Result<std::optional<store::Lease>>> results =
      store_->LeaseBatch(ids, NowSeconds(), &gang_waiting);
  batch_mu_.Lock();
  gang_waiting_ = gang_waiting;
  // Every hand-back happens under the lock: a request cannot return (and
  // destroy its condition variable) before this is done with it.
  for (size_t i = 0; i < n; ++i) {
    PendingLease* p = batch[i];
    if (results[i].ok() && !results[i]->has_value()) {
      if (notify_seq_ != seq) {
        Enqueue(p);  // something changed during the batch: ask again
      } else {
        p->where = Where::kParked;
        p->seen_version = version;
        parked_.push_back(p);
      }
      continue;
    }
    p->result = std::move(results[i]);
    p->where = Where::kDone;
    p->cv.Signal();
  }
  leading_ = false;
  if (!pending_.empty()) pending_.front()->cv.Signal();
}

Result<store::TrialState> Scheduler::Finish(int64_t trial_id, int64_t lease_id,
                                            int64_t worker_id,
                                            store::TrialState outcome,
                                            const std::string& message,
                                            const std::string& stderr_tail,
                                            int32_t rank, bool retry) {
  Result<store::TrialState> state =
      store_->FinishTrial(trial_id, lease_id, worker_id, outcome, message,
                          stderr_tail, NowSeconds(), rank, retry);
  if (state.ok()) {
    spdlog::info("trial {} attempt ended {}; now {}", trial_id,
                 store::TrialStateName(outcome), store::TrialStateName(*state));
  }
  return state;
}

int64_t Scheduler::WaitForChange(
    int64_t seen, std::chrono::steady_clock::time_point deadline) {
  MutexLock lock(&mu_);
  while (!stopping_ && store_->version() == seen &&
         changed_.WaitUntil(deadline)) {
  }
  return store_->version();
}

void Scheduler::ReapLoop() {
  MutexLock lock(&mu_);
  while (!stopping_) {
    const auto next =
        std::chrono::steady_clock::now() + options_.heartbeat_interval;
    while (!stopping_ && changed_.WaitUntil(next)) {
    }
    if (stopping_) break;
    lock.Unlock();
    double now = NowSeconds();
    double timeout =
        std::chrono::duration<double>(options_.lease_timeout).count();
    // After a (re)start, every worker gets a full lease timeout to heartbeat
    // again before its trials are taken back: the coordinator's own downtime
    // is not the workers' silence.
    if (now - started_at_ < timeout) {
      lock.Lock();
      continue;
    }
    Result<int> requeued = store_->ExpireWorkers(now - timeout, now);
    if (!requeued.ok()) {
      spdlog::error("expiring silent workers: {}",
                    requeued.status().ToString());
    } else if (*requeued > 0) {
      spdlog::warn("requeued {} trials of lost workers", *requeued);
    }
    lock.Lock();
  }
}

}  // namespace megabatch::scheduler
