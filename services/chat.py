"""ChatService: post, edit, delete and read messages; Subscribe, Converse, ImportMessages.

Invariants:

- the sender of a post and the user a stream puts in presence is the caller's
  identity; only a caller with ``messages.moderate`` edits or deletes others' messages;
- every engine subscription a handler opens is closed in ``finally``, however the
  call ends (completion, client cancel, error, shutdown);
- a stream's first event is ``subscribed``; its id is the cursor of the position the
  live stream starts after, so a client that saw nothing else can still resume;
- Subscribe and Converse yield room events as bytes serialized once per event
  (``convert.room_event_bytes``); server.py registers ChatService with a response
  serializer that passes bytes through;
- ListMessages page tokens carry (epoch, next offset, direction); a token of another
  epoch is refused with FAILED_PRECONDITION, never silently read in the new epoch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import empty_pb2

from services import convert, errors
from services.engine import Cursor, Engine, EngineError, InvalidArgument, PostResult, Subscription
from services.identity import MODERATE_PERMISSION, Identity, current_identity
from services.rooms import CREATED_METADATA
from switchboard.v1 import chat_pb2, chat_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
MESSAGE_MASK_FIELDS = ("text", "attributes")
_DIRECTIONS = (
    chat_pb2.DIRECTION_UNSPECIFIED,
    chat_pb2.DIRECTION_BACKWARD,
    chat_pb2.DIRECTION_FORWARD,
)


@dataclass(frozen=True, slots=True)
class PostFields:
    """How the fields of one post are named in error messages of a given RPC."""

    text: str = "message.text"
    attributes: str = "message.attributes"
    request_id: str = "request_id"

    @classmethod
    def under(cls, prefix: str, message: str = "") -> PostFields:
        """Field names below ``prefix`` (e.g. ``messages[3]``); ``message`` nests text."""
        inner = f"{prefix}.{message}." if message else f"{prefix}."
        return cls(f"{inner}text", f"{inner}attributes", f"{prefix}.request_id")


@dataclass(frozen=True, slots=True)
class HistoryToken:
    """Where a ListMessages page starts; encoded, the opaque ``next_page_token``.

    A request without a token reads from a position with epoch ``""`` (any epoch)."""

    epoch: str
    offset: int
    forward: bool

    def encode(self) -> str:
        raw = json.dumps({"e": self.epoch, "o": self.offset, "f": self.forward})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> HistoryToken:
        """Parses a token; InvalidArgument naming ``page_token`` if it was not ours."""
        try:
            raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            epoch, offset, forward = raw["e"], raw["o"], raw["f"]
        except (binascii.Error, ValueError, TypeError, KeyError):
            epoch = offset = forward = None
        valid = isinstance(epoch, str) and isinstance(forward, bool) and isinstance(offset, int)
        if valid and offset > 0:
            return cls(epoch, offset, forward)
        raise errors.invalid("page_token", token, "is not a page token returned by ListMessages")


def _actor(identity: Identity) -> str | None:
    """The engine's actor: None (any message) for moderators, else the caller.

    Asks ``has_permission`` (not ``is_moderator``) so an identity object of the auth
    layer, whose permissions may be patterns such as ``messages.*``, works too."""
    return None if identity.has_permission(MODERATE_PERMISSION) else identity.user


def _mask_paths(paths: list[str]) -> list[str]:
    if not paths:
        return ["text"]
    if "*" in paths:
        return list(MESSAGE_MASK_FIELDS)
    for path in paths:
        if path not in MESSAGE_MASK_FIELDS:
            raise errors.invalid(
                "update_mask.paths",
                path,
                "is not an updatable field of Message (use text, attributes or *)",
            )
    return paths


def parse_cursor(text: str, field: str) -> Cursor | None:
    """A stream request's resume cursor (None when empty); InvalidArgument naming ``field``."""
    return Cursor.parse(text, field=field) if text else None


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    """ChatService over an Engine."""

    def __init__(self, engine: Engine, *, max_message_bytes: int) -> None:
        self._engine = engine
        self._max_message_bytes = max_message_bytes

    async def post(
        self, room_id: str, message: chat_pb2.Message, request_id: str, fields: PostFields
    ) -> PostResult:
        """Validates one post and stores it with the caller as sender."""
        text = errors.check_text(message.text, fields.text, max_bytes=self._max_message_bytes)
        attributes = errors.check_attributes(message.attributes, fields.attributes)
        errors.check_request_id(request_id, fields.request_id)
        return await self._engine.post_message(
            room_id,
            text=text,
            attributes=attributes,
            sender=current_identity().user,
            request_id=request_id,
        )

    async def PostMessage(
        self, request: chat_pb2.PostMessageRequest, context: Context
    ) -> chat_pb2.Message:
        async with errors.status_on_error(context, resource=request.parent):
            room_id = errors.parse_room_name(request.parent, "parent")
            result = await self.post(room_id, request.message, request.request_id, PostFields())
        await context.send_initial_metadata(CREATED_METADATA)
        return convert.message(result.message)

    async def UpdateMessage(
        self, request: chat_pb2.UpdateMessageRequest, context: Context
    ) -> chat_pb2.Message:
        message = request.message
        async with errors.status_on_error(context, resource=message.name):
            room_id, message_id = errors.parse_message_name(message.name, "message.name")
            paths = _mask_paths(list(request.update_mask.paths))
            text = attributes = None
            if "text" in paths:
                text = errors.check_text(
                    message.text, "message.text", max_bytes=self._max_message_bytes
                )
            if "attributes" in paths:
                attributes = errors.check_attributes(message.attributes)
            record = await self._engine.edit_message(
                room_id,
                message_id,
                text=text,
                attributes=attributes,
                actor=_actor(current_identity()),
            )
            return convert.message(record)

    async def DeleteMessage(
        self, request: chat_pb2.DeleteMessageRequest, context: Context
    ) -> empty_pb2.Empty:
        async with errors.status_on_error(context, resource=request.name):
            room_id, message_id = errors.parse_message_name(request.name, "name")
            await self._engine.delete_message(room_id, message_id, actor=_actor(current_identity()))
            return empty_pb2.Empty()

    async def ListMessages(
        self, request: chat_pb2.ListMessagesRequest, context: Context
    ) -> chat_pb2.ListMessagesResponse:
        async with errors.status_on_error(context, resource=request.parent):
            room_id = errors.parse_room_name(request.parent, "parent")
            limit = errors.page_size(request.page_size)
            token = self._start(request)
            if request.page_token:
                await self._check_epoch(room_id, token.epoch)
            page = await self._engine.read_history(
                room_id, start_offset=token.offset, forward=token.forward, limit=limit
            )
            if request.page_token and page.epoch != token.epoch:
                raise _epoch_changed(room_id, token.epoch, page.epoch)
        response = chat_pb2.ListMessagesResponse(
            messages=[convert.message(m) for m in page.messages],
            epoch=page.epoch,
            first_offset=page.first_offset,
            last_offset=page.last_offset,
        )
        if page.next_offset:
            response.next_page_token = HistoryToken(
                page.epoch, page.next_offset, token.forward
            ).encode()
        return response

    @staticmethod
    def _start(request: chat_pb2.ListMessagesRequest) -> HistoryToken:
        """Where to read from: the page token if any (it fixes the direction), else the request."""
        if request.page_token:
            return HistoryToken.decode(request.page_token)
        if request.start_offset < 0:
            raise errors.invalid("start_offset", request.start_offset, "must not be negative")
        if request.direction not in _DIRECTIONS:
            raise errors.invalid("direction", request.direction, "is not a Direction")
        forward = request.direction == chat_pb2.DIRECTION_FORWARD
        return HistoryToken("", request.start_offset, forward)

    async def _check_epoch(self, room_id: str, epoch: str) -> None:
        room = await self._engine.get_room(room_id)
        if room.epoch != epoch:
            raise _epoch_changed(room_id, epoch, room.epoch)

    async def Subscribe(  # type: ignore[override]  # yields pre-serialized events (server.py)
        self, request: chat_pb2.SubscribeRequest, context: Context
    ) -> AsyncIterator[chat_pb2.RoomEvent | bytes]:
        async with errors.status_on_error(context, resource=request.room):
            room_id = errors.parse_room_name(request.room, "room")
            cursor = parse_cursor(request.cursor, "cursor")
            user, now = current_identity().user, time.time_ns()
            subscription = await self._engine.subscribe(room_id, cursor=cursor, user=user)
            try:
                yield subscribed_event(room_id, subscription, now)
                async for event in subscription:
                    yield convert.room_event_bytes(event)
            finally:
                await subscription.close()

    async def Converse(  # type: ignore[override]  # yields pre-serialized events (server.py)
        self, request_iterator: AsyncIterator[chat_pb2.ConverseRequest], context: Context
    ) -> AsyncIterator[chat_pb2.ConverseResponse | bytes]:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            required = InvalidArgument("room is required on the first request", field="room")
            await errors.abort(context, required)
        async with errors.status_on_error(context, resource=first.room):
            room_id = errors.parse_room_name(first.room, "room")
            cursor = parse_cursor(first.cursor, "cursor")
            user, now = current_identity().user, time.time_ns()
            subscription = await self._engine.subscribe(room_id, cursor=cursor, user=user)
            try:
                yield chat_pb2.ConverseResponse(event=subscribed_event(room_id, subscription, now))
                conversation = Conversation(self, self._engine, room_id, first, subscription)
                async for response in conversation.run(requests):
                    yield response
            finally:
                await subscription.close()

    async def ImportMessages(
        self, request_iterator: AsyncIterator[chat_pb2.ImportMessagesRequest], context: Context
    ) -> chat_pb2.ImportMessagesResponse:
        """Stores each message as it arrives. An invalid one ends the call with
        INVALID_ARGUMENT naming ``messages[i]…``; the ones before it stay stored."""
        requests = aiter(request_iterator)
        response = chat_pb2.ImportMessagesResponse()
        first = await anext(requests, None)
        if first is None:
            return response
        async with errors.status_on_error(context, resource=first.parent):
            room_id = errors.parse_room_name(first.parent, "messages[0].parent")
            await self._import(room_id, first, 0, response)
            index = 1
            async for request in requests:
                if request.parent != first.parent:
                    raise errors.invalid(
                        f"messages[{index}].parent",
                        request.parent,
                        f"differs from {first.parent!r}: every request must name the same room",
                    )
                await self._import(room_id, request, index, response)
                index += 1
        return response

    async def _import(
        self,
        room_id: str,
        request: chat_pb2.ImportMessagesRequest,
        index: int,
        response: chat_pb2.ImportMessagesResponse,
    ) -> None:
        fields = PostFields.under(f"messages[{index}]")
        result = await self.post(room_id, request.message, request.request_id, fields)
        if result.duplicate:
            response.duplicate_count += 1
            return
        response.imported_count += 1
        response.last_offset = result.message.offset
        if not response.first_offset:
            response.first_offset = result.message.offset


def subscribed_event(room_id: str, subscription: Subscription, time_ns: int) -> chat_pb2.RoomEvent:
    """The ``subscribed`` event, timed when the subscription was requested."""
    return convert.subscribed(
        room_id, subscription.position, recovered=subscription.recovered, time_ns=time_ns
    )


def _epoch_changed(room_id: str, token_epoch: str, epoch: str) -> errors.EpochChanged:
    return errors.EpochChanged(
        f"the history of rooms/{room_id} changed epoch ({token_epoch} → {epoch}) since "
        "page_token was issued; restart listing without a page_token",
        field="page_token",
    )


class Conversation:
    """One Converse call: the room's events merged with acknowledgements of posts.

    Two tasks feed one bounded outbox that the handler drains: the pump (room events,
    in order) and the reader (the client's posts and typing). When the client
    half-closes, events keep flowing until the client cancels or the subscription
    ends (room deleted, overflow, shutdown) with the error it raised. The caller
    owns the subscription and closes it.
    """

    OUTBOX_SIZE = 16

    def __init__(
        self,
        chat: ChatServicer,
        engine: Engine,
        room_id: str,
        first: chat_pb2.ConverseRequest,
        subscription: Subscription,
    ) -> None:
        self._chat = chat
        self._engine = engine
        self._room_id = room_id
        self._first = first
        self._subscription = subscription
        self._identity = current_identity()
        self._outbox: asyncio.Queue[chat_pb2.ConverseResponse | bytes | BaseException] = (
            asyncio.Queue(self.OUTBOX_SIZE)
        )

    async def run(
        self, requests: AsyncIterator[chat_pb2.ConverseRequest]
    ) -> AsyncIterator[chat_pb2.ConverseResponse | bytes]:
        """Yields events and acks until the subscription or the reader raises."""
        tasks = (
            asyncio.create_task(self._pump()),
            asyncio.create_task(self._read(requests)),
        )
        try:
            while True:
                item = await self._outbox.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pump(self) -> None:
        try:
            async for event in self._subscription:
                await self._outbox.put(convert.converse_event_bytes(event))
        except Exception as error:  # the subscription ends by raising; the handler re-raises it
            await self._outbox.put(error)

    async def _read(self, requests: AsyncIterator[chat_pb2.ConverseRequest]) -> None:
        try:
            await self._handle(self._first)
            async for request in requests:
                if request.room and request.room != self._first.room:
                    raise errors.invalid(
                        "room",
                        request.room,
                        f"differs from {self._first.room!r}: a conversation stays in one room",
                    )
                await self._handle(request)
        except Exception as error:  # e.g. InvalidArgument; the handler re-raises it
            await self._outbox.put(error)

    async def _handle(self, request: chat_pb2.ConverseRequest) -> None:
        action = request.WhichOneof("action")
        if action == "post":
            await self._outbox.put(chat_pb2.ConverseResponse(ack=await self._post(request.post)))
        elif action == "typing":
            await self._engine.publish_typing(
                self._room_id, user=self._identity.user, active=request.typing.active
            )

    async def _post(self, post: chat_pb2.ConversePost) -> chat_pb2.PostAck:
        fields = PostFields.under("post", "message")
        try:
            result = await self._chat.post(self._room_id, post.message, post.request_id, fields)
        except EngineError as error:
            name = convert.room_name(self._room_id)
            return chat_pb2.PostAck(
                request_id=post.request_id, error=errors.status_proto(error, resource=name)
            )
        return chat_pb2.PostAck(request_id=post.request_id, message=convert.message(result.message))
