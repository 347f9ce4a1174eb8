#include "server/service/convert.h"

#include "common/report_columns.h"

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

void SetScalingRow(const report::ScalingRow& r, v1::ScalingRow* row) {
  // Each column of common/report_columns.h into the proto field of its name
  // (report_columns_test checks that there is one, of the column's kind).
  const auto* descriptor = row->GetDescriptor();
  const auto* reflection = row->GetReflection();
  for (const ReportColumn& c : kReportColumns) {
    const auto* field = descriptor->FindFieldByName(std::string(c.name));
    const nlohmann::json value = report::ColumnValue(r, c.name);
    if (field == nullptr || value.is_null()) continue;
    switch (field->cpp_type()) {
      case google::protobuf::FieldDescriptor::CPPTYPE_STRING:
        reflection->SetString(row, field, value.get<std::string>());
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_INT64:
        reflection->SetInt64(row, field, value.get<int64_t>());
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_INT32:
        reflection->SetInt32(row, field, value.get<int32_t>());
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_DOUBLE:
        reflection->SetDouble(row, field, value.get<double>());
        break;
      default:
        break;
    }
  }
}

void ToProto(const report::SweepReport& report, v1::SweepReport* out) {
  out->set_target_metric(report.target_metric);
  if (report.target_value) out->set_target_value(*report.target_value);
  for (const auto& r : report.rows) {
    SetScalingRow(r, out->add_rows());
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
    if (f.b_20pct) fit->set_b_20pct(*f.b_20pct);
    if (f.b_20pct_low) fit->set_b_20pct_low(*f.b_20pct_low);
    if (f.b_20pct_high) fit->set_b_20pct_high(*f.b_20pct_high);
    if (f.b_20pct_measured) fit->set_b_20pct_measured(*f.b_20pct_measured);
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
