"""HTTP headers ↔ gRPC metadata, and the ``Grpc-Timeout`` syntax (sans-IO).

Request side (``request_metadata``): ``Authorization``, the W3C trace context (``traceparent``,
``tracestate``: ``TRACE_KEYS``, always passed through as Envoy does; a value that is not
printable ASCII is dropped, never refused), ``Grpc-Metadata-*`` (prefix stripped), and the
configured allowlist go upstream; ``*-Bin`` values are base64-decoded to bytes;
``X-Forwarded-For`` / ``X-Forwarded-Host`` get the peer and host appended; ``X-Request-Id`` is
always sent. Hop-by-hop headers, ``Host``, ``Content-Length`` and reserved ``grpc-*`` keys are
never forwarded.

Response side (``response_headers``): header metadata becomes ``Grpc-Metadata-*`` headers,
trailing metadata becomes ``Grpc-Trailer-*`` headers when the client sent ``TE: trailers``; the
``x-http-code`` key picks the success status and is never echoed; binary values are base64.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "HTTP_CODE_KEY",
    "TRACE_KEYS",
    "Metadata",
    "MetadataError",
    "ResponseHeaders",
    "metadata_pairs",
    "parse_grpc_timeout",
    "request_metadata",
    "response_headers",
    "wants_trailers",
]

Metadata = tuple[tuple[str, str | bytes], ...]

HTTP_CODE_KEY = "x-http-code"
TRACE_KEYS = frozenset({"traceparent", "tracestate"})  # W3C Trace Context: passed through
METADATA_PREFIX = "grpc-metadata-"
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "user-agent",
    }
)
_KEY = re.compile(r"^[0-9a-z_.-]+$")
_VALUE = re.compile(r"^[\x20-\x7e]*$")
_TIMEOUT = re.compile(r"^([0-9]{1,8})([HMSmun])$")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# Trailers gRPC itself writes; they are carried by the Status body, not echoed.
_STATUS_TRAILERS = frozenset({"grpc-status", "grpc-message", "grpc-status-details-bin"})


class MetadataError(ValueError):
    """A header that cannot become gRPC metadata; ``header`` names it."""

    def __init__(self, header: str, message: str) -> None:
        super().__init__(f"header {header!r}: {message}")
        self.header = header


def metadata_pairs(raw: object) -> Metadata:
    """(key, value) pairs of grpc.aio metadata (or None), which the type stubs describe wrongly."""
    if raw is None:
        return ()
    assert isinstance(raw, Iterable)
    return tuple((str(key), value) for key, value in raw)


def parse_grpc_timeout(text: str) -> float:
    """Seconds from the gRPC timeout syntax: up to 8 digits and a unit of H M S m u n."""
    match = _TIMEOUT.match(text.strip())
    if match is None:
        raise MetadataError(
            "Grpc-Timeout",
            f"invalid timeout {text!r}: expected up to 8 digits and a unit (H, M, S, m, u, n)",
        )
    return int(match.group(1)) * _TIMEOUT_UNITS[match.group(2)]


def request_metadata(
    headers: Iterable[tuple[str, str]],
    *,
    allowlist: Iterable[str] = (),
    peer: str | None,
    host: str | None,
    request_id: str,
) -> Metadata:
    """The metadata to send upstream for a request with ``headers`` (see module docstring)."""
    allowed = _forwarded_names(tuple(allowlist))
    out: list[tuple[str, str | bytes]] = []
    forwarded_for: list[str] = []
    forwarded_host: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "x-forwarded-for":
            forwarded_for.append(value)
        elif lower == "x-forwarded-host":
            forwarded_host.append(value)
        elif lower.startswith(METADATA_PREFIX):
            out.append(_entry(name, lower.removeprefix(METADATA_PREFIX), value))
        elif lower in allowed and lower not in HOP_BY_HOP and lower != "x-request-id":
            if lower not in TRACE_KEYS:
                out.append(_entry(name, lower, value))
            elif value.isascii() and value.isprintable():  # as _VALUE; a bad one is dropped
                out.append((lower, value))
    if peer:
        forwarded_for.append(peer)
    if host:
        forwarded_host.append(host)
    if forwarded_for:
        out.append(("x-forwarded-for", ", ".join(forwarded_for)))
    if forwarded_host:
        out.append(("x-forwarded-host", ", ".join(forwarded_host)))
    out.append(("x-request-id", request_id))
    return tuple(out)


@functools.lru_cache(maxsize=32)
def _forwarded_names(allowlist: tuple[str, ...]) -> frozenset[str]:
    """Header names (lower case) forwarded as they are; one set per allowlist, built once."""
    return frozenset({name.lower() for name in allowlist} | {"authorization", *TRACE_KEYS})


def _entry(header: str, key: str, value: str) -> tuple[str, str | bytes]:
    if not _KEY.match(key) or key.startswith("grpc-") or key in HOP_BY_HOP:
        raise MetadataError(header, f"{key!r} is not a metadata key a client may send")
    if key == "x-request-id":
        raise MetadataError(header, "x-request-id is set from the X-Request-Id header")
    if key.endswith("-bin"):
        return key, _decode_base64(header, value)
    if not _VALUE.match(value):
        raise MetadataError(header, "value must be printable ASCII (use a -Bin header)")
    return key, value


def _decode_base64(header: str, value: str) -> bytes:
    text = value.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MetadataError(header, f"value is not base64: {exc}") from exc


@dataclass(frozen=True)
class ResponseHeaders:
    """HTTP headers made from response metadata, and the success status the method chose."""

    headers: tuple[tuple[str, str], ...]
    http_code: int | None


def response_headers(
    initial: Iterable[tuple[str, str | bytes]],
    trailing: Iterable[tuple[str, str | bytes]] = (),
    *,
    send_trailers: bool = False,
) -> ResponseHeaders:
    """Headers for a response whose call returned ``initial`` and ``trailing`` metadata."""
    headers: list[tuple[str, str]] = []
    code: int | None = None
    for prefix, entries in (("Grpc-Metadata-", initial), ("Grpc-Trailer-", trailing)):
        for key, value in entries:
            if key == HTTP_CODE_KEY:
                code = _http_code(value) if code is None else code
                continue
            if key in HOP_BY_HOP or key in _STATUS_TRAILERS:
                continue
            if prefix == "Grpc-Trailer-" and not send_trailers:
                continue
            headers.append((prefix + key, _header_value(value)))
    return ResponseHeaders(tuple(headers), code)


def _http_code(value: str | bytes) -> int | None:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if text.isdigit() and 200 <= int(text) <= 299:
        return int(text)
    return None


def _header_value(value: str | bytes) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def wants_trailers(headers: Mapping[str, str]) -> bool:
    """Whether the request's ``TE`` header asks for trailers."""
    te = headers.get("TE")
    if not te:
        return False
    return any(token.split(";")[0].strip().lower() == "trailers" for token in te.split(","))
