#!/usr/bin/python3
"""The Python client (clients/python/megabatch_client) against a real
coordinator and worker on loopback: submit (and a repeated submit), watch,
trials, report, export and query, as lists and as DataFrames, and errors.

Run by ctest with MEGABATCH_PYTHON_PACKAGE naming the staged package
(build/clients/python/package) and MEGABATCH_COORDINATOR_BIN /
MEGABATCH_WORKER_BIN naming the binaries. It first installs the package as a
user would, offline, into a virtual environment over Debian's python3
(`pip install --no-build-isolation --no-deps`), then runs itself there with
no PYTHONPATH.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest


def run_in_a_venv_with_the_package_installed():
    venv = tempfile.mkdtemp(prefix="megabatch-venv-")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv],
                       check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet",
                        "--no-build-isolation", "--no-deps", "--no-index",
                        os.environ["MEGABATCH_PYTHON_PACKAGE"]], check=True)
        env = dict(os.environ, MEGABATCH_IN_VENV=venv)
        env.pop("PYTHONPATH", None)
        # From the venv's folder, not the source tree: the installed copy must
        # be the one imported.
        return subprocess.run([os.path.join(venv, "bin", "python"), os.path.abspath(__file__)],
                              env=env, cwd=venv).returncode
    finally:
        shutil.rmtree(venv, ignore_errors=True)


if __name__ == "__main__" and not os.environ.get("MEGABATCH_IN_VENV"):
    sys.exit(run_in_a_venv_with_the_package_installed())

import grpc  # noqa: E402

import megabatch_client as mb  # noqa: E402

SPEC = """
name: python-client
model: {type: mlp, hidden: [32]}
optimizers: [{name: adamw}]
batch_sizes: [256, 512]
base: {lr: 0.003}
budget: {steps: 20}
eval_every_steps: 10
target: {metric: val_accuracy, value: 0.5}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.address = "127.0.0.1:%d" % free_port()
        log = open(os.path.join(cls.dir.name, "processes.log"), "w")
        cls.processes = [
            subprocess.Popen([os.environ["MEGABATCH_COORDINATOR_BIN"], "--listen", cls.address,
                              "--db", os.path.join(cls.dir.name, "megabatch.db")],
                             stdout=log, stderr=log),
            subprocess.Popen([os.environ["MEGABATCH_WORKER_BIN"], "--coordinator", cls.address,
                              "--slots", "2", "--threads-per-slot", "1", "--work-dir",
                              os.path.join(cls.dir.name, "worker")], stdout=log, stderr=log),
        ]
        cls.client = mb.connect(cls.address)

        def worker_registered():
            try:
                return len(cls.client.query("SELECT id FROM workers")) == 1
            except mb.MegabatchError:
                return False
        assert wait_until(worker_registered, 60), open(log.name).read()

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        for p in cls.processes:
            p.kill()
            p.wait()
        cls.dir.cleanup()

    def test_a_sweep_from_submit_to_report(self):
        sweep = self.client.submit(SPEC, request_id="py-1")
        # The same request id and spec: the same sweep.
        self.assertEqual(self.client.submit(SPEC, request_id="py-1"), sweep)
        updates = list(self.client.watch(sweep))
        self.assertEqual(updates[-1]["state"], "completed")
        self.assertEqual(updates[-1]["done"], 2)
        self.assertEqual(len(updates[0]["changed"]), 2)  # the first snapshot has them all

        trials = self.client.trials(sweep)
        self.assertIsInstance(trials, list)
        self.assertEqual([t["state"] for t in trials], ["completed", "completed"])
        frame = self.client.trials_dataframe(sweep)
        self.assertEqual(list(frame["batch_size"]), [256, 512])
        self.assertTrue((frame["val_accuracy"] > 0.1).all())
        # Every metric the trainer logged is a column, not a fixed few.
        self.assertTrue({"train_loss", "val_loss", "test_accuracy", "samples_per_second"}
                        <= set(frame.columns))

        report = self.client.report(sweep)
        self.assertEqual(report["target_metric"], "val_accuracy")
        self.assertEqual([r["batch_size"] for r in report["rows"]], [256, 512])
        tables = self.client.report_dataframe(sweep)
        self.assertIn("b_crit", tables["fits"].columns)
        self.assertTrue(tables["rows"]["test_accuracy"].notna().all())

        curves = self.client.export_dataframe(sweep, ["train_loss"])
        self.assertEqual(len(curves), 40)  # 20 steps x 2 trials
        self.assertEqual(set(curves["optimizer"]), {"adamw"})
        self.assertEqual(sorted(curves[curves["batch_size"] == 256]["step"]), list(range(1, 21)))
        self.assertEqual(len(self.client.export(sweep, ["train_loss"])), 40)

        sql = "SELECT state, count(*) AS n FROM trials WHERE sweep_id = %d GROUP BY state" % sweep
        self.assertEqual(self.client.query(sql), [{"state": "completed", "n": 2}])
        self.assertEqual(self.client.query_dataframe(sql).to_dict("records"),
                         [{"state": "completed", "n": 2}])
        self.assertEqual(self.client.status(sweep)["state"], "completed")
        self.assertIn(sweep, [s["id"] for s in self.client.sweeps()])
        self.assertIn(sweep, list(self.client.sweeps_dataframe()["id"]))

    def test_it_was_imported_from_the_installed_package(self):
        self.assertTrue(mb.__file__.startswith(os.environ["MEGABATCH_IN_VENV"]), mb.__file__)
        self.assertIn("diverged", mb.TRIAL_STATES)

    def test_errors_carry_the_coordinators_code_and_message(self):
        with self.assertRaises(mb.InvalidArgument) as e:
            self.client.query("DELETE FROM trials")
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("denied", e.exception.message)
        self.assertIsInstance(e.exception.__cause__, grpc.RpcError)
        with self.assertRaises(mb.InvalidArgument) as e:
            self.client.submit("name: bad\noptimizers: [{name: sgd}]\nbatch_sizes: [0]\n"
                               "base: {lr: 0.1}\n")
        self.assertIn("batch_sizes[0]", e.exception.message)
        with self.assertRaises(mb.NotFound):
            self.client.report(9999)
        with self.assertRaises(mb.NotFound):
            list(self.client.watch(9999))
        with self.assertRaises(mb.Unavailable):
            mb.connect("127.0.0.1:%d" % free_port()).sweeps()

if __name__ == "__main__":
    unittest.main()
