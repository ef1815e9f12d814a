"""Scenario "transcode": the gateway's JSON mapping against google.protobuf.json_format.

In-process, no servers. For each Switchboard message (a Message, a Room, a RoomEvent and a
ListMessagesResponse of 50 messages) and each direction:

- encode: ``gateway.transcode.encode_message`` vs ``json_format.MessageToJson`` (same
  options: camelCase names, unpopulated fields printed, or both left out in "sparse");
- decode: ``gateway.transcode.decode_json_message`` vs ``json_format.Parse``;
- build_request: ``gateway.transcode.build_request`` for PostMessage (path + body field) vs
  what a handler writes by hand (construct + ``json_format.Parse``); GetRoom (path only) vs
  a hand-written constructor call is shown too but is not part of the target (no JSON).

Times are CPU time of this thread (``time.thread_time``: other load on the machine does not
count), the best of several repeats with the two sides interleaved, in µs per message.
Every pair's outputs are compared first: equal JSON values for encode, equal messages for
decode and build_request; a mismatch is recorded (and counts as a missed target), never
hidden.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from bench.stats import ratio
from gateway.transcode import (
    JsonOptions,
    QueryOptions,
    build_request,
    decode_json_message,
    encode_message,
)
from switchboard.v1 import chat_pb2, rooms_pb2

REPEATS = 7


@dataclass(frozen=True)
class Case:
    """One comparison: the gateway's function and json_format's, on the same input."""

    name: str
    gateway: Callable[[], Any]
    baseline: Callable[[], Any]
    same: Callable[[Any, Any], bool]
    in_target: bool = True


def _message(offset: int) -> chat_pb2.Message:
    message = chat_pb2.Message(
        name=f"rooms/bench/messages/{offset:016x}",
        text=f'hello number {offset}, with ünïcode ✓ and "quotes"',
        sender="users/alice",
        offset=offset,
        epoch="5f0c6a7e2b1d9c33",
        attributes={"client": "bench", "lang": "en"},
    )
    message.create_time.FromNanoseconds(1_763_700_000_123_456_789 + offset)
    return message


def _room() -> rooms_pb2.Room:
    room = rooms_pb2.Room(
        name="rooms/bench",
        display_name="Bench room",
        description="a room for the benchmarks",
        labels={"team": "core", "tier": "gold"},
        etag="a1b2c3d4e5f6",
        creator="users/alice",
        last_offset=1234,
        epoch="5f0c6a7e2b1d9c33",
    )
    room.create_time.FromNanoseconds(1_763_700_000_000_000_000)
    room.update_time.FromNanoseconds(1_763_700_001_500_000_000)
    return room


def _event() -> chat_pb2.RoomEvent:
    event = chat_pb2.RoomEvent(
        id="5f0c6a7e2b1d9c33-42", offset=42, epoch="5f0c6a7e2b1d9c33", room="rooms/bench"
    )
    event.time.FromNanoseconds(1_763_700_000_123_456_000)
    event.message_posted.CopyFrom(_message(42))
    return event


def _page() -> chat_pb2.ListMessagesResponse:
    page = chat_pb2.ListMessagesResponse(
        next_page_token="b2Zmc2V0PTUw", epoch="5f0c6a7e2b1d9c33", first_offset=1, last_offset=50
    )
    page.messages.extend(_message(offset) for offset in range(1, 51))
    return page


SAMPLES: dict[str, Message] = {
    "Message": _message(7),
    "Room": _room(),
    "RoomEvent": _event(),
    "ListMessagesResponse(50)": _page(),
}


def _same_json(ours: bytes, theirs: str) -> bool:
    return bool(json.loads(ours) == json.loads(theirs))


def _encode_cases(emit_unpopulated: bool) -> list[Case]:
    options = JsonOptions(emit_unpopulated=emit_unpopulated)
    label = "full" if emit_unpopulated else "sparse"
    cases = []
    for name, message in SAMPLES.items():
        ours = functools.partial(encode_message, message, options=options)
        theirs = functools.partial(
            json_format.MessageToJson,
            message,
            indent=None,
            always_print_fields_with_no_presence=emit_unpopulated,
        )
        cases.append(Case(f"encode {name} ({label})", ours, theirs, _same_json))
    return cases


def _same_message(ours: Message, theirs: Message) -> bool:
    return bool(ours == theirs)


def _parse(data: bytes, cls: type[Message]) -> Message:
    return json_format.Parse(data, cls(), ignore_unknown_fields=True)


def _decode_cases() -> list[Case]:
    options = JsonOptions()
    cases = []
    for name, message in SAMPLES.items():
        data = json_format.MessageToJson(message, indent=None).encode()
        cls = type(message)
        descriptor = cast(Descriptor, cls.DESCRIPTOR)  # the stubs offer a Python | upb union
        ours = functools.partial(decode_json_message, descriptor, data, options)
        theirs = functools.partial(_parse, data, cls)
        cases.append(Case(f"decode {name}", ours, theirs, _same_message))
    return cases


def _post_by_hand(body: bytes) -> chat_pb2.PostMessageRequest:
    request = chat_pb2.PostMessageRequest(parent="rooms/bench")
    json_format.Parse(body, request.message, ignore_unknown_fields=True)
    return request


def _build_cases() -> list[Case]:
    options, query_options = JsonOptions(), QueryOptions()
    body = b'{"text":"hello there","attributes":{"client":"bench","lang":"en"}}'

    def post() -> Message:
        return build_request(
            chat_pb2.PostMessageRequest.DESCRIPTOR,
            path_bindings=((("parent",), "rooms/bench"),),
            query=(),
            body=body,
            body_field="message",
            content_type="application/json",
            http_method="POST",
            options=options,
            query_options=query_options,
        )

    def get() -> Message:
        return build_request(
            rooms_pb2.GetRoomRequest.DESCRIPTOR,
            path_bindings=((("name",), "rooms/bench"),),
            query=(),
            body=None,
            body_field="",
            content_type="",
            http_method="GET",
            options=options,
            query_options=query_options,
        )

    return [
        Case("build_request PostMessage", post, lambda: _post_by_hand(body), _same_message),
        Case(
            "build_request GetRoom",
            get,
            lambda: rooms_pb2.GetRoomRequest(name="rooms/bench"),
            _same_message,
            in_target=False,
        ),
    ]


def _loops(function: Callable[[], Any], budget_s: float) -> int:
    """How many calls fill budget_s / REPEATS."""
    calls, start = 0, time.thread_time()
    while time.thread_time() - start < 0.02:
        function()
        calls += 1
    return max(1, int(budget_s / REPEATS / ((time.thread_time() - start) / calls)))


def _timed(function: Callable[[], Any], loops: int) -> float:
    start = time.thread_time()
    for _ in range(loops):
        function()
    return (time.thread_time() - start) / loops


def _measure(case: Case, budget_s: float) -> dict[str, Any]:
    """Best of REPEATS for each side, the two sides interleaved so that other load on the
    machine hits both alike."""
    try:
        identical = case.same(case.gateway(), case.baseline())
        error = ""
    except Exception as exc:  # a crash is a result too: report it, keep going
        identical, error = False, f"{type(exc).__name__}: {exc}"
    row: dict[str, Any] = {"case": case.name, "identical_output": identical}
    if not case.in_target:
        row["note"] = (
            "hand-written construction, no JSON involved: informational, not in the target"
        )
    if error:
        row["error"] = error
        return row
    ours, theirs = _loops(case.gateway, budget_s), _loops(case.baseline, budget_s)
    best_ours = best_theirs = float("inf")
    for _ in range(REPEATS):
        best_ours = min(best_ours, _timed(case.gateway, ours))
        best_theirs = min(best_theirs, _timed(case.baseline, theirs))
    row.update(
        gateway_us=round(best_ours * 1e6, 2),
        json_format_us=round(best_theirs * 1e6, 2),
        speedup=ratio(best_theirs, best_ours),
    )
    return row


def all_cases() -> list[Case]:
    return [*_encode_cases(True), *_encode_cases(False), *_decode_cases(), *_build_cases()]


def run(*, full: bool) -> dict[str, Any]:
    budget_s = 1.0 if full else 0.1
    cases = all_cases()
    rows = [_measure(case, budget_s) for case in cases]
    in_target = [row for row, case in zip(rows, cases, strict=True) if case.in_target]
    speedups = [row["speedup"] for row in in_target if row.get("speedup")]
    all_identical = all(row["identical_output"] for row in rows)
    slowest = min(speedups) if speedups else None
    return {
        "parameters": {"cpu_seconds_per_side_per_case": budget_s, "repeats": REPEATS},
        "rows": rows,
        "all_identical": all_identical,
        "min_speedup": slowest,
        "target": "gateway not slower than json_format (speedup >= 1.0) with identical output",
        "target_met": bool(all_identical and slowest is not None and slowest >= 1.0),
    }
