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
source "$root/scripts/cmake_build.sh"
cmake_build "thread-safety build" "$build" -DMEGABATCH_THREAD_SAFETY=ON \
  -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER=clang++-14 \
  -- --target megabatch-coordinator megabatch-worker megabatch
echo "megabatch: thread-safety annotations hold ($(grep -c 'thread-safety' "$build/build.log" || true) warnings)" >&2
