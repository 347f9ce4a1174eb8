#!/usr/bin/python3
"""The Python client against a fake SweepService stub: paging, the list and
DataFrame forms, every metric a trial carries, stream errors and the error
classes, without a coordinator. Run by ctest with PYTHONPATH holding the
staged package (build/clients/python/package).
"""
import sys
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
