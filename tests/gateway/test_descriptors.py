"""The three descriptor sources give services whose HTTP rules and gateway options read back."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2

from gateway.descriptors import (
    DEFAULT_MODULES,
    DescriptorError,
    from_descriptor_set,
    from_modules,
    from_reflection,
    http_rule,
    method_options,
)
from switchboard.gateway.v1 import options_pb2
from switchboard.v1 import rooms_pb2
from tests.gateway.conftest import edited_descriptor_set
from tests.gateway.echo_backend import EchoServer
from tests.gateway.everything import everything_pb2


def test_default_modules_expose_the_switchboard_services() -> None:
    services = {service.full_name for service in from_modules(DEFAULT_MODULES)}
    assert services == {
        "switchboard.v1.RoomService",
        "switchboard.v1.ChatService",
        "switchboard.v1.PresenceService",
    }


def test_module_rules_and_options_read_back() -> None:
    (rooms,) = from_modules(["switchboard.v1.rooms_pb2"])
    create = rooms.methods_by_name["CreateRoom"]
    rule = http_rule(create)
    assert rule is not None
    assert (rule.post, rule.body) == ("/v1/rooms", "room")
    auth = method_options(create).Extensions[options_pb2.auth]
    assert list(auth.permissions) == ["rooms.create"]


def test_unknown_module_is_named() -> None:
    with pytest.raises(DescriptorError, match=r"no_such\.module_pb2"):
        from_modules(["no_such.module_pb2"])


def test_descriptor_set_builds_its_own_pool(descriptor_set_file: Path) -> None:
    (service,) = from_descriptor_set(descriptor_set_file)
    assert service.full_name == "testing.v1.EverythingService"
    assert service is not everything_pb2.DESCRIPTOR.services_by_name["EverythingService"]
    rule = http_rule(service.methods_by_name["GetEverything"])
    assert rule is not None
    assert rule.get == "/v1/everything/{id}"
    assert [extra.get for extra in rule.additional_bindings] == [
        "/v2/everything/{id}",
        "/v1/colors/{color}/everything/{id}",
    ]


def test_descriptor_set_reads_gateway_options(tmp_path: Path) -> None:
    """The trap: options of a file-built pool must resolve the extensions, not read empty."""
    files = descriptor_pb2.FileDescriptorSet()
    rooms_pb2.DESCRIPTOR.CopyToProto(files.file.add())
    path = tmp_path / "rooms.binpb"
    path.write_bytes(files.SerializeToString())  # imports come from the default pool
    (rooms,) = from_descriptor_set(path)
    update = rooms.methods_by_name["UpdateRoom"]
    rule = http_rule(update)
    assert rule is not None
    assert (rule.patch, rule.body) == ("/v1/{room.name=rooms/*}", "room")
    assert list(method_options(update).Extensions[options_pb2.auth].permissions) == ["rooms.update"]


def test_method_without_rule_reads_none(tmp_path: Path) -> None:
    path = tmp_path / "edited.binpb"
    path.write_bytes(edited_descriptor_set("DeleteEverything", None))
    (service,) = from_descriptor_set(path)
    assert http_rule(service.methods_by_name["DeleteEverything"]) is None
    assert http_rule(service.methods_by_name["GetEverything"]) is not None


def test_unreadable_descriptor_set_is_named(tmp_path: Path) -> None:
    with pytest.raises(DescriptorError, match=r"missing\.binpb"):
        from_descriptor_set(tmp_path / "missing.binpb")
    garbage = tmp_path / "garbage.binpb"
    garbage.write_bytes(b"\xff\xff\xff not a descriptor set")
    with pytest.raises(DescriptorError, match=r"garbage\.binpb"):
        from_descriptor_set(garbage)


def test_missing_import_is_named(tmp_path: Path) -> None:
    files = descriptor_pb2.FileDescriptorSet()
    file = files.file.add(name="lonely.proto", package="lonely", dependency=["absent/dep.proto"])
    file.service.add(name="Lonely")
    path = tmp_path / "lonely.binpb"
    path.write_bytes(files.SerializeToString())
    with pytest.raises(DescriptorError, match=r"lonely\.proto.*absent/dep\.proto"):
        from_descriptor_set(path)


async def test_reflection_lists_backend_services(echo: EchoServer) -> None:
    async with grpc.aio.insecure_channel(echo.address) as channel:
        services = await from_reflection(channel)
    names = {service.full_name for service in services}
    assert names == {"testing.v1.EverythingService"}
    (service,) = services
    rule = http_rule(service.methods_by_name["UploadFile"])
    assert rule is not None
    assert (rule.post, rule.body, rule.response_body) == ("/v1/uploads/{name}", "file", "file")


async def test_reflection_failure_is_a_descriptor_error() -> None:
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
        with pytest.raises(DescriptorError, match="server reflection"):
            await from_reflection(channel, deadline=2.0)
