"""A real, private ``redis-server`` for the Redis engine tests.

``redis_url`` is a session fixture: one server on a free 127.0.0.1 port, no
persistence, in a temporary directory, stopped when the session ends. Tests
isolate themselves with a fresh key prefix (``fresh_prefix``), never FLUSHALL.
A missing binary fails loudly: CI installs redis-server.

``RedisProcess`` is that server as an object a test can own: ``start()`` it, stop it
(``kill()``: SIGKILL; ``shutdown_nosave()``: a clean ``SHUTDOWN NOSAVE``) and
``start()`` it again on the same port, empty (it keeps nothing on disk).
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


class RedisProcess:
    """One ``redis-server`` without persistence on a fixed 127.0.0.1 port (free when made)."""

    def __init__(self, workdir: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; the Redis engine tests need it on PATH")
        self.binary = binary
        self.workdir = workdir
        self.port = port or _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Starts the server (empty) and returns once it answers PING."""
        assert self._process is None, "redis-server is running already"
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", self.workdir]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._process = process
        try:
            _wait_for_ping(process, self.port)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: Redis dies at once; clients see their connections reset."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
        if process is not None:
            process.wait(timeout=START_TIMEOUT_S)

    def shutdown_nosave(self) -> None:
        """``SHUTDOWN NOSAVE``: Redis closes its clients and exits cleanly, writing nothing."""
        process, self._process = self._process, None
        assert process is not None, "redis-server is not running"
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(b"SHUTDOWN NOSAVE\r\n")
            conn.recv(64)  # EOF once the server has closed its clients (or an error line)
        process.wait(timeout=START_TIMEOUT_S)

    def terminate(self) -> None:
        """SIGTERM, as at the end of a session."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisProcess(workdir)
        server.start()
        try:
            yield server.url
        finally:
            server.terminate()
