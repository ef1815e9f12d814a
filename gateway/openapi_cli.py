"""``python -m gateway.openapi_cli --out openapi/``: write the committed API documents.

Compiles the protos under ``--proto-root`` (default ``proto/``) with grpc_tools.protoc into a
descriptor set with ``--include_source_info --include_imports`` (the generated modules carry
no comments), builds the same route table the gateway builds from that set, and writes
``switchboard.openapi.json`` and ``switchboard.asyncapi.json`` into ``--out``.

Invariant: the output depends only on the protos and the options given; two runs write the
same bytes (the drift check relies on it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import google.api
import grpc_tools
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from gateway.asyncapi import render_asyncapi
from gateway.comments import Comments
from gateway.descriptors import from_descriptor_set
from gateway.httprule import RouteTable
from gateway.openapi import DocumentInfo, dumps, render_openapi
from gateway.routes import Route, build_route_table
from gateway.transcode import JsonOptions

__all__ = [
    "ASYNCAPI_FILE",
    "OPENAPI_FILE",
    "Documents",
    "ProtocError",
    "compile_descriptor_set",
    "main",
    "render",
    "route_table_of",
]

OPENAPI_FILE = "switchboard.openapi.json"
ASYNCAPI_FILE = "switchboard.asyncapi.json"
_BACKEND = "documented"


class ProtocError(RuntimeError):
    """protoc rejected the protos; its message was printed to stderr."""


def _include_paths(proto_root: Path) -> list[Path]:
    googleapis = Path(next(iter(google.api.__path__))).parent.parent
    well_known = Path(next(iter(grpc_tools.__path__))) / "_proto"
    return [proto_root, googleapis, well_known]


def compile_descriptor_set(proto_root: Path, out: Path) -> descriptor_pb2.FileDescriptorSet:
    """Compile every ``.proto`` under ``proto_root`` (comments and imports included)."""
    files = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    files = [f for f in files if "node_modules" not in f and not f.startswith(".")]
    if not files:
        raise ProtocError(f"no .proto files under {proto_root}")
    args = [
        "grpc_tools.protoc",
        *(f"--proto_path={path}" for path in _include_paths(proto_root)),
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise ProtocError(f"protoc failed on the protos under {proto_root}")
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


@dataclass(frozen=True)
class Documents:
    """The OpenAPI and AsyncAPI documents of one descriptor set, as committed text."""

    openapi: str
    asyncapi: str


def route_table_of(descriptor_set: Path) -> RouteTable[Route]:
    """The gateway's route table for the services of a descriptor set file."""
    services = from_descriptor_set(descriptor_set)
    return build_route_table(services, backend_of=lambda _service: _BACKEND)


def render(proto_root: Path, *, json_options: JsonOptions | None = None) -> Documents:
    """Both documents for the protos under ``proto_root``."""
    with tempfile.TemporaryDirectory(prefix="openapi-") as scratch:
        path = Path(scratch) / "api.binpb"
        descriptor_set = compile_descriptor_set(proto_root, path)
        table = route_table_of(path)
    comments = Comments.from_files(descriptor_set.file)
    info = DocumentInfo()
    openapi = render_openapi(table, json_options=json_options, comments=comments, info=info)
    asyncapi = render_asyncapi(table, json_options=json_options, comments=comments, info=info)
    return Documents(dumps(openapi), dumps(asyncapi))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.openapi_cli",
        description="Write the OpenAPI 3.1 and AsyncAPI 3.0 documents of the protos.",
    )
    parser.add_argument("--out", type=Path, default=Path("openapi"), help="output directory")
    parser.add_argument("--proto-root", type=Path, default=Path("proto"), help="proto directory")
    parser.add_argument(
        "--proto-names", action="store_true", help="document proto field names (use_proto_names)"
    )
    args = parser.parse_args(argv)
    try:
        documents = render(
            args.proto_root, json_options=JsonOptions(use_proto_names=args.proto_names)
        )
    except ProtocError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / OPENAPI_FILE).write_text(documents.openapi, encoding="utf-8")
    (args.out / ASYNCAPI_FILE).write_text(documents.asyncapi, encoding="utf-8")
    print(f"wrote {args.out / OPENAPI_FILE} and {args.out / ASYNCAPI_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
