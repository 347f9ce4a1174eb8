// The report row: one row per optimizer and batch size of a sweep, as the
// `sweep_scaling` view computes it, `BuildReport` reads it, the API carries
// it (v1::ScalingRow) and `megabatch report` prints it. Each column's name
// is the same in all four; the table below is the order the CLI prints them
// in and says which the CLI shows. BuildReport selects exactly these
// columns; convert.cc and the CLI reach the proto's fields by these names;
// tests/server/report_columns_test.cc checks that the view, the proto and
// docs/results-database.md have every one. Adding a figure: a column here,
// in the view (a migration), in v1::ScalingRow, a member of
// report::ScalingRow and its line in report.cc's binder; the test names
// whichever is missing. Header-only and dependency-free.
#ifndef MEGABATCH_COMMON_REPORT_COLUMNS_H_
#define MEGABATCH_COMMON_REPORT_COLUMNS_H_

#include <string_view>

namespace megabatch {

enum class ColumnKind {
  kText,    // string
  kInt,     // integer, never NULL
  kNumber,  // double, NULL when there is no value
};

struct ReportColumn {
  std::string_view name;
  ColumnKind kind;
  bool cli;          // `megabatch report` prints it
  bool time_figure;  // measures time: marked when the trials shared cores
  std::string_view meaning;
};

// clang-format off
inline constexpr ReportColumn kReportColumns[] = {
  {"optimizer", ColumnKind::kText, true, false, "the optimizer"},
  {"batch_size", ColumnKind::kInt, true, false, "the batch size"},
  {"best_lr", ColumnKind::kNumber, true, false, "the lr with the best target figure"},
  {"lrs_tried", ColumnKind::kInt, true, false, "distinct lrs run"},
  {"trials", ColumnKind::kInt, true, false, "trials"},
  {"diverged_trials", ColumnKind::kInt, true, false, "trials that diverged"},
  {"max_stable_lr", ColumnKind::kNumber, true, false, "largest lr with no diverged trial"},
  {"best_val_accuracy", ColumnKind::kNumber, true, false, "best validation accuracy"},
  {"best_val_loss", ColumnKind::kNumber, true, false, "best validation loss"},
  {"best_target_value", ColumnKind::kNumber, true, false, "best value of the target metric"},
  {"test_accuracy", ColumnKind::kNumber, true, false, "final test accuracy of the best lr"},
  {"test_loss", ColumnKind::kNumber, true, false, "final test loss of the best lr"},
  {"steps_to_target", ColumnKind::kNumber, true, false, "interpolated steps to the target"},
  {"samples_to_target", ColumnKind::kNumber, true, false, "interpolated samples to the target"},
  {"seconds_to_target", ColumnKind::kNumber, true, true, "training seconds to the target"},
  {"samples_per_second", ColumnKind::kNumber, true, true, "mean training throughput of the best lr"},
  {"shared_core_trials", ColumnKind::kInt, true, false, "the best lr's trials that shared cores"},
  {"scaling_efficiency", ColumnKind::kNumber, true, false, "E(b) = S(b0)·b0 / (S(b)·b)"},
  {"noise_scale_at_10pct", ColumnKind::kNumber, true, false, "B_simple at 10% of the budget"},
  {"noise_scale_at_50pct", ColumnKind::kNumber, true, false, "B_simple at 50% of the budget"},
  {"noise_scale_at_100pct", ColumnKind::kNumber, true, false, "B_simple at the budget's end"},
  {"noise_scale_at_target", ColumnKind::kNumber, true, false, "B_simple at the target"},
  {"best_test_accuracy", ColumnKind::kNumber, false, false, "best of the test_accuracy series (older databases)"},
  {"best_test_loss", ColumnKind::kNumber, false, false, "best of the test_loss series (older databases)"},
  {"gradient_noise_scale", ColumnKind::kNumber, false, false, "the last (EMA) B_simple"},
  {"train_samples", ColumnKind::kNumber, false, false, "n, the training split's size"},
  {"best_lr_edge", ColumnKind::kText, true, false, "high/low: the best lr is the largest/smallest tried; only: one lr tried"},
  {"lrs_tied", ColumnKind::kInt, true, false, "other lrs within one evaluation interval of the best's steps to target"},
  {"censored", ColumnKind::kInt, true, false, "1: no lr reached the target within the budget"},
};
// clang-format on

}  // namespace megabatch

#endif  // MEGABATCH_COMMON_REPORT_COLUMNS_H_
