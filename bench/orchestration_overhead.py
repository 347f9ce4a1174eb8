#!/usr/bin/python3
"""Orchestration overhead of short trials through the real service.

Starts a coordinator and one worker (a one-thread slot per core) on loopback,
runs a sweep of N short MLP trials, and compares the sweep's wall time x
slots with the sum of the trials' pure training time (the per-step times
the trainers logged, evaluation excluded). The difference is what the
service costs: leasing, trainer start-up (LibTorch load, dataset mapping),
evaluation, reporting, and idle slots at the end. Ray Tune publishes 14% on
10,000 one-second trials for comparison.

Each size runs twice in the same invocation, on a fresh coordinator and
worker each: with warm trainers (the worker's default: a slot keeps its
trainer process between trials of one sweep) and with --fresh-trainers (a
new process per trial, the baseline).

  /usr/bin/python3 bench/orchestration_overhead.py [--trials 200] [--steps 1100]
      [--long-trials 20] [--long-steps 11000] [--slots N]

--steps 1100 makes trials of about 1 s of training on the 2-core machine
the figures in docs/benchmarks.md come from; --long-steps about 10 s.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from megabatch_service import Service  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 256


def measure(args, trials, steps, worker_flags):
    with Service(args.build, args.slots, worker_flags) as service:
        spec = os.path.join(service.work, "spec.yaml")
        with open(spec, "w") as f:
            f.write("name: overhead\nmodel: {type: mlp, hidden: [64]}\n"
                    "optimizers: [{name: adamw}]\nbatch_sizes: [%d]\nbase: {lr: 0.002}\n"
                    "seeds: [%s]\nbudget: {steps: %d}\neval_every_steps: %d\n"
                    % (BATCH, ", ".join(str(i) for i in range(trials)), steps, steps))
        wall = service.submit_and_wait(spec)
        # Pure training time: each step's batch / samples_per_second, summed.
        train = service.query("SELECT sum(? / value) FROM metrics "
                              "WHERE name = 'samples_per_second' AND value > 0",
                              (float(BATCH),))[0][0]
        done = service.query("SELECT count(*) FROM trials WHERE state = 'completed'")[0][0]
    if done != trials:
        raise SystemExit("only %d of %d trials completed (%s)" % (done, trials, service.db))
    return {"wall": wall, "train": train, "overhead": 1 - train / (wall * args.slots),
            "per_trial": (wall * args.slots - train) / trials}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--steps", type=int, default=1100, help="steps per short trial")
    ap.add_argument("--long-trials", type=int, default=20)
    ap.add_argument("--long-steps", type=int, default=11000, help="steps per long trial")
    ap.add_argument("--slots", type=int, default=os.cpu_count())
    args = ap.parse_args()

    sizes = [(args.trials, args.steps)]
    if args.long_trials > 0:
        sizes.append((args.long_trials, args.long_steps))
    print("MLP trials (batch %d) through a coordinator and one worker of %d one-thread slots"
          % (BATCH, args.slots))
    print("%-26s %-14s %8s %10s %10s %14s" % ("sweep", "trainers", "wall s", "train s",
                                              "overhead", "s/trial extra"))
    for trials, steps in sizes:
        results = {}
        for mode, flags in (("fresh (baseline)", ["--fresh-trainers"]), ("warm", [])):
            r = measure(args, trials, steps, flags)
            results[mode] = r
            label = "%d x %d steps (%.1f s)" % (trials, steps, r["train"] / trials)
            print("%-26s %-14s %8.1f %10.1f %9.1f%% %14.3f" %
                  (label, mode, r["wall"], r["train"], 100 * r["overhead"], r["per_trial"]))
        fresh, warm = results["fresh (baseline)"], results["warm"]
        print("  warm / fresh: overhead %.2fx, extra seconds per trial %.2fx "
              "(Ray Tune publishes 14%% on 1-s trials)"
              % (warm["overhead"] / fresh["overhead"], warm["per_trial"] / fresh["per_trial"]))


if __name__ == "__main__":
    main()
