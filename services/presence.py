"""PresenceService: who has a live Subscribe or Converse stream on a room.

The engine counts a user's streams; a user is listed once however many streams
they hold, with the number of streams and the time the first one opened.
"""

from __future__ import annotations

from typing import Any

import grpc

from services import convert, errors
from services.engine import Engine
from switchboard.v1 import presence_pb2, presence_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class PresenceServicer(presence_pb2_grpc.PresenceServiceServicer):
    """PresenceService over an Engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def ListMembers(
        self, request: presence_pb2.ListMembersRequest, context: Context
    ) -> presence_pb2.ListMembersResponse:
        async with errors.status_on_error(context, resource=request.parent):
            room_id = errors.parse_room_name(request.parent, "parent")
            members = await self._engine.list_members(room_id)
        return presence_pb2.ListMembersResponse(members=[convert.member(m) for m in members])
