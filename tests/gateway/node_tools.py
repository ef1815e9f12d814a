"""Node tooling for the tests: pinned npm packages installed once, and commands run beside them.

Two folders carry a package-lock.json: clients/typescript (the SDK and its generators) and
tests/gateway/browser (playwright-core, which drives Debian's Chromium — never a downloaded
browser). ``ensure_node_modules(folder)`` runs ``npm ci`` there when node_modules is missing or
older than the lock (so later runs reuse it); ``run_node(folder, ...)`` runs a command there and
returns its exit code and output; ``run_in_sdk(...)`` does so in the SDK and fails with the
output when the command fails.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "clients" / "typescript"
BROWSER = Path(__file__).with_name("browser")
CHROMIUM = "/usr/bin/chromium"
NPM_LIMIT = 240.0


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is required for the Node-driven tests"
    return path


async def run_node(
    folder: Path, *command: str, env: dict[str, str] | None = None, limit: float
) -> tuple[int, str, str]:
    """Runs ``command`` in ``folder``; (exit code, stdout, stderr). Killed after ``limit`` s."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=folder,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def run_in_sdk(*command: str, env: dict[str, str] | None = None, limit: float) -> str:
    code, out, err = await run_node(SDK, *command, env=env, limit=limit)
    assert code == 0, f"{' '.join(command)} failed:\n{out}\n{err}"
    return out + err


async def ensure_node_modules(folder: Path = SDK) -> None:
    marker = folder / "node_modules" / ".package-lock.json"
    lock = folder / "package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        code, out, err = await run_node(
            folder, tool("npm"), "ci", "--no-audit", "--no-fund", limit=NPM_LIMIT
        )
        assert code == 0, f"npm ci in {folder} failed:\n{out}\n{err}"


def require_chromium() -> None:
    """Fails at once without the Debian package chromium or node."""
    assert Path(CHROMIUM).exists(), f"the Debian package chromium ({CHROMIUM}) is required"
    tool("node")
