"""The verified identity as gRPC metadata for the backend (sans-IO).

The gateway removes every identity key a client sent — by header or by ``Grpc-Metadata-*`` —
and then adds its own, so a backend can trust these keys when they come from the gateway:

=====================  ===============================================================
``authorization``      ``Bearer <token>`` — always re-sent in this form, whatever source
                       (cookie, subprotocol, query) the token came from, so the service
                       can verify it again.
``x-user-id``          the token's ``sub``
``x-roles``            the token's roles, sorted, comma-separated
``x-permissions``      the permissions the policy grants for them, sorted, comma-separated
``x-token-issued-at``  the token's ``iat`` in integer seconds since the epoch (absent if none)
=====================  ===============================================================

Values are percent-encoded UTF-8 where needed (``%``, ``,`` and anything outside printable
ASCII), so gRPC's ASCII-only metadata can carry any user id; decode with
``urllib.parse.unquote`` after splitting lists on ``,``. Anonymous calls to public methods get
no identity keys and no ``authorization``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

from gateway.auth import Identity

__all__ = [
    "IDENTITY_KEYS",
    "MetadataEntry",
    "identity_metadata",
    "stripped_keys",
    "with_identity",
]

IDENTITY_KEYS = ("x-user-id", "x-roles", "x-permissions", "x-token-issued-at")
_KEY = re.compile(r"^[0-9a-z_.-]+$")
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%,")

MetadataEntry = tuple[str, str | bytes]


def stripped_keys(extra: Iterable[str] = ()) -> frozenset[str]:
    """The keys removed from client input: ``authorization``, the identity keys and ``extra``."""
    names = {name.strip().lower() for name in extra}
    bad = sorted(name for name in names if not _KEY.match(name))
    if bad:
        raise ValueError(f"strip_headers: {bad[0]!r} is not a valid header/metadata name")
    return frozenset({"authorization", *IDENTITY_KEYS, *names})


def _encoded(value: str) -> str:
    return quote(value, safe=_SAFE)


def identity_metadata(identity: Identity | None, token: str | None) -> tuple[tuple[str, str], ...]:
    """The keys the gateway sends for a call made by ``identity`` with ``token``."""
    if identity is None or token is None:
        return ()
    out = [
        ("authorization", f"Bearer {token}"),
        ("x-user-id", _encoded(identity.user)),
        ("x-roles", ",".join(sorted(_encoded(role) for role in identity.roles))),
        ("x-permissions", ",".join(sorted(_encoded(p) for p in identity.permissions))),
    ]
    if identity.issued_at is not None:
        out.append(("x-token-issued-at", str(identity.issued_at)))
    return tuple(out)


def with_identity(
    metadata: Iterable[MetadataEntry],
    identity: Identity | None,
    token: str | None,
    *,
    strip: frozenset[str] = stripped_keys(),
) -> tuple[MetadataEntry, ...]:
    """``metadata`` without any ``strip`` key, plus the identity keys for this call."""
    kept = tuple((key, value) for key, value in metadata if key.lower() not in strip)
    return kept + identity_metadata(identity, token)
