#include "server/service/convert.h"

namespace megabatch::service {

v1::TrialState ToProto(store::TrialState s) {
  switch (s) {
    case store::TrialState::kQueued: return v1::TRIAL_STATE_QUEUED;
    case store::TrialState::kRunning: return v1::TRIAL_STATE_RUNNING;
    case store::TrialState::kCompleted: return v1::TRIAL_STATE_COMPLETED;
    case store::TrialState::kFailed: return v1::TRIAL_STATE_FAILED;
    case store::TrialState::kCancelled: return v1::TRIAL_STATE_CANCELLED;
    case store::TrialState::kDiverged: return v1::TRIAL_STATE_DIVERGED;
  }
  return v1::TRIAL_STATE_UNSPECIFIED;
}

v1::SweepState ToProto(store::SweepState s) {
  switch (s) {
    case store::SweepState::kQueued: return v1::SWEEP_STATE_QUEUED;
    case store::SweepState::kRunning: return v1::SWEEP_STATE_RUNNING;
    case store::SweepState::kCompleted: return v1::SWEEP_STATE_COMPLETED;
    case store::SweepState::kFailed: return v1::SWEEP_STATE_FAILED;
    case store::SweepState::kCancelled: return v1::SWEEP_STATE_CANCELLED;
  }
  return v1::SWEEP_STATE_UNSPECIFIED;
}

void ToProto(const store::SweepRow& row, v1::Sweep* out) {
  auto count = [&](store::TrialState s) {
    auto it = row.trial_counts.find(s);
    return it == row.trial_counts.end() ? 0 : it->second;
  };
  out->set_id(row.id);
  out->set_name(row.name);
  out->set_state(ToProto(row.state));
  out->set_trials_total(row.trials_total);
  out->set_trials_queued(count(store::TrialState::kQueued));
  out->set_trials_running(count(store::TrialState::kRunning));
  out->set_trials_completed(count(store::TrialState::kCompleted));
  out->set_trials_failed(count(store::TrialState::kFailed));
  out->set_trials_cancelled(count(store::TrialState::kCancelled));
  out->set_trials_diverged(count(store::TrialState::kDiverged));
  out->set_created_at(row.created_at);
  out->set_finished_at(row.finished_at);
  out->set_priority(row.priority);
  out->set_max_parallel(row.max_parallel);
}

void ToProto(const store::TrialRow& row, v1::Trial* out) {
  out->set_id(row.id);
  out->set_sweep_id(row.sweep_id);
  out->set_index(row.index);
  out->set_optimizer(row.optimizer);
  out->set_batch_size(row.batch_size);
  out->set_lr(row.lr);
  out->set_lr_multiplier(row.lr_multiplier);
  out->set_seed(row.seed);
  out->set_state(ToProto(row.state));
  out->set_worker_id(row.worker_id);
  out->set_attempts(row.attempts);
  out->set_error(row.error);
  out->set_started_at(row.started_at);
  out->set_finished_at(row.finished_at);
  for (const auto& [name, value] : row.latest_metrics) {
    (*out->mutable_latest_metrics())[name] = value;
  }
}

void ToProto(const store::WorkerRow& row, v1::Worker* out) {
  out->set_id(row.id);
  out->set_name(row.name);
  out->set_slots(row.slots);
  out->set_busy_slots(row.busy_slots);
  out->set_state(row.alive ? "alive" : "lost");
  out->set_last_heartbeat_at(row.last_heartbeat_at);
}

}  // namespace megabatch::service
