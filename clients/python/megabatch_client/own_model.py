"""What a client does before it submits a sweep of model.type torchscript
(docs/models.md), as `megabatch submit` does: the coordinator and its workers
never see this machine, so model.path and every data path are resolved
against `base_dir`, each data file is read once to record its size and
SHA-256 (and a .npy file's dtype and shape) in dataset.files, what the
files' headers show is checked (dtypes, shapes, sample counts, token
counts), and the module is uploaded (SweepService.UploadModel) and named by
its hash.
"""
import ast
import hashlib
import os
import re
import struct
from typing import Any, Callable, Dict, Iterator, Tuple

import grpc

from megabatch_client.errors import InvalidArgument, NotFound

CHUNK = 1 << 20
INPUT_DTYPES = {"float32", "float16", "uint8"}
LABEL_DTYPES = {"int64", "int32"}
_NUMPY_NAMES = {"<f4": "float32", "<f2": "float16", "|u1": "uint8", "<u1": "uint8",
                "<i8": "int64", "<i4": "int32", "<u2": "uint16", "<u4": "uint32"}


def _invalid(message: str) -> InvalidArgument:
    """A file the coordinator would refuse, caught before submit."""
    return InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, message)


def load_yaml(text: str) -> Any:
    """A YAML spec as the coordinator reads it (YAML 1.2's core schema):
    PyYAML's safe loader (YAML 1.1) but with `1e-3` a number and `on`,
    `off`, `yes`, `no` strings. Needs Debian's python3-yaml."""
    try:
        import yaml
    except ImportError as e:
        raise ImportError("megabatch_client: a YAML torchscript spec needs python3-yaml; "
                          "or pass the spec as a dict or JSON") from e

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regex) for tag, regex in resolvers
                if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        list("tTfF"))
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"
                   r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
        list("-+0123456789."))
    return yaml.load(text, Loader=Loader)


def is_own_model_spec(spec: Any) -> bool:
    return (isinstance(spec, dict) and isinstance(spec.get("model"), dict)
            and spec["model"].get("type") == "torchscript")


def file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return
            yield chunk


def digest(path: str) -> Tuple[int, str]:
    """(size, SHA-256 hex) of a file."""
    h, size = hashlib.sha256(), 0
    for chunk in file_chunks(path):
        h.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


def npy_header(path: str, field: str) -> Tuple[str, list]:
    """(dtype name, shape) from a .npy file's header."""
    with open(path, "rb") as f:
        magic = f.read(8)
        if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
            raise _invalid(f"{field}: {path}: not a .npy file")
        size = 2 if magic[6] == 1 else 4
        (length,) = struct.unpack("<H" if size == 2 else "<I", f.read(size))
        header = ast.literal_eval(f.read(length).decode("latin1"))
    descr = header.get("descr")
    if header.get("fortran_order"):
        raise _invalid(f"{field}: {path}: Fortran order; save it in C order")
    if descr not in _NUMPY_NAMES:
        raise _invalid(f"{field}: {path}: dtype '{descr}' cannot be used")
    return _NUMPY_NAMES[descr], list(header.get("shape", ()))


def _check_values(at: str, x_path: str, y_path: str) -> None:
    """NaN or infinity in the inputs, negative labels: with numpy (Debian's
    python3-numpy), as the CLI checks them; skipped without it."""
    try:
        import numpy
    except ImportError:
        return
    x = numpy.load(x_path, mmap_mode="r")
    if x.dtype.kind == "f":
        bad = numpy.flatnonzero(~numpy.isfinite(x.reshape(len(x), -1)).all(axis=1))
        if len(bad):
            raise _invalid(f"{at}.x: {x_path}: sample {bad[0]} holds NaN or infinity")
    y = numpy.load(y_path, mmap_mode="r")
    if len(y) and y.min() < 0:
        raise _invalid(f"{at}.y: {y_path}: label {y.min()} is negative; labels are "
                       "class indices")


def prepare(spec: Dict[str, Any], base_dir: str,
            upload: Callable[[str], Tuple[str, int]]) -> Dict[str, Any]:
    """The spec to submit: absolute paths, model.sha256 and model.bytes (from
    `upload`, given the module's path), and dataset.files."""
    def absolute(p: str) -> str:
        return os.path.normpath(p if os.path.isabs(p) else os.path.join(base_dir, p))

    model = dict(spec["model"])
    if not isinstance(model.get("path"), str):
        raise _invalid("model.path: required: the module file saved with torch.jit.save")
    model["path"] = absolute(model["path"])
    model["sha256"], model["bytes"] = upload(model["path"])
    out = dict(spec, model=model)
    dataset = spec.get("dataset")
    if not isinstance(dataset, dict):
        return out
    dataset = dict(dataset)
    files: Dict[str, Any] = {}
    lm = dataset.get("kind") == "language_model"
    item = 4 if dataset.get("dtype") == "uint32" else 2
    for split in ("train", "val", "test"):
        if not isinstance(dataset.get(split), dict):
            continue
        paths = {key: absolute(p) for key, p in dataset[split].items() if isinstance(p, str)}
        dataset[split] = dict(dataset[split], **paths)
        at = "dataset." + split
        for key, path in paths.items():
            try:
                size, sha = digest(path)
            except OSError as e:
                raise NotFound(grpc.StatusCode.NOT_FOUND,
                               f"{at}.{key}: {path}: {e.strerror}") from e
            files[path] = {"bytes": size, "sha256": sha}
            if lm and key == "tokens" and size % item:
                raise _invalid(f"{at}.tokens: {path}: {size} bytes is not a whole "
                                      f"number of {dataset.get('dtype', 'uint16')} tokens")
            seq_len = dataset.get("seq_len", 0)
            if (lm and key == "tokens" and isinstance(seq_len, int) and seq_len > 0
                    and size // item < seq_len + 1
                    and not (split == "train" and "val_fraction" in dataset)):
                raise _invalid(f"{at}.tokens: {path}: {size // item} tokens is shorter than "
                               f"one window of dataset.seq_len + 1 = {seq_len + 1}")
            if not lm and key in ("x", "y"):
                dtype, shape = npy_header(path, f"{at}.{key}")
                files[path].update(dtype=dtype, shape=shape)
        if not lm and "x" in paths and "y" in paths:
            x, y = files[paths["x"]], files[paths["y"]]
            if x["dtype"] not in INPUT_DTYPES:
                raise _invalid(f"{at}.x: {paths['x']}: dtype {x['dtype']}; inputs "
                                      "must be float32, float16 or uint8")
            if y["dtype"] not in LABEL_DTYPES:
                raise _invalid(f"{at}.y: {paths['y']}: dtype {y['dtype']}; labels "
                                      "must be int64 or int32 class indices")
            if len(y["shape"]) != 1 or not x["shape"] or x["shape"][0] != y["shape"][0]:
                raise _invalid(
                    f"{at}.y: {paths['y']}: {y['shape'][0] if y['shape'] else 0} labels for "
                    f"the {x['shape'][0] if x['shape'] else 0} samples of {at}.x")
            _check_values(at, paths["x"], paths["y"])
    dataset["files"] = files
    out["dataset"] = dataset
    return out
