// A results database with known numbers for the report, query and export
// tests: one sweep (lamb and adamw × batch 128..1024 × lr 0.01, 0.02 × seeds
// 0, 1; target test_accuracy 0.8) whose trials' outcomes are written
// directly. The expected figures are worked out in report_test.cc.
#ifndef MEGABATCH_TESTS_TESTING_REPORT_FIXTURE_H_
#define MEGABATCH_TESTS_TESTING_REPORT_FIXTURE_H_

#include <cstdint>
#include <string>

namespace megabatch::testing {

// Creates the database at `path` (migrated to the current schema) and
// returns the sweep's id; fails the current test on error.
int64_t BuildReportFixture(const std::string& path);

// Every table's schema and rows as text, to show a database is unchanged
// (the audit table's rows excepted: every call may add to them).
std::string DumpDatabase(const std::string& path);

}  // namespace megabatch::testing

#endif  // MEGABATCH_TESTS_TESTING_REPORT_FIXTURE_H_
