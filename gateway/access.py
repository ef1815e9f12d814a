"""One request's access decision at the gateway (sans-IO): token → identity → upstream metadata.

``check_access`` finds the token (gateway/credentials.py), lets the shared ``Authenticator``
decide against the route's AuthRule, and returns an ``Access`` that builds the metadata to send
upstream (gateway/identity_metadata.py). It raises ``AuthError``; the caller answers with
``error.http_status`` (401, 400 or 403), a ``WWW-Authenticate: error.www_authenticate`` header
and a google.rpc.Status body with code ``error.grpc_status`` and message ``error.description``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gateway.auth import Authenticator, Identity
from gateway.credentials import FoundToken, TokenSources, Transport, find_token
from gateway.identity_metadata import MetadataEntry, stripped_keys, with_identity
from switchboard.gateway.v1 import options_pb2

__all__ = ["Access", "check_access"]

_DEFAULT_STRIP = stripped_keys()


@dataclass(frozen=True)
class Access:
    """An allowed request: who (None for an anonymous call to a public method) and their token."""

    identity: Identity | None
    found: FoundToken | None

    @property
    def subprotocol(self) -> str | None:
        """The WebSocket subprotocol to echo if the bridge negotiates none of its own."""
        return None if self.found is None else self.found.subprotocol

    def metadata(
        self, base: Iterable[MetadataEntry], strip: frozenset[str] = _DEFAULT_STRIP
    ) -> tuple[MetadataEntry, ...]:
        """``base`` (built from the client's headers) without identity keys, plus ours."""
        token = None if self.found is None else self.found.token
        return with_identity(base, self.identity, token, strip=strip)

    def seconds_left(self, now: float) -> float | None:
        """Seconds until the token expires (None: anonymous or no ``exp``)."""
        if self.identity is None or self.identity.expires_at is None:
            return None
        return self.identity.expires_at - now


async def check_access(
    authenticator: Authenticator,
    rule: options_pb2.AuthRule | None,
    headers: Mapping[str, str],
    transport: Transport,
    sources: TokenSources,
    *,
    query: Sequence[tuple[str, str]] = (),
) -> Access:
    """Decide one request; raises ``AuthError`` (see the module docstring)."""
    found = find_token(headers, transport, sources, query=query)
    identity = await authenticator.authorize(None if found is None else found.token, rule)
    return Access(identity, found if identity is not None else None)
