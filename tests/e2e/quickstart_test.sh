#!/usr/bin/env bash
# The quick start as a user runs it (scripts/quickstart.sh, README.md) gives
# each core out once: its worker's slots x threads fit the cores, no two
# trials ever ran more threads together than there are cores, no trial
# recorded shared cores, and the report marks nothing as shared. Run alone
# (ctest RUN_SERIAL), since other tests' trainers would share the cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d -t megabatch-quickstart-test-XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

MEGABATCH_DEMO_DIR=$dir bash "$root/scripts/quickstart.sh" >"$dir/out.txt" 2>"$dir/err.txt" ||
  { cat "$dir/err.txt" >&2; fail "the quick start failed"; }
cores=$(nproc)
read -r slots threads < <(sed -nE 's/.* ([0-9]+) CPU slots x ([0-9]+) threads.*/\1 \2/p' \
                            "$dir/worker-1.log" | head -1)
[[ -n "${slots:-}" ]] || fail "no 'N CPU slots x T threads' line in the worker's log"
(( slots * threads <= cores )) || fail "$slots slots x $threads threads on $cores cores"
grep -q OVERSUBSCRIBED "$dir/worker-1.log" && fail "the worker warned of oversubscription"

db=$dir/megabatch.db
q() { sqlite3 "$db" "$1"; }
[[ $(q "SELECT count(*) FROM trials WHERE state = 'completed'") -ge 2 ]] ||
  fail "the sweep did not complete"
[[ $(q "SELECT count(*) FROM trial_summary WHERE threads IS NULL OR shared_cores IS NULL") == 0 ]] ||
  fail "a trial did not record its threads and shared_cores"
[[ $(q "SELECT count(*) FROM trial_summary WHERE shared_cores > 0") == 0 ]] ||
  fail "a trial shared cores"
# At the start of every trial, the threads of all trials running then.
peak=$(q "SELECT CAST(max(running) AS INTEGER) FROM (SELECT (SELECT sum(u.threads) FROM trial_summary u
            JOIN trials b ON b.id = u.trial_id
            WHERE b.started_at <= a.started_at AND b.finished_at > a.started_at) AS running
          FROM trials a)")
(( peak <= cores )) || fail "$peak threads ran at once on $cores cores"
grep -q "(shared)" "$dir/out.txt" && fail "the report marks figures as shared"
echo "quick start: $slots slots x $threads threads on $cores cores; at most $peak threads at once"
