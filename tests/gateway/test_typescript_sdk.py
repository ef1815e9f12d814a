"""The generated TypeScript SDK against a live gateway in front of the real service.

Starts the service (``services.testing.running_server``) and the gateway with its streaming
bridges on 127.0.0.1:0, installs the SDK's pinned node packages once (``npm ci``, kept in
clients/typescript/node_modules), builds it with ``tsc --strict`` and runs its node:test suite
(clients/typescript/test/) with the gateway's URL in ``SWITCHBOARD_GATEWAY_URL``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from gateway.config import Settings
from services.testing import running_server
from tests.gateway.stream_gateway import running_gateway

SDK = Path(__file__).resolve().parents[2] / "clients" / "typescript"
NPM_TIMEOUT = 240.0
NODE_TIMEOUT = 90.0


async def _run(*command: str, env: dict[str, str] | None = None, timeout: float) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=SDK,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"{' '.join(command)} failed:\n{text}"
    return text


async def _prepare_sdk() -> None:
    """``npm ci`` when node_modules is missing or older than the lock file, then build."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is required for the TypeScript SDK test"
    marker = SDK / "node_modules" / ".package-lock.json"
    lock = SDK / "package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        await _run(npm, "ci", "--no-audit", "--no-fund", timeout=NPM_TIMEOUT)
    await _run(npm, "run", "build", timeout=NPM_TIMEOUT)


@pytest.mark.timeout(NPM_TIMEOUT + NODE_TIMEOUT + 30)
async def test_sdk_drives_a_live_gateway() -> None:
    await _prepare_sdk()
    async with running_server() as backend:
        settings = Settings(backends={"*": (backend.address,)})
        async with running_gateway(settings) as gateway:
            env = {**os.environ, "SWITCHBOARD_GATEWAY_URL": gateway.base}
            node = shutil.which("node")
            assert node is not None
            output = await _run(node, "--test", "test/", env=env, timeout=NODE_TIMEOUT)
    assert "# fail 0" in output, output
    assert "# pass 4" in output, output
