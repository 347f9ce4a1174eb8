#!/usr/bin/python3
"""Reference values for megabatch's LAMB and LARS, computed independently
from docs/method.md in float64 with numpy.

Writes reference_values.json next to this file: for each case the options,
the float32-exact initial tensors, the gradients and lr of every step, and the
expected tensors after every step. optim_reference_test.cc replays each case
through megabatch::optim::Lamb / Lars in float32 (fused and generic paths)
and in float64. Run with Debian's python3 (python3-numpy): /usr/bin/python3 tests/worker/optim/reference.py
"""
import json
import os

import numpy as np

RNG = np.random.default_rng(20260)


def f32(a):
    """Rounds to float32 and back, so C++ float32 inputs are exact."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def tensor(*shape, scale=1.0):
    return f32(RNG.standard_normal(shape) * scale)


LAMB_DEFAULTS = dict(betas=[0.9, 0.999], eps=1e-6, weight_decay=0.01,
                     bias_correction=True, always_adapt=True, trust_clip=False,
                     max_grad_norm=0.0)
LARS_DEFAULTS = dict(momentum=0.9, weight_decay=5e-4, trust_coefficient=0.001,
                     eps=1e-9, nesterov=False)


def lamb_run(ws, grads, lrs, o):
    ws = [w.copy() for w in ws]
    m = [np.zeros_like(w) for w in ws]
    v = [np.zeros_like(w) for w in ws]
    b1, b2 = o["betas"]
    out = []
    for t, (gs, lr) in enumerate(zip(grads, lrs), start=1):
        gs = [g.copy() for g in gs]
        if o["max_grad_norm"] > 0:
            total = np.sqrt(sum(float(np.sum(g * g)) for g in gs))
            if total > o["max_grad_norm"]:
                gs = [g * (o["max_grad_norm"] / total) for g in gs]
        for i, (w, g) in enumerate(zip(ws, gs)):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            if o["bias_correction"]:
                mh, vh = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            else:
                mh, vh = m[i], v[i]
            u = mh / (np.sqrt(vh) + o["eps"]) + o["weight_decay"] * w
            adapt = o["always_adapt"] or o["weight_decay"] != 0
            wn, un = np.linalg.norm(w), np.linalg.norm(u)
            r = wn / un if (adapt and wn > 0 and un > 0) else 1.0
            if o["trust_clip"]:
                r = min(r, 1.0)
            ws[i] = w - lr * r * u
        out.append([w.copy() for w in ws])
    return out


def lars_run(ws, grads, lrs, o):
    ws = [w.copy() for w in ws]
    buf = [np.zeros_like(w) for w in ws]
    mu, wd, eta, eps = (o["momentum"], o["weight_decay"],
                        o["trust_coefficient"], o["eps"])
    out = []
    for gs, lr in zip(grads, lrs):
        for i, (w, g) in enumerate(zip(ws, gs)):
            wn, gn = np.linalg.norm(w), np.linalg.norm(g)
            local = eta * wn / (gn + wd * wn + eps) if (wn > 0 and gn > 0) else 1.0
            step = lr * local * (g + wd * w)
            buf[i] = mu * buf[i] + step
            ws[i] = w - (mu * buf[i] + step if o["nesterov"] else buf[i])
        out.append([w.copy() for w in ws])
    return out


def case(name, optimizer, options, ws, steps, lrs, grads=None):
    grads = grads or [[tensor(*w.shape) for w in ws] for _ in range(steps)]
    defaults = LAMB_DEFAULTS if optimizer == "lamb" else LARS_DEFAULTS
    o = dict(defaults, **options)
    run = lamb_run if optimizer == "lamb" else lars_run
    expected = run(ws, grads, lrs, o)
    as_list = lambda ts: [{"shape": list(t.shape), "values": t.ravel().tolist()}
                          for t in ts]
    return {"name": name, "optimizer": optimizer, "options": o,
            "params": as_list(ws), "lrs": lrs,
            "grads": [as_list(gs) for gs in grads],
            "expected": [as_list(ws) for ws in expected]}


def main():
    cases = []
    mat_bias = lambda: [tensor(4, 3), tensor(3)]
    cases.append(case("lamb_first_step", "lamb", {}, mat_bias(), 1, [1e-3]))
    cases.append(case("lamb_five_steps", "lamb", {}, mat_bias(), 5, [2e-3] * 5))
    cases.append(case("lamb_no_bias_correction", "lamb",
                      {"bias_correction": False}, mat_bias(), 3, [1e-3] * 3))
    cases.append(case("lamb_zero_weight_decay", "lamb", {"weight_decay": 0.0},
                      mat_bias(), 3, [1e-2] * 3))
    cases.append(case("lamb_large_weight_decay", "lamb", {"weight_decay": 0.5},
                      mat_bias(), 3, [1e-2] * 3))
    zero = f32(np.zeros(5))
    cases.append(case("lamb_zero_weight_and_zero_grad", "lamb", {},
                      [zero, tensor(5), zero.copy()], 2, [1e-2] * 2,
                      grads=[[tensor(5), zero, zero]] * 2))
    cases.append(case("lamb_global_clip", "lamb", {"max_grad_norm": 0.5},
                      [tensor(6, 2), tensor(7)], 3, [1e-2] * 3))
    cases.append(case("lamb_clip_inactive", "lamb", {"max_grad_norm": 1e6},
                      [tensor(6, 2), tensor(7)], 2, [1e-2] * 2))
    # Large weights and a small direction: r >> 1 unless trust_clip.
    big = [tensor(4, 4, scale=100.0)]
    cases.append(case("lamb_trust_clip", "lamb", {"trust_clip": True}, big, 2,
                      [1e-3] * 2))
    cases.append(case("lamb_apex_no_adapt", "lamb",
                      {"always_adapt": False, "weight_decay": 0.0},
                      mat_bias(), 3, [1e-3] * 3))
    cases.append(case("lars_lr_changes", "lars", {}, mat_bias(), 5,
                      [0.1, 0.4, 0.05, 1.0, 0.2]))
    cases.append(case("lars_nesterov", "lars", {"nesterov": True}, mat_bias(),
                      4, [0.5, 1.0, 0.25, 0.75]))
    cases.append(case("lars_no_momentum_big_decay", "lars",
                      {"momentum": 0.0, "weight_decay": 0.1,
                       "trust_coefficient": 0.02}, mat_bias(), 3, [1.0] * 3))
    cases.append(case("lars_zero_weight_and_zero_grad", "lars", {},
                      [zero, tensor(5), zero.copy()], 2, [0.1] * 2,
                      grads=[[tensor(5), zero, zero]] * 2))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "reference_values.json")
    with open(path, "w") as f:
        json.dump({"generator": "tests/worker/optim/reference.py",
                   "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
