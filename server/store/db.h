// A thin RAII wrapper over the SQLite C API: Db (a connection), Statement (a
// prepared statement) and Transaction. SqliteStatus() is the one place that
// maps SQLite result codes to megabatch::Status.
#ifndef MEGABATCH_SERVER_STORE_DB_H_
#define MEGABATCH_SERVER_STORE_DB_H_

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/status.h"

namespace megabatch::store {

// Maps a SQLite result code to a Status; `what` names the operation.
// SQLITE_BUSY/LOCKED -> UNAVAILABLE, SQLITE_CORRUPT/NOTADB -> DATA_LOSS,
// SQLITE_CONSTRAINT -> ALREADY_EXISTS, SQLITE_READONLY/AUTH ->
// PERMISSION_DENIED, SQLITE_INTERRUPT -> DEADLINE_EXCEEDED, SQLITE_TOOBIG ->
// INVALID_ARGUMENT, SQLITE_CANTOPEN -> FAILED_PRECONDITION, SQLITE_FULL ->
// RESOURCE_EXHAUSTED and SQLITE_IOERR -> UNAVAILABLE (both retryable: the
// failed write was rolled back), others INTERNAL.
Status SqliteStatus(int rc, sqlite3* db, std::string_view what);

class Statement;
class CachedStatement;

// One SQLite connection. Thread-compatible: callers synchronize.
class Db {
 public:
  // Opens (creating if needed) the database at `path` in WAL mode with
  // synchronous=NORMAL and foreign keys on. ":memory:" works too.
  static Result<std::unique_ptr<Db>> Open(const std::string& path);
  // Opens an existing database read-only, with query_only on; through the
  // named VFS (null: the default).
  static Result<std::unique_ptr<Db>> OpenReadOnly(const std::string& path,
                                                  const char* vfs = nullptr);

  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Runs one or more statements that return no rows.
  Status Exec(std::string_view sql);
  // Prepares one statement. The Statement must not outlive this Db.
  Result<Statement> Prepare(std::string_view sql);
  // The same, prepared once per connection and kept: for hot paths. The
  // statement comes back reset, with no bindings, and stays owned by the Db;
  // the handle resets it again when it goes out of scope, so that it holds
  // no read open however the caller leaves.
  Result<CachedStatement> Cached(std::string_view sql);

  int64_t LastInsertRowid() const;
  // False once SQLite rolled an open transaction back by itself (after
  // SQLITE_FULL or an I/O error, it may).
  bool InTransaction() const { return sqlite3_get_autocommit(db_) == 0; }
  int Changes() const;
  sqlite3* raw() const { return db_; }

 private:
  explicit Db(sqlite3* db) : db_(db) {}
  std::unordered_map<std::string, std::unique_ptr<Statement>> cache_;
  static Result<std::unique_ptr<Db>> OpenWith(const std::string& path,
                                              int flags,
                                              std::string_view pragmas,
                                              const char* vfs = nullptr);
  sqlite3* db_;
};

// A prepared statement. Move-only. Bind indexes start at 1.
class Statement {
 public:
  Statement(Statement&& o) noexcept
      : db_(o.db_), stmt_(o.stmt_), bind_rc_(o.bind_rc_) {
    o.stmt_ = nullptr;
  }
  Statement& operator=(Statement&& o) noexcept;
  ~Statement();

  Statement& Bind(int index, int64_t v);
  Statement& Bind(int index, int v) { return Bind(index, int64_t{v}); }
  Statement& Bind(int index, double v);
  Statement& Bind(int index, std::string_view v);
  Statement& BindNull(int index);

  // Advances: true when a row is available, false when done. A Bind() that
  // failed (SQLITE_RANGE, SQLITE_TOOBIG, SQLITE_NOMEM) fails the Step
  // instead, naming the parameter.
  Result<bool> Step();
  // Steps to completion, for statements that return no rows.
  Status Run();
  // Resets for re-execution and clears the bindings.
  void Reset();

  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  double Double(int col) const { return sqlite3_column_double(stmt_, col); }
  std::string Text(int col) const;
  bool IsNull(int col) const {
    return sqlite3_column_type(stmt_, col) == SQLITE_NULL;
  }
  // The column as a double, or nullopt for NULL.
  std::optional<double> OptionalDouble(int col) const {
    if (IsNull(col)) return std::nullopt;
    return Double(col);
  }

 private:
  friend class Db;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  // Keeps the first failed bind's code and index for Step() to report.
  void CheckBind(int rc, int index);
  sqlite3* db_;
  sqlite3_stmt* stmt_;
  int bind_rc_ = SQLITE_OK;
  int bind_index_ = 0;
};

// A Db-owned cached statement, reset (and its bindings cleared) when the
// handle is destroyed. Move-only; use it like a Statement*.
class CachedStatement {
 public:
  explicit CachedStatement(Statement* stmt) : stmt_(stmt) {}
  CachedStatement(CachedStatement&& o) noexcept : stmt_(o.stmt_) {
    o.stmt_ = nullptr;
  }
  CachedStatement& operator=(CachedStatement&&) = delete;
  CachedStatement(const CachedStatement&) = delete;
  ~CachedStatement() {
    if (stmt_ != nullptr) stmt_->Reset();
  }
  Statement* operator->() const { return stmt_; }
  Statement& operator*() const { return *stmt_; }

 private:
  Statement* stmt_;
};

// Runs `fn(stmt)` on each row of a prepared statement.
template <typename Fn>
Status ForEachRow(Statement& stmt, Fn fn) {
  while (true) {
    Result<bool> row = stmt.Step();
    if (!row.ok()) return row.status();
    if (!*row) return Status();
    fn(stmt);
  }
}

// BEGIN IMMEDIATE on construction; rolls back on destruction unless
// Commit() succeeded. `db` must outlive the Transaction.
class Transaction {
 public:
  explicit Transaction(Db* db);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  // The status of BEGIN; nothing else may be done when it is not OK.
  const Status& begin_status() const { return begin_; }
  Status Commit();

 private:
  Db* db_;
  Status begin_;
  bool done_ = false;
};

}  // namespace megabatch::store

#endif  // MEGABATCH_SERVER_STORE_DB_H_
