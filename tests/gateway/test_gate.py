"""The access log of ``python -m gateway`` never shows a token sent as a query parameter."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from google.protobuf import descriptor_pb2

from gateway.gate import logged_query
from switchboard.gateway.v1 import options_pb2
from tests.gateway.echo_backend import EchoServer
from tests.gateway.everything import DESCRIPTOR_SET
from tests.gateway.signing import HS_KID, SECRET, hmac_key

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0


@pytest.mark.parametrize(
    ("query", "logged"),
    [
        ("access_token=SECRET.x.y", "access_token=REDACTED"),
        ("a=1&access_token=SECRET.x.y&b=%E2%82%AC", "a=1&access_token=REDACTED&b=%E2%82%AC"),
        ("a=1&b=2", "a=1&b=2"),
        ("access%5Ftoken=SECRET.x.y", "access_token=REDACTED"),  # the name is compared decoded
    ],
)
def test_logged_query_redacts_the_token_parameter(query: str, logged: str) -> None:
    assert logged_query(query, "access_token") == logged


def _config(tmp_path: Path) -> Path:
    """A descriptor set whose methods need ``messages.read``, and an auth config for it."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET)
    for file in files.file:
        for service in file.service:
            for method in service.method:
                method.options.Extensions[options_pb2.auth].permissions.append("messages.read")
    (tmp_path / "api.binpb").write_bytes(files.SerializeToString())
    config = tmp_path / "gateway.toml"
    config.write_text(
        'descriptor_set = "api.binpb"\n'
        "[auth]\n"
        'query_param = "access_token"\n'
        "[[auth.keys]]\n"
        f'kid = "{HS_KID}"\n'
        f'secret = "{SECRET.decode()}"\n'
    )
    return config


async def test_the_access_log_redacts_the_token_query_parameter(
    echo: EchoServer, tmp_path: Path
) -> None:
    secret = hmac_key(HS_KID).sign({"sub": "alice", "roles": ["member"], "exp": 2**31 - 1})
    paths = [str(ROOT), str(ROOT / "clients" / "python"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    args = ("--config", str(_config(tmp_path)), "--backend", echo.address)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway", *args, "--listen", "127.0.0.1:0"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), WAIT)).decode()
        assert line.startswith("gateway listening on "), await process.stderr.read()
        url = f"{line.split()[-1]}/v1/everything/x:stream?access_token={secret}&stringValue=kept"
        sse = {"Accept": "text/event-stream"}
        async with aiohttp.ClientSession() as session, session.get(url, headers=sse) as response:
            assert response.status == 200
            assert b'"stringValue":"kept"' in await response.read()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), WAIT) == 0
        logged = (await process.stderr.read()).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert '"GET /v1/everything/x:stream?access_token=REDACTED&stringValue=kept HTTP/1.1" 200' in (
        logged
    )
    assert secret not in logged
    assert secret.split(".")[2] not in logged  # not even the signature
