"""The service's trace spans: one SERVER span per call, parented on the call's trace context.

Whether tracing is on is decided once at start-up by gateway/telemetry.py (the same
environment variables; ``service.name`` defaults to ``switchboard-service``):
``services.server.build_server`` asks ``rpc_spans()`` and, when it is not None, installs
``TracingInterceptor`` first (outside ``AuthInterceptor``, so a refused call has its span too)
and hands the same ``RpcSpans`` to the two services that carry other calls:

- a plain call: the interceptor's span, named ``{package.Service}/{Method}``, from the call's
  ``traceparent``/``tracestate`` metadata, current while the handler runs (a stream: for each
  step), ended when the call or stream ends, with ``rpc.system``, ``rpc.service``,
  ``rpc.method`` and ``rpc.grpc.status_code``;
- a call through UnaryTunnelService: a span of its own, from its own metadata, made by
  ``TunnelServicer.reply`` (the Tunnel call itself has none: it would be one span as long as a
  gateway's connection);
- a caller attached to a shared stream (StreamShareService): a ``ChatService/Subscribe`` span
  from the attach's metadata, from the attach until the handle ends (the Share call itself has
  none either).

Without tracing nothing here is built: no interceptor, and the tunnel and share paths test one
``is None``. Span status: ERROR for the codes the semantic conventions call server errors
(UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS); a client's
mistake (NOT_FOUND, INVALID_ARGUMENT…) is not the server's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from gateway.telemetry import extract_from_metadata, rpc_attributes, tracer
from gateway.tunnel import TUNNEL_METHOD
from gateway.upstream import SHARE_METHOD
from services.auth import handler_behaviour, rebuilt_handler

__all__ = [
    "CARRIER_METHODS",
    "RpcSpans",
    "TracingInterceptor",
    "code_number",
    "code_of",
    "rpc_spans",
]

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]
Behaviour: TypeAlias = Callable[..., Any]
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

# Calls that carry other calls, each of which gets its own span instead.
CARRIER_METHODS: Final = frozenset({TUNNEL_METHOD, SHARE_METHOD})
_SERVER_ERRORS: Final = frozenset(
    int(code.value[0])
    for code in (
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    )
)


def code_number(code: grpc.StatusCode) -> int:
    """The number of a status code (``NOT_FOUND`` → 5), as spans record it."""
    return int(code.value[0])


OK: Final = code_number(grpc.StatusCode.OK)
CANCELLED: Final = code_number(grpc.StatusCode.CANCELLED)
UNKNOWN: Final = code_number(grpc.StatusCode.UNKNOWN)
DEADLINE_EXCEEDED: Final = code_number(grpc.StatusCode.DEADLINE_EXCEEDED)
UNAUTHENTICATED: Final = code_number(grpc.StatusCode.UNAUTHENTICATED)

if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # generic only in the type stubs
    _Interceptor = grpc.aio.ServerInterceptor


class RpcSpans:
    """Starts and ends the service's SERVER spans."""

    __slots__ = ("_tracer",)

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def start(self, rpc_path: str, metadata: Iterable[tuple[str, str | bytes]] | None) -> Span:
        """The span of a call of ``/pkg.Service/Method`` whose metadata is ``metadata``."""
        return self._tracer.start_span(
            rpc_path.lstrip("/"),
            context=extract_from_metadata(metadata),
            kind=SpanKind.SERVER,
            attributes=rpc_attributes(rpc_path),
        )

    @staticmethod
    def finish(span: Span, code: int) -> None:
        """End ``span`` with the call's status code (a ``grpc.StatusCode`` value's number)."""
        span.set_attribute("rpc.grpc.status_code", code)
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    @staticmethod
    @contextlib.contextmanager
    def current(span: Span) -> Iterator[None]:
        """``span`` is the current span in the block (same task, no ``yield`` of a generator
        in between)."""
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield
        finally:
            otel_context.detach(token)


def rpc_spans() -> RpcSpans | None:
    """The service's spans when tracing is configured, else None."""
    found = tracer("service")
    return None if found is None else RpcSpans(found)


def code_of(context: Context | Any, error: BaseException | None = None) -> int:
    """The status a call ends with: what the handler set (or aborted with), UNKNOWN for an
    unexpected exception, CANCELLED/DEADLINE_EXCEEDED when grpc cancelled the handler."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        return DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else CANCELLED
    code = context.code()
    if code is not None:
        return code_number(code)
    if error is None or isinstance(error, StopAsyncIteration):
        return OK
    return UNKNOWN


class TracingInterceptor(_Interceptor):
    """One SERVER span per call but the ``skipped`` ones (see the module docstring)."""

    def __init__(self, spans: RpcSpans, *, skipped: Iterable[str] = CARRIER_METHODS) -> None:
        self._spans = spans
        self._skipped = frozenset(skipped)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if not _found(handler) or method in self._skipped:
            return handler  # None: grpc answers UNIMPLEMENTED; no span for an unknown method
        inner = handler_behaviour(handler)
        metadata = handler_call_details.invocation_metadata
        if inspect.isasyncgenfunction(inner):
            return rebuilt_handler(handler, _generator(self._spans, inner, method, metadata))
        if inspect.iscoroutinefunction(inner):
            return rebuilt_handler(handler, _coroutine(self._spans, inner, method, metadata))
        return handler  # a synchronous handler runs in an executor; Switchboard has none


def _found(handler: Handler | None) -> bool:
    """Whether the server knows the method (the stubs type the continuation as never None)."""
    return handler is not None


def _coroutine(spans: RpcSpans, inner: Behaviour, method: str, metadata: Any) -> Behaviour:
    """A unary handler, or a streaming one written with ``context.write``."""

    async def behaviour(request: Any, context: Context) -> Any:
        span = spans.start(method, metadata)
        try:
            with spans.current(span):
                result = await inner(request, context)
        except BaseException as error:
            spans.finish(span, code_of(context, error))
            raise
        spans.finish(span, code_of(context))
        return result

    return behaviour


def _generator(spans: RpcSpans, inner: Behaviour, method: str, metadata: Any) -> Behaviour:
    """A streaming handler written as an async generator: the span lasts as long as the
    stream and is current while each response is made."""

    async def behaviour(request: Any, context: Context) -> AsyncIterator[Any]:
        span = spans.start(method, metadata)
        responses: AsyncIterator[Any] = inner(request, context)
        code: int | None = None
        try:
            while True:
                with spans.current(span):
                    try:
                        response = await anext(responses)
                    except StopAsyncIteration:
                        break
                yield response
        except BaseException as error:
            code = code_of(context, error)
            raise
        finally:
            with contextlib.suppress(Exception):
                await responses.aclose()  # type: ignore[attr-defined]  # an async generator
            spans.finish(span, code_of(context) if code is None else code)

    return behaviour
