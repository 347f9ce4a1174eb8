#!/usr/bin/python3
"""Orchestration overhead of short trials through the real service.

Starts a coordinator and one worker (a one-thread slot per core) on loopback,
runs a sweep of N short MLP trials, and compares the sweep's wall time x
slots with the sum of the trials' pure training time (the per-step times
the trainers logged, evaluation excluded). The difference is what the
service costs: leasing, trainer start-up (LibTorch load, dataset decode),
evaluation, reporting, and idle slots at the end. Ray Tune publishes 14% on
10,000 one-second trials for comparison.

  /usr/bin/python3 bench/orchestration_overhead.py [--trials 200] [--steps 400]
"""
import argparse
import os
import socket
import sqlite3
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--steps", type=int, default=400, help="steps per trial (batch 256)")
    ap.add_argument("--slots", type=int, default=os.cpu_count())
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="megabatch-overhead-")
    db = os.path.join(work, "megabatch.db")
    address = "127.0.0.1:%d" % free_port()
    log = open(os.path.join(work, "processes.log"), "w")
    procs = [subprocess.Popen([os.path.join(args.build, "server/megabatch-coordinator"),
                               "--listen", address, "--db", db, "--metrics-listen", ""],
                              stdout=log, stderr=log),
             subprocess.Popen([os.path.join(args.build, "worker/daemon/megabatch-worker"),
                               "--coordinator", address, "--slots", str(args.slots),
                               "--threads-per-slot", "1", "--work-dir",
                               os.path.join(work, "worker")], stdout=log, stderr=log)]
    cli = [os.path.join(args.build, "cli/megabatch"), "--server", address]
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(cli + ["workers"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("the coordinator did not come up; see " + log.name)
            time.sleep(0.1)
        spec = os.path.join(work, "spec.yaml")
        with open(spec, "w") as f:
            f.write("name: overhead\nmodel: {type: mlp, hidden: [64]}\n"
                    "optimizers: [{name: adamw}]\nbatch_sizes: [256]\nbase: {lr: 0.002}\n"
                    "seeds: [%s]\nbudget: {steps: %d}\neval_every_steps: %d\n"
                    % (", ".join(str(i) for i in range(args.trials)), args.steps, args.steps))
        start = time.monotonic()
        subprocess.run(cli + ["submit", spec, "--wait"], check=True, capture_output=True)
        wall = time.monotonic() - start
    finally:
        for p in procs:
            p.kill()
            p.wait()
    con = sqlite3.connect(db)
    # Pure training time: each step's batch / samples_per_second, summed.
    train = con.execute("SELECT sum(256.0 / value) FROM metrics "
                        "WHERE name = 'samples_per_second' AND value > 0").fetchone()[0]
    attempts = con.execute("SELECT sum(finished_at - started_at), count(*) FROM trials "
                           "WHERE state = 'completed'").fetchone()
    per_trial = train / args.trials
    overhead = 1 - train / (wall * args.slots)
    print(f"{args.trials} trials of {args.steps} steps (batch 256) on {args.slots} slots")
    print(f"  wall {wall:.1f} s x {args.slots} slots = {wall * args.slots:.1f} slot-seconds")
    print(f"  pure training {train:.1f} s ({per_trial:.2f} s per trial); "
          f"trainer processes alive {attempts[0]:.1f} s in all")
    print(f"  orchestration overhead {100 * overhead:.1f}% (Ray Tune publishes 14% on 1-s trials)")
    print(f"  per trial: {(wall * args.slots - train) / args.trials:.2f} s beside training "
          f"({(attempts[0] - train) / args.trials:.2f} s of it inside the trainer process)")


if __name__ == "__main__":
    main()
