"""Node tooling for the tests: the SDK's pinned packages, installed once, and commands in it.

``ensure_node_modules()`` runs ``npm ci`` in clients/typescript when node_modules is missing or
older than package-lock.json (so later runs reuse it); ``run_in_sdk(...)`` runs a command there
and returns its output, failing with that output when the command fails.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "clients" / "typescript"
NPM_LIMIT = 240.0


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is required for the TypeScript SDK tests"
    return path


async def run_in_sdk(*command: str, env: dict[str, str] | None = None, limit: float) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=SDK,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"{' '.join(command)} failed:\n{text}"
    return text


async def ensure_node_modules() -> None:
    marker = SDK / "node_modules" / ".package-lock.json"
    lock = SDK / "package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        await run_in_sdk(tool("npm"), "ci", "--no-audit", "--no-fund", limit=NPM_LIMIT)
