"""The generated TypeScript SDK against a live gateway in front of the real service, auth on.

Starts the service (``services.testing.running_server``) and the gateway with its streaming
bridges on 127.0.0.1:0, both with the test deployment's AuthConfig, installs the SDK's pinned
node packages once, builds the SDK with ``tsc`` (``strict``) and runs its node:test suite
(clients/typescript/test/) with the gateway's URL in ``SWITCHBOARD_GATEWAY_URL`` and a really
signed member token in ``SWITCHBOARD_TOKEN`` (an admin one in ``SWITCHBOARD_ADMIN_TOKEN``). The
WebSocket client's tests (test/websocket.test.mjs) drive Converse and ImportMessages through it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import Settings
from services.testing import running_server
from tests.gateway.node_tools import NPM_LIMIT, ensure_node_modules, run_in_sdk, tool
from tests.gateway.signing import deployment_config, token
from tests.gateway.stream_gateway import running_gateway

NODE_LIMIT = 90.0


@pytest.mark.timeout(2 * NPM_LIMIT + NODE_LIMIT)
async def test_sdk_drives_a_live_gateway(tmp_path: Path) -> None:
    await ensure_node_modules()
    await run_in_sdk(tool("npm"), "run", "build", limit=NPM_LIMIT)
    config = deployment_config(tmp_path)
    async with running_server(auth=config) as backend:
        settings = Settings(backends={"*": (backend.address,)}, auth=config)
        async with running_gateway(settings) as gateway:
            env = {
                **os.environ,
                "SWITCHBOARD_GATEWAY_URL": gateway.base,
                "SWITCHBOARD_TOKEN": token("sdk-user", roles=("member",)),
                "SWITCHBOARD_ADMIN_TOKEN": token("sdk-admin", roles=("admin",)),
            }
            output = await run_in_sdk(tool("node"), "--test", "test/", env=env, limit=NODE_LIMIT)
    assert "\n# fail 0\n" in output, output
    assert "\n# skipped 0\n" in output, output  # every test ran, the admin-only one too
    assert "\n# pass 12\n" in output, output
