"""A standards-following ``text/event-stream`` parser for the tests.

Follows the WHATWG HTML "Server-sent events" interpretation rules: lines end
with CRLF, LF or CR (a CRLF split across two chunks is one line end); a leading
BOM is dropped; ``:`` starts a comment; one space after the colon is removed;
``data`` lines are joined with LF; an ``id`` holding NUL is ignored; the last
event id persists across events; ``retry`` takes only ASCII digits; an event is
dispatched at a blank line only when its data buffer is non-empty, and an
unterminated event at the end of the stream is dropped.

    parser = SseParser()
    for event in parser.feed(chunk): ...
"""

from __future__ import annotations

import asyncio
import codecs
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event, as an EventSource ``MessageEvent`` would carry it."""

    type: str
    data: str
    last_event_id: str


@dataclass
class SseParser:
    """Incremental parser: feed bytes, get the events completed by them."""

    last_event_id: str = ""
    retry_ms: int | None = None
    comments: list[str] = field(default_factory=list)
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    _pending: str = ""
    _skip_lf: bool = False
    _started: bool = False
    _data: list[str] = field(default_factory=list)
    _event_type: str = ""
    _id_buffer: str = ""

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Parse ``chunk``; returns the events whose blank line it completed."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        events: list[ServerSentEvent] = []
        for line in self._lines(text):
            event = self._process(line)
            if event is not None:
                events.append(event)
        return events

    def _lines(self, text: str) -> list[str]:
        if self._skip_lf and text:
            text = text.removeprefix("\n")
            self._skip_lf = False
        buffer = self._pending + text
        lines: list[str] = []
        start = 0
        index = 0
        while index < len(buffer):
            char = buffer[index]
            if char in "\r\n":
                lines.append(buffer[start:index])
                if char == "\r" and index + 1 < len(buffer) and buffer[index + 1] == "\n":
                    index += 1
                elif char == "\r" and index + 1 == len(buffer):
                    self._skip_lf = True
                start = index + 1
            index += 1
        self._pending = buffer[start:]
        return lines

    def _process(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:].removeprefix(" "))
            return None
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        self._field(name, value)
        return None

    def _field(self, name: str, value: str) -> None:
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._id_buffer = value
        elif name == "retry" and value and all("0" <= c <= "9" for c in value):
            self.retry_ms = int(value)

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id_buffer
        data, event_type = self._data, self._event_type
        self._data, self._event_type = [], ""
        if not data:
            return None
        return ServerSentEvent(
            type=event_type or "message", data="\n".join(data), last_event_id=self.last_event_id
        )


async def events_of(
    chunks: AsyncIterator[bytes], parser: SseParser
) -> AsyncIterator[ServerSentEvent]:
    """The events of a byte stream (for example ``response.content.iter_any()``)."""
    async for chunk in chunks:
        for event in parser.feed(chunk):
            yield event


EPHEMERAL = frozenset({"member_joined", "member_left", "typing"})
"""Switchboard's event types whose arrival depends on timing (presence, typing)."""


class EventReader:
    """Reads one SSE response (an aiohttp ClientResponse) with the parser above."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.parser = SseParser()
        self._ready: deque[ServerSentEvent] = deque()

    async def next(self, seconds: float = 5.0) -> ServerSentEvent:
        """The next event that is not ephemeral (presence and typing depend on timing)."""
        async with asyncio.timeout(seconds):
            while True:
                while not self._ready:
                    chunk = await self.response.content.readany()
                    if not chunk:
                        raise EOFError("the stream ended")
                    self._ready.extend(self.parser.feed(chunk))
                event = self._ready.popleft()
                if event.type not in EPHEMERAL:
                    return event

    async def rest(self, seconds: float = 5.0) -> list[ServerSentEvent]:
        """Every event until the stream ends, ephemeral ones included."""
        events = list(self._ready)
        async with asyncio.timeout(seconds):
            async for chunk in self.response.content.iter_any():
                events.extend(self.parser.feed(chunk))
        self._ready.clear()
        return events
