"""The `testing.v1` test API, compiled at import time.

Compiles ``tests/gateway/protos/testing/v1/everything.proto`` with grpc_tools.protoc
into a temporary directory (removed at exit), puts that directory on ``sys.path`` and
exposes the generated modules plus a serialized FileDescriptorSet (with imports), so
tests can build a descriptor pool the same way the gateway does for a real backend.

    from tests.gateway.everything import everything_pb2, everything_pb2_grpc, DESCRIPTOR_SET
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import google.api
import grpc_tools
from google.api import annotations_pb2  # noqa: F401  (registers the http option before parsing)
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).parent / "protos"
PROTO_FILE = "testing/v1/everything.proto"


def _include_paths() -> list[str]:
    googleapis_root = Path(next(iter(google.api.__path__))).parent.parent
    well_known = Path(next(iter(grpc_tools.__path__))) / "_proto"
    return [str(PROTO_ROOT), str(googleapis_root), str(well_known)]


def _compile(out_dir: Path) -> bytes:
    descriptor_path = out_dir / "everything.binpb"
    args = [
        "grpc_tools.protoc",
        *(f"--proto_path={path}" for path in _include_paths()),
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "--include_imports",
        f"--descriptor_set_out={descriptor_path}",
        PROTO_FILE,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed to compile {PROTO_ROOT / PROTO_FILE}")
    return descriptor_path.read_bytes()


def _load() -> tuple[ModuleType, ModuleType, bytes]:
    out_dir = Path(tempfile.mkdtemp(prefix="everything-proto-"))
    atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    descriptor_set = _compile(out_dir)
    sys.path.insert(0, str(out_dir))
    pb2 = importlib.import_module("testing.v1.everything_pb2")
    pb2_grpc = importlib.import_module("testing.v1.everything_pb2_grpc")
    return pb2, pb2_grpc, descriptor_set


everything_pb2, everything_pb2_grpc, DESCRIPTOR_SET = _load()

__all__ = ["DESCRIPTOR_SET", "PROTO_FILE", "PROTO_ROOT", "everything_pb2", "everything_pb2_grpc"]
