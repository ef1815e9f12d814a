"""google.api.http path templates and the route table that matches requests against them.

Sans-IO: parses `HttpRule` path templates, compiles them into a trie keyed by path segment and
matches a raw (still percent-encoded) request path to the most specific route.

Invariants:
- A template's literals and verb are stored normalized (percent-escapes of unreserved characters
  decoded, other escapes upper-cased), and request segments are normalized the same way before
  they are compared, so `/v1/%72ooms` reaches the literal `rooms`.
- Specificity is decided segment by segment from the left: a literal beats `*`, which beats `**`;
  at the end of the path a template that ends beats a `**` matching nothing. Registration order
  never changes the winner.
- Matching is iterative (an explicit stack) and visits each trie node at most once per
  interpretation of the path, so its cost follows the path's depth in the trie, not the number of
  routes or the length of a `**` tail.
- `*` matches exactly one non-empty segment; `**` matches zero or more segments of any content.
- A `:verb` suffix of the last segment, when some template has that verb, is read as the verb
  first; if a route with that verb matches the path under any HTTP method, that reading decides
  (the route, or 405 naming its methods). Otherwise the suffix is part of the last segment's data.
  A ':' in an earlier segment, or an encoded one (`%3A`), is always data.
- Single-segment variables are fully percent-decoded; multi-segment variables keep `%2F`/`%2f` as
  written and decode everything else. '+' is never a space. Bound values are valid UTF-8 text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from gateway._template import (
    MULTI_WILDCARD,
    WILDCARD,
    PathTemplate,
    TemplateError,
    Variable,
    normalize_literal,
)

__all__ = [
    "MULTI_WILDCARD",
    "WILDCARD",
    "Bindings",
    "ConflictError",
    "Matched",
    "MethodNotAllowed",
    "PathError",
    "PathTemplate",
    "RouteTable",
    "TemplateError",
    "Variable",
]

T = TypeVar("T")

Bindings = tuple[tuple[tuple[str, ...], str], ...]

_MALFORMED_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SHOWN_PATH = 80


class PathError(ValueError):
    """A request path that cannot be decoded (bad percent-escape, not UTF-8): HTTP 400."""


class ConflictError(ValueError):
    """Two bindings for the same HTTP method that match exactly the same paths."""


@dataclass(frozen=True)
class Matched(Generic[T]):
    """The route that won, with each variable's field path and its decoded value."""

    target: T
    bindings: Bindings


@dataclass(frozen=True)
class MethodNotAllowed:
    """The path matches routes, but none for the request's HTTP method (HTTP 405 with Allow)."""

    allowed: frozenset[str]


@dataclass(frozen=True)
class _Entry(Generic[T]):
    method: str
    template: PathTemplate
    target: T


# verb -> HTTP method -> entry
_Endpoints = dict[str, dict[str, _Entry[T]]]


@dataclass
class _Node(Generic[T]):
    literals: dict[str, _Node[T]] = field(default_factory=dict)
    single: _Node[T] | None = None
    exact: _Endpoints[T] = field(default_factory=dict)
    multi: _Endpoints[T] = field(default_factory=dict)


def _shown(path: str) -> str:
    return repr(path if len(path) <= _SHOWN_PATH else path[:_SHOWN_PATH] + "...")


def _check_escapes(path: str) -> None:
    bad = _MALFORMED_ESCAPE.search(path)
    if bad is not None:
        escape = path[bad.start() : bad.start() + 3]
        raise PathError(
            f"malformed percent-escape {escape!r} at position {bad.start()} of path {_shown(path)}"
        )


def _decode(raw: str, *, keep_slash: bool) -> str:
    """Percent-decode `raw` (escapes already checked); keep `%2F`/`%2f` if `keep_slash`."""
    if "%" not in raw:
        return raw
    parts = raw.split("%")
    try:
        out = bytearray(parts[0].encode("utf-8"))
        for part in parts[1:]:
            byte = int(part[:2], 16)
            if keep_slash and byte == 0x2F:
                out += b"%" + part[:2].encode("ascii")
            else:
                out.append(byte)
            out += part[2:].encode("utf-8")
        return out.decode("utf-8")
    except (UnicodeError, ValueError) as exc:
        raise PathError(f"path value {_shown(raw)} is not valid UTF-8 after decoding") from exc


def _split(path: str) -> list[str]:
    if not path.startswith("/"):
        raise PathError(f"path {_shown(path)} must start with '/'")
    if "%" in path:
        _check_escapes(path)
    return [] if path == "/" else path[1:].split("/")


def _trie_keys(template: PathTemplate) -> tuple[tuple[str, ...], bool]:
    """The trie edges for `template` and whether it ends in `**`."""
    segments = template.segments
    if segments and segments[-1] == MULTI_WILDCARD:
        return segments[:-1], True
    return segments, False


def _bind(template: PathTemplate, raw: Sequence[str]) -> Bindings:
    bindings: list[tuple[tuple[str, ...], str]] = []
    for variable in template.variables:
        end = len(raw) if variable.open_ended else variable.end
        if variable.multi_segment:
            value = _decode("/".join(raw[variable.start : end]), keep_slash=True)
        else:
            value = _decode(raw[variable.start], keep_slash=False)
        bindings.append((variable.field_path, value))
    return tuple(bindings)


class RouteTable(Generic[T]):
    """(HTTP method, path template) → target, matched most-specific-first.

    HTTP methods are compared exactly as given (no implicit HEAD for GET); any string works,
    so custom HttpRule kinds such as "OPTIONS" are ordinary methods.
    """

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._entries: list[_Entry[T]] = []
        self._verbs: set[str] = set()
        # (normalized literal segments, verb) -> method -> entry, for templates without wildcards
        self._literal: dict[tuple[tuple[str, ...], str], dict[str, _Entry[T]]] = {}

    def add(self, http_method: str, template: PathTemplate, target: T) -> None:
        """Register a binding; raise ConflictError if an equivalent one exists for the method."""
        if not http_method or http_method != http_method.strip():
            raise ValueError(f"invalid HTTP method {http_method!r} for template '{template}'")
        keys, open_ended = _trie_keys(template)
        node = self._root
        for key in keys:
            node = self._child(node, key)
        endpoints = (node.multi if open_ended else node.exact).setdefault(template.verb, {})
        existing = endpoints.get(http_method)
        if existing is not None:
            raise ConflictError(
                f"{http_method} '{template}' conflicts with {http_method} '{existing.template}':"
                " they match exactly the same paths"
            )
        entry = _Entry(http_method, template, target)
        endpoints[http_method] = entry
        self._entries.append(entry)
        if template.verb:
            self._verbs.add(template.verb)
        if not open_ended and WILDCARD not in keys:
            self._literal[(keys, template.verb)] = endpoints

    @staticmethod
    def _child(node: _Node[T], key: str) -> _Node[T]:
        if key == WILDCARD:
            if node.single is None:
                node.single = _Node()
            return node.single
        return node.literals.setdefault(key, _Node())

    def routes(self) -> list[tuple[str, PathTemplate, T]]:
        """Every binding as (method, template, target), in registration order."""
        return [(entry.method, entry.template, entry.target) for entry in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, http_method: str, path: str) -> Matched[T] | MethodNotAllowed | None:
        """Match a raw path (percent-encoded, no query) for `http_method`.

        Returns the most specific route for the method, MethodNotAllowed when the path matches
        only under other methods, or None when nothing matches. Raises PathError for a
        malformed path.
        """
        raw = _split(path)
        for segments, verb in self._interpretations(raw):
            entry = self._lookup(http_method, segments, verb)
            if entry is not None:
                return Matched(entry.target, _bind(entry.template, segments))
            allowed = {method for found in self._candidates(segments, verb) for method in found}
            if allowed:
                return MethodNotAllowed(frozenset(allowed))
        return None

    def _interpretations(self, raw: list[str]) -> Iterator[tuple[list[str], str]]:
        """(raw segments, verb) readings of the path: a registered verb first, then none."""
        if raw and self._verbs:
            last = raw[-1]
            colon = last.rfind(":")
            if colon >= 0:
                verb = normalize_literal(last[colon + 1 :])
                if verb in self._verbs:
                    yield [*raw[:-1], last[:colon]], verb
        yield raw, ""

    def _lookup(self, http_method: str, raw: list[str], verb: str) -> _Entry[T] | None:
        keys = [normalize_literal(segment) for segment in raw]
        fast = self._literal.get((tuple(keys), verb))
        if fast is not None and http_method in fast:
            return fast[http_method]
        for endpoints in self._walk(keys, verb):
            entry = endpoints.get(http_method)
            if entry is not None:
                return entry
        return None

    def _candidates(self, raw: list[str], verb: str) -> Iterator[dict[str, _Entry[T]]]:
        return self._walk([normalize_literal(segment) for segment in raw], verb)

    def _walk(self, keys: list[str], verb: str) -> Iterator[dict[str, _Entry[T]]]:
        """Endpoints matching the normalized segments, most specific first (iterative DFS)."""
        count = len(keys)
        # (node, index, is_multi): is_multi means "node's `**` endpoints consume keys[index:]"
        stack: list[tuple[_Node[T], int, bool]] = [(self._root, 0, False)]
        while stack:
            node, index, is_multi = stack.pop()
            if is_multi:
                endpoints = node.multi.get(verb)
                if endpoints:
                    yield endpoints
                continue
            if node.multi:
                stack.append((node, index, True))
            if index == count:
                endpoints = node.exact.get(verb)
                if endpoints:
                    yield endpoints
                continue
            key = keys[index]
            if node.single is not None and key:
                stack.append((node.single, index + 1, False))
            child = node.literals.get(key)
            if child is not None:
                stack.append((child, index + 1, False))
