#include "server/report/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <type_traits>
#include <variant>

#include "common/report_columns.h"

namespace megabatch::report {
namespace {

// The member of ScalingRow behind each column of common/report_columns.h:
// the one place a column's name meets its C++ member.
using Member = std::variant<std::string ScalingRow::*, int64_t ScalingRow::*,
                            int32_t ScalingRow::*, double ScalingRow::*,
                            std::optional<double> ScalingRow::*>;

const std::map<std::string_view, Member>& Members() {
  static const auto* members = new std::map<std::string_view, Member>{
      {"optimizer", &ScalingRow::optimizer},
      {"batch_size", &ScalingRow::batch_size},
      {"best_lr", &ScalingRow::best_lr},
      {"lrs_tried", &ScalingRow::lrs_tried},
      {"trials", &ScalingRow::trials},
      {"diverged_trials", &ScalingRow::diverged_trials},
      {"max_stable_lr", &ScalingRow::max_stable_lr},
      {"best_val_accuracy", &ScalingRow::best_val_accuracy},
      {"best_val_loss", &ScalingRow::best_val_loss},
      {"best_target_value", &ScalingRow::best_target_value},
      {"test_accuracy", &ScalingRow::test_accuracy},
      {"test_loss", &ScalingRow::test_loss},
      {"steps_to_target", &ScalingRow::steps_to_target},
      {"samples_to_target", &ScalingRow::samples_to_target},
      {"seconds_to_target", &ScalingRow::seconds_to_target},
      {"samples_per_second", &ScalingRow::samples_per_second},
      {"shared_core_trials", &ScalingRow::shared_core_trials},
      {"scaling_efficiency", &ScalingRow::scaling_efficiency},
      {"noise_scale_at_10pct", &ScalingRow::noise_scale_at_10pct},
      {"noise_scale_at_50pct", &ScalingRow::noise_scale_at_50pct},
      {"noise_scale_at_100pct", &ScalingRow::noise_scale_at_100pct},
      {"noise_scale_at_target", &ScalingRow::noise_scale_at_target},
      {"best_test_accuracy", &ScalingRow::best_test_accuracy},
      {"best_test_loss", &ScalingRow::best_test_loss},
      {"gradient_noise_scale", &ScalingRow::gradient_noise_scale},
      {"train_samples", &ScalingRow::train_samples},
      {"best_lr_edge", &ScalingRow::best_lr_edge},
      {"lrs_tied", &ScalingRow::lrs_tied},
      {"censored", &ScalingRow::censored},
  };
  return *members;
}

// Column `i` of the current row of `q` into `column`'s member of `row`.
void ReadColumn(store::Statement& q, int i, std::string_view column,
                ScalingRow* row) {
  auto it = Members().find(column);
  if (it == Members().end()) return;  // report_columns_test names it
  std::visit(
      [&](auto member) {
        auto& field = row->*member;
        using T = std::decay_t<decltype(field)>;
        if constexpr (std::is_same_v<T, std::string>) {
          field = q.Text(i);
        } else if constexpr (std::is_same_v<T, std::optional<double>>) {
          field = q.OptionalDouble(i);
        } else if constexpr (std::is_same_v<T, double>) {
          field = q.Double(i);
        } else {
          field = static_cast<T>(q.Int(i));
        }
      },
      it->second);
}

// The 97.5% quantile of Student's t with `df` degrees of freedom.
double StudentT975(int df) {
  static constexpr double kTable[] = {12.706, 4.303, 3.182, 2.776, 2.571,
                                      2.447,  2.365, 2.306, 2.262, 2.228};
  if (df >= 1 && df <= 10) return kTable[df - 1];
  return 1.96 + 2.5 / df;  // within 0.005 of the exact value past 10
}

// S = a + c·x, x = 1/b, by least squares weighted 1/S^2: a = S_min,
// c = S_min·B_crit.
struct LineFit {
  bool ok = false;
  double a = 0, c = 0;
  double var_a = 0, var_c = 0, cov_ac = 0;  // only with 3 or more points
  std::optional<double> r_squared;          // likewise
};

LineFit FitLine(const std::vector<std::pair<double, double>>& points) {
  LineFit f;
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const auto& [b, s] : points) {
    const double w = 1.0 / (s * s), x = 1.0 / b;
    sw += w;
    sx += w * x;
    sy += w * s;
    sxx += w * x * x;
    sxy += w * x * s;
  }
  const double d = sw * sxx - sx * sx;
  if (!(d > 0) || !std::isfinite(d)) return f;
  f.ok = true;
  f.c = (sw * sxy - sx * sy) / d;
  f.a = (sy - f.c * sx) / sw;
  const size_t n = points.size();
  if (n < 3) return f;
  double ss_res = 0, ss_tot = 0;
  const double mean = sy / sw;
  for (const auto& [b, s] : points) {
    const double w = 1.0 / (s * s), r = s - (f.a + f.c / b);
    ss_res += w * r * r;
    ss_tot += w * (s - mean) * (s - mean);
  }
  f.r_squared = ss_tot > 0 ? 1.0 - ss_res / ss_tot : 1.0;
  const double sigma2 = ss_res / static_cast<double>(n - 2);
  f.var_a = sigma2 * sxx / d;
  f.var_c = sigma2 * sw / d;
  f.cov_ac = -sigma2 * sx / d;
  return f;
}

double Mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return sum / static_cast<double>(v.size());
}

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double at = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(at));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (at - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

constexpr int kBootstrapResamples = 2000;

}  // namespace

CriticalBatchFit FitCriticalBatch(
    const std::vector<std::pair<double, double>>& points,
    const std::vector<std::vector<double>>& seeds) {
  CriticalBatchFit fit;
  fit.points = static_cast<int32_t>(points.size());
  if (points.size() < 2) {
    fit.note = "needs steps to target at 2 or more batch sizes, has " +
               std::to_string(points.size());
    return fit;
  }
  const LineFit line = FitLine(points);
  if (!line.ok) {
    fit.note = "needs 2 or more distinct batch sizes";
    return fit;
  }
  if (line.c <= 0) {
    fit.note =
        "steps to target do not fall as the batch grows: B_crit is "
        "below the smallest batch size that reached the target";
    return fit;
  }
  if (line.a <= 0) {
    fit.note =
        "steps to target fall as fast as 1/b or faster: B_crit is "
        "beyond the largest batch size that reached the target";
    return fit;
  }
  fit.s_min = line.a;
  fit.b_crit = line.c / line.a;
  fit.r_squared = line.r_squared;
  if (points.size() == 2) {
    fit.note =
        "2 batch sizes: the curve passes through both points exactly, so there "
        "is no R^2";
  }

  // The intervals: a bootstrap over seeds (2 or more seeds at every point)
  // sees only seed noise; the fit's standard error (3 or more points) sees
  // how far the points stray from the curve. The reported interval is the
  // wider of the two (their union): with 2 seeds the bootstrap alone was
  // 1.9-4.4x too narrow on the shipped studies (docs/method.md).
  struct Interval {
    double b_low, b_high, s_low, s_high;
  };
  std::vector<std::pair<std::string, Interval>> intervals;
  const bool bootstrap =
      seeds.size() == points.size() &&
      std::all_of(seeds.begin(), seeds.end(),
                  [](const auto& v) { return v.size() >= 2; });
  std::string no_interval;
  if (bootstrap) {
    std::mt19937_64 rng(20190214);  // fixed: the same report every time
    std::vector<double> b_crits, s_mins;
    std::vector<std::pair<double, double>> resampled(points.size());
    for (int r = 0; r < kBootstrapResamples; ++r) {
      for (size_t i = 0; i < points.size(); ++i) {
        std::uniform_int_distribution<size_t> pick(0, seeds[i].size() - 1);
        std::vector<double> draw;
        for (size_t k = 0; k < seeds[i].size(); ++k)
          draw.push_back(seeds[i][pick(rng)]);
        resampled[i] = {points[i].first, Mean(draw)};
      }
      const LineFit f = FitLine(resampled);
      if (!f.ok || f.a <= 0 || f.c <= 0) continue;
      b_crits.push_back(f.c / f.a);
      s_mins.push_back(f.a);
    }
    const size_t valid = b_crits.size();
    if (valid >= kBootstrapResamples / 2) {
      intervals.push_back(
          {"bootstrap over seeds (" + std::to_string(valid) + " of " +
               std::to_string(kBootstrapResamples) + " resamples fitted)",
           {Percentile(b_crits, 0.025), Percentile(b_crits, 0.975),
            Percentile(s_mins, 0.025), Percentile(s_mins, 0.975)}});
    } else {
      no_interval = "only " + std::to_string(valid) + " of " +
                    std::to_string(kBootstrapResamples) +
                    " bootstrap resamples gave a positive S_min and B_crit";
    }
  }
  if (points.size() >= 3) {
    // Delta method for B = c / a.
    const double a = line.a, c = line.c;
    const double var_b = line.var_c / (a * a) +
                         c * c * line.var_a / (a * a * a * a) -
                         2 * c * line.cov_ac / (a * a * a);
    const double t = StudentT975(static_cast<int>(points.size()) - 2);
    const double se_b = std::sqrt(std::max(0.0, var_b));
    const double se_a = std::sqrt(std::max(0.0, line.var_a));
    intervals.push_back(
        {"fit standard error (t, " + std::to_string(points.size() - 2) +
             " degrees of freedom)",
         {std::max(0.0, *fit.b_crit - t * se_b), *fit.b_crit + t * se_b,
          std::max(0.0, a - t * se_a), a + t * se_a}});
  }
  if (intervals.empty()) {
    fit.interval_method =
        "none: " + (no_interval.empty()
                        ? std::string("2 points and one seed leave no "
                                      "residual to estimate it")
                        : no_interval);
  } else {
    Interval wide = intervals[0].second;
    std::string how = intervals[0].first;
    for (size_t i = 1; i < intervals.size(); ++i) {
      const Interval& o = intervals[i].second;
      wide = {std::min(wide.b_low, o.b_low), std::max(wide.b_high, o.b_high),
              std::min(wide.s_low, o.s_low), std::max(wide.s_high, o.s_high)};
      how = "the wider of " + how + " and " + intervals[i].first;
    }
    fit.b_crit_low = wide.b_low;
    fit.b_crit_high = wide.b_high;
    fit.s_min_low = wide.s_low;
    fit.s_min_high = wide.s_high;
    fit.interval_method = how;
  }
  // Zhang et al. (2025)'s critical batch: the largest b whose steps exceed
  // perfect scaling from the smallest batch b0 by at most 20%,
  // S(b)·b <= 1.2·S(b0)·b0, which on the fitted curve is
  // b = 1.2·b0 + 0.2·B_crit (linear in B_crit, so its interval is too).
  double b0 = points[0].first;
  for (const auto& [b, steps] : points) b0 = std::min(b0, b);
  fit.b_20pct = 1.2 * b0 + 0.2 * *fit.b_crit;
  if (fit.b_crit_low) {
    fit.b_20pct_low = 1.2 * b0 + 0.2 * *fit.b_crit_low;
    fit.b_20pct_high = 1.2 * b0 + 0.2 * *fit.b_crit_high;
  }
  return fit;
}

namespace {

// The noise scale to set beside B_crit: B_simple at the target, else at 50%
// of the budget, the median over the optimizer's batch sizes.
void AddNoiseScale(const std::vector<ScalingRow>& rows, CriticalBatchFit* fit) {
  for (const auto& [which, field] :
       {std::pair{"at the target", &ScalingRow::noise_scale_at_target},
        std::pair{"at 50% of the budget", &ScalingRow::noise_scale_at_50pct}}) {
    std::vector<double> values;
    double n = 0;
    for (const ScalingRow& r : rows) {
      if (r.optimizer != fit->optimizer || !(r.*field)) continue;
      values.push_back(*(r.*field));
      if (r.train_samples) n = std::max(n, *r.train_samples);
    }
    if (values.empty()) continue;
    fit->noise_scale = Percentile(values, 0.5);
    fit->noise_scale_source = std::string("B_simple ") + which +
                              ", median of " + std::to_string(values.size()) +
                              " batch size" + (values.size() == 1 ? "" : "s");
    if (fit->b_crit)
      fit->b_crit_over_noise_scale = *fit->b_crit / *fit->noise_scale;
    if (n > 0 && *fit->noise_scale > n / 10) {
      if (!fit->note.empty()) fit->note += "; ";
      fit->note += "B_simple is above a tenth of the training set (n = " +
                   std::to_string(static_cast<int64_t>(n)) +
                   "): batches drawn without replacement bias it high, to "
                   "about B/(1 - B/n) "
                   "(docs/method.md)";
    }
    return;
  }
}

std::string BatchList(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

void AddNote(CriticalBatchFit* fit, const std::string& note) {
  fit->note += (fit->note.empty() ? "" : "; ") + note;
}

// What a reader must know before trusting the fit (docs/method.md, "Edges,
// ties and censoring"): points whose best lr is at an edge of the lrs tried
// (the curve through them is a bound), lrs tied within the evaluation
// resolution, and batch sizes left out because no lr reached the target
// within the budget (what the fit predicts they need); and the largest
// batch size measured within Zhang et al.'s 20% overhead.
void AddStudyNotes(const std::vector<ScalingRow>& rows, CriticalBatchFit* fit) {
  std::vector<std::string> edges, ties, censored;
  for (const ScalingRow& r : rows) {
    if (r.optimizer != fit->optimizer) continue;
    const std::string b = std::to_string(r.batch_size);
    if (r.steps_to_target && !r.best_lr_edge.empty()) {
      edges.push_back(b + " (" + r.best_lr_edge + ")");
    }
    if (r.steps_to_target && r.lrs_tied > 0) {
      ties.push_back(b + " (" + std::to_string(r.lrs_tied) + ")");
    }
    if (r.censored) {
      std::string item = b;
      if (fit->b_crit && r.train_samples && *r.train_samples > 0) {
        const double epochs = *fit->s_min * (1 + *fit->b_crit / r.batch_size) *
                              r.batch_size / *r.train_samples;
        char text[64];
        std::snprintf(text, sizeof(text), " (the fit predicts %.1f epochs)",
                      epochs);
        item += text;
      }
      censored.push_back(item);
    }
    if (r.scaling_efficiency && *r.scaling_efficiency >= 1 / 1.2 &&
        (!fit->b_20pct_measured || r.batch_size > *fit->b_20pct_measured)) {
      fit->b_20pct_measured = static_cast<double>(r.batch_size);
    }
  }
  if (!edges.empty()) {
    AddNote(fit, "best lr at an edge of the lrs tried at batch size " +
                     BatchList(edges) +
                     ": a better lr may lie beyond it, so the steps there "
                     "and B_crit are bounds, not measurements");
  }
  if (!ties.empty()) {
    AddNote(fit,
            "other lrs within one evaluation interval of the best at "
            "batch size " +
                BatchList(ties) + ": which lr is best there is noise");
  }
  if (!censored.empty()) {
    AddNote(fit,
            "censored (no lr reached the target within the budget) at "
            "batch size " +
                BatchList(censored) + ": left out of the fit");
  }
}

}  // namespace

Result<SweepReport> BuildReport(store::Db& db, int64_t sweep_id) {
  SweepReport report;
  report.sweep_id = sweep_id;
  MEGABATCH_ASSIGN_OR_RETURN(
      auto sweep,
      db.Prepare("SELECT json_extract(spec_json, '$.target.metric'), "
                 "json_extract(spec_json, '$.target.value') FROM sweeps WHERE "
                 "id = ?"));
  sweep.Bind(1, sweep_id);
  MEGABATCH_ASSIGN_OR_RETURN(auto found, sweep.Step());
  if (!found)
    return NotFoundError("sweep " + std::to_string(sweep_id) + " not found");
  report.target_metric = sweep.Text(0);
  report.target_value = sweep.OptionalDouble(1);

  std::string columns;
  for (const ReportColumn& c : kReportColumns) {
    columns += (columns.empty() ? "" : ", ") + std::string(c.name);
  }
  MEGABATCH_ASSIGN_OR_RETURN(
      auto rows,
      db.Prepare("SELECT " + columns +
                 " FROM sweep_scaling s WHERE sweep_id = ?1 ORDER BY (SELECT "
                 "MIN(trial_index) FROM trials t WHERE t.sweep_id = ?1 AND "
                 "t.optimizer = "
                 "s.optimizer), batch_size"));
  rows.Bind(1, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(store::ForEachRow(rows, [&](store::Statement& q) {
    ScalingRow r;
    int i = 0;
    for (const ReportColumn& c : kReportColumns) ReadColumn(q, i++, c.name, &r);
    report.rows.push_back(std::move(r));
  }));

  MEGABATCH_ASSIGN_OR_RETURN(
      auto seeds,
      db.Prepare(
          "SELECT steps_to_target FROM trial_summary WHERE sweep_id = ? AND "
          "optimizer = ? "
          "AND batch_size = ? AND lr = ? AND steps_to_target IS NOT NULL "
          "AND (phase IS NULL OR phase = 'finish') ORDER BY seed"));
  for (ScalingRow& r : report.rows) {
    if (!r.steps_to_target) continue;
    seeds.Bind(1, sweep_id)
        .Bind(2, r.optimizer)
        .Bind(3, r.batch_size)
        .Bind(4, r.best_lr);
    MEGABATCH_RETURN_IF_ERROR(
        store::ForEachRow(seeds, [&](store::Statement& q) {
          r.seed_steps_to_target.push_back(q.Double(0));
        }));
    seeds.Reset();
  }

  std::vector<std::string> order;
  std::map<std::string, std::vector<std::pair<double, double>>> points;
  std::map<std::string, std::vector<std::vector<double>>> seed_points;
  for (const auto& r : report.rows) {
    if (points.count(r.optimizer) == 0) order.push_back(r.optimizer);
    auto& p = points[r.optimizer];
    if (r.steps_to_target) {
      p.emplace_back(r.batch_size, *r.steps_to_target);
      seed_points[r.optimizer].push_back(r.seed_steps_to_target);
    }
  }
  for (const auto& optimizer : order) {
    report.fits.push_back(
        FitCriticalBatch(points[optimizer], seed_points[optimizer]));
    report.fits.back().optimizer = optimizer;
    AddNoiseScale(report.rows, &report.fits.back());
    AddStudyNotes(report.rows, &report.fits.back());
  }

  // An adaptive study's plan: what its planner decided, in order, and the
  // probe's prediction of B_crit.
  MEGABATCH_ASSIGN_OR_RETURN(auto plan,
                             db.Prepare("SELECT message FROM events WHERE "
                                        "sweep_id = ? AND kind = 'plan' ORDER "
                                        "BY id"));
  plan.Bind(1, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(store::ForEachRow(
      plan, [&](store::Statement& q) { report.plan.push_back(q.Text(0)); }));
  MEGABATCH_ASSIGN_OR_RETURN(
      auto probe,
      db.Prepare(
          "SELECT COALESCE(noise_scale_at_100pct, gradient_noise_scale) FROM "
          "trial_summary "
          "WHERE sweep_id = ? AND phase = 'probe'"));
  probe.Bind(1, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(store::ForEachRow(probe, [&](store::Statement& q) {
    report.predicted_b_crit = q.OptionalDouble(0);
  }));

  MEGABATCH_ASSIGN_OR_RETURN(
      auto diverged,
      db.Prepare(
          "SELECT optimizer, batch_size, lr, SUM(diverged), COUNT(*) "
          "FROM trial_summary WHERE sweep_id = ? GROUP BY optimizer, "
          "batch_size, "
          "lr "
          "HAVING SUM(diverged) > 0 ORDER BY optimizer, batch_size, lr"));
  diverged.Bind(1, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(
      store::ForEachRow(diverged, [&](store::Statement& q) {
        report.diverged.push_back({q.Text(0), q.Int(1), q.Double(2),
                                   static_cast<int32_t>(q.Int(3)),
                                   static_cast<int32_t>(q.Int(4))});
      }));
  return report;
}

nlohmann::json ColumnValue(const ScalingRow& row, std::string_view column) {
  auto it = Members().find(column);
  if (it == Members().end()) return nullptr;
  return std::visit(
      [&](auto member) -> nlohmann::json {
        const auto& field = row.*member;
        using T = std::decay_t<decltype(field)>;
        if constexpr (std::is_same_v<T, std::optional<double>>) {
          return field ? nlohmann::json(*field) : nlohmann::json(nullptr);
        } else {
          return field;
        }
      },
      it->second);
}

}  // namespace megabatch::report
