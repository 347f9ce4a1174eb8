#include "server/store/db.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::store {
namespace {

using ::testing::HasSubstr;

class DbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(db_, Db::Open(dir_.File("db.sqlite")));
    ASSERT_OK(db_->Exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"));
  }
  testing::TempDir dir_;
  std::unique_ptr<Db> db_;
};

TEST_F(DbTest, AFailedBindFailsTheStepAndNamesTheParameter) {
  ASSERT_OK_AND_ASSIGN(Statement ins,
                       db_->Prepare("INSERT INTO t (k, v) VALUES (?, ?)"));
  // Parameter 3 does not exist: SQLITE_RANGE, reported at the step, and
  // nothing is inserted with the parameters that did bind.
  ins.Bind(1, int64_t{1}).Bind(2, "one").Bind(3, "extra");
  Status run = ins.Run();
  EXPECT_EQ(run.code(), StatusCode::kInternal);
  EXPECT_THAT(run.message(), HasSubstr("bind parameter 3"));
  ASSERT_OK_AND_ASSIGN(Statement count, db_->Prepare("SELECT count(*) FROM t"));
  ASSERT_OK_AND_ASSIGN(bool row, count.Step());
  ASSERT_TRUE(row);
  EXPECT_EQ(count.Int(0), 0);
  // Reset clears the failure with the bindings: the statement works again.
  ins.Reset();
  ins.Bind(1, int64_t{1}).Bind(2, "one");
  EXPECT_OK(ins.Run());
}

TEST_F(DbTest, ACachedStatementIsResetWhenItsHandleGoesAway) {
  ASSERT_OK(db_->Exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')"));
  const char* sql = "SELECT v FROM t ORDER BY k";
  {
    ASSERT_OK_AND_ASSIGN(CachedStatement q, db_->Cached(sql));
    ASSERT_OK_AND_ASSIGN(bool row, q->Step());
    ASSERT_TRUE(row);
    EXPECT_EQ(q->Text(0), "a");
    // Left mid-read: its read would stay open without the reset.
    EXPECT_TRUE(sqlite3_stmt_busy(sqlite3_next_stmt(db_->raw(), nullptr)));
  }
  EXPECT_EQ(sqlite3_next_stmt(db_->raw(), nullptr) == nullptr
                ? 0
                : sqlite3_stmt_busy(sqlite3_next_stmt(db_->raw(), nullptr)),
            0);
  // The next use starts from the first row again.
  ASSERT_OK_AND_ASSIGN(CachedStatement again, db_->Cached(sql));
  ASSERT_OK_AND_ASSIGN(bool row, again->Step());
  ASSERT_TRUE(row);
  EXPECT_EQ(again->Text(0), "a");
}

}  // namespace
}  // namespace megabatch::store
