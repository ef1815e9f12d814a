"""Who is calling: the identity every servicer reads, never the request.

The auth interceptor (services/auth.py) sets ``CURRENT_IDENTITY`` around each
handler; servicers only call ``current_identity()``. Without an interceptor every
caller is ``ANONYMOUS``. The sender of a message, the user a stream puts in
presence and the creator of a room all come from here. An identity holding
``MODERATE_PERMISSION`` may edit and delete anyone's messages.

``Identity`` is the one class shared with the gateway (gateway/auth.py), so a
verified token means the same thing in both processes.
"""

from __future__ import annotations

from contextvars import ContextVar

from gateway.auth import Identity

__all__ = [
    "ANONYMOUS",
    "CURRENT_IDENTITY",
    "MODERATE_PERMISSION",
    "Identity",
    "current_identity",
    "is_moderator",
]

MODERATE_PERMISSION = "messages.moderate"

ANONYMOUS = Identity("anonymous")

CURRENT_IDENTITY: ContextVar[Identity] = ContextVar("switchboard_identity", default=ANONYMOUS)


def current_identity() -> Identity:
    """The identity of the RPC being handled (ANONYMOUS when none was set)."""
    return CURRENT_IDENTITY.get()


def is_moderator(identity: Identity) -> bool:
    """True when the caller may edit and delete other users' messages."""
    return identity.has_permission(MODERATE_PERMISSION)
