#!/usr/bin/env bash
# Configures and builds megabatch into build/ (or $MEGABATCH_BUILD_DIR).
# The compiler's output goes to build/build.log; on failure its errors are shown.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MEGABATCH_BUILD_DIR:-$root/build}
jobs=${MEGABATCH_JOBS:-$(nproc)}
mkdir -p "$build"
log=$build/build.log
echo "megabatch: building in $build (log: $log)" >&2
# MEGABATCH_WERROR=ON|OFF sets the CMake option (kept in the cache after).
if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
         ${MEGABATCH_WERROR:+-DMEGABATCH_WERROR=$MEGABATCH_WERROR} &&
       cmake --build "$build" -j "$jobs"; } >"$log" 2>&1; then
  grep -E -A6 "error|Error" "$log" | head -80 >&2 || tail -40 "$log" >&2
  echo "megabatch: build failed; see $log" >&2
  exit 1
fi
