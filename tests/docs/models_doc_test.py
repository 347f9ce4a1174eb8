#!/usr/bin/python3
"""docs/models.md's export script and the examples/ scripts run as a user
runs them (Debian's python3-torch), and megabatch-trainer trains what they
export: a few steps of each, completed, with the metrics their kind logs.

    models_doc_test.py REPO_ROOT MEGABATCH_TRAINER
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

ROOT, TRAINER = sys.argv[1], sys.argv[2]


def run_trainer(config, workdir):
    path = os.path.join(workdir, "config.json")
    with open(path, "w") as f:
        json.dump(config, f)
    done = subprocess.run([TRAINER, "--config", path], capture_output=True, text=True,
                          timeout=600)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    metrics = {}
    for line in lines:
        metrics.update(line.get("metrics", {}))
    return done, lines[-1] if lines else {}, metrics


def config(model, dataset, steps=3, batch=32):
    return {"seed": 1, "model": {"type": "torchscript", "path": model}, "dataset": dataset,
            "optimizer": {"name": "lamb"}, "batch_size": batch, "lr": 0.01,
            "budget": {"steps": steps}, "eval_every_steps": steps, "threads": 1}


class ModelsDocTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.out = self.dir.name

    def tearDown(self):
        self.dir.cleanup()

    def python(self, *args):
        done = subprocess.run(["/usr/bin/python3", *args], capture_output=True, text=True,
                              timeout=600)
        self.assertEqual(done.returncode, 0, done.stderr)

    def test_the_docs_export_script_exports_what_the_trainer_trains(self):
        with open(os.path.join(ROOT, "docs", "models.md")) as f:
            doc = f.read()
        section = doc[doc.index("## A complete example"):]
        script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
        path = os.path.join(self.out, "export.py")
        with open(path, "w") as f:
            f.write(script)
        self.python(path, self.out)
        f = lambda name: os.path.join(self.out, name)
        done, last, metrics = run_trainer(config(f("model.pt"), {
            "kind": "classification",
            "train": {"x": f("train_x.npy"), "y": f("train_y.npy")},
            "val": {"x": f("val_x.npy"), "y": f("val_y.npy")}}, steps=20), self.out)
        self.assertEqual(last.get("event"), "completed", done.stderr)
        self.assertIn("val_accuracy", metrics)
        self.assertGreater(metrics["val_accuracy"], 0.4)  # 4 classes; it learns

    def test_the_resnet_example_trains(self):
        self.python(os.path.join(ROOT, "examples", "fashion_mnist_resnet.py"), self.out,
                    "--width", "4", "--rows", "500")
        f = lambda name: os.path.join(self.out, name)
        done, last, metrics = run_trainer(config(f("model.pt"), {
            "kind": "classification",
            "train": {"x": f("train_x.npy"), "y": f("train_y.npy")},
            "val": {"x": f("val_x.npy"), "y": f("val_y.npy")},
            "test": {"x": f("test_x.npy"), "y": f("test_y.npy")}}), self.out)
        self.assertEqual(last.get("event"), "completed", done.stderr)
        self.assertEqual(metrics["train_samples"], 500)
        self.assertIn("test_accuracy", metrics)

    def test_the_gpt_example_trains(self):
        self.python(os.path.join(ROOT, "examples", "gpt_tokens.py"), self.out,
                    "--layers", "1", "--width", "32", "--heads", "2", "--context", "32")
        f = lambda name: os.path.join(self.out, name)
        done, last, metrics = run_trainer(config(f("model.pt"), {
            "kind": "language_model", "train": {"tokens": f("train.bin")},
            "val": {"tokens": f("val.bin")}, "seq_len": 32}, batch=8), self.out)
        self.assertEqual(last.get("event"), "completed", done.stderr)
        self.assertIn("val_bits_per_token", metrics)
        self.assertLess(metrics["val_bits_per_token"], 8.5)  # at most about uniform bytes


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
