"""Distributed tracing with OpenTelemetry: the start-up decision, the W3C carriers, HTTP spans.

Two things, at two costs:

- **Passthrough, always.** The client's ``traceparent`` and ``tracestate`` headers go upstream
  as metadata of the same names (``TRACE_KEYS``; gateway/metadata.py forwards them like
  ``authorization``), on every bridge, tracing configured or not, as Envoy does. A request
  without them pays nothing more (the set lookup is one the gateway already makes); forwarding
  the two costs ≈ 0.3 µs in ``request_metadata``.
- **Spans, only when tracing is configured.** ``configure(service_name)`` reads the standard
  environment variables once at start-up (``plan``, sans-IO): ``OTEL_SDK_DISABLED=true`` wins
  and turns it off; otherwise ``OTEL_TRACES_EXPORTER`` (a comma-separated list of ``console``,
  ``otlp``, ``none``) or, when it is unset, an ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (meaning ``otlp``) turns it on. Nothing set: off (the
  specification's default exporter is ``otlp``; a gateway does not start exporting to
  localhost:4318 because nobody said anything). ``service.name`` is ``OTEL_SERVICE_NAME``, else
  a ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``, else the process's default
  (``switchboard-gateway`` / ``switchboard-service``). The SDK itself reads the rest
  (``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_*``). ``otlp`` is OTLP over
  HTTP/protobuf and needs the optional extra ``switchboard[otel]``
  (opentelemetry-exporter-otlp-proto-http).

``configure`` builds an SDK ``TracerProvider`` (a ``BatchSpanProcessor`` per exporter), makes it
OpenTelemetry's global provider and ``install``s it here. Components ask ``tracer(name)`` once
when they are built: None means tracing is off, and their per-request paths then create no span
and attach no context: the gateway's REST path pays two ``is None`` tests (≈ 15 ns; the whole
path measured as fast as before, within noise), the service one per tunnelled call or attach
and nothing per plain call (no interceptor). Tests ``install`` a provider of their own (and put
the previous one back) without touching OpenTelemetry's set-once global.

Propagation is W3C Trace Context only (``TraceContextTextMapPropagator``), the same two keys
that pass through: ``extract_from_headers`` / ``extract_from_metadata`` read a parent from HTTP
headers or gRPC metadata pairs; ``with_trace_context`` replaces the trace keys of outgoing
metadata with a span's context, so the next hop's span is that span's child.

``HttpSpans`` makes the gateway's SERVER span for one HTTP request, named ``{METHOD} {route}``
(``POST /v1/{parent=rooms/*}/messages``; ``{METHOD}`` alone for a request no route serves), with
the stable HTTP semantic-convention attributes (``http.request.method``, ``url.path``,
``url.scheme``, ``http.route``, ``http.response.status_code``, ``error.type`` for a 5xx) and the
gRPC method's ``rpc.system``, ``rpc.service``, ``rpc.method`` (``rpc.grpc.status_code`` when
the answer is a Status, that is an error). Never the query string: it may hold a token.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final
from urllib.parse import unquote

from multidict import CIMultiDictProxy
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.metadata import TRACE_KEYS, Metadata

if TYPE_CHECKING:
    from gateway.routes import Route

__all__ = [
    "GATEWAY_SERVICE_NAME",
    "SERVICE_SERVICE_NAME",
    "TRACE_KEYS",
    "HttpSpans",
    "TelemetryError",
    "TracingPlan",
    "build_provider",
    "configure",
    "extract_from_headers",
    "extract_from_metadata",
    "install",
    "installed",
    "plan",
    "rpc_attributes",
    "tracer",
    "with_trace_context",
]

GATEWAY_SERVICE_NAME: Final = "switchboard-gateway"
SERVICE_SERVICE_NAME: Final = "switchboard-service"
EXPORTERS: Final = ("console", "otlp")
OTLP_EXTRA_HINT: Final = "pip install 'switchboard[otel]' (opentelemetry-exporter-otlp-proto-http)"
_INSTRUMENTATION: Final = "switchboard"

_PROPAGATOR: Final = TraceContextTextMapPropagator()
# Methods the HTTP semantic conventions know; any other is reported as "_OTHER".
_KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


class TelemetryError(ValueError):
    """The tracing environment variables ask for something this process cannot do."""


# --- the start-up decision (sans-IO) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TracingPlan:
    """What the environment asks for: the exporters and the ``service.name``."""

    exporters: tuple[str, ...]  # among EXPORTERS, in the order given, no repeats
    service_name: str

    def __str__(self) -> str:
        return f"spans of service.name {self.service_name!r} to {', '.join(self.exporters)}"


def _true(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


def _resource_service_name(attributes: str) -> str | None:
    """``service.name`` from ``OTEL_RESOURCE_ATTRIBUTES`` (``k=v,k=v``, values percent-encoded)."""
    for pair in attributes.split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip() == "service.name" and value.strip():
            return unquote(value.strip())
    return None


def plan(environ: Mapping[str, str], *, default_service_name: str) -> TracingPlan | None:
    """The tracing ``environ`` asks for, or None for none (see the module docstring).

    Raises ``TelemetryError`` for an exporter or OTLP protocol this process does not support."""
    if _true(environ.get("OTEL_SDK_DISABLED")):
        return None
    listed = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if listed:
        names = [name.strip().lower() for name in listed.split(",") if name.strip()]
    else:
        names = ["otlp"] if endpoint and endpoint.strip() else []
    unknown = [name for name in names if name not in (*EXPORTERS, "none")]
    if unknown:
        raise TelemetryError(
            f"OTEL_TRACES_EXPORTER: unsupported exporter {unknown[0]!r}; "
            f"supported: {', '.join(EXPORTERS)}, none"
        )
    exporters = tuple(dict.fromkeys(name for name in names if name != "none"))
    if not exporters:
        return None
    if "otlp" in exporters:
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        if protocol != "http/protobuf":
            raise TelemetryError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; use http/protobuf"
            )
    name = (
        environ.get("OTEL_SERVICE_NAME", "").strip()
        or _resource_service_name(environ.get("OTEL_RESOURCE_ATTRIBUTES", ""))
        or default_service_name
    )
    return TracingPlan(exporters, name)


# --- the provider ------------------------------------------------------------------------------


def build_provider(tracing: TracingPlan, *, console_out: IO[str] | None = None) -> Any:
    """An SDK TracerProvider for ``tracing``: one BatchSpanProcessor per exporter. The console
    exporter writes one JSON document per span to ``console_out`` (stdout by default).

    Typed ``Any``: the SDK's TracerProvider (its ``shutdown`` flushes the batches)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporters: list[SpanExporter] = []
    for name in tracing.exporters:
        if name == "console":
            exporters.append(
                ConsoleSpanExporter()
                if console_out is None
                else ConsoleSpanExporter(out=console_out)
            )
        else:
            exporters.append(_otlp_exporter())
    provider = SdkTracerProvider(resource=Resource.create({"service.name": tracing.service_name}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _otlp_exporter() -> Any:
    """OTLP over HTTP/protobuf, configured by the exporter from the OTEL_EXPORTER_OTLP_* vars."""
    try:
        module = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    except ImportError:
        raise TelemetryError(
            f"OTEL_TRACES_EXPORTER asks for otlp, which is not installed: {OTLP_EXTRA_HINT}"
        ) from None
    return module.OTLPSpanExporter()


def configure(
    default_service_name: str, environ: Mapping[str, str] | None = None
) -> tuple[Any, TracingPlan] | None:
    """Set tracing up as ``environ`` (default: ``os.environ``) asks, at start-up: the SDK
    provider, made OpenTelemetry's global and installed here, and the plan it follows; None when
    tracing is off. Call ``provider.shutdown()`` at exit to flush the last spans."""
    tracing = plan(
        os.environ if environ is None else environ, default_service_name=default_service_name
    )
    if tracing is None:
        return None
    provider = build_provider(tracing)
    trace.set_tracer_provider(provider)
    install(provider)
    return provider, tracing


_provider: TracerProvider | None = None


def install(provider: TracerProvider | None) -> TracerProvider | None:
    """Make ``provider`` the one components built from now on trace with (None: tracing off);
    returns the previous one."""
    global _provider
    previous, _provider = _provider, provider
    return previous


@contextlib.contextmanager
def installed(provider: TracerProvider | None) -> Iterator[None]:
    """``install(provider)`` for the block, the previous provider put back after it."""
    previous = install(provider)
    try:
        yield
    finally:
        install(previous)


def tracer(name: str) -> Tracer | None:
    """The tracer of component ``name`` (instrumentation scope ``switchboard.<name>``), or
    None when tracing is off."""
    if _provider is None:
        return None
    return _provider.get_tracer(f"{_INSTRUMENTATION}.{name}")


# --- carriers ----------------------------------------------------------------------------------


class _HeaderGetter(Getter[CIMultiDictProxy[str]]):
    """HTTP headers: every value of a (case-insensitive) name, so repeated tracestate joins."""

    def get(self, carrier: CIMultiDictProxy[str], key: str) -> list[str] | None:
        values = carrier.getall(key, None)
        return None if values is None else list(values)

    def keys(self, carrier: CIMultiDictProxy[str]) -> list[str]:
        return list(carrier.keys())


class _MetadataGetter(Getter[Iterable[tuple[str, str | bytes]]]):
    """gRPC metadata pairs (keys are lower case on the wire); binary values are not text."""

    def get(self, carrier: Iterable[tuple[str, str | bytes]], key: str) -> list[str] | None:
        values = [value for name, value in carrier if name == key and isinstance(value, str)]
        return values or None

    def keys(self, carrier: Iterable[tuple[str, str | bytes]]) -> list[str]:
        return [name for name, _ in carrier]


_HEADERS: Final = _HeaderGetter()
_METADATA: Final = _MetadataGetter()


def extract_from_headers(headers: CIMultiDictProxy[str]) -> Context:
    """The parent context the request's ``traceparent``/``tracestate`` name (empty: none)."""
    return _PROPAGATOR.extract(headers, getter=_HEADERS)


def extract_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Context:
    """The parent context call metadata carries (empty when it carries none)."""
    return _PROPAGATOR.extract(tuple(metadata or ()), getter=_METADATA)


def with_trace_context(metadata: Metadata, span: Span) -> Metadata:
    """``metadata`` with its trace keys replaced by ``span``'s context (its child continues)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    kept = tuple(entry for entry in metadata if entry[0] not in TRACE_KEYS)
    return (*kept, *carrier.items())


# --- attributes --------------------------------------------------------------------------------


def rpc_attributes(rpc_path: str) -> dict[str, str]:
    """``rpc.system``, ``rpc.service``, ``rpc.method`` of ``/pkg.Service/Method``."""
    service, _, method = rpc_path.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


@dataclass(frozen=True, slots=True)
class _Routed:
    name: str
    attributes: dict[str, str]


class HttpSpans:
    """The gateway's SERVER spans: ``start`` one per request, ``route`` it once matched,
    ``finish`` it with the response. Built only when tracing is on."""

    __slots__ = ("_routed", "_tracer")

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        # (HTTP method, id of a Route of the application's table, which outlives this) → label
        self._routed: dict[tuple[str, int], _Routed] = {}

    def start(self, method: str, path: str, scheme: str, headers: CIMultiDictProxy[str]) -> Span:
        """The request's span, its parent the client's trace context (if any)."""
        known = method in _KNOWN_METHODS
        attributes: dict[str, str] = {
            "http.request.method": method if known else "_OTHER",
            "url.path": path,
            "url.scheme": scheme,
        }
        if not known:
            attributes["http.request.method_original"] = method
        return self._tracer.start_span(
            _label(method),
            context=extract_from_headers(headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
        )

    def route(self, span: Span, method: str, route: Route) -> None:
        """Name ``span`` after the route (of the application's table) that serves it."""
        key = (method, id(route))
        routed = self._routed.get(key)
        if routed is None:
            template = str(route.template)
            attributes = {"http.route": template, **rpc_attributes(route.rpc_path)}
            routed = self._routed[key] = _Routed(f"{_label(method)} {template}", attributes)
        span.update_name(routed.name)
        span.set_attributes(routed.attributes)

    @staticmethod
    def route_other(span: Span, method: str, template: str) -> None:
        """Name ``span`` after a route of the gateway's own (``/healthz``, ``/docs``…)."""
        span.update_name(f"{_label(method)} {template}")
        span.set_attribute("http.route", template)

    @staticmethod
    def responded(span: Span, status: int) -> None:
        """The HTTP status the request is answered with (once its span has ended, nothing):
        5xx is an error, 4xx the client's."""
        if not span.is_recording():
            return
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))

    @staticmethod
    def finish(span: Span, grpc_code: int | None = None) -> None:
        """End ``span``, with the gRPC status code of a Status answer (an error) if any."""
        if grpc_code is not None:
            span.set_attribute("rpc.grpc.status_code", grpc_code)
        span.end()


def _label(method: str) -> str:
    """The HTTP method as span names show it: ``HTTP`` for one the conventions do not know."""
    return method if method in _KNOWN_METHODS else "HTTP"
