#!/usr/bin/env bash
# Everything CI runs (.ci/run): installs what is missing, builds with
# warnings as errors (MEGABATCH_WERROR), runs the whole test suite (ctest),
# the clang thread-safety build, the install check (the quick start from a
# `cmake --install` prefix), the formatting check, then the fuzz targets for
# 60 s each (scripts/fuzz.sh; MEGABATCH_FUZZ_SECONDS).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install_deps.sh"
MEGABATCH_WERROR=ON "$root/scripts/build.sh"
(cd "${MEGABATCH_BUILD_DIR:-$root/build}" && ctest --output-on-failure -j 2 --timeout 900)
"$root/scripts/check_thread_safety.sh"
"$root/scripts/install_check.sh"
"$root/scripts/format.sh" --check
"$root/scripts/fuzz.sh" "${MEGABATCH_FUZZ_SECONDS:-60}"
