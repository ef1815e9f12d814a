"""Auth settings (TOML ``[auth]`` table, ``SWITCHBOARD_*`` environment) → a running Authenticator.

Used by both processes: the gateway and the service read the same settings and build the same
``Authenticator`` with ``open_authenticator``; both command lines take the same flags
(``add_auth_arguments`` / ``auth_from_args``). See gateway/docs/auth.md for every option.

Invariants: every invalid value is an ``AuthConfigError`` naming the option; keys, the policy
and a JWKS file are loaded at start-up, never at request time; environment values override the
file. The development key (``dev = true``) is an HS256 secret shared through
``SWITCHBOARD_DEV_SECRET`` or a generated file in the user's state directory.

Secure default (``auth_from_args``): a process with no key source (no key, no JWKS, no dev key)
refuses to start unless ``--no-auth`` says, explicitly, that every caller is let in unchecked.
``--no-auth`` is a flag only, never an environment variable, so it cannot be inherited by
accident.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.auth import (
    HMAC_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
    Authenticator,
    ClaimRules,
    KeyRing,
    TokenVerifier,
    UnusableKey,
    VerificationKey,
)
from gateway.credentials import TokenSources
from gateway.identity_metadata import stripped_keys
from gateway.policy import Policy, PolicyError

if TYPE_CHECKING:
    from gateway.jwks import JwksSource

__all__ = [
    "DEV_KID",
    "NO_KEYS",
    "AuthConfig",
    "AuthConfigError",
    "KeyConfig",
    "add_auth_arguments",
    "auth_from_args",
    "build_keyring",
    "dev_secret",
    "dev_secret_path",
    "open_authenticator",
]

DEV_KID = "switchboard-dev"
DEV_SECRET_ENV = "SWITCHBOARD_DEV_SECRET"
ASYMMETRIC_ALGORITHMS = tuple(sorted(SUPPORTED_ALGORITHMS - HMAC_ALGORITHMS))
AUTH_CONFIG_ENV = "SWITCHBOARD_AUTH_CONFIG"
NO_KEYS = (
    "no token verification key is configured: pass --auth-config FILE (keys or a JWKS; or set "
    f"{AUTH_CONFIG_ENV}, SWITCHBOARD_JWKS_URL, ...), --dev-auth for the development key "
    "(never in production), or --no-auth to let every caller in without a token"
)


class AuthConfigError(ValueError):
    """An invalid auth setting; the message names it."""


@dataclass(frozen=True)
class KeyConfig:
    """One configured key: a secret (inline, from an env var or a file) or a PEM public key."""

    kid: str | None = None
    algorithms: tuple[str, ...] = ()
    secret: str | None = None
    secret_env: str | None = None
    secret_file: Path | None = None
    public_key_file: Path | None = None


@dataclass(frozen=True)
class AuthConfig:
    """Everything auth needs; defaults: no keys, default policy, cookie on, query param off."""

    keys: tuple[KeyConfig, ...] = ()
    dev: bool = False
    jwks_file: Path | None = None
    jwks_url: str | None = None
    jwks_algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    jwks_refresh_seconds: float = 300.0
    jwks_min_refresh_seconds: float = 30.0
    leeway_seconds: float = 30.0
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    roles_claim: str = "roles"
    cookie_name: str = "switchboard_token"
    query_param: str | None = None
    policy: Path | None = None
    strip_headers: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, base_dir: Path = Path()) -> AuthConfig:
        """From a parsed ``[auth]`` table; relative paths are resolved against ``base_dir``."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, raw in table.items():
            if name not in known:
                raise AuthConfigError(f"auth: unknown option {name!r}")
            values[name] = _convert(name, raw, base_dir)
        return cls(**values).validated()

    @classmethod
    def load(cls, path: Path) -> AuthConfig:
        """From a TOML file: its ``[auth]`` table, or the whole file when it has none."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise AuthConfigError(f"auth config {str(path)!r}: {exc}") from exc
        return cls.from_mapping(data.get("auth", data), base_dir=path.parent)

    def with_env(self, environ: Mapping[str, str] = os.environ) -> AuthConfig:
        """This config overridden by ``SWITCHBOARD_*`` variables (see gateway/docs/auth.md)."""
        changes: dict[str, Any] = {}
        for var, (name, parse) in _ENV.items():
            if environ.get(var):
                changes[name] = parse(environ[var])
        if environ.get("SWITCHBOARD_JWT_SECRET"):
            key = KeyConfig(secret_env="SWITCHBOARD_JWT_SECRET", algorithms=("HS256",))
            changes["keys"] = (*self.keys, key)
        if environ.get("SWITCHBOARD_JWT_PUBLIC_KEY_FILE"):
            pem = KeyConfig(public_key_file=Path(environ["SWITCHBOARD_JWT_PUBLIC_KEY_FILE"]))
            changes["keys"] = (*changes.get("keys", self.keys), pem)
        return replace(self, **changes).validated()

    def validated(self) -> AuthConfig:
        for name in ("jwks_algorithms",):
            unknown = sorted(set(getattr(self, name)) - SUPPORTED_ALGORITHMS)
            if unknown:
                raise AuthConfigError(f"auth.{name}: unsupported algorithm {unknown[0]!r}")
        if self.jwks_file is not None and self.jwks_url is not None:
            raise AuthConfigError("auth: set jwks_file or jwks_url, not both")
        if self.leeway_seconds < 0 or self.jwks_min_refresh_seconds < 0:
            raise AuthConfigError("auth: leeway_seconds and jwks_min_refresh_seconds must be >= 0")
        if self.jwks_refresh_seconds <= 0:
            raise AuthConfigError("auth.jwks_refresh_seconds must be > 0")
        try:
            stripped_keys(self.strip_headers)
        except ValueError as exc:
            raise AuthConfigError(f"auth.{exc}") from exc
        return self

    @property
    def has_key_source(self) -> bool:
        """Whether any token could ever verify: a configured key, a JWKS or the dev key."""
        return bool(self.keys) or self.dev or self.jwks_file is not None or bool(self.jwks_url)

    @property
    def claim_rules(self) -> ClaimRules:
        return ClaimRules(self.leeway_seconds, self.issuer, self.audience, self.roles_claim)

    @property
    def token_sources(self) -> TokenSources:
        return TokenSources(self.cookie_name, self.query_param)

    @property
    def stripped_keys(self) -> frozenset[str]:
        return stripped_keys(self.strip_headers)

    def load_policy(self) -> Policy:
        try:
            return Policy.default() if self.policy is None else Policy.load(self.policy)
        except PolicyError as exc:
            raise AuthConfigError(f"auth.policy: {exc}") from exc


# --- conversion ---------------------------------------------------------------------------------


def _strings(name: str, raw: Any) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise AuthConfigError(f"auth.{name} must be a string or a list of strings")
    return tuple(items)


_PATHS = frozenset({"jwks_file", "policy"})
_LISTS = frozenset({"jwks_algorithms", "audience", "strip_headers"})
_NUMBERS = frozenset({"jwks_refresh_seconds", "jwks_min_refresh_seconds", "leeway_seconds"})


def _convert(name: str, raw: Any, base: Path) -> Any:
    if name == "keys":
        if not isinstance(raw, list) or not all(isinstance(k, dict) for k in raw):
            raise AuthConfigError("auth.keys must be an array of tables ([[auth.keys]])")
        return tuple(_key_config(index, k, base) for index, k in enumerate(raw))
    if name in _LISTS:
        return _strings(name, raw)
    if name in _NUMBERS:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise AuthConfigError(f"auth.{name} must be a number of seconds, got {raw!r}")
        return float(raw)
    if name == "dev":
        if not isinstance(raw, bool):
            raise AuthConfigError(f"auth.dev must be true or false, got {raw!r}")
        return raw
    if not isinstance(raw, str):
        raise AuthConfigError(f"auth.{name} must be a string, got {raw!r}")
    return base / raw if name in _PATHS else raw


def _key_config(index: int, table: Mapping[str, Any], base: Path) -> KeyConfig:
    where = f"auth.keys[{index}]"
    unknown = sorted(set(table) - {f.name for f in fields(KeyConfig)})
    if unknown:
        raise AuthConfigError(f"{where}: unknown option {unknown[0]!r}")
    values: dict[str, Any] = {}
    for name, raw in table.items():
        if name == "algorithms":
            values[name] = _strings(f"keys[{index}].algorithms", raw)
        elif not isinstance(raw, str):
            raise AuthConfigError(f"{where}.{name} must be a string")
        else:
            values[name] = base / raw if name.endswith("_file") else raw
    sources = [n for n in ("secret", "secret_env", "secret_file", "public_key_file") if n in values]
    if len(sources) != 1:
        raise AuthConfigError(
            f"{where}: set exactly one of secret, secret_env, secret_file, public_key_file"
        )
    return KeyConfig(**values)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise AuthConfigError(f"expected a number, got {text!r}") from None


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "SWITCHBOARD_AUTH_DEV": ("dev", lambda text: text.lower() in ("1", "true", "yes")),
    "SWITCHBOARD_JWKS_URL": ("jwks_url", str),
    "SWITCHBOARD_JWKS_FILE": ("jwks_file", Path),
    "SWITCHBOARD_JWT_ISSUER": ("issuer", str),
    "SWITCHBOARD_JWT_AUDIENCE": ("audience", _csv),
    "SWITCHBOARD_JWT_LEEWAY": ("leeway_seconds", _float),
    "SWITCHBOARD_JWT_ROLES_CLAIM": ("roles_claim", str),
    "SWITCHBOARD_AUTH_POLICY": ("policy", Path),
    "SWITCHBOARD_AUTH_COOKIE": ("cookie_name", str),
    "SWITCHBOARD_AUTH_QUERY_PARAM": ("query_param", str),
    "SWITCHBOARD_AUTH_STRIP_HEADERS": ("strip_headers", _csv),
}


# --- command line (shared by ``python -m services`` and ``python -m gateway``) -------------------


def add_auth_arguments(parser: argparse.ArgumentParser) -> None:
    """``--auth-config FILE``, ``--dev-auth`` and ``--no-auth``."""
    group = parser.add_argument_group(
        "authentication",
        "With no key configured the process refuses to start unless --no-auth is given. "
        "SWITCHBOARD_JWT_*, SWITCHBOARD_JWKS_* and SWITCHBOARD_AUTH_* variables override the file.",
    )
    group.add_argument(
        "--auth-config",
        type=Path,
        metavar="FILE",
        help=f"TOML file with an [auth] table: keys, JWKS, issuer, audience, policy "
        f"(also {AUTH_CONFIG_ENV})",
    )
    group.add_argument(
        "--dev-auth",
        action="store_true",
        help="accept tokens signed with the development key, as minted by "
        "'python -m services token' (also SWITCHBOARD_AUTH_DEV=1); never in production",
    )
    group.add_argument(
        "--no-auth",
        action="store_true",
        help="check no token at all: every caller is let in (logged as a warning at start-up)",
    )


def auth_from_args(
    namespace: argparse.Namespace,
    base: AuthConfig | None = None,
    environ: Mapping[str, str] = os.environ,
) -> AuthConfig | None:
    """The auth settings the flags ask for; None means ``--no-auth`` (no checks at all).

    ``base`` is what a process's own config file said (``[auth]`` in the gateway's TOML);
    ``--auth-config`` (or ``SWITCHBOARD_AUTH_CONFIG``) replaces it, the environment overrides
    either, ``--dev-auth`` adds the development key. No key source at all is an error.
    """
    path: Path | None = namespace.auth_config
    if path is None and environ.get(AUTH_CONFIG_ENV):
        path = Path(environ[AUTH_CONFIG_ENV])
    if namespace.no_auth:
        if namespace.auth_config is not None or namespace.dev_auth:
            raise AuthConfigError("--no-auth cannot be combined with --auth-config or --dev-auth")
        return None
    config = AuthConfig.load(path) if path is not None else (base or AuthConfig())
    config = config.with_env(environ)
    if namespace.dev_auth:
        config = replace(config, dev=True)
    if not config.has_key_source:
        raise AuthConfigError(NO_KEYS)
    return config


# --- keys ---------------------------------------------------------------------------------------


def dev_secret_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_STATE_HOME/switchboard/dev-secret`` (default ``~/.local/state/...``)."""
    state = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "switchboard" / "dev-secret"


def dev_secret(environ: Mapping[str, str] = os.environ) -> str:
    """The development HS256 secret: ``SWITCHBOARD_DEV_SECRET``, else a generated file (0600)."""
    if environ.get(DEV_SECRET_ENV):
        return environ[DEV_SECRET_ENV]
    path = dev_secret_path(environ)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as out:
        secret = secrets.token_urlsafe(48)
        out.write(secret + "\n")
    return secret


def _verification_key(index: int, key: KeyConfig, environ: Mapping[str, str]) -> VerificationKey:
    where = f"auth.keys[{index}]"
    try:
        if key.public_key_file is not None:
            pem = key.public_key_file.read_bytes()
            return VerificationKey.from_pem(
                pem, kid=key.kid, algorithms=key.algorithms, origin=where
            )
        secret = key.secret
        if key.secret_env is not None:
            secret = environ.get(key.secret_env)
            if not secret:
                raise AuthConfigError(f"{where}: environment variable {key.secret_env} is empty")
        if key.secret_file is not None:
            secret = key.secret_file.read_text(encoding="utf-8").strip()
        if secret is None:
            raise AuthConfigError(f"{where}: no secret or public_key_file")
        return VerificationKey.from_secret(
            secret, kid=key.kid, algorithms=key.algorithms or ("HS256",), origin=where
        )
    except OSError as exc:
        raise AuthConfigError(f"{where}: {exc.filename}: {exc.strerror}") from exc
    except UnusableKey as exc:
        raise AuthConfigError(f"{where}: {exc}") from exc


def build_keyring(config: AuthConfig, environ: Mapping[str, str] = os.environ) -> KeyRing:
    """The configured (non-JWKS) keys, plus the development key when ``dev`` is on."""
    keys = [_verification_key(i, key, environ) for i, key in enumerate(config.keys)]
    if config.dev:
        keys.append(VerificationKey.from_secret(dev_secret(environ), kid=DEV_KID, origin="dev"))
    return KeyRing(keys)


def _jwks_source(config: AuthConfig) -> JwksSource | None:
    from gateway.jwks import JwksFile, JwksUrl

    if config.jwks_file is not None:
        return JwksFile(config.jwks_file)
    return None if config.jwks_url is None else JwksUrl(config.jwks_url)


@contextlib.asynccontextmanager
async def open_authenticator(
    config: AuthConfig, environ: Mapping[str, str] = os.environ
) -> AsyncIterator[Authenticator]:
    """An Authenticator for ``config``, with its JWKS refresher running while the block runs."""
    keyring = build_keyring(config, environ)
    verifier = TokenVerifier(keyring, config.claim_rules)
    policy = config.load_policy()
    source = _jwks_source(config)
    if source is None:
        yield Authenticator(verifier, policy)
        return
    from gateway.jwks import JwksRefresher  # aiohttp is imported only when a JWKS is used

    refresher = JwksRefresher(
        source,
        keyring,
        algorithms=frozenset(config.jwks_algorithms),
        refresh_seconds=config.jwks_refresh_seconds,
        min_refresh_seconds=config.jwks_min_refresh_seconds,
    )
    async with refresher:
        yield Authenticator(verifier, policy, on_unknown_kid=refresher.refresh_for)
