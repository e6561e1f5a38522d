"""Latency statistics the benchmark reports: percentiles by linear interpolation, in milliseconds."""

from __future__ import annotations


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (fraction 0.5 is the median)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def summary(values_ms: list[float]) -> dict[str, float]:
    """p50, p95, p99, mean and the sample count of a list of milliseconds."""
    return {
        "p50": round(percentile(values_ms, 0.50), 2),
        "p95": round(percentile(values_ms, 0.95), 2),
        "p99": round(percentile(values_ms, 0.99), 2),
        "mean": round(sum(values_ms) / len(values_ms), 2),
        "n": len(values_ms),
    }
