// The large-batch report of one sweep (docs/method.md): per optimizer and
// batch size the best learning rate (chosen on the validation split) and
// what it reached, its one final test figure, steps and time to target,
// scaling efficiency, the gradient noise scale at fixed points of the
// budget, the critical batch size fitted per optimizer with its uncertainty
// and beside the measured noise scale, and which (optimizer, batch size, lr)
// diverged.
//
// The per-(optimizer, batch size) figures are the `sweep_scaling` view's
// rows, so the report and the view always agree.
#ifndef MEGABATCH_SERVER_REPORT_REPORT_H_
#define MEGABATCH_SERVER_REPORT_REPORT_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "server/store/db.h"

namespace megabatch::report {

// One row per (optimizer, batch size): the columns of common/report_columns.h,
// as the sweep_scaling view computes them.
struct ScalingRow {
  std::string optimizer;
  int64_t batch_size = 0;
  int32_t lrs_tried = 0;
  int32_t trials = 0;
  int32_t diverged_trials = 0;
  double best_lr = 0;
  std::optional<double> max_stable_lr;  // largest lr with no diverged trial
  // Kept for databases from before the validation split: the best value of
  // the test_* series (for newer trials, the one final test evaluation).
  std::optional<double> best_test_accuracy;
  std::optional<double> best_test_loss;
  std::optional<double> best_val_accuracy;
  std::optional<double> best_val_loss;
  // Of the target metric (val_accuracy without one).
  std::optional<double> best_target_value;
  // The final test of the best lr's trials.
  std::optional<double> test_accuracy;
  std::optional<double> test_loss;
  std::optional<double> steps_to_target;
  std::optional<double> samples_to_target;
  std::optional<double> seconds_to_target;
  // E(b) = S(b0)·b0 / (S(b)·b), b0 the optimizer's smallest batch size that
  // reached the target.
  std::optional<double> scaling_efficiency;
  std::optional<double> gradient_noise_scale;  // the last EMA value
  // B_simple at 10%, 50% and 100% of the budget's samples and at the target.
  std::optional<double> noise_scale_at_10pct;
  std::optional<double> noise_scale_at_50pct;
  std::optional<double> noise_scale_at_100pct;
  std::optional<double> noise_scale_at_target;
  std::optional<double> train_samples;       // n, the training split's size
  std::optional<double> samples_per_second;  // mean over the best lr's trials
  // The best lr's trials that shared cores at some time: their time
  // figures (seconds_to_target, samples_per_second) are not results.
  int32_t shared_core_trials = 0;
  std::string best_lr_edge;  // "high", "low", "only" or ""
  int32_t lrs_tied = 0;
  int32_t censored = 0;
  // Steps to target of each seed of the best lr (for the bootstrap).
  std::vector<double> seed_steps_to_target;
};

// A column of `row` (a name in common/report_columns.h) as JSON: a string, a
// number, or null when the figure has no value; null for an unknown name.
nlohmann::json ColumnValue(const ScalingRow& row, std::string_view column);

// S(b) = S_min · (1 + B_crit / b), fitted by weighted least squares on
// (1/b, S) with weights 1/S^2, i.e. on relative residuals (docs/method.md,
// "Critical batch size").
struct CriticalBatchFit {
  std::string optimizer;
  int32_t points = 0;
  std::optional<double> s_min;
  std::optional<double> b_crit;
  std::optional<double> r_squared;  // only with 3 or more batch sizes
  // 95% intervals: the wider of a bootstrap over seeds (2 or more seeds at
  // every point) and the fit's standard error (3 or more points).
  std::optional<double> s_min_low, s_min_high;
  std::optional<double> b_crit_low, b_crit_high;
  std::string interval_method;  // how the intervals were made; empty: none
  // Zhang et al. (2025)'s critical batch on the fitted curve: the largest
  // batch whose steps to target exceed perfect scaling from the smallest
  // batch size b0 by at most 20% (1.2·b0 + 0.2·B_crit), with its interval;
  // and the largest batch size measured with scaling efficiency >= 1/1.2
  // (bounded by the grid).
  std::optional<double> b_20pct, b_20pct_low, b_20pct_high;
  std::optional<double> b_20pct_measured;
  // The measured noise scale B_simple beside B_crit (McCandlish et al.:
  // B_crit ≈ B_noise), which one, and B_crit / B_simple.
  std::optional<double> noise_scale;
  std::string noise_scale_source;
  std::optional<double> b_crit_over_noise_scale;
  std::string note;  // caveats, and why there is no fit when there is none
};

struct DivergedGroup {
  std::string optimizer;
  int64_t batch_size = 0;
  double lr = 0;
  int32_t diverged = 0;
  int32_t trials = 0;
};

struct SweepReport {
  int64_t sweep_id = 0;
  std::string target_metric;  // empty without a target
  std::optional<double> target_value;
  std::vector<ScalingRow> rows;  // optimizers in spec order, batch ascending
  std::vector<CriticalBatchFit> fits;  // one per optimizer
  std::vector<DivergedGroup> diverged;
  // Adaptive studies: the planner's decisions in order (events of kind
  // 'plan'), and the probe's B_simple, its prediction of B_crit.
  std::vector<std::string> plan;
  std::optional<double> predicted_b_crit;
};

// `points` are (batch size, steps to target). With `seeds` (for each point,
// the steps to target of its seeds; every point with 2 or more) a bootstrap
// over seeds, and with 3 or more points the fit's standard errors, give
// intervals; the wider is reported. Deterministic: the bootstrap has a
// fixed seed.
CriticalBatchFit FitCriticalBatch(
    const std::vector<std::pair<double, double>>& points,
    const std::vector<std::vector<double>>& seeds = {});

// Reads the sweep's report from a (read-only) connection. NOT_FOUND for an
// unknown sweep.
Result<SweepReport> BuildReport(store::Db& db, int64_t sweep_id);

}  // namespace megabatch::report

#endif  // MEGABATCH_SERVER_REPORT_REPORT_H_
