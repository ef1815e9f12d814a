"""The service's auth interceptor and the development token command.

``AuthInterceptor`` makes a direct gRPC caller meet the same rules as the gateway: it takes the
token from the ``authorization`` metadata (``Bearer <token>``), finds the method's AuthRule in
the descriptor pool by its full name, and decides with the shared ``Authenticator``
(gateway/auth.py + gateway/policy.py — no second copy of either). A rejected call ends with
UNAUTHENTICATED or PERMISSION_DENIED before the servicer runs; the message never contains the
token. An accepted call runs with the identity set in the identity contextvar inside the
handler's own task. A server- or bidi-streaming call ends with UNAUTHENTICATED ("token
expired") when its token's ``exp`` passes (``expires_in``). ``authorize`` is the decision
alone, for a method path and metadata: services/share.py makes it for each caller attached
to a shared stream, so attached callers meet these rules too. Health and reflection
(``public_services``) are outside auth altogether: a token sent to them is not even read, so a
load balancer's probe and grpcurl's reflection (which sends the same ``-H`` headers as the
call) work whatever token the client holds, and the call itself then reports what is wrong
with the token.

``python -m services token --sub alice --roles member [--ttl 3600]`` prints an HS256 token
signed with the development secret (``SWITCHBOARD_DEV_SECRET`` or the generated file under
``$XDG_STATE_HOME/switchboard``), which a server started with ``dev = true`` accepts.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc
import jwt
from google.protobuf import descriptor_pool
from google.protobuf.descriptor_pool import DescriptorPool

from gateway.auth import Authenticator, AuthError, Identity, TokenExpired
from gateway.authconfig import DEV_KID, dev_secret
from gateway.credentials import bearer_token
from gateway.policy import rule_for_path
from switchboard.gateway.v1 import options_pb2

__all__ = [
    "PUBLIC_SERVICES",
    "AuthInterceptor",
    "add_token_command",
    "handler_behaviour",
    "mint_dev_token",
    "rebuilt_handler",
]

PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
_PUBLIC_RULE = options_pb2.AuthRule(public=True)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]
Behaviour: TypeAlias = Callable[..., Any]
Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]

if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # generic only in the type stubs
    _Interceptor = grpc.aio.ServerInterceptor


def _default_identity_var() -> ContextVar[Identity]:
    """services.identity.CURRENT_IDENTITY, imported when first needed."""
    return cast(
        "ContextVar[Identity]", importlib.import_module("services.identity").CURRENT_IDENTITY
    )


class AuthInterceptor(_Interceptor):
    """Authenticates and authorises every call (see the module docstring)."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        identity_var: ContextVar[Identity] | None = None,
        pool: DescriptorPool | None = None,
        public_services: Iterable[str] = PUBLIC_SERVICES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._authenticator = authenticator
        self._identity_var = identity_var or _default_identity_var()
        self._pool = pool or descriptor_pool.Default()
        self._public = frozenset(public_services)
        self._clock = clock
        self._rules: dict[str, options_pb2.AuthRule | None] = {}

    def rule_for(self, rpc_path: str) -> options_pb2.AuthRule | None:
        """The rule for ``/pkg.Service/Method`` (cached): public services, then descriptors."""
        if rpc_path not in self._rules:
            public = _service_of(rpc_path) in self._public
            self._rules[rpc_path] = _PUBLIC_RULE if public else rule_for_path(self._pool, rpc_path)
        return self._rules[rpc_path]

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if not _found(handler):
            return handler  # None: an unknown method, which grpc answers with UNIMPLEMENTED
        if _service_of(handler_call_details.method) in self._public:
            return handler
        try:
            identity = await self.authorize(
                handler_call_details.method, handler_call_details.invocation_metadata
            )
        except AuthError as error:
            return _rejecting(handler, error)
        if identity is None:
            return handler
        return _with_identity(handler, identity, self._identity_var, self.expires_in(identity))

    async def authorize(self, rpc_path: str, metadata: Metadata | None) -> Identity | None:
        """Decides a call of ``rpc_path`` carrying ``metadata``: the caller's identity, or None
        for an anonymous call of a public method; raises AuthError. The interceptor decides
        every call with it, and services/share.py each caller attached to a shared stream."""
        token = _token(metadata)
        return await self._authenticator.authorize(token, self.rule_for(rpc_path))

    def expires_in(self, identity: Identity) -> float | None:
        """Seconds until a stream of ``identity`` ends "token expired" (None: never)."""
        return None if identity.expires_at is None else identity.expires_at - self._clock()


def _service_of(rpc_path: str) -> str:
    return rpc_path.lstrip("/").partition("/")[0]


def _found(handler: Handler | None) -> bool:
    """Whether the server knows the method (the stubs type the continuation as never None)."""
    return handler is not None


def _token(metadata: Metadata | None) -> str | None:
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        return None
    if len(values) > 1 or not isinstance(values[0], str):
        from gateway.auth import InvalidRequest

        raise InvalidRequest("send exactly one authorization metadata entry")
    return bearer_token(values[0])


def _status(error: AuthError) -> grpc.StatusCode:
    return grpc.StatusCode[error.grpc_status]


# --- handlers -----------------------------------------------------------------------------------


def rebuilt_handler(handler: Handler, behaviour: Behaviour) -> Handler:
    """A handler of ``handler``'s cardinality and serializers running ``behaviour``."""
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return factory(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def handler_behaviour(handler: Handler) -> Behaviour:
    behaviour = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
    assert behaviour is not None  # a handler always has the behaviour of its cardinality
    return behaviour


def _rejecting(handler: Handler, error: AuthError) -> Handler:
    code, message = _status(error), error.description

    async def reject(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    return rebuilt_handler(handler, reject)


def _with_identity(
    handler: Handler, identity: Identity, var: ContextVar[Identity], expires_in: float | None
) -> Handler:
    inner = handler_behaviour(handler)
    if not (inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)):
        return handler  # a synchronous servicer runs in an executor: no task context to set
    if not handler.response_streaming:
        return rebuilt_handler(handler, _unary(inner, identity, var))
    if inspect.isasyncgenfunction(inner):
        return rebuilt_handler(handler, _generator(inner, identity, var, expires_in))
    return rebuilt_handler(handler, _writer(inner, identity, var, expires_in))


def _unary(inner: Behaviour, identity: Identity, var: ContextVar[Identity]) -> Behaviour:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        var.set(identity)  # this task's context only: each RPC runs in its own task
        return await inner(request, context)

    return behaviour


def _writer(
    inner: Behaviour, identity: Identity, var: ContextVar[Identity], expires_in: float | None
) -> Behaviour:
    """A streaming handler written with ``context.write``: cancelled at expiry."""

    async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        var.set(identity)
        try:
            async with asyncio.timeout(expires_in):
                await inner(request, context)
        except TimeoutError:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, TokenExpired().description)

    return behaviour


def _generator(
    inner: Behaviour, identity: Identity, var: ContextVar[Identity], expires_in: float | None
) -> Behaviour:
    """A streaming handler written as an async generator: each step is bounded by the expiry."""

    async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        var.set(identity)
        loop = asyncio.get_running_loop()
        deadline = None if expires_in is None else loop.time() + expires_in
        responses: AsyncIterator[Any] = inner(request, context)
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        response = await anext(responses)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, TokenExpired().description)
                yield response
        finally:
            await cast("Any", responses).aclose()

    return behaviour


# --- development tokens -------------------------------------------------------------------------


def mint_dev_token(
    subject: str,
    roles: Sequence[str] = (),
    *,
    ttl: float = 3600,
    secret: str | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token for ``subject`` signed with the development secret (kid DEV_KID)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": subject, "roles": list(roles), "iat": issued}
    claims["exp"] = issued + int(ttl)
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    key = dev_secret() if secret is None else secret
    return jwt.encode(claims, key, algorithm="HS256", headers={"kid": DEV_KID})


async def _run_token(namespace: argparse.Namespace) -> int:
    roles = [role.strip() for role in namespace.roles.split(",") if role.strip()]
    print(
        mint_dev_token(
            namespace.sub, roles, ttl=namespace.ttl, issuer=namespace.iss, audience=namespace.aud
        )
    )
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(
            f"--ttl must be a positive number of seconds, got {text!r}"
        )
    return int(text)


def add_token_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``token``: print a development token (sets ``run`` like the other commands)."""
    parser = commands.add_parser(
        "token",
        help="print a development JWT",
        description="Print an HS256 token signed with the development secret "
        "(SWITCHBOARD_DEV_SECRET, or a file generated under $XDG_STATE_HOME/switchboard). "
        "A service or gateway started with auth dev mode accepts it.",
    )
    parser.add_argument("--sub", required=True, help="the user id (the token's sub)")
    parser.add_argument("--roles", default="", help="comma-separated roles, e.g. member,admin")
    parser.add_argument("--ttl", type=_positive, default=3600, help="lifetime in seconds")
    parser.add_argument("--iss", default=None, help="issuer claim (when the server checks iss)")
    parser.add_argument("--aud", default=None, help="audience claim (when the server checks aud)")
    parser.set_defaults(run=_run_token)
