"""megabatch_client: the coordinator's SweepService from Python.

    import megabatch_client as mb
    client = mb.connect("127.0.0.1:50051", token_file="alice.token")
    sweep = client.submit(open("experiments/quickstart.yaml").read())
    for update in client.watch(sweep):          # until the sweep ends
        print(update["state"], update["done"], "/", update["trials_total"])
    trials = client.trials(sweep)               # pandas DataFrame (or list of dicts)
    report = client.report(sweep)               # {"rows": ..., "fits": ..., ...}
    curves = client.export(sweep, ["val_accuracy"])
    best = client.query("SELECT * FROM sweep_scaling WHERE sweep_id = %d" % sweep)

Tables are pandas DataFrames when pandas is installed (Debian's
python3-pandas), lists of dicts otherwise. Listings are paged under the hood
(every message stays under gRPC's default 4 MiB limit). Errors are
grpc.RpcError with the coordinator's status code and message.

The stubs (megabatch/v1/megabatch_pb2*.py) are generated at build time into
build/clients/python with Debian's protoc and grpc_python_plugin; put that
folder and this one on PYTHONPATH.
"""

import os
import uuid

import grpc

from megabatch.v1 import megabatch_pb2 as pb
from megabatch.v1 import megabatch_pb2_grpc as pb_grpc

try:
    import pandas as _pandas
except ImportError:  # plain lists of dicts then
    _pandas = None

__all__ = ["connect", "Client"]

_FINAL = {"completed", "failed", "cancelled"}


def _table(rows, columns=None):
    if _pandas is None:
        return rows
    return _pandas.DataFrame(rows, columns=columns)


def _state(enum, value, prefix):
    return enum.Name(value)[len(prefix):].lower()


def _sweep(s):
    done = (s.trials_completed + s.trials_failed + s.trials_cancelled + s.trials_diverged
            + s.trials_pruned)
    return {"id": s.id, "name": s.name, "state": _state(pb.SweepState, s.state, "SWEEP_STATE_"),
            "trials_total": s.trials_total, "done": done, "queued": s.trials_queued,
            "running": s.trials_running, "completed": s.trials_completed,
            "diverged": s.trials_diverged, "pruned": s.trials_pruned, "failed": s.trials_failed,
            "cancelled": s.trials_cancelled, "owner": s.owner}


def _trial(t):
    row = {"trial_id": t.id, "sweep_id": t.sweep_id, "index": t.index, "optimizer": t.optimizer,
           "batch_size": t.batch_size, "lr": t.lr, "lr_multiplier": t.lr_multiplier,
           "seed": t.seed, "state": _state(pb.TrialState, t.state, "TRIAL_STATE_"),
           "attempts": t.attempts, "error": t.error}
    for name in ("epoch", "train_loss", "val_loss", "val_accuracy", "test_accuracy"):
        row[name] = t.latest_metrics.get(name)
    return row


def _fields(message):
    """A message's set fields as a dict (unset optional fields as None)."""
    out = {}
    for field in message.DESCRIPTOR.fields:
        has = (not field.has_presence) or message.HasField(field.name)
        out[field.name] = getattr(message, field.name) if has else None
    return out


class Client:
    """One channel to a coordinator. Thread-safe as grpc channels are."""

    def __init__(self, channel, token=None):
        self._channel = channel
        self._stub = pb_grpc.SweepServiceStub(channel)
        self._metadata = (("authorization", "Bearer " + token),) if token else ()

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request, **kwargs):
        return getattr(self._stub, method)(request, metadata=self._metadata, **kwargs)

    def submit(self, spec, request_id=None, format=""):
        """Submits a spec (YAML or JSON text) and returns the sweep id. A
        request id makes a retry safe: the same id and spec return the same
        sweep; `request_id=None` picks a fresh one."""
        request = pb.SubmitSweepRequest(spec=spec, format=format,
                                        request_id=request_id or uuid.uuid4().hex)
        return self._call("SubmitSweep", request).sweep_id

    def _pages(self, method, request, field):
        """Every item of a paged listing (AIP-158), one page at a time."""
        items = []
        while True:
            page = self._call(method, request)
            items += getattr(page, field)
            if not page.next_page_token:
                return items
            request.page_token = page.next_page_token

    def _trial_rows(self, sweep):
        return [_trial(t) for t in
                self._pages("ListTrials", pb.ListTrialsRequest(sweep_id=sweep), "trials")]

    def sweeps(self):
        return _table([_sweep(s) for s in
                       self._pages("ListSweeps", pb.ListSweepsRequest(), "sweeps")])

    def status(self, sweep):
        return _sweep(self._call("GetSweep", pb.GetSweepRequest(sweep_id=sweep)))

    def cancel(self, sweep):
        return _sweep(self._call("CancelSweep", pb.CancelSweepRequest(sweep_id=sweep)))

    def trials(self, sweep):
        """Every trial of the sweep with its latest epoch, losses and accuracies."""
        return _table(self._trial_rows(sweep))

    def watch(self, sweep):
        """Yields the sweep's progress (a dict, with `changed`: the trials that
        changed since the last update) until it reaches a final state."""
        for update in self._call("WatchSweep", pb.WatchSweepRequest(sweep_id=sweep)):
            progress = _sweep(update.sweep)
            progress["changed"] = [_trial(t) for t in update.trials]
            progress["snapshot_complete"] = update.snapshot_complete
            yield progress
            if progress["state"] in _FINAL and update.snapshot_complete:
                return

    def wait(self, sweep):
        """Blocks until the sweep ends; returns its final status."""
        last = None
        for last in self.watch(sweep):
            pass
        return last

    def report(self, sweep):
        """The large-batch report: `rows` (per optimizer and batch size),
        `fits` (the critical batch per optimizer, with intervals), `diverged`."""
        r = self._call("GetSweepReport", pb.GetSweepReportRequest(sweep_id=sweep))
        return {"sweep": _sweep(r.sweep),
                "target_metric": r.target_metric or None,
                "target_value": r.target_value if r.HasField("target_value") else None,
                "rows": _table([_fields(x) for x in r.rows]),
                "fits": _table([_fields(x) for x in r.fits]),
                "diverged": _table([_fields(x) for x in r.diverged])}

    def export(self, sweep, names=()):
        """Every stored metric point of the sweep (or only `names`), joined
        with its trial's optimizer, batch size, lr and seed."""
        trials = {t["trial_id"]: t for t in self._trial_rows(sweep)}
        rows = []
        request = pb.ExportMetricsRequest(sweep_id=sweep, names=list(names))
        for chunk in self._call("ExportMetrics", request):
            for m in chunk.rows:
                t = trials.get(m.trial_id, {})
                rows.append({"trial_id": m.trial_id, "optimizer": t.get("optimizer"),
                             "batch_size": t.get("batch_size"), "lr": t.get("lr"),
                             "seed": t.get("seed"), "name": m.name, "step": m.step,
                             "value": m.value if m.HasField("value") else None,
                             "recorded_at": m.recorded_at})
        return _table(rows)

    def query(self, sql, max_rows=0, timeout_ms=0):
        """One read-only SQL statement on the results database."""
        r = self._call("Query", pb.QueryRequest(sql=sql, max_rows=max_rows,
                                                timeout_ms=timeout_ms))
        rows = []
        for row in r.rows:
            values = []
            for v in row.values:
                kind = v.WhichOneof("kind")
                values.append(None if kind is None else getattr(v, kind))
            rows.append(dict(zip(r.columns, values)))
        return _table(rows, columns=list(r.columns))


def connect(server="127.0.0.1:50051", token_file=None, tls_ca=None, token=None):
    """A client of the coordinator at `server`. `token_file` (or $MEGABATCH_TOKEN,
    or `token`) is the bearer token; `tls_ca` a CA certificate (PEM) for a TLS
    coordinator (plaintext otherwise: loopback only, as the coordinator allows)."""
    if token is None and token_file:
        with open(token_file) as f:
            token = f.read().strip()
    if token is None:
        token = os.environ.get("MEGABATCH_TOKEN") or None
    options = [
        # Listings are paged under 1 MiB a message; Query answers may reach
        # its 8 MiB cap, so allow a little more than that.
        ("grpc.max_receive_message_length", 16 << 20),
        ("grpc.keepalive_time_ms", 30000),
        ("grpc.enable_retries", 1),
    ]
    if tls_ca:
        with open(tls_ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(server, creds, options=options)
    else:
        channel = grpc.insecure_channel(server, options=options)
    return Client(channel, token)
