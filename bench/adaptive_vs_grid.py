#!/usr/bin/python3
"""The same large-batch question answered by a full grid and by an adaptive
study, through the real service, side by side.

Runs experiments/fmnist_bcrit_grid.yaml (6 batch sizes x 5 lrs) and
experiments/fmnist_bcrit_adaptive.yaml (the planner chooses batch sizes and
lrs) on one coordinator and worker (a one-thread slot per core), then prints:
  - the samples each trained (every trial, probe and search runs included),
  - B_crit from each (S(b) = S_min (1 + B_crit / b) fitted to steps to target),
  - the best lr at each batch size from each.
The goal the adaptive study is held to: B_crit within 25% of the grid's, at
no more than 40% of its samples.

  /usr/bin/python3 bench/adaptive_vs_grid.py [--out experiments/results/adaptive_vs_grid]
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
SPECS = {"grid": "experiments/fmnist_bcrit_grid.yaml",
         "adaptive": "experiments/fmnist_bcrit_adaptive.yaml"}


def study(args, name):
    spec = os.path.join(ROOT, SPECS[name])
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
    fit = report["critical_batch"][0] if report["critical_batch"] else {}
    best = {row["batch_size"]: row["best_lr"] for row in report["rows"]
            if row.get("steps_to_target") is not None}
    return {"wall": wall, "samples": samples, "trials": trials, "by_phase": by_phase,
            "b_crit": fit.get("b_crit"), "b_crit_low": fit.get("b_crit_low"),
            "b_crit_high": fit.get("b_crit_high"), "best_lr": best,
            "predicted": report.get("predicted_b_crit")}


def fmt(v, spec="%.0f"):
    return "-" if v is None else spec % v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--slots", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="", help="write each study's outputs and the comparison here")
    args = ap.parse_args()
    results = {name: study(args, name) for name in ("grid", "adaptive")}
    g, a = results["grid"], results["adaptive"]
    lines = ["| | grid | adaptive |", "| --- | --- | --- |",
             "| trials | %d | %d |" % (g["trials"], a["trials"]),
             "| samples trained | %s | %s (%.0f%% of the grid's) |"
             % (fmt(g["samples"]), fmt(a["samples"]), 100.0 * a["samples"] / g["samples"]),
             "| wall time (s) | %.0f | %.0f |" % (g["wall"], a["wall"]),
             "| B_crit (95%% interval) | %s (%s-%s) | %s (%s-%s) |"
             % (fmt(g["b_crit"]), fmt(g["b_crit_low"]), fmt(g["b_crit_high"]),
                fmt(a["b_crit"]), fmt(a["b_crit_low"]), fmt(a["b_crit_high"])),
             "| the probe's prediction (B_simple) | | %s |" % fmt(a["predicted"])]
    ratio = (a["b_crit"] / g["b_crit"]) if a["b_crit"] and g["b_crit"] else None
    lines.append("| B_crit adaptive / grid | | %s |" % fmt(ratio, "%.2f"))
    lines += ["", "Samples by phase (adaptive): " + ", ".join(
        "%s %d trials, %d samples" % row for row in a["by_phase"]), "",
        "| batch size | best lr (grid) | best lr (adaptive) |", "| --- | --- | --- |"]
    for b in sorted(set(g["best_lr"]) | set(a["best_lr"])):
        lines.append("| %d | %s | %s |" % (b, fmt(g["best_lr"].get(b), "%.4g"),
                                          fmt(a["best_lr"].get(b), "%.4g")))
    met_samples = a["samples"] <= 0.4 * g["samples"]
    met_bcrit = ratio is not None and abs(ratio - 1) <= 0.25
    lines += ["", "Goal: B_crit within 25%% of the grid's (%s), at <= 40%% of its samples (%s)."
              % ("met" if met_bcrit else "NOT met", "met" if met_samples else "NOT met")]
    text = "\n".join(lines)
    print(text)
    if args.out:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        with open(os.path.join(args.out, "comparison.md"), "w") as f:
            f.write("# Adaptive study vs full grid (bench/adaptive_vs_grid.py)\n\n")
            f.write("commit %s, %s, %d cores, one worker of %d one-thread slots\n\n"
                    % (commit, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       os.cpu_count(), args.slots))
            f.write(text + "\n")


if __name__ == "__main__":
    main()
