"""Schemathesis against a live gateway in front of the real service (auth on in both, an admin
token on every request), driven by the committed OpenAPI document: every generated request must
get a documented status code and content type, a body that matches the documented schema, and
never a 5xx; and an operation that needs a token must refuse requests without one.

Bounded and reproducible: a fixed seed, at most ``EXAMPLES`` cases per operation, one worker,
no example database. The streaming operations (Subscribe never ends; Converse is WebSocket-only)
are left to their own tests. NDJSON request bodies are serialized by
``tests/gateway/schemathesis_hooks.py``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from gateway.config import Settings
from services.testing import running_server
from tests.gateway.signing import deployment_config, token
from tests.gateway.stream_gateway import running_gateway

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "openapi" / "switchboard.openapi.json"
SEED = "20261121"
EXAMPLES = "25"
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "ignored_auth",
    )
)
LIMIT = 150.0


def _command(base_url: str, report: Path, bearer: str) -> list[str]:
    return [
        str(Path(sys.executable).parent / "st"),
        "run",
        str(DOCUMENT),
        f"--url={base_url}",
        f"--seed={SEED}",
        f"--max-examples={EXAMPLES}",
        "--mode=positive",
        "--phases=examples,coverage,fuzzing",
        f"--checks={CHECKS}",
        "--exclude-operation-id-regex=^ChatService_(Subscribe|Converse)$",
        f"--header=Authorization: Bearer {bearer}",
        "--request-timeout=5",
        "--workers=1",
        "--generation-database=none",
        "--no-color",
        "--report=junit",
        f"--report-junit-path={report}",
    ]


@pytest.mark.timeout(LIMIT + 30)
async def test_generated_requests_get_documented_answers(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.gateway.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join((str(ROOT), os.environ.get("PYTHONPATH", ""))),
    }
    config = deployment_config(tmp_path)
    admin = token("schemathesis", roles=("admin",), ttl=600)
    async with running_server(auth=config) as backend:
        settings = Settings(backends={"*": (backend.address,)}, auth=config)
        async with running_gateway(settings) as gateway:
            process = await asyncio.create_subprocess_exec(
                *_command(gateway.base, tmp_path / "junit.xml", admin),
                cwd=tmp_path,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await asyncio.wait_for(process.communicate(), LIMIT)
    text = output.decode(errors="replace")
    assert "Operations:       11 selected / 13 total" in text, text
    assert process.returncode == 0, text
