"""Identity: anonymous by default, moderators by permission, per-task context."""

from __future__ import annotations

import asyncio

from services.identity import ANONYMOUS, CURRENT_IDENTITY, Identity, current_identity, is_moderator


async def test_default_is_anonymous_and_each_task_keeps_its_own() -> None:
    assert current_identity() is ANONYMOUS
    assert ANONYMOUS.user == "anonymous"
    assert not is_moderator(ANONYMOUS)

    async def as_(identity: Identity) -> str:
        CURRENT_IDENTITY.set(identity)
        await asyncio.sleep(0)
        return current_identity().user

    users = await asyncio.gather(as_(Identity("ada")), as_(Identity("bob")))
    assert users == ["ada", "bob"]
    assert current_identity() is ANONYMOUS


def test_moderator_permission() -> None:
    moderator = Identity("mod", permissions=frozenset({"messages.moderate"}))
    assert is_moderator(moderator)
    assert moderator.has_permission("messages.moderate")
    assert not is_moderator(Identity("ada", roles=frozenset({"admin"})))
