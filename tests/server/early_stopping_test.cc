// The early-stopping rungs as pure decisions, without a database (the
// store's use of them: SweepStoreTest.SuccessiveHalving...).
#include "server/planner/early_stopping.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "tests/testing/status_matchers.h"

namespace megabatch::planner {
namespace {

EarlyStoppingRule Rule(bool lower_is_better = false) {
  return {"val_accuracy", lower_is_better, 1280, 2};
}

TEST(EarlyStoppingTest, TheRuleComesFromTheParsedSpecWithItsDefaults) {
  ASSERT_OK_AND_ASSIGN(auto spec, spec::ParseSweepSpec(R"yaml(
name: asha
optimizers: [{name: sgd}]
batch_sizes: [128]
base: {lr: 0.1}
early_stopping: {rule: asha, min_samples: 5000}
)yaml"));
  const auto rule = EarlyStoppingOf(spec);
  ASSERT_TRUE(rule.has_value());
  EXPECT_EQ(rule->metric, "val_accuracy");
  EXPECT_FALSE(rule->lower_is_better);
  EXPECT_EQ(rule->min_samples, 5000);
  EXPECT_EQ(rule->reduction_factor, 3);  // the spec's default

  ASSERT_OK_AND_ASSIGN(
      auto plain,
      spec::ParseSweepSpec("name: p\noptimizers: [{name: sgd}]\n"
                           "batch_sizes: [128]\nbase: {lr: 0.1}\n"));
  EXPECT_FALSE(EarlyStoppingOf(plain).has_value());
}

TEST(EarlyStoppingTest, RungBoundariesGrowByTheReductionFactor) {
  const EarlyStoppingRule rule = Rule();  // 1280, 2560, 5120, ...
  EXPECT_EQ(RungsReached(rule, 0), 0);
  EXPECT_EQ(RungsReached(rule, 1279), 0);
  EXPECT_EQ(RungsReached(rule, 1280), 1);
  EXPECT_EQ(RungsReached(rule, 2559), 1);
  EXPECT_EQ(RungsReached(rule, 2560), 2);
  EXPECT_EQ(RungsReached(rule, 5120), 3);
  // Huge sample counts end at the cap instead of overflowing.
  const int most = RungsReached(rule, std::numeric_limits<int64_t>::max());
  EXPECT_GT(most, 30);
  EXPECT_LT(most, 64);
}

TEST(EarlyStoppingTest, ATrialSurvivesARungOnlyInTheTopShare) {
  const EarlyStoppingRule rule = Rule();
  // Alone at its rung it survives; of 4 the top 2 survive.
  EXPECT_FALSE(DecideRung(rule, 1, 0).prune);
  EXPECT_FALSE(DecideRung(rule, 4, 1).prune);
  EXPECT_TRUE(DecideRung(rule, 4, 2).prune);
  EXPECT_EQ(DecideRung(rule, 4, 2).keep, 2);
  // Fewer values than the factor still keep one.
  EXPECT_EQ(DecideRung(rule, 1, 0).keep, 1);
  EXPECT_TRUE(DecideRung(rule, 2, 1).prune);
}

TEST(EarlyStoppingTest, ANonFiniteValueRanksLastEitherWay) {
  EXPECT_EQ(RankedValue(Rule(false), NAN), -INFINITY);
  EXPECT_EQ(RankedValue(Rule(true), INFINITY), INFINITY);
  EXPECT_EQ(RankedValue(Rule(true), NAN), INFINITY);
  EXPECT_EQ(RankedValue(Rule(false), 0.5), 0.5);
}

TEST(EarlyStoppingTest, ThePruneMessageSaysWhy) {
  const EarlyStoppingRule rule = Rule();
  EXPECT_EQ(
      PruneMessage(rule, 1, 3200, 0.82, DecideRung(rule, 2, 1), 2),
      "rung 1 (3200 samples): val_accuracy 0.82 is not in the top 1 of 2");
}

}  // namespace
}  // namespace megabatch::planner
