"""Summary statistics over latency samples (seconds in, milliseconds or µs out)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentiles_ms(samples: Sequence[float] | np.ndarray) -> dict[str, float | int]:
    """p50/p90/p99/max of latency samples given in seconds, in milliseconds."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size == 0:
        return {"count": 0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99]) * 1e3
    return {
        "count": int(values.size),
        "p50_ms": round(float(p50), 4),
        "p90_ms": round(float(p90), 4),
        "p99_ms": round(float(p99), 4),
        "max_ms": round(float(values.max()) * 1e3, 4),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator rounded to 3 places; None when either is missing or zero."""
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 3)
