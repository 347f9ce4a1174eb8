#include "cli/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <vector>

#include "common/selection_metrics.h"

namespace megabatch::cli {
namespace {

constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                   "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string Fixed(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

std::string Short(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

// A plot area: x is log2(batch size); y is log10(value) or the value.
struct Panel {
  double left, top, width, height;
  double x_lo, x_hi, y_lo, y_hi;
  bool log_y;

  double X(double batch) const {
    return left + (std::log2(batch) - x_lo) / (x_hi - x_lo) * width;
  }
  double Y(double v) const {
    double t = log_y ? std::log10(v) : v;
    return top + height - (t - y_lo) / (y_hi - y_lo) * height;
  }
};

void Widen(double* lo, double* hi, double pad_fraction, double min_span) {
  double span = std::max(*hi - *lo, min_span);
  double mid = (*lo + *hi) / 2;
  *lo = mid - span / 2 * (1 + pad_fraction);
  *hi = mid + span / 2 * (1 + pad_fraction);
}

struct Series {
  std::string optimizer;
  std::string color;
  std::vector<std::pair<double, double>> steps;   // (batch, steps to target)
  std::vector<std::pair<double, double>> metric;  // (batch, best metric)
  std::vector<std::pair<double, double>> fit;  // S_min·(1 + B_crit/b), sampled
};

void Axes(std::ostream& svg, const Panel& p, const std::vector<double>& batches,
          const std::string& title, const std::string& y_label) {
  svg << "<g class=\"axes\" font-size=\"11\">\n";
  svg << "<rect x=\"" << Fixed(p.left) << "\" y=\"" << Fixed(p.top)
      << "\" width=\"" << Fixed(p.width) << "\" height=\"" << Fixed(p.height)
      << "\" fill=\"none\" stroke=\"#444\"/>\n";
  svg << "<text x=\"" << Fixed(p.left + p.width / 2) << "\" y=\""
      << Fixed(p.top - 12) << "\" text-anchor=\"middle\" font-size=\"14\">"
      << Escape(title) << "</text>\n";
  for (double b : batches) {
    double x = p.X(b);
    svg << "<line x1=\"" << Fixed(x) << "\" y1=\"" << Fixed(p.top + p.height)
        << "\" x2=\"" << Fixed(x) << "\" y2=\"" << Fixed(p.top + p.height + 5)
        << "\" stroke=\"#444\"/>\n<text x=\"" << Fixed(x) << "\" y=\""
        << Fixed(p.top + p.height + 18) << "\" text-anchor=\"middle\">"
        << (b == std::round(b) && b < 1e7
                ? std::to_string(static_cast<int64_t>(b))
                : Short(b))
        << "</text>\n";
  }
  svg << "<text x=\"" << Fixed(p.left + p.width / 2) << "\" y=\""
      << Fixed(p.top + p.height + 36)
      << "\" text-anchor=\"middle\">batch size</text>\n";
  std::vector<double> ticks;
  if (p.log_y) {
    for (int k = static_cast<int>(std::floor(p.y_lo)); k <= std::ceil(p.y_hi);
         ++k) {
      for (double m : {1.0, 2.0, 5.0}) {
        double v = m * std::pow(10.0, k);
        double t = std::log10(v);
        if (t >= p.y_lo && t <= p.y_hi) ticks.push_back(v);
      }
    }
  } else {
    // Four to eight ticks at a round step: 1, 2 or 5 times a power of ten.
    double raw = (p.y_hi - p.y_lo) / 6;
    double step = std::pow(10.0, std::floor(std::log10(raw)));
    for (double m : {2.0, 5.0, 10.0}) {
      if (step < raw) step = m * std::pow(10.0, std::floor(std::log10(raw)));
    }
    for (double v = std::ceil(p.y_lo / step) * step; v <= p.y_hi; v += step) {
      ticks.push_back(std::abs(v) < step / 2 ? 0.0 : v);
    }
  }
  for (double v : ticks) {
    double y = p.Y(v);
    svg << "<line x1=\"" << Fixed(p.left - 5) << "\" y1=\"" << Fixed(y)
        << "\" x2=\"" << Fixed(p.left) << "\" y2=\"" << Fixed(y)
        << "\" stroke=\"#444\"/>\n<text x=\"" << Fixed(p.left - 8) << "\" y=\""
        << Fixed(y + 4) << "\" text-anchor=\"end\">" << Short(v) << "</text>\n";
  }
  svg << "<text transform=\"translate(" << Fixed(p.left - 55) << ","
      << Fixed(p.top + p.height / 2)
      << ") rotate(-90)\" text-anchor=\"middle\">" << Escape(y_label)
      << "</text>\n</g>\n";
}

void Line(std::ostream& svg, const std::string& cls, const Series& s,
          const std::vector<std::pair<double, double>>& points, const Panel& p,
          const char* dash = nullptr) {
  svg << "<polyline class=\"" << cls << "\" data-optimizer=\""
      << Escape(s.optimizer) << "\" fill=\"none\" stroke=\"" << s.color
      << "\" stroke-width=\"2\"";
  if (dash) svg << " stroke-dasharray=\"" << dash << "\"";
  svg << " points=\"";
  for (size_t i = 0; i < points.size(); ++i) {
    svg << (i ? " " : "") << Fixed(p.X(points[i].first)) << ","
        << Fixed(p.Y(points[i].second));
  }
  svg << "\"/>\n";
  if (dash) return;
  for (const auto& [b, v] : points) {
    svg << "<circle cx=\"" << Fixed(p.X(b)) << "\" cy=\"" << Fixed(p.Y(v))
        << "\" r=\"3.5\" fill=\"" << s.color << "\"><title>"
        << Escape(s.optimizer) << " b=" << Short(b) << ": " << Short(v)
        << "</title></circle>\n";
  }
}

}  // namespace

std::string ScalingPlotSvg(const v1::SweepReport& report) {
  const std::string selection =
      report.target_metric().empty() ? "val_accuracy" : report.target_metric();
  const bool higher_is_better = HigherIsBetter(selection);
  std::vector<Series> series;
  std::map<std::string, size_t> index;
  std::vector<double> batches;
  for (const auto& r : report.rows()) {
    auto [it, added] = index.emplace(r.optimizer(), series.size());
    if (added) {
      series.push_back({r.optimizer(),
                        kColors[series.size() % std::size(kColors)],
                        {},
                        {},
                        {}});
    }
    Series& s = series[it->second];
    double b = static_cast<double>(r.batch_size());
    batches.push_back(b);
    if (r.has_steps_to_target() && r.steps_to_target() > 0) {
      s.steps.emplace_back(b, r.steps_to_target());
    }
    if (r.has_best_target_value()) {
      s.metric.emplace_back(b, r.best_target_value());
    } else if (!higher_is_better ? r.has_best_test_loss()
                                 : r.has_best_test_accuracy()) {
      // A report from before the validation split.
      s.metric.emplace_back(
          b, !higher_is_better ? r.best_test_loss() : r.best_test_accuracy());
    }
  }
  std::sort(batches.begin(), batches.end());
  batches.erase(std::unique(batches.begin(), batches.end()), batches.end());
  // The fitted curve of each optimizer with a fit, over the batch range.
  for (const auto& f : report.fits()) {
    auto it = index.find(f.optimizer());
    if (it == index.end() || !f.has_s_min() || !f.has_b_crit() ||
        batches.empty())
      continue;
    const double lo = std::log2(batches.front()),
                 hi = std::log2(batches.back());
    for (int k = 0; k <= 48; ++k) {
      const double b = std::exp2(lo + (hi - lo) * k / 48.0);
      series[it->second].fit.emplace_back(b, f.s_min() * (1 + f.b_crit() / b));
    }
  }

  // Perfect scaling from each optimizer's smallest batch that reached the
  // target: S(b) = S(b0)·b0/b.
  std::vector<std::vector<std::pair<double, double>>> perfect(series.size());
  double x_lo = 0, x_hi = 1;
  if (!batches.empty()) {
    x_lo = std::log2(batches.front());
    x_hi = std::log2(batches.back());
  }
  Widen(&x_lo, &x_hi, 0.12, 1.0);
  double s_lo = INFINITY, s_hi = -INFINITY, m_lo = INFINITY, m_hi = -INFINITY;
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    if (!s.steps.empty()) {
      auto [b0, s0] = s.steps.front();
      for (double b : batches) {
        if (b >= b0) perfect[i].emplace_back(b, s0 * b0 / b);
      }
    }
    for (const auto& pts : {s.steps, perfect[i], s.fit}) {
      for (const auto& [b, v] : pts) {
        s_lo = std::min(s_lo, std::log10(v));
        s_hi = std::max(s_hi, std::log10(v));
      }
    }
    for (const auto& [b, v] : s.metric) {
      m_lo = std::min(m_lo, v);
      m_hi = std::max(m_hi, v);
    }
  }
  const bool any_steps = s_lo <= s_hi;
  const bool any_metric = m_lo <= m_hi;
  if (!any_steps) s_lo = 0, s_hi = 1;
  if (!any_metric) m_lo = 0, m_hi = 1;
  Widen(&s_lo, &s_hi, 0.1, 0.3);
  Widen(&m_lo, &m_hi, 0.1, 0.01);
  const Panel steps{90, 50, 380, 300, x_lo, x_hi, s_lo, s_hi, true};
  const Panel metric{600, 50, 380, 300, x_lo, x_hi, m_lo, m_hi, false};

  std::ostringstream svg;
  const double height = 430 + 20.0 * ((series.size() + 2) / 4);
  svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1020\" height=\""
      << Fixed(height) << "\" viewBox=\"0 0 1020 " << Fixed(height)
      << "\" font-family=\"sans-serif\">\n"
      << "<title>sweep " << report.sweep().id() << " "
      << Escape(report.sweep().name()) << ": large-batch scaling</title>\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  std::string target = report.target_metric().empty()
                           ? "steps to target (no target set)"
                           : "steps to " + report.target_metric() +
                                 (higher_is_better ? " >= " : " <= ") +
                                 Short(report.target_value());
  Axes(svg, steps, batches, target, "steps (log)");
  Axes(svg, metric, batches, "best " + selection + " (validation)", selection);
  if (!any_steps) {
    svg << "<text x=\"" << Fixed(steps.left + steps.width / 2) << "\" y=\""
        << Fixed(steps.top + steps.height / 2)
        << "\" text-anchor=\"middle\" fill=\"#888\">no trial reached the "
           "target</text>\n";
  }
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    if (perfect[i].size() >= 2)
      Line(svg, "perfect", s, perfect[i], steps, "5,4");
    if (!s.fit.empty()) Line(svg, "fit", s, s.fit, steps, "1,3");
    if (!s.steps.empty()) Line(svg, "series steps", s, s.steps, steps);
    if (!s.metric.empty()) Line(svg, "series metric", s, s.metric, metric);
  }
  svg << "<g class=\"legend\" font-size=\"12\">\n";
  for (size_t i = 0; i <= series.size() + 1; ++i) {
    double x = 90 + 220.0 * (i % 4), y = 410 + 20.0 * (i / 4);
    const bool perfect_key = i == series.size(),
               fit_key = i == series.size() + 1;
    const bool key = perfect_key || fit_key;
    svg << "<line x1=\"" << Fixed(x) << "\" y1=\"" << Fixed(y) << "\" x2=\""
        << Fixed(x + 24) << "\" y2=\"" << Fixed(y) << "\" stroke=\""
        << (key ? "#444" : series[i].color) << "\" stroke-width=\"2\""
        << (perfect_key ? " stroke-dasharray=\"5,4\""
            : fit_key   ? " stroke-dasharray=\"1,3\""
                        : "")
        << "/>\n<text x=\"" << Fixed(x + 30) << "\" y=\"" << Fixed(y + 4)
        << "\">"
        << (perfect_key ? "perfect scaling S(b0)·b0/b"
            : fit_key   ? "fit S_min·(1 + B_crit/b)"
                        : Escape(series[i].optimizer))
        << "</text>\n";
  }
  svg << "</g>\n</svg>\n";
  return svg.str();
}

}  // namespace megabatch::cli
