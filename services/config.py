"""The service's configuration: defaults, ``SWITCHBOARD_*`` environment variables, flags.

Precedence: a command-line flag wins over its environment variable, which wins over
the default. Every value is validated once, here; a bad value names the flag or the
variable it came from.

Auth settings are the gateway's (``gateway.authconfig``: one implementation for both
processes): ``--auth-config FILE``, ``--dev-auth``, ``--no-auth`` and the
``SWITCHBOARD_JWT_*``/``SWITCHBOARD_JWKS_*``/``SWITCHBOARD_AUTH_*`` variables. With no key
configured, ``auth_from_namespace`` refuses unless ``--no-auth`` was given.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from gateway.authconfig import AuthConfig, AuthConfigError, add_auth_arguments, auth_from_args
from services.engine import EngineConfig

ENV_PREFIX = "SWITCHBOARD_"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_TEXT_OPTIONS = ("listen", "engine")
GRPC_OVERHEAD_BYTES = 64 * 1024
"""Room for a request's other fields (attributes, names, ids) on top of the text."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names its flag or variable."""


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Everything ``python -m services`` can be told."""

    listen: str = "127.0.0.1:50051"
    history_max_events: int = 10_000
    history_max_age_s: float = 24 * 3600.0
    idempotency_window_s: float = 600.0
    subscriber_buffer: int = 1024
    max_message_bytes: int = 64 * 1024
    grace_period_s: float = 10.0
    engine: str = "memory"

    def __post_init__(self) -> None:
        if not self.listen.strip():
            raise ConfigError("listen address must not be empty (e.g. 127.0.0.1:50051)")
        if self.engine != "memory" and not self.engine.startswith(_REDIS_SCHEMES):
            raise ConfigError(
                f"--engine (SWITCHBOARD_ENGINE) must be 'memory' or a Redis URL such as "
                f"redis://localhost:6379/0, "
                f"got {self.engine!r}"
            )
        for spec in _OPTIONS:
            if spec.name not in _TEXT_OPTIONS and getattr(self, spec.name) <= 0:
                value = getattr(self, spec.name)
                raise ConfigError(f"{spec.flag} must be positive, got {value}")

    @property
    def max_receive_message_bytes(self) -> int:
        """The gRPC receive limit: the largest message text plus room for the rest."""
        return self.max_message_bytes + GRPC_OVERHEAD_BYTES

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            history_max_events=self.history_max_events,
            history_max_age_s=self.history_max_age_s,
            idempotency_window_s=self.idempotency_window_s,
            subscriber_buffer=self.subscriber_buffer,
        )

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Adds one flag per field; unset flags stay None so the environment can apply."""
        for spec in _OPTIONS:
            parser.add_argument(spec.flag, dest=spec.name, default=None, help=spec.help)
        add_auth_arguments(parser)

    @classmethod
    def from_namespace(
        cls, namespace: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> ServiceConfig:
        """Builds the config from parsed flags, then ``environ`` (os.environ by default)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in _OPTIONS:
            flag_value = getattr(namespace, spec.name, None)
            if flag_value is not None:
                values[spec.name] = spec.parse(flag_value, spec.flag)
            elif spec.env in env:
                values[spec.name] = spec.parse(env[spec.env], spec.env)
        return cls(**values)


def auth_from_namespace(
    namespace: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> AuthConfig | None:
    """The auth settings of parsed flags and ``environ``; None means ``--no-auth``."""
    try:
        return auth_from_args(namespace, environ=os.environ if environ is None else environ)
    except AuthConfigError as error:
        raise ConfigError(str(error)) from None


@dataclass(frozen=True, slots=True)
class _Option:
    name: str
    parser: Callable[[str], object]
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.removesuffix("_s").replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.removesuffix("_s").upper()

    def parse(self, text: str, source: str) -> object:
        try:
            return self.parser(text)
        except ValueError:
            raise ConfigError(f"{source}: {text!r} is not a valid {self.name}") from None


_HELP = {
    "listen": "host:port to listen on (default 127.0.0.1:50051; port 0 picks a free port)",
    "history_max_events": "durable events kept per room (default 10000)",
    "history_max_age_s": "seconds an event stays in history (default 86400)",
    "idempotency_window_s": "seconds a request_id is remembered (default 600)",
    "subscriber_buffer": "events buffered per subscriber before it is cut off (default 1024)",
    "max_message_bytes": "largest message text in UTF-8 bytes (default 65536)",
    "grace_period_s": "seconds in-flight calls get to finish on shutdown (default 10)",
    "engine": "'memory' (default: one process) or a Redis URL redis://host:port/db "
    "(many instances sharing Redis)",
}
_PARSERS: dict[type, Callable[[str], object]] = {str: str, int: int, float: float}
_OPTIONS = tuple(
    _Option(f.name, _PARSERS[type(f.default)], _HELP[f.name]) for f in fields(ServiceConfig)
)
