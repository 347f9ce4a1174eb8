#include "server/planner/adaptive.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "common/selection_metrics.h"

namespace megabatch::planner {
namespace {

using nlohmann::json;

// Exponents (lr = lr0 x 2^e) are kept on a grid of quarters.
double Quantize(double e) { return std::round(e * 4) / 4; }

// The rule the search starts from: the spec's, else the one the large-batch
// papers use for the optimizer (docs/method.md, "Learning rate").
spec::LrScaling Rule(const spec::SweepSpec& spec,
                     const std::string& optimizer) {
  if (spec.lr_scaling != spec::LrScaling::kNone) return spec.lr_scaling;
  return optimizer == "sgd" || optimizer == "lars" ? spec::LrScaling::kLinear
                                                   : spec::LrScaling::kSqrt;
}

const char* RuleName(spec::LrScaling rule) {
  return rule == spec::LrScaling::kLinear ? "linear" : "sqrt";
}

double BaseLr(const spec::SweepSpec& spec, const spec::OptimizerSpec& opt) {
  return opt.base_lr > 0 ? opt.base_lr : spec.base_lr;
}

double PredictedLr(const spec::SweepSpec& spec, const spec::OptimizerSpec& opt,
                   int64_t b) {
  return spec::ScaledLr(Rule(spec, opt.name), BaseLr(spec, opt),
                        spec.base_batch_size, b);
}

int64_t BudgetSamples(const spec::SweepSpec& spec) {
  if (spec.budget.contains("samples"))
    return spec.budget["samples"].get<int64_t>();
  return static_cast<int64_t>(
      std::llround(spec.budget["epochs"].get<double>() * spec.train_samples));
}

// A search run trains search_fraction of the budget's samples, and at least
// kMinSearchSteps steps of its batch: a few steps rank no lr.
constexpr int64_t kMinSearchSteps = 10;

json SearchBudget(const spec::SweepSpec& spec, int64_t batch_size) {
  const double fraction = spec.strategy["search_fraction"].get<double>();
  const int64_t samples =
      std::max<int64_t>(kMinSearchSteps * batch_size,
                        std::llround(fraction * BudgetSamples(spec)));
  return {{"samples", samples}};
}

// a ranks before b: reached the target in fewer samples, then (neither
// reached it) the better best value of the target metric; diverged last.
bool Better(const PlannedTrial& a, const PlannedTrial& b,
            bool higher_is_better) {
  if (a.diverged != b.diverged) return b.diverged;
  if (a.samples_to_target.has_value() != b.samples_to_target.has_value()) {
    return a.samples_to_target.has_value();
  }
  if (a.samples_to_target) return *a.samples_to_target < *b.samples_to_target;
  if (a.best_target_value.has_value() != b.best_target_value.has_value()) {
    return a.best_target_value.has_value();
  }
  if (!a.best_target_value) return false;
  return higher_is_better ? *a.best_target_value > *b.best_target_value
                          : *a.best_target_value < *b.best_target_value;
}

std::string Outcome(const PlannedTrial& t, const std::string& metric) {
  if (t.diverged) return "diverged";
  if (t.samples_to_target)
    return "target at " + PlanNumber(*t.samples_to_target) + " samples";
  if (t.best_target_value)
    return metric + " " + PlanNumber(*t.best_target_value);
  return "no result";
}

// Where one optimizer's lr search at one batch size stands.
struct Search {
  std::map<double, const PlannedTrial*> by_exponent;  // ended trials
  bool waiting = false;  // a trial of it is queued or running
  bool done = false;
  double best = 0;  // exponent of the best lr (when any ended)
  bool any_stable = false;
  std::vector<double>
      ranked;  // exponents of the lrs that did not diverge, best first
  std::vector<double> next;  // exponents to try next
  std::string why;           // the decision, when next or done is new
};

Search Evaluate(const std::vector<const PlannedTrial*>& trials, double lr0,
                int limit, bool higher_is_better, const std::string& metric) {
  Search s;
  for (const PlannedTrial* t : trials) {
    if (!t->ended) {
      s.waiting = true;
      continue;
    }
    s.by_exponent[Quantize(std::log2(t->lr / lr0))] = t;
  }
  if (s.waiting) return s;
  if (s.by_exponent.empty()) {
    s.next = {-1, 0, 1};
    return s;
  }
  std::vector<std::pair<double, const PlannedTrial*>> order(
      s.by_exponent.begin(), s.by_exponent.end());
  std::stable_sort(order.begin(), order.end(),
                   [&](const auto& a, const auto& b) {
                     return Better(*a.second, *b.second, higher_is_better);
                   });
  const PlannedTrial* best = order.front().second;
  s.best = order.front().first;
  for (const auto& [e, t] : order) {
    if (!t->diverged) s.ranked.push_back(e);
  }
  s.any_stable = !best->diverged;
  const int tried = static_cast<int>(trials.size());
  auto lower = s.by_exponent.lower_bound(s.best);
  auto upper = s.by_exponent.upper_bound(s.best);
  const bool has_lower = lower != s.by_exponent.begin();
  const bool has_upper = upper != s.by_exponent.end();
  std::ostringstream why;
  why << "best so far x2^" << PlanNumber(s.best) << " ("
      << Outcome(*best, metric) << ")";
  std::string action;  // what the next lrs are for
  if (!s.any_stable) {
    // Every lr diverged: go down.
    s.next = {s.by_exponent.begin()->first - 2};
    action = "every lr diverged, so try 4x smaller";
  } else if (!has_lower) {
    s.next = {s.best - 1};
    why << " is the smallest tried";
    action = "try 2x smaller";
  } else if (!has_upper) {
    s.next = {s.best + 1};
    why << " is the largest tried";
    action = "try 2x larger";
  } else {
    const double lo = std::prev(lower)->first, hi = upper->first;
    why << ", bracketed by x2^" << PlanNumber(lo) << " ("
        << Outcome(*std::prev(lower)->second, metric) << ") and x2^"
        << PlanNumber(hi) << " (" << Outcome(*upper->second, metric) << ")";
    if (hi - lo <= 1) {
      s.done = true;
      why << ", within a factor of 2";
    } else {
      if (s.best - lo > 0.5) s.next.push_back(Quantize((lo + s.best) / 2));
      if (hi - s.best > 0.5) s.next.push_back(Quantize((s.best + hi) / 2));
      if (s.next.empty()) {
        s.done = true;
        why << ", as narrow as the grid of quarter powers of 2 allows";
      } else {
        action = "refine halfway to each";
      }
    }
  }
  if (!s.done && tried + static_cast<int>(s.next.size()) > limit) {
    const int room = std::max(0, limit - tried);
    s.next.resize(std::min<size_t>(s.next.size(), static_cast<size_t>(room)));
    if (s.next.empty()) {
      s.done = true;
      why << "; it would " << action << ", but its " << limit
          << " lr_trials_per_batch are spent";
      action.clear();
    }
  }
  if (!action.empty()) why << ": " << action;
  s.why = why.str();
  return s;
}

}  // namespace

std::vector<int64_t> PlaceBatchSizes(const spec::SweepSpec& spec,
                                     double predicted) {
  const int64_t base = spec.base_batch_size;
  const int64_t cap = spec.strategy["max_batch_size"].get<int64_t>();
  const int n = spec.strategy["batch_sizes"].get<int>();
  // Every batch size splits evenly into ranks and micro-batches.
  const int64_t granule =
      (spec.micro_batch_size > 0 ? spec.micro_batch_size : 2) *
      spec.ranks_per_trial;
  const double hi = std::min<double>(
      static_cast<double>(cap),
      std::max(spec.strategy["span"].get<double>() * predicted, 4.0 * base));
  std::vector<double> points;
  for (int k = 0; k < n; ++k)
    points.push_back(base * std::pow(hi / base, double(k) / (n - 1)));
  if (predicted > base && predicted < hi) {
    size_t nearest = 1;
    for (size_t k = 1; k + 1 < points.size(); ++k) {
      if (std::fabs(std::log(points[k] / predicted)) <
          std::fabs(std::log(points[nearest] / predicted))) {
        nearest = k;
      }
    }
    if (nearest + 1 < points.size()) points[nearest] = predicted;
  }
  std::vector<int64_t> sizes;
  for (double p : points) {
    int64_t b = std::max<int64_t>(granule, std::llround(p / granule) * granule);
    b = std::min(b, cap / granule * granule);
    if (sizes.empty() || b > sizes.back()) sizes.push_back(b);
  }
  sizes.front() = base;
  return sizes;
}

std::string PlanNumber(double v) {
  std::ostringstream s;
  s.precision(4);
  s << v;
  return s.str();
}

PlanStep PlanAdaptive(const spec::SweepSpec& spec,
                      const std::vector<PlannedTrial>& trials,
                      int32_t next_index) {
  PlanStep step;
  const std::string metric = spec.target["metric"].get<std::string>();
  const bool higher = HigherIsBetter(metric);
  const int limit = spec.strategy["lr_trials_per_batch"].get<int>();
  const size_t finish_lrs = spec.strategy["finish_lrs"].get<size_t>();
  const int64_t first_seed = spec.seeds.front();
  const json search_budget = SearchBudget(spec, spec.base_batch_size);
  auto add = [&](const char* phase, const spec::OptimizerSpec& opt, int64_t b,
                 double lr, double multiplier, int64_t seed,
                 const json& budget) {
    spec::TrialSpec t = spec::MakeTrial(spec, opt, b, lr, multiplier, seed,
                                        next_index++, budget);
    if (std::string(phase) == kPhaseProbe) t.config["noise_scale"] = "always";
    step.trials.push_back(std::move(t));
    step.phases.push_back(phase);
  };

  const spec::OptimizerSpec& first = spec.optimizers.front();
  const PlannedTrial* probe = nullptr;
  for (const auto& t : trials) {
    if (t.phase == kPhaseProbe) probe = &t;
  }
  if (probe == nullptr) {
    add(kPhaseProbe, first, spec.base_batch_size, BaseLr(spec, first), 1,
        first_seed, search_budget);
    step.decisions.push_back(
        "probe: " + first.name + " at the base batch " +
        std::to_string(spec.base_batch_size) + " and lr " +
        PlanNumber(BaseLr(spec, first)) + " for " +
        std::to_string(search_budget["samples"].get<int64_t>()) +
        " samples (search_fraction of the budget), measuring the gradient "
        "noise scale");
    return step;
  }
  if (!probe->ended) return step;

  double predicted = probe->noise_scale.value_or(0);
  const bool measured = predicted > 0 && std::isfinite(predicted);
  if (!measured) predicted = 8.0 * spec.base_batch_size;
  const std::vector<int64_t> sizes = PlaceBatchSizes(spec, predicted);
  bool searched = false;
  for (const auto& t : trials) searched = searched || t.phase == kPhaseSearch;
  if (!searched) {
    std::ostringstream d;
    d << "place: predicted B_crit = "
      << (measured
              ? PlanNumber(predicted) + " (B_simple at the probe's end)"
              : PlanNumber(predicted) +
                    " (8x the base batch: the probe measured no noise scale)")
      << "; batch sizes";
    for (int64_t b : sizes) d << " " << b;
    d << " (geometric from " << spec.base_batch_size << " to "
      << PlanNumber(spec.strategy["span"].get<double>())
      << "x the prediction, capped at "
      << spec.strategy["max_batch_size"].get<int64_t>()
      << ", the size nearest the prediction moved onto it)";
    step.decisions.push_back(d.str());
  }

  bool active = false;
  std::vector<std::string> unstable;
  for (const auto& opt : spec.optimizers) {
    for (int64_t b : sizes) {
      const double lr0 = PredictedLr(spec, opt, b);
      std::vector<const PlannedTrial*> searches, finishes;
      for (const auto& t : trials) {
        if (t.optimizer != opt.name || t.batch_size != b) continue;
        if (t.phase == kPhaseFinish) {
          finishes.push_back(&t);
        } else if (t.seed == first_seed &&
                   (t.phase == kPhaseSearch || t.phase == kPhaseProbe)) {
          searches.push_back(&t);
        }
      }
      for (const PlannedTrial* t : finishes) active = active || !t->ended;
      if (!finishes.empty()) continue;
      Search s = Evaluate(searches, lr0, limit, higher, metric);
      const std::string where = opt.name + " at batch " + std::to_string(b);
      if (s.waiting) {
        active = true;
        continue;
      }
      if (s.done && !s.any_stable) {
        unstable.push_back(where);
        continue;
      }
      if (s.done) {
        // The best few of the short runs go the whole way: a short run
        // favours lrs that learn fast early, which need not reach the
        // target first (short-horizon bias); the report picks among them.
        std::ostringstream lrs;
        const size_t n = std::min(s.ranked.size(), finish_lrs);
        for (size_t i = 0; i < n; ++i) {
          const double lr = lr0 * std::exp2(s.ranked[i]);
          for (int64_t seed : spec.seeds) {
            add(kPhaseFinish, opt, b, lr, std::exp2(s.ranked[i]), seed,
                spec.budget);
          }
          lrs << (i == 0 ? " " : ", ") << PlanNumber(lr);
        }
        step.decisions.push_back(
            "finish: " + where + ": " + s.why + "; running the best " +
            std::to_string(n) + " (lr" + lrs.str() + ") on the whole budget, " +
            std::to_string(spec.seeds.size()) + " seed(s) each");
        active = true;
        continue;
      }
      const std::string start = "starting around " + PlanNumber(lr0) + " (" +
                                RuleName(Rule(spec, opt.name)) + " rule from " +
                                PlanNumber(BaseLr(spec, opt)) + " at " +
                                std::to_string(spec.base_batch_size) + ")";
      std::ostringstream lrs;
      for (double e : s.next) {
        add(kPhaseSearch, opt, b, lr0 * std::exp2(e), std::exp2(e), first_seed,
            SearchBudget(spec, b));
        lrs << " " << PlanNumber(lr0 * std::exp2(e)) << " (x2^" << PlanNumber(e)
            << ")";
      }
      step.decisions.push_back("search: " + where + ": " +
                               (s.by_exponent.empty() ? start : s.why) +
                               "; trying" + lrs.str());
      active = true;
    }
  }
  if (!active && step.trials.empty()) {
    std::string d = "done: every batch size's best lr ran on the whole budget";
    if (!unstable.empty()) {
      d += "; no stable lr found for";
      for (const auto& u : unstable) d += " " + u + ";";
      d.pop_back();
    }
    step.decisions.push_back(d);
  }
  return step;
}

}  // namespace megabatch::planner
