"""A crowd of subscribers spread over spawned receiver processes (see ``bench.receivers``).

    with Crowd(plan_for(...), processes=2) as crowd:
        crowd.wait_ready(timeout_s)       # every subscriber has its subscribed event
        ...publish or measure memory...
        tallies = crowd.finish(timeout_s) # wait for them to end (or stop them), collect

Each process gets its own stop event and reports on one shared queue. ``merge`` adds
the tallies up. Nothing is dropped: a process that never reported is a stream error.
"""

from __future__ import annotations

import queue as queue_module
import time
from dataclasses import replace
from multiprocessing import get_context
from types import TracebackType
from typing import Any

from bench.receivers import Plan, Tally, receive

_SPAWN = get_context("spawn")
STALL_S = 20.0


class Crowd:
    """Receiver processes for one plan, split evenly."""

    def __init__(self, plan: Plan, *, processes: int) -> None:
        processes = max(1, min(processes, plan.count))
        self.plan = plan
        self.queue: Any = _SPAWN.Queue()
        self.stops = [_SPAWN.Event() for _ in range(processes)]
        share, extra = divmod(plan.count, processes)
        self.plans, first = [], 0
        for index in range(processes):
            count = share + (1 if index < extra else 0)
            self.plans.append(replace(plan, count=count, first_id=first))
            first += count
        self.processes = [
            _SPAWN.Process(target=receive, args=(p, self.queue, stop), daemon=True)
            for p, stop in zip(self.plans, self.stops, strict=True)
        ]
        self.tallies: list[Tally] = []
        self.ready = 0
        self.pids: list[int] = []

    def __enter__(self) -> Crowd:
        for process in self.processes:
            process.start()
        self.pids = [p.pid for p in self.processes if p.pid is not None]
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for stop in self.stops:
            stop.set()
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()

    def _alive(self) -> bool:
        return any(process.is_alive() for process in self.processes)

    def _take(self, deadline: float) -> bool:
        """Takes one report; False at the deadline, or when every process has died silently."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                kind, value = self.queue.get(timeout=min(0.5, remaining))
            except queue_module.Empty:
                if not self._alive():
                    return False
                continue
            if kind == "ready":
                self.ready += value
            else:
                self.tallies.append(value)
            return True

    def wait_ready(self, timeout_s: float, stall_s: float = STALL_S) -> bool:
        """True when every subscriber is subscribed within the time-out; gives up early when
        no new subscriber has come through for stall_s seconds."""
        deadline = time.monotonic() + timeout_s
        while self.ready < self.plan.count and len(self.tallies) < len(self.processes):
            if not self._take(min(deadline, time.monotonic() + stall_s)):
                return False
        return self.ready == self.plan.count

    def finish(self, timeout_s: float) -> list[Tally]:
        """Waits up to timeout_s for the processes to end by themselves, then stops them."""
        deadline = time.monotonic() + timeout_s
        while len(self.tallies) < len(self.processes) and self._take(deadline):
            pass
        for stop in self.stops:
            stop.set()
        late = time.monotonic() + 30
        while len(self.tallies) < len(self.processes) and self._take(late):
            pass
        missing = len(self.processes) - len(self.tallies)
        if missing:
            codes = [p.exitcode for p in self.processes]
            note = f"{missing} receiver process(es) never reported (exit codes {codes})"
            self.tallies.append(Tally(stream_errors=[note]))
        return self.tallies


def merge(tallies: list[Tally]) -> Tally:
    total = Tally()
    for tally in tallies:
        total.subscribers += tally.subscribers
        total.ready += tally.ready
        total.received += tally.received
        total.violations += tally.violations
        total.violation_samples += tally.violation_samples[: 20 - len(total.violation_samples)]
        total.stream_errors += tally.stream_errors
        total.latencies_s += tally.latencies_s
        total.last_receive_ns = max(total.last_receive_ns, tally.last_receive_ns)
    return total
