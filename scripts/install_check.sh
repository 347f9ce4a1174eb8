#!/usr/bin/env bash
# Installs the build (build/ or $MEGABATCH_BUILD_DIR) into a temporary prefix
# with `cmake --install` and runs the quick-start sweep from the installed
# binaries and specs only (scripts/quickstart.sh with MEGABATCH_BIN_DIR), so
# that a missing install rule fails here rather than on a user's machine;
# then builds the .deb (cpack) and checks that it carries the same files.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MEGABATCH_BUILD_DIR:-$root/build}
prefix=$(mktemp -d -t megabatch-prefix-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >"$prefix.log" 2>&1 ||
  { cat "$prefix.log" >&2; echo "megabatch: cmake --install failed" >&2; exit 1; }
rm -f "$prefix.log"
for f in bin/megabatch-coordinator bin/megabatch-worker bin/megabatch-trainer bin/megabatch \
         share/megabatch/experiments/quickstart.yaml share/megabatch/dashboard/prometheus/prometheus.yml \
         lib/systemd/system/megabatch-coordinator.service share/doc/megabatch/README.md; do
  [[ -e "$prefix/$f" ]] || { echo "megabatch: install is missing $f" >&2; exit 1; }
done
# The Python client, importable from the installed tree alone.
PYTHONPATH="$prefix/lib/python3/dist-packages" /usr/bin/python3 -c \
  'import megabatch_client as mb; assert "completed" in mb.TRIAL_STATES' ||
  { echo "megabatch: the installed Python client does not import" >&2; exit 1; }
echo "megabatch: installed into $prefix; running the quick start from it" >&2
MEGABATCH_BIN_DIR="$prefix/bin" bash "$root/scripts/quickstart.sh" \
  "$prefix/share/megabatch/experiments/quickstart.yaml" >"$prefix/quickstart.out"
grep -q 'completed' "$prefix/quickstart.out" ||
  { cat "$prefix/quickstart.out"; echo "megabatch: the installed quick start completed nothing" >&2; exit 1; }
echo "megabatch: the installed binaries ran the quick-start sweep:" >&2
sed -n '/^Results of sweep/,/^$/p' "$prefix/quickstart.out"

(cd "$build" && cpack -G DEB >"$prefix/cpack.log" 2>&1) ||
  { cat "$prefix/cpack.log" >&2; echo "megabatch: cpack -G DEB failed" >&2; exit 1; }
deb=$(ls -t "$build"/megabatch_*_amd64.deb | head -1)
listing=$(dpkg-deb -c "$deb")
for f in usr/bin/megabatch-coordinator usr/bin/megabatch-worker usr/bin/megabatch-trainer \
         usr/bin/megabatch usr/lib/systemd/system/megabatch-worker.service \
         usr/lib/python3/dist-packages/megabatch_client/_pb/megabatch_pb2_grpc.py; do
  grep -q " ./$f\$" <<<"$listing" || { echo "megabatch: $deb lacks /$f" >&2; exit 1; }
done
echo "megabatch: $(basename "$deb") built; depends: $(dpkg-deb -f "$deb" Depends | cut -c1-80)..." >&2
