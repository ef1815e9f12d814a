"""UnaryTunnelService: one call from a gateway carries many unary calls (tunnel.proto).

Each ``TunnelCall`` runs as if it had arrived on its own:

- the method is looked up among the server's unary methods (``UnaryMethod``, built by
  services/server.py from the same servicers the server registers); an unknown one gets
  UNIMPLEMENTED, as grpc answers a plain call;
- it is authorized from its own metadata by the same ``AuthInterceptor.authorize`` the
  interceptor uses (the Tunnel call itself is public), and the handler runs with that
  identity in ``CURRENT_IDENTITY``; without auth it runs with the tunnel call's identity
  (``ANONYMOUS``; the Tunnel call's task context is copied into each call's task), as an
  un-intercepted plain call does;
- the handler runs in its own task with a ``TunnelContext`` standing in for grpc's servicer
  context (abort with status details, initial and trailing metadata, code and details,
  ``time_remaining``), bounded by the call's own timeout (DEADLINE_EXCEEDED);
- a cancel from the gateway cancels that task and no reply is sent.

At shutdown (``drain``, before the engine closes) every tunnel stops reading, lets its running
calls finish and reply, and ends OK, so the server's stop does not wait out its grace period on
tunnels and no running call is cut by the engine closing.

Replies ready together go back in one ``TunnelResponse`` that stays within the server's send
limit (and ``BATCH_BYTES``); a reply that alone would pass the send limit fails that call with
RESOURCE_EXHAUSTED instead of ending the tunnel. The call's timeout counts from when the
service reads the call, authorization included. When the
gateway half-closes, the calls still running finish and their replies are sent; when the
tunnel call is cancelled, every running call is cancelled.

Other interceptors than ``AuthInterceptor`` do not run for tunnelled calls (Switchboard
installs no other); a backend that needs them should not register this service. Tracing, which
is an interceptor for plain calls, is done here for tunnelled ones (``spans``, when tracing is
configured): each call of a known method gets its own SERVER span from its own metadata's
trace context, current while it runs, ended with its status; the Tunnel call itself has none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from gateway.auth import AuthError
from gateway.tunnel import OPENED_KEY, metadata_entries
from services.auth import PUBLIC_SERVICES, AuthInterceptor
from services.identity import ANONYMOUS, CURRENT_IDENTITY
from services.share import metadata_of
from services.telemetry import CANCELLED, RpcSpans
from switchboard.gateway.v1 import tunnel_pb2

__all__ = ["BATCH_BYTES", "TunnelContext", "TunnelServicer", "UnaryMethod"]

log = logging.getLogger("services.tunnel")

Context = grpc.aio.ServicerContext[Any, Any]
Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]
BATCH_BYTES = 1024 * 1024
_OK = status_pb2.Status()


@dataclass(frozen=True, slots=True)
class UnaryMethod:
    """A unary method as the server runs it: the servicer's coroutine and its codec."""

    behaviour: Callable[[Any, Any], Awaitable[Any]]
    deserialize: Callable[[bytes], Message]
    serialize: Callable[[Any], bytes]


class _Aborted(Exception):
    """``TunnelContext.abort``: ends the call with a status, like grpc's AbortError."""


class TunnelContext:
    """The part of ``grpc.aio.ServicerContext`` a unary handler uses, for a tunnelled call."""

    __slots__ = ("_code", "_deadline", "_details", "_initial", "_metadata", "_peer", "_trailing")

    def __init__(self, metadata: Metadata, deadline: float | None, peer: str) -> None:
        self._metadata = tuple(metadata)
        self._deadline = deadline
        self._peer = peer
        self._initial: Metadata = ()
        self._trailing: Metadata = ()
        self._code: grpc.StatusCode | None = None
        self._details = ""

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    async def send_initial_metadata(self, metadata: Metadata) -> None:
        self._initial = tuple(metadata)

    def initial_metadata(self) -> Metadata:
        """What the handler sent with ``send_initial_metadata`` (not part of grpc's API)."""
        return self._initial

    def set_trailing_metadata(self, metadata: Metadata) -> None:
        self._trailing = tuple(metadata)

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()
    ) -> NoReturn:
        if code is grpc.StatusCode.OK:
            raise ValueError("abort() needs an error code, not OK")
        self._code, self._details = code, details
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        raise _Aborted()

    async def abort_with_status(self, status: Any) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def peer(self) -> str:
        return self._peer

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def set_compression(self, compression: object) -> None:
        """Compression is the tunnel's, not the call's: ignored."""

    def disable_next_message_compression(self) -> None:
        """Compression is the tunnel's, not the call's: ignored."""


class TunnelServicer:
    """UnaryTunnelService over ``methods`` (full method name → UnaryMethod)."""

    def __init__(
        self,
        methods: Mapping[str, UnaryMethod],
        *,
        auth: AuthInterceptor | None,
        max_response_bytes: int,
        spans: RpcSpans | None = None,
    ) -> None:
        """``spans``: trace each tunnelled call (None: tracing is off)."""
        self._methods = dict(methods)
        self._auth = auth
        self._spans = spans
        self._max_response = max_response_bytes
        self._sessions: set[_Session] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def Tunnel(
        self, request_iterator: AsyncIterator[tunnel_pb2.TunnelRequest], context: Context
    ) -> None:
        await context.send_initial_metadata(((OPENED_KEY, "1"),))  # the gateway may now write
        session = _Session(self, context)
        self._sessions.add(session)
        self._idle.clear()
        try:
            await session.run(request_iterator)
        finally:
            self._sessions.discard(session)
            if not self._sessions:
                self._idle.set()

    async def drain(self, grace: float) -> None:
        """Shutdown: every tunnel stops taking calls, finishes its running ones and ends;
        waits up to ``grace`` seconds for that."""
        for session in tuple(self._sessions):
            session.drain()
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            log.warning("%d tunnel call(s) still running after %.1f s", len(self._sessions), grace)

    async def reply(self, call: tunnel_pb2.TunnelCall, peer: str) -> tunnel_pb2.TunnelReply:
        """Runs ``call``; its TunnelReply. Traced as its own call when tracing is on."""
        spans = self._spans
        if spans is None or call.method not in self._methods:
            return await self._reply(call, peer)
        span = spans.start(call.method, metadata_of(call.metadata))
        try:
            with spans.current(span):
                reply = await self._reply(call, peer)
        except BaseException:  # cancelled by the gateway, or the tunnel ended
            spans.finish(span, CANCELLED)
            raise
        spans.finish(span, reply.status.code)
        return reply

    async def _reply(self, call: tunnel_pb2.TunnelCall, peer: str) -> tunnel_pb2.TunnelReply:
        method = self._methods.get(call.method)
        if method is None:
            return _failed(
                call.id, grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {call.method}"
            )
        metadata = metadata_of(call.metadata)
        timeout = call.timeout.ToNanoseconds() / 1e9 if call.HasField("timeout") else None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout  # authorization counts
        scope = asyncio.timeout_at(deadline)
        context = TunnelContext(metadata, deadline, peer)
        try:
            async with scope:
                if not await self._authorized(call, metadata, context):
                    return _ended(call.id, context)
                try:
                    request = method.deserialize(call.request)
                except DecodeError:
                    return _failed(
                        call.id,
                        grpc.StatusCode.INTERNAL,
                        f"request of {call.method} does not parse",
                    )
                response = await method.behaviour(request, context)
        except _Aborted:
            return _ended(call.id, context)
        except TimeoutError:
            if not scope.expired():
                return _unexpected(call, context)
            return _failed(call.id, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        except Exception:
            return _unexpected(call, context)
        code = context.code()
        if code is not None and code is not grpc.StatusCode.OK:
            return _ended(call.id, context)
        reply = tunnel_pb2.TunnelReply(
            id=call.id,
            status=_OK,
            response=method.serialize(response),
            initial_metadata=metadata_entries(context.initial_metadata()),
            trailing_metadata=metadata_entries(context.trailing_metadata()),
        )
        size = framed_size(reply)
        if size > self._max_response:
            return _failed(
                call.id,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"response of {call.method} is {size} bytes in the tunnel, over the limit of "
                f"{self._max_response}",
            )
        return reply

    async def _authorized(
        self, call: tunnel_pb2.TunnelCall, metadata: Metadata, context: TunnelContext
    ) -> bool:
        """Decides the call as the interceptor would and sets its identity (this task only);
        False, with the status in ``context``, when it is refused."""
        if self._auth is None or _service_of(call.method) in PUBLIC_SERVICES:
            return True  # the Tunnel call's identity (ANONYMOUS), copied into this task
        try:
            identity = await self._auth.authorize(call.method, metadata)
        except AuthError as error:
            context.set_code(grpc.StatusCode[error.grpc_status])
            context.set_details(error.description)
            return False
        CURRENT_IDENTITY.set(identity or ANONYMOUS)
        return True

    @property
    def batch_limit(self) -> int:
        """The most bytes of replies one TunnelResponse carries (one larger reply goes alone)."""
        return min(BATCH_BYTES, self._max_response)


def framed_size(reply: tunnel_pb2.TunnelReply) -> int:
    """The bytes ``reply`` adds to a TunnelResponse (the field's tag and length included)."""
    return reply.ByteSize() + 8


class _Session:
    """One Tunnel call: a reader starting and cancelling calls, a writer batching replies."""

    def __init__(self, servicer: TunnelServicer, context: Context) -> None:
        self._servicer = servicer
        self._context = context
        self._peer = context.peer()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._replies: list[tunnel_pb2.TunnelReply] = []
        self._ready = asyncio.Event()
        self._reading = True
        self._draining = False
        self._reader: asyncio.Future[None] | None = None

    async def run(self, requests: AsyncIterator[tunnel_pb2.TunnelRequest]) -> None:
        writer = asyncio.ensure_future(self._write())
        self._reader = asyncio.ensure_future(self._read(requests))
        try:
            try:
                await self._reader
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not self._draining or (task is not None and task.cancelling()):
                    raise
            self._reading = False
            self._ready.set()
            await writer  # until every running call has replied
        finally:
            writer.cancel()
            self._reader.cancel()
            for task in self._running.values():
                task.cancel()

    def drain(self) -> None:
        """Stop taking calls (the server is shutting down): the running ones finish and reply,
        then the tunnel call ends OK; the gateway reports calls it sent after that UNAVAILABLE."""
        self._draining = True
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self, requests: AsyncIterator[tunnel_pb2.TunnelRequest]) -> None:
        async for request in requests:
            for number in request.cancel:
                task = self._running.pop(number, None)
                if task is not None:
                    task.cancel()
            for call in request.calls:
                if call.id in self._running:
                    await self._context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"calls.id: call {call.id} is already running in this tunnel",
                    )
                self._running[call.id] = asyncio.ensure_future(self._run(call))

    async def _run(self, call: tunnel_pb2.TunnelCall) -> None:
        try:
            reply = await self._servicer.reply(call, self._peer)
        except asyncio.CancelledError:
            return  # cancelled by the gateway (or the tunnel ended): no reply
        if self._running.pop(call.id, None) is None:
            return  # cancelled while its reply was being made
        self._replies.append(reply)
        self._ready.set()

    async def _write(self) -> None:
        while self._reading or self._running or self._replies:
            await self._ready.wait()
            self._ready.clear()
            replies, self._replies = self._replies, []
            limit = self._servicer.batch_limit
            batch: list[tunnel_pb2.TunnelReply] = []
            size = 0
            for reply in replies:
                grows = framed_size(reply)
                if batch and size + grows > limit:
                    await self._context.write(tunnel_pb2.TunnelResponse(replies=batch))
                    batch, size = [], 0
                batch.append(reply)
                size += grows
            if batch:
                await self._context.write(tunnel_pb2.TunnelResponse(replies=batch))


def _service_of(rpc_path: str) -> str:
    return rpc_path.lstrip("/").partition("/")[0]


def _failed(number: int, code: grpc.StatusCode, message: str) -> tunnel_pb2.TunnelReply:
    status = status_pb2.Status(code=code.value[0], message=message)
    return tunnel_pb2.TunnelReply(id=number, status=status)


def _ended(number: int, context: TunnelContext) -> tunnel_pb2.TunnelReply:
    code = context.code() or grpc.StatusCode.UNKNOWN
    status = status_pb2.Status(code=code.value[0], message=context.details())
    return tunnel_pb2.TunnelReply(
        id=number,
        status=status,
        initial_metadata=metadata_entries(context.initial_metadata()),
        trailing_metadata=metadata_entries(context.trailing_metadata()),
    )


def _unexpected(call: tunnel_pb2.TunnelCall, context: TunnelContext) -> tunnel_pb2.TunnelReply:
    """A handler raised: logged with its traceback, UNKNOWN to the caller (as grpc.aio does)."""
    log.exception("unhandled error in tunnelled call %s (id %d)", call.method, call.id)
    context.set_code(grpc.StatusCode.UNKNOWN)
    context.set_details(f"Unexpected error in {call.method}")
    return _ended(call.id, context)
