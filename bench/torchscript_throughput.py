#!/usr/bin/python3
"""Your own model against the built-in (docs/models.md): what TorchScript and
the .npy data path cost, all as ratios measured in the same run.

1. Training samples/s of a TorchScript MLP equal to the built-in `mlp`
   ([512, 512] on Fashion-MNIST; the same float32 images, as an .npy file)
   against the built-in, at batch 128 and 4,096, one thread, LAMB. The two
   run alternately, --repeats times each; each run's median step rate over
   its steps after the first 3 is taken, then the median over runs.
   Goal: >= 0.9x.
2. The start-up of a trial (exec to its first step's metrics): TorchScript
   against the built-in mlp.
3. Submitting a sweep of a 100 MB module (`megabatch submit`: the upload,
   and two small data files' hashes) against submitting the same sweep's built-in
   twin, through a real coordinator on loopback, and against hashing the
   module file once in this process.

  /usr/bin/python3 bench/torchscript_throughput.py [--repeats 3] [--steps 30]
"""
import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
from fashion_mnist_resnet import read_idx  # noqa: E402  (Fashion-MNIST's idx files)

EXPORT = r"""
import sys, torch, torch.nn as nn
out, width_in, hidden = sys.argv[1], int(sys.argv[2]), [int(h) for h in sys.argv[3:]]
layers, w = [nn.Flatten()], width_in
for h in hidden:
    layers += [nn.Linear(w, h), nn.ReLU()]
    w = h
layers.append(nn.Linear(w, 10))
torch.manual_seed(0)
torch.jit.save(torch.jit.script(nn.Sequential(*layers)), out)
"""


def trainer_run(trainer, config, work, name):
    """(median samples/s after the first 3 steps, seconds to the first step)."""
    path = os.path.join(work, name + ".json")
    with open(path, "w") as f:
        json.dump(config, f)
    start = time.monotonic()
    first, rates = None, []
    proc = subprocess.Popen([trainer, "--config", path], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1",
                                     MEGABATCH_CACHE_DIR=os.path.join(work, "cache")))
    for line in proc.stdout:
        d = json.loads(line)
        m = d.get("metrics", {})
        if "samples_per_second" in m:
            if first is None:
                first = time.monotonic() - start
            if d["step"] > 3:
                rates.append(m["samples_per_second"])
        if d.get("event") == "failed":
            raise SystemExit(name + ": " + d.get("message", ""))
    proc.wait()
    return statistics.median(rates), first


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    trainer = os.path.join(args.build, "worker/trainer/megabatch-trainer")
    work = tempfile.mkdtemp(prefix="megabatch-torchscript-")
    model = os.path.join(work, "mlp.pt")
    subprocess.run(["/usr/bin/python3", "-c", EXPORT, model, "784", "512", "512"], check=True)
    images = read_idx("train-images-idx3-ubyte.gz").astype(np.float32)
    images = ((images / 255.0 - 0.2860) / 0.3530).reshape(-1, 1, 28, 28)
    labels = read_idx("train-labels-idx1-ubyte.gz").astype(np.int64)
    files = {}
    for split, rows in (("train", slice(0, 55000)), ("val", slice(55000, 60000))):
        for key, array in (("x", images[rows]), ("y", labels[rows])):
            files[split + "_" + key] = os.path.join(work, split + "_" + key + ".npy")
            np.save(files[split + "_" + key], np.ascontiguousarray(array))
    own = {"model": {"type": "torchscript", "path": model},
           "dataset": {"kind": "classification",
                       "train": {"x": files["train_x"], "y": files["train_y"]},
                       "val": {"x": files["val_x"], "y": files["val_y"]}}}
    built_in = {"model": {"type": "mlp", "hidden": [512, 512]}}
    # Part 3's data: small, so that the submit times the module's upload.
    small = {}
    for key, array in (("x", images[:2000]), ("y", labels[:2000])):
        small[key] = os.path.join(work, "small_" + key + ".npy")
        np.save(small[key], np.ascontiguousarray(array))
    small_data = {"kind": "classification", "train": dict(small), "val_fraction": 0.1}

    print("1. training samples/s, TorchScript MLP / built-in mlp [512, 512], 1 thread, LAMB")
    print("%8s %14s %14s %8s" % ("batch", "built-in", "torchscript", "ratio"))
    startup = {"built-in": [], "torchscript": []}
    for batch in (128, 4096):
        rates = {"built-in": [], "torchscript": []}
        for _ in range(args.repeats):
            for name, spec in (("built-in", built_in), ("torchscript", own)):
                config = dict(spec, seed=0, optimizer={"name": "lamb"}, batch_size=batch,
                              lr=0.01, budget={"steps": args.steps},
                              eval_every_steps=10 ** 9, threads=1)
                rate, first = trainer_run(trainer, config, work, name)
                rates[name].append(rate)
                startup[name].append(first)
        b, t = statistics.median(rates["built-in"]), statistics.median(rates["torchscript"])
        print("%8d %14.0f %14.0f %7.2fx" % (batch, b, t, t / b))

    b, t = statistics.median(startup["built-in"]), statistics.median(startup["torchscript"])
    print("\n2. start-up (exec to the first step), median of %d: built-in %.2f s, "
          "torchscript %.2f s: %.2fx" % (len(startup["built-in"]), b, t, t / b))

    # 3. Submit a 100 MB module through a real coordinator.
    big = os.path.join(work, "big.pt")
    subprocess.run(["/usr/bin/python3", "-c", EXPORT, big, "784", "5000", "4200"], check=True)
    size = os.path.getsize(big)
    address = "127.0.0.1:%d" % free_port()
    coordinator = subprocess.Popen(
        [os.path.join(args.build, "server/megabatch-coordinator"), "--listen", address,
         "--db", os.path.join(work, "bench.db"), "--data-root", "/usr/share/datasets",
         "--data-root", work],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cli = os.path.join(args.build, "cli/megabatch")
    try:
        def submit(spec, name):
            path = os.path.join(work, name + ".json")
            with open(path, "w") as f:
                json.dump(dict(spec, name=name, optimizers=[{"name": "lamb"}], batch_sizes=[128],
                               base={"lr": 0.01}, budget={"steps": 1}), f)
            start = time.monotonic()
            subprocess.run([cli, "--server", address, "submit", path], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return time.monotonic() - start
        submit(built_in, "warm-up")
        baseline = statistics.median(submit(built_in, "built-in-%d" % i) for i in range(3))
        # A fresh copy each time, so that each submit uploads (the store
        # keeps one copy of equal bytes).
        uploads = []
        for i in range(3):
            with open(big, "r+b") as f:
                f.seek(-1, os.SEEK_END)
                f.write(bytes([i]))
            uploads.append(submit({"model": {"type": "torchscript", "path": big},
                                   "dataset": small_data}, "own-%d" % i))
        upload = statistics.median(uploads)
        start = time.monotonic()
        h = hashlib.sha256()
        with open(big, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        hashing = time.monotonic() - start
    finally:
        coordinator.terminate()
        coordinator.wait()
    print("\n3. submit of a %.0f MB module (its upload, and 2 small data files' hashes; "
          "median of 3): "
          "%.2f s, %.0f MB/s; %.1fx a built-in spec's submit (%.2f s), %.1fx hashing "
          "the module once in-process (%.2f s)"
          % (size / 1e6, upload, size / 1e6 / upload, upload / baseline, baseline,
             upload / hashing, hashing))


if __name__ == "__main__":
    main()
