// gtest helpers for megabatch::Status and Result<T>:
//   ASSERT_OK(status_or_result);  EXPECT_OK(status_or_result);
//   ASSERT_OK_AND_ASSIGN(lhs, result_expr);  // lhs may declare: auto x
// A failure prints the status (code and message).
#ifndef MEGABATCH_TESTS_TESTING_STATUS_MATCHERS_H_
#define MEGABATCH_TESTS_TESTING_STATUS_MATCHERS_H_

#include <gtest/gtest.h>

#include "common/status.h"

namespace megabatch::testing {

inline Status StatusOf(const Status& s) { return s; }
template <typename T>
Status StatusOf(const Result<T>& r) {
  return r.status();
}

}  // namespace megabatch::testing

#define MEGABATCH_STATUS_OK_IMPL(check, expr)                               \
  do {                                                                      \
    const ::megabatch::Status _mb_s = ::megabatch::testing::StatusOf(expr); \
    check(_mb_s.ok()) << #expr << " is " << _mb_s.ToString();               \
  } while (0)

#define ASSERT_OK(expr) MEGABATCH_STATUS_OK_IMPL(ASSERT_TRUE, expr)
#define EXPECT_OK(expr) MEGABATCH_STATUS_OK_IMPL(EXPECT_TRUE, expr)

#define MEGABATCH_CONCAT_INNER(a, b) a##b
#define MEGABATCH_CONCAT(a, b) MEGABATCH_CONCAT_INNER(a, b)
#define MEGABATCH_ASSIGN_OR_FAIL(tmp, lhs, expr)                       \
  auto tmp = (expr);                                                   \
  ASSERT_TRUE(tmp.ok()) << #expr << " is " << tmp.status().ToString(); \
  lhs = std::move(tmp).value()

// Evaluates `expr` (a Result<T>); on an error fails the test (returning from
// it), else moves the value into `lhs`.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  MEGABATCH_ASSIGN_OR_FAIL(MEGABATCH_CONCAT(_mb_result_, __LINE__), lhs, expr)

#endif  // MEGABATCH_TESTS_TESTING_STATUS_MATCHERS_H_
