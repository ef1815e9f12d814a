"""Descriptor sources: where the gateway learns the backend's services.

Three sources give the same result, a tuple of ``ServiceDescriptor``:

- generated modules (``from_modules``), which live in the default descriptor pool;
- a ``FileDescriptorSet`` file built by ``protoc --include_imports --descriptor_set_out``
  (``from_descriptor_set``);
- the backend's server reflection (``from_reflection``, the v1alpha reflection service over
  grpc.aio).

Files from a set or from reflection go into a fresh pool of their own, so they never clash with
generated modules already imported into the default pool.

Invariant: options are always read through ``method_options``, which re-parses the serialized
options after ``google.api.annotations_pb2`` and the gateway's ``options_pb2`` are imported. A
pool built from files may otherwise hold ``google.api.http`` as an unknown field, and the rule
would read as empty.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import grpc
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from switchboard.gateway.v1 import options_pb2

__all__ = [
    "DEFAULT_MODULES",
    "DescriptorError",
    "from_descriptor_set",
    "from_modules",
    "from_reflection",
    "http_rule",
    "method_options",
    "pool_from_files",
]

Services = tuple[ServiceDescriptor, ...]

DEFAULT_MODULES = (
    "switchboard.v1.rooms_pb2",
    "switchboard.v1.chat_pb2",
    "switchboard.v1.presence_pb2",
)
# Infrastructure services a reflecting server lists; they never carry HTTP rules, and the
# gateway's own StreamShareService and UnaryTunnelService are for gateways, never for HTTP.
_INFRASTRUCTURE_PREFIXES = (
    "grpc.reflection.",
    "grpc.health.",
    "switchboard.gateway.v1.StreamShareService",
    "switchboard.gateway.v1.UnaryTunnelService",
)
# Referenced so the extensions are registered before any options are parsed.
_EXTENSIONS = (annotations_pb2.http, options_pb2.sse, options_pb2.auth, options_pb2.share)


class DescriptorError(Exception):
    """A descriptor source could not be read; the message names the source."""


def from_modules(names: Sequence[str]) -> Services:
    """Import generated ``*_pb2`` modules and return the services they define."""
    services: list[ServiceDescriptor] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise DescriptorError(f"cannot import descriptor module {name!r}: {exc}") from exc
        file = getattr(module, "DESCRIPTOR", None)
        if file is None or not hasattr(file, "services_by_name"):
            raise DescriptorError(f"module {name!r} is not a generated protobuf module")
        services.extend(file.services_by_name.values())
    return tuple(services)


def from_descriptor_set(path: str | Path) -> Services:
    """Read a ``FileDescriptorSet`` file and return every service it defines."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DescriptorError(f"cannot read descriptor set {str(path)!r}: {exc}") from exc
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    except DecodeError as exc:
        raise DescriptorError(f"{str(path)!r} is not a FileDescriptorSet: {exc}") from exc
    return _services(files, source=f"descriptor set {str(path)!r}")


async def from_reflection(channel: grpc.aio.Channel, *, deadline: float = 10.0) -> Services:
    """Ask a backend's server reflection for its services and the files defining them."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    session = _ReflectionSession(stub.ServerReflectionInfo(timeout=deadline))
    try:
        names = await session.list_services()
        files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        for name in names:
            if not name.startswith(_INFRASTRUCTURE_PREFIXES):
                await session.collect(files, file_containing_symbol=name)
    except grpc.aio.AioRpcError as exc:
        raise DescriptorError(
            f"server reflection failed: {exc.code().name}: {exc.details()}"
        ) from exc
    finally:
        session.close()
    return _services(files.values(), source="server reflection")


def pool_from_files(
    files: Iterable[descriptor_pb2.FileDescriptorProto],
) -> descriptor_pool.DescriptorPool:
    """Build a fresh pool, adding files after their dependencies.

    A dependency missing from ``files`` is taken from the default pool when it is there (for
    example ``google/protobuf/descriptor.proto``); otherwise it is an error naming it.
    """
    by_name = {file.name: file for file in files}
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str, needed_by: str) -> None:
        if name in added:
            return
        added.add(name)
        file = by_name.get(name) or _from_default_pool(name, needed_by)
        for dependency in file.dependency:
            add(dependency, name)
        pool.Add(file)

    for name in by_name:
        add(name, name)
    return pool


def method_options(method: MethodDescriptor) -> descriptor_pb2.MethodOptions:
    """The method's options with every registered extension resolved."""
    return descriptor_pb2.MethodOptions.FromString(method.GetOptions().SerializeToString())


def http_rule(method: MethodDescriptor) -> http_pb2.HttpRule | None:
    """The method's ``google.api.http`` rule, or None when it has none."""
    options = method_options(method)
    if not options.HasExtension(annotations_pb2.http):
        return None
    return options.Extensions[annotations_pb2.http]


def _services(files: Iterable[descriptor_pb2.FileDescriptorProto], *, source: str) -> Services:
    file_list = list(files)
    try:
        pool = pool_from_files(file_list)
    except (TypeError, ValueError) as exc:  # the pool rejects inconsistent files
        raise DescriptorError(f"{source} is inconsistent: {exc}") from exc
    services: list[ServiceDescriptor] = []
    for file in file_list:
        package = f"{file.package}." if file.package else ""
        services.extend(pool.FindServiceByName(package + svc.name) for svc in file.service)
    return tuple(services)


def _from_default_pool(name: str, needed_by: str) -> descriptor_pb2.FileDescriptorProto:
    try:
        found = descriptor_pool.Default().FindFileByName(name)
    except KeyError:
        raise DescriptorError(f"file {needed_by!r} imports {name!r}, which is missing") from None
    proto = descriptor_pb2.FileDescriptorProto()
    found.CopyToProto(proto)
    return proto


class _ReflectionSession:
    """One ServerReflectionInfo stream: a request, then its response, one at a time."""

    def __init__(self, call: grpc.aio.StreamStreamCall[object, object]) -> None:
        self._call = call

    async def ask(self, **request: str) -> reflection_pb2.ServerReflectionResponse:
        await self._call.write(reflection_pb2.ServerReflectionRequest(**request))
        response = await self._call.read()
        if not isinstance(response, reflection_pb2.ServerReflectionResponse):
            raise DescriptorError("server reflection ended the stream early")
        if response.HasField("error_response"):
            error = response.error_response
            raise DescriptorError(f"server reflection error for {request}: {error.error_message}")
        return response

    async def list_services(self) -> list[str]:
        response = await self.ask(list_services="")
        return [service.name for service in response.list_services_response.service]

    async def collect(
        self, files: dict[str, descriptor_pb2.FileDescriptorProto], **request: str
    ) -> None:
        """Fetch the file answering ``request`` and, transitively, the files it imports."""
        response = await self.ask(**request)
        for raw in response.file_descriptor_response.file_descriptor_proto:
            file = descriptor_pb2.FileDescriptorProto.FromString(raw)
            if file.name in files:
                continue
            files[file.name] = file
            for dependency in file.dependency:
                if dependency not in files:
                    await self.collect(files, file_by_filename=dependency)

    def close(self) -> None:
        self._call.cancel()
