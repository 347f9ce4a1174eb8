#include "server/store/temp_budget_vfs.h"

#include <sqlite3.h>

#include <atomic>
#include <mutex>

namespace megabatch::store {
namespace {

constexpr const char* kVfsName = "megabatch-temp-budget";
constexpr int kTempFiles = SQLITE_OPEN_TEMP_DB | SQLITE_OPEN_TEMP_JOURNAL |
                           SQLITE_OPEN_TRANSIENT_DB | SQLITE_OPEN_SUBJOURNAL;

sqlite3_vfs* real_vfs = nullptr;
int64_t budget = 0;
std::atomic<int64_t> in_use{0};

// A temporary file: the real one follows it in the same allocation. `high`
// is the furthest byte written, which is what the budget is charged.
struct TempFile {
  sqlite3_file base;
  int64_t high;
  sqlite3_file* real() { return reinterpret_cast<sqlite3_file*>(this + 1); }
};

TempFile* Of(sqlite3_file* f) { return reinterpret_cast<TempFile*>(f); }

// Charges the budget for growing `f` to `end` bytes; false past it.
bool Grow(TempFile* f, int64_t end) {
  if (end <= f->high) return true;
  const int64_t more = end - f->high;
  int64_t used = in_use.load();
  do {
    if (used + more > budget) return false;
  } while (!in_use.compare_exchange_weak(used, used + more));
  f->high = end;
  return true;
}

void Shrink(TempFile* f, int64_t end) {
  if (end >= f->high) return;
  in_use -= f->high - end;
  f->high = end;
}

int Close(sqlite3_file* f) {
  Shrink(Of(f), 0);
  return Of(f)->real()->pMethods->xClose(Of(f)->real());
}
int Read(sqlite3_file* f, void* p, int n, sqlite3_int64 off) {
  return Of(f)->real()->pMethods->xRead(Of(f)->real(), p, n, off);
}
int Write(sqlite3_file* f, const void* p, int n, sqlite3_int64 off) {
  if (!Grow(Of(f), off + n)) return SQLITE_FULL;
  return Of(f)->real()->pMethods->xWrite(Of(f)->real(), p, n, off);
}
int Truncate(sqlite3_file* f, sqlite3_int64 size) {
  const int rc = Of(f)->real()->pMethods->xTruncate(Of(f)->real(), size);
  if (rc == SQLITE_OK) Shrink(Of(f), size);
  return rc;
}
int Sync(sqlite3_file* f, int flags) {
  return Of(f)->real()->pMethods->xSync(Of(f)->real(), flags);
}
int FileSize(sqlite3_file* f, sqlite3_int64* size) {
  return Of(f)->real()->pMethods->xFileSize(Of(f)->real(), size);
}
int Lock(sqlite3_file* f, int level) {
  return Of(f)->real()->pMethods->xLock(Of(f)->real(), level);
}
int Unlock(sqlite3_file* f, int level) {
  return Of(f)->real()->pMethods->xUnlock(Of(f)->real(), level);
}
int CheckReservedLock(sqlite3_file* f, int* out) {
  return Of(f)->real()->pMethods->xCheckReservedLock(Of(f)->real(), out);
}
int FileControl(sqlite3_file* f, int op, void* arg) {
  return Of(f)->real()->pMethods->xFileControl(Of(f)->real(), op, arg);
}
int SectorSize(sqlite3_file* f) {
  return Of(f)->real()->pMethods->xSectorSize(Of(f)->real());
}
int DeviceCharacteristics(sqlite3_file* f) {
  return Of(f)->real()->pMethods->xDeviceCharacteristics(Of(f)->real());
}

// Version 1: temporary files are never memory-mapped or shared.
const sqlite3_io_methods kTempMethods = {
    1,
    Close,
    Read,
    Write,
    Truncate,
    Sync,
    FileSize,
    Lock,
    Unlock,
    CheckReservedLock,
    FileControl,
    SectorSize,
    DeviceCharacteristics,
    nullptr,  // xShmMap and the rest: version 2 and 3 only
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

int Open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* file, int flags,
         int* out_flags) {
  if ((flags & kTempFiles) == 0) {
    // Not a temporary file: the real VFS's own, in place.
    return real_vfs->xOpen(real_vfs, name, file, flags, out_flags);
  }
  TempFile* f = Of(file);
  f->base.pMethods = nullptr;
  f->high = 0;
  const int rc = real_vfs->xOpen(real_vfs, name, f->real(), flags, out_flags);
  if (rc != SQLITE_OK) return rc;
  f->base.pMethods = &kTempMethods;
  return SQLITE_OK;
}

}  // namespace

const char* TempBudgetVfs(int64_t budget_bytes) {
  static std::once_flag once;
  static sqlite3_vfs vfs;
  std::call_once(once, [budget_bytes] {
    real_vfs = sqlite3_vfs_find(nullptr);
    budget = budget_bytes;
    vfs = *real_vfs;  // everything but opening files is the real VFS's
    vfs.zName = kVfsName;
    vfs.szOsFile = static_cast<int>(sizeof(TempFile)) + real_vfs->szOsFile;
    vfs.pNext = nullptr;
    vfs.xOpen = Open;
    sqlite3_vfs_register(&vfs, /*makeDflt=*/0);
  });
  return kVfsName;
}

int64_t TempBudgetVfsBytesInUse() { return in_use.load(); }

}  // namespace megabatch::store
