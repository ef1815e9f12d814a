"""``python -m services [serve] [flags]``: the command line of the service.

Subcommands register themselves in ``COMMANDS``; ``serve`` is the default, so
``python -m services --listen 127.0.0.1:50051`` runs the server. Another command
adds an ``add_<name>`` function that builds its subparser and sets ``run``. ``serve`` sets
tracing up from the OpenTelemetry environment variables first (gateway/telemetry.py;
``service.name`` ``switchboard-service`` by default; an unsupported exporter exits 2) and
flushes the last spans when the server has stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from gateway.authconfig import AuthConfigError
from gateway.jwks import JwksError
from gateway.telemetry import SERVICE_SERVICE_NAME, TelemetryError, configure
from services.auth import add_token_command
from services.config import ConfigError, ServiceConfig, auth_from_namespace
from services.server import serve

log = logging.getLogger("services")
Run = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
DEFAULT_COMMAND = "serve"


async def _run_serve(namespace: argparse.Namespace) -> int:
    try:
        config = ServiceConfig.from_namespace(namespace)
        auth = auth_from_namespace(namespace)
        traced = configure(SERVICE_SERVICE_NAME)
    except (ConfigError, TelemetryError) as error:
        print(f"python -m services: {error}", file=sys.stderr)
        return 2
    if traced is not None:
        log.info("tracing on: %s", traced[1])
    try:
        await serve(config, auth=auth)
    except (RuntimeError, AuthConfigError, JwksError) as error:  # address taken, key unreadable
        print(f"python -m services: {error}", file=sys.stderr)
        return 1
    finally:
        if traced is not None:
            traced[0].shutdown()  # flush the spans still batched
    return 0


def add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the gRPC service (the default)",
        description="Run the Switchboard gRPC service. Every flag also reads "
        "SWITCHBOARD_<FLAG> from the environment; the flag wins. With no token key "
        "configured the service refuses to start unless --no-auth is given.",
    )
    ServiceConfig.add_arguments(parser)
    parser.set_defaults(run=_run_serve)


COMMANDS: dict[str, Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = {
    "serve": add_serve,
    "token": add_token_command,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services", description="Switchboard realtime messaging service."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in COMMANDS.values():
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0] not in COMMANDS and args[0] not in ("-h", "--help")):
        args.insert(0, DEFAULT_COMMAND)
    namespace = build_parser().parse_args(args)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run: Run = namespace.run
    return asyncio.run(run(namespace))


if __name__ == "__main__":
    sys.exit(main())
