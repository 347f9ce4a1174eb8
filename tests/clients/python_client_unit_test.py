#!/usr/bin/python3
"""The Python client against a fake SweepService stub: paging, the list and
DataFrame forms, every metric a trial carries, stream errors and the error
classes, without a coordinator. Run by ctest with PYTHONPATH holding the
staged package (build/clients/python/package).
"""
import hashlib
import json
import os
import sys
import tempfile
import unittest

import grpc

import megabatch_client as mb
from megabatch_client._pb import megabatch_pb2 as pb


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details):
        super().__init__()
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


class FakeStub:
    """Answers like a coordinator would; records each request."""

    def __init__(self):
        self.requests = []

    def _trial(self, i, **metrics):
        t = pb.Trial(id=i, sweep_id=1, index=i, optimizer="lamb", batch_size=128 << i,
                     lr=0.01, state=pb.TRIAL_STATE_COMPLETED)
        for name, value in metrics.items():
            t.latest_metrics[name] = value
        return t

    def ListTrials(self, request, metadata=()):
        self.requests.append(("ListTrials", request.page_token, metadata))
        if not request.page_token:  # two pages
            return pb.ListTrialsResponse(trials=[self._trial(0, val_bpc=1.5)],
                                         next_page_token="p2")
        return pb.ListTrialsResponse(trials=[self._trial(1, val_mlm_loss=2.5,
                                                         val_mlm_accuracy=0.4)])

    def GetSweep(self, request, metadata=()):
        raise FakeRpcError(grpc.StatusCode.NOT_FOUND, "sweep %d: no such sweep" % request.sweep_id)

    def WatchSweep(self, request, metadata=()):
        yield pb.WatchSweepResponse(sweep=pb.Sweep(id=1, state=pb.SWEEP_STATE_RUNNING))
        raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "coordinator going away")

    def Query(self, request, metadata=()):
        if "DROP" in request.sql:
            raise FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "denied: DROP")
        if "slow" in request.sql:
            raise FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "query ran too long")
        row = pb.Row(values=[pb.Value(integer=3), pb.Value()])
        return pb.QueryResponse(columns=["n", "missing"], rows=[row])


class OwnModelStub(FakeStub):
    """Keeps what an upload streamed and the spec submitted."""

    def UploadModel(self, chunks, metadata=()):
        data = b"".join(c.data for c in chunks)
        self.uploaded = data
        return pb.UploadModelResponse(sha256=hashlib.sha256(data).hexdigest(),
                                      bytes=len(data))

    def SubmitSweep(self, request, metadata=()):
        self.submitted = request
        return pb.SubmitSweepResponse(sweep_id=7, trials=1)


class OwnModelTest(unittest.TestCase):
    """A torchscript spec: the module uploaded, paths resolved against
    base_dir, every data file recorded, bad files refused before submit."""

    def setUp(self):
        import numpy as np
        self.dir = tempfile.TemporaryDirectory()
        d = self.dir.name
        os.makedirs(os.path.join(d, "data"))
        with open(os.path.join(d, "model.pt"), "wb") as f:
            f.write(b"not really a module, but bytes to upload" * 100000)
        np.save(os.path.join(d, "data", "x.npy"), np.zeros((10, 3), np.float32))
        np.save(os.path.join(d, "data", "y.npy"), np.zeros(10, np.int64))
        np.save(os.path.join(d, "data", "y9.npy"), np.zeros(9, np.int64))
        self.spec = {"name": "own", "model": {"type": "torchscript", "path": "model.pt"},
                     "dataset": {"kind": "classification",
                                 "train": {"x": "data/x.npy", "y": "data/y.npy"},
                                 "val_fraction": 0.2},
                     "optimizers": [{"name": "lamb"}], "batch_sizes": [4]}
        self.stub = OwnModelStub()
        self.client = mb.Client(None, stub=self.stub)

    def tearDown(self):
        self.dir.cleanup()

    def test_the_module_is_uploaded_and_the_files_recorded(self):
        self.assertEqual(self.client.submit(self.spec, base_dir=self.dir.name), 7)
        sent = json.loads(self.stub.submitted.spec)
        self.assertEqual(self.stub.submitted.format, "json")
        module = os.path.join(self.dir.name, "model.pt")
        with open(module, "rb") as f:
            self.assertEqual(self.stub.uploaded, f.read())  # streamed in 1 MiB chunks
        self.assertEqual(sent["model"]["path"], module)
        self.assertEqual(sent["model"]["sha256"], hashlib.sha256(self.stub.uploaded).hexdigest())
        x = os.path.join(self.dir.name, "data", "x.npy")
        self.assertEqual(sent["dataset"]["train"]["x"], x)
        self.assertEqual(sent["dataset"]["files"][x]["shape"], [10, 3])
        self.assertEqual(sent["dataset"]["files"][x]["dtype"], "float32")
        with open(x, "rb") as f:
            self.assertEqual(sent["dataset"]["files"][x]["sha256"],
                             hashlib.sha256(f.read()).hexdigest())
        # The same spec as JSON text.
        self.client.submit(json.dumps(self.spec), base_dir=self.dir.name)
        self.assertEqual(json.loads(self.stub.submitted.spec)["dataset"]["files"][x]["shape"],
                         [10, 3])

    def test_a_yaml_spec_reads_as_the_coordinator_reads_it(self):
        from megabatch_client import own_model
        doc = own_model.load_yaml("lr: 1e-3\nflag: on\nok: true\nn: 3\nx: 1.5")
        self.assertEqual(doc, {"lr": 0.001, "flag": "on", "ok": True, "n": 3, "x": 1.5})
        text = ("name: own\nmodel: {type: torchscript, path: model.pt}\n"
                "dataset: {kind: classification, train: {x: data/x.npy, y: data/y.npy}, "
                "val_fraction: 0.2}\noptimizers: [{name: lamb, lr: 1e-3}]\nbatch_sizes: [4]\n")
        self.client.submit(text, base_dir=self.dir.name)
        sent = json.loads(self.stub.submitted.spec)
        self.assertEqual(sent["optimizers"][0]["lr"], 0.001)

    def test_nan_inputs_are_refused_before_submit(self):
        import numpy as np
        x = np.zeros((10, 3), np.float32)
        x[4, 1] = np.nan
        np.save(os.path.join(self.dir.name, "data", "x.npy"), x)
        with self.assertRaises(mb.InvalidArgument) as e:
            self.client.submit(self.spec, base_dir=self.dir.name)
        self.assertIn("sample 4 holds NaN or infinity", str(e.exception))

    def test_labels_that_do_not_match_the_samples_are_refused_before_submit(self):
        self.spec["dataset"]["train"]["y"] = "data/y9.npy"
        with self.assertRaises(mb.InvalidArgument) as e:
            self.client.submit(self.spec, base_dir=self.dir.name)
        self.assertIn("dataset.train.y: ", str(e.exception))
        self.assertIn("9 labels for the 10 samples of dataset.train.x", str(e.exception))
        self.assertFalse(hasattr(self.stub, "submitted"))


class ClientUnitTest(unittest.TestCase):
    def setUp(self):
        self.stub = FakeStub()
        self.client = mb.Client(None, token="t0ken", stub=self.stub)

    def test_trials_are_paged_and_carry_every_metric(self):
        trials = self.client.trials(1)
        self.assertIsInstance(trials, list)
        self.assertEqual([t["trial_id"] for t in trials], [0, 1])
        self.assertEqual(trials[0]["val_bpc"], 1.5)
        self.assertEqual(trials[1]["val_mlm_accuracy"], 0.4)
        self.assertEqual([r[1] for r in self.stub.requests], ["", "p2"])
        self.assertEqual(self.stub.requests[0][2], (("authorization", "Bearer t0ken"),))

    def test_the_dataframe_form_has_the_same_rows(self):
        frame = self.client.trials_dataframe(1)
        self.assertEqual(list(frame["trial_id"]), [0, 1])
        self.assertIn("val_mlm_loss", frame.columns)

    def test_without_pandas_the_dataframe_form_says_what_to_install(self):
        saved = sys.modules.get("pandas")
        sys.modules["pandas"] = None  # import pandas now raises ImportError
        try:
            self.assertIsInstance(self.client.query("SELECT 1"), list)
            with self.assertRaisesRegex(ImportError, "python3-pandas"):
                self.client.query_dataframe("SELECT 1")
        finally:
            sys.modules["pandas"] = saved

    def test_query_values_and_nulls(self):
        self.assertEqual(self.client.query("SELECT n"), [{"n": 3, "missing": None}])

    def test_errors_are_megabatch_errors_with_the_code(self):
        with self.assertRaises(mb.NotFound) as e:
            self.client.status(7)
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(e.exception.message, "sweep 7: no such sweep")
        self.assertIsInstance(e.exception, mb.MegabatchError)
        with self.assertRaises(mb.InvalidArgument):
            self.client.query("DROP TABLE trials")
        # A code without a subclass is a plain MegabatchError.
        with self.assertRaises(mb.MegabatchError) as e:
            self.client.query("slow")
        self.assertIs(type(e.exception), mb.MegabatchError)
        self.assertEqual(e.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_a_stream_that_fails_midway_raises_after_what_it_yielded(self):
        seen = []
        with self.assertRaises(mb.Unavailable):
            for update in self.client.watch(1):
                seen.append(update["state"])
        self.assertEqual(seen, ["running"])

    def test_state_names_come_from_the_proto(self):
        self.assertEqual(set(mb.TRIAL_STATES),
                         {"queued", "running", "completed", "failed", "cancelled", "diverged",
                          "pruned"})
        self.assertTrue(mb.FINAL_SWEEP_STATES <= set(mb.SWEEP_STATES))

    def test_every_public_name_has_type_hints(self):
        import inspect
        for name in ("connect",):
            self.assertTrue(inspect.signature(getattr(mb, name)).return_annotation
                            is not inspect.Signature.empty)
        for name, method in inspect.getmembers(mb.Client, inspect.isfunction):
            if name.startswith("_") and name != "__init__":
                continue
            sig = inspect.signature(method)
            for p in list(sig.parameters.values())[1:]:
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                self.assertIsNot(p.annotation, p.empty, "%s(%s)" % (name, p.name))
            self.assertIsNot(sig.return_annotation, sig.empty, name)


if __name__ == "__main__":
    unittest.main()
