"""Encoded stream frames shared by every stream of one route: raw message bytes → wire bytes.

A server-streaming fan-out sends the same upstream message to many HTTP streams; each would
parse it and encode the same JSON and the same SSE event (or NDJSON line). ``FrameCache`` keeps
the frame for recently seen message bytes, so only the first stream pays for the encoding.

Invariants: the frame for given message bytes is a pure function of those bytes and of the
cache's key (format, method, response_body, JSON options): identical bytes always give an
identical frame, whatever the backend, so sharing is safe. The cache is bounded both in entries
and in bytes held; the least recently used entries go first; a message larger than a quarter of
the byte bound is never kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Final

from aiohttp import web

__all__ = ["FRAME_CACHES", "FrameCache", "FrameCaches", "frame_cache"]

DEFAULT_ENTRIES: Final = 256
DEFAULT_BYTES: Final = 4 * 1024 * 1024


class FrameCache:
    """A bounded LRU map from message bytes to the frame they encode to."""

    def __init__(self, *, max_entries: int = DEFAULT_ENTRIES, max_bytes: int = DEFAULT_BYTES):
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(
                f"FrameCache bounds must be positive (max_entries={max_entries}, "
                f"max_bytes={max_bytes})"
            )
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._frames: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def size(self) -> int:
        """Bytes held: every kept message and its frame."""
        return self._size

    def frame(self, raw: bytes, render: Callable[[bytes], bytes]) -> bytes:
        """The frame for ``raw``: cached, else ``render(raw)`` (then kept when it fits)."""
        found = self._frames.get(raw)
        if found is not None:
            self._frames.move_to_end(raw)
            return found
        rendered = render(raw)
        self._keep(raw, rendered)
        return rendered

    def _keep(self, raw: bytes, rendered: bytes) -> None:
        cost = len(raw) + len(rendered)
        if cost * 4 > self.max_bytes:
            return
        self._frames[raw] = rendered
        self._size += cost
        while len(self._frames) > self.max_entries or self._size > self.max_bytes:
            old_raw, old_frame = self._frames.popitem(last=False)
            self._size -= len(old_raw) + len(old_frame)


class FrameCaches:
    """One ``FrameCache`` per key (format, method, response shape, JSON options) in an app."""

    def __init__(self) -> None:
        self._caches: dict[Hashable, FrameCache] = {}

    def for_key(self, key: Hashable) -> FrameCache:
        found = self._caches.get(key)
        if found is None:
            found = self._caches[key] = FrameCache()
        return found


FRAME_CACHES: Final = web.AppKey("frame_caches", FrameCaches)


def frame_cache(app: web.Application, key: Hashable) -> FrameCache:
    """The app's shared cache for ``key`` (a private one when the app has no registry)."""
    caches = app.get(FRAME_CACHES)
    return caches.for_key(key) if caches is not None else FrameCache()
