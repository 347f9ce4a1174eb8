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
  dispatcher_ = std::thread([this] { DispatchLoop(); });
}

Scheduler::~Scheduler() {
  Stop();
  reaper_.join();
  dispatcher_.join();
  store_->SetListener(nullptr);
}

void Scheduler::Stop() {
  {
    MutexLock lock(&batch_mu_);
    closed_ = true;
  }
  dispatch_cv_.Signal();
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
    for (const auto& p : parked_) Enqueue(p);
    parked_.clear();
  }
  dispatch_cv_.Signal();
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

namespace {

// The answer to a lease request whose caller went away before it was given
// a trial.
Status WentAway(int64_t worker_id) {
  return Status(StatusCode::kCancelled,
                "worker " + std::to_string(worker_id) + " went away");
}

}  // namespace

struct Scheduler::LeaseRequest {
  enum class Where { kQueued, kInFlight, kParked, kDone };
  int64_t worker_id = 0;
  Where where = Where::kQueued;
  // A parked request is answered "nothing" then.
  std::chrono::steady_clock::time_point deadline;
  // When it last joined the queue: the start of its dispatch latency.
  std::chrono::steady_clock::time_point queued_at;
  // The store's version before the batch that found nothing for it.
  int64_t seen_version = 0;
  // CancelLease() came while it was in a batch.
  bool cancelled = false;
  LeaseDone done;
};

std::shared_ptr<Scheduler::LeaseRequest> Scheduler::LeaseAsync(
    int64_t worker_id, std::chrono::milliseconds wait, LeaseDone done) {
  auto request = std::make_shared<LeaseRequest>();
  request->worker_id = worker_id;
  request->deadline = std::chrono::steady_clock::now() + wait;
  request->done = std::move(done);
  bool queued = false;
  {
    MutexLock lock(&batch_mu_);
    if (!closed_) {
      queued = true;
      Enqueue(request);
      if (gang_waiting_) {
        // A data-parallel trial waits for enough requests in one batch:
        // bring every idle one along with this newcomer.
        for (const auto& p : parked_) Enqueue(p);
        parked_.clear();
      }
    }
  }
  if (queued) {
    dispatch_cv_.Signal();
    return request;
  }
  request->where = LeaseRequest::Where::kDone;  // never listed: not shared
  request->done(UnavailableError("coordinator is shutting down"));
  return request;
}

void Scheduler::CancelLease(const std::shared_ptr<LeaseRequest>& request) {
  using Where = LeaseRequest::Where;
  std::vector<Reply> replies;
  {
    MutexLock lock(&batch_mu_);
    if (request->where == Where::kInFlight) {
      request->cancelled = true;  // LeadBatch answers it
    } else if (request->where != Where::kDone) {
      Unlist(request.get());
      Answer(request.get(), WentAway(request->worker_id), &replies);
    }
  }
  for (auto& [done, result] : replies) done(std::move(result));
}

Result<std::optional<store::Lease>> Scheduler::Lease(
    int64_t worker_id, std::chrono::milliseconds wait,
    const std::function<bool()>& client_gone) {
  // How often the caller is asked whether it went away.
  constexpr auto kSlice = std::chrono::milliseconds(200);
  Mutex mu;
  CondVar answered(&mu);
  std::optional<Result<std::optional<store::Lease>>> out;
  auto request = LeaseAsync(worker_id, wait,
                            [&](Result<std::optional<store::Lease>> result) {
                              MutexLock lock(&mu);
                              out = std::move(result);
                              answered.Signal();
                            });
  MutexLock lock(&mu);
  while (!out.has_value()) {
    answered.WaitUntil(std::chrono::steady_clock::now() + kSlice);
    if (!out.has_value() && client_gone()) {
      lock.Unlock();
      CancelLease(request);
      lock.Lock();
    }
  }
  if (out->ok() && out->value().has_value() && client_gone()) {
    return ReleaseUnreceived(***out, worker_id);
  }
  return std::move(*out);
}

size_t Scheduler::WaitingLeases() {
  MutexLock lock(&batch_mu_);
  return pending_.size() + parked_.size();
}

Status Scheduler::ReleaseUnreceived(const store::Lease& lease,
                                    int64_t worker_id) {
  MEGABATCH_RETURN_IF_ERROR(store_->ReleaseLease(
      lease.trial_id, lease.lease_id, worker_id, NowSeconds(), lease.rank));
  return Status(StatusCode::kCancelled, "worker " + std::to_string(worker_id) +
                                            " went away; lease released");
}

void Scheduler::Enqueue(const std::shared_ptr<LeaseRequest>& p) {
  p->where = LeaseRequest::Where::kQueued;
  p->queued_at = std::chrono::steady_clock::now();
  pending_.push_back(p);
}

void Scheduler::Unlist(LeaseRequest* p) {
  auto is_p = [p](const std::shared_ptr<LeaseRequest>& q) {
    return q.get() == p;
  };
  if (p->where == LeaseRequest::Where::kQueued) {
    pending_.erase(std::find_if(pending_.begin(), pending_.end(), is_p));
  } else if (p->where == LeaseRequest::Where::kParked) {
    parked_.erase(std::find_if(parked_.begin(), parked_.end(), is_p));
  }
}

void Scheduler::Answer(LeaseRequest* p,
                       Result<std::optional<store::Lease>> result,
                       std::vector<Reply>* replies) {
  p->where = LeaseRequest::Where::kDone;
  replies->emplace_back(std::move(p->done), std::move(result));
}

void Scheduler::DispatchLoop() {
  // A parked request is looked at this often for a change that came without
  // Notify() (a safety net).
  constexpr auto kSlice = std::chrono::milliseconds(200);
  std::vector<Reply> replies;
  MutexLock lock(&batch_mu_);
  while (true) {
    if (closed_) {
      for (const auto& p : pending_) {
        Answer(p.get(), UnavailableError("coordinator is shutting down"),
               &replies);
      }
      for (const auto& p : parked_) {
        Answer(p.get(), UnavailableError("coordinator is shutting down"),
               &replies);
      }
      pending_.clear();
      parked_.clear();
    } else if (!pending_.empty()) {
      LeadBatch(&replies);
    }
    const auto now = std::chrono::steady_clock::now();
    auto wake = now + kSlice;
    const int64_t version = store_->version();
    std::vector<std::shared_ptr<LeaseRequest>> still_parked;
    for (auto& p : parked_) {
      if (p->deadline <= now) {
        Answer(p.get(), std::optional<store::Lease>(), &replies);
      } else if (p->seen_version != version) {
        Enqueue(p);
      } else {
        wake = std::min(wake, p->deadline);
        still_parked.push_back(std::move(p));
      }
    }
    parked_ = std::move(still_parked);
    if (!replies.empty()) {
      lock.Unlock();
      for (auto& [done, result] : replies) done(std::move(result));
      replies.clear();
      lock.Lock();
      continue;
    }
    if (closed_) {
      // A batch that ran while Stop() came may have parked or requeued
      // requests: the top of the loop answers them.
      if (pending_.empty() && parked_.empty()) return;
      continue;
    }
    if (pending_.empty()) dispatch_cv_.WaitUntil(wake);
  }
}

void Scheduler::LeadBatch(std::vector<Reply>* replies) {
  using Where = LeaseRequest::Where;
  // At most this many leases in one transaction, bounding its time.
  constexpr size_t kMaxBatch = 256;
  const size_t n = std::min(pending_.size(), kMaxBatch);
  std::vector<std::shared_ptr<LeaseRequest>> batch(pending_.begin(),
                                                   pending_.begin() + n);
  pending_.erase(pending_.begin(), pending_.begin() + n);
  std::vector<int64_t> ids;
  ids.reserve(n);
  for (const auto& p : batch) {
    p->where = Where::kInFlight;
    ids.push_back(p->worker_id);
  }
  const int64_t seq = notify_seq_;
  batch_mu_.Unlock();
  const int64_t version = store_->version();
  bool gang_waiting = false;
  std::vector<Result<std::optional<store::Lease>>> results =
      store_->LeaseBatch(ids, NowSeconds(), &gang_waiting);
  const auto leased_at = std::chrono::steady_clock::now();
  // A lease whose caller went away during the batch goes straight back.
  for (size_t i = 0; i < n; ++i) {
    if (!results[i].ok() || !results[i]->has_value()) continue;
    bool cancelled;
    {
      MutexLock lock(&batch_mu_);
      cancelled = batch[i]->cancelled;
    }
    if (!cancelled) continue;
    results[i] = ReleaseUnreceived(**results[i], batch[i]->worker_id);
  }
  batch_mu_.Lock();
  gang_waiting_ = gang_waiting;
  for (size_t i = 0; i < n; ++i) {
    LeaseRequest* p = batch[i].get();
    if (results[i].ok() && !results[i]->has_value()) {
      if (p->cancelled) {
        Answer(p, WentAway(p->worker_id), replies);
      } else if (leased_at >= p->deadline) {
        Answer(p, std::optional<store::Lease>(), replies);  // its wait is up
      } else if (notify_seq_ != seq) {
        Enqueue(batch[i]);  // something changed during the batch: ask again
      } else {
        p->where = Where::kParked;
        p->seen_version = version;
        parked_.push_back(batch[i]);
      }
      continue;
    }
    if (results[i].ok() && options_.on_dispatch) {
      options_.on_dispatch(
          std::chrono::duration<double>(leased_at - p->queued_at).count());
    }
    Answer(p, std::move(results[i]), replies);
  }
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
