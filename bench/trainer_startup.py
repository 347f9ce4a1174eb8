#!/usr/bin/python3
"""Trainer start-up: the time from exec to the first training step, and the
trainer's peak RSS, for each task, with the decoded-dataset cache cold and warm.

A trial's start-up is LibTorch's own initialisation (the floor, measured as
`megabatch-trainer --help`), reading the config, loading the data and building
the model. It is paid once per trial, so it bounds how short a trial can be
before the service costs more than the training (bench/orchestration_overhead.py).

  /usr/bin/python3 bench/trainer_startup.py [--repeats 5]

Each task runs --repeats times; the median is printed. "cold" runs with an
empty cache directory (the first trainer on a host: it decodes and writes the
cache), "warm" with the cache the cold run left (every later trainer);
warm/cold is the ratio of their start-up times, measured in the same run.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TASKS = {
    "mlp (Fashion-MNIST)": {"model": {"type": "mlp", "hidden": [64]}, "batch_size": 256},
    "cnn (Fashion-MNIST)": {"model": {"type": "cnn"}, "batch_size": 256},
    "char_lstm (fortunes)": {"model": {"type": "char_lstm"}, "batch_size": 32},
    "tiny_bert (fortunes)": {"model": {"type": "tiny_bert"}, "batch_size": 32},
}


def run(cmd, env):
    """Seconds from exec to the first step line (or to exit), and peak RSS in MiB."""
    start = time.monotonic()
    first = None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            text=True)
    for line in proc.stdout:
        if first is None and line.startswith('{"metrics"'):
            first = time.monotonic() - start
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0, 2) and cmd[-1] != "--help":
        raise SystemExit("%s failed with status %d" % (cmd, status))
    return (first if first is not None else time.monotonic() - start), usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    trainer = os.path.join(args.build, "worker/trainer/megabatch-trainer")
    work = tempfile.mkdtemp(prefix="megabatch-startup-")
    floor = [run([trainer, "--help"], os.environ)[0] for _ in range(args.repeats)]
    print("LibTorch floor (megabatch-trainer --help, exec to exit): %.3f s"
          % statistics.median(floor))
    print("%-22s %12s %12s %12s %12s %10s" % ("task", "cold s", "cold MiB", "warm s", "warm MiB",
                                                "warm/cold"))
    print("(s: exec to the first step's metrics; MiB: peak RSS of a 1-step trial, shared")
    print(" cache pages included)")
    for name, task in TASKS.items():
        config = dict(task, optimizer={"name": "adamw"}, lr=0.001, seed=1,
                      budget={"steps": 1}, threads=1)
        path = os.path.join(work, "config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        cold, warm = [], []
        for i in range(args.repeats):
            cache = tempfile.mkdtemp(prefix="cache-", dir=work)
            env = dict(os.environ, MEGABATCH_CACHE_DIR=cache, OMP_NUM_THREADS="1")
            cold.append(run([trainer, "--config", path], env))
            warm.append(run([trainer, "--config", path], env))
        med = lambda xs, k: statistics.median(x[k] for x in xs)
        print("%-22s %12.3f %12.0f %12.3f %12.0f %9.2fx" %
              (name, med(cold, 0), med(cold, 1), med(warm, 0), med(warm, 1),
               med(warm, 0) / med(cold, 0)))


if __name__ == "__main__":
    main()
