"""megabatch_client: the coordinator's SweepService from Python.

    import megabatch_client as mb
    client = mb.connect("127.0.0.1:50051", token_file="alice.token")
    sweep = client.submit(open("experiments/quickstart.yaml").read())
    for update in client.watch(sweep):          # until the sweep ends
        print(update["state"], update["done"], "/", update["trials_total"])
    trials = client.trials(sweep)               # a list of dicts
    frame = client.trials_dataframe(sweep)      # the same as a pandas DataFrame
    report = client.report(sweep)               # {"rows": [...], "fits": [...], ...}
    curves = client.export_dataframe(sweep, ["val_accuracy"])
    best = client.query("SELECT * FROM sweep_scaling WHERE sweep_id = %d" % sweep)

Every method that returns a table has a list-of-dicts form and a
`*_dataframe` form (pandas: Debian's python3-pandas; the `*_dataframe`
methods raise ImportError without it). Listings are paged under the hood
(every message stays under gRPC's default 4 MiB limit). A failed call raises
MegabatchError, or its subclass for the status code (InvalidArgument,
NotFound, PermissionDenied, Unauthenticated, ResourceExhausted, Unavailable),
with `.code` and `.message`; the gRPC error is its __cause__.

Install: `pip install --no-build-isolation --no-deps build/clients/python/package`
(the build stages the package there with its generated stubs), or the .deb /
`cmake --install`, which put it in the system Python.
"""

import json
import os
import re
import uuid
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from megabatch_client._pb import megabatch_pb2 as pb
from megabatch_client import own_model
from megabatch_client._pb import megabatch_pb2_grpc as pb_grpc
from megabatch_client.errors import (InvalidArgument, MegabatchError, NotFound, PermissionDenied,
                                     ResourceExhausted, Unauthenticated, Unavailable,
                                     from_rpc_error)

__all__ = ["connect", "Client", "MegabatchError", "InvalidArgument", "NotFound",
           "PermissionDenied", "Unauthenticated", "ResourceExhausted", "Unavailable",
           "SWEEP_STATES", "TRIAL_STATES", "FINAL_SWEEP_STATES"]

Row = Dict[str, Any]


def _state_names(enum: Any, prefix: str) -> List[str]:
    return [name[len(prefix):].lower() for name in enum.keys()
            if not name.endswith("UNSPECIFIED")]


# The state names, from the proto (the one definition the coordinator uses).
SWEEP_STATES: List[str] = _state_names(pb.SweepState, "SWEEP_STATE_")
TRIAL_STATES: List[str] = _state_names(pb.TrialState, "TRIAL_STATE_")
FINAL_SWEEP_STATES = frozenset({"completed", "failed", "cancelled"})


def _dataframe(rows: List[Row], columns: Optional[List[str]] = None) -> Any:
    try:
        import pandas
    except ImportError as e:
        raise ImportError("megabatch_client: the *_dataframe methods need pandas "
                          "(Debian: apt-get install python3-pandas); the methods "
                          "without _dataframe return lists of dicts") from e
    return pandas.DataFrame(rows, columns=columns)


def _state(enum: Any, value: int, prefix: str) -> str:
    return enum.Name(value)[len(prefix):].lower()


def _sweep(s: Any) -> Row:
    done = (s.trials_completed + s.trials_failed + s.trials_cancelled + s.trials_diverged
            + s.trials_pruned)
    return {"id": s.id, "name": s.name, "state": _state(pb.SweepState, s.state, "SWEEP_STATE_"),
            "trials_total": s.trials_total, "done": done, "queued": s.trials_queued,
            "running": s.trials_running, "completed": s.trials_completed,
            "diverged": s.trials_diverged, "pruned": s.trials_pruned, "failed": s.trials_failed,
            "cancelled": s.trials_cancelled, "owner": s.owner}


def _trial(t: Any) -> Row:
    """A trial with every metric's latest value (whatever its model logs:
    val_accuracy, val_bpc, val_mlm_loss, ...) as a column of its own."""
    row = {"trial_id": t.id, "sweep_id": t.sweep_id, "index": t.index, "optimizer": t.optimizer,
           "batch_size": t.batch_size, "lr": t.lr, "lr_multiplier": t.lr_multiplier,
           "seed": t.seed, "state": _state(pb.TrialState, t.state, "TRIAL_STATE_"),
           "attempts": t.attempts, "error": t.error}
    for name in sorted(t.latest_metrics):
        row.setdefault(name, t.latest_metrics[name])
    return row


def _fields(message: Any) -> Row:
    """A message's set fields as a dict (unset optional fields as None)."""
    out = {}
    for field in message.DESCRIPTOR.fields:
        has = (not field.has_presence) or message.HasField(field.name)
        out[field.name] = getattr(message, field.name) if has else None
    return out


def _own_model_doc(text: str, format: str) -> Any:
    """The spec document when the text may be a torchscript spec; None
    otherwise (then the coordinator parses the text itself)."""
    if not re.search(r"\btorchscript\b", text):
        return None
    if format == "json" or (format == "" and text.lstrip().startswith("{")):
        return json.loads(text)
    return own_model.load_yaml(text)


class Client:
    """One channel to a coordinator. Thread-safe as grpc channels are."""

    def __init__(self, channel: grpc.Channel, token: Optional[str] = None,
                 stub: Any = None) -> None:
        self._channel = channel
        self._stub = stub if stub is not None else pb_grpc.SweepServiceStub(channel)
        self._metadata = (("authorization", "Bearer " + token),) if token else ()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from e

    def _stream(self, method: str, request: Any) -> Iterator[Any]:
        try:
            for item in getattr(self._stub, method)(request, metadata=self._metadata):
                yield item
        except grpc.RpcError as e:
            raise from_rpc_error(e) from e

    def submit(self, spec: Union[str, Dict[str, Any]], request_id: Optional[str] = None,
               format: str = "", base_dir: str = ".") -> int:
        """Submits a spec (YAML or JSON text, or a dict) and returns the sweep
        id. A request id makes a retry safe: the same id and spec return the
        same sweep; `request_id=None` picks a fresh one. A spec of
        model.type torchscript (docs/models.md) has its module uploaded and
        its data files recorded first, relative paths read from `base_dir`
        (YAML text then needs Debian's python3-yaml)."""
        doc = spec if isinstance(spec, dict) else _own_model_doc(spec, format)
        if own_model.is_own_model_spec(doc):
            spec, format = json.dumps(own_model.prepare(doc, base_dir, self.upload_model)), "json"
        elif isinstance(spec, dict):
            spec, format = json.dumps(spec), "json"
        request = pb.SubmitSweepRequest(spec=spec, format=format,
                                        request_id=request_id or uuid.uuid4().hex)
        return int(self._call("SubmitSweep", request).sweep_id)

    def upload_model(self, path: str) -> Tuple[str, int]:
        """Uploads a TorchScript module file; returns its (sha256, bytes), by
        which a spec names it."""
        if not os.path.isfile(path):
            raise NotFound(grpc.StatusCode.NOT_FOUND, f"model.path: {path}: no such file")
        chunks = (pb.UploadModelRequest(data=c) for c in own_model.file_chunks(path))
        reply = self._call("UploadModel", chunks)
        return reply.sha256, int(reply.bytes)

    def _pages(self, method: str, request: Any, field: str) -> List[Any]:
        """Every item of a paged listing (AIP-158), one page at a time."""
        items: List[Any] = []
        while True:
            page = self._call(method, request)
            items += getattr(page, field)
            if not page.next_page_token:
                return items
            request.page_token = page.next_page_token

    def sweeps(self) -> List[Row]:
        """Every sweep the token may read, with its progress."""
        return [_sweep(s) for s in self._pages("ListSweeps", pb.ListSweepsRequest(), "sweeps")]

    def sweeps_dataframe(self) -> Any:
        return _dataframe(self.sweeps())

    def status(self, sweep: int) -> Row:
        return _sweep(self._call("GetSweep", pb.GetSweepRequest(sweep_id=sweep)))

    def cancel(self, sweep: int) -> Row:
        return _sweep(self._call("CancelSweep", pb.CancelSweepRequest(sweep_id=sweep)))

    def trials(self, sweep: int) -> List[Row]:
        """Every trial of the sweep with the latest value of each metric."""
        return [_trial(t) for t in
                self._pages("ListTrials", pb.ListTrialsRequest(sweep_id=sweep), "trials")]

    def trials_dataframe(self, sweep: int) -> Any:
        return _dataframe(self.trials(sweep))

    def watch(self, sweep: int) -> Iterator[Row]:
        """Yields the sweep's progress (a dict, with `changed`: the trials that
        changed since the last update) until it reaches a final state."""
        for update in self._stream("WatchSweep", pb.WatchSweepRequest(sweep_id=sweep)):
            progress = _sweep(update.sweep)
            progress["changed"] = [_trial(t) for t in update.trials]
            progress["snapshot_complete"] = update.snapshot_complete
            yield progress
            if progress["state"] in FINAL_SWEEP_STATES and update.snapshot_complete:
                return

    def wait(self, sweep: int) -> Optional[Row]:
        """Blocks until the sweep ends; returns its final status."""
        last = None
        for last in self.watch(sweep):
            pass
        return last

    def report(self, sweep: int) -> Dict[str, Any]:
        """The large-batch report: `rows` (per optimizer and batch size),
        `fits` (the critical batch per optimizer, with intervals), `diverged`,
        each a list of dicts."""
        r = self._call("GetSweepReport", pb.GetSweepReportRequest(sweep_id=sweep))
        return {"sweep": _sweep(r.sweep),
                "target_metric": r.target_metric or None,
                "target_value": r.target_value if r.HasField("target_value") else None,
                "rows": [_fields(x) for x in r.rows],
                "fits": [_fields(x) for x in r.fits],
                "diverged": [_fields(x) for x in r.diverged]}

    def report_dataframe(self, sweep: int) -> Dict[str, Any]:
        """report() with `rows`, `fits` and `diverged` as DataFrames."""
        report = self.report(sweep)
        for key in ("rows", "fits", "diverged"):
            report[key] = _dataframe(report[key])
        return report

    def export(self, sweep: int, names: Sequence[str] = ()) -> List[Row]:
        """Every stored metric point of the sweep (or only `names`), joined
        with its trial's optimizer, batch size, lr and seed."""
        trials = {t["trial_id"]: t for t in self.trials(sweep)}
        rows = []
        request = pb.ExportMetricsRequest(sweep_id=sweep, names=list(names))
        for chunk in self._stream("ExportMetrics", request):
            for m in chunk.rows:
                t = trials.get(m.trial_id, {})
                rows.append({"trial_id": m.trial_id, "optimizer": t.get("optimizer"),
                             "batch_size": t.get("batch_size"), "lr": t.get("lr"),
                             "seed": t.get("seed"), "name": m.name, "step": m.step,
                             "value": m.value if m.HasField("value") else None,
                             "recorded_at": m.recorded_at})
        return rows

    def export_dataframe(self, sweep: int, names: Sequence[str] = ()) -> Any:
        return _dataframe(self.export(sweep, names))

    def _query(self, sql: str, max_rows: int, timeout_ms: int) -> Any:
        return self._call("Query", pb.QueryRequest(sql=sql, max_rows=max_rows,
                                                   timeout_ms=timeout_ms))

    @staticmethod
    def _rows(r: Any) -> List[Row]:
        rows = []
        for row in r.rows:
            values = []
            for v in row.values:
                kind = v.WhichOneof("kind")
                values.append(None if kind is None else getattr(v, kind))
            rows.append(dict(zip(r.columns, values)))
        return rows

    def query(self, sql: str, max_rows: int = 0, timeout_ms: int = 0) -> List[Row]:
        """One read-only SQL statement on the results database."""
        return self._rows(self._query(sql, max_rows, timeout_ms))

    def query_dataframe(self, sql: str, max_rows: int = 0, timeout_ms: int = 0) -> Any:
        r = self._query(sql, max_rows, timeout_ms)
        return _dataframe(self._rows(r), columns=list(r.columns))


def connect(server: str = "127.0.0.1:50051", token_file: Optional[str] = None,
            tls_ca: Optional[str] = None, token: Optional[str] = None) -> Client:
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
