#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts a coordinator (SQLite
# file in a fresh directory, or $MEGABATCH_DEMO_DIR) and one worker on
# loopback with a slot per core (one thread each, so that trainers never
# share a core), runs experiments/quickstart.yaml (or the spec given as $1),
# and prints its results. Everything it started is stopped on exit.
#
# With a second argument RESULTS_DIR it also writes the study's outputs there
# (experiments/results/README.md): the spec as run, report.md, report.json,
# scaling.svg, trials.csv, run.txt (commit, machine, wall time) and the check
# of the report against one recomputed from the raw metrics.
#
# With $MEGABATCH_BIN_DIR (a directory holding megabatch-coordinator,
# megabatch-worker, megabatch-trainer and megabatch, e.g. an install's bin/)
# it runs those binaries and builds nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
spec=${1:-$root/experiments/quickstart.yaml}
results=${2:-}
"$root/scripts/install_deps.sh"
if [[ -n "${MEGABATCH_BIN_DIR:-}" ]]; then
  coordinator_bin=$MEGABATCH_BIN_DIR/megabatch-coordinator
  worker_bin=$MEGABATCH_BIN_DIR/megabatch-worker
  cli=$MEGABATCH_BIN_DIR/megabatch
else
  "$root/scripts/build.sh"
  bin=${MEGABATCH_BUILD_DIR:-$root/build}
  coordinator_bin=$bin/server/megabatch-coordinator
  worker_bin=$bin/worker/daemon/megabatch-worker
  cli=$bin/cli/megabatch
fi

# The commit the binaries were built from (run.txt records it): HEAD may
# move while a long study runs.
commit="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)$(
  git -C "$root" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"

dir=${MEGABATCH_DEMO_DIR:-$(mktemp -d -t megabatch-demo-XXXXXX)}
mkdir -p "$dir"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
server=127.0.0.1:$(free_port)
metrics=127.0.0.1:$(free_port)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# $MEGABATCH_DATA_ROOT: one more directory specs may read data from (a
# study of your own model's files, docs/models.md), besides Debian's.
data_roots=()
if [[ -n "${MEGABATCH_DATA_ROOT:-}" ]]; then
  data_roots=(--data-root /usr/share/datasets --data-root /usr/share/games/fortunes
              --data-root "$MEGABATCH_DATA_ROOT")
fi
"$coordinator_bin" --listen "$server" --db "$dir/megabatch.db" \
  --metrics-listen "$metrics" "${data_roots[@]}" \
  >"$dir/coordinator.log" 2>&1 &
pids+=($!)
slots=${MEGABATCH_SLOTS:-$(nproc)}
"$worker_bin" --coordinator "$server" --name worker-1 "${data_roots[@]}" \
  --slots "$slots" --threads-per-slot 1 --work-dir "$dir/worker-1" >"$dir/worker-1.log" 2>&1 &
pids+=($!)

echo "megabatch: coordinator on $server, database $dir/megabatch.db, metrics http://$metrics/metrics" >&2
started=$(date +%s)
sweep=$("$cli" --server "$server" submit "$spec")
status=0
"$cli" --server "$server" watch "$sweep" >/dev/null || status=$?
seconds=$(($(date +%s) - started))
echo
echo "Results of sweep $sweep ($spec):"
"$cli" --server "$server" trials "$sweep"
echo
echo "Report (megabatch report $sweep):"
"$cli" --server "$server" report "$sweep"
echo
echo "Database: $dir/megabatch.db   e.g.  sqlite3 $dir/megabatch.db 'SELECT * FROM trial_summary'"
if [[ -n "$results" ]]; then
  mkdir -p "$results"
  cp "$spec" "$results/spec.yaml"
  "$cli" --server "$server" -o md report "$sweep" --plot "$results/scaling.svg" >"$results/report.md"
  "$cli" --server "$server" -o json report "$sweep" >"$results/report.json"
  "$cli" --server "$server" -o csv trials "$sweep" >"$results/trials.csv"
  check=$(/usr/bin/python3 "$root/tests/e2e/recompute_report.py" --db "$dir/megabatch.db" \
            --sweep "$sweep" --report "$results/report.json" 2>&1) || status=1
  {
    echo "spec: $(basename "$spec")"
    echo "commit: $commit"
    echo "finished: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); one worker, $slots slots of 1 thread"
    echo "wall time: ${seconds} s"
    echo "report recomputed from the raw metrics (tests/e2e/recompute_report.py): $check"
  } >"$results/run.txt"
  echo "Results written to $results" >&2
fi
exit "$status"
