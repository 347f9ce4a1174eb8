// The adaptive study's planner, driven without a database: a simulated
// study feeds each planned trial a result from a known response surface and
// checks what the planner asks for next.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <set>

#include "server/planner/adaptive.h"
#include "tests/testing/status_matchers.h"

namespace megabatch::planner {
namespace {

using ::testing::HasSubstr;

spec::SweepSpec Spec(const std::string& budget = "{epochs: 2}") {
  auto s = spec::ParseSweepSpec(R"yaml(
name: adaptive
model: {type: mlp, hidden: [32]}
optimizers: [{name: lamb}, {name: sgd}]
base: {batch_size: 128, lr: 0.002}
strategy: {type: adaptive, max_batch_size: 16384, batch_sizes: 5, lr_trials_per_batch: 5}
target: {metric: val_accuracy, value: 0.8}
seeds: [0, 1]
budget: )yaml" + budget);
  EXPECT_OK(s);
  return *s;
}

// Runs the plan to the end: every planned trial ends with `result`'s
// outcome for it. Returns every trial, in creation order.
std::vector<PlannedTrial> Simulate(
    const spec::SweepSpec& spec,
    const std::function<void(PlannedTrial*)>& result,
    std::vector<std::string>* decisions = nullptr) {
  std::vector<PlannedTrial> trials;
  for (int round = 0; round < 200; ++round) {
    PlanStep step =
        PlanAdaptive(spec, trials, static_cast<int32_t>(trials.size()));
    if (decisions) {
      decisions->insert(decisions->end(), step.decisions.begin(),
                        step.decisions.end());
    }
    // The same trials again plan nothing more: the planner never repeats.
    std::vector<PlannedTrial> pending = trials;
    for (size_t i = 0; i < step.trials.size(); ++i) {
      PlannedTrial t;
      t.phase = step.phases[i];
      t.optimizer = step.trials[i].optimizer;
      t.batch_size = step.trials[i].batch_size;
      t.lr = step.trials[i].lr;
      t.seed = step.trials[i].seed;
      EXPECT_EQ(step.trials[i].index, static_cast<int32_t>(trials.size() + i));
      pending.push_back(t);
    }
    EXPECT_TRUE(
        PlanAdaptive(spec, pending, static_cast<int32_t>(pending.size()))
            .trials.empty())
        << "planned twice in round " << round;
    if (step.trials.empty()) break;
    for (size_t i = trials.size(); i < pending.size(); ++i) {
      result(&pending[i]);
      pending[i].ended = true;
    }
    trials = pending;
  }
  return trials;
}

// val_accuracy falls off away from the best lr at each batch size: a
// parabola in log2(lr) around `best_lr(batch)`; lrs 8x past it diverge.
std::function<void(PlannedTrial*)> Surface(
    std::function<double(int64_t)> best_lr) {
  return [best_lr](PlannedTrial* t) {
    const double d = std::log2(t->lr / best_lr(t->batch_size));
    if (d > 3) {
      t->diverged = true;
      return;
    }
    t->completed = true;
    t->best_target_value = 0.78 - 0.01 * d * d;
    t->noise_scale = 900;
  };
}

TEST(AdaptivePlannerTest,
     StartsWithOneProbeAtTheBaseBatchMeasuringTheNoiseScale) {
  PlanStep step = PlanAdaptive(Spec(), {}, 0);
  ASSERT_EQ(step.trials.size(), 1u);
  EXPECT_EQ(step.phases[0], kPhaseProbe);
  EXPECT_EQ(step.trials[0].optimizer, "lamb");
  EXPECT_EQ(step.trials[0].batch_size, 128);
  EXPECT_DOUBLE_EQ(step.trials[0].lr, 0.002);
  EXPECT_EQ(step.trials[0].config["noise_scale"], "always");
  // 20% of 2 epochs of 55,000 samples.
  EXPECT_EQ(step.trials[0].config["budget"],
            nlohmann::json({{"samples", 22000}}));
  ASSERT_EQ(step.decisions.size(), 1u);
  EXPECT_THAT(step.decisions[0], HasSubstr("probe"));
  // A tiny budget still trains 10 steps of the batch.
  PlanStep tiny = PlanAdaptive(Spec("{samples: 1000}"), {}, 0);
  ASSERT_EQ(tiny.trials.size(), 1u);
  EXPECT_EQ(tiny.trials[0].config["budget"],
            nlohmann::json({{"samples", 1280}}));
  // While it runs, nothing more.
  PlannedTrial probe;
  probe.phase = kPhaseProbe;
  probe.optimizer = "lamb";
  probe.batch_size = 128;
  probe.lr = 0.002;
  EXPECT_TRUE(PlanAdaptive(Spec(), {probe}, 1).trials.empty());
}

TEST(AdaptivePlannerTest,
     BatchSizesRunGeometricallyToSixteenTimesThePredictionThroughIt) {
  auto sizes = PlaceBatchSizes(Spec(), 1000);
  ASSERT_EQ(sizes.size(), 5u);
  EXPECT_EQ(sizes.front(), 128);
  EXPECT_EQ(sizes.back(), 16000);
  EXPECT_TRUE(std::find(sizes.begin(), sizes.end(), 1000) != sizes.end());
  EXPECT_TRUE(std::is_sorted(sizes.begin(), sizes.end()));
  // Capped by max_batch_size; a prediction below the base still spans 4x.
  EXPECT_EQ(PlaceBatchSizes(Spec(), 1e6).back(), 16384);
  EXPECT_EQ(PlaceBatchSizes(Spec(), 10).back(), 512);
}

TEST(AdaptivePlannerTest,
     FindsTheBestLrAtEachBatchWithinAFactorOfTwoAndFinishesIt) {
  // The best lr grows like sqrt(batch) from 0.003 at 128 (the rule's
  // prediction, 0.002 x sqrt(b / 128), is 1.5x too small).
  auto best = [](int64_t b) { return 0.003 * std::sqrt(b / 128.0); };
  std::vector<std::string> decisions;
  auto trials = Simulate(Spec(), Surface(best), &decisions);
  const auto sizes = PlaceBatchSizes(Spec(), 900);
  int finishes = 0, searches = 0;
  for (const auto& opt : {std::string("lamb"), std::string("sgd")}) {
    for (int64_t b : sizes) {
      std::vector<const PlannedTrial*> finish;
      int tried = 0;
      for (const auto& t : trials) {
        if (t.optimizer != opt || t.batch_size != b) continue;
        if (t.phase == kPhaseFinish) finish.push_back(&t);
        if (t.phase != kPhaseFinish) ++tried;
      }
      EXPECT_LE(tried, 5) << opt << " at " << b;
      searches += tried;
      ASSERT_EQ(finish.size(), 4u)
          << opt << " at " << b << ": the best 2 lrs, each per seed";
      EXPECT_NE(finish[0]->seed, finish[1]->seed);
      EXPECT_EQ(finish[0]->lr, finish[1]->lr);
      EXPECT_NE(finish[0]->lr, finish[2]->lr);
      // Within a factor of 2 of the truth (sqrt(2) either way).
      EXPECT_LE(std::fabs(std::log2(finish[0]->lr / best(b))), 0.5 + 1e-9)
          << opt << " at " << b << ": lr " << finish[0]->lr << " vs "
          << best(b);
      finishes += 4;
    }
  }
  EXPECT_EQ(finishes, 2 * 5 * 4);
  EXPECT_THAT(decisions.back(), HasSubstr("done"));
  EXPECT_THAT(decisions[1], HasSubstr("place: predicted B_crit = 900"));
}

TEST(AdaptivePlannerTest, ADivergedLrBoundsTheSearchFromAbove) {
  // Every lr at or above 2x the prediction diverges; the best is the largest
  // stable lr tried.
  auto trials = Simulate(Spec(), [](PlannedTrial* t) {
    const double d =
        std::log2(t->lr / (0.002 * std::sqrt(t->batch_size / 128.0)));
    t->noise_scale = 500;
    if (d >= 1) {
      t->diverged = true;
      return;
    }
    t->completed = true;
    t->best_target_value =
        0.7 + 0.01 * d;  // larger is better, up to divergence
  });
  std::map<int64_t, double> largest;  // LAMB's largest finished lr per batch
  for (const auto& t : trials) {
    if (t.phase != kPhaseFinish) continue;
    const double d =
        std::log2(t.lr / (0.002 * std::sqrt(t.batch_size / 128.0)));
    EXPECT_LT(d, 1) << "finished a diverging lr at batch " << t.batch_size;
    if (t.optimizer == "lamb")
      largest[t.batch_size] = std::max(largest[t.batch_size], d);
  }
  // LAMB's rule (sqrt) is this surface's: its search brackets the edge.
  // SGD's (linear) starts far above it and spends its trials coming down.
  ASSERT_EQ(largest.size(), 5u);
  for (const auto& [b, d] : largest) {
    EXPECT_GE(d, 0.5 - 1e-9)
        << "stopped short of the stable edge at batch " << b;
  }
}

TEST(AdaptivePlannerTest,
     ABatchSizeWhereEveryLrDivergesGetsNoFinishAndIsNamed) {
  std::vector<std::string> decisions;
  auto trials = Simulate(
      Spec(),
      [](PlannedTrial* t) {
        t->noise_scale = 500;
        if (t->batch_size >= 2000) {
          t->diverged = true;
          return;
        }
        t->completed = true;
        t->best_target_value = 0.7;
      },
      &decisions);
  for (const auto& t : trials) {
    if (t.phase == kPhaseFinish) {
      EXPECT_LT(t.batch_size, 2000);
    }
  }
  EXPECT_THAT(decisions.back(), HasSubstr("no stable lr found for"));
}

TEST(AdaptivePlannerTest, ReachingTheTargetSoonerRanksFirst) {
  // Every lr reaches the target; the fewest samples wins even though another
  // lr has a better final accuracy.
  auto trials = Simulate(Spec(), [](PlannedTrial* t) {
    const double d =
        std::log2(t->lr / (0.002 * std::sqrt(t->batch_size / 128.0)));
    t->completed = true;
    t->noise_scale = 300;
    t->samples_to_target = 10000 + 1000 * (d - 1) * (d - 1);
    t->best_target_value = 0.9 - 0.01 * d;
  });
  std::set<std::pair<std::string, int64_t>> seen;
  for (const auto& t : trials) {
    if (t.phase != kPhaseFinish ||
        !seen.insert({t.optimizer, t.batch_size}).second)
      continue;
    // The first finish run of each batch size is the search's best.
    const double d =
        std::log2(t.lr / (0.002 * std::sqrt(t.batch_size / 128.0)));
    EXPECT_NEAR(d, 1, 0.5 + 1e-9)
        << t.optimizer << " at batch " << t.batch_size;
  }
}

TEST(AdaptivePlannerTest, SpecRulesForAdaptiveStudies) {
  auto parse = [](const std::string& text) {
    return spec::ParseSweepSpec(text);
  };
  const std::string head = R"yaml(
name: a
model: {type: mlp}
optimizers: [{name: lamb}]
base: {batch_size: 128, lr: 0.002}
)yaml";
  auto no_target = parse(head + "strategy: {type: adaptive}\n");
  EXPECT_THAT(no_target.status().message(),
              HasSubstr("target: required by strategy adaptive"));
  auto with_list = parse(head +
                         "strategy: {type: adaptive}\nbatch_sizes: [128]\n"
                         "target: {metric: val_accuracy, value: 0.8}\n");
  EXPECT_THAT(with_list.status().message(),
              HasSubstr("batch_sizes: not with strategy adaptive"));
  auto steps = parse(head +
                     "strategy: {type: adaptive}\nbudget: {steps: 10}\n"
                     "target: {metric: val_accuracy, value: 0.8}\n");
  EXPECT_THAT(steps.status().message(),
              HasSubstr("budget: strategy adaptive needs"));
  auto fraction = parse(head +
                        "strategy: {type: adaptive, search_fraction: 2}\n"
                        "target: {metric: val_accuracy, value: 0.8}\n");
  EXPECT_THAT(fraction.status().message(),
              HasSubstr("strategy.search_fraction: must be at most 1"));
  auto typo = parse(head +
                    "strategy: {type: adaptive, batch_size: 4}\n"
                    "target: {metric: val_accuracy, value: 0.8}\n");
  EXPECT_THAT(typo.status().message(),
              HasSubstr("strategy.batch_size: unknown field"));
  auto split = parse(head +
                     "strategy: {type: adaptive}\nranks_per_trial: 3\n"
                     "target: {metric: val_accuracy, value: 0.8}\n");
  EXPECT_THAT(split.status().message(),
              HasSubstr("base.batch_size: 128 does not split"));
  auto ok = parse(head +
                  "strategy: {type: adaptive}\ntarget: {metric: val_accuracy, "
                  "value: 0.8}\n");
  ASSERT_OK(ok);
  EXPECT_EQ(ok->strategy["batch_sizes"], 6);
  EXPECT_EQ(ok->strategy["finish_lrs"], 2);
  EXPECT_EQ(ok->strategy["span"], 16.0);
  EXPECT_EQ(ok->strategy["max_batch_size"], 55000);
  EXPECT_TRUE(spec::ExpandSweep(*ok).empty());
  // Stored and read back, it is the same spec.
  auto again = spec::SweepSpecFromJson(ok->ToJson());
  ASSERT_OK(again);
  EXPECT_EQ(again->ToJson(), ok->ToJson());
}

}  // namespace
}  // namespace megabatch::planner
