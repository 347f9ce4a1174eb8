// The grid that extends itself past its lr edges (spec lr_edges: extend),
// driven without a database: a simulated study gives every planned trial a
// result from a known response and checks what the planner adds.
#include "server/planner/lr_edges.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>

#include "tests/testing/status_matchers.h"

namespace megabatch::planner {
namespace {

using ::testing::HasSubstr;

spec::SweepSpec Spec(const std::string& extra = "") {
  auto s = spec::ParseSweepSpec(R"yaml(
name: edges
model: {type: mlp, hidden: [32]}
optimizers: [{name: lamb}]
batch_sizes: [128, 1024]
base: {batch_size: 128, lr: 0.01}
lr_multipliers: [1, 2]
seeds: [0, 1]
target: {metric: val_accuracy, value: 0.8}
lr_edges: extend
)yaml" + extra);
  EXPECT_OK(s);
  return *s;
}

PlannedTrial FromSpec(const spec::TrialSpec& t) {
  PlannedTrial p;
  p.optimizer = t.optimizer;
  p.batch_size = t.batch_size;
  p.lr = t.lr;
  p.lr_multiplier = t.lr_multiplier;
  p.seed = t.seed;
  return p;
}

// Runs the grid, then every extension, to the end: `result` gives each
// trial its outcome. Returns every trial in creation order.
std::vector<PlannedTrial> Simulate(
    const spec::SweepSpec& spec,
    const std::function<void(PlannedTrial*)>& result,
    std::vector<std::string>* decisions) {
  std::vector<PlannedTrial> trials;
  for (const spec::TrialSpec& t : spec::ExpandSweep(spec)) {
    trials.push_back(FromSpec(t));
  }
  for (int round = 0; round < 50; ++round) {
    // Nothing is planned while a cell's trials run.
    EXPECT_TRUE(ExtendLrEdges(spec, trials, static_cast<int32_t>(trials.size()))
                    .trials.empty() ||
                round > 0);
    for (PlannedTrial& t : trials) {
      if (t.ended) continue;
      result(&t);
      t.ended = true;
    }
    PlanStep step =
        ExtendLrEdges(spec, trials, static_cast<int32_t>(trials.size()));
    decisions->insert(decisions->end(), step.decisions.begin(),
                      step.decisions.end());
    if (step.trials.empty()) break;
    const size_t first = trials.size();
    for (size_t i = 0; i < step.trials.size(); ++i) {
      EXPECT_EQ(step.trials[i].index, static_cast<int32_t>(first + i));
      trials.push_back(FromSpec(step.trials[i]));
    }
    // Those trials not yet ended: planning again adds nothing.
    EXPECT_TRUE(ExtendLrEdges(spec, trials, static_cast<int32_t>(trials.size()))
                    .trials.empty());
  }
  return trials;
}

// Steps to target fall as the lr grows towards `best` (a parabola in
// log2 lr) and the trial diverges 4x past it.
std::function<void(PlannedTrial*)> Response(
    std::map<int64_t, double> best_multiplier) {
  return [best_multiplier](PlannedTrial* t) {
    const double best = best_multiplier.at(t->batch_size);
    const double d = std::log2(t->lr_multiplier / best);
    if (d >= 2) {
      t->diverged = true;
      return;
    }
    t->completed = true;
    t->samples_to_target = 1e5 * (1 + d * d) * (1 + 0.01 * t->seed);
  };
}

double BestMultiplier(const std::vector<PlannedTrial>& trials, int64_t b) {
  std::map<double, double> mean;
  std::map<double, bool> reached;
  for (const auto& t : trials) {
    if (t.batch_size != b) continue;
    reached.emplace(t.lr_multiplier, true);
    if (!t.samples_to_target) {
      reached[t.lr_multiplier] = false;
      continue;
    }
    mean[t.lr_multiplier] += *t.samples_to_target;
  }
  double best = 0, best_steps = 1e300;
  for (const auto& [m, steps] : mean) {
    if (reached[m] && steps < best_steps) best = m, best_steps = steps;
  }
  return best;
}

TEST(LrEdgesTest, ABestLrAtTheTopIsExtendedUntilItIsInterior) {
  // The best lr is 8x the base at 128 (the grid stops at 2x) and 1x at
  // 1,024 (inside... the grid's bottom edge: 0.5 is tried and loses).
  std::vector<std::string> decisions;
  auto trials = Simulate(Spec(), Response({{128, 8}, {1024, 1}}), &decisions);
  EXPECT_EQ(BestMultiplier(trials, 128), 8);
  EXPECT_EQ(BestMultiplier(trials, 1024), 1);
  // 128: 4x, 8x and 16x added (16x loses: 8x is interior), 2 seeds each;
  // 1,024: 0.5x added below its edge, and loses.
  std::map<int64_t, int> per_batch;
  for (const auto& t : trials) ++per_batch[t.batch_size];
  EXPECT_EQ(per_batch[128], 4 + 3 * 2);
  EXPECT_EQ(per_batch[1024], 4 + 2);
  EXPECT_THAT(decisions.front(), HasSubstr("is the largest tried; trying"));
}

TEST(LrEdgesTest, ExtensionStopsAtADivergenceAndAtTheCap) {
  std::vector<std::string> decisions;
  // At 1,024 the best would be 64x: the cap of 2 lrs beyond the grid stops
  // the extension at 8x, whose figures the report calls bounds.
  auto trials = Simulate(Spec("lr_edges_max: 2\n"),
                         Response({{128, 0.5}, {1024, 64}}), &decisions);
  EXPECT_EQ(BestMultiplier(trials, 1024), 8);
  double top = 0;
  for (const auto& t : trials) {
    if (t.batch_size == 1024) top = std::max(top, t.lr_multiplier);
  }
  EXPECT_EQ(top, 8);
  // At 128 the best (0.5x) is below the grid; 0.25x is tried and loses.
  EXPECT_EQ(BestMultiplier(trials, 128), 0.5);
}

TEST(LrEdgesTest, AnInteriorBestAddsNothing) {
  auto spec = Spec();
  spec.lr_multipliers = {0.5, 1, 2};
  std::vector<std::string> decisions;
  auto trials = Simulate(spec, Response({{128, 1}, {1024, 1}}), &decisions);
  EXPECT_EQ(trials.size(), 2u * 3 * 2);
  EXPECT_TRUE(decisions.empty());
}

TEST(LrEdgesTest, TheSpecSaysExtendOrOffAndNotForAdaptiveStudies) {
  EXPECT_EQ(Spec().lr_edges, "extend");
  auto off = spec::ParseSweepSpec(
      "name: g\noptimizers: [{name: sgd}]\nbatch_sizes: [128]\n"
      "base: {lr: 0.1}\n");
  ASSERT_OK(off);
  EXPECT_EQ(off->lr_edges, "off");
  auto bad = spec::ParseSweepSpec(
      "name: g\noptimizers: [{name: sgd}]\nbatch_sizes: [128]\n"
      "base: {lr: 0.1}\nlr_edges: sometimes\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("lr_edges"));
}

}  // namespace
}  // namespace megabatch::planner
