// Online backups of the results database and restores from them
// (docs/running.md, "Backups and restore"). A backup is one consistent
// snapshot taken with SQLite's online backup API from its own read-only
// connection, so it may run while a coordinator serves from the database:
// writers go on meanwhile (WAL).
#ifndef MEGABATCH_SERVER_STORE_BACKUP_H_
#define MEGABATCH_SERVER_STORE_BACKUP_H_

#include <cstdint>
#include <string>

#include "common/status.h"

namespace megabatch::store {

// The lease and id gap a restore puts between the backup and what the lost
// coordinator may have given out after it (SweepStore::FenceAfterRestore).
inline constexpr int64_t kRestoreIdGap = 1000000;

// Copies the database at `db_path` into the new file `to`: written beside
// it as `to`.tmp, checked with integrity_check, made one self-contained
// file (rollback journal) and renamed into place. ALREADY_EXISTS when `to`
// exists: a backup never overwrites one.
Status BackupDatabase(const std::string& db_path, const std::string& to);

// A backup into `dir` named megabatch-YYYYMMDDTHHMMSSZ.db (UTC, now), then
// the oldest such files beyond `keep` removed. Returns the new file's path.
Result<std::string> BackupIntoDirectory(const std::string& db_path,
                                        const std::string& dir, int keep);

// Restores `backup` as the database `db_path`, which must not exist (move a
// damaged one away first): copies it, migrates it to this version's schema
// and fences it (SweepStore::FenceAfterRestore with `id_gap`). Returns how
// many running trials went back to the queue. `now`: Unix seconds, for its
// events.
Result<int> RestoreDatabase(const std::string& backup,
                            const std::string& db_path, int64_t id_gap,
                            double now);

}  // namespace megabatch::store

#endif  // MEGABATCH_SERVER_STORE_BACKUP_H_
