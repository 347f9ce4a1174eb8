// Read-only access to the results database for users: arbitrary SELECTs
// (`megabatch query`) and streaming metric export (`megabatch export`).
//
// Each call opens its own read-only connection, so a long query never holds
// the store's mutex or blocks metric ingestion (WAL readers and the writer do
// not block each other). A query connection is read-only three times over:
// opened SQLITE_OPEN_READONLY with query_only on, an authorizer that allows
// only reads (no writes, ATTACH, transactions or state-changing pragmas), and
// sqlite3_stmt_readonly() checked after prepare. Functions that leak the
// server's memory (fts3_tokenizer) or can run for seconds in one call
// (printf, format) are denied, no value may exceed kMaxQueryValueBytes and
// no LIKE or GLOB pattern 200 bytes, so that no single call outruns the
// deadline by much.
#ifndef MEGABATCH_SERVER_STORE_READ_ONLY_H_
#define MEGABATCH_SERVER_STORE_READ_ONLY_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/store/db.h"

namespace megabatch::store {

// The largest string or blob a query may build or return.
inline constexpr int kMaxQueryValueBytes = 4 << 20;

struct QueryValue {
  enum class Type { kNull, kInteger, kReal, kText, kBlob };
  Type type = Type::kNull;
  int64_t integer = 0;
  double real = 0;
  std::string bytes;  // kText and kBlob
};

struct QueryLimits {
  int64_t max_rows = 10000;
  size_t max_bytes = 8 << 20;  // of values, roughly what goes on the wire
  // Holds inside any one function call too: a watchdog interrupts the
  // statement at the deadline.
  std::chrono::milliseconds timeout{10000};
  // Polled while the statement runs (every 50 ms at least); true stops it
  // (CANCELLED).
  std::function<bool()> cancelled;
  // A user who is not an admin: `sweep_requests` shows only their rows and
  // `audit` cannot be read. nullopt: an admin (or no authentication).
  std::optional<std::string> viewer;
};

struct QueryResult {
  std::vector<std::string> columns;
  std::vector<std::vector<QueryValue>> rows;
  // Set when a cap stopped the rows early; says which.
  std::optional<std::string> truncated;
};

struct MetricRecord {
  int64_t trial_id = 0;
  std::string name;
  int64_t step = 0;
  std::optional<double> value;  // NULL: a non-finite value was reported
  double recorded_at = 0;
};

// Thread-safe (holds only the path).
class ReadOnlyDb {
 public:
  explicit ReadOnlyDb(std::string path) : path_(std::move(path)) {}

  // A new read-only connection for trusted callers' own SQL.
  Result<std::unique_ptr<Db>> Connect() const {
    return Db::OpenReadOnly(path_);
  }

  // Runs one read-only statement. INVALID_ARGUMENT (naming what was denied)
  // for anything but a single read-only statement or bad SQL;
  // DEADLINE_EXCEEDED when the time cap stops it; CANCELLED when
  // limits.cancelled says so.
  Result<QueryResult> Query(const std::string& sql,
                            const QueryLimits& limits) const;

  // Calls `emit` with chunks of at most `chunk_rows` metrics of the sweep's
  // trials, ordered by trial id, name and step, all from one snapshot of the
  // database; `names` (when not empty) keeps only those metric names. Stops
  // with emit's error if it returns one. NOT_FOUND for an unknown sweep.
  Status ExportMetrics(
      int64_t sweep_id, const std::vector<std::string>& names,
      size_t chunk_rows,
      const std::function<Status(std::vector<MetricRecord>&)>& emit) const;

 private:
  std::string path_;
};

}  // namespace megabatch::store

#endif  // MEGABATCH_SERVER_STORE_READ_ONLY_H_
