"""REST unary calls through the backend's UnaryTunnelService (gateway/tunnel.py).

The real Switchboard service behind real gateways: one with the tunnel (the default) and one
with ``tunnel=False`` (``--no-tunnel``), each asked the same HTTP requests, must give the same
answers (status, JSON body up to ids and timestamps, Content-Type and echoed metadata). The
tunnel's counters (``Tunnel.calls_sent``, ``batches_sent``, ``supported``) prove which path a
call took: that the tunnel carried it, batched with others, or that it went plain. The echo
backend with a tunnel (tests/gateway/tunnel_backend.py) shows metadata, error details and
deadlines crossing the tunnel exactly as they cross a plain call; the echo backend without one
shows the fallback. The last tests pin bugs found while writing these: large metadata ending
the tunnel for every call on it, a backend refusing the Tunnel call itself, one replica
taking every call.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from gateway.app import UPSTREAM
from gateway.authconfig import AuthConfig
from gateway.config import ConfigError, Settings, settings_from_args, settings_from_toml
from gateway.tunnel import MAX_INLINE_BYTES, Tunnel
from services.config import GRPC_OVERHEAD_BYTES, ServiceConfig
from services.testing import ServerHandle, running_server
from switchboard.v1 import chat_pb2, rooms_pb2
from tests.gateway.conftest import SERVICES, echo_settings
from tests.gateway.echo_backend import ECHO_DOMAIN, ECHO_REASON, EchoServer
from tests.gateway.signing import deployment_config, token
from tests.gateway.stream_gateway import Gateway, eventually, running_gateway
from tests.gateway.tunnel_backend import running_tunnel_echo

ROOM = "rooms/lobby"
LOBBY = "/v1/rooms/lobby"
MESSAGES = "/v1/rooms/lobby/messages"
FORWARD = "?direction=DIRECTION_FORWARD&pageSize=1000"
TUNNEL_LOGGER = "gateway.tunnel"
# Values that differ between two runs of the same requests (ids, times, version tags).
VOLATILE_KEYS = frozenset({"createTime", "updateTime", "deleteTime", "etag", "epoch"})
MESSAGE_NAME = re.compile(r"rooms/[^/]+/messages/[0-9a-f]+")
REQUEST_SECONDS = 10.0  # no request may take longer: a hang fails the test, not the suite


# --- helpers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What an HTTP client sees: the status, the body and the headers that carry meaning."""

    status: int
    body: Any  # parsed JSON, or the raw bytes of another content type
    headers: Mapping[str, str]  # lower-cased names: Content-Type, WWW-Authenticate, Grpc-*


def _relevant(name: str) -> bool:
    lower = name.lower()
    return lower in ("content-type", "www-authenticate") or lower.startswith(
        ("grpc-metadata-", "grpc-trailer-")
    )


async def ask(
    gateway: Gateway,
    method: str,
    path: str,
    *,
    json: Any = None,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """One HTTP request to ``gateway``, answered within REQUEST_SECONDS."""
    async with asyncio.timeout(REQUEST_SECONDS):
        async with gateway.session.request(
            method, gateway.url(path), json=json, data=data, headers=headers
        ) as response:
            raw = await response.read()
            body = orjson.loads(raw) if response.content_type == "application/json" else raw
            kept = {k.lower(): v for k, v in response.headers.items() if _relevant(k)}
            return Answer(response.status, body, kept)


def normalized(answers: list[Answer], volatile: frozenset[str] = VOLATILE_KEYS) -> list[Answer]:
    """``answers`` with each id, time and version tag replaced by its order of first appearance,
    so two runs of the same requests compare equal and references between answers still do."""
    seen: dict[str, str] = {}

    def placeholder(value: str) -> str:
        return seen.setdefault(value, f"<{len(seen)}>")

    def walk(node: Any, key: str | None = None) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, str) and key in volatile:
            return placeholder(node)
        if isinstance(node, str):  # a message's name, alone or in an error message
            return MESSAGE_NAME.sub(lambda found: placeholder(found.group()), node)
        return node

    return [Answer(a.status, walk(a.body), a.headers) for a in answers]


def tunnel_of(gateway: Gateway, backend: str) -> Tunnel:
    tunnel = gateway.runner.app[UPSTREAM].tunnel(backend)
    assert tunnel is not None, "the gateway has no tunnel to " + backend
    return tunnel


@dataclass
class Side:
    """A Switchboard service and the gateway in front of it."""

    service: ServerHandle
    gateway: Gateway

    @property
    def tunnel(self) -> Tunnel | None:
        return self.gateway.runner.app[UPSTREAM].tunnel(self.service.address)


@asynccontextmanager
async def side_by_side(
    config: ServiceConfig | None = None,
    *,
    auth: AuthConfig | None = None,
    gateway_auth: bool = True,
) -> AsyncIterator[tuple[Side, Side]]:
    """Two fresh services, one behind a gateway with the tunnel, one behind ``--no-tunnel``."""
    async with (
        running_server(config, auth=auth) as tunnelled,
        running_server(config, auth=auth) as plain,
    ):
        with_auth = auth if gateway_auth else None
        async with (
            running_gateway(Settings(backends={"*": (tunnelled.address,)}, auth=with_auth)) as gw,
            running_gateway(
                Settings(backends={"*": (plain.address,)}, auth=with_auth, tunnel=False)
            ) as plain_gw,
        ):
            yield Side(tunnelled, gw), Side(plain, plain_gw)


async def both(
    sides: tuple[Side, Side],
    script: Callable[[Gateway], Awaitable[list[Answer]]],
    volatile: frozenset[str] = VOLATILE_KEYS,
) -> list[Answer]:
    """Runs ``script`` through both gateways; asserts the answers agree (up to the values of
    the ``volatile`` keys); the tunnel's."""
    tunnelled, plain = sides
    through_tunnel = await script(tunnelled.gateway)
    without = await script(plain.gateway)
    assert normalized(through_tunnel, volatile) == normalized(without, volatile)
    return through_tunnel


async def create_lobby(gateway: Gateway, headers: Mapping[str, str] | None = None) -> None:
    created = await ask(gateway, "POST", "/v1/rooms?roomId=lobby", json={}, headers=headers)
    assert created.status == 201, created.body


def bearer(user: str, role: str = "member", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, (role,), **claims)}"}


# --- 1. the same answers with and without the tunnel ---------------------------------------------


async def _rooms_and_messages(gateway: Gateway) -> list[Answer]:
    answers = [
        await ask(gateway, "POST", "/v1/rooms?roomId=lobby", json={"displayName": "Lobby"}),
        await ask(gateway, "GET", LOBBY),
        await ask(gateway, "POST", "/v1/rooms?roomId=lobby", json={}),
        await ask(gateway, "POST", "/v1/rooms?roomId=Not%20An%20Id", json={}),
        await ask(gateway, "POST", MESSAGES, json={"text": "hello"}),
        await ask(gateway, "POST", MESSAGES, json={"text": "again", "attributes": {"k": "v"}}),
        await ask(gateway, "GET", MESSAGES + FORWARD),
        await ask(gateway, "GET", "/v1/rooms/nope"),
        await ask(gateway, "POST", MESSAGES, json={"text": ""}),
        await ask(
            gateway,
            "POST",
            MESSAGES,
            data=b"{not json",
            headers={"Content-Type": "application/json"},
        ),
        await ask(
            gateway,
            "PATCH",
            LOBBY + "?updateMask=description",
            json={"description": "x", "etag": "stale"},
        ),
        await ask(gateway, "PATCH", LOBBY, json={"description": "hi"}),
    ]
    hello = answers[4].body["name"]
    answers.append(await ask(gateway, "PATCH", f"/v1/{hello}", json={"text": "edited"}))
    answers.append(await ask(gateway, "DELETE", f"/v1/{answers[5].body['name']}"))
    answers.append(await ask(gateway, "GET", MESSAGES + FORWARD))
    return answers


async def test_rest_answers_are_the_same_through_the_tunnel_and_without_it() -> None:
    async with side_by_side() as sides:
        tunnelled, plain = sides
        answers = await both(sides, _rooms_and_messages)
        tunnel = tunnelled.tunnel
        assert tunnel is not None
        assert plain.tunnel is None  # --no-tunnel: every call is plain
    statuses = [answer.status for answer in answers]
    assert statuses == [201, 200, 409, 400, 201, 201, 200, 404, 400, 400, 400, 200, 200, 200, 200]
    assert all(a.headers["content-type"] == "application/json" for a in answers)
    missing = answers[7].body
    assert (missing["code"], missing["message"]) == (5, "room rooms/nope does not exist")
    assert missing["details"][0]["@type"] == "type.googleapis.com/google.rpc.ResourceInfo"
    empty = answers[8].body
    assert empty["details"][0]["fieldViolations"][0]["field"] == "message.text"
    stale = answers[10].body
    assert stale["code"] == 9  # FAILED_PRECONDITION, with its PreconditionFailure
    assert stale["details"][0]["@type"] == "type.googleapis.com/google.rpc.PreconditionFailure"
    assert [m["text"] for m in answers[-1].body["messages"]] == ["edited"]
    # every request but the malformed body (answered by the gateway) went through the tunnel
    assert tunnel.calls_sent == len(answers) - 1
    assert tunnel.supported


async def test_metadata_details_and_raw_bodies_cross_the_tunnel_as_a_plain_call() -> None:
    blob = base64.b64encode(b"\x00\x01\xff").decode()
    echoed = {
        "Grpc-Metadata-Echo-Initial-Etag": "v1",
        "Grpc-Metadata-Echo-Initial-Blob-Bin": base64.b64encode(b"raw").decode(),
        "Grpc-Metadata-Echo-Trailer-Sum": "s1",
    }

    async def script(gateway: Gateway) -> list[Answer]:
        return [
            await ask(gateway, "GET", "/v1/everything/x?int32Value=5", headers=echoed),
            await ask(gateway, "GET", "/v1/everything/x", headers={**echoed, "TE": "trailers"}),
            await ask(
                gateway,
                "GET",
                "/v1/everything/x",
                headers={
                    **echoed,
                    "Grpc-Metadata-Echo-Code": "NOT_FOUND",
                    "Grpc-Metadata-Echo-Message": "gone",
                },
            ),
            await ask(
                gateway,
                "POST",
                "/v1/everything",
                json={"id": "c", "labels": {"k": "v"}},
                headers={"Grpc-Metadata-Echo-Http-Code": "201"},
            ),
            await ask(
                gateway,
                "GET",
                "/v1/everything/x",
                headers={"Grpc-Metadata-Echo-Code": "UNAUTHENTICATED"},
            ),
            await ask(
                gateway,
                "POST",
                "/v1/raw",
                data=b"\x89PNG raw",
                headers={"Content-Type": "image/png"},
            ),
            await ask(
                gateway,
                "GET",
                "/v1/everything/who",
                headers={
                    "Authorization": "Bearer abc",
                    "Grpc-Metadata-Tenant": "acme",
                    "Grpc-Metadata-Blob-Bin": blob,
                    "X-Request-Id": "req-42",
                },
            ),
        ]

    async with (
        running_tunnel_echo(SERVICES) as echo,
        running_gateway(echo_settings(echo)) as gw,
        running_gateway(echo_settings(echo, tunnel=False)) as plain_gw,
    ):
        through_tunnel = await script(gw)
        tunnelled_metadata = echo.last("GetEverything").metadata
        without = await script(plain_gw)
        plain_metadata = echo.last("GetEverything").metadata
        tunnel = tunnel_of(gw, echo.address)
    assert through_tunnel == without
    ok, with_trailers, not_found, created, unauthenticated, raw, _ = through_tunnel
    assert (ok.status, ok.body["int32Value"]) == (200, 5)
    assert ok.headers["grpc-metadata-etag"] == "v1"
    assert ok.headers["grpc-metadata-blob-bin"] == base64.b64encode(b"raw").decode()
    assert "grpc-trailer-sum" not in ok.headers
    assert with_trailers.headers["grpc-trailer-sum"] == "s1"
    assert not_found.status == 404
    assert (not_found.body["code"], not_found.body["message"]) == (5, "gone")
    info, bad_request = not_found.body["details"]
    assert (info["reason"], info["domain"]) == (ECHO_REASON, ECHO_DOMAIN)
    assert bad_request["fieldViolations"] == [{"field": "id", "description": "bad id"}]
    assert not_found.headers["grpc-metadata-etag"] == "v1"  # an error's metadata too
    assert (created.status, created.body["labels"]) == (201, {"k": "v"})
    assert unauthenticated.status == 401
    assert unauthenticated.headers["www-authenticate"] == "Bearer"
    assert (raw.status, raw.body, raw.headers["content-type"]) == (200, b"\x89PNG raw", "image/png")
    for key in ("authorization", "tenant", "blob-bin", "x-request-id", "x-forwarded-for"):
        assert tunnelled_metadata[key] == plain_metadata[key], key  # what the backend got
    assert tunnelled_metadata["blob-bin"] == b"\x00\x01\xff"
    assert tunnel.calls_sent == len(through_tunnel)
    assert tunnel.supported


# --- 2. many concurrent calls share batches ---------------------------------------------------


async def test_two_hundred_concurrent_posts_are_batched_and_each_gets_its_own_answer() -> None:
    async with side_by_side() as (side, _):
        await create_lobby(side.gateway)
        tunnel = side.tunnel
        assert tunnel is not None
        calls, batches = tunnel.calls_sent, tunnel.batches_sent
        texts = [f"message {n}" for n in range(200)]
        answers = await asyncio.gather(
            *(ask(side.gateway, "POST", MESSAGES, json={"text": text}) for text in texts)
        )
        sent, in_batches = tunnel.calls_sent - calls, tunnel.batches_sent - batches
        listed = await ask(side.gateway, "GET", MESSAGES + FORWARD)
    assert [answer.status for answer in answers] == [201] * 200
    assert [answer.body["text"] for answer in answers] == texts  # each reply is its own call's
    offsets = sorted(int(answer.body["offset"]) for answer in answers)
    assert offsets == list(range(1, 201))  # distinct and contiguous
    by_offset = {answer.body["offset"]: answer.body for answer in answers}
    assert listed.status == 200
    assert listed.body["messages"] == [by_offset[str(offset)] for offset in range(1, 201)]
    assert sent == 200
    assert in_batches < sent, f"{sent} calls in {in_batches} batches: nothing was batched"


# --- 3. a backend without UnaryTunnelService ------------------------------------------------------


async def test_a_backend_without_the_tunnel_gets_plain_calls_and_one_warning(
    echo: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TUNNEL_LOGGER)
    async with running_gateway(echo_settings(echo)) as gw:
        tunnel = tunnel_of(gw, echo.address)
        first = await asyncio.gather(
            *(ask(gw, "GET", f"/v1/everything/a{n}?int32Value={n}") for n in range(5))
        )
        # no call is written before the tunnel opens, so no grpc race on the first write
        assert not any(r.getMessage().endswith("ended: INTERNAL") for r in caplog.records)
        assert not tunnel.supported
        sent = tunnel.calls_sent
        later = [await ask(gw, "POST", "/v1/everything", json={"id": f"b{n}"}) for n in range(3)]
        failed = await ask(
            gw,
            "GET",
            "/v1/everything/x",
            headers={"Grpc-Metadata-Echo-Code": "NOT_FOUND", "Grpc-Metadata-Echo-Message": "gone"},
        )
        assert tunnel.calls_sent == sent  # nothing more was written to a tunnel
    assert [(a.status, a.body["id"], a.body["int32Value"]) for a in first] == [
        (200, f"a{n}", n) for n in range(5)
    ]
    assert [(a.status, a.body["id"]) for a in later] == [(200, f"b{n}") for n in range(3)]
    assert (failed.status, failed.body["message"]) == (404, "gone")
    assert failed.body["details"][0]["reason"] == ECHO_REASON
    assert [call.method.rpartition("/")[2] for call in echo.calls] == [
        *["GetEverything"] * 5,
        *["CreateEverything"] * 3,
        "GetEverything",
    ]  # every request reached the backend once, as a plain call
    mentions = [r for r in caplog.records if "UnaryTunnelService" in r.getMessage()]
    assert len(mentions) == 1, [r.getMessage() for r in mentions]
    (warning,) = mentions
    assert (warning.name, warning.levelno) == (TUNNEL_LOGGER, logging.WARNING)
    assert echo.address in warning.getMessage()


# --- 4. requests too big to go inline -----------------------------------------------------------


async def test_a_request_over_max_inline_goes_plain_and_gets_the_same_answer() -> None:
    limit = ServiceConfig().max_message_bytes  # the service's own limit on a message text
    assert limit > MAX_INLINE_BYTES + 10_000
    big = "b" * (MAX_INLINE_BYTES + 10_000)  # over MAX_INLINE_BYTES, within the service's limit
    too_big = "t" * (limit + 1)  # over the service's limit, within its gRPC receive limit
    inline = "i" * (MAX_INLINE_BYTES - 1_000)

    async def script(gateway: Gateway) -> list[Answer]:
        await create_lobby(gateway)
        return [
            await ask(gateway, "POST", MESSAGES, json={"text": big}),
            await ask(gateway, "POST", MESSAGES, json={"text": too_big}),
        ]

    async with side_by_side() as sides:
        tunnel = sides[0].tunnel
        assert tunnel is not None
        accepted, refused = await both(sides, script)
        assert tunnel.calls_sent == 1  # only the CreateRoom went through the tunnel
        small = await ask(sides[0].gateway, "POST", MESSAGES, json={"text": inline})
        assert tunnel.calls_sent == 2  # under MAX_INLINE_BYTES: through the tunnel again
    assert (accepted.status, len(accepted.body["text"])) == (201, len(big))
    assert refused.status == 400
    assert refused.body["message"] == (
        f"message.text is {limit + 1} bytes of UTF-8; the limit is {limit}"
    )
    assert refused.body["details"][0]["fieldViolations"][0]["field"] == "message.text"
    assert (small.status, small.body["text"], small.body["offset"]) == (201, inline, "2")


# --- 5. the backend restarting ------------------------------------------------------------------


async def test_a_stopped_backend_is_503_at_once_and_a_restarted_one_is_reached_again() -> None:
    async with running_server() as first:
        port = int(first.address.rpartition(":")[2])
        await first.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
        async with running_gateway(Settings(backends={"*": (first.address,)})) as gw:
            tunnel = tunnel_of(gw, first.address)
            posted = await ask(gw, "POST", MESSAGES, json={"text": "before"})
            assert posted.status == 201
            assert tunnel.calls_sent == 1
            await first.shutdown()  # as on SIGTERM: health, tunnels drained, engine, stop
            for _ in range(3):  # the tunnel's end and each new attempt: no hang, 503
                down = await ask(gw, "POST", MESSAGES, json={"text": "while down"})
                assert down.status == 503, down.body
                assert down.body["code"] == 14
                assert down.headers["content-type"] == "application/json"
            async with running_server(port=port) as second:
                await second.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
                refused: list[int] = []

                async def reached() -> bool:
                    answer = await ask(gw, "POST", MESSAGES, json={"text": "after"})
                    if answer.status != 201:
                        refused.append(answer.status)
                    return answer.status == 201

                await eventually(reached, within=15.0)  # the channel's reconnect backoff
                sent = tunnel.calls_sent
                again = await ask(gw, "POST", MESSAGES, json={"text": "again"})
                listed = await ask(gw, "GET", MESSAGES + FORWARD)
                assert tunnel.calls_sent == sent + 2  # through the new tunnel
    assert set(refused) <= {503}
    assert (again.status, again.body["offset"]) == (201, "2")  # the new backend's room
    assert [m["text"] for m in listed.body["messages"]] == ["after", "again"]


# --- 6. auth: each tunnelled call is its caller's ---------------------------------------------


async def test_concurrent_users_through_one_tunnel_each_post_as_themselves(tmp_path: Path) -> None:
    config = deployment_config(tmp_path)
    users = ("alice", "bob", "carol")
    headers = {user: bearer(user) for user in users}
    viewer = bearer("victor", "viewer")
    async with side_by_side(auth=config) as (side, _):
        await create_lobby(side.gateway, headers["alice"])
        tunnel = side.tunnel
        assert tunnel is not None
        calls, batches = tunnel.calls_sent, tunnel.batches_sent
        wanted = [(user, f"{user} {n}") for n in range(40) for user in users]
        answers = await asyncio.gather(
            *(
                ask(side.gateway, "POST", MESSAGES, json={"text": text}, headers=headers[user])
                for user, text in wanted
            )
        )
        sent, in_batches = tunnel.calls_sent - calls, tunnel.batches_sent - batches
        refused = await asyncio.gather(
            *(
                ask(side.gateway, "POST", MESSAGES, json={"text": "no"}, headers=viewer)
                for _ in "ab"
            )
        )
        assert tunnel.calls_sent == calls + sent  # the gateway refused them itself
        listed = await ask(side.gateway, "GET", MESSAGES + FORWARD, headers=headers["bob"])
    assert [(a.status, a.body["sender"], a.body["text"]) for a in answers] == [
        (201, user, text) for user, text in wanted
    ]
    for answer in refused:
        assert (answer.status, answer.body["code"]) == (403, 7)
        assert answer.body["message"] == "permission 'messages.post' required"
    assert len(listed.body["messages"]) == len(wanted)
    assert all(m["text"].startswith(m["sender"] + " ") for m in listed.body["messages"])
    assert sent == len(wanted)
    assert in_batches < sent  # callers of different identities shared batches


async def test_the_service_authorizes_each_tunnelled_call_on_its_own(tmp_path: Path) -> None:
    """The gateway checks no token here: only the service's per-call checks decide."""
    config = deployment_config(tmp_path)
    alice, bob, viewer = bearer("alice"), bearer("bob"), bearer("victor", "viewer")
    expired = bearer("alice", ttl=-120)

    async def script(gateway: Gateway) -> list[Answer]:
        await create_lobby(gateway, alice)
        original = await ask(gateway, "POST", MESSAGES, json={"text": "mine"}, headers=alice)
        path = f"/v1/{original.body['name']}"
        rounds = await asyncio.gather(
            *(
                ask(gateway, method, target, json=body, headers=who)
                for _ in range(10)
                for method, target, body, who in (
                    ("POST", MESSAGES, {"text": "from alice"}, alice),
                    ("POST", MESSAGES, {"text": "from victor"}, viewer),
                    ("POST", MESSAGES, {"text": "from nobody"}, None),
                    ("POST", MESSAGES, {"text": "expired"}, expired),
                    ("PATCH", path, {"text": "bob was here"}, bob),
                    ("POST", MESSAGES, {"text": "from bob"}, bob),
                )
            )
        )
        return [original, *rounds]

    async with side_by_side(auth=config, gateway_auth=False) as sides:
        answers = await both(sides, script, VOLATILE_KEYS | {"offset"})  # concurrent posts
        tunnel = sides[0].tunnel
        assert tunnel is not None
        assert tunnel.calls_sent == 2 + len(answers) - 1  # CreateRoom, "mine", the rounds
    original, *rounds = answers
    assert (original.status, original.body["sender"]) == (201, "alice")
    for n in range(10):
        by_alice, by_viewer, anonymous, late, edit, by_bob = rounds[6 * n : 6 * n + 6]
        assert (by_alice.status, by_alice.body["sender"]) == (201, "alice")
        assert (by_bob.status, by_bob.body["sender"]) == (201, "bob")
        assert by_viewer.status == 403
        assert by_viewer.body["message"] == "permission 'messages.post' required"
        assert (anonymous.status, anonymous.headers["www-authenticate"]) == (401, "Bearer")
        assert (late.status, late.body["code"]) == (401, 16)
        assert "token expired" in late.body["message"]
        assert edit.status == 403
        assert edit.body["message"].startswith("only the sender (alice) or an administrator")


# --- 7. deadlines ---------------------------------------------------------------------------------


async def test_a_tiny_deadline_is_504_and_the_tunnel_keeps_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The tunnel's own timer ends the call (a plain call's 1 ns deadline is rounded up to
    grpc's millisecond clock, so a fast backend may still answer it: no comparison here)."""
    tiny = {"Grpc-Timeout": "1n"}
    caplog.set_level(logging.INFO, logger=TUNNEL_LOGGER)
    async with running_server() as service:
        await service.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
        async with running_gateway(Settings(backends={"*": (service.address,)})) as gw:
            tunnel = tunnel_of(gw, service.address)
            timed_out = await asyncio.gather(
                *(ask(gw, "GET", LOBBY, headers=tiny) for _ in range(20))
            )
            sent = tunnel.calls_sent  # a batch of timed-out calls may still be being written
            fine = await ask(gw, "GET", LOBBY)
            after = await ask(gw, "POST", MESSAGES, json={"text": "still here"})
            assert tunnel.calls_sent >= sent + 2
    assert not [r for r in caplog.records if "ended" in r.getMessage()]  # the same Tunnel call
    for answer in timed_out:
        assert answer.status == 504
        assert answer.body == {"code": 4, "message": "Deadline Exceeded", "details": []}
        assert answer.headers["content-type"] == "application/json"
    assert (fine.status, fine.body["name"]) == (200, "rooms/lobby")
    assert (after.status, after.body["text"], after.body["offset"]) == (201, "still here", "1")


async def test_a_stalled_tunnelled_call_ends_at_its_deadline_without_holding_up_others() -> None:
    stall = {"Grpc-Timeout": "2S", "Grpc-Metadata-Echo-Stall": "1"}
    finished: list[str] = []

    async def tracked(name: str, answer: Awaitable[Answer]) -> Answer:
        got = await answer
        finished.append(name)
        return got

    async with (
        running_tunnel_echo(SERVICES) as echo,
        running_gateway(echo_settings(echo)) as gw,
    ):
        tunnel = tunnel_of(gw, echo.address)
        stalled, *quick = await asyncio.gather(
            tracked("stalled", ask(gw, "GET", "/v1/everything/s", headers=stall)),
            *(tracked(f"q{n}", ask(gw, "GET", f"/v1/everything/q{n}")) for n in range(5)),
        )
        after = await ask(gw, "GET", "/v1/everything/after")
        assert tunnel.calls_sent == 7
    assert stalled.status == 504
    assert stalled.body == {"code": 4, "message": "Deadline Exceeded", "details": []}
    assert [(a.status, a.body["id"]) for a in quick] == [(200, f"q{n}") for n in range(5)]
    assert finished[-1] == "stalled"  # the quick calls were answered while it waited
    assert (after.status, after.body["id"]) == (200, "after")


# --- 8. configuration ---------------------------------------------------------------------------


def test_no_tunnel_flag_and_toml_turn_the_tunnel_off(tmp_path: Path) -> None:
    assert settings_from_args(["--backend", "127.0.0.1:1", "--no-auth"]).tunnel is True
    flagged = settings_from_args(["--backend", "127.0.0.1:1", "--no-auth", "--no-tunnel"])
    assert flagged.tunnel is False
    config = tmp_path / "gateway.toml"
    config.write_text('tunnel = false\n[backends]\n"*" = ["127.0.0.1:1"]\n')
    assert settings_from_toml(config).tunnel is False
    config.write_text('tunnel = true\n[backends]\n"*" = ["127.0.0.1:1"]\n')
    assert settings_from_toml(config).tunnel is True
    config.write_text('tunnel = "no"\n[backends]\n"*" = ["127.0.0.1:1"]\n')
    with pytest.raises(ConfigError, match=r"\btunnel\b"):
        settings_from_toml(config)


# --- the backend's message limits ----------------------------------------------------------------


async def test_batches_stay_within_the_backends_receive_limit() -> None:
    """A service whose gRPC receive limit is its smallest (64 KiB over a 16 KiB text limit):
    many requests just under MAX_INLINE_BYTES at once all go through the tunnel and succeed;
    a request over the receive limit goes plain and fails alone, as without the tunnel."""
    config = ServiceConfig(max_message_bytes=MAX_INLINE_BYTES)
    near_inline = "n" * (MAX_INLINE_BYTES - 1_000)
    over_the_receive_limit = "o" * (MAX_INLINE_BYTES + GRPC_OVERHEAD_BYTES + 1_000)

    async def script(gateway: Gateway) -> list[Answer]:
        await create_lobby(gateway)
        return [await ask(gateway, "POST", MESSAGES, json={"text": over_the_receive_limit})]

    async with side_by_side(config) as sides:
        (refused,) = await both(sides, script)
        tunnel = sides[0].tunnel
        assert tunnel is not None
        sent = tunnel.calls_sent
        answers = await asyncio.gather(
            *(
                ask(sides[0].gateway, "POST", MESSAGES, json={"text": near_inline})
                for _ in range(40)
            )
        )
        assert tunnel.calls_sent == sent + 40
    assert (refused.status, refused.body["code"]) == (429, 8)  # RESOURCE_EXHAUSTED, from gRPC
    assert [answer.status for answer in answers] == [201] * 40


async def test_replies_that_fit_alone_are_not_failed_by_being_batched() -> None:
    """Twenty ~100 KB ListMessages replies at once (the service's send limit is 128 KiB)."""
    async with side_by_side() as sides:
        for side in sides:
            await create_lobby(side.gateway)
            for n in range(2):
                posted = await ask(side.gateway, "POST", MESSAGES, json={"text": f"{n}" * 50_000})
                assert posted.status == 201

        async def script(gateway: Gateway) -> list[Answer]:
            return list(await asyncio.gather(*(ask(gateway, "GET", MESSAGES) for _ in range(20))))

        answers = await both(sides, script)
    assert [answer.status for answer in answers] == [200] * 20
    assert all(len(answer.body["messages"]) == 2 for answer in answers)


async def test_a_request_with_large_metadata_fails_alone_as_a_plain_call_would() -> None:
    large = {f"Grpc-Metadata-X{n}": "v" * 8_000 for n in range(20)}  # 160 KB of metadata
    async with side_by_side() as (side, plain):
        for gateway in (side.gateway, plain.gateway):
            await create_lobby(gateway)
        refused = await ask(plain.gateway, "POST", MESSAGES, json={"text": "x"}, headers=large)
        alone = await ask(side.gateway, "POST", MESSAGES, json={"text": "x"}, headers=large)
        answers = await asyncio.gather(
            ask(side.gateway, "POST", MESSAGES, json={"text": "x"}, headers=large),
            *(ask(side.gateway, "POST", MESSAGES, json={"text": "t"}) for _ in range(20)),
        )
    assert (refused.status, refused.body["code"]) == (429, 8)  # grpc's metadata size limit
    assert (alone.status, alone.body["code"]) == (429, 8)  # it went plain, as it must
    assert [answer.status for answer in answers[1:]] == [201] * 20  # the others unharmed


class TokenGate(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # generic in the stubs
    """Refuses every call without an authorization entry, before looking the method up: what
    many backends' own auth interceptors do (Switchboard's lets unknown methods through)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        if any(key == "authorization" for key, _ in details.invocation_metadata or ()):
            return await continuation(details)

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no token")

        return grpc.stream_stream_rpc_method_handler(refuse)


async def test_a_backend_refusing_the_tunnel_call_itself_still_gets_plain_calls() -> None:
    headers = {"Authorization": "Bearer abc"}
    async with (
        running_tunnel_echo(SERVICES, tunnel=False, interceptors=(TokenGate(),)) as echo,
        running_gateway(echo_settings(echo)) as gw,
    ):
        answers = [await ask(gw, "GET", f"/v1/everything/r{n}", headers=headers) for n in range(3)]
    assert [(a.status, a.body.get("id")) for a in answers] == [(200, f"r{n}") for n in range(3)]


async def test_unary_calls_are_spread_over_a_backends_addresses() -> None:
    async with running_server() as one, running_server() as other:
        for replica in (one, other):
            await replica.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby"))
        settings = Settings(backends={"*": (one.address, other.address)})
        async with running_gateway(settings) as gw:
            for n in range(20):
                posted = await ask(gw, "POST", MESSAGES, json={"text": f"m{n}"})
                assert posted.status == 201
        counts = [
            len(
                (
                    await replica.chat.ListMessages(chat_pb2.ListMessagesRequest(parent=ROOM))
                ).messages
            )
            for replica in (one, other)
        ]
    assert sum(counts) == 20
    assert min(counts) > 0, f"messages per replica: {counts}"
