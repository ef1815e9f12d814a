"""Who is calling: the identity every servicer reads, never the request.

An auth interceptor sets ``CURRENT_IDENTITY`` around each handler; servicers only
call ``current_identity()``. Without an interceptor every caller is ``ANONYMOUS``.
The sender of a message, the user a stream puts in presence and the creator of a
room all come from here. An identity holding ``MODERATE_PERMISSION`` may edit and
delete anyone's messages.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

MODERATE_PERMISSION = "messages.moderate"


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified caller: user id, roles, the permissions they grant, token times (s)."""

    user: str
    roles: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()
    issued_at: int | None = None
    expires_at: int | None = None

    def has_permission(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def is_moderator(self) -> bool:
        """True when the caller may edit and delete other users' messages."""
        return self.has_permission(MODERATE_PERMISSION)


ANONYMOUS = Identity("anonymous", frozenset(), frozenset(), None, None)

CURRENT_IDENTITY: ContextVar[Identity] = ContextVar("switchboard_identity", default=ANONYMOUS)


def current_identity() -> Identity:
    """The identity of the RPC being handled (ANONYMOUS when none was set)."""
    return CURRENT_IDENTITY.get()
