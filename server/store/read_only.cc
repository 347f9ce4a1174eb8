#include "server/store/read_only.h"

#include <atomic>
#include <cstring>
#include <set>
#include <thread>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "server/store/db.h"
#include "server/store/temp_budget_vfs.h"

namespace megabatch::store {
namespace {

constexpr int kMaxSqlBytes = 100000;
constexpr int kProgressEveryOps = 10000;
constexpr int kMaxLikePatternBytes = 200;
// Temporary files (sorts that spill, temp tables) of all queries together.
constexpr int64_t kMaxQueryTempBytes = int64_t{256} << 20;
constexpr auto kCancelPollEvery = std::chrono::milliseconds(50);
// Tables only admins may read through query; a user's own rows of
// sweep_requests come through a view of the same name.
constexpr const char* kAuditTable = "audit";
constexpr const char* kRequestsTable = "sweep_requests";

// Pragmas that only read: with an argument they name a table or index.
const std::set<std::string, std::less<>> kReadingPragmas = {
    "table_info",   "table_xinfo",    "table_list",       "index_list",
    "index_info",   "index_xinfo",    "foreign_key_list", "function_list",
    "pragma_list",  "collation_list", "database_list",    "compile_options",
    "data_version",
};
// Settings that may be read (no argument) but not set.
const std::set<std::string, std::less<>> kReadableSettings = {
    "user_version", "schema_version", "application_id", "page_size",
    "page_count",   "freelist_count", "encoding",       "foreign_keys",
    "synchronous",  "query_only",     "auto_vacuum",
};

const char* ActionName(int action) {
  switch (action) {
    case SQLITE_INSERT:
      return "INSERT";
    case SQLITE_UPDATE:
      return "UPDATE";
    case SQLITE_DELETE:
      return "DELETE";
    case SQLITE_ATTACH:
      return "ATTACH";
    case SQLITE_DETACH:
      return "DETACH";
    case SQLITE_PRAGMA:
      return "PRAGMA";
    case SQLITE_TRANSACTION:
      return "a transaction";
    case SQLITE_SAVEPOINT:
      return "SAVEPOINT";
    case SQLITE_ANALYZE:
      return "ANALYZE";
    case SQLITE_REINDEX:
      return "REINDEX";
    case SQLITE_ALTER_TABLE:
      return "ALTER TABLE";
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_VTABLE:
      return "CREATE";
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_TEMP_INDEX:
    case SQLITE_DROP_TEMP_TABLE:
    case SQLITE_DROP_TEMP_TRIGGER:
    case SQLITE_DROP_TEMP_VIEW:
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_VIEW:
    case SQLITE_DROP_VTABLE:
      return "DROP";
    default:
      return "this statement";
  }
}

constexpr const char* kTokensDenied = "reading the tokens table";

struct QueryGuard {
  std::string denied;             // what the authorizer refused
  bool denied_statement = false;  // `denied` is not a mere row change
  // Set when `denied` is a permission (not a malformed statement).
  bool denied_permission = false;
  bool admin = true;  // may read every table but tokens
  std::chrono::steady_clock::time_point deadline;
  const std::function<bool()>* cancelled = nullptr;
  std::atomic<bool> timed_out{false};
  std::atomic<bool> was_cancelled{false};
};

int DenyPermission(QueryGuard* guard, std::string what) {
  guard->denied = std::move(what);
  guard->denied_statement = true;
  guard->denied_permission = true;
  return SQLITE_DENY;
}

int Authorize(void* arg, int action, const char* a, const char* b,
              const char* db, const char* /*view*/) {
  auto* guard = static_cast<QueryGuard*>(arg);
  switch (action) {
    case SQLITE_READ: {
      const std::string_view table = a != nullptr ? a : "";
      // Token hashes are not for users' eyes, even hashed.
      if (table == "tokens") return DenyPermission(guard, kTokensDenied);
      if (!guard->admin && table == kAuditTable) {
        return DenyPermission(guard, "reading the audit table (admins only)");
      }
      // Users read sweep_requests through the temp copy of their rows.
      if (!guard->admin && table == kRequestsTable &&
          (db == nullptr || std::string_view(db) != "temp")) {
        return DenyPermission(
            guard,
            "reading main.sweep_requests (other owners' request ids); "
            "sweep_requests shows your own");
      }
      return SQLITE_OK;
    }
    case SQLITE_FUNCTION: {
      const std::string_view function = b != nullptr ? b : "";
      // With two arguments it returns a pointer into the server's memory.
      if (function == "fts3_tokenizer") {
        return DenyPermission(guard, "the function fts3_tokenizer");
      }
      // printf('%.*c', 2000000000, 'x') loops for seconds inside one call,
      // where neither the deadline nor a cancel can stop it.
      if (function == "printf" || function == "format") {
        return DenyPermission(
            guard, "the function " + std::string(function) +
                       " (one call can outrun the deadline; format values "
                       "in the client)");
      }
      return SQLITE_OK;
    }
    case SQLITE_SELECT:
    case SQLITE_RECURSIVE:
      return SQLITE_OK;
    case SQLITE_PRAGMA: {
      std::string_view name = a ? a : "";
      if (kReadingPragmas.count(name) != 0 ||
          (b == nullptr && kReadableSettings.count(name) != 0)) {
        return SQLITE_OK;
      }
      break;
    }
    default:
      break;
  }
  // Some statements ask for row changes before their own action (ANALYZE:
  // sqlite_stat1); name the statement's action when it comes.
  const bool row_change = action == SQLITE_INSERT || action == SQLITE_UPDATE ||
                          action == SQLITE_DELETE;
  if (guard->denied.empty() || (!row_change && !guard->denied_statement)) {
    guard->denied_statement = !row_change;
    guard->denied = ActionName(action);
    std::string_view table = a ? a : "";
    if (row_change &&
        (table == "sqlite_master" || table == "sqlite_temp_master")) {
      // What CREATE, DROP and ALTER ask for first (and stop at).
      guard->denied = "a schema change (CREATE, DROP, ALTER)";
    } else if (action == SQLITE_PRAGMA) {
      guard->denied +=
          std::string(" ") + (a ? a : "") + (b ? std::string("=") + b : "");
    } else if (a != nullptr && action != SQLITE_TRANSACTION) {
      guard->denied += std::string(" on ") + a;
    }
  }
  return SQLITE_DENY;
}

int Progress(void* arg) {
  auto* guard = static_cast<QueryGuard*>(arg);
  if (std::chrono::steady_clock::now() >= guard->deadline) {
    guard->timed_out = true;
    return 1;
  }
  if (*guard->cancelled && (*guard->cancelled)()) {
    guard->was_cancelled = true;
    return 1;
  }
  return 0;
}

// Interrupts a connection's statement at the guard's deadline or when its
// caller goes away, even inside one long function call that never reaches
// the progress handler. Destroy it before the connection closes.
class Watchdog {
 public:
  Watchdog(sqlite3* db, QueryGuard* guard)
      : thread_([this, db, guard] { Run(db, guard); }) {}
  ~Watchdog() {
    {
      MutexLock lock(&mu_);
      done_ = true;
    }
    cv_.SignalAll();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  void Run(sqlite3* db, QueryGuard* guard) {
    MutexLock lock(&mu_);
    while (!done_) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= guard->deadline) {
        guard->timed_out = true;
        sqlite3_interrupt(db);
        return;
      }
      if (*guard->cancelled && (*guard->cancelled)()) {
        guard->was_cancelled = true;
        sqlite3_interrupt(db);
        return;
      }
      cv_.WaitUntil(std::min(guard->deadline, now + kCancelPollEvery));
    }
  }

  Mutex mu_;
  CondVar cv_{&mu_};
  bool done_ GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts once the rest is built
};

struct Finalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, Finalizer>;

bool OnlySpaceOrComments(sqlite3* db, const char* tail) {
  sqlite3_stmt* next = nullptr;
  int rc = sqlite3_prepare_v2(db, tail, -1, &next, nullptr);
  StmtPtr owned(next);
  return rc == SQLITE_OK && next == nullptr;
}

Status ReadOnlyError(const QueryGuard& guard) {
  if (guard.denied == kTokensDenied) {
    return Status(
        StatusCode::kPermissionDenied,
        "query: the tokens table cannot be read, not even its hashes");
  }
  if (guard.denied_permission) {
    return Status(StatusCode::kPermissionDenied,
                  "query: denied: " + guard.denied);
  }
  return InvalidArgumentError(
      "query: only read-only SELECT statements are allowed" +
      (guard.denied.empty() ? std::string() : "; denied: " + guard.denied));
}

QueryValue ColumnValue(sqlite3_stmt* stmt, int col) {
  QueryValue v;
  switch (sqlite3_column_type(stmt, col)) {
    case SQLITE_INTEGER:
      v.type = QueryValue::Type::kInteger;
      v.integer = sqlite3_column_int64(stmt, col);
      break;
    case SQLITE_FLOAT:
      v.type = QueryValue::Type::kReal;
      v.real = sqlite3_column_double(stmt, col);
      break;
    case SQLITE_TEXT:
    case SQLITE_BLOB: {
      bool text = sqlite3_column_type(stmt, col) == SQLITE_TEXT;
      v.type = text ? QueryValue::Type::kText : QueryValue::Type::kBlob;
      const void* p =
          text ? static_cast<const void*>(sqlite3_column_text(stmt, col))
               : sqlite3_column_blob(stmt, col);
      if (p != nullptr) {
        v.bytes.assign(static_cast<const char*>(p),
                       sqlite3_column_bytes(stmt, col));
      }
      break;
    }
    default:
      break;
  }
  return v;
}

}  // namespace

Result<QueryResult> ReadOnlyDb::Query(const std::string& sql,
                                      const QueryLimits& limits) const {
  if (sql.size() > static_cast<size_t>(kMaxSqlBytes)) {
    return InvalidArgumentError("sql: at most " + std::to_string(kMaxSqlBytes) +
                                " bytes, got " + std::to_string(sql.size()));
  }
  MEGABATCH_ASSIGN_OR_RETURN(
      auto db, Db::OpenReadOnly(path_, TempBudgetVfs(kMaxQueryTempBytes)));
  sqlite3* raw = db->raw();
  sqlite3_limit(raw, SQLITE_LIMIT_ATTACHED, 0);
  // A function call runs to its end whatever the deadline says: these keep
  // every call short (LIKE and GLOB cost value x pattern length).
  sqlite3_limit(raw, SQLITE_LIMIT_LENGTH, kMaxQueryValueBytes);
  sqlite3_limit(raw, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, kMaxLikePatternBytes);
  sqlite3_limit(raw, SQLITE_LIMIT_SQL_LENGTH, kMaxSqlBytes);
  if (limits.viewer.has_value()) {
    // A copy of the viewer's rows in the temp schema, which unqualified
    // names find first; the statement may read no other (the authorizer).
    // The main file stays read-only: query_only is off only for this.
    MEGABATCH_RETURN_IF_ERROR(db->Exec("PRAGMA query_only=OFF"));
    MEGABATCH_ASSIGN_OR_RETURN(
        Statement copy, db->Prepare(std::string("CREATE TEMP TABLE ") +
                                    kRequestsTable + " AS SELECT * FROM main." +
                                    kRequestsTable + " WHERE owner = ?"));
    copy.Bind(1, *limits.viewer);
    MEGABATCH_RETURN_IF_ERROR(copy.Run());
    MEGABATCH_RETURN_IF_ERROR(db->Exec("PRAGMA query_only=ON"));
  }
  QueryGuard guard;
  guard.admin = !limits.viewer.has_value();
  guard.deadline = std::chrono::steady_clock::now() + limits.timeout;
  guard.cancelled = &limits.cancelled;
  sqlite3_set_authorizer(raw, Authorize, &guard);
  sqlite3_progress_handler(raw, kProgressEveryOps, Progress, &guard);
  Watchdog watchdog(raw, &guard);

  sqlite3_stmt* prepared = nullptr;
  const char* tail = nullptr;
  int rc = sqlite3_prepare_v2(raw, sql.c_str(), static_cast<int>(sql.size()),
                              &prepared, &tail);
  StmtPtr stmt(prepared);
  if (rc != SQLITE_OK) {
    if (!guard.denied.empty()) return ReadOnlyError(guard);
    return InvalidArgumentError(std::string("query: ") + sqlite3_errmsg(raw));
  }
  if (stmt == nullptr) return InvalidArgumentError("query: no statement");
  guard.denied.clear();
  guard.denied_statement = false;
  if (!OnlySpaceOrComments(raw, tail)) {
    return InvalidArgumentError(
        "query: one statement at a time; found more after '" +
        std::string(sql.data(), tail - sql.data()) + "'");
  }
  if (!sqlite3_stmt_readonly(stmt.get())) return ReadOnlyError(guard);

  QueryResult result;
  const int n = sqlite3_column_count(stmt.get());
  for (int c = 0; c < n; ++c)
    result.columns.push_back(sqlite3_column_name(stmt.get(), c));
  size_t bytes = 0;
  while (true) {
    rc = sqlite3_step(stmt.get());
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) {
      if (guard.timed_out) {
        return Status(StatusCode::kDeadlineExceeded,
                      "query: stopped by the time cap of " +
                          std::to_string(limits.timeout.count()) + " ms");
      }
      if (guard.was_cancelled)
        return Status(StatusCode::kCancelled, "query: cancelled");
      int primary = rc & 0xff;
      if (primary == SQLITE_FULL) {
        return Status(StatusCode::kResourceExhausted,
                      "query: its temporary storage (sorts, temp tables) "
                      "would pass " +
                          std::to_string(kMaxQueryTempBytes >> 20) +
                          " MiB, shared by all queries running at once; "
                          "narrow it (WHERE, LIMIT) or sort on an index");
      }
      if (primary == SQLITE_ERROR || primary == SQLITE_TOOBIG ||
          primary == SQLITE_MISMATCH || primary == SQLITE_RANGE) {
        return InvalidArgumentError(std::string("query: ") +
                                    sqlite3_errmsg(raw));
      }
      return SqliteStatus(rc, raw, "query");
    }
    if (static_cast<int64_t>(result.rows.size()) >= limits.max_rows) {
      result.truncated =
          "row cap of " + std::to_string(limits.max_rows) + " rows";
      break;
    }
    std::vector<QueryValue> row;
    row.reserve(n);
    size_t row_bytes = 0;
    for (int c = 0; c < n; ++c) {
      row.push_back(ColumnValue(stmt.get(), c));
      row_bytes += 8 + row.back().bytes.size();
    }
    if (bytes + row_bytes > limits.max_bytes) {
      result.truncated =
          "size cap of " + std::to_string(limits.max_bytes) + " bytes";
      break;
    }
    bytes += row_bytes;
    result.rows.push_back(std::move(row));
  }
  return result;
}

Status ReadOnlyDb::ExportMetrics(
    int64_t sweep_id, const std::vector<std::string>& names, size_t chunk_rows,
    const std::function<Status(std::vector<MetricRecord>&)>& emit) const {
  MEGABATCH_ASSIGN_OR_RETURN(auto db, Db::OpenReadOnly(path_));
  // One read transaction: every chunk comes from the same snapshot.
  MEGABATCH_RETURN_IF_ERROR(db->Exec("BEGIN"));
  MEGABATCH_ASSIGN_OR_RETURN(
      auto trials,
      db->Prepare("SELECT id FROM trials WHERE sweep_id = ? ORDER BY id"));
  MEGABATCH_ASSIGN_OR_RETURN(auto sweep,
                             db->Prepare("SELECT 1 FROM sweeps WHERE id = ?"));
  sweep.Bind(1, sweep_id);
  MEGABATCH_ASSIGN_OR_RETURN(auto found, sweep.Step());
  if (!found)
    return NotFoundError("sweep " + std::to_string(sweep_id) + " not found");

  std::string sql =
      "SELECT name, step, value, recorded_at FROM metrics WHERE trial_id = ?";
  if (!names.empty()) {
    sql += " AND name IN (?";
    for (size_t i = 1; i < names.size(); ++i) sql += ", ?";
    sql += ")";
  }
  sql += " ORDER BY name, step";
  MEGABATCH_ASSIGN_OR_RETURN(auto metrics, db->Prepare(sql));

  std::vector<int64_t> trial_ids;
  trials.Bind(1, sweep_id);
  MEGABATCH_RETURN_IF_ERROR(
      ForEachRow(trials, [&](Statement& q) { trial_ids.push_back(q.Int(0)); }));
  std::vector<MetricRecord> chunk;
  for (int64_t trial_id : trial_ids) {
    metrics.Reset();
    metrics.Bind(1, trial_id);
    for (size_t i = 0; i < names.size(); ++i) {
      metrics.Bind(static_cast<int>(i) + 2, names[i]);
    }
    Status emitted;
    MEGABATCH_RETURN_IF_ERROR(ForEachRow(metrics, [&](Statement& q) {
      if (!emitted.ok()) return;
      MetricRecord r;
      r.trial_id = trial_id;
      r.name = q.Text(0);
      r.step = q.Int(1);
      if (!q.IsNull(2)) r.value = q.Double(2);
      r.recorded_at = q.Double(3);
      chunk.push_back(std::move(r));
      if (chunk.size() >= chunk_rows) {
        emitted = emit(chunk);
        chunk.clear();
      }
    }));
    MEGABATCH_RETURN_IF_ERROR(emitted);
  }
  if (!chunk.empty()) MEGABATCH_RETURN_IF_ERROR(emit(chunk));
  return Status();
}

}  // namespace megabatch::store
