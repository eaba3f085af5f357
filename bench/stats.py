"""Percentiles of one measured run, and the median of a figure over repeated runs."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Run:
    """One measured run: the latency of every successful operation, the codes of the failed ones, wall time."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def fail(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def summary(self) -> dict[str, Any]:
        done = len(self.latencies)
        return {
            "count": done,
            "errors": sum(self.errors.values()),
            "error_codes": dict(self.errors),
            "seconds": round(self.seconds, 6),
            "throughput_per_s": round(done / self.seconds, 3) if self.seconds > 0 else None,
            "p50_ms": ms(percentile(self.latencies, 50)),
            "p95_ms": ms(percentile(self.latencies, 95)),
            "p99_ms": ms(percentile(self.latencies, 99)),
            "max_ms": ms(max(self.latencies, default=None)),
        }


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 4)


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 4) if present else None


def median_summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric figure as its median over the repeated runs; counts and errors are added up."""
    merged: dict[str, Any] = {"repeats": len(runs)}
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "throughput_per_s", "seconds"):
        merged[key] = median(run.get(key) for run in runs)
    merged["count"] = sum(run["count"] for run in runs)
    merged["errors"] = sum(run["errors"] for run in runs)
    codes: dict[str, int] = {}
    for run in runs:
        for code, n in run["error_codes"].items():
            codes[code] = codes.get(code, 0) + n
    merged["error_codes"] = codes
    merged["runs"] = list(runs)
    return merged
