"""The subscriber side every engine shares: a bounded buffer the publisher never waits on.

A ``BufferedSubscription`` yields its replay first, then live events in delivery order. A
delivery that finds the buffer full detaches the subscriber from its publisher and ends it
with SubscriberOverflow once what was buffered has been yielded (the client resumes by
cursor). ``finish`` ends it with any other engine error (room deleted, shutdown). Engines
subclass it to say how a subscriber is detached and what closing releases (presence).
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator

from services.engine.base import Subscription
from services.engine.types import Cursor, EngineError, Event, SubscriberOverflow

log = logging.getLogger("services.engine")
_RELEASING: set[asyncio.Task[None]] = set()  # releases outliving a cancelled close()


class BufferedSubscription(Subscription):
    """Replay, then up to ``limit`` buffered live events; ``deliver`` never blocks."""

    def __init__(self, room_id: str, limit: int, *, recovered: bool, position: Cursor) -> None:
        self.recovered = recovered
        self.position = position
        self._room_id = room_id
        self._limit = limit
        self._replay: list[Event] = []  # reversed: popped from the end
        self._queue: deque[Event] | None = None  # made on the first delivery (idle: none)
        self._end: EngineError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def set_replay(self, replay: list[Event]) -> None:
        self._replay = replay[::-1]

    def take_replay(self) -> list[Event]:
        replay, self._replay, self._queue = self._replay[::-1], [], None
        return replay

    def accepts(self, event: Event) -> bool:
        """Whether a live ``event`` is for this subscriber (a hook for de-duplication)."""
        return True

    def deliver(self, event: Event) -> None:
        if self._end is not None or not self.accepts(event):
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if len(queue) >= self._limit:
            self.detach()
            self.finish(
                SubscriberOverflow(
                    f"subscriber fell more than {self._limit} events behind on "
                    f"rooms/{self._room_id}; resume from the last event id received"
                )
            )
            return
        queue.append(event)
        self._wake()

    def finish(self, error: EngineError) -> None:
        if self._end is None:
            self._end = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            if self._replay:
                yield self._replay.pop()
            elif self._queue:
                yield self._queue.popleft()
            elif self._end is not None:
                raise self._end
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None

    async def close(self) -> None:
        """Detach and release. The release runs to its end even if the closing task is
        cancelled meanwhile (a client cancelling its call cancels the handler, whose
        ``finally`` is closing): half a release would leave the user present."""
        if self._closed:
            return
        self._closed = True
        self.detach()
        release = asyncio.ensure_future(self.release())
        _RELEASING.add(release)
        release.add_done_callback(_RELEASING.discard)
        try:
            await asyncio.shield(release)
        except asyncio.CancelledError:
            release.add_done_callback(_log_failure)  # nobody awaits it any more
            raise

    @abc.abstractmethod
    def detach(self) -> None:
        """Stop receiving deliveries (idempotent)."""

    @abc.abstractmethod
    async def release(self) -> None:
        """What closing gives back, e.g. the subscriber's presence."""


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("releasing a subscription failed: %r", task.exception())
