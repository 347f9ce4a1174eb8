// `megabatch query` and `megabatch export` below gRPC: only one read-only
// statement ever runs, the database is byte-for-byte the same afterwards,
// and the caps hold.
#include "server/store/read_only.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "server/store/temp_budget_vfs.h"
#include "tests/testing/report_fixture.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace megabatch::store {
namespace {

using ::testing::HasSubstr;

class ReadOnlyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sweep_ = testing::BuildReportFixture(path_);
    ASSERT_GT(sweep_, 0);
    before_ = testing::DumpDatabase(path_);
    ASSERT_THAT(before_, HasSubstr("table metrics"));
  }

  ::megabatch::testing::TempDir dir_;
  std::string path_ = dir_.File("fixture.db");
  ReadOnlyDb db_{path_};
  int64_t sweep_ = 0;
  std::string before_;
};

TEST_F(ReadOnlyTest, SelectsReturnTypedRows) {
  auto r = db_.Query(
      "SELECT optimizer, batch_size, best_lr, NULL AS empty, x'00ff' AS raw "
      "FROM sweep_scaling ORDER BY optimizer, batch_size LIMIT 1",
      {});
  ASSERT_OK(r);
  EXPECT_THAT(r->columns, ::testing::ElementsAre("optimizer", "batch_size",
                                                 "best_lr", "empty", "raw"));
  ASSERT_EQ(r->rows.size(), 1u);
  const auto& row = r->rows[0];
  EXPECT_EQ(row[0].type, QueryValue::Type::kText);
  EXPECT_EQ(row[0].bytes, "adamw");
  EXPECT_EQ(row[1].type, QueryValue::Type::kInteger);
  EXPECT_EQ(row[1].integer, 128);
  EXPECT_EQ(row[2].type, QueryValue::Type::kReal);
  EXPECT_DOUBLE_EQ(row[2].real, 0.01);
  EXPECT_EQ(row[3].type, QueryValue::Type::kNull);
  EXPECT_EQ(row[4].type, QueryValue::Type::kBlob);
  EXPECT_EQ(row[4].bytes, std::string("\x00\xff", 2));
  EXPECT_FALSE(r->truncated);
}

TEST_F(ReadOnlyTest, ReadingPragmasAndCtesAreAllowed) {
  for (const char* sql :
       {"PRAGMA table_info(trials)", "PRAGMA user_version",
        "PRAGMA index_list(metrics)",
        "WITH best AS (SELECT max(value) v FROM metrics WHERE name = "
        "'test_accuracy') SELECT v FROM best",
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE "
        "x < 5) "
        "SELECT sum(x) FROM n",
        "  SELECT 1; -- a trailing comment  \n"}) {
    auto r = db_.Query(sql, {});
    EXPECT_OK(r);
  }
}

TEST_F(ReadOnlyTest, EveryWriteIsRefusedAndNothingChanges) {
  const std::string attached = dir_.File("attached.db");
  const std::string vacuumed = dir_.File("vacuumed.db");
  struct Case {
    std::string sql;
    std::string message;
  } cases[] = {
      {"INSERT INTO events (at, kind, message) VALUES (1, 'x', 'y')",
       "denied: INSERT on events"},
      {"UPDATE trials SET state = 'failed'", "denied: UPDATE on trials"},
      {"DELETE FROM metrics", "denied: DELETE on metrics"},
      {"DROP TABLE metrics", "denied: a schema change"},
      {"DROP VIEW trial_summary", "denied: a schema change"},
      {"CREATE TABLE t (x)", "denied: a schema change"},
      {"CREATE TEMP VIEW v AS SELECT 1", "denied: a schema change"},
      {"ALTER TABLE trials ADD COLUMN x", "denied: ALTER TABLE"},
      {"ATTACH DATABASE '" + attached + "' AS other", "denied: ATTACH"},
      {"PRAGMA journal_mode=DELETE", "denied: PRAGMA journal_mode=DELETE"},
      {"PRAGMA user_version=7", "denied: PRAGMA user_version=7"},
      {"PRAGMA query_only=0", "denied: PRAGMA query_only=0"},
      {"PRAGMA wal_checkpoint(TRUNCATE)", "denied: PRAGMA wal_checkpoint"},
      {"WITH doomed AS (SELECT id FROM trials) "
       "DELETE FROM metrics WHERE trial_id IN (SELECT id FROM doomed)",
       "denied: DELETE on metrics"},
      {"WITH x AS (SELECT 1) INSERT INTO events (at, kind, message) "
       "SELECT 1, 'k', 'm' FROM x",
       "denied: INSERT on events"},
      {"SELECT 1; DELETE FROM metrics", "one statement at a time"},
      {"SELECT 1; SELECT 2", "one statement at a time"},
      {"BEGIN", "denied: a transaction"},
      {"VACUUM", "only read-only"},
      {"VACUUM INTO '" + vacuumed + "'", "only read-only"},
      {"REINDEX", "denied: REINDEX"},
      {"ANALYZE", "denied: ANALYZE"},
      {"SELECT load_extension('/lib/x86_64-linux-gnu/libc.so.6')",
       "not authorized"},
      {"SELEKT 1", "syntax error"},
      {"", "no statement"},
  };
  for (const auto& c : cases) {
    auto r = db_.Query(c.sql, {});
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.sql;
    EXPECT_THAT(r.status().message(), HasSubstr(c.message)) << c.sql;
    EXPECT_EQ(testing::DumpDatabase(path_), before_) << "changed by: " << c.sql;
  }
  EXPECT_FALSE(std::filesystem::exists(attached));
  EXPECT_FALSE(std::filesystem::exists(vacuumed));
}

TEST_F(ReadOnlyTest, RunawayQueryIsStoppedByTheTimeCap) {
  QueryLimits limits;
  limits.timeout = std::chrono::milliseconds(300);
  auto start = std::chrono::steady_clock::now();
  auto r = db_.Query(
      "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
      "SELECT count(*) FROM n",
      limits);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_THAT(r.status().message(), HasSubstr("time cap of 300 ms"));
  EXPECT_LT(took, std::chrono::seconds(5));
}

TEST_F(ReadOnlyTest, CancelStopsAQuery) {
  QueryLimits limits;
  limits.cancelled = [] { return true; };
  auto r = db_.Query(
      "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
      "SELECT count(*) FROM n",
      limits);
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled);
}

// With timeout_ms=1000, printf('%.*c', 1500000000, 'x') returned after
// 18.6 s: one function call never reached the deadline's checks.
TEST_F(ReadOnlyTest, CallsThatOutrunTheDeadlineAreDeniedOrBounded) {
  QueryLimits limits;
  limits.timeout = std::chrono::milliseconds(1000);
  for (const char* sql : {"SELECT length(printf('%.*c', 1500000000, 'x'))",
                          "SELECT length(format('%.*c', 1500000000, 'x'))"}) {
    SCOPED_TRACE(sql);
    auto r = db_.Query(sql, limits);
    EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
    EXPECT_THAT(r.status().message(), HasSubstr("outrun the deadline"));
  }
  auto big = db_.Query("SELECT length(zeroblob(5000000))", limits);
  EXPECT_EQ(big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(big.status().message(), HasSubstr("too big"));
  auto pattern =
      db_.Query("SELECT 'x' LIKE '" + std::string(300, '%') + "y'", limits);
  EXPECT_EQ(pattern.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(pattern.status().message(), HasSubstr("LIKE or GLOB pattern"));
  // Two arguments return a pointer into the coordinator's memory.
  auto tokenizer = db_.Query("SELECT hex(fts3_tokenizer('simple'))", limits);
  EXPECT_EQ(tokenizer.status().code(), StatusCode::kPermissionDenied);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("fts3_tokenizer"));
  EXPECT_EQ(testing::DumpDatabase(path_), before_);
}

// A sort that spills wrote 525 MB of temp files in 4 s: the temporary
// files of queries are held to 256 MiB, and freed when the query ends.
TEST_F(ReadOnlyTest, ASortPastTheTempStorageBudgetIsRefused) {
  QueryLimits limits;
  limits.timeout = std::chrono::seconds(120);
  // 3 million rows keyed by 200 random bytes: ~650 MB to sort.
  auto r = db_.Query(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
      "LIMIT 3000000) SELECT x FROM c ORDER BY randomblob(200)",
      limits);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("256 MiB"));
  EXPECT_EQ(TempBudgetVfsBytesInUse(), 0);
  // A sort within it still runs.
  auto small = db_.Query(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
      "LIMIT 200000) SELECT count(*) FROM (SELECT x FROM c ORDER BY "
      "randomblob(200))",
      limits);
  ASSERT_OK(small);
  EXPECT_EQ(small->rows[0][0].integer, 200000);
  EXPECT_EQ(testing::DumpDatabase(path_), before_);
}

TEST_F(ReadOnlyTest, ACallerWhoLeavesStopsARunningQuery) {
  std::atomic<bool> gone{false};
  QueryLimits limits;
  limits.timeout = std::chrono::seconds(60);
  limits.cancelled = [&] { return gone.load(); };
  std::thread client_leaves([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    gone = true;
  });
  auto r = db_.Query(
      "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
      "SELECT count(*) FROM n",
      limits);
  client_leaves.join();
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled);
}

// Other owners' request ids were readable through query.
TEST_F(ReadOnlyTest, AUserSeesOnlyTheirOwnRequestIdsAndNoAudit) {
  {
    auto rw = Db::Open(path_);
    ASSERT_OK(rw);
    ASSERT_TRUE((*rw)
                    ->Exec("INSERT INTO sweep_requests (owner, request_id, "
                           "sweep_id) VALUES ('alice', 'a-1', " +
                           std::to_string(sweep_) + "), ('bob', 'b-1', " +
                           std::to_string(sweep_) + ")")
                    .ok());
  }
  before_ = testing::DumpDatabase(path_);
  QueryLimits alice;
  alice.viewer = "alice";
  auto mine = db_.Query("SELECT owner, request_id FROM sweep_requests", alice);
  ASSERT_OK(mine);
  ASSERT_EQ(mine->rows.size(), 1u);
  EXPECT_EQ(mine->rows[0][1].bytes, "a-1");
  for (const char* sql :
       {"SELECT * FROM main.sweep_requests", "SELECT count(*) FROM audit",
        "WITH r AS (SELECT * FROM main.sweep_requests) SELECT * FROM r"}) {
    SCOPED_TRACE(sql);
    auto r = db_.Query(sql, alice);
    EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  }
  auto all = db_.Query("SELECT count(*) FROM sweep_requests", {});
  ASSERT_OK(all);
  EXPECT_EQ(all->rows[0][0].integer, 2);
  EXPECT_TRUE(db_.Query("SELECT count(*) FROM audit", {}).ok());
  EXPECT_EQ(testing::DumpDatabase(path_), before_);
}

TEST_F(ReadOnlyTest, RowAndSizeCapsTruncateAndSaySo) {
  QueryLimits limits;
  limits.max_rows = 5;
  auto r = db_.Query("SELECT * FROM metrics", limits);
  ASSERT_OK(r);
  EXPECT_EQ(r->rows.size(), 5u);
  ASSERT_TRUE(r->truncated);
  EXPECT_THAT(*r->truncated, HasSubstr("row cap of 5"));

  limits.max_rows = 1000;
  limits.max_bytes = 1000;
  r = db_.Query("SELECT name FROM metrics", limits);
  ASSERT_OK(r);
  EXPECT_LT(r->rows.size(), 1000u);
  EXPECT_GT(r->rows.size(), 10u);
  ASSERT_TRUE(r->truncated);
  EXPECT_THAT(*r->truncated, HasSubstr("size cap"));

  // Exactly max_rows rows is not truncated.
  limits = QueryLimits();
  limits.max_rows = 2;
  r = db_.Query("SELECT 1 UNION ALL SELECT 2", limits);
  ASSERT_OK(r);
  EXPECT_EQ(r->rows.size(), 2u);
  EXPECT_FALSE(r->truncated);
}

TEST_F(ReadOnlyTest, ExportStreamsEveryMetricOfTheSweepInChunks) {
  size_t rows = 0, chunks = 0;
  int64_t last_trial = 0;
  Status s =
      db_.ExportMetrics(sweep_, {}, 50, [&](std::vector<MetricRecord>& chunk) {
        EXPECT_LE(chunk.size(), 50u);
        for (const auto& r : chunk) {
          EXPECT_GE(r.trial_id, last_trial);
          last_trial = r.trial_id;
          EXPECT_TRUE(r.value.has_value());
        }
        rows += chunk.size();
        ++chunks;
        return Status();
      });
  ASSERT_OK(s);
  auto total = db_.Query("SELECT count(*) FROM metrics", {});
  ASSERT_OK(total);
  EXPECT_EQ(static_cast<int64_t>(rows), total->rows[0][0].integer);
  EXPECT_EQ(chunks, (rows + 49) / 50);

  size_t accuracy = 0;
  s = db_.ExportMetrics(sweep_, {"test_accuracy", "no_such_metric"}, 1000,
                        [&](std::vector<MetricRecord>& chunk) {
                          for (const auto& r : chunk)
                            EXPECT_EQ(r.name, "test_accuracy");
                          accuracy += chunk.size();
                          return Status();
                        });
  ASSERT_OK(s);
  EXPECT_EQ(accuracy, 64u);  // two evaluations of each of 32 trials

  // A consumer's error stops the export and comes back.
  s = db_.ExportMetrics(sweep_, {}, 10, [](std::vector<MetricRecord>&) {
    return Status(StatusCode::kCancelled, "gone");
  });
  EXPECT_EQ(s.code(), StatusCode::kCancelled);
  EXPECT_EQ(
      db_.ExportMetrics(sweep_ + 1, {}, 10, [](auto&) { return Status(); })
          .code(),
      StatusCode::kNotFound);
}

}  // namespace
}  // namespace megabatch::store
