// The large-batch report of one sweep (LARGE_BATCH.md, "What a study
// reports"): per optimizer and batch size the best learning rate and what it
// reached, steps and time to target, scaling efficiency, the measured
// gradient noise scale, the critical batch size fitted per optimizer, and
// which (optimizer, batch size, lr) diverged.
//
// The per-(optimizer, batch size) figures are the `sweep_scaling` view's
// rows, so the report and the view always agree.
#ifndef MEGABATCH_SERVER_REPORT_REPORT_H_
#define MEGABATCH_SERVER_REPORT_REPORT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "server/store/db.h"

namespace megabatch::report {

struct ScalingRow {
  std::string optimizer;
  int64_t batch_size = 0;
  int32_t lrs_tried = 0;
  int32_t trials = 0;
  int32_t diverged_trials = 0;
  double best_lr = 0;
  std::optional<double> max_stable_lr;  // largest lr with no diverged trial
  std::optional<double> best_test_accuracy;
  std::optional<double> best_test_loss;
  std::optional<double> steps_to_target;
  std::optional<double> samples_to_target;
  std::optional<double> seconds_to_target;
  // E(b) = S(b0)·b0 / (S(b)·b), b0 the optimizer's smallest batch size that
  // reached the target.
  std::optional<double> scaling_efficiency;
  std::optional<double> gradient_noise_scale;
};

// S(b) = S_min · (1 + B_crit / b), fitted by least squares on (1/b, S).
struct CriticalBatchFit {
  std::string optimizer;
  int32_t points = 0;
  std::optional<double> s_min;
  std::optional<double> b_crit;
  std::optional<double> r_squared;
  std::string note;  // why there is no fit, when there is none
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
};

// `points` are (batch size, steps to target).
CriticalBatchFit FitCriticalBatch(const std::vector<std::pair<double, double>>& points);

// Reads the sweep's report from a (read-only) connection. NOT_FOUND for an
// unknown sweep.
Result<SweepReport> BuildReport(store::Db& db, int64_t sweep_id);

}  // namespace megabatch::report

#endif  // MEGABATCH_SERVER_REPORT_REPORT_H_
