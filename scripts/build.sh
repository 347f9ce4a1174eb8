#!/usr/bin/env bash
# Configures and builds megabatch into build/ (or $MEGABATCH_BUILD_DIR).
# The compiler's output goes to build/build.log; on failure its errors are shown.
# MEGABATCH_WERROR=ON|OFF sets the CMake option (kept in the cache after).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/cmake_build.sh"
cmake_build "building" "${MEGABATCH_BUILD_DIR:-$root/build}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  ${MEGABATCH_WERROR:+-DMEGABATCH_WERROR=$MEGABATCH_WERROR}
