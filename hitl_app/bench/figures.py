"""Small statistics and number formatting for the benchmark's figures (no third-party imports)."""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile with linear interpolation (numpy's default); None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def summarise(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, median (p50), p95, min and max of some durations in seconds."""
    return {
        "n": len(values),
        "p50_s": percentile(values, 50),
        "p95_s": percentile(values, 95),
        "min_s": min(values) if values else None,
        "max_s": max(values) if values else None,
    }


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, median, min and max of figures that are not durations (rates, ratios, counts)."""
    return {
        "n": len(values),
        "median": statistics.median(values) if values else None,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }


def median_or_none(values: Sequence[float | None]) -> float | None:
    """The median of the known values; None if there are none."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """The mean of the known values; None if there are none."""
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def fmt(value: Any, unit: str = "", scale: float = 1.0, digits: int = 3) -> str:
    """A figure for the log or the table: ``n/a`` for None, ``yes``/``NO`` for a goal's verdict."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, (int, float)):
        return f"{value * scale:.{digits}f}{unit}"
    return str(value)
