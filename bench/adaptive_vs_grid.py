#!/usr/bin/python3
"""The same large-batch question answered by a full grid and by an adaptive
study, through the real service, side by side.

Runs a grid spec (default experiments/fmnist_bcrit_grid.yaml: 6 batch sizes x
5 lrs) and an adaptive spec asking the same question (default
experiments/fmnist_bcrit_adaptive.yaml: the planner chooses batch sizes and
lrs) on one coordinator and worker (a one-thread slot per core), then prints:
  - the samples each trained (every trial, probe and search runs included),
  - B_crit from each (S(b) = S_min (1 + B_crit / b) fitted to steps to target),
  - the best lr at each batch size from each.
The goal the adaptive study is held to: B_crit within 25% of the grid's, at
no more than 40% of its samples.

  /usr/bin/python3 bench/adaptive_vs_grid.py [--grid SPEC --adaptive SPEC]
      [--out experiments/results/adaptive_vs_grid]

The defaults take about 30 s on 2 cores; experiments/fmnist_bcrit_*_full.yaml
(two optimizers, a 7 x 5 grid, 10 epochs) about half an hour.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from megabatch_service import Service  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def study(args, name):
    spec = os.path.abspath(getattr(args, name))
    with Service(args.build, args.slots) as service:
        wall = service.submit_and_wait(spec)
        report = json.loads(service.cli("-o", "json", "report", "1"))
        markdown = service.cli("-o", "md", "report", "1")
        trials_csv = service.cli("-o", "csv", "trials", "1")
        samples, trials = service.query(
            "SELECT sum(samples), count(*) FROM trial_summary WHERE sweep_id = 1")[0]
        by_phase = service.query(
            "SELECT coalesce(phase, 'grid'), count(*), sum(samples) FROM trial_summary "
            "WHERE sweep_id = 1 GROUP BY 1 ORDER BY min(trial_index)")
    if args.out:
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        shutil.copy(spec, os.path.join(d, "spec.yaml"))
        with open(os.path.join(d, "report.md"), "w") as f:
            f.write(markdown)
        with open(os.path.join(d, "report.json"), "w") as f:
            json.dump(report, f, indent=2)
        with open(os.path.join(d, "trials.csv"), "w") as f:
            f.write(trials_csv)
    fits = {f["optimizer"]: f for f in report["critical_batch"]}
    best = {(row["optimizer"], row["batch_size"]): row["best_lr"] for row in report["rows"]
            if row.get("steps_to_target") is not None}
    return {"wall": wall, "samples": samples, "trials": trials, "by_phase": by_phase,
            "fits": fits, "best_lr": best, "predicted": report.get("predicted_b_crit")}


def fmt(v, spec="%.0f"):
    return "-" if v is None else spec % v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--slots", type=int, default=os.cpu_count())
    ap.add_argument("--grid", default=os.path.join(ROOT, "experiments/fmnist_bcrit_grid.yaml"))
    ap.add_argument("--adaptive",
                    default=os.path.join(ROOT, "experiments/fmnist_bcrit_adaptive.yaml"))
    ap.add_argument("--out", default="", help="write each study's outputs and the comparison here")
    args = ap.parse_args()
    results = {name: study(args, name) for name in ("grid", "adaptive")}
    g, a = results["grid"], results["adaptive"]
    lines = ["| | grid | adaptive |", "| --- | --- | --- |",
             "| trials | %d | %d |" % (g["trials"], a["trials"]),
             "| samples trained | %s | %s (%.0f%% of the grid's) |"
             % (fmt(g["samples"]), fmt(a["samples"]), 100.0 * a["samples"] / g["samples"]),
             "| wall time (s) | %.0f | %.0f |" % (g["wall"], a["wall"]),
             "| the probe's prediction (B_simple) | | %s |" % fmt(a["predicted"])]
    met_bcrit = True
    for opt in g["fits"]:
        gf, af = g["fits"][opt], a["fits"].get(opt, {})
        ratio = (af["b_crit"] / gf["b_crit"]) if af.get("b_crit") and gf.get("b_crit") else None
        met_bcrit = met_bcrit and ratio is not None and abs(ratio - 1) <= 0.25
        lines.append("| %s B_crit (95%% interval) | %s (%s-%s) | %s (%s-%s); x%s the grid's |"
                     % (opt, fmt(gf.get("b_crit")), fmt(gf.get("b_crit_low")),
                        fmt(gf.get("b_crit_high")), fmt(af.get("b_crit")),
                        fmt(af.get("b_crit_low")), fmt(af.get("b_crit_high")),
                        fmt(ratio, "%.2f")))
    lines += ["", "Samples by phase (adaptive): " + ", ".join(
        "%s %d trials, %d samples" % row for row in a["by_phase"]), "",
        "| optimizer | batch size | best lr (grid) | best lr (adaptive) |",
        "| --- | --- | --- | --- |"]
    for key in sorted(set(g["best_lr"]) | set(a["best_lr"])):
        lines.append("| %s | %d | %s | %s |" % (key[0], key[1], fmt(g["best_lr"].get(key), "%.4g"),
                                               fmt(a["best_lr"].get(key), "%.4g")))
    met_samples = a["samples"] <= 0.4 * g["samples"]
    lines += ["", "Goal: B_crit within 25%% of the grid's (%s), at <= 40%% of its samples (%s)."
              % ("met" if met_bcrit else "NOT met", "met" if met_samples else "NOT met")]
    text = "\n".join(lines)
    print(text)
    if args.out:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        with open(os.path.join(args.out, "comparison.md"), "w") as f:
            f.write("# Adaptive study vs full grid (bench/adaptive_vs_grid.py)\n\n")
            f.write("commit %s, %s, %d cores, one worker of %d one-thread slots\n"
                    "specs: %s, %s\n\n"
                    % (commit, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       os.cpu_count(), args.slots, os.path.relpath(args.grid, ROOT),
                       os.path.relpath(args.adaptive, ROOT)))
            f.write(text + "\n")


if __name__ == "__main__":
    main()
