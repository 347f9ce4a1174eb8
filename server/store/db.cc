#include "server/store/db.h"

#include <limits>

namespace megabatch::store {

Status SqliteStatus(int rc, sqlite3* db, std::string_view what) {
  if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW) return Status();
  std::string msg(what);
  msg += ": ";
  msg += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status(StatusCode::kUnavailable, msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Status(StatusCode::kDataLoss, msg);
    case SQLITE_CONSTRAINT:
      return Status(StatusCode::kAlreadyExists, msg);
    case SQLITE_READONLY:
    case SQLITE_AUTH:
      return Status(StatusCode::kPermissionDenied, msg);
    case SQLITE_INTERRUPT:
      return Status(StatusCode::kDeadlineExceeded, msg);
    case SQLITE_FULL:
      // The statement (or its transaction) was rolled back: nothing of it
      // is stored, and the same write can be sent again once there is room.
      return Status(StatusCode::kResourceExhausted,
                    msg + "; nothing was stored: retry once space is freed");
    case SQLITE_IOERR:
      return Status(StatusCode::kUnavailable, msg + "; retry");
    case SQLITE_TOOBIG:
      return Status(StatusCode::kInvalidArgument, msg);
    case SQLITE_CANTOPEN:
      return Status(StatusCode::kFailedPrecondition, msg);
    default:
      return Status(StatusCode::kInternal, msg);
  }
}

Result<std::unique_ptr<Db>> Db::OpenWith(const std::string& path, int flags,
                                         std::string_view pragmas,
                                         const char* vfs) {
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, vfs);
  if (rc != SQLITE_OK) {
    Status s = SqliteStatus(rc, raw, "open database " + path);
    sqlite3_close(raw);
    return s;
  }
  std::unique_ptr<Db> db(new Db(raw));
  sqlite3_busy_timeout(raw, 5000);
  MEGABATCH_RETURN_IF_ERROR(db->Exec(pragmas));
  return db;
}

Result<std::unique_ptr<Db>> Db::Open(const std::string& path) {
  return OpenWith(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                  "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                  "PRAGMA foreign_keys=ON;");
}

Result<std::unique_ptr<Db>> Db::OpenReadOnly(const std::string& path,
                                             const char* vfs) {
  return OpenWith(path, SQLITE_OPEN_READONLY, "PRAGMA query_only=ON;", vfs);
}

Db::~Db() { sqlite3_close_v2(db_); }

Status Db::Exec(std::string_view sql) {
  std::string copy(sql);
  char* err = nullptr;
  int rc = sqlite3_exec(db_, copy.c_str(), nullptr, nullptr, &err);
  sqlite3_free(err);
  return SqliteStatus(rc, db_, "exec");
}

Result<Statement> Db::Prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) return SqliteStatus(rc, db_, "prepare");
  return Statement(db_, stmt);
}

Result<CachedStatement> Db::Cached(std::string_view sql) {
  auto it = cache_.find(std::string(sql));
  if (it == cache_.end()) {
    MEGABATCH_ASSIGN_OR_RETURN(Statement stmt, Prepare(sql));
    it = cache_
             .emplace(std::string(sql),
                      std::make_unique<Statement>(std::move(stmt)))
             .first;
  }
  it->second->Reset();
  return CachedStatement(it->second.get());
}

int64_t Db::LastInsertRowid() const { return sqlite3_last_insert_rowid(db_); }
int Db::Changes() const { return sqlite3_changes(db_); }

Statement& Statement::operator=(Statement&& o) noexcept {
  if (this != &o) {
    sqlite3_finalize(stmt_);
    db_ = o.db_;
    stmt_ = o.stmt_;
    bind_rc_ = o.bind_rc_;
    bind_index_ = o.bind_index_;
    o.stmt_ = nullptr;
  }
  return *this;
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

void Statement::CheckBind(int rc, int index) {
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) {
    bind_rc_ = rc;
    bind_index_ = index;
  }
}

Statement& Statement::Bind(int index, int64_t v) {
  CheckBind(sqlite3_bind_int64(stmt_, index, v), index);
  return *this;
}
Statement& Statement::Bind(int index, double v) {
  CheckBind(sqlite3_bind_double(stmt_, index, v), index);
  return *this;
}
Statement& Statement::Bind(int index, std::string_view v) {
  if (v.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    CheckBind(SQLITE_TOOBIG, index);
    return *this;
  }
  CheckBind(sqlite3_bind_text(stmt_, index, v.data(),
                              static_cast<int>(v.size()), SQLITE_TRANSIENT),
            index);
  return *this;
}
Statement& Statement::BindNull(int index) {
  CheckBind(sqlite3_bind_null(stmt_, index), index);
  return *this;
}

Result<bool> Statement::Step() {
  if (bind_rc_ != SQLITE_OK) {
    // Reported once; Reset() clears it with the bindings.
    return SqliteStatus(bind_rc_, nullptr,
                        "bind parameter " + std::to_string(bind_index_));
  }
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  Status s = SqliteStatus(rc, db_, "step");
  sqlite3_reset(stmt_);
  return s;
}

Status Statement::Run() {
  while (true) {
    MEGABATCH_ASSIGN_OR_RETURN(bool r, Step());
    if (!r) return Status();
  }
}

void Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_rc_ = SQLITE_OK;
  bind_index_ = 0;
}

std::string Statement::Text(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  return p ? std::string(reinterpret_cast<const char*>(p),
                         sqlite3_column_bytes(stmt_, col))
           : std::string();
}

Transaction::Transaction(Db* db) : db_(db) {
  begin_ = db_->Exec("BEGIN IMMEDIATE");
  done_ = !begin_.ok();
}

Transaction::~Transaction() {
  if (!done_) (void)db_->Exec("ROLLBACK");
}

Status Transaction::Commit() {
  if (done_)
    return begin_.ok() ? FailedPreconditionError("transaction ended") : begin_;
  Status s = db_->Exec("COMMIT");
  if (s.ok()) done_ = true;
  return s;
}

}  // namespace megabatch::store
