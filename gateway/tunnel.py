"""Unary calls through a backend's UnaryTunnelService (proto/switchboard/gateway/v1/tunnel.proto).

A plain grpc.aio unary call costs the gateway ≈ 0.1 ms of CPU and the backend about as much
again, whatever the method does. ``Tunnel`` keeps one Tunnel call open per backend instead
and sends each unary call on it as a numbered ``TunnelCall``: calls queued while the previous
``TunnelRequest`` was being written go out together, and the backend answers with replies
batched the same way, so under load the per-call gRPC cost is shared by many calls.

Per call, nothing changes for the client of the gateway: the backend authorizes it from its
own metadata, bounds it by its own deadline and answers with its own status, details and
metadata (``TunnelResult`` or ``grpc.aio.AioRpcError``, as a plain call gives). The gateway
also enforces the deadline itself (DEADLINE_EXCEEDED) and tells the backend to cancel a call
whose client went away or whose deadline passed.

When ``call`` returns None the caller makes a plain unary call instead, which happens:

- for a call bigger than ``max_inline`` bytes, request and metadata together (16 KiB: batches
  stay under 60 KiB, below any sane backend receive limit; the backend's own limit then
  applies to that call alone, as before);
- after the backend refused the Tunnel call itself before opening it (UNIMPLEMENTED: it lacks
  the service; UNAUTHENTICATED or PERMISSION_DENIED: an interceptor guards every call): that
  call and every later one to that address go plain, logged once at WARNING;
- for calls that never reached the backend: nothing is written until the backend's header
  metadata says the tunnel is open, so calls waiting on a tunnel that failed to open never ran;
  nor did calls still queued when a tunnel ended, nor calls unanswered when the backend ended
  the tunnel OK (it does so only after draining at shutdown, having answered every call it
  read). Making them plain loses nothing and runs nothing twice.

A tunnel that ends with an error after it opened (the backend crashing, the connection lost)
fails the calls written on it and still unanswered with UNAVAILABLE, as a lost connection
fails plain calls in flight; the next call opens a new Tunnel call.

A backend with several addresses gets one tunnel per address (``TunnelPool``): a tunnel is one
HTTP/2 stream to one server, so calls rotate over the tunnels as plain calls rotate over the
addresses. A single host name is one tunnel, to whichever address its channel picks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
from google.protobuf.duration_pb2 import Duration

from gateway.metadata import Metadata
from switchboard.gateway.v1 import share_pb2, tunnel_pb2

__all__ = [
    "EOF",
    "MAX_BATCH_BYTES",
    "MAX_INLINE_BYTES",
    "OPENED_KEY",
    "TUNNEL_METHOD",
    "Tunnel",
    "TunnelPool",
    "TunnelResult",
    "metadata_entries",
]

log = logging.getLogger("gateway.tunnel")

_SERVICE = tunnel_pb2.DESCRIPTOR.services_by_name["UnaryTunnelService"]
TUNNEL_METHOD = f"/{_SERVICE.full_name}/Tunnel"
OPENED_KEY = "switchboard-tunnel"  # header metadata the backend sends as the tunnel opens
# A backend's receive limit bounds a whole TunnelRequest, and the gateway cannot read it: a
# batch stays under 60 KiB (gRPC's default limit is 4 MiB; Switchboard's service takes at
# least 64 KiB more than its largest message text), and a request over 16 KiB goes plain, so
# the backend's limit applies to it alone, as it always did.
MAX_INLINE_BYTES = 16 * 1024
MAX_BATCH_BYTES = 60 * 1024
_CODES = {code.value[0]: code for code in grpc.StatusCode}
EOF: Final[object] = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc-stubs lacks aio.EOF

TunnelStream = grpc.aio.StreamStreamMultiCallable[
    tunnel_pb2.TunnelRequest, tunnel_pb2.TunnelResponse
]
TunnelCallObject = grpc.aio.StreamStreamCall[tunnel_pb2.TunnelRequest, tunnel_pb2.TunnelResponse]


@dataclass(frozen=True, slots=True)
class TunnelResult:
    """A call that ended OK: the serialized response and the metadata the method sent."""

    response: bytes
    initial_metadata: Metadata
    trailing_metadata: Metadata


class _Replan(Exception):
    """The call never reached the backend: make it plain."""


class _Session:
    """One Tunnel call and the calls in flight on it.

    Nothing is written before the backend's header metadata says the tunnel is open
    (``OPENED_KEY``): a Tunnel call refused at once (UNIMPLEMENTED, an interceptor's
    UNAUTHENTICATED, the backend down) has then carried no call, and every call waiting on it is
    made plain. After that, a call without a reply when the tunnel ends failed UNAVAILABLE,
    unless the tunnel ended OK: the backend ends it OK only after draining (it stopped reading
    and answered every call it had read), so those calls never ran and are made plain too."""

    def __init__(self, tunnel: Tunnel, call: TunnelCallObject) -> None:
        self.tunnel = tunnel
        self.call = call
        self.outbox: list[tuple[tunnel_pb2.TunnelCall, int]] = []
        self.cancels: list[int] = []
        self.waiting: dict[int, asyncio.Future[tunnel_pb2.TunnelReply]] = {}
        self.ready = asyncio.Event()
        self.opened = False
        self.ended = False
        self.tasks = (
            asyncio.ensure_future(self._write()),
            asyncio.ensure_future(self._read()),
        )

    def submit(
        self, call: tunnel_pb2.TunnelCall, size: int
    ) -> asyncio.Future[tunnel_pb2.TunnelReply]:
        future: asyncio.Future[tunnel_pb2.TunnelReply] = asyncio.get_running_loop().create_future()
        self.waiting[call.id] = future
        self.outbox.append((call, size))
        self.ready.set()
        return future

    def cancel(self, number: int) -> None:
        """The caller of ``number`` no longer waits; the backend is told unless it never knew."""
        self.waiting.pop(number, None)
        for index, (queued, _) in enumerate(self.outbox):
            if queued.id == number:
                del self.outbox[index]
                return
        if not self.ended:
            self.cancels.append(number)
            self.ready.set()

    async def _write(self) -> None:
        try:
            headers = await self.call.initial_metadata()
            if not any(key == OPENED_KEY for key, _ in headers or ()):
                return  # refused or ended before opening: the read side makes the calls plain
            self.opened = True
            while True:
                await self.ready.wait()
                self.ready.clear()
                while self.outbox or self.cancels:
                    calls = _take(self.outbox)
                    cancels, self.cancels = self.cancels, []
                    # counted before the write: a reply can be handled before this task resumes
                    self.tunnel.calls_sent += len(calls)
                    self.tunnel.batches_sent += 1
                    await self.call.write(tunnel_pb2.TunnelRequest(calls=calls, cancel=cancels))
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return  # the read side sees the call's end and settles every waiting call
        except asyncio.CancelledError:
            return

    async def _read(self) -> None:
        error: grpc.aio.AioRpcError | None = None
        try:
            while True:
                response = await self.call.read()
                if response is EOF:
                    break
                assert isinstance(response, tunnel_pb2.TunnelResponse)
                for reply in response.replies:
                    future = self.waiting.pop(reply.id, None)
                    if future is not None and not future.done():
                        future.set_result(reply)
        except grpc.aio.AioRpcError as exc:
            error = exc
        except asyncio.CancelledError:
            pass
        self._end(error)

    def _end(self, error: grpc.aio.AioRpcError | None) -> None:
        self.ended = True
        self.tunnel.session_ended(self, error)
        unsent = {call.id for call, _ in self.outbox}
        self.outbox.clear()
        never_ran = not self.opened or error is None  # refused at once, or drained
        reason = (
            "the tunnel call ended" if error is None else f"{error.code().name}: {error.details()}"
        )
        for number, future in self.waiting.items():
            if future.done():
                continue
            if never_ran or number in unsent:
                future.set_exception(_Replan())
            else:
                future.set_exception(_unavailable(f"connection to the backend lost ({reason})"))
        self.waiting.clear()
        self.tasks[0].cancel()

    async def close(self) -> None:
        self.call.cancel()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _take(outbox: list[tuple[tunnel_pb2.TunnelCall, int]]) -> list[tunnel_pb2.TunnelCall]:
    """Removes from the front of ``outbox`` the calls of one batch (up to MAX_BATCH_BYTES, at
    least one call) and returns them."""
    count = size = 0
    for _, grows in outbox:
        if count and size + grows > MAX_BATCH_BYTES:
            break
        size += grows
        count += 1
    calls = [call for call, _ in outbox[:count]]
    del outbox[:count]
    return calls


# A Tunnel call refused with one of these before it opened: the backend will not take calls
# through it (it lacks the service, or guards every call with credentials the gateway does not
# send on the tunnel itself).
_REFUSALS = frozenset(
    {
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


class Tunnel:
    """Unary calls to one backend address through its UnaryTunnelService (see the module
    docstring)."""

    def __init__(
        self,
        method: TunnelStream,
        backend: str,
        *,
        max_inline: int = MAX_INLINE_BYTES,
    ) -> None:
        self._method = method
        self._backend = backend
        self._max_inline = max_inline
        self._session: _Session | None = None
        self._ids = itertools.count(1)
        self.supported = True  # False once the backend refused the Tunnel call itself
        self.calls_sent = 0  # calls written to the backend, over every Tunnel call
        self.batches_sent = 0  # TunnelRequest messages carrying them

    async def call(
        self, method: str, request: bytes, metadata: Metadata, time_limit: float | None
    ) -> TunnelResult | None:
        """Runs one unary call; None when the caller should make it plain instead.

        Raises ``grpc.aio.AioRpcError`` with the call's status when it fails."""
        if not self.supported or len(request) > self._max_inline:
            return None
        number = next(self._ids)
        call = tunnel_pb2.TunnelCall(
            id=number, method=method, request=request, metadata=metadata_entries(metadata)
        )
        if time_limit is not None:  # the call's deadline: the backend's and the gateway's
            call.timeout.CopyFrom(_duration(time_limit))
        size = call.ByteSize() + 8  # with its tag and length in the TunnelRequest
        if size > self._max_inline:
            return None  # large metadata: the backend's limit then applies to this call alone
        session = self._session
        if session is None:
            session = self._session = _Session(self, self._method(None))
        future = session.submit(call, size)
        try:
            async with asyncio.timeout(time_limit):
                reply = await future
        except _Replan:
            return None
        except TimeoutError:
            session.cancel(number)
            raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except asyncio.CancelledError:
            session.cancel(number)
            raise
        initial, trailing = _pairs(reply.initial_metadata), _pairs(reply.trailing_metadata)
        if reply.status.code:
            code = _CODES.get(reply.status.code, grpc.StatusCode.UNKNOWN)
            raise _error(code, reply.status.message, initial, trailing)
        return TunnelResult(reply.response, initial, trailing)

    def session_ended(self, session: _Session, error: grpc.aio.AioRpcError | None) -> None:
        if self._session is session:
            self._session = None
        if error is not None and error.code() in _REFUSALS and not session.opened:
            if self.supported:
                log.warning(
                    "backend %s refused %s (%s: %s): plain unary calls from now on",
                    self._backend,
                    TUNNEL_METHOD,
                    error.code().name,
                    error.details(),
                )
            self.supported = False
        elif error is not None:
            log.info("tunnel to backend %s ended: %s", self._backend, error.code().name)

    async def close(self) -> None:
        """Cancels the Tunnel call (calls in flight fail UNAVAILABLE)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class TunnelPool:
    """A backend's tunnels, one per address (a tunnel is one HTTP/2 stream, so it reaches one
    server): calls rotate over the tunnels still supported, as plain calls rotate over the
    addresses under round_robin."""

    def __init__(self, tunnels: Sequence[Tunnel]) -> None:
        if not tunnels:
            raise ValueError("a tunnel pool needs at least one tunnel")
        self.tunnels = tuple(tunnels)
        self._turn = itertools.cycle(self.tunnels)

    @property
    def supported(self) -> bool:
        return any(tunnel.supported for tunnel in self.tunnels)

    @property
    def calls_sent(self) -> int:
        return sum(tunnel.calls_sent for tunnel in self.tunnels)

    @property
    def batches_sent(self) -> int:
        return sum(tunnel.batches_sent for tunnel in self.tunnels)

    async def call(
        self, method: str, request: bytes, metadata: Metadata, time_limit: float | None
    ) -> TunnelResult | None:
        """``Tunnel.call`` on the next supported tunnel (None: make it plain)."""
        for _ in self.tunnels:
            tunnel = next(self._turn)
            if tunnel.supported:
                return await tunnel.call(method, request, metadata, time_limit)
        return None

    async def close(self) -> None:
        await asyncio.gather(*(tunnel.close() for tunnel in self.tunnels))


def metadata_entries(
    metadata: Iterable[tuple[str, str | bytes]],
) -> list[share_pb2.ShareMetadata]:
    """Metadata pairs as ShareMetadata entries (the Share and Tunnel contracts' form)."""
    return [
        share_pb2.ShareMetadata(key=key, value=value.encode() if isinstance(value, str) else value)
        for key, value in metadata
    ]


def _pairs(entries: Any) -> Metadata:
    return tuple(
        (entry.key, entry.value if entry.key.endswith("-bin") else entry.value.decode("latin-1"))
        for entry in entries
    )


def _duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))


def _error(
    code: grpc.StatusCode, details: str, initial: Metadata = (), trailing: Metadata = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(*initial),
        grpc.aio.Metadata(*trailing),
        details=details,
        debug_error_string=f"UnaryTunnelService: {code.name}: {details}",
    )


def _unavailable(details: str) -> grpc.aio.AioRpcError:
    return _error(grpc.StatusCode.UNAVAILABLE, details)
