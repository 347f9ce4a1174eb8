// PointBudget: each worker's token bucket of metric points per second.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/service/services.h"
#include "tests/testing/process.h"

namespace megabatch::service {
namespace {

using ::testing::HasSubstr;

TEST(PointBudgetTest, ABucketEmptiesThenRefillsAtItsRate) {
  PointBudget budget(1000);
  EXPECT_TRUE(budget.Take(1, 600).ok());
  EXPECT_TRUE(budget.Take(1, 400).ok());
  Status over = budget.Take(1, 500);
  ASSERT_EQ(over.code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(over.message(), HasSubstr("worker 1: over 1000 metric points"));
  EXPECT_THAT(over.message(), HasSubstr("retry in"));
  // Half a second of refill lets 500 through again.
  EXPECT_TRUE(testing::WaitUntil([&] { return budget.Take(1, 500).ok(); },
                                 std::chrono::seconds(5)));
}

TEST(PointBudgetTest, WorkersHaveBucketsOfTheirOwn) {
  PointBudget budget(100);
  EXPECT_TRUE(budget.Take(1, 100).ok());
  EXPECT_FALSE(budget.Take(1, 10).ok());
  EXPECT_TRUE(budget.Take(2, 100).ok());
}

TEST(PointBudgetTest, ABatchOverASecondsWorthPassesOnAFullBucketOnly) {
  PointBudget budget(100);
  // More than the rate: passes when the bucket is full, and leaves it empty.
  EXPECT_TRUE(budget.Take(1, 5000).ok());
  EXPECT_FALSE(budget.Take(1, 5000).ok());
  EXPECT_FALSE(budget.Take(1, 1).ok());
}

TEST(PointBudgetTest, RateZeroIsNoLimit) {
  PointBudget budget(0);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(budget.Take(1, 1 << 30).ok());
}

}  // namespace
}  // namespace megabatch::service
