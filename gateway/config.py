"""Gateway settings: one frozen ``Settings``, from a TOML file and/or the command line.

Backends map a service full name (or ``*``, every other service) to a list of ``HOST:PORT``
addresses; services sharing one address list share one backend and one channel. A backend's
name is its address list joined with commas.

Invariant: every invalid value is a ``ConfigError`` naming the option (and the file) at fault;
nothing is validated later at request time.

Auth: ``Settings.auth`` is an ``AuthConfig`` (gateway/authconfig.py, shared with the service) or
None for no checks. ``Settings()`` built in code has None; the command line never leaves it None
by accident: with no key configured (``[auth]`` table, ``--auth-config``, environment,
``--dev-auth``) it refuses to start unless ``--no-auth`` is given.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gateway.authconfig import AuthConfig, AuthConfigError, add_auth_arguments, auth_from_args
from gateway.descriptors import DEFAULT_MODULES
from gateway.transcode import JsonOptions, QueryOptions

__all__ = [
    "DEFAULT_BACKEND",
    "EVENT_LOOPS",
    "ConfigError",
    "Settings",
    "argument_parser",
    "parse_address",
    "settings_from_args",
    "settings_from_toml",
]

DEFAULT_BACKEND = "*"
EVENT_LOOPS = ("uvloop", "asyncio")
MiB = 1024 * 1024


class ConfigError(ValueError):
    """An invalid setting; the message names it."""


@dataclass(frozen=True)
class StreamSettings:
    """Limits and timings of the streaming bridges."""

    heartbeat: float = 15.0  # SSE comment after this many idle seconds; also the first-event wait
    retry_ms: int = 3000  # SSE `retry:` hint
    write_buffer_limit: int = 1 * MiB  # bytes a slow HTTP reader may leave unread; then it ends
    websocket_heartbeat: float = 20.0  # ping interval; a peer missing its pong is dropped
    websocket_max_message: int = 4 * MiB  # per message, after permessage-deflate decompression
    allowed_origins: tuple[str, ...] = ()  # WebSocket Origins; "*" any; empty: same host only
    shutdown_grace: float = 5.0  # seconds the shutdown hook waits for streams to end
    share: bool = True  # callers of a method with the share option share one upstream call
    share_max_buffered: int = 1024  # messages a shared stream's caller left unread; then it ends

    def __post_init__(self) -> None:
        for name in ("heartbeat", "websocket_heartbeat", "shutdown_grace"):
            if getattr(self, name) <= 0:
                raise ValueError(f"StreamSettings.{name} must be positive")
        limits = (self.write_buffer_limit, self.websocket_max_message, self.share_max_buffered)
        if any(limit <= 0 for limit in limits):
            raise ValueError("StreamSettings limits must be positive")
        if not isinstance(self.share, bool):
            raise ValueError(f"StreamSettings.share must be true or false, not {self.share!r}")


@dataclass(frozen=True)
class Settings:
    """Everything the gateway needs to start (see gateway/docs/gateway.md)."""

    backends: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    modules: tuple[str, ...] = DEFAULT_MODULES
    descriptor_set: Path | None = None
    reflect: bool = False
    auto_map: bool = False
    header_allowlist: tuple[str, ...] = ()
    unary_timeout: float = 30.0
    stream_timeout: float | None = None
    reflection_timeout: float = 10.0
    max_body_bytes: int = 4 * MiB
    cors_origins: tuple[str, ...] = ()
    cors_allow_credentials: bool = False
    json: JsonOptions = field(default_factory=JsonOptions)
    query: QueryOptions = field(default_factory=QueryOptions)
    auth: AuthConfig | None = None  # None: no token is checked (``--no-auth``)
    streams: StreamSettings = field(default_factory=StreamSettings)
    tunnel: bool = True  # unary calls through each backend's UnaryTunnelService when it has one
    event_loop: str = "uvloop"  # python -m gateway's loop: "uvloop" or "asyncio" (EVENT_LOOPS)

    def backend_for(self, service: str) -> str:
        """The backend name serving ``service``: its address list joined with commas."""
        addresses = self.backends.get(service) or self.backends.get(DEFAULT_BACKEND)
        if not addresses:
            raise ConfigError(f"no backend configured for service {service!r} and no default")
        return ",".join(addresses)

    def backend_addresses(self) -> dict[str, tuple[str, ...]]:
        """Every distinct backend: name → addresses."""
        return {",".join(addresses): addresses for addresses in self.backends.values()}


def parse_address(text: str, *, option: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port); errors name the option."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{option}: {text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _addresses(value: object, *, option: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ConfigError(f"{option}: expected a non-empty list of HOST:PORT addresses")
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{option}: {item!r} is not a HOST:PORT string")
        parse_address(item, option=option)
    return tuple(item.strip() for item in items)


_SCALARS: dict[str, type | tuple[type, ...]] = {
    "auto_map": bool,
    "reflect": bool,
    "unary_timeout": (int, float),
    "stream_timeout": (int, float),
    "reflection_timeout": (int, float),
    "max_body_bytes": int,
    "cors_allow_credentials": bool,
    "tunnel": bool,
    "event_loop": str,
}
_LISTS = ("modules", "header_allowlist", "cors_origins")
_JSON_KEYS = ("use_proto_names", "emit_unpopulated", "enums_as_ints", "ignore_unknown_fields")


def settings_from_toml(path: str | Path) -> Settings:
    """Read a TOML configuration file (keys as in ``Settings``; see the docs for an example)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc}") from exc
    try:
        return _from_mapping(data, base=Path(path).parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _from_mapping(data: Mapping[str, Any], *, base: Path) -> Settings:
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "backends":
            values[key] = _backends(value)
        elif key == "listen":
            values[key] = parse_address(str(value), option="listen")
        elif key == "descriptor_set":
            values[key] = base / str(value)
        elif key == "json":
            values[key] = _json_options(value)
        elif key == "auth":
            values[key] = _auth(value, base)
        elif key == "streams":
            values[key] = _streams(value)
        elif key == "query_reject_unknown":
            values["query"] = QueryOptions(reject_unknown=_typed(key, value, bool))
        elif key in _LISTS:
            values[key] = _strings(key, value)
        elif key in _SCALARS:
            values[key] = _typed(key, value, _SCALARS[key])
        else:
            raise ConfigError(f"unknown option {key!r}")
    return _checked(Settings(**values))


def _streams(value: object) -> StreamSettings:
    """The ``[streams]`` table: StreamSettings' fields, checked by name and type."""
    if not isinstance(value, dict):
        raise ConfigError("streams: expected a table")
    known = {f.name: f.type for f in fields(StreamSettings)}
    for key in value:
        if key not in known:
            raise ConfigError(f"streams: unknown option {key!r} (known: {', '.join(known)})")
    items: dict[str, Any] = {
        k: _strings(f"streams.{k}", v) if k == "allowed_origins" else v for k, v in value.items()
    }
    try:
        return StreamSettings(**items)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"streams: {exc}") from exc


def _backends(value: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ConfigError("backends: expected a table of service name → addresses")
    return {name: _addresses(addrs, option=f"backends.{name}") for name, addrs in value.items()}


def _auth(value: object, base: Path) -> AuthConfig:
    if not isinstance(value, dict):
        raise ConfigError("auth: expected a table")
    try:
        return AuthConfig.from_mapping(value, base_dir=base)
    except AuthConfigError as exc:
        raise ConfigError(str(exc)) from exc


def _json_options(value: object) -> JsonOptions:
    if not isinstance(value, dict):
        raise ConfigError("json: expected a table")
    for key, item in value.items():
        if key not in _JSON_KEYS:
            raise ConfigError(f"unknown option json.{key!r}")
        _typed(f"json.{key}", item, bool)
    return JsonOptions(**value)


def _strings(key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{key}: expected a list of strings")
    return tuple(value)


def _typed(key: str, value: object, kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{key}: invalid value {value!r}")
    return value


def _checked(settings: Settings) -> Settings:
    if settings.reflect and settings.descriptor_set is not None:
        raise ConfigError("descriptor_set and reflect are mutually exclusive")
    if settings.unary_timeout <= 0:
        raise ConfigError(f"unary_timeout: must be positive, got {settings.unary_timeout}")
    if settings.stream_timeout is not None and settings.stream_timeout <= 0:
        settings = replace(settings, stream_timeout=None)
    if settings.max_body_bytes <= 0:
        raise ConfigError(f"max_body_bytes: must be positive, got {settings.max_body_bytes}")
    if settings.event_loop not in EVENT_LOOPS:
        raise ConfigError(
            f"event_loop: {settings.event_loop!r} is not one of {', '.join(EVENT_LOOPS)}"
        )
    return settings


def argument_parser() -> argparse.ArgumentParser:
    """The ``python -m gateway`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="REST/JSON gateway for gRPC services annotated with google.api.http.",
    )
    add = parser.add_argument
    add("--config", type=Path, help="TOML configuration file; flags override it")
    add(
        "--backend",
        action="append",
        metavar="[SERVICE=]HOST:PORT[,HOST:PORT...]",
        help="backend addresses (repeatable); without SERVICE= the default for every service",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--descriptor-set", type=Path, metavar="FILE", help="FileDescriptorSet")
    source.add_argument("--reflect", action="store_true", default=None, help="use reflection")
    add("--listen", metavar="HOST:PORT", help="HTTP address (default 127.0.0.1:8080)")
    add("--auto-map", action="store_true", default=None, help="POST /pkg.Service/Method")
    add("--unary-timeout", type=float, metavar="SECONDS", help="default unary deadline")
    add("--max-body-bytes", type=int, metavar="BYTES", help="request body limit")
    add("--allow-header", action="append", metavar="NAME", help="forward this header too")
    add("--cors-origin", action="append", metavar="ORIGIN", help="allow this CORS origin")
    add(
        "--no-share",
        action="store_true",
        default=None,
        help="one upstream call per stream, even for methods with the share option",
    )
    add(
        "--event-loop",
        choices=EVENT_LOOPS,
        help="the event loop (default uvloop; asyncio: the standard library's)",
    )
    add(
        "--no-tunnel",
        action="store_true",
        default=None,
        help="one plain gRPC call per unary request, even to backends with UnaryTunnelService",
    )
    add_auth_arguments(parser)
    return parser


def settings_from_args(argv: Sequence[str] | None = None) -> Settings:
    """Settings from the command line (and the ``--config`` file it names)."""
    args = argument_parser().parse_args(argv)
    settings = settings_from_toml(args.config) if args.config else Settings()
    changes: dict[str, Any] = {}
    if args.backend:
        changes["backends"] = {**settings.backends, **_backend_flags(args.backend)}
    if args.listen:
        changes["listen"] = parse_address(args.listen, option="--listen")
    if args.descriptor_set:
        changes.update(descriptor_set=args.descriptor_set, reflect=False)
    if args.reflect:
        changes.update(reflect=True, descriptor_set=None)
    for option in ("auto_map", "unary_timeout", "max_body_bytes"):
        if getattr(args, option) is not None:
            changes[option] = getattr(args, option)
    if args.allow_header:
        changes["header_allowlist"] = (*settings.header_allowlist, *args.allow_header)
    if args.cors_origin:
        changes["cors_origins"] = (*settings.cors_origins, *args.cors_origin)
    if args.no_share:
        changes["streams"] = replace(settings.streams, share=False)
    if args.no_tunnel:
        changes["tunnel"] = False
    if args.event_loop:
        changes["event_loop"] = args.event_loop
    settings = _checked(replace(settings, **changes))
    if not settings.backends:
        raise ConfigError("no backend: pass --backend HOST:PORT or set [backends] in --config")
    try:
        return replace(settings, auth=auth_from_args(args, settings.auth))
    except AuthConfigError as exc:
        raise ConfigError(str(exc)) from exc


def _backend_flags(values: Sequence[str]) -> dict[str, tuple[str, ...]]:
    backends: dict[str, tuple[str, ...]] = {}
    for value in values:
        service, sep, addresses = value.rpartition("=")
        name = service if sep else DEFAULT_BACKEND
        backends[name] = _addresses(addresses, option=f"--backend {value}")
    return backends
