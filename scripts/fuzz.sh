#!/usr/bin/env bash
# Builds the libFuzzer targets with clang into build-fuzz/ (or
# $MEGABATCH_FUZZ_BUILD_DIR) and runs each for SECONDS (default 60) from a
# seed corpus: the specs in experiments/ for the spec parser, a few encoded
# metric batches for the metrics handler. Prints each target's executions per
# second; exits non-zero on a crash, a sanitizer report or a broken invariant
# (the input is saved in build-fuzz/artifacts/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
build=${MEGABATCH_FUZZ_BUILD_DIR:-$root/build-fuzz}
"$root/scripts/install_deps.sh"
source "$root/scripts/cmake_build.sh"
cmake_build "building fuzz targets" "$build" -DMEGABATCH_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
  -- --target spec_fuzzer metrics_fuzzer

corpus=$build/corpus
rm -rf "$corpus"
mkdir -p "$corpus/spec" "$corpus/metrics" "$build/artifacts"
cp "$root"/experiments/*.yaml "$corpus/spec/"
proto=$root/proto
encode() {
  protoc --encode=megabatch.v1.ReportMetricsRequest -I "$proto" \
    "$proto/megabatch/v1/megabatch.proto" >"$corpus/metrics/$1"
}
echo 'points {name: "train_loss" step: 1 value: 0.5}' | encode one
echo 'points {name: "val_accuracy" step: 256 value: 0.7} points {name: "lr" step: 3 value: 1e-3}' | encode asha
echo 'worker_id: 7 lease {trial_id: 1 lease_id: 9} points {name: "x" step: -1 value: nan}' | encode stale

status=0
for target in spec metrics; do
  out=$build/$target.log
  # Leak checks for the parser; the handler's world (a store, gRPC) lives
  # for the whole process on purpose.
  leaks=$([[ $target == spec ]] && echo 1 || echo 0)
  if ASAN_OPTIONS=detect_leaks=$leaks "$build/tests/fuzz/${target}_fuzzer" \
       -seed=1 -max_total_time="$seconds" -print_final_stats=1 -timeout=25 -rss_limit_mb=4096 \
       -artifact_prefix="$build/artifacts/$target-" "$corpus/$target" >"$out" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out")
    echo "${target}_fuzzer: ${runs:-?} inputs in ${seconds} s, $(( ${runs:-0} / seconds )) exec/s, no crash"
  else
    echo "${target}_fuzzer: FAILED; see $out and $build/artifacts/" >&2
    tail -30 "$out" >&2
    status=1
  fi
done
exit $status
