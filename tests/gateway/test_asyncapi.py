"""The AsyncAPI document: valid for @asyncapi/parser, one channel per stream the gateway serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.asyncapi import render_asyncapi
from gateway.openapi import dumps
from tests.gateway.everything import DESCRIPTOR_SET
from tests.gateway.node_tools import NPM_LIMIT, ensure_node_modules, run_in_sdk, tool
from tests.gateway.test_openapi import switchboard, switchboard_texts, table_of

ROOT = Path(__file__).resolve().parents[2]


def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(switchboard_texts()[1])
    return document


@pytest.mark.timeout(NPM_LIMIT + 60)
async def test_documents_are_valid_for_the_asyncapi_parser(tmp_path: Path) -> None:
    await ensure_node_modules()
    everything = tmp_path / "everything.asyncapi.json"
    everything.write_text(dumps(render_asyncapi(table_of(DESCRIPTOR_SET))), encoding="utf-8")
    for path in (ROOT / "openapi" / "switchboard.asyncapi.json", everything):
        output = await run_in_sdk(
            tool("node"), "scripts/validate-asyncapi.mjs", str(path), limit=60
        )
        assert "valid:" in output, output
        assert '"severity":"error"' not in output, output


def test_every_streaming_route_has_its_channels() -> None:
    document = asyncapi()
    assert document["asyncapi"] == "3.0.0"
    assert set(document["channels"]) == {
        "ChatService_Subscribe.sse",
        "ChatService_Subscribe.ws",
        "ChatService_Converse.ws",
        "ChatService_ImportMessages.ws",
    }
    openapi_paths = set(switchboard()["paths"])
    for channel in document["channels"].values():
        assert channel["address"] in openapi_paths


def test_sse_channel_has_one_message_per_event_name() -> None:
    channel = asyncapi()["channels"]["ChatService_Subscribe.sse"]
    assert {"subscribed", "message_posted", "member_left", "message", "error"} <= set(
        channel["messages"]
    )
    posted = channel["messages"]["message_posted"]["payload"]
    assert posted == {"$ref": "#/components/schemas/RoomEvent"}
    error = channel["messages"]["error"]["payload"]
    assert error == {"$ref": "#/components/schemas/Status"}
    assert channel["parameters"]["room"]["description"]


def test_websocket_channel_frames_and_operations() -> None:
    document = asyncapi()
    messages = document["channels"]["ChatService_Converse.ws"]["messages"]
    client = messages["message"]["payload"]["properties"]["message"]
    assert client == {"$ref": "#/components/schemas/ConverseRequest"}
    assert messages["halfClose"]["payload"]["properties"]["halfClose"] == {"const": True}
    server = messages["result"]["payload"]["properties"]["result"]
    assert server == {"$ref": "#/components/schemas/ConverseResponse"}
    receive = document["operations"]["ChatService_Converse.clientFrames"]
    assert receive["action"] == "receive"
    assert document["operations"]["ChatService_Converse.serverFrames"]["action"] == "send"
    assert receive["x-required-permissions"] == ["messages.post"]
    assert document["servers"]["ws"]["protocol"] == "ws"
