// A SQLite VFS for the connections `megabatch query` runs on: the temporary
// files a statement makes (sorts that spill, temp tables, sub-journals)
// count their bytes against one budget shared by every such connection in
// the process, and a write past it fails with SQLITE_FULL. Other files (the
// database, its WAL and shared memory) go straight to the default VFS.
// Without it, one ORDER BY over the metrics table wrote 525 MB of temp
// files in 4 s (docs/security.md, Limits).
#ifndef MEGABATCH_SERVER_STORE_TEMP_BUDGET_VFS_H_
#define MEGABATCH_SERVER_STORE_TEMP_BUDGET_VFS_H_

#include <cstdint>

namespace megabatch::store {

// The VFS's name for sqlite3_open_v2; registered on first use with
// `budget_bytes` (a later call's budget is ignored). Thread-safe.
const char* TempBudgetVfs(int64_t budget_bytes);

// Bytes of temporary files the VFS's connections hold now.
int64_t TempBudgetVfsBytesInUse();

}  // namespace megabatch::store

#endif  // MEGABATCH_SERVER_STORE_TEMP_BUDGET_VFS_H_
