#!/usr/bin/env bash
# Builds everything that takes locks (coordinator, worker daemon, CLI; no
# LibTorch) with clang and -Werror=thread-safety into build-tsa/ (or
# $MEGABATCH_TSA_BUILD_DIR): a GUARDED_BY member touched without its mutex,
# or a REQUIRES function called without it, fails the build. Locks must be
# megabatch::Mutex (common/mutex.h) for the analysis to see them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MEGABATCH_TSA_BUILD_DIR:-$root/build-tsa}
"$root/scripts/install_deps.sh"
mkdir -p "$build"
log=$build/build.log
echo "megabatch: thread-safety build in $build (log: $log)" >&2
if ! { cmake -S "$root" -B "$build" -DMEGABATCH_THREAD_SAFETY=ON -DCMAKE_BUILD_TYPE=Debug \
         -DCMAKE_CXX_COMPILER=clang++-14 &&
       cmake --build "$build" -j "${MEGABATCH_JOBS:-$(nproc)}" \
         --target megabatch-coordinator megabatch-worker megabatch; } >"$log" 2>&1; then
  grep -E -B2 -A6 "error|Error" "$log" | head -80 >&2 || tail -40 "$log" >&2
  echo "megabatch: thread-safety build failed; see $log" >&2
  exit 1
fi
echo "megabatch: thread-safety annotations hold ($(grep -c 'thread-safety' "$log" || true) warnings)" >&2
