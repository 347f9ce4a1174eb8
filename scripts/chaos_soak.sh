#!/usr/bin/env bash
# The long chaos soak: runs the chaos e2e test (tests/e2e/chaos_e2e_test.cc)
# over and over, each run with a new seed, for a given time, and prints one
# line per seed and a summary. A failing seed's whole output is kept. The
# workers run different thread counts (one or two), so resumes cross them.
#
#   bash scripts/chaos_soak.sh [--minutes 30] [--chaos-seconds 45] [--seed N]
#
# --seed N: the first seed (then N+1, N+2, ...); default: from the clock.
# Replay one seed: MEGABATCH_CHAOS_SEED=N build/tests/chaos_e2e_test
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=30
chaos_seconds=45
seed=$(($(date +%s) % 1000000))
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --chaos-seconds) chaos_seconds="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    *) echo "usage: $0 [--minutes M] [--chaos-seconds S] [--seed N]" >&2; exit 2 ;;
  esac
done
test_bin=build/tests/chaos_e2e_test
[[ -x "$test_bin" ]] || bash scripts/build.sh
logs=$(mktemp -d /tmp/megabatch-chaos-soak.XXXXXX)
end=$(($(date +%s) + 60 * minutes))
runs=0
failed=0
echo "chaos soak: ${minutes} min, faults for ${chaos_seconds} s a run, logs in ${logs}"
while [[ $(date +%s) -lt $end ]]; do
  log="${logs}/seed-${seed}.log"
  start=$(date +%s)
  if MEGABATCH_CHAOS_SEED=$seed MEGABATCH_CHAOS_SECONDS=$chaos_seconds \
      "$test_bin" >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (log: $log)"
    failed=$((failed + 1))
  fi
  # The test prints "seed N: kind xK kind xK ..." once its faults are done.
  summary=$(grep -m1 "^seed ${seed}:" "$log" || true)
  summary="${summary#seed ${seed}:}"
  # Resumes on a worker with other threads than the checkpoint's (workers
  # run one or two threads): the case a resume must keep bit-identical.
  crossed=$(grep -m1 -o "resumes with other threads than the slot's: [0-9]*" \
    "$log" | grep -o '[0-9]*$' || echo 0)
  echo "$summary resumes-across-threads x${crossed}" >>"${logs}/faults"
  [[ "$result" == ok ]] && rm -f "$log"
  echo "seed ${seed}: ${result}, $(($(date +%s) - start)) s;${summary}; resumes across thread counts: ${crossed}"
  runs=$((runs + 1))
  seed=$((seed + 1))
done
echo "chaos soak: ${runs} runs, ${failed} failed; faults injected in all:"
tr ' ' '\n' <"${logs}/faults" | grep . | paste - - |
  awk '{ n[$1] += substr($2, 2) } END { for (k in n) print "  " k, n[k] }'
[[ $failed -eq 0 ]]
