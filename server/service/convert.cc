#include "server/service/convert.h"

namespace megabatch::service {

v1::TrialState ToProto(store::TrialState s) {
  switch (s) {
    case store::TrialState::kQueued:
      return v1::TRIAL_STATE_QUEUED;
    case store::TrialState::kRunning:
      return v1::TRIAL_STATE_RUNNING;
    case store::TrialState::kCompleted:
      return v1::TRIAL_STATE_COMPLETED;
    case store::TrialState::kFailed:
      return v1::TRIAL_STATE_FAILED;
    case store::TrialState::kCancelled:
      return v1::TRIAL_STATE_CANCELLED;
    case store::TrialState::kDiverged:
      return v1::TRIAL_STATE_DIVERGED;
    case store::TrialState::kPruned:
      return v1::TRIAL_STATE_PRUNED;
  }
  return v1::TRIAL_STATE_UNSPECIFIED;
}

v1::SweepState ToProto(store::SweepState s) {
  switch (s) {
    case store::SweepState::kQueued:
      return v1::SWEEP_STATE_QUEUED;
    case store::SweepState::kRunning:
      return v1::SWEEP_STATE_RUNNING;
    case store::SweepState::kCompleted:
      return v1::SWEEP_STATE_COMPLETED;
    case store::SweepState::kFailed:
      return v1::SWEEP_STATE_FAILED;
    case store::SweepState::kCancelled:
      return v1::SWEEP_STATE_CANCELLED;
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
  out->set_trials_pruned(count(store::TrialState::kPruned));
  out->set_created_at(row.created_at);
  out->set_finished_at(row.finished_at);
  out->set_priority(row.priority);
  out->set_max_parallel(row.max_parallel);
  out->set_owner(row.owner);
  out->set_phase(row.phase);
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
  out->set_phase(row.phase);
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

void ToProto(const report::SweepReport& report, v1::SweepReport* out) {
  out->set_target_metric(report.target_metric);
  if (report.target_value) out->set_target_value(*report.target_value);
  for (const auto& r : report.rows) {
    v1::ScalingRow* row = out->add_rows();
    row->set_optimizer(r.optimizer);
    row->set_batch_size(r.batch_size);
    row->set_lrs_tried(r.lrs_tried);
    row->set_trials(r.trials);
    row->set_diverged_trials(r.diverged_trials);
    row->set_best_lr(r.best_lr);
    if (r.max_stable_lr) row->set_max_stable_lr(*r.max_stable_lr);
    if (r.best_test_accuracy)
      row->set_best_test_accuracy(*r.best_test_accuracy);
    if (r.best_test_loss) row->set_best_test_loss(*r.best_test_loss);
    if (r.steps_to_target) row->set_steps_to_target(*r.steps_to_target);
    if (r.samples_to_target) row->set_samples_to_target(*r.samples_to_target);
    if (r.seconds_to_target) row->set_seconds_to_target(*r.seconds_to_target);
    if (r.scaling_efficiency)
      row->set_scaling_efficiency(*r.scaling_efficiency);
    if (r.gradient_noise_scale)
      row->set_gradient_noise_scale(*r.gradient_noise_scale);
    if (r.best_val_accuracy) row->set_best_val_accuracy(*r.best_val_accuracy);
    if (r.best_val_loss) row->set_best_val_loss(*r.best_val_loss);
    if (r.best_target_value) row->set_best_target_value(*r.best_target_value);
    if (r.test_accuracy) row->set_test_accuracy(*r.test_accuracy);
    if (r.test_loss) row->set_test_loss(*r.test_loss);
    if (r.samples_per_second)
      row->set_samples_per_second(*r.samples_per_second);
    row->set_shared_core_trials(r.shared_core_trials);
    if (r.noise_scale_at_10pct)
      row->set_noise_scale_at_10pct(*r.noise_scale_at_10pct);
    if (r.noise_scale_at_50pct)
      row->set_noise_scale_at_50pct(*r.noise_scale_at_50pct);
    if (r.noise_scale_at_100pct)
      row->set_noise_scale_at_100pct(*r.noise_scale_at_100pct);
    if (r.noise_scale_at_target)
      row->set_noise_scale_at_target(*r.noise_scale_at_target);
    if (r.train_samples) row->set_train_samples(*r.train_samples);
  }
  for (const auto& f : report.fits) {
    v1::CriticalBatchFit* fit = out->add_fits();
    fit->set_optimizer(f.optimizer);
    fit->set_points(f.points);
    if (f.s_min) fit->set_s_min(*f.s_min);
    if (f.b_crit) fit->set_b_crit(*f.b_crit);
    if (f.r_squared) fit->set_r_squared(*f.r_squared);
    fit->set_note(f.note);
    if (f.s_min_low) fit->set_s_min_low(*f.s_min_low);
    if (f.s_min_high) fit->set_s_min_high(*f.s_min_high);
    if (f.b_crit_low) fit->set_b_crit_low(*f.b_crit_low);
    if (f.b_crit_high) fit->set_b_crit_high(*f.b_crit_high);
    fit->set_interval_method(f.interval_method);
    if (f.noise_scale) fit->set_noise_scale(*f.noise_scale);
    fit->set_noise_scale_source(f.noise_scale_source);
    if (f.b_crit_over_noise_scale)
      fit->set_b_crit_over_noise_scale(*f.b_crit_over_noise_scale);
  }
  for (const auto& d : report.diverged) {
    v1::DivergedGroup* g = out->add_diverged();
    g->set_optimizer(d.optimizer);
    g->set_batch_size(d.batch_size);
    g->set_lr(d.lr);
    g->set_diverged(d.diverged);
    g->set_trials(d.trials);
  }
  for (const auto& decision : report.plan) out->add_plan(decision);
  if (report.predicted_b_crit)
    out->set_predicted_b_crit(*report.predicted_b_crit);
}

void ToProto(const store::QueryResult& result, v1::QueryResponse* out) {
  for (const auto& c : result.columns) out->add_columns(c);
  for (const auto& row : result.rows) {
    v1::Row* r = out->add_rows();
    for (const auto& v : row) {
      v1::Value* value = r->add_values();
      switch (v.type) {
        case store::QueryValue::Type::kInteger:
          value->set_integer(v.integer);
          break;
        case store::QueryValue::Type::kReal:
          value->set_real(v.real);
          break;
        case store::QueryValue::Type::kText:
          value->set_text(v.bytes);
          break;
        case store::QueryValue::Type::kBlob:
          value->set_blob(v.bytes);
          break;
        case store::QueryValue::Type::kNull:
          break;
      }
    }
  }
  if (result.truncated) out->set_truncated(*result.truncated);
}

void ToProto(const store::MetricRecord& record, v1::MetricRow* out) {
  out->set_trial_id(record.trial_id);
  out->set_name(record.name);
  out->set_step(record.step);
  if (record.value) out->set_value(*record.value);
  out->set_recorded_at(record.recorded_at);
}

}  // namespace megabatch::service
