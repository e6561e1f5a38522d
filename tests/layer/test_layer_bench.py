"""The benchmark's arithmetic and report files (the benchmark itself runs with `make bench`, never as a test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plldb import bench


def test_percentiles_interpolate_between_closest_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert bench.percentile(values, 0.5) == 50.5
    assert bench.percentile(values, 0.95) == pytest.approx(95.05)
    assert bench.percentile(values, 0.99) == pytest.approx(99.01)
    assert bench.percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError, match="no values"):
        bench.percentile([], 0.5)


def test_results_are_written_as_json_and_markdown(tmp_path: Path) -> None:
    stats = {"p50": 20.0, "p95": 25.0, "p99": 30.0, "mean": 21.0}
    report = {
        "invocations": 200,
        "plain_invoke_ms": stats,
        "layer_invoke_ms": stats,
        "layer_overhead_ms": stats,
        "floor_ms": stats,
        "overhead_to_floor_p50_ratio": 1.1,
        "target_ratio": bench.TARGET_RATIO,
        "target_met": True,
        "layer_failures": 0,
        "layer_failure_examples": [],
        "layer_dynamodb_reads_per_invocation": 2.5,
        "floor_dynamodb_reads_per_invocation": 1,
        "machine": {"python": "3.11.7", "platform": "Linux", "cpus": 2, "load_average": [0.5, 0.4, 0.3]},
        "measured_at": "2025-01-01T00:00:00Z",
    }
    json_path, markdown_path = bench.write_results(report, tmp_path / "results")
    assert json.loads(json_path.read_text()) == report
    text = markdown_path.read_text()
    assert "| **floor** (put, post, reply via $default, read) | 20.0 | 25.0 | 30.0 | 21.0 |" in text
    assert "Overhead p50 / floor p50 = **1.1** (target ≤ 1.5: met)." in text
    assert "DynamoDB reads per invocation: layer 2.5, floor 1." in text
    assert "failed" not in text
