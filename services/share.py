"""StreamShareService: one upstream call carries a room's Subscribe stream to many callers.

A gateway opens one Share call per room and attaches each of its subscribers as a handle
with the subscriber's own request and metadata. Per handle, everything Subscribe guarantees
holds: the attach is authorized as a Subscribe call (``AuthInterceptor.authorize``, or the
call's identity when the server runs without auth), the user joins presence until the handle
goes, a cursor resumes exactly as in Subscribe (same statuses and details on errors), the
handle ends UNAUTHENTICATED "token expired" when its token's ``exp`` passes, and it receives
every durable event after its start position exactly once, in order.

How (one task decides everything, in one sequence: requests, feed events and expiries
become items of one bounded queue, handled one by one):

- the call holds one presence-less engine subscription, the feed; ``L`` is the offset of
  the last durable event the feed delivered through the queue;
- an attach opens a per-handle subscription for presence and its replay, detaches it from
  live events at once, sends ``subscribed`` and the replayed events up to ``L`` to the
  handle, and makes it live when its start position (the cursor when recovered, else the
  subscribed position) is ≤ ``L``; otherwise the handle is pending until the feed delivers
  that offset — the events in between reach it as broadcasts once it is live;
- a feed event is broadcast (no handles listed: every live handle) only while some handle
  is live, so a call with nothing attached never reads the room. A handle still pending
  misses ephemeral events (typing, joined/left), as they have no offset to catch up by;
- the feed ending (gateway too slow: RESOURCE_EXHAUSTED, room deleted, shutdown) ends the
  whole call with its status; however the call ends, every subscription is closed.

Broadcasts are serialized once per event (kept in ``event.cache``); server.py registers the
service with the serializer that passes bytes through.

Tracing (``spans``, when configured; services/telemetry.py): each attach is a
``switchboard.v1.ChatService/Subscribe`` SERVER span parented on the attach's own metadata, from
the attach until its handle ends (refused: at once, with the refusal's code; detached: OK;
expired: UNAUTHENTICATED; the call ending: the call's code). The Share call itself has none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.trace import Span

from gateway.auth import AuthError, TokenExpired
from services import convert, errors
from services.auth import AuthInterceptor
from services.chat import parse_cursor, subscribed_event
from services.engine import (
    Cursor,
    Engine,
    EngineClosed,
    EngineError,
    Event,
    InvalidArgument,
    Subscription,
)
from services.identity import ANONYMOUS, Identity, current_identity
from services.telemetry import (
    CANCELLED,
    OK,
    UNAUTHENTICATED,
    UNKNOWN,
    RpcSpans,
    code_number,
    code_of,
)
from switchboard.gateway.v1 import share_pb2, share_pb2_grpc
from switchboard.v1 import chat_pb2

Context = grpc.aio.ServicerContext[Any, Any]
Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]
Response: TypeAlias = share_pb2.ShareResponse | bytes

SHAREABLE = "/switchboard.v1.ChatService/Subscribe"
_BROADCAST_KEY = "switchboard.gateway.v1.ShareResponse:bytes"


def broadcast_bytes(event: Event) -> bytes:
    """The serialized ShareResponse carrying ``event`` to every live handle, once per event."""
    cached = event.cache.get(_BROADCAST_KEY)
    if isinstance(cached, bytes):
        return cached
    response = share_pb2.ShareResponse(message=convert.room_event_bytes(event))
    event.cache[_BROADCAST_KEY] = encoded = response.SerializeToString()
    return encoded


def _to_handle(handle: int, message: bytes) -> share_pb2.ShareResponse:
    return share_pb2.ShareResponse(handles=[handle], message=message)


def _end(handle: int, code: grpc.StatusCode, message: str) -> share_pb2.ShareResponse:
    status = status_pb2.Status(code=code.value[0], message=message)
    return share_pb2.ShareResponse(handles=[handle], end=status)


def metadata_of(entries: Sequence[share_pb2.ShareMetadata]) -> Metadata:
    """Attach metadata as grpc gives it to a handler: ``-bin`` values bytes, others str."""
    return [
        (e.key, e.value if e.key.endswith("-bin") else e.value.decode("latin-1")) for e in entries
    ]


def _subscribe_request(data: bytes, field: str) -> chat_pb2.SubscribeRequest:
    try:
        return chat_pb2.SubscribeRequest.FromString(data)
    except DecodeError:
        raise InvalidArgument(
            f"{field} is not a serialized switchboard.v1.SubscribeRequest", field=field
        ) from None


def _opened(opened: share_pb2.ShareOpen | None) -> chat_pb2.SubscribeRequest:
    """The shared request an ``open`` carries; ``opened`` None: the first request was no open."""
    if opened is None:
        raise InvalidArgument("open is required as the first request", field="open")
    request = _subscribe_request(opened.request, "open.request")
    if request.cursor:
        raise errors.invalid(
            "open.request.cursor", request.cursor, "must be empty: each attach has its own cursor"
        )
    return request


class ShareServicer(share_pb2_grpc.StreamShareServiceServicer):
    """StreamShareService over an Engine; ``auth`` None when the server runs without auth,
    ``spans`` None when tracing is off."""

    def __init__(
        self,
        engine: Engine,
        *,
        auth: AuthInterceptor | None = None,
        spans: RpcSpans | None = None,
    ) -> None:
        self._engine = engine
        self._auth = auth
        self._spans = spans

    async def Share(  # type: ignore[override]  # yields pre-serialized broadcasts (server.py)
        self, request_iterator: AsyncIterator[share_pb2.ShareRequest], context: Context
    ) -> AsyncIterator[Response]:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        opened = first.open if first is not None and first.HasField("open") else None
        if opened is not None and opened.method != SHAREABLE:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"open.method {opened.method[:80]!r} cannot be shared; "
                f"the shareable method is {SHAREABLE}",
            )
        async with errors.status_on_error(context):
            request = _opened(opened)
        async with errors.status_on_error(context, resource=request.room):
            room_id = errors.parse_room_name(request.room, "open.request.room")
            feed = await self._engine.subscribe(room_id, cursor=None, user=None)
            shared = SharedStream(
                self._engine, room_id, feed, self._auth, current_identity(), self._spans
            )
            ending = OK  # the call's code, for the spans of the handles it ends
            try:
                async for response in shared.run(requests):
                    yield response
            except BaseException as error:
                ending = _ending(context, error)
                raise
            finally:
                await shared.close(ending)


def _ending(context: Context, error: BaseException) -> int:
    """The code a Share call ends with when ``error`` escapes its stream."""
    if isinstance(error, EngineError):
        return code_number(errors.code_for(error))
    return code_of(context, error)


@dataclass(slots=True)
class _Handle:
    """An attached caller: the subscription held for presence, the expiry timer."""

    subscription: Subscription
    expiry: asyncio.TimerHandle | None = None
    span: Span | None = None  # the attach's trace span (tracing on)


@dataclass(frozen=True, slots=True)
class _Expired:
    number: int
    handle: _Handle


class _Closed:
    """The gateway half-closed the call."""


_Item: TypeAlias = share_pb2.ShareRequest | Event | _Expired | _Closed | BaseException


class SharedStream:
    """One Share call's state: the feed, the handles, which are live and which pending.

    Only ``run``'s task changes the state (see the module docstring for the algorithm)."""

    QUEUE_SIZE = 16

    def __init__(
        self,
        engine: Engine,
        room_id: str,
        feed: Subscription,
        auth: AuthInterceptor | None,
        caller: Identity,
        spans: RpcSpans | None = None,
    ) -> None:
        self._engine = engine
        self._spans = spans
        self._room_id = room_id
        self._feed = feed
        self._auth = auth
        self._caller = caller
        self._epoch = feed.position.epoch
        self._last = feed.position.offset  # L
        self._handles: dict[int, _Handle] = {}
        self._live: set[int] = set()
        self._pending: dict[int, int] = {}  # handle → the offset after which it goes live
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(self.QUEUE_SIZE)
        self._putting: set[asyncio.Task[None]] = set()  # expiries waiting for queue room

    async def run(self, requests: AsyncIterator[share_pb2.ShareRequest]) -> AsyncIterator[Response]:
        """Yields responses until the gateway half-closes, the feed ends or a request is wrong."""
        tasks = (asyncio.create_task(self._pump()), asyncio.create_task(self._read(requests)))
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _Closed):
                    return
                if isinstance(item, BaseException):
                    raise item
                for response in await self.step(item):
                    yield response
        finally:
            waiting = (*tasks, *self._putting)  # nobody reads the queue any more
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)

    async def close(self, code: int = OK) -> None:
        """Closes every handle's subscription (presence leaves) and the feed; the call ends
        with ``code`` (for the handles' spans)."""
        handles = list(self._handles.values())
        self._handles.clear()
        for handle in handles:
            if handle.expiry is not None:
                handle.expiry.cancel()
            if handle.span is not None:
                RpcSpans.finish(handle.span, code)
        closing = (*(h.subscription.close() for h in handles), self._feed.close())
        for result in await asyncio.gather(*closing, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    async def _pump(self) -> None:
        try:
            async for event in self._feed:
                await self._queue.put(event)
        except Exception as error:  # the feed ends by raising; run re-raises it
            await self._queue.put(error)

    async def _read(self, requests: AsyncIterator[share_pb2.ShareRequest]) -> None:
        try:
            async for request in requests:
                await self._queue.put(request)
            await self._queue.put(_Closed())
        except Exception as error:  # run re-raises it
            await self._queue.put(error)

    async def step(self, item: share_pb2.ShareRequest | Event | _Expired) -> Sequence[Response]:
        """Handles one item of the sequence (a request, a feed event, an expiry): the
        responses to send, in order. Only one step runs at a time."""
        if isinstance(item, Event):
            return self._on_event(item)
        if isinstance(item, _Expired):
            return await self._on_expired(item)
        kind = item.WhichOneof("kind")
        if kind == "attach":
            return await self._attach(item.attach)
        if kind == "detach":
            await self._forget(item.detach.handle, OK)
        elif kind == "open":
            raise InvalidArgument("open is only allowed as the first request", field="open")
        return []

    def _on_event(self, event: Event) -> Sequence[Response]:
        out: list[Response] = [broadcast_bytes(event)] if self._live else []
        if event.durable:
            self._last = event.offset
            ready = sorted(h for h, start in self._pending.items() if start <= self._last)
            if ready:
                for number in ready:
                    del self._pending[number]
                self._live.update(ready)
                out.append(share_pb2.ShareResponse(handles=ready, live=True))
        return out

    async def _identify(self, metadata: Sequence[share_pb2.ShareMetadata]) -> Identity:
        """The attach's metadata decided as a Subscribe call; without auth, the identity of
        this call (what an un-intercepted Subscribe sees)."""
        if self._auth is None:
            return self._caller
        return await self._auth.authorize(SHAREABLE, metadata_of(metadata)) or ANONYMOUS

    async def _attach(self, attach: share_pb2.ShareAttach) -> Sequence[Response]:
        spans = self._spans
        if spans is None:
            return await self._attach_handle(attach, None)
        span = spans.start(SHAREABLE, metadata_of(attach.metadata))
        try:
            with spans.current(span):
                out = await self._attach_handle(attach, span)
        except BaseException as error:
            spans.finish(span, _attach_error(error))
            raise
        last = out[-1] if out else None
        if isinstance(last, share_pb2.ShareResponse) and last.HasField("end"):
            spans.finish(span, last.end.code)  # refused: the handle ended at once
        return out

    async def _attach_handle(
        self, attach: share_pb2.ShareAttach, span: Span | None
    ) -> Sequence[Response]:
        number = attach.handle
        if number in self._handles:
            raise errors.invalid("attach.handle", number, "is attached already")
        try:
            identity = await self._identify(attach.metadata)
        except AuthError as error:
            return [_end(number, grpc.StatusCode[error.grpc_status], error.description)]
        room = ""
        try:
            request = _subscribe_request(attach.request, "request")
            room = request.room
            if errors.parse_room_name(room, "room") != self._room_id:
                shared = convert.room_name(self._room_id)
                raise errors.invalid("room", room, f"differs from {shared!r}, the shared room")
            cursor = parse_cursor(request.cursor, "cursor")
            now = time.time_ns()
            subscription = await self._engine.subscribe(
                self._room_id, cursor=cursor, user=identity.user
            )
        except EngineError as error:
            status = errors.status_proto(error, resource=room)
            return [share_pb2.ShareResponse(handles=[number], end=status)]
        return await self._start(number, identity, subscription, cursor, now, span)

    async def _start(
        self,
        number: int,
        identity: Identity,
        subscription: Subscription,
        cursor: Cursor | None,
        time_ns: int,
        span: Span | None = None,
    ) -> Sequence[Response]:
        """Registers the handle; its subscribed event, replay up to L, and live or pending."""
        subscription.detach()
        replay = subscription.take_replay()
        if subscription.position.epoch != self._epoch:  # re-created, or Redis lost the history
            await subscription.close()
            name = convert.room_name(self._room_id)
            moved = EngineClosed(f"the history of {name} changed epoch; resume to reload it")
            status = errors.status_proto(moved, resource=name)
            return [share_pb2.ShareResponse(handles=[number], end=status)]
        handle = self._handles[number] = _Handle(subscription, span=span)
        handle.expiry = self._expiry(number, handle, identity)
        subscribed = subscribed_event(self._room_id, subscription, time_ns)
        out = [_to_handle(number, subscribed.SerializeToString())]
        missed = (e for e in replay if e.offset <= self._last)  # later ones: broadcasts
        out += [_to_handle(number, convert.room_event_bytes(e)) for e in missed]
        start = cursor.offset if subscription.recovered and cursor else subscription.position.offset
        if start <= self._last:
            out[-1].live = True
            self._live.add(number)
        else:
            self._pending[number] = start
        return out

    def _expiry(
        self, number: int, handle: _Handle, identity: Identity
    ) -> asyncio.TimerHandle | None:
        """A timer (not a task: a few hundred bytes per handle) that queues the expiry."""
        delay = None if self._auth is None else self._auth.expires_in(identity)
        if delay is None:
            return None
        loop = asyncio.get_running_loop()
        return loop.call_later(max(delay, 0.0), self._expire_later, _Expired(number, handle))

    def _expire_later(self, expired: _Expired) -> None:
        try:
            self._queue.put_nowait(expired)
        except asyncio.QueueFull:  # busy: queue it without blocking the timer callback
            put = asyncio.ensure_future(self._queue.put(expired))
            self._putting.add(put)
            put.add_done_callback(self._putting.discard)

    async def _on_expired(self, expired: _Expired) -> Sequence[Response]:
        if self._handles.get(expired.number) is not expired.handle:
            return []  # detached meanwhile
        await self._forget(expired.number, UNAUTHENTICATED)
        return [_end(expired.number, grpc.StatusCode.UNAUTHENTICATED, TokenExpired().description)]

    async def _forget(self, number: int, code: int) -> None:
        """Detach: the handle's subscription closes (presence leaves); its span ends with
        ``code``. Unknown handles are ignored (the service may have ended the handle as the
        gateway detached it)."""
        handle = self._handles.pop(number, None)
        if handle is None:
            return
        self._live.discard(number)
        self._pending.pop(number, None)
        if handle.expiry is not None:
            handle.expiry.cancel()
        if handle.span is not None:
            RpcSpans.finish(handle.span, code)
        await handle.subscription.close()


def _attach_error(error: BaseException) -> int:
    """The code of an attach that raised (which ends the whole Share call)."""
    if isinstance(error, EngineError):
        return code_number(errors.code_for(error))
    return CANCELLED if isinstance(error, asyncio.CancelledError) else UNKNOWN
