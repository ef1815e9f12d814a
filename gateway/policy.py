"""RBAC: roles → permissions from a TOML policy, checked against a method's AuthRule (sans-IO).

Policy file::

    [roles]
    admin = ["*"]
    member = ["rooms.read", "rooms.*", "messages.post"]

A permission is dotted words (``rooms.read``); a pattern is a permission, ``*`` (everything) or
``prefix.*`` (every permission under ``prefix.``). Roles a token names that the policy does not
know grant nothing.

Invariants (``Policy.check``): a method with no AuthRule is denied to everyone (deny by default);
a public rule allows any caller, with or without identity; otherwise the caller must be
authenticated (else 401) and hold every listed permission (else 403, naming the first missing).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pool import DescriptorPool

from gateway.auth import Identity, MissingCredentials, NoAuthRule, PermissionDenied, VerifiedToken
from gateway.auth import permission_granted as permission_granted
from switchboard.gateway.v1 import options_pb2

__all__ = [
    "Policy",
    "PolicyError",
    "auth_rule",
    "methods_without_rule",
    "permission_granted",
    "rule_for_path",
]

_WORD = r"[A-Za-z0-9_-]+"
_PATTERN = re.compile(rf"^(\*|{_WORD}(\.{_WORD})*(\.\*)?)$")


class PolicyError(ValueError):
    """An invalid policy; the message names the file, the role and the value."""


class Policy:
    """Role → granted permission patterns."""

    def __init__(self, roles: Mapping[str, Iterable[str]], *, source: str = "<policy>") -> None:
        self.source = source
        self.roles: dict[str, frozenset[str]] = {}
        for role, patterns in roles.items():
            self.roles[role] = frozenset(_checked(source, role, pattern) for pattern in patterns)

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<policy>") -> Policy:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{source}: not valid TOML: {exc}") from exc
        return cls(_roles_table(data, source), source=source)

    @classmethod
    def load(cls, path: Path) -> Policy:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"policy file {str(path)!r}: {exc.strerror}") from exc
        return cls.from_toml(text, source=str(path))

    @classmethod
    def default(cls) -> Policy:
        """Switchboard's shipped policy (gateway/default_policy.toml)."""
        text = resources.files("gateway").joinpath("default_policy.toml").read_text("utf-8")
        return cls.from_toml(text, source="gateway/default_policy.toml")

    def permissions_for(self, roles: Iterable[str]) -> frozenset[str]:
        """The union of what ``roles`` grant (unknown roles grant nothing)."""
        return frozenset().union(*(self.roles.get(role, frozenset()) for role in roles))

    def identity_for(self, token: VerifiedToken) -> Identity:
        return Identity(
            user=token.subject,
            roles=token.roles,
            permissions=self.permissions_for(token.roles),
            issued_at=token.issued_at,
            expires_at=token.expires_at,
        )

    def check(self, identity: Identity | None, rule: options_pb2.AuthRule | None) -> None:
        """Raise ``NoAuthRule``/``MissingCredentials``/``PermissionDenied`` unless allowed."""
        if rule is None:
            raise NoAuthRule("method has no auth rule and is denied by default")
        if rule.public:
            return
        if identity is None:
            raise MissingCredentials("a bearer token is required")
        for permission in rule.permissions:
            if not identity.has_permission(permission):
                raise PermissionDenied(f"permission {permission!r} required")


def _roles_table(data: Mapping[str, Any], source: str) -> Mapping[str, list[str]]:
    unknown = sorted(set(data) - {"roles"})
    if unknown:
        raise PolicyError(f"{source}: unknown key {unknown[0]!r} (expected only [roles])")
    roles = data.get("roles", {})
    if not isinstance(roles, dict):
        raise PolicyError(f"{source}: 'roles' must be a table of role = [permissions]")
    for role, patterns in roles.items():
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise PolicyError(f"{source}: role {role!r} must be a list of permission strings")
    return roles


def _checked(source: str, role: str, pattern: str) -> str:
    if not _PATTERN.match(pattern):
        raise PolicyError(
            f"{source}: role {role!r}: {pattern!r} is not a permission"
            " (dotted words, optionally ending in '.*', or '*')"
        )
    return pattern


# --- rules from descriptors ---------------------------------------------------------------------


def auth_rule(method: MethodDescriptor) -> options_pb2.AuthRule | None:
    """The method's ``(switchboard.gateway.v1.auth)`` option, or None when it has none."""
    options = method.GetOptions()
    if not options.HasExtension(options_pb2.auth):
        return None
    return options.Extensions[options_pb2.auth]


def rule_for_path(pool: DescriptorPool, rpc_path: str) -> options_pb2.AuthRule | None:
    """The rule of ``/pkg.Service/Method`` in ``pool``; None if it has none or is unknown."""
    service_name, _, method_name = rpc_path.lstrip("/").partition("/")
    try:
        service = pool.FindServiceByName(service_name)
    except KeyError:
        return None
    method = service.methods_by_name.get(method_name)
    return None if method is None else auth_rule(method)


def methods_without_rule(services: Iterable[ServiceDescriptor]) -> list[str]:
    """``/pkg.Service/Method`` of every method with no auth rule (denied), for a start-up log."""
    return [
        f"/{service.full_name}/{method.name}"
        for service in services
        for method in service.methods
        if auth_rule(method) is None
    ]
