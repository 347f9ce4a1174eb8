#!/usr/bin/python3
"""The ingestion benchmark's baseline: the same load as bench/ingest_bench.cc
(N workers, each reporting intermediate values of its own trial, for a fixed
time) through Optuna 3.1's SQLite storage, one trial.report(value, step) per
value, as Optuna's pruning integrations report. Prints points/s on stdout.

Usage: /usr/bin/python3 bench/optuna_ingest.py --storage sqlite:///FILE
       [--workers N] [--seconds S]
"""
import argparse
import sys
import threading
import time

import optuna


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", required=True)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=args.storage, study_name="ingest")
    deadline = time.monotonic() + args.seconds
    counts = [0] * args.workers
    errors = []

    def work(i):
        trial = study.ask()
        step = 0
        while time.monotonic() < deadline:
            step += 1
            try:
                trial.report(1.0 / step, step)
                counts[i] += 1
            except Exception as e:  # SQLite busy under concurrent writers
                errors.append(repr(e))

    start = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    print(f"{sum(counts) / elapsed:.1f}")
    print(f"optuna: {sum(counts)} values in {elapsed:.1f} s, {len(errors)} errors",
          file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
