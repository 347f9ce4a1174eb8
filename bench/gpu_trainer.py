#!/usr/bin/env python3
"""The trainer's GPU path on a CUDA machine: device selection, mixed
precision and speed, against the CPU in the same run.

Builds megabatch-trainer on its own (worker/trainer/CMakeLists.txt) against
the LibTorch that this machine's python3 torch carries, then runs short trials
of the image models on cuda in fp32, bf16 and fp16 and on the CPU, and prints
one table: samples/s (median over the steps after the first 5), the ratio to
the CPU run of the same model, and the validation accuracy reached. It also
checks that device: cuda fails clearly when no GPU is visible.

  /usr/bin/python3 bench/gpu_trainer.py --dataset /usr/share/datasets/fashion-mnist

Extra CMake arguments (where nlohmann_json or zlib live) go after `--cmake`.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(build_dir, cmake_args):
    import torch  # only for the LibTorch location
    prefix = torch.utils.cmake_prefix_path
    subprocess.run(["cmake", "-S", os.path.join(ROOT, "worker/trainer"), "-B", build_dir,
                    "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_PREFIX_PATH={prefix}"] + cmake_args,
                   check=True)
    subprocess.run(["cmake", "--build", build_dir, "-j", str(os.cpu_count()),
                    "--target", "megabatch-trainer"], check=True)
    return os.path.join(build_dir, "megabatch-trainer"), torch.__version__


def run_trial(trainer, config, env=None):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
        path = f.name
    p = subprocess.run([trainer, "--config", path], capture_output=True, text=True, env=env)
    os.unlink(path)
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    speeds = [r["metrics"]["samples_per_second"] for r in rows
              if "metrics" in r and "samples_per_second" in r["metrics"] and r["step"] > 5]
    acc = [r["metrics"]["val_accuracy"] for r in rows
           if "metrics" in r and "val_accuracy" in r["metrics"]]
    gns = [r["metrics"]["gradient_noise_scale"] for r in rows
           if "metrics" in r and r["metrics"].get("gradient_noise_scale") is not None]
    return {"rc": p.returncode, "stderr": p.stderr.strip().splitlines()[-3:],
            "samples_per_second": statistics.median(speeds) if speeds else None,
            "val_accuracy": acc[-1] if acc else None,
            "noise_scale": gns[-1] if gns else None,
            "device_line": next((l for l in p.stderr.splitlines() if " on " in l), "")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-gpu"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--cpu-threads", type=int, default=os.cpu_count())
    ap.add_argument("--cmake", nargs=argparse.REMAINDER, default=[])
    args = ap.parse_args()
    trainer, version = build(args.build_dir, args.cmake)
    print(f"torch {version}; trainer {trainer}", flush=True)

    models = {
        "mlp 512x512, batch 4096": ({"type": "mlp", "hidden": [512, 512]}, 4096),
        "cnn 32-64, batch 1024": ({"type": "cnn", "channels": [32, 64], "hidden": [128]}, 1024),
    }
    results = []
    for label, (model, batch) in models.items():
        base = {"seed": 1, "model": model, "dataset": {"path": args.dataset},
                "optimizer": {"name": "lamb"}, "batch_size": batch, "lr": 0.01,
                "budget": {"steps": args.steps}, "eval_every_steps": args.steps,
                "schedule": {"warmup_steps": 5}}
        cpu = run_trial(trainer, dict(base, device="cpu", threads=args.cpu_threads))
        results.append((label, "cpu fp32", cpu, 1.0))
        for precision in ["fp32", "bf16", "fp16"]:
            r = run_trial(trainer, dict(base, device="cuda", precision=precision, threads=1))
            ratio = (r["samples_per_second"] / cpu["samples_per_second"]
                     if r["samples_per_second"] and cpu["samples_per_second"] else None)
            results.append((label, f"cuda {precision}", r, ratio))
    # Gradient accumulation and the noise scale on the GPU.
    accum = run_trial(trainer, {"seed": 1, "model": {"type": "mlp", "hidden": [512, 512]},
                                "dataset": {"path": args.dataset},
                                "optimizer": {"name": "adamw", "exclude_bias_and_norm": True},
                                "batch_size": 8192, "micro_batch_size": 1024, "lr": 0.004,
                                "budget": {"steps": 30}, "device": "cuda", "precision": "bf16"})
    results.append(("mlp, batch 8192 as 8 x 1024", "cuda bf16", accum, None))

    print(f"{'model':28} {'run':10} {'samples/s':>12} {'vs cpu':>8} {'val_acc':>8} {'B_simple':>9} rc")
    for label, run, r, ratio in results:
        sps = f"{r['samples_per_second']:.0f}" if r["samples_per_second"] else "-"
        rat = f"{ratio:.1f}x" if ratio else "-"
        acc = f"{r['val_accuracy']:.4f}" if r["val_accuracy"] is not None else "-"
        gns = f"{r['noise_scale']:.0f}" if r["noise_scale"] is not None else "-"
        print(f"{label:28} {run:10} {sps:>12} {rat:>8} {acc:>8} {gns:>9} {r['rc']}")
        if r["rc"] != 0:
            print("   ", r["stderr"])
    print("device line:", results[1][2]["device_line"])

    # No GPU visible: device cuda is a clear error, auto falls back to the CPU.
    hidden = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    small = {"seed": 1, "model": {"type": "mlp", "hidden": [32]}, "dataset": {"path": args.dataset},
             "batch_size": 256, "lr": 0.01, "budget": {"steps": 2}}
    no_gpu = run_trial(trainer, dict(small, device="cuda"), env=hidden)
    auto = run_trial(trainer, dict(small, device="auto"), env=hidden)
    print("CUDA_VISIBLE_DEVICES='' device cuda: rc", no_gpu["rc"], no_gpu["stderr"])
    print("CUDA_VISIBLE_DEVICES='' device auto: rc", auto["rc"], auto["device_line"])
    failed = [r for _, _, r, _ in results if r["rc"] != 0]
    sys.exit(1 if failed or no_gpu["rc"] == 0 or auto["rc"] != 0 else 0)


if __name__ == "__main__":
    main()
