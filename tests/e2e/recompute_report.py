#!/usr/bin/python3
"""Recomputes a sweep's report from the raw `metrics` table, independently of
the coordinator's SQL views and C++ report code, and compares it with what
`megabatch -o json report N` printed. Exits 1, naming every disagreement.

It follows docs/method.md: steps to target interpolated linearly in the
target metric between the two evaluations that bracket it; per (optimizer,
batch, lr) the mean over seeds when every seed reached the target; the best
lr is the one with the fewest steps, then no divergence, then the best value
of the target metric, then the smaller lr; efficiency S(b0)·b0 / (S(b)·b);
S(b) = S_min·(1 + B_crit/b) fitted by least squares weighted 1/S^2.

  recompute_report.py --db megabatch.db --sweep 1 --report report.json
"""
import argparse
import json
import math
import sqlite3
import sys
from collections import defaultdict


def crossing(evals, target, higher):
    """evals: [(samples, value)] in order. The interpolated samples, or None."""
    before = None
    for samples, value in evals:
        if value is not None and (value >= target if higher else value <= target):
            if before is None or before[1] is None or before[1] == value:
                return samples
            s0, v0 = before
            return s0 + (target - v0) / (value - v0) * (samples - s0)
        before = (samples, value)
    return None


def fit(points):
    """Weighted least squares of S = a + c/b with weights 1/S^2."""
    sw = sx = sy = sxx = sxy = 0.0
    for b, s in points:
        w, x = 1 / (s * s), 1 / b
        sw += w
        sx += w * x
        sy += w * s
        sxx += w * x * x
        sxy += w * x * s
    d = sw * sxx - sx * sx
    c = (sw * sxy - sx * sy) / d
    a = (sy - c * sx) / sw
    r2 = None
    if len(points) >= 3:
        mean = sy / sw
        res = sum((s - a - c / b) ** 2 / (s * s) for b, s in points)
        tot = sum((s - mean) ** 2 / (s * s) for b, s in points)
        r2 = 1 - res / tot if tot > 0 else 1.0
    return a, c / a, r2


def recompute(db, sweep):
    spec = json.loads(db.execute("SELECT spec_json FROM sweeps WHERE id = ?", (sweep,)).fetchone()[0])
    target = spec.get("target")
    metric = target["metric"] if target else "val_accuracy"
    higher = metric.endswith("accuracy")
    per_lr = defaultdict(list)
    for tid, opt, batch, lr, state in db.execute(
            "SELECT id, optimizer, batch_size, lr, state FROM trials WHERE sweep_id = ? ORDER BY id",
            (sweep,)):
        evals = [(step * batch, value) for step, value in db.execute(
            "SELECT step, value FROM metrics WHERE trial_id = ? AND name = ? ORDER BY step",
            (tid, metric))]
        values = [v for _, v in evals if v is not None]
        best = (max(values) if higher else min(values)) if values else None
        reached = crossing(evals, target["value"], higher) if target else None
        per_lr[(opt, batch, lr)].append((reached, best, state == "diverged"))
    rows = {}
    for (opt, batch, lr), trials in per_lr.items():
        steps = None
        if all(r is not None for r, _, _ in trials):
            steps = sum(r for r, _, _ in trials) / len(trials) / batch
        bests = [b for _, b, _ in trials if b is not None]
        best = sum(bests) / len(bests) if bests else None
        diverged = sum(d for _, _, d in trials)
        key = (steps is None, steps or 0, diverged > 0, best is None,
               0 if best is None else (-best if higher else best), lr)
        if (opt, batch) not in rows or key < rows[(opt, batch)][0]:
            rows[(opt, batch)] = (key, {"best_lr": lr, "steps_to_target": steps,
                                        "samples_to_target": steps * batch if steps else None})
    order = defaultdict(list)
    for (opt, batch), (_, row) in sorted(rows.items(), key=lambda kv: kv[0][1]):
        order[opt].append((batch, row))
    fits = {}
    for opt, batches in order.items():
        reached = [(b, r["steps_to_target"]) for b, r in batches if r["steps_to_target"]]
        if reached:
            b0, s0 = reached[0]
            for b, r in batches:
                r["scaling_efficiency"] = (s0 * b0 / (r["steps_to_target"] * b)
                                           if r["steps_to_target"] else None)
        if len(reached) >= 2:
            a, b_crit, r2 = fit(reached)
            if a > 0 and b_crit > 0:
                fits[opt] = {"s_min": a, "b_crit": b_crit, "r_squared": r2}
    return {(opt, b): r for opt, bs in order.items() for b, r in bs}, fits


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--sweep", type=int, required=True)
    ap.add_argument("--report", required=True, help="the output of megabatch -o json report")
    args = ap.parse_args()
    db = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    rows, fits = recompute(db, args.sweep)
    report = json.load(open(args.report))
    problems = []
    if len(report["rows"]) != len(rows):
        problems.append(f"{len(report['rows'])} report rows, {len(rows)} recomputed")
    for r in report["rows"]:
        mine = rows.get((r["optimizer"], r["batch_size"]))
        if mine is None:
            problems.append(f"no recomputed row for {r['optimizer']} b={r['batch_size']}")
            continue
        for field in ("best_lr", "steps_to_target", "samples_to_target", "scaling_efficiency"):
            if not close(r.get(field), mine.get(field)):
                problems.append(f"{r['optimizer']} b={r['batch_size']} {field}: "
                                f"report {r.get(field)}, recomputed {mine.get(field)}")
    for f in report["critical_batch"]:
        mine = fits.get(f["optimizer"], {})
        for field in ("s_min", "b_crit", "r_squared"):
            if not close(f.get(field), mine.get(field)):
                problems.append(f"{f['optimizer']} {field}: report {f.get(field)}, "
                                f"recomputed {mine.get(field)}")
    for p in problems:
        print(p)
    reached = sum(1 for r in rows.values() if r["steps_to_target"])
    print(f"{len(rows)} rows ({reached} reached the target), {len(fits)} fits: "
          f"{'agree' if not problems else 'DISAGREE'}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
