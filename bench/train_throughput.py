#!/usr/bin/python3
"""Training-throughput benchmark: megabatch-trainer against the same model,
optimizer and loop written in Python with Debian's python3-torch (the same
LibTorch 1.13), side by side in one run.

For each (model, batch) it alternates C++ and Python runs (--reps each),
takes every step's samples/s after --warmup steps, and prints the medians
and their ratio (C++ / Python). Both use AdamW, the same thread count, the
data preloaded as float tensors and a per-step index_select of a shuffled
order, and read the loss every step as the trainer does.

The trainer keeps freed memory for reuse (mallopt in its main(); see the
comment there). --python-mallopt makes this Python process do the same, to
separate that allocator setting from the rest of the C++/Python difference.

Usage: /usr/bin/python3 bench/train_throughput.py [--trainer PATH] [--threads N]
       [--reps N] [--only mlp|cnn] [--python-mallopt]
"""
import ctypes
import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530

CASES = [  # model, batch, steps
    ("mlp", 128, 150), ("mlp", 4096, 12),
    ("cnn", 128, 60), ("cnn", 4096, 4),
]
MODELS = {
    "mlp": {"type": "mlp", "hidden": [512, 512]},
    "cnn": {"type": "cnn", "channels": [32, 64], "hidden": [128]},
}


def load_images():
    with gzip.open(os.path.join(DATA, "train-images-idx3-ubyte.gz")) as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
    with gzip.open(os.path.join(DATA, "train-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    x = torch.from_numpy(raw.copy()).float().reshape(-1, 1, 28, 28)
    return (x / 255.0 - MEAN) / STD, torch.from_numpy(labels.astype(np.int64))


def keep_freed_memory():
    """This process's malloc as megabatch-trainer sets it (see its main())."""
    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # <malloc.h>
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, -1)):
        sys.exit("mallopt failed")


def python_model(spec):
    """The same layers megabatch's BuildModel() makes."""
    layers, width = [], 28 * 28
    if spec["type"] == "cnn":
        channels, side = 1, 28
        for out in spec["channels"]:
            layers += [torch.nn.Conv2d(channels, out, 3, padding=1, bias=False),
                       torch.nn.BatchNorm2d(out), torch.nn.ReLU(),
                       torch.nn.MaxPool2d(2)]
            channels, side = out, side // 2
        width = channels * side * side
    layers.append(torch.nn.Flatten())
    for h in spec["hidden"]:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    layers.append(torch.nn.Linear(width, 10))
    return torch.nn.Sequential(*layers)


def run_python(x, y, model_name, batch, steps, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = python_model(MODELS[model_name])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(x.shape[0], generator=gen)
    rates = []
    for step in range(steps):
        start = time.perf_counter()
        idx = order[step * batch % (x.shape[0] - batch):][:batch]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model(x.index_select(0, idx)), y.index_select(0, idx))
        loss.backward()
        loss.item()
        opt.step()
        rates.append(batch / (time.perf_counter() - start))
    return rates


def run_cpp(trainer, model_name, batch, steps, threads):
    config = {"seed": 0, "model": MODELS[model_name],
              "optimizer": {"name": "adamw"}, "batch_size": batch, "lr": 1e-3,
              "budget": {"steps": steps}, "eval_every_steps": 10 ** 9,
              "threads": threads}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(config, f)
        f.flush()
        out = subprocess.run([trainer, "--config", f.name], check=True,
                             capture_output=True, text=True).stdout
    rates = []
    for line in out.splitlines():
        row = json.loads(line)
        sps = row.get("metrics", {}).get("samples_per_second")
        if sps is not None:
            rates.append(sps)
    return rates


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser()
    parser.add_argument("--trainer", default=os.path.join(
        here, "..", "build", "worker", "trainer", "megabatch-trainer"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--only", choices=["mlp", "cnn"], help="one model only")
    parser.add_argument("--python-mallopt", action="store_true",
                        help="give the Python loop the trainer's malloc settings")
    args = parser.parse_args()
    if args.python_mallopt:
        keep_freed_memory()
    x, y = load_images()
    print(f"threads: {args.threads}; AdamW; samples/s are medians over steps "
          f"after {args.warmup} warm-up step(s), {args.reps} alternating runs each; "
          f"Python malloc {'as the trainer' if args.python_mallopt else 'default'}")
    print(f"{'model':5} {'batch':>6} {'C++ samples/s':>14} {'Python samples/s':>17} {'C++/Python':>11}")
    for model_name, batch, steps in CASES:
        if args.only and model_name != args.only:
            continue
        cpp, py = [], []
        for _ in range(args.reps):
            cpp += run_cpp(args.trainer, model_name, batch, steps, args.threads)[args.warmup:]
            py += run_python(x, y, model_name, batch, steps, args.threads)[args.warmup:]
        c, p = statistics.median(cpp), statistics.median(py)
        print(f"{model_name:5} {batch:>6} {c:>14.0f} {p:>17.0f} {c / p:>11.3f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
