"""The route table: every HTTP binding of every exposed gRPC method.

``build_route_table`` reads each method's ``google.api.http`` rule (and its
``additional_bindings``) and the gateway's own method options, and compiles them into one
``RouteTable[Route]``. That table is the single input of both the request path and the OpenAPI
generator.

Invariants:
- a method without an HttpRule is not exposed, unless auto-mapping is on, which binds it to
  ``POST /pkg.Service/Method`` with body ``*``;
- every problem is a ``RouteError`` raised at start-up and naming the method and the template:
  an invalid template, a body or response_body field the message does not have, a template
  variable naming a missing field, two bindings that can never be told apart, a ``share`` option
  on a method that is not server streaming or whose SSE ``resume_field`` is not a singular
  scalar of the request;
- ``Route.share`` is set exactly for the server-streaming methods whose callers may share one
  upstream call (the ``share`` option present and not ``disabled``); it says which request field
  to clear to get the request they share.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from google.api import http_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message

from gateway.descriptors import http_rule, method_options
from gateway.fieldpath import resolve
from gateway.httprule import ConflictError, PathTemplate, RouteTable, TemplateError
from gateway.sse import SseMapping, SseOptionsError
from switchboard.gateway.v1 import options_pb2

__all__ = [
    "Cardinality",
    "Route",
    "RouteError",
    "ShareRule",
    "build_route_table",
    "websocket_table",
]

_PATTERNS = ("get", "put", "post", "delete", "patch")


class RouteError(ValueError):
    """An HTTP binding that cannot be served; the message names the method and the template."""


class Cardinality(enum.Enum):
    """How many messages flow each way, derived from the method descriptor."""

    UNARY = "unary"
    SERVER_STREAMING = "server_streaming"
    CLIENT_STREAMING = "client_streaming"
    BIDI_STREAMING = "bidi_streaming"

    @classmethod
    def of(cls, method: MethodDescriptor) -> Cardinality:
        client, server = method.client_streaming, method.server_streaming
        if client and server:
            return cls.BIDI_STREAMING
        if client:
            return cls.CLIENT_STREAMING
        if server:
            return cls.SERVER_STREAMING
        return cls.UNARY


@dataclass(frozen=True, slots=True)
class ShareRule:
    """How callers of a shareable method share one upstream call.

    ``resume_field`` (the SSE resume field, empty when the method has none) is the one request
    field a caller may set on its own: requests that differ only there share a call.
    """

    resume_field: tuple[FieldDescriptor, ...] = ()

    def requests(self, request: Message) -> tuple[bytes, bytes]:
        """(the caller's own request, the shared request), both serialized deterministically."""
        own = request.SerializeToString(deterministic=True)
        if not _is_set(request, self.resume_field):
            return own, own
        shared = type(request)()
        shared.CopyFrom(request)
        parent = shared
        for field in self.resume_field[:-1]:
            parent = getattr(parent, field.name)
        parent.ClearField(self.resume_field[-1].name)
        return own, shared.SerializeToString(deterministic=True)


def _is_set(message: Message, path: tuple[FieldDescriptor, ...]) -> bool:
    """Whether the field at ``path`` is set (reading it creates nothing)."""
    if not path:
        return False
    parent = message
    for field in path[:-1]:
        if not parent.HasField(field.name):
            return False
        parent = getattr(parent, field.name)
    return any(field.number == path[-1].number for field, _ in parent.ListFields())


NO_SSE_OPTIONS: Final = SseMapping()  # frozen: one instance serves every route without them


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one gRPC method."""

    method: MethodDescriptor
    rpc_path: str  # "/pkg.Service/Method", the gRPC method path
    http_method: str  # upper case: GET, POST, ... or a custom verb
    template: PathTemplate
    body: str  # "" no body, "*" the whole request, else a top-level request field
    response_body: str  # "" the whole response, else a top-level response field
    cardinality: Cardinality
    backend: str
    sse: options_pb2.SseOptions | None = None
    auth: options_pb2.AuthRule | None = None
    auto_mapped: bool = False
    share: ShareRule | None = None  # set when callers may share one upstream call
    sse_mapping: SseMapping = NO_SSE_OPTIONS  # the SseOptions checked against the method's types


def build_route_table(
    services: Iterable[ServiceDescriptor],
    *,
    backend_of: Callable[[ServiceDescriptor], str],
    auto_map: bool = False,
) -> RouteTable[Route]:
    """Compile the bindings of ``services`` into a route table (see the module docstring)."""
    table: RouteTable[Route] = RouteTable()
    for service in services:
        backend = backend_of(service)
        for method in service.methods:
            for route in _routes_of(method, backend, auto_map=auto_map):
                _add(table, route.http_method, route)
    return table


def websocket_table(table: RouteTable[Route]) -> RouteTable[Route]:
    """GET bindings for every streaming route, whatever its rule's verb.

    A WebSocket handshake is always a GET; this table lets ``GET`` + ``Upgrade: websocket`` reach
    a streaming method whose rule says POST. The first binding of a template wins.
    """
    sockets: RouteTable[Route] = RouteTable()
    for _, template, route in table.routes():
        if route.cardinality is Cardinality.UNARY:
            continue
        try:
            sockets.add("GET", template, route)
        except ConflictError:
            continue
    return sockets


def _routes_of(method: MethodDescriptor, backend: str, *, auto_map: bool) -> Iterator[Route]:
    rule = http_rule(method)
    if rule is None:
        if auto_map:
            yield _auto_route(method, backend)
        return
    yield _route(method, rule, backend)
    for extra in rule.additional_bindings:
        yield _route(method, extra, backend)


def _route(method: MethodDescriptor, rule: http_pb2.HttpRule, backend: str) -> Route:
    verb, text = _verb_and_path(method, rule)
    try:
        template = PathTemplate.parse(text)
    except TemplateError as exc:
        raise RouteError(f"{method.full_name}: invalid path template {text!r}: {exc}") from exc
    route = _make_route(method, verb, template, rule.body, rule.response_body, backend)
    _check_fields(route, text)
    return route


def _auto_route(method: MethodDescriptor, backend: str) -> Route:
    path = f"/{method.containing_service.full_name}/{method.name}"
    return _make_route(method, "POST", PathTemplate.parse(path), "*", "", backend, auto=True)


def _make_route(
    method: MethodDescriptor,
    verb: str,
    template: PathTemplate,
    body: str,
    response_body: str,
    backend: str,
    *,
    auto: bool = False,
) -> Route:
    options = method_options(method)
    sse = options.Extensions[options_pb2.sse] if options.HasExtension(options_pb2.sse) else None
    auth = options.Extensions[options_pb2.auth] if options.HasExtension(options_pb2.auth) else None
    share = _share_rule(method, options, sse)
    return Route(
        method=method,
        rpc_path=f"/{method.containing_service.full_name}/{method.name}",
        http_method=verb,
        template=template,
        body=body,
        response_body=response_body,
        cardinality=Cardinality.of(method),
        backend=backend,
        sse=sse,
        auth=auth,
        auto_mapped=auto,
        share=share,
        sse_mapping=_sse_mapping(method, sse),
    )


def _sse_mapping(method: MethodDescriptor, sse: options_pb2.SseOptions | None) -> SseMapping:
    """The method's SseOptions compiled once; a path that names no usable field is a
    start-up error naming the method (never a 500 at request time)."""
    try:
        return SseMapping.compile(sse, request=method.input_type, response=method.output_type)
    except SseOptionsError as exc:
        raise RouteError(f"{method.full_name}: {exc}") from exc


def _share_rule(
    method: MethodDescriptor,
    options: descriptor_pb2.MethodOptions,
    sse: options_pb2.SseOptions | None,
) -> ShareRule | None:
    """The method's ShareRule: None without the ``share`` option or with it ``disabled``."""
    if not options.HasExtension(options_pb2.share):
        return None
    if Cardinality.of(method) is not Cardinality.SERVER_STREAMING:
        raise RouteError(
            f"{method.full_name}: the share option is for server-streaming methods only"
        )
    if options.Extensions[options_pb2.share].disabled:
        return None
    if sse is None or not sse.resume_field:
        return ShareRule()
    path = resolve(method.input_type, sse.resume_field.split("."))
    if path is None or path[-1].is_repeated or path[-1].message_type is not None:
        raise RouteError(
            f"{method.full_name}: SseOptions.resume_field {sse.resume_field!r} is not a "
            f"singular scalar field of {method.input_type.full_name} (needed to share the method)"
        )
    return ShareRule(path)


def _verb_and_path(method: MethodDescriptor, rule: http_pb2.HttpRule) -> tuple[str, str]:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise RouteError(f"{method.full_name}: google.api.http rule has no path pattern")
    if pattern == "custom":
        if not rule.custom.kind:
            raise RouteError(f"{method.full_name}: custom HTTP rule has no kind")
        return rule.custom.kind.upper(), rule.custom.path
    assert pattern in _PATTERNS
    return pattern.upper(), str(getattr(rule, pattern))


def _check_fields(route: Route, text: str) -> None:
    where = f"{route.method.full_name} ({route.http_method} {text!r})"
    request, response = route.method.input_type, route.method.output_type
    if route.body not in ("", "*") and route.body not in request.fields_by_name:
        raise RouteError(
            f"{where}: body field {route.body!r} is not a field of {request.full_name}"
        )
    if route.response_body and route.response_body not in response.fields_by_name:
        raise RouteError(
            f"{where}: response_body field {route.response_body!r} is not a field of "
            f"{response.full_name}"
        )
    for variable in route.template.variables:
        _check_field_path(where, request, variable.field_path)


def _check_field_path(where: str, message: Descriptor, path: tuple[str, ...]) -> None:
    current: Descriptor | None = message
    for depth, name in enumerate(path):
        field = current.fields_by_name.get(name) if current is not None else None
        if field is None:
            dotted = ".".join(path)
            raise RouteError(
                f"{where}: path variable {dotted!r} names no field of {message.full_name}"
            )
        if depth < len(path) - 1 and field.type != FieldDescriptor.TYPE_MESSAGE:
            raise RouteError(
                f"{where}: path variable {'.'.join(path)!r}: {name!r} is not a message"
            )
        current = field.message_type


def _add(table: RouteTable[Route], verb: str, route: Route) -> None:
    try:
        table.add(verb, route.template, route)
    except ConflictError as exc:
        others = sorted(
            other.method.full_name
            for other_verb, template, other in table.routes()
            if other_verb == verb and repr(str(template)) in str(exc)
        )
        with_whom = f" (already bound by {', '.join(others)})" if others else ""
        raise RouteError(
            f"{route.method.full_name}: {verb} {route.template}{with_whom}: {exc}"
        ) from exc
