#!/usr/bin/python3
"""The Python client (clients/python/megabatch_client) against a real
coordinator and worker on loopback: submit (and a repeated submit), watch,
trials, report, export and query, with pandas and without, and errors.

Run by ctest with PYTHONPATH holding the package and the generated stubs,
and MEGABATCH_COORDINATOR_BIN / MEGABATCH_WORKER_BIN naming the binaries.
"""
import os
import socket
import subprocess
import tempfile
import time
import unittest

import grpc

import megabatch_client as mb

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
            except grpc.RpcError:
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
        self.assertEqual(list(trials["state"]), ["completed", "completed"])
        self.assertEqual(list(trials["batch_size"]), [256, 512])
        self.assertTrue((trials["val_accuracy"] > 0.1).all())

        report = self.client.report(sweep)
        self.assertEqual(report["target_metric"], "val_accuracy")
        self.assertEqual(list(report["rows"]["batch_size"]), [256, 512])
        self.assertIn("b_crit", report["fits"].columns)
        self.assertTrue(report["rows"]["test_accuracy"].notna().all())

        curves = self.client.export(sweep, ["train_loss"])
        self.assertEqual(len(curves), 40)  # 20 steps x 2 trials
        self.assertEqual(set(curves["optimizer"]), {"adamw"})
        self.assertEqual(sorted(curves[curves["batch_size"] == 256]["step"]), list(range(1, 21)))

        counts = self.client.query(
            "SELECT state, count(*) AS n FROM trials WHERE sweep_id = %d GROUP BY state" % sweep)
        self.assertEqual(counts.to_dict("records"), [{"state": "completed", "n": 2}])
        self.assertEqual(self.client.status(sweep)["state"], "completed")
        self.assertIn(sweep, list(self.client.sweeps()["id"]))

    def test_without_pandas_tables_are_lists_of_dicts(self):
        saved, mb._pandas = mb._pandas, None
        try:
            rows = self.client.query("SELECT 1 AS one, 'x' AS text, NULL AS missing")
            self.assertEqual(rows, [{"one": 1, "text": "x", "missing": None}])
            self.assertIsInstance(self.client.sweeps(), list)
        finally:
            mb._pandas = saved

    def test_errors_carry_the_coordinators_code_and_message(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.client.query("DELETE FROM trials")
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("denied", e.exception.details())
        with self.assertRaises(grpc.RpcError) as e:
            self.client.submit("name: bad\noptimizers: [{name: sgd}]\nbatch_sizes: [0]\n"
                               "base: {lr: 0.1}\n")
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("batch_sizes[0]", e.exception.details())
        with self.assertRaises(grpc.RpcError) as e:
            self.client.report(9999)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)


if __name__ == "__main__":
    unittest.main()
