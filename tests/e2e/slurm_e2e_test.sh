#!/usr/bin/env bash
# The shipped Slurm job (deploy/slurm/megabatch-workers.sbatch) on a real
# one-node Slurm cluster (scripts/slurm_cluster.sh): a job of 2 worker tasks
# runs a sweep; `scancel` mid-trial gives the trials back at once (the lease
# timeout is 120 s), marked preempted and not counted as attempts; a second
# job resumes them from their checkpoints to the end with every step stored
# once, and, with MEGABATCH_EXIT_WHEN_IDLE, ends by itself once the queue is
# empty. Exit 77 (skipped) where Slurm cannot start (not root, no slurm-wlm).
# Usage: slurm_e2e_test.sh COORDINATOR_BIN WORKER_BIN CLI_BIN
set -euo pipefail
coordinator_bin=$1 worker_bin=$2 cli_bin=$3
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=$(mktemp -d /tmp/megabatch-slurm-test.XXXXXX)
coordinator_pid=
cleanup() {
  if [[ -n ${SLURM_CONF:-} ]]; then scancel --full --quiet --user=root 2>/dev/null || true; fi
  [[ -n $coordinator_pid ]] && kill "$coordinator_pid" 2>/dev/null || true
  "$repo/scripts/slurm_cluster.sh" stop "$dir/slurm" || true
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$dir"/coordinator.log "$dir"/job-*.out "$dir"/slurm/log/slurmctld.log; do
    [[ -f $f ]] && { echo "--- $f" >&2; tail -30 "$f" >&2; }
  done
  exit 1
}
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

set +e
cluster=$("$repo/scripts/slurm_cluster.sh" start "$dir/slurm")
rc=$?
set -e
if ((rc == 77)); then
  echo "SKIPPED: cannot start a Slurm cluster here (see above)"
  exit 77
fi
((rc == 0)) || fail "slurm_cluster.sh start: exit $rc"
eval "$cluster"  # SLURM_CONF

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export MEGABATCH_COORDINATOR=127.0.0.1:$port MEGABATCH_WORKER=$worker_bin
"$coordinator_bin" --listen "$MEGABATCH_COORDINATOR" --db "$dir/megabatch.db" \
  --metrics-listen "" --artifacts "$dir/artifacts" --lease-timeout-ms 120000 \
  --heartbeat-interval-ms 500 >"$dir/coordinator.log" 2>&1 &
coordinator_pid=$!
cli() { "$cli_bin" --server "$MEGABATCH_COORDINATOR" "$@"; }
sql() { cli -o csv query "$1" | tail -n +2; }
wait_for 30 eval "cli workers >/dev/null 2>&1" || fail "the coordinator did not come up"

submit_job() {  # prints the job id
  sbatch --parsable --ntasks=2 --ntasks-per-node=2 --output="$dir/job-%j.out" \
    "$repo/deploy/slurm/megabatch-workers.sbatch"
}
job_over() { [[ -z $(squeue -h -j "$1" 2>/dev/null) ]]; }

first=$(submit_job)
cat >"$dir/spec.yaml" <<'SPEC'
name: slurm-drain
model: {type: mlp, hidden: [128]}
optimizers: [{name: lamb}]
batch_sizes: [256, 512]
base: {lr: 0.01}
budget: {steps: 6000}
eval_every_steps: 2000
checkpoint_every_steps: 20
SPEC
cli submit "$dir/spec.yaml" >/dev/null || fail "submit"
# Both trials running on the job's workers, each past some checkpoints.
running_with_checkpoints() {
  [[ $(sql "SELECT count(*) FROM (SELECT trial_id FROM metrics WHERE name = 'train_loss' GROUP BY trial_id HAVING max(step) >= 300)") == 2 ]]
}
wait_for 120 running_with_checkpoints || fail "the first job's workers did not run the trials"
[[ $(sql "SELECT count(*) FROM workers WHERE name LIKE '%-job$first-task%'") == 2 ]] ||
  fail "expected 2 workers named after job $first"

scancel "$first"
cancelled_at=$SECONDS
preempted() { [[ $(sql "SELECT count(*) FROM events WHERE kind = 'trial_preempted' AND message LIKE '%checkpoint written%'") == 2 ]]; }
wait_for 20 preempted || fail "the trials were not given back after scancel"
echo "given back $((SECONDS - cancelled_at)) s after scancel (lease timeout: 120 s)"
[[ $(sql "SELECT count(*) FROM trials WHERE state = 'queued' AND attempts = 0") == 2 ]] ||
  fail "the preempted trials are not queued with their attempt uncounted"
wait_for 40 job_over "$first" || fail "job $first did not end after scancel"
grep -q "draining" "$dir/job-$first.out" || fail "the workers did not drain"

export MEGABATCH_EXIT_WHEN_IDLE=5
second=$(submit_job)
timeout 300 "$cli_bin" --server "$MEGABATCH_COORDINATOR" watch 1 >/dev/null ||
  fail "the second job did not finish the sweep"
[[ $(grep -c "resuming from $dir/artifacts/trial-" "$dir/job-$second.out") == 2 ]] ||
  fail "the second job did not resume both trials from their checkpoints"
[[ $(sql "SELECT count(*) FROM trials WHERE state = 'completed' AND attempts = 1") == 2 ]] ||
  fail "expected 2 completed trials, each with one counted attempt"
[[ $(sql "SELECT count(*) FROM events WHERE kind = 'trial_failed'") == 0 ]] ||
  fail "a preempted trial was counted as failed"
# Every step of both trials stored, once (a re-sent step overwrites).
[[ $(sql "SELECT count(*) FROM (SELECT trial_id FROM metrics WHERE name = 'train_loss' GROUP BY trial_id HAVING count(*) = 6000 AND min(step) = 1 AND max(step) = 6000)") == 2 ]] ||
  fail "not every step was stored once"
# The pilot job gives its node back once the queue is empty.
wait_for 60 job_over "$second" || fail "job $second did not end when idle"
grep -q -- "--exit-when-idle" "$dir/job-$second.out" || fail "the second job's workers did not exit when idle"
echo "PASS"
