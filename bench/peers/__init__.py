"""Peers: other projects' gateways built for the same proto, run in front of the same service.

grpc-gateway v1 (Debian's golang-grpc-gateway + golang-go, installed by
``bench/peers/install.sh`` — ``make bench-peers``) is generated and compiled by
``bench/peers/build.sh`` into ``bench/peers/build/`` (outside git). When the toolchain is
absent the peer is skipped and the result says why.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.procs import Server, ServerError, start

HERE = Path(__file__).resolve().parent
BINARY = HERE / "build" / "bin" / "switchboard-grpc-gateway"
BUILD_SCRIPT = HERE / "build.sh"


def _build(scratch: Path) -> str:
    """Builds the peer if the toolchain is here; returns "" or why it cannot."""
    if BINARY.exists():
        return ""
    if shutil.which("go") is None or shutil.which("protoc") is None:
        return (
            "skipped: go/protoc absent (`make bench-peers` installs Debian's golang-grpc-gateway)"
        )
    log = scratch / "grpc-gateway-build.log"
    with log.open("wb") as sink:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], stdout=sink, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0 or not BINARY.exists():
        return f"skipped: building grpc-gateway failed: {log.read_text(errors='replace')[-800:]}"
    return ""


def start_grpc_gateway(scratch: Path, backend: str) -> tuple[Server | None, str]:
    """grpc-gateway v1 in front of ``backend``, or None and the reason it is skipped."""
    why = _build(scratch)
    if why:
        return None, why
    argv = [str(BINARY), "--backend", backend, "--listen", "127.0.0.1:0"]
    try:
        server = start("grpc-gateway", argv, scratch, http=True)
    except ServerError as error:
        return None, f"skipped: grpc-gateway did not start: {error}"
    return server, "grpc-gateway v1 (Debian golang-grpc-gateway), same service"
