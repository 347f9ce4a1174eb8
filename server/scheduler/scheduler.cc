#include "server/scheduler/scheduler.h"

#include <spdlog/spdlog.h>

namespace megabatch::scheduler {

double NowSeconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

Scheduler::Scheduler(store::SweepStore* store, SchedulerOptions options)
    : store_(store), options_(options) {
  reaper_ = std::thread([this] { ReapLoop(); });
}

Scheduler::~Scheduler() {
  Stop();
  reaper_.join();
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
}

void Scheduler::Notify() {
  // Taking the mutex orders the notification after any waiter's check.
  { std::lock_guard<std::mutex> lock(mu_); }
  changed_.notify_all();
}

Result<Scheduler::Submitted> Scheduler::Submit(std::string_view spec_text,
                                               spec::SpecFormat format,
                                               const std::string& request_id) {
  Result<spec::SweepSpec> spec = spec::ParseSweepSpec(spec_text, format);
  if (!spec.ok()) return spec.status();
  std::vector<spec::TrialSpec> trials = spec::ExpandSweep(*spec);
  bool existed = false;
  Result<int64_t> id =
      store_->CreateSweep(*spec, trials, request_id, NowSeconds(), &existed);
  if (!id.ok()) return id.status();
  if (existed) {
    Result<store::SweepRow> row = store_->GetSweep(*id);
    if (!row.ok()) return row.status();
    return Submitted{*id, row->trials_total};
  }
  spdlog::info("sweep {} '{}' submitted with {} trials", *id, spec->name,
               trials.size());
  Notify();
  return Submitted{*id, static_cast<int32_t>(trials.size())};
}

Result<store::SweepRow> Scheduler::Cancel(int64_t sweep_id) {
  Result<store::SweepRow> row = store_->CancelSweep(sweep_id, NowSeconds());
  if (row.ok()) {
    spdlog::info("sweep {} cancelled", sweep_id);
    Notify();
  }
  return row;
}

Result<std::optional<store::Lease>> Scheduler::Lease(
    int64_t worker_id, std::chrono::milliseconds wait,
    const std::function<bool()>& client_gone) {
  auto deadline = std::chrono::steady_clock::now() + wait;
  // Waits in slices so that a caller that went away is noticed.
  constexpr auto kSlice = std::chrono::milliseconds(200);
  while (true) {
    const auto attempt_start = std::chrono::steady_clock::now();
    int64_t seen = store_->version();
    Result<std::optional<store::Lease>> lease =
        store_->LeaseNext(worker_id, NowSeconds());
    if (!lease.ok()) return lease;
    if (lease->has_value()) {
      const store::Lease& l = **lease;
      if (client_gone()) {
        MEGABATCH_RETURN_IF_ERROR(store_->ReleaseLease(
            l.trial_id, l.lease_id, worker_id, NowSeconds()));
        Notify();
        return Status(StatusCode::kCancelled,
                      "worker " + std::to_string(worker_id) +
                          " went away; lease released");
      }
      Notify();
      if (options_.on_dispatch) {
        options_.on_dispatch(std::chrono::duration<double>(
                                 std::chrono::steady_clock::now() - attempt_start)
                                 .count());
      }
      return lease;
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline || client_gone()) return lease;
    WaitForChange(seen, std::min(deadline, now + kSlice));
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return UnavailableError("coordinator is shutting down");
  }
}

Result<store::TrialState> Scheduler::Finish(int64_t trial_id, int64_t lease_id,
                                            int64_t worker_id,
                                            store::TrialState outcome,
                                            const std::string& message,
                                            const std::string& stderr_tail) {
  Result<store::TrialState> state =
      store_->FinishTrial(trial_id, lease_id, worker_id, outcome, message,
                          stderr_tail, NowSeconds());
  if (state.ok()) {
    spdlog::info("trial {} attempt ended {}; now {}", trial_id,
                 store::TrialStateName(outcome), store::TrialStateName(*state));
    Notify();
  }
  return state;
}

int64_t Scheduler::WaitForChange(
    int64_t seen, std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_until(lock, deadline, [&] {
    return stopping_ || store_->version() != seen;
  });
  return store_->version();
}

void Scheduler::ReapLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    auto next = std::chrono::steady_clock::now() + options_.heartbeat_interval;
    if (changed_.wait_until(lock, next, [&] { return stopping_; })) break;
    lock.unlock();
    double now = NowSeconds();
    double timeout =
        std::chrono::duration<double>(options_.lease_timeout).count();
    // After a (re)start, every worker gets a full lease timeout to heartbeat
    // again before its trials are taken back: the coordinator's own downtime
    // is not the workers' silence.
    if (now - started_at_ < timeout) {
      lock.lock();
      continue;
    }
    Result<int> requeued = store_->ExpireWorkers(now - timeout, now);
    if (!requeued.ok()) {
      spdlog::error("expiring silent workers: {}", requeued.status().ToString());
    } else if (*requeued > 0) {
      spdlog::warn("requeued {} trials of lost workers", *requeued);
      Notify();
    }
    lock.lock();
  }
}

}  // namespace megabatch::scheduler
