"""Schemathesis hooks for the gateway run: NDJSON request bodies (one JSON document per line)."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(_context: Any, value: Any) -> bytes:
    """One generated request message as one NDJSON line."""
    return json.dumps(value).encode() + b"\n"
