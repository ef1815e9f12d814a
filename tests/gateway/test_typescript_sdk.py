"""The generated TypeScript SDK against a live gateway in front of the real service.

Starts the service (``services.testing.running_server``) and the gateway with its streaming
bridges on 127.0.0.1:0, installs the SDK's pinned node packages once, builds the SDK with
``tsc`` (``strict``) and runs its node:test suite (clients/typescript/test/) with the gateway's
URL in ``SWITCHBOARD_GATEWAY_URL``.
"""

from __future__ import annotations

import os

import pytest

from gateway.config import Settings
from services.testing import running_server
from tests.gateway.node_tools import NPM_LIMIT, ensure_node_modules, run_in_sdk, tool
from tests.gateway.stream_gateway import running_gateway

NODE_LIMIT = 90.0


@pytest.mark.timeout(2 * NPM_LIMIT + NODE_LIMIT)
async def test_sdk_drives_a_live_gateway() -> None:
    await ensure_node_modules()
    await run_in_sdk(tool("npm"), "run", "build", limit=NPM_LIMIT)
    async with running_server() as backend:
        settings = Settings(backends={"*": (backend.address,)})
        async with running_gateway(settings) as gateway:
            env = {**os.environ, "SWITCHBOARD_GATEWAY_URL": gateway.base}
            output = await run_in_sdk(tool("node"), "--test", "test/", env=env, limit=NODE_LIMIT)
    assert "# fail 0" in output, output
    assert "# pass 4" in output, output
