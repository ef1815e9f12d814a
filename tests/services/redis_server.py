"""A real, private ``redis-server`` for the Redis engine tests.

``redis_url`` is a session fixture: one server on a free 127.0.0.1 port, no
persistence, in a temporary directory, stopped when the session ends. Tests
isolate themselves with a fresh key prefix (``fresh_prefix``), never FLUSHALL.
A missing binary fails loudly: CI installs redis-server.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

START_TIMEOUT_S = 15.0  # a hang guard for a loaded machine, not a speed check


def fresh_prefix() -> str:
    return f"test-{secrets.token_hex(4)}:"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait_for_ping(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers_ping(port):
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode} on port {port}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not answer PING on port {port}")
        time.sleep(0.02)  # polling the condition, not waiting a fixed time


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; the Redis engine tests need it on PATH")
    with tempfile.TemporaryDirectory() as workdir:
        port = _free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", workdir]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_ping(process, port)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)
