"""A second generator: openapi-python-client's client for the document, against a live gateway.

The OpenAPI document must not be tied to the generator of the TypeScript SDK. Once per module,
``python -m openapi_python_client generate`` (pinned in the dev extra) turns
openapi/switchboard.openapi.json into a package in a temporary directory, with no post hooks
(no ruff run over generated code); nothing generated is committed. The tests check that it
warns about nothing but the one known limit (it cannot send ``application/x-ndjson``, so the
client-streaming ImportMessages upload is skipped), then import the package under its own
name and drive the real service through the real gateway with auth on (the development key, as
``make run`` has it): CreateRoom, GetRoom and a 404 parsed into the generated Status model.
"""

from __future__ import annotations

import importlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from types import ModuleType

import pytest

from gateway.authconfig import AuthConfig
from gateway.config import Settings
from services.auth import mint_dev_token
from services.testing import running_server
from tests.gateway.stream_gateway import running_gateway

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "openapi" / "switchboard.openapi.json"
PACKAGE = "switchboard_openapi_python_client"  # a name nothing else in the tree imports
GENERATE_LIMIT = 30.0
USER = "opc-user"

# Everything between the generator's banner and its closing "If you believe this was a
# mistake" line, blank lines dropped: the NDJSON upload is skipped, nothing else.
KNOWN_WARNINGS = [
    "WARNING parsing POST /v1/rooms/{room}/messages:import within chat_service. "
    "Endpoint will not be generated.",
    "Unsupported content type application/x-ndjson",
]


def generate(destination: Path) -> str:
    """Run the generator's command on the document; its output (stdout and stderr)."""
    config = destination.parent / "openapi-python-client.yaml"
    config.write_text("post_hooks: []\n", encoding="utf-8")
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(DOCUMENT)]
    command += ["--output-path", str(destination), "--meta", "none", "--config", str(config)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=GENERATE_LIMIT, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def warnings_in(output: str) -> list[str]:
    """The warning lines of the generator's output (empty when it printed no banner)."""
    _, banner, rest = output.partition("Warning(s) encountered while generating.")
    if not banner:
        return []
    body = rest.split("\n", 1)[1].partition("If you believe this was a mistake")[0]
    return [line.strip() for line in body.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModuleType, str]]:
    """The generated package, imported as PACKAGE, and what the generator printed."""
    root = tmp_path_factory.mktemp("openapi-python-client")
    output = generate(root / PACKAGE)
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE), output
    finally:
        sys.path.remove(str(root))
        for name in [name for name in sys.modules if name.partition(".")[0] == PACKAGE]:
            del sys.modules[name]


def part(name: str) -> ModuleType:
    """A module of the generated package: ``models``, ``api.room_service.…``."""
    return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture
def dev_auth(monkeypatch: pytest.MonkeyPatch) -> AuthConfig:
    """`--dev-auth` as `make run` uses it, with a secret of this test's own."""
    monkeypatch.setenv("SWITCHBOARD_DEV_SECRET", secrets.token_urlsafe(48))
    return AuthConfig(dev=True)


def test_generator_warns_only_about_the_ndjson_upload(generated: tuple[ModuleType, str]) -> None:
    package, output = generated
    assert warnings_in(output) == KNOWN_WARNINGS, output
    operations = {path.stem for path in Path(package.__file__ or "").parent.glob("api/*/*.py")}
    assert "room_service_create_room" in operations
    assert "chat_service_import_messages" not in operations


async def test_generated_client_drives_a_live_gateway(
    generated: tuple[ModuleType, str], dev_auth: AuthConfig
) -> None:
    package, _ = generated
    models = part("models")
    create = part("api.room_service.room_service_create_room")
    get = part("api.room_service.room_service_get_room")
    async with running_server(auth=dev_auth) as backend:
        settings = Settings(backends={"*": (backend.address,)}, auth=dev_auth)
        async with running_gateway(settings) as gateway:
            token = mint_dev_token(USER, ("member",), ttl=600)
            async with package.AuthenticatedClient(base_url=gateway.base, token=token) as client:
                labels = models.RoomLabels.from_dict({"team": "core"})
                room = models.Room(display_name="Lobby", description="Say hi", labels=labels)
                created = await create.asyncio_detailed(client=client, body=room, room_id="lobby")
                fetched = await get.asyncio_detailed("lobby", client=client)
                missing = await get.asyncio_detailed("nowhere", client=client)

    assert created.status_code == HTTPStatus.CREATED, created.content
    made = created.parsed
    assert isinstance(made, models.Room)
    assert (made.name, made.display_name, made.description) == ("rooms/lobby", "Lobby", "Say hi")
    assert made.labels.to_dict() == {"team": "core"}
    assert made.creator == USER
    assert made.create_time.tzinfo is not None
    assert made.etag

    assert fetched.status_code == HTTPStatus.OK, fetched.content
    assert isinstance(fetched.parsed, models.Room)
    assert fetched.parsed.to_dict() == made.to_dict()

    assert missing.status_code == HTTPStatus.NOT_FOUND, missing.content
    status = missing.parsed
    assert isinstance(status, models.Status)
    assert status.code == 5  # google.rpc.Code.NOT_FOUND
    assert "nowhere" in status.message
