"""``python -m services`` as a process: start, log the address, serve, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from switchboard.v1 import chat_pb2, chat_pb2_grpc, rooms_pb2, rooms_pb2_grpc
from tests.services.conftest import ended_with, read, within

ROOT = Path(__file__).resolve().parents[2]

# A hang guard for subprocess start-up on a loaded machine, not a speed check.
PROCESS_TIMEOUT = 30.0


async def start(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        *args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def listening_address(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    while line := (await within(process.stderr.readline(), PROCESS_TIMEOUT)).decode():
        if match := re.search(r"listening on (\S+)", line):
            return match.group(1)
    raise AssertionError("the service exited without logging its address")


async def test_serves_until_sigterm_then_ends_streams_unavailable() -> None:
    process = await start(
        "--grace-period", "1", "--no-auth", env={"SWITCHBOARD_LISTEN": "127.0.0.1:0"}
    )
    try:
        address = await listening_address(process)
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await within(health.Check(health_pb2.HealthCheckRequest()), PROCESS_TIMEOUT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            rooms = rooms_pb2_grpc.RoomServiceStub(channel)
            await within(
                rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="lobby")), PROCESS_TIMEOUT
            )
            chat = chat_pb2_grpc.ChatServiceStub(channel)
            stream = chat.Subscribe(chat_pb2.SubscribeRequest(room="rooms/lobby"))
            await read(stream)
            process.send_signal(signal.SIGTERM)
            await ended_with(stream, grpc.StatusCode.UNAVAILABLE)
        assert await within(process.wait(), PROCESS_TIMEOUT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serve_is_the_default_subcommand_and_bad_config_exits_nonzero() -> None:
    process = await start("serve", "--help")
    out, _ = await within(process.communicate(), PROCESS_TIMEOUT)
    assert process.returncode == 0
    assert b"--subscriber-buffer" in out
    assert b"SWITCHBOARD_" in out
    process = await start("--max-message-bytes", "lots", "--no-auth")
    _, err = await within(process.communicate(), PROCESS_TIMEOUT)
    assert process.returncode == 2
    assert b"--max-message-bytes: 'lots'" in err
    process = await start("--listen", "999.0.0.1:5", "--no-auth")
    _, err = await within(process.communicate(), PROCESS_TIMEOUT)
    assert process.returncode == 1
    assert b"cannot listen on '999.0.0.1:5'" in err


async def test_refuses_to_start_without_keys_unless_no_auth_is_given(tmp_path: Path) -> None:
    bare = {"XDG_STATE_HOME": str(tmp_path), "SWITCHBOARD_LISTEN": "127.0.0.1:0"}
    process = await start(env=bare)
    _, err = await within(process.communicate(), PROCESS_TIMEOUT)
    assert process.returncode == 2
    assert b"no token verification key is configured" in err
    assert b"--no-auth" in err
    assert b"--dev-auth" in err
    process = await start("--no-auth", "--dev-auth", env=bare)
    _, err = await within(process.communicate(), PROCESS_TIMEOUT)
    assert process.returncode == 2
    assert b"--no-auth cannot be combined" in err
    process = await start("--auth-config", str(tmp_path / "missing.toml"), env=bare)
    _, err = await within(process.communicate(), PROCESS_TIMEOUT)
    assert process.returncode == 2
    assert b"missing.toml" in err


async def test_no_auth_warns_loudly_and_lets_anyone_in() -> None:
    process = await start("--no-auth", env={"SWITCHBOARD_LISTEN": "127.0.0.1:0"})
    try:
        assert process.stderr is not None
        first = (await within(process.stderr.readline(), PROCESS_TIMEOUT)).decode()
        assert "WARNING" in first
        assert "AUTHENTICATION IS OFF" in first
        address = await listening_address(process)
        async with grpc.aio.insecure_channel(address) as channel:
            rooms = rooms_pb2_grpc.RoomServiceStub(channel)
            room = await within(
                rooms.CreateRoom(rooms_pb2.CreateRoomRequest(room_id="open")), PROCESS_TIMEOUT
            )
            assert room.creator == "anonymous"
    finally:
        process.send_signal(signal.SIGTERM)
        await within(process.wait(), PROCESS_TIMEOUT)


async def test_dev_auth_accepts_the_token_that_the_token_command_prints(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path), "SWITCHBOARD_LISTEN": "127.0.0.1:0"}
    minted = await start("token", "--sub", "alice", "--roles", "member", env=env)
    out, _ = await within(minted.communicate(), PROCESS_TIMEOUT)
    assert minted.returncode == 0
    token = out.decode().strip()
    assert (tmp_path / "switchboard" / "dev-secret").exists()
    process = await start("--dev-auth", env=env)
    try:
        address = await listening_address(process)
        async with grpc.aio.insecure_channel(address) as channel:
            rooms = rooms_pb2_grpc.RoomServiceStub(channel)
            request = rooms_pb2.CreateRoomRequest(room_id="lobby")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await within(rooms.CreateRoom(request), PROCESS_TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            bearer = (("authorization", f"Bearer {token}"),)
            room = await within(rooms.CreateRoom(request, metadata=bearer), PROCESS_TIMEOUT)
            assert room.creator == "alice"
    finally:
        process.send_signal(signal.SIGTERM)
        await within(process.wait(), PROCESS_TIMEOUT)
