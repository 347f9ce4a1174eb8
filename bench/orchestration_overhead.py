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
the figures in README.md come from; --long-steps about 10 s.
"""
import argparse
import os
import socket
import sqlite3
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 256


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sweep(args, trials, steps, worker_flags):
    """Wall seconds of one sweep, and its database path."""
    work = tempfile.mkdtemp(prefix="megabatch-overhead-")
    db = os.path.join(work, "megabatch.db")
    address = "127.0.0.1:%d" % free_port()
    log = open(os.path.join(work, "processes.log"), "w")
    procs = [subprocess.Popen([os.path.join(args.build, "server/megabatch-coordinator"),
                               "--listen", address, "--db", db, "--metrics-listen", ""],
                              stdout=log, stderr=log),
             subprocess.Popen([os.path.join(args.build, "worker/daemon/megabatch-worker"),
                               "--coordinator", address, "--slots", str(args.slots),
                               "--threads-per-slot", "1", "--host-claims", "",
                               "--work-dir", os.path.join(work, "worker")] + worker_flags,
                              stdout=log, stderr=log)]
    cli = [os.path.join(args.build, "cli/megabatch"), "--server", address]
    try:
        # Timing starts once the worker is registered and idle.
        deadline = time.monotonic() + 60
        while "alive" not in subprocess.run(cli + ["workers"], capture_output=True,
                                            text=True).stdout:
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not register; see " + log.name)
            time.sleep(0.1)
        spec = os.path.join(work, "spec.yaml")
        with open(spec, "w") as f:
            f.write("name: overhead\nmodel: {type: mlp, hidden: [64]}\n"
                    "optimizers: [{name: adamw}]\nbatch_sizes: [%d]\nbase: {lr: 0.002}\n"
                    "seeds: [%s]\nbudget: {steps: %d}\neval_every_steps: %d\n"
                    % (BATCH, ", ".join(str(i) for i in range(trials)), steps, steps))
        start = time.monotonic()
        subprocess.run(cli + ["submit", spec, "--wait"], check=True, capture_output=True)
        wall = time.monotonic() - start
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return wall, db


def measure(args, trials, steps, worker_flags):
    wall, db = run_sweep(args, trials, steps, worker_flags)
    con = sqlite3.connect(db)
    # Pure training time: each step's batch / samples_per_second, summed.
    train = con.execute("SELECT sum(? / value) FROM metrics "
                        "WHERE name = 'samples_per_second' AND value > 0",
                        (float(BATCH),)).fetchone()[0]
    done = con.execute("SELECT count(*) FROM trials WHERE state = 'completed'").fetchone()[0]
    if done != trials:
        raise SystemExit("only %d of %d trials completed (%s)" % (done, trials, db))
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
