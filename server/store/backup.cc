#include "server/store/backup.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <memory>
#include <vector>

#include "server/store/db.h"
#include "server/store/sweep_store.h"

namespace megabatch::store {
namespace {

namespace fs = std::filesystem;

struct CloseSqlite {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};

// The one row of `pragma` run on `db` ("" when it returns none).
Result<std::string> PragmaText(sqlite3* db, const char* pragma) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db, pragma, -1, &stmt, nullptr);
  if (rc != SQLITE_OK) return SqliteStatus(rc, db, pragma);
  rc = sqlite3_step(stmt);
  std::string text;
  if (rc == SQLITE_ROW) {
    const unsigned char* t = sqlite3_column_text(stmt, 0);
    text = t != nullptr ? reinterpret_cast<const char*>(t) : "";
  }
  sqlite3_finalize(stmt);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return SqliteStatus(rc, db, pragma);
  return text;
}

// Makes a rename in `dir` durable.
void SyncDirectory(const fs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

Status BackupDatabase(const std::string& db_path, const std::string& to) {
  std::error_code ec;
  if (fs::exists(to, ec)) {
    return AlreadyExistsError("backup " + to +
                              ": exists; a backup never overwrites a file");
  }
  MEGABATCH_ASSIGN_OR_RETURN(auto source, Db::OpenReadOnly(db_path));
  const std::string tmp = to + ".tmp";
  fs::remove(tmp, ec);
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(tmp.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  std::unique_ptr<sqlite3, CloseSqlite> dest(raw);
  if (rc != SQLITE_OK) return SqliteStatus(rc, raw, "backup: create " + tmp);
  Status copied;
  {
    // One step for all pages: the whole copy reads one snapshot, while
    // the coordinator's writes go on into its write-ahead log.
    sqlite3_backup* b =
        sqlite3_backup_init(dest.get(), "main", source->raw(), "main");
    if (b == nullptr) {
      copied = SqliteStatus(sqlite3_errcode(dest.get()), dest.get(),
                            "backup " + db_path);
    } else {
      rc = sqlite3_backup_step(b, -1);
      sqlite3_backup_finish(b);
      if (rc != SQLITE_DONE) {
        copied = SqliteStatus(rc, dest.get(), "backup " + db_path);
      }
    }
  }
  // One self-contained file: the copy would keep the source's WAL mode.
  Result<std::string> journal =
      copied.ok() ? PragmaText(dest.get(), "PRAGMA journal_mode=DELETE")
                  : Result<std::string>(copied);
  Result<std::string> check =
      journal.ok() ? PragmaText(dest.get(), "PRAGMA integrity_check")
                   : Result<std::string>(journal.status());
  dest.reset();
  if (check.ok() && *check != "ok") {
    check = DataLossError("backup " + tmp + ": integrity_check: " + *check);
  }
  if (!check.ok()) {
    fs::remove(tmp, ec);
    return check.status();
  }
  fs::rename(tmp, to, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return UnavailableError("backup: rename " + tmp + " to " + to + ": " +
                            ec.message());
  }
  SyncDirectory(fs::path(to).parent_path());
  return Status();
}

Result<std::string> BackupIntoDirectory(const std::string& db_path,
                                        const std::string& dir, int keep) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return FailedPreconditionError("backup directory " + dir + ": " +
                                   ec.message());
  }
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &utc);
  const std::string path =
      (fs::path(dir) / ("megabatch-" + std::string(stamp) + ".db")).string();
  MEGABATCH_RETURN_IF_ERROR(BackupDatabase(db_path, path));
  // The names sort by time.
  std::vector<fs::path> backups;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("megabatch-", 0) == 0 && entry.path().extension() == ".db")
      backups.push_back(entry.path());
  }
  std::sort(backups.begin(), backups.end());
  for (size_t i = 0;
       i + static_cast<size_t>(std::max(keep, 1)) < backups.size(); ++i) {
    fs::remove(backups[i], ec);
  }
  return path;
}

Result<int> RestoreDatabase(const std::string& backup,
                            const std::string& db_path, int64_t id_gap,
                            double now) {
  std::error_code ec;
  // A stale -wal beside a new file would be replayed into it.
  for (const std::string& f : {db_path, db_path + "-wal", db_path + "-shm"}) {
    if (fs::exists(f, ec)) {
      return AlreadyExistsError(
          "restore: " + f +
          " exists; move the old database (and its -wal and -shm files) "
          "away first: a restore never overwrites one");
    }
  }
  if (!fs::exists(backup, ec)) {
    return NotFoundError("restore: backup " + backup + " not found");
  }
  MEGABATCH_RETURN_IF_ERROR(BackupDatabase(backup, db_path));
  auto store = SweepStore::Open(db_path);
  Result<int> requeued = store.ok() ? (*store)->FenceAfterRestore(id_gap, now)
                                    : Result<int>(store.status());
  if (!requeued.ok()) {
    // Half a restore is not served from by accident.
    if (store.ok()) store->reset();
    for (const std::string& f : {db_path, db_path + "-wal", db_path + "-shm"})
      fs::remove(f, ec);
  }
  return requeued;
}

}  // namespace megabatch::store
