#!/usr/bin/python3
"""Stages the installable Python client: copies clients/python (pyproject.toml
with the project's version, megabatch_client/) into OUT and puts the gRPC
stubs protoc generated (GEN/megabatch/v1/megabatch_pb2*.py) into
OUT/megabatch_client/_pb, their import made package-relative.

usage: stage.py SOURCE_DIR GEN_DIR OUT_DIR VERSION
"""
import pathlib
import shutil
import sys


def main(source, gen, out, version):
    source, gen, out = pathlib.Path(source), pathlib.Path(gen), pathlib.Path(out)
    package = out / "megabatch_client"
    if package.exists():
        shutil.rmtree(package)
    shutil.copytree(source / "megabatch_client", package,
                    ignore=shutil.ignore_patterns("__pycache__", "_pb"))
    text = (source / "pyproject.toml").read_text().replace("@PROJECT_VERSION@", version)
    (out / "pyproject.toml").write_text(text)
    stubs = package / "_pb"
    stubs.mkdir()
    (stubs / "__init__.py").write_text('"""Generated from proto/megabatch/v1/megabatch.proto."""\n')
    shutil.copy(gen / "megabatch/v1/megabatch_pb2.py", stubs / "megabatch_pb2.py")
    grpc_stub = (gen / "megabatch/v1/megabatch_pb2_grpc.py").read_text()
    relative = grpc_stub.replace("from megabatch.v1 import megabatch_pb2", "from . import megabatch_pb2")
    if relative == grpc_stub:
        sys.exit("stage.py: the grpc stub no longer imports megabatch.v1.megabatch_pb2")
    (stubs / "megabatch_pb2_grpc.py").write_text(relative)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
