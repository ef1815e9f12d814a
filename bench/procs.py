"""The servers a benchmark runs against: subprocesses on 127.0.0.1, started and stopped here.

A server's output goes to a log file under the run's scratch directory; it is ready when
its "listening on" line appears there (the port is read from that line, so every server
binds port 0). ``stop`` sends SIGTERM, then SIGKILL after a bound. ``CpuMeter`` reads a
process's user+system CPU seconds (psutil) before and after a load.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_SERVICE_READY = re.compile(r"listening on (127\.0\.0\.1:\d+)")
_HTTP_READY = re.compile(r"listening on http://(127\.0\.0\.1:\d+)")


class ServerError(RuntimeError):
    """A server exited or never said it was listening; the message quotes its log."""


def raise_fd_limit() -> int:
    """Raises this process's soft RLIMIT_NOFILE to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def python_env() -> dict[str, str]:
    """The environment for Python children: the repository and the generated client importable."""
    env = dict(os.environ)
    paths = [str(REPO), str(REPO / "clients" / "python")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass
class Server:
    """A running server subprocess and the address it listens on."""

    name: str
    process: subprocess.Popen[bytes]
    address: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def rss_bytes(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_ready(
    name: str, process: subprocess.Popen[bytes], log: Path, ready: re.Pattern[str]
) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        match = ready.search(text)
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise ServerError(f"{name} exited with status {process.returncode}:\n{text[-2000:]}")
        time.sleep(0.05)
    process.kill()
    raise ServerError(f"{name} did not report listening within {READY_TIMEOUT_S:.0f} s")


def start(name: str, argv: Sequence[str], scratch: Path, *, http: bool) -> Server:
    """Starts ``argv`` with its output in ``scratch/<name>.log`` and waits until it listens."""
    log = scratch / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            list(argv), stdout=sink, stderr=subprocess.STDOUT, env=python_env(), cwd=REPO
        )
    address = _wait_ready(name, process, log, _HTTP_READY if http else _SERVICE_READY)
    return Server(name, process, address, log)


@functools.cache
def _no_auth(*module: str) -> tuple[str, ...]:
    """``--no-auth`` when the command offers it: the benchmarks measure without tokens."""
    shown = subprocess.run(
        [sys.executable, "-m", *module, "--help"],
        capture_output=True, text=True, env=python_env(), cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    return ("--no-auth",) if "--no-auth" in shown.stdout else ()


def start_service(scratch: Path, *extra: str) -> Server:
    argv = [sys.executable, "-m", "services", "serve", "--listen", "127.0.0.1:0"]
    argv += [*_no_auth("services", "serve"), "--grace-period", "1", *extra]
    return start("service", argv, scratch, http=False)


def start_gateway(scratch: Path, backend: str, args: Sequence[str] = ()) -> Server:
    """``python -m gateway`` in front of ``backend``; ``args`` are extra flags (``--no-share``)."""
    argv = [sys.executable, "-m", "gateway", "--backend", backend, "--listen", "127.0.0.1:0"]
    return start("gateway", [*argv, *_no_auth("gateway"), *args], scratch, http=True)


def start_aiohttp_baseline(scratch: Path, backend: str) -> Server:
    argv = [sys.executable, "-m", "bench.baselines.aiohttp_handler", "--backend", backend]
    return start("aiohttp-baseline", [*argv, "--listen", "127.0.0.1:0"], scratch, http=True)


@contextmanager
def running(*servers: Server) -> Iterator[tuple[Server, ...]]:
    """Stops the servers (last started first) when the block exits."""
    try:
        yield servers
    finally:
        for server in reversed(servers):
            server.stop()


@contextmanager
def stack(
    scratch: Path, *, gateway: bool = True, gateway_args: Sequence[str] = ()
) -> Iterator[tuple[Server, Server | None]]:
    """A fresh service and (optionally) a gateway in front of it; both stopped on exit."""
    service = start_service(scratch)
    front: Server | None = None
    try:
        if gateway:
            front = start_gateway(scratch, service.address, gateway_args)
        yield service, front
    finally:
        if front is not None:
            front.stop()
        service.stop()
