"""``python -m gateway`` as a user runs it: start-up errors, configuration, serving, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from google.api import http_pb2

from gateway.config import ConfigError, settings_from_args, settings_from_toml
from services.testing import running_server
from switchboard.v1 import rooms_pb2
from tests.gateway.conftest import edited_descriptor_set
from tests.gateway.echo_backend import EchoServer
from tests.gateway.sse_client import EventReader

ROOT = Path(__file__).resolve().parents[2]
STARTUP_WAIT = 30.0


def _env() -> dict[str, str]:
    paths = [str(ROOT), str(ROOT / "clients" / "python"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


async def _run(*args: str, auth: tuple[str, ...] = ("--no-auth",)) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        *auth,
        cwd=ROOT,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), STARTUP_WAIT)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@asynccontextmanager
async def _serving(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "--listen",
        "127.0.0.1:0",
        *args,
        *(() if "--dev-auth" in args else ("--no-auth",)),
        cwd=ROOT,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), STARTUP_WAIT)).decode()
        if not line.startswith("gateway listening on http://127.0.0.1:"):
            assert process.stderr is not None
            raise AssertionError(f"gateway did not start: {await process.stderr.read()!r}")
        yield process, line.split()[-1]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_invalid_template_exits_naming_method_and_template(tmp_path: Path) -> None:
    path = tmp_path / "bad.binpb"
    rule = http_pb2.HttpRule(get="/v1/{id=everything/*")
    path.write_bytes(edited_descriptor_set("GetEverything", rule))
    code, stderr = await _run("--backend", "127.0.0.1:1", "--descriptor-set", str(path))
    assert code == 1
    assert "testing.v1.EverythingService.GetEverything" in stderr
    assert "/v1/{id=everything/*" in stderr


async def test_conflicting_routes_exit_non_zero(tmp_path: Path) -> None:
    path = tmp_path / "conflict.binpb"
    path.write_bytes(
        edited_descriptor_set("DeleteEverything", http_pb2.HttpRule(get="/v1/everything/{id}"))
    )
    code, stderr = await _run("--backend", "127.0.0.1:1", "--descriptor-set", str(path))
    assert code == 1
    assert "DeleteEverything" in stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--backend", "127.0.0.1:1", "--listen", "nowhere"], "--listen"),
        (["--backend", "localhost"], "localhost"),
        ([], "--backend"),
        (["--backend", "127.0.0.1:1", "--event-loop", "tokio"], "--event-loop"),
    ],
)
async def test_bad_arguments_exit_2_naming_the_option(args: list[str], named: str) -> None:
    code, stderr = await _run(*args)
    assert code == 2
    assert named in stderr


async def test_missing_descriptor_set_is_named() -> None:
    code, stderr = await _run("--backend", "127.0.0.1:1", "--descriptor-set", "/nope/api.binpb")
    assert code == 1
    assert "/nope/api.binpb" in stderr


async def test_serves_until_sigterm(echo: EchoServer, descriptor_set_file: Path) -> None:
    args = ("--backend", echo.address, "--descriptor-set", str(descriptor_set_file))
    async with _serving(*args) as (process, base), aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v1/everything/cli") as response:
            assert response.status == 200
            assert (await response.json())["id"] == "cli"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), STARTUP_WAIT) == 0


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_every_bridge_path_works_on_each_event_loop(loop: str) -> None:
    """The tunnel (REST unary) and a shared SSE stream, both grpc.aio bidi calls, on each loop."""
    async with running_server() as service:
        await service.rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="loops"))
        args = ("--backend", service.address, "--event-loop", loop)
        async with _serving(*args) as (process, base), aiohttp.ClientSession() as session:
            stream = await session.get(
                f"{base}/v1/rooms/loops:subscribe", headers={"Accept": "text/event-stream"}
            )
            events = EventReader(stream)
            assert (await events.next(10)).type == "subscribed"
            async with session.post(
                f"{base}/v1/rooms/loops/messages", json={"text": f"on {loop}"}
            ) as posted:
                assert posted.status == 201
                name = (await posted.json())["name"]
            event = await events.next(10)
            assert (event.type, name in event.data, f"on {loop}" in event.data) == (
                "message_posted",
                True,
                True,
            )
            async with session.get(f"{base}/v1/rooms/loops") as got:
                assert (got.status, (await got.json())["lastOffset"]) == (200, "1")
            stream.close()
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), STARTUP_WAIT) == 0


async def test_config_file_drives_the_gateway(
    echo: EchoServer, tmp_path: Path, descriptor_set_file: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
        descriptor_set = "{descriptor_set_file.name}"
        cors_origins = ["https://app.example"]
        unary_timeout = 5
        [backends]
        "testing.v1.EverythingService" = ["{echo.address}"]
        """
    )
    async with _serving("--config", str(config)) as (process, base):
        async with aiohttp.ClientSession() as session:
            headers = {"Origin": "https://app.example"}
            async with session.get(f"{base}/v1/everything/t", headers=headers) as response:
                assert response.status == 200
                assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), STARTUP_WAIT) == 0


def test_toml_settings_and_flag_overrides(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        """
        listen = "0.0.0.0:9000"
        descriptor_set = "api.binpb"
        header_allowlist = ["x-tenant"]
        max_body_bytes = 1024
        [backends]
        "*" = ["10.0.0.1:50051", "10.0.0.2:50051"]
        [json]
        use_proto_names = true
        """
    )
    settings = settings_from_toml(config)
    assert settings.listen == ("0.0.0.0", 9000)
    assert settings.descriptor_set == tmp_path / "api.binpb"
    assert settings.backend_for("any.Service") == "10.0.0.1:50051,10.0.0.2:50051"
    assert settings.json.use_proto_names
    merged = settings_from_args(["--config", str(config), "--reflect", "--auto-map", "--no-auth"])
    assert (merged.reflect, merged.descriptor_set, merged.auto_map) == (True, None, True)
    assert merged.max_body_bytes == 1024


def test_auth_comes_from_the_auth_table_flags_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWITCHBOARD_AUTH_DEV", raising=False)
    config = tmp_path / "gateway.toml"
    config.write_text(
        """
        [backends]
        "*" = ["127.0.0.1:50051"]
        [auth]
        issuer = "https://id.example"
        [[auth.keys]]
        kid = "k1"
        secret_file = "secret.txt"
        """
    )
    settings = settings_from_args(["--config", str(config)])
    assert settings.auth is not None
    assert settings.auth.issuer == "https://id.example"
    assert settings.auth.keys[0].secret_file == tmp_path / "secret.txt"
    assert settings_from_args(["--config", str(config), "--no-auth"]).auth is None
    dev = settings_from_args(["--backend", "127.0.0.1:1", "--dev-auth"]).auth
    assert dev is not None
    assert dev.dev
    monkeypatch.setenv("SWITCHBOARD_AUTH_DEV", "1")
    from_env = settings_from_args(["--backend", "127.0.0.1:1"]).auth
    assert from_env is not None
    assert from_env.dev


async def test_refuses_to_start_without_a_key_unless_no_auth_is_given() -> None:
    code, stderr = await _run("--backend", "127.0.0.1:1", auth=())
    assert code == 2
    assert "no token verification key is configured" in stderr
    assert "--no-auth" in stderr
    code, stderr = await _run("--backend", "127.0.0.1:1", "--dev-auth")
    assert code == 2
    assert "--no-auth cannot be combined" in stderr


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("colour = 1", "colour"),
        ("max_body_bytes = 'big'", "max_body_bytes"),
        ("[backends]\n'*' = ['no-port']", "backends.*"),
        ("[json]\nshout = true", "shout"),
        ("unary_timeout = 0", "unary_timeout"),
        ("event_loop = 'tokio'", "event_loop"),
        ("[auth]\nleeway_seconds = 'long'", "auth.leeway_seconds"),
        ("[auth]\ncolour = 1", "colour"),
    ],
)
def test_bad_toml_is_named(tmp_path: Path, text: str, named: str) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        settings_from_toml(config)
    assert named in str(caught.value)
    assert str(config) in str(caught.value)


async def test_sigterm_lets_a_request_in_flight_finish(
    echo: EchoServer, descriptor_set_file: Path
) -> None:
    args = ("--backend", echo.address, "--descriptor-set", str(descriptor_set_file))
    stalled = {"Grpc-Metadata-Echo-Stall": "1", "Grpc-Timeout": "1500m"}
    async with _serving(*args) as (process, base), aiohttp.ClientSession() as session:
        in_flight = asyncio.ensure_future(
            session.get(f"{base}/v1/everything/slow", headers=stalled)
        )
        await asyncio.wait_for(echo.call_arrived.wait(), STARTUP_WAIT)
        process.send_signal(signal.SIGTERM)
        async with await in_flight as response:
            assert response.status == 504  # answered (by its deadline), not cut off
        assert await asyncio.wait_for(process.wait(), STARTUP_WAIT) == 0


async def test_dev_auth_denies_methods_without_an_auth_rule_and_logs_them(
    echo: EchoServer, descriptor_set_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_DEV_SECRET", "d" * 48)
    args = ("--backend", echo.address, "--descriptor-set", str(descriptor_set_file), "--dev-auth")
    async with _serving(*args) as (process, base), aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v1/everything/x") as response:
            assert response.status == 403
            body = await response.json()
            assert body["message"] == "method has no auth rule and is denied by default"
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), STARTUP_WAIT) == 0
        assert process.stderr is not None
        logged = (await process.stderr.read()).decode()
    assert "no auth rule, denied to every caller: GET /v1/everything/{id}" in logged
    assert echo.calls == []
