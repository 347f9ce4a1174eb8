# Sourced by the build scripts (build.sh, fuzz.sh, check_thread_safety.sh):
#   cmake_build LABEL BUILD_DIR [CONFIGURE ARGS...] -- [BUILD ARGS...]
# configures $root into BUILD_DIR and builds it with $MEGABATCH_JOBS jobs
# (default: the cores), the compiler's output in BUILD_DIR/build.log; on a
# failure shows its errors and exits 1.
cmake_build() {
  local label=$1 build=$2
  shift 2
  local configure=()
  while (($#)) && [[ $1 != -- ]]; do
    configure+=("$1")
    shift
  done
  (($#)) && shift
  mkdir -p "$build"
  local log=$build/build.log
  echo "megabatch: $label in $build (log: $log)" >&2
  if ! { cmake -S "$root" -B "$build" "${configure[@]}" &&
         cmake --build "$build" -j "${MEGABATCH_JOBS:-$(nproc)}" "$@"; } >"$log" 2>&1; then
    grep -E -B2 -A6 "error|Error" "$log" | head -80 >&2 || tail -40 "$log" >&2
    echo "megabatch: $label failed; see $log" >&2
    exit 1
  fi
}
