"""Presence for the Redis engine: each instance's connections per room, under a lease.

An instance counts its own connections per room in ``Rinst:<instance>`` and renews
its lease (``Rinstances``, expiry in ms) every third of ``lease_s`` while it holds
members there. A user's connections are the sum over instances whose lease is
alive; ``member_joined``/``member_left`` are published (by the scripts, atomically)
when that sum goes 0→1 / 1→0. A dead instance's connections are swept, with
``member_left`` for users nobody else holds, by the next join, leave, renewal or
member listing of that room from any instance.

A connection belongs to one room, not just to a room id: it is counted with the room's
``create_time_ns``, and the scripts ignore a join or leave for another room of that id. So a
connection to a room that was deleted, or that Redis lost (FLUSHALL, eviction), closing after
a room of the same id was created, never takes its user out of the new room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.engine import redis_lua
from services.engine.redis_feed import Arg
from services.engine.redis_lua import RoomKeys
from services.engine.types import MemberRecord

log = logging.getLogger("services.engine.redis")


class PresenceLeases:
    """This instance's share of every room's presence."""

    def __init__(self, redis: Redis, prefix: str, lease_s: float) -> None:
        self.instance = secrets.token_hex(8)
        self.lease_s = lease_s
        self._prefix = prefix
        self._join = redis.register_script(redis_lua.JOIN)
        self._renew = redis.register_script(redis_lua.HEARTBEAT)
        self._members = redis.register_script(redis_lua.MEMBERS)
        self._local: dict[str, Counter[tuple[str, str]]] = {}  # room → (user, born) → count

    def _args(self, room_id: str) -> list[Arg]:
        now_ms = time.time_ns() // 1_000_000
        expiry_ms = now_ms + int(self.lease_s * 1000)
        keys = RoomKeys(self._prefix, room_id)
        return [keys.key("inst:"), self.instance, now_ms, expiry_ms, time.time_ns()]

    def _keys(self, room_id: str) -> list[str]:
        return RoomKeys(self._prefix, room_id).presence

    async def join(self, room_id: str, user: str, born: str) -> None:
        """Counts one more connection of ``user`` in the room created at ``born`` (its
        ``create_time_ns``); if Redis does not take it (down, restarting), it is not counted
        here either, so no lease is renewed for a connection that failed."""
        local = self._local.setdefault(room_id, Counter())
        local[user, born] += 1
        try:
            args = [*self._args(room_id), user, 1, born]
            await self._join(keys=self._keys(room_id), args=args)
        except BaseException:
            self._uncount(room_id, user, born, 1)
            raise

    async def leave(self, room_id: str, user: str, born: str, count: int = 1) -> None:
        """Counts ``count`` connections of ``user`` in the room created at ``born`` fewer."""
        if not self._uncount(room_id, user, born, count):
            return
        args = [*self._args(room_id), user, -count, born]
        await self._join(keys=self._keys(room_id), args=args)

    def _uncount(self, room_id: str, user: str, born: str, count: int) -> bool:
        """Takes ``count`` off the local count; False if there was none."""
        local = self._local.get(room_id)
        if local is None or local[user, born] <= 0:
            return False
        local[user, born] -= count
        if local[user, born] <= 0:
            del local[user, born]
        if not local:
            del self._local[room_id]
        return True

    async def release_all(self) -> None:
        """Leaves every room (on shutdown), so other instances see ``member_left`` now."""
        for room_id, local in list(self._local.items()):
            for (user, born), count in list(local.items()):
                with contextlib.suppress(RedisError, OSError):
                    await self.leave(room_id, user, born, count)

    async def renew_forever(self) -> None:
        """Renews this instance's lease in every room it holds members of."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            for room_id, local in list(self._local.items()):
                if not local:
                    continue
                try:
                    await self._renew(keys=self._keys(room_id), args=self._args(room_id))
                except RedisError as error:
                    log.warning("presence lease of rooms/%s not renewed: %s", room_id, error)

    async def members(self, room_id: str) -> list[MemberRecord] | None:
        """Members by user id, after sweeping dead instances; None if the room is gone."""
        reply = await self._members(keys=self._keys(room_id), args=self._args(room_id))
        if reply == -1:
            return None
        rows = [reply[i : i + 3] for i in range(0, len(reply), 3)]
        members = (MemberRecord(user, int(n), int(t)) for user, n, t in rows)
        return sorted(members, key=lambda m: m.user)
