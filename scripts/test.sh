#!/usr/bin/env bash
# Installs what is missing, builds, runs the whole test suite (ctest), then
# the fuzz targets for 60 s each (scripts/fuzz.sh; MEGABATCH_FUZZ_SECONDS).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install_deps.sh"
"$root/scripts/build.sh"
(cd "${MEGABATCH_BUILD_DIR:-$root/build}" && ctest --output-on-failure -j 2 --timeout 900)
"$root/scripts/fuzz.sh" "${MEGABATCH_FUZZ_SECONDS:-60}"
