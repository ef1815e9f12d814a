"""The real grpcurl binary against a real server: reflection only, no proto files."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from services.testing import ServerHandle
from switchboard.v1 import chat_pb2
from tests.services.conftest import make_room, within

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"


async def grpcurl(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        GRPCURL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await within(process.communicate(), 20)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def json_documents(text: str) -> list[Any]:
    """grpcurl prints one pretty-printed JSON document per response message."""
    decoder = json.JSONDecoder()
    documents, index = [], 0
    text = text.strip()
    while index < len(text):
        document, end = decoder.raw_decode(text, index)
        documents.append(document)
        index = end
        while index < len(text) and text[index].isspace():
            index += 1
    return documents


async def test_list_shows_every_service(server: ServerHandle) -> None:
    code, out, err = await grpcurl("-plaintext", server.address, "list")
    assert code == 0, err
    assert set(out.split()) == {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "switchboard.v1.ChatService",
        "switchboard.v1.PresenceService",
        "switchboard.v1.RoomService",
        "switchboard.gateway.v1.StreamShareService",
        "switchboard.gateway.v1.UnaryTunnelService",
    }


async def test_describe_chat_service(server: ServerHandle) -> None:
    code, out, err = await grpcurl(
        "-plaintext", server.address, "describe", "switchboard.v1.ChatService"
    )
    assert code == 0, err
    assert "switchboard.v1.ChatService is a service" in out
    assert "returns ( stream .switchboard.v1.RoomEvent )" in out
    assert "rpc Converse ( stream .switchboard.v1.ConverseRequest )" in out


async def test_unary_create_room_and_an_error(server: ServerHandle) -> None:
    body = json.dumps({"room_id": "lobby", "room": {"display_name": "Lobby"}})
    code, out, err = await grpcurl(
        "-plaintext", "-d", body, server.address, "switchboard.v1.RoomService/CreateRoom"
    )
    assert code == 0, err
    (room,) = json_documents(out)
    assert room["name"] == "rooms/lobby"
    assert room["display_name"] == "Lobby"  # grpcurl prints proto field names
    assert room["creator"] == "anonymous"

    code, out, err = await grpcurl(
        "-plaintext",
        "-d",
        '{"room_id": "Not Valid"}',
        server.address,
        "switchboard.v1.RoomService/CreateRoom",
    )
    assert code != 0
    assert "InvalidArgument" in err
    assert "room_id 'Not Valid'" in err


async def test_server_streaming_subscribe(server: ServerHandle) -> None:
    await make_room(server)
    process = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        "-max-time",
        "2",
        "-d",
        '{"room": "rooms/lobby"}',
        server.address,
        "switchboard.v1.ChatService/Subscribe",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    head = b""
    while b'"subscribed"' not in head:  # printed once the subscription is live
        line = await within(process.stdout.readline())
        assert line, "grpcurl ended before the subscribed event"
        head += line
    posted = await within(
        server.chat.PostMessage(
            chat_pb2.PostMessageRequest(
                parent="rooms/lobby", message=chat_pb2.Message(text="hello grpcurl")
            )
        )
    )
    rest, err = await within(process.communicate())
    assert "DeadlineExceeded" in err.decode()  # -max-time ended the stream
    events = json_documents((head + rest).decode())
    assert "subscribed" in events[0]
    assert events[0]["id"].endswith("-0")
    texts = [e["message_posted"]["text"] for e in events if "message_posted" in e]
    assert texts == ["hello grpcurl"]
    (message_event,) = [e for e in events if "message_posted" in e]
    assert message_event["offset"] == str(posted.offset)
    assert message_event["id"]
