// Whole-file reads and crash-safe writes. LibTorch-free.
#ifndef MEGABATCH_WORKER_TRAINER_DATA_FILES_H_
#define MEGABATCH_WORKER_TRAINER_DATA_FILES_H_

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace megabatch::trainer {

// The bytes of `path`. NOT_FOUND when it cannot be opened, DATA_LOSS when a
// read fails; messages start with `what` and the path.
Result<std::string> ReadFileBytes(const std::string& path,
                                  const std::string& what);

// Writes `bytes` to `path` through a temp file of this process's own (so
// processes writing one path at once never mix their bytes), fsync and
// rename (and syncs the directory), so a crash leaves the old file or the
// new one, never a torn one. INTERNAL errors start with `what` and the path.
Status WriteFileAtomically(const std::string& path, const std::string& bytes,
                           const std::string& what);
// The same for a file made of `pieces`, written in order without copying
// them into one buffer.
Status WriteFileAtomically(const std::string& path,
                           const std::vector<std::string_view>& pieces,
                           const std::string& what);

}  // namespace megabatch::trainer

#endif  // MEGABATCH_WORKER_TRAINER_DATA_FILES_H_
