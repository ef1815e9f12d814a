"""``python -m gateway`` logging: the once-a-second time text writes what logging's own would."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from gateway.__main__ import LOG_FORMAT, SecondsFormatter


def _record(created: float) -> logging.LogRecord:
    record = logging.LogRecord("aiohttp.access", logging.INFO, "", 0, "GET %s", ("/v1",), None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


@given(st.lists(st.floats(min_value=0, max_value=4e9), min_size=1, max_size=30))
def test_lines_equal_the_standard_formatters_in_any_order(times: list[float]) -> None:
    standard, cached = logging.Formatter(LOG_FORMAT), SecondsFormatter(LOG_FORMAT)
    for created in sorted(times) + times:  # in order (the cache hits) and shuffled
        assert cached.format(_record(created)) == standard.format(_record(created))


def test_an_explicit_date_format_is_honoured() -> None:
    record = _record(1_795_000_000.25)
    assert SecondsFormatter(LOG_FORMAT).formatTime(record, "%Y") == logging.Formatter(
        LOG_FORMAT
    ).formatTime(record, "%Y")
