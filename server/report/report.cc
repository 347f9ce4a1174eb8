#include "server/report/report.h"

#include <cmath>
#include <map>

namespace megabatch::report {
namespace {

std::optional<double> Optional(const store::Statement& q, int col) {
  if (q.IsNull(col)) return std::nullopt;
  return q.Double(col);
}

}  // namespace

CriticalBatchFit FitCriticalBatch(const std::vector<std::pair<double, double>>& points) {
  CriticalBatchFit fit;
  fit.points = static_cast<int32_t>(points.size());
  if (points.size() < 2) {
    fit.note = "needs steps to target at 2 or more batch sizes, has " +
               std::to_string(points.size());
    return fit;
  }
  // S = a + c·x with x = 1/b: a = S_min, c = S_min·B_crit.
  double mean_x = 0, mean_y = 0;
  for (const auto& [b, s] : points) {
    mean_x += 1.0 / b;
    mean_y += s;
  }
  mean_x /= points.size();
  mean_y /= points.size();
  double sxx = 0, sxy = 0, syy = 0;
  for (const auto& [b, s] : points) {
    double dx = 1.0 / b - mean_x, dy = s - mean_y;
    sxx += dx * dx;
    sxy += dx * dy;
    syy += dy * dy;
  }
  if (sxx <= 0) {
    fit.note = "needs 2 or more distinct batch sizes";
    return fit;
  }
  const double c = sxy / sxx;
  const double a = mean_y - c * mean_x;
  double ss_res = 0;
  for (const auto& [b, s] : points) {
    double r = s - (a + c / b);
    ss_res += r * r;
  }
  fit.r_squared = syy > 0 ? 1.0 - ss_res / syy : 1.0;
  if (c <= 0) {
    fit.note = "steps to target do not fall as the batch grows: B_crit is "
               "below the smallest batch size that reached the target";
    return fit;
  }
  if (a <= 0) {
    fit.note = "steps to target fall as fast as 1/b or faster: B_crit is "
               "beyond the largest batch size that reached the target";
    return fit;
  }
  fit.s_min = a;
  fit.b_crit = c / a;
  return fit;
}

Result<SweepReport> BuildReport(store::Db& db, int64_t sweep_id) {
  SweepReport report;
  report.sweep_id = sweep_id;
  auto sweep = db.Prepare(
      "SELECT json_extract(spec_json, '$.target.metric'), "
      "json_extract(spec_json, '$.target.value') FROM sweeps WHERE id = ?");
  if (!sweep.ok()) return sweep.status();
  sweep->Bind(1, sweep_id);
  auto found = sweep->Step();
  if (!found.ok()) return found.status();
  if (!*found) return NotFoundError("sweep " + std::to_string(sweep_id) + " not found");
  report.target_metric = sweep->Text(0);
  report.target_value = Optional(*sweep, 1);

  auto rows = db.Prepare(
      "SELECT optimizer, batch_size, lrs_tried, trials, diverged_trials, "
      "best_lr, max_stable_lr, best_test_accuracy, best_test_loss, "
      "steps_to_target, samples_to_target, seconds_to_target, "
      "scaling_efficiency, gradient_noise_scale FROM sweep_scaling s "
      "WHERE sweep_id = ?1 ORDER BY (SELECT MIN(trial_index) FROM trials t "
      "WHERE t.sweep_id = ?1 AND t.optimizer = s.optimizer), batch_size");
  if (!rows.ok()) return rows.status();
  rows->Bind(1, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(store::ForEachRow(*rows, [&](store::Statement& q) {
    ScalingRow r;
    r.optimizer = q.Text(0);
    r.batch_size = q.Int(1);
    r.lrs_tried = static_cast<int32_t>(q.Int(2));
    r.trials = static_cast<int32_t>(q.Int(3));
    r.diverged_trials = static_cast<int32_t>(q.Int(4));
    r.best_lr = q.Double(5);
    r.max_stable_lr = Optional(q, 6);
    r.best_test_accuracy = Optional(q, 7);
    r.best_test_loss = Optional(q, 8);
    r.steps_to_target = Optional(q, 9);
    r.samples_to_target = Optional(q, 10);
    r.seconds_to_target = Optional(q, 11);
    r.scaling_efficiency = Optional(q, 12);
    r.gradient_noise_scale = Optional(q, 13);
    report.rows.push_back(std::move(r));
  }));

  std::vector<std::string> order;
  std::map<std::string, std::vector<std::pair<double, double>>> points;
  for (const auto& r : report.rows) {
    if (points.count(r.optimizer) == 0) order.push_back(r.optimizer);
    auto& p = points[r.optimizer];
    if (r.steps_to_target) p.emplace_back(r.batch_size, *r.steps_to_target);
  }
  for (const auto& optimizer : order) {
    report.fits.push_back(FitCriticalBatch(points[optimizer]));
    report.fits.back().optimizer = optimizer;
  }

  auto diverged = db.Prepare(
      "SELECT optimizer, batch_size, lr, SUM(diverged), COUNT(*) "
      "FROM trial_summary WHERE sweep_id = ? GROUP BY optimizer, batch_size, lr "
      "HAVING SUM(diverged) > 0 ORDER BY optimizer, batch_size, lr");
  if (!diverged.ok()) return diverged.status();
  diverged->Bind(1, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(store::ForEachRow(*diverged, [&](store::Statement& q) {
    report.diverged.push_back({q.Text(0), q.Int(1), q.Double(2),
                               static_cast<int32_t>(q.Int(3)),
                               static_cast<int32_t>(q.Int(4))});
  }));
  return report;
}

}  // namespace megabatch::report
