// Which data files a trial may make a worker read: only regular files under
// the directories the worker's operator named (--data-root), so that a spec
// cannot point a trainer at /dev/zero, a FIFO, another user's files or a
// symlink out of a root. LibTorch-free; thread-safe (no state).
#ifndef MEGABATCH_WORKER_DAEMON_DATA_ROOTS_H_
#define MEGABATCH_WORKER_DAEMON_DATA_ROOTS_H_

#include <string>
#include <vector>

#include "common/status.h"

namespace megabatch::worker {

// OK when `path` (a dataset.path: a file or a directory) resolves, symlinks
// followed, to a regular file or a directory under one of `roots`, and for a
// directory every entry in it resolves to a regular file or directory under
// a root too. FAILED_PRECONDITION naming the path and the roots otherwise.
Status CheckDataPath(const std::string& path,
                     const std::vector<std::string>& roots);

}  // namespace megabatch::worker

#endif  // MEGABATCH_WORKER_DAEMON_DATA_ROOTS_H_
