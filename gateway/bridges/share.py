"""Shared upstream streams: one upstream call serves every local caller of the same stream.

A server-streaming method whose descriptor carries ``(switchboard.gateway.v1.share)`` (and not
``disabled``; see ``Route.share``) is served, for SSE and NDJSON, through the backend's
``StreamShareService.Share`` (proto/switchboard/gateway/v1/share.proto). Callers whose requests
differ at most in the resume field share one ``Share`` call, a *hub*, per (backend, method,
shared request). The hub sends ``open`` once, then ``attach`` per caller (its own request and
exactly the metadata its private call would carry) and ``detach`` when it leaves. The backend
answers with ShareResponses addressed to some handles (their first messages, any replay, the
switch to live, their end) or, with no handles listed, to every live handle (a broadcast).

Each caller holds a ``SharedCall``, which ``ServerStream`` (gateway/bridges/streaming.py) reads
as it reads a private grpc.aio call: ``read()`` gives raw message bytes, then ``grpc.aio.EOF``
or an ``AioRpcError`` with the status the backend ended the handle with (its details in
``grpc-status-details-bin``); ``cancel()`` detaches; ``initial_metadata()`` is empty (a shared
stream has no per-caller header metadata). A ``deadline`` (the call's timeout) ends it with
DEADLINE_EXCEEDED, as it would end a private call.

Invariants:
- responses are applied in the order they arrive, so the live set at each broadcast is exactly
  the backend's; a broadcast appends the same bytes object to every live caller's queue (no
  copy, no parse: the FrameCache turns identical bytes into one frame);
- one pending write per call: every request goes through the hub's outbox, written by one task;
- a caller with ``share_max_buffered`` messages still unread when another arrives ends
  RESOURCE_EXHAUSTED "the client reads too slowly" and is detached; the others go on;
- the last caller leaving closes the call (half-close, then cancel); the next caller opens a new
  one;
- a failed Share call ends every caller with its status and the hub is forgotten. Failing with
  UNIMPLEMENTED before any response marks the method unshareable on that backend for the
  application's life (one WARNING): its callers, those already attached included, switch to
  private calls.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import Final

import grpc
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from gateway.bridges import CallContext
from gateway.config import StreamSettings
from gateway.metadata import Metadata, metadata_pairs
from gateway.routes import Route
from gateway.status import DETAILS_METADATA_KEY
from gateway.transcode import status_from_parts
from gateway.tunnel import EOF, metadata_entries
from switchboard.gateway.v1 import share_pb2

__all__ = ["PrivateCall", "SharedCall", "StreamShares"]

PrivateCall = grpc.aio.UnaryStreamCall[Message, bytes]
ShareCall = grpc.aio.StreamStreamCall[share_pb2.ShareRequest, share_pb2.ShareResponse]
HubKey = tuple[str, str, bytes]  # backend, method path, shared request

SLOW_READER: Final = "the client reads too slowly"
_CODES: Final = {code.value[0]: code for code in grpc.StatusCode}
_LOG = logging.getLogger(__name__)


def _status(code: int, message: str) -> status_pb2.Status:
    return status_pb2.Status(code=code, message=message)


def _rpc_error(status: status_pb2.Status) -> grpc.aio.AioRpcError:
    """The error a private call ending with ``status`` would raise, details included."""
    trailing = grpc.aio.Metadata((DETAILS_METADATA_KEY, status.SerializeToString()))
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, status.message, None)


class SharedCall:
    """One caller of a shared stream, read like a grpc.aio UnaryStreamCall of raw bytes."""

    __slots__ = (
        "_ending",
        "_hub",
        "_limit",
        "_private",
        "_private_call",
        "_queue",
        "_timer",
        "_waiter",
        "handle",
    )

    def __init__(
        self,
        hub: _Hub,
        handle: int,
        limit: int,
        private_call: Callable[[], PrivateCall],
        deadline: float | None,
    ) -> None:
        self.handle = handle
        self._hub: _Hub | None = hub  # None once detached
        self._limit = limit
        self._private_call = private_call
        self._private: PrivateCall | None = None  # after a fallback to a private call
        self._queue: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ending: status_pb2.Status | None = None
        self._timer: asyncio.TimerHandle | None = None
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(deadline, self._expire)

    async def read(self) -> object:
        """The next message's bytes, or EOF; raises AioRpcError when ended with an error."""
        while True:
            if self._private is not None:
                return await self._private.read()
            if self._queue:
                return self._queue.popleft()
            if self._ending is not None:
                if self._ending.code == code_pb2.OK:
                    return EOF
                raise _rpc_error(self._ending)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def cancel(self) -> bool:
        """Leave the shared stream (detach); False when it had ended already."""
        if self._private is not None:
            return self._private.cancel()
        if self._ending is not None:
            return False
        self._leave(_status(code_pb2.CANCELLED, "Locally cancelled by application!"))
        return True

    async def initial_metadata(self) -> grpc.aio.Metadata:
        """Empty: a shared stream echoes no header metadata."""
        if self._private is not None:
            return await self._private.initial_metadata()
        return grpc.aio.Metadata()

    # --- what the hub calls ----------------------------------------------------------------

    def deliver(self, message: bytes) -> bool:
        """Queue ``message``; False (nothing queued) when the caller is too far behind."""
        queue = self._queue
        if len(queue) >= self._limit:
            return False
        queue.append(message)
        self._wake()
        return True

    def end(self, status: status_pb2.Status, *, discard: bool = False) -> None:
        """The stream ends with ``status`` after the queued messages (none when ``discard``)."""
        if discard:
            self._queue.clear()
        self._hub = None
        self._finish(status)

    def fall_back(self) -> None:
        """Go on as a private call (the backend cannot share the method)."""
        self._hub = None
        self._queue.clear()
        self._private = self._private_call()
        self._stop_timer()
        self._wake()

    # --- internals -------------------------------------------------------------------------

    def _leave(self, status: status_pb2.Status) -> None:
        hub, self._hub = self._hub, None
        self._finish(status)
        if hub is not None:
            hub.detach(self.handle)

    def _expire(self) -> None:
        self._timer = None
        if self._ending is None and self._private is None:
            self._leave(_status(code_pb2.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    def _finish(self, status: status_pb2.Status) -> None:
        if self._ending is None:
            self._ending = status
        self._stop_timer()
        self._wake()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Hub:
    """One Share call and the callers attached to it."""

    def __init__(
        self, shares: StreamShares, key: HubKey, route: Route, call: ShareCall, limit: int
    ) -> None:
        self.key, self.route = key, route
        self._shares, self._call, self._limit = shares, call, limit
        self._handles: dict[int, SharedCall] = {}
        self._live: dict[int, SharedCall] = {}
        self._numbers = itertools.count(1)
        self._outbox: asyncio.Queue[share_pb2.ShareRequest | None] = asyncio.Queue()
        self._answered = asyncio.Event()  # a response arrived
        self._write_failed = False  # a write failed: grpc.aio then reports INTERNAL
        self._closed = False  # the last caller left
        opening = share_pb2.ShareOpen(method=route.rpc_path, request=key[2])
        self._outbox.put_nowait(share_pb2.ShareRequest(open=opening))
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._run())

    def __len__(self) -> int:
        return len(self._handles)

    def attach(
        self,
        request: bytes,
        metadata: Metadata,
        deadline: float | None,
        private_call: Callable[[], PrivateCall],
    ) -> SharedCall:
        handle = next(self._numbers)
        caller = SharedCall(self, handle, self._limit, private_call, deadline)
        self._handles[handle] = caller
        entries = metadata_entries(metadata)
        attach = share_pb2.ShareAttach(handle=handle, request=request, metadata=entries)
        self._outbox.put_nowait(share_pb2.ShareRequest(attach=attach))
        return caller

    def detach(self, handle: int) -> None:
        """The caller ``handle`` leaves; the last one leaving closes the call."""
        if self._handles.pop(handle, None) is None:
            return
        self._live.pop(handle, None)
        self._outbox.put_nowait(share_pb2.ShareRequest(detach=share_pb2.ShareDetach(handle=handle)))
        if not self._handles:
            self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._shares.forget(self)
            self._outbox.put_nowait(None)
            if not self._answered.is_set():
                self._call.cancel()  # the writer waits for an answer that nobody needs now

    async def _run(self) -> None:
        writer = asyncio.ensure_future(self._write_all())
        failure: status_pb2.Status | None = _status(
            code_pb2.UNAVAILABLE, "the shared stream closed"
        )
        try:
            failure = await self._read_all()
        finally:
            writer.cancel()
            await asyncio.wait({writer})
            self._call.cancel()
            self._shares.forget(self)
            if failure is not None:
                self._fail(failure)

    async def _write_all(self) -> None:
        """Write the outbox in order; ``None`` half-closes, then cancels the call.

        Until the backend first answers, nothing is written after the first ``attach``: a
        backend without the service answers UNIMPLEMENTED at once, and a write racing with
        that answer fails, which grpc.aio reports as the call's status (INTERNAL) instead."""
        call = self._call
        try:
            while (request := await self._outbox.get()) is not None:
                await call.write(request)
                if not self._answered.is_set() and request.HasField("attach"):
                    await self._answered.wait()
            await call.done_writing()
        except grpc.aio.AioRpcError:
            self._write_failed = True
        except asyncio.InvalidStateError:
            pass  # the call had ended; the reader has its status
        call.cancel()

    async def _read_all(self) -> status_pb2.Status | None:
        """Apply every response; the status every remaining caller ends with (None: closed)."""
        try:
            answered = self._answered
            while isinstance(response := await self._call.read(), share_pb2.ShareResponse):
                if not answered.is_set():
                    answered.set()
                self._apply(response)
        except grpc.aio.AioRpcError as exc:
            trailing = metadata_pairs(exc.trailing_metadata())
            return status_from_parts(exc.code(), exc.details(), trailing)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._closed or (task is not None and task.cancelling()):
                raise
            return None  # the call was cancelled because the last caller left
        return _status(code_pb2.OK, "")  # the backend ended the call: every stream ends

    def _apply(self, response: share_pb2.ShareResponse) -> None:
        message = response.message if response.HasField("message") else None
        ending = response.end if response.HasField("end") else None
        if not response.handles:
            if message is not None and ending is None:
                self._broadcast(message)  # the hot path
                return
            targets = list(self._live.values())
        else:
            found = (self._handles.get(handle) for handle in response.handles)
            targets = [caller for caller in found if caller is not None]
        for caller in targets:
            if message is not None and not caller.deliver(message):
                self._drop_slow(caller)
            elif ending is not None:
                self._handles.pop(caller.handle, None)
                self._live.pop(caller.handle, None)
                caller.end(ending)
            elif response.live:
                self._live[caller.handle] = caller
        if not self._handles:
            self._close()

    def _broadcast(self, message: bytes) -> None:
        slow = [caller for caller in self._live.values() if not caller.deliver(message)]
        for caller in slow:
            self._drop_slow(caller)

    def _drop_slow(self, caller: SharedCall) -> None:
        caller.end(_status(code_pb2.RESOURCE_EXHAUSTED, SLOW_READER), discard=True)
        self.detach(caller.handle)

    def _fail(self, status: status_pb2.Status) -> None:
        """End every caller with ``status``, or switch them to private calls when the backend
        refused to share before answering (UNIMPLEMENTED, or a status lost to a failed write)."""
        callers = list(self._handles.values())
        self._handles.clear()
        self._live.clear()
        lost = self._write_failed and status.code == code_pb2.INTERNAL
        if not self._answered.is_set() and (lost or status.code == code_pb2.UNIMPLEMENTED):
            if not lost:
                self._shares.unshareable(self.route, status.message)
            for caller in callers:
                caller.fall_back()
            return
        if lost:
            status = _status(code_pb2.UNAVAILABLE, "the shared upstream call ended unexpectedly")
        for caller in callers:
            caller.end(status)


class StreamShares:
    """The hubs of one application: one per (backend, method, shared request)."""

    def __init__(self, settings: StreamSettings) -> None:
        self.enabled = settings.share
        self._limit = settings.share_max_buffered
        self._hubs: dict[HubKey, _Hub] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._unshareable: set[tuple[str, str]] = set()  # (backend, method path)
        self._closed = False

    def __len__(self) -> int:
        """Share calls open."""
        return len(self._hubs)

    def callers(self) -> int:
        """Callers attached to a Share call."""
        return sum(len(hub) for hub in self._hubs.values())

    def serves(self, route: Route) -> bool:
        """Whether callers of ``route`` share calls (sharing on, shareable, not refused)."""
        return (
            self.enabled
            and route.share is not None
            and not self._closed
            and (route.backend, route.rpc_path) not in self._unshareable
        )

    def call(
        self, ctx: CallContext, request: Message, private_call: Callable[[], PrivateCall]
    ) -> SharedCall:
        """Attach a caller of ``ctx.route`` to its hub (opening one when there is none)."""
        route = ctx.route
        assert route.share is not None
        own, shared = route.share.requests(request)
        key = (route.backend, route.rpc_path, shared)
        hub = self._hubs.get(key)
        if hub is None:
            call = ctx.upstream.share_stream(route.backend)(None)
            hub = self._hubs[key] = _Hub(self, key, route, call, self._limit)
            self._running.add(hub.task)
            hub.task.add_done_callback(self._running.discard)
        return hub.attach(own, ctx.metadata, ctx.timeout, private_call)

    def forget(self, hub: _Hub) -> None:
        """Stop handing out ``hub`` (it is closing or failed)."""
        if self._hubs.get(hub.key) is hub:
            del self._hubs[hub.key]

    def unshareable(self, route: Route, why: str) -> None:
        """Serve ``route``'s method on its backend with private calls from now on."""
        key = (route.backend, route.rpc_path)
        if key not in self._unshareable:
            self._unshareable.add(key)
            _LOG.warning(
                "backend %s does not share %s (StreamShareService: UNIMPLEMENTED %s); "
                "its streams use one upstream call each",
                route.backend,
                route.rpc_path,
                why,
            )

    async def close(self) -> None:
        """Cancel every Share call still open (their callers end UNAVAILABLE) and wait."""
        self._closed = True
        running = list(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
