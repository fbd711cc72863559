"""Repetitions -> median and spread, the one summary every benchmark reports."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def summary(values: list[float]) -> dict:
    """Median, min, max and every value (rounded for reading)."""
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "runs": [round(v, 2) for v in values],
    }


def rate(work: Callable[[], int], reps: int) -> dict:
    """Items/s of ``work`` (which returns how many items it handled), ``reps`` timed calls after one warm-up call."""
    work()
    values = []
    for _ in range(reps):
        started = time.perf_counter()
        items = work()
        values.append(items / (time.perf_counter() - started))
    return summary(values)


def spread(s: dict) -> str:
    """``median (min-max)`` for a table cell."""
    return (
        f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"
        if s["median"] >= 100
        else f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})"
    )
