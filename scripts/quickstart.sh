#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts a coordinator (SQLite
# file in a fresh directory, or $MEGABATCH_DEMO_DIR) and two workers on
# loopback, runs experiments/quickstart.yaml (or the spec given as $1), and
# prints its results. Everything it started is stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
spec=${1:-$root/experiments/quickstart.yaml}
"$root/scripts/install_deps.sh"
"$root/scripts/build.sh"
bin=${MEGABATCH_BUILD_DIR:-$root/build}
cli="$bin/cli/megabatch"

dir=${MEGABATCH_DEMO_DIR:-$(mktemp -d -t megabatch-demo-XXXXXX)}
mkdir -p "$dir"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
server=127.0.0.1:$(free_port)
metrics=127.0.0.1:$(free_port)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$bin/server/megabatch-coordinator" --listen "$server" --db "$dir/megabatch.db" \
  --metrics-listen "$metrics" \
  >"$dir/coordinator.log" 2>&1 &
pids+=($!)
for i in 1 2; do
  "$bin/worker/daemon/megabatch-worker" --coordinator "$server" --name "worker-$i" \
    --slots 1 --work-dir "$dir/worker-$i" >"$dir/worker-$i.log" 2>&1 &
  pids+=($!)
done

echo "megabatch: coordinator on $server, database $dir/megabatch.db, metrics http://$metrics/metrics" >&2
sweep=$("$cli" --server "$server" submit "$spec")
status=0
"$cli" --server "$server" watch "$sweep" >/dev/null || status=$?
echo
echo "Results of sweep $sweep ($spec):"
"$cli" --server "$server" trials "$sweep"
echo
echo "Report (megabatch report $sweep):"
"$cli" --server "$server" report "$sweep"
echo
echo "Database: $dir/megabatch.db   e.g.  sqlite3 $dir/megabatch.db 'SELECT * FROM trial_summary'"
exit "$status"
