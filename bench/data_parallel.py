#!/usr/bin/python3
"""Data-parallel benchmark: the same trial on 1 and 2 ranks of
megabatch-trainer (torch c10d, Gloo over loopback TCP), in one run.

The model is an MLP large enough that the gradient all-reduce matters
(hidden [2048, 2048, 2048]: 10.0 M parameters, 40 MB of fp32 gradients per
step). Each configuration trains --steps steps at a global batch of --batch;
the figures are medians over the steps after --warmup:

  1 rank x 1 thread     the baseline: one core
  2 ranks x 1 thread    the same global batch split over two processes
  1 rank x 2 threads    the other way to use two cores, for reference

and it prints the step time of each, the scaling efficiency of 2 ranks
(throughput / (2 x the baseline's)), the all-reduce's share of the step, and
the all-reduce bandwidth (gradient bytes per rank / all-reduce seconds; with
2 ranks the ring's bus bandwidth equals it).

Usage: /usr/bin/python3 bench/data_parallel.py [--trainer PATH] [--batch B]
       [--steps N] [--warmup N]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile

HIDDEN = [2048, 2048, 2048]
PARAMS = 784 * 2048 + 2048 + 2 * (2048 * 2048 + 2048) + 2048 * 10 + 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(trainer, tmp, batch, steps, ranks, threads):
    """Rank 0's metrics per step: {step: {name: value}}."""
    base = {"trial_id": 1, "seed": 1, "model": {"type": "mlp", "hidden": HIDDEN},
            "optimizer": {"name": "lamb"}, "batch_size": batch, "micro_batch_size": batch // ranks,
            "lr": 0.001, "budget": {"steps": steps}, "eval_every_steps": 100000,
            "threads": threads}
    port = free_port()
    procs = []
    for rank in range(ranks):
        config = dict(base)
        if ranks > 1:
            config["distributed"] = {"world_size": ranks, "rank": rank, "host": "127.0.0.1",
                                     "port": port, "timeout_s": 120}
        path = os.path.join(tmp, f"r{ranks}t{threads}-{rank}.json")
        with open(path, "w") as f:
            json.dump(config, f)
        procs.append(subprocess.Popen([trainer, "--config", path], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True))
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode != 0 for p in procs):
        sys.exit(f"trainer failed ({ranks} ranks x {threads} threads)")
    curve = {}
    for line in outs[0].splitlines():
        d = json.loads(line)
        if "step" in d:
            curve.setdefault(d["step"], {}).update(d["metrics"])
    return curve


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainer", default=os.path.join(here, "..", "build", "worker", "trainer",
                                                      "megabatch-trainer"))
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    grad_bytes = 4 * PARAMS
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for ranks, threads in [(1, 1), (2, 1), (1, 2)]:
            curve = run(args.trainer, tmp, args.batch, args.steps, ranks, threads)
            steps = [m for s, m in sorted(curve.items()) if s > args.warmup]
            sps = statistics.median(m["samples_per_second"] for m in steps)
            ar = statistics.median(m["allreduce_seconds"] for m in steps) if ranks > 1 else 0.0
            results[(ranks, threads)] = (sps, ar)
            print(f"{ranks} rank(s) x {threads} thread(s): {sps:.0f} samples/s, "
                  f"step {1e3 * args.batch / sps:.1f} ms"
                  + (f", all-reduce {1e3 * ar:.1f} ms" if ranks > 1 else ""))
    base = results[(1, 1)][0]
    two, ar = results[(2, 1)]
    step = args.batch / two
    print(f"MLP {HIDDEN}, {PARAMS / 1e6:.1f} M parameters, global batch {args.batch}")
    print(f"2 ranks vs 1 rank (1 thread each): speedup {two / base:.2f}x, "
          f"scaling efficiency {two / (2 * base):.2f}")
    print(f"all-reduce: {grad_bytes / 1e6:.0f} MB per step in {1e3 * ar:.1f} ms "
          f"({ar / step:.0%} of the step), {grad_bytes / ar / 1e9:.2f} GB/s")
    print(f"1 rank x 2 threads vs 2 ranks x 1 thread: {results[(1, 2)][0] / two:.2f}x")


if __name__ == "__main__":
    main()
