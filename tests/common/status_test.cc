// Status, Result and the macros that pass errors up (common/status.h).
#include "common/status.h"

#include <gtest/gtest.h>

#include <memory>

#include "tests/testing/status_matchers.h"

namespace megabatch {
namespace {

Result<std::unique_ptr<int>> Make(bool ok) {
  if (!ok) return NotFoundError("no int");
  return std::make_unique<int>(7);
}

Result<int> Twice(bool ok) {
  MEGABATCH_ASSIGN_OR_RETURN(std::unique_ptr<int> value, Make(ok));
  return *value * 2;
}

TEST(StatusTest, AssignOrReturnMovesTheValueOrPassesTheErrorUp) {
  Result<int> good = Twice(true);
  ASSERT_OK(good);
  EXPECT_EQ(*good, 14);
  Result<int> bad = Twice(false);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(bad.status().message(), "no int");
}

TEST(StatusTest, AResultFromAnOkStatusIsAnInternalErrorInEveryBuild) {
  Result<int> r = Status();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace megabatch
