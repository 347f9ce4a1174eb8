// Files a worker keeps on its host, safe from the host's other local users
// (docs/security.md): its runtime state lives in directories it owns that
// no one else can write, checked before use; files are created without
// following symlinks and replaced atomically; temp dirs have unguessable
// names. LibTorch-free; thread-safe (no state).
#ifndef MEGABATCH_WORKER_DAEMON_PRIVATE_FILES_H_
#define MEGABATCH_WORKER_DAEMON_PRIVATE_FILES_H_

#include <string>
#include <string_view>

#include "common/status.h"

namespace megabatch::worker {

// Where this user's workers keep runtime state by default:
// $RUNTIME_DIRECTORY (systemd's RuntimeDirectory=), else
// $XDG_RUNTIME_DIR/megabatch, else /run/megabatch for root, else
// $TMPDIR/megabatch-<uid>.
std::string DefaultRuntimeDir();

// Makes `path` (and missing parents) with mode 0700, or takes the existing
// directory if it is one (not a symlink), owned by this process's user and
// not writable by group or others. FAILED_PRECONDITION naming the path and
// what is wrong otherwise.
Status EnsurePrivateDir(const std::string& path);

// A new directory `parent`/`prefix`XXXXXX (mkdtemp: mode 0700, a random
// name). FAILED_PRECONDITION naming the parent when it cannot be made.
Result<std::string> MakePrivateTempDir(const std::string& parent,
                                       const std::string& prefix);

// Writes `content` to a new file beside `path` (O_EXCL | O_NOFOLLOW, mode
// 0600) and renames it over `path`: readers see the old content or the new,
// and a symlink planted at `path` is replaced, never followed.
// UNAVAILABLE naming the file when it cannot.
Status WriteFileAtomically(const std::string& path, std::string_view content);

// Reads a regular file owned by this process's user without following a
// symlink; NOT_FOUND when it is absent, PERMISSION_DENIED when it is not
// such a file (someone else's, a FIFO, a device, a symlink).
Result<std::string> ReadOwnFile(const std::string& path);

}  // namespace megabatch::worker

#endif  // MEGABATCH_WORKER_DAEMON_PRIVATE_FILES_H_
