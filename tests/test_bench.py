"""The benchmark: its statistics, its generated inputs, and a quick run of the whole thing end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from plldb.bench.attach_bench import write_project
from plldb.bench.driver import event_of_size
from plldb.bench.dynamodb_counter import DynamoRequest, tally
from plldb.bench.stats import percentile, summary

SUMMARY_KEYS = {"p50", "p95", "p99", "mean", "n"}


def test_percentile_interpolates_between_closest_ranks() -> None:
    assert percentile([10.0, 20.0, 30.0, 40.0], 0.5) == 25.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 0.99) == pytest.approx(39.7)
    assert percentile([7.0], 0.95) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200))
def test_summary_percentiles_are_ordered_and_within_the_range(values: list[float]) -> None:
    stats = summary(values)
    assert min(values) - 0.01 <= stats["p50"] <= stats["p95"] <= stats["p99"] <= max(values) + 0.01
    assert stats["n"] == len(values)


@given(st.integers(min_value=11, max_value=300_000))
def test_events_have_exactly_the_requested_size(size: int) -> None:
    event = event_of_size(size)
    assert len(event) == size
    assert set(json.loads(event)) == {"data"}


def test_generated_project_has_one_function_per_count(tmp_path: Path) -> None:
    assert write_project(tmp_path, 3) == ["Echo001", "Echo002", "Echo003"]
    template = yaml.safe_load((tmp_path / "template.yaml").read_text())
    assert template["Resources"] == {
        name: {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Runtime": "python3.13",
                "Timeout": 10,
                "Handler": "app.handler",
                "CodeUri": "src/",
            },
        }
        for name in ("Echo001", "Echo002", "Echo003")
    }
    assert list(template["Resources"]) == ["Echo001", "Echo002", "Echo003"]
    assert (tmp_path / "src" / "app.py").read_text() == "def handler(event, context):\n    return event\n"


def test_tally_divides_reads_and_writes_per_caller() -> None:
    requests = [
        DynamoRequest(0.0, "LAYER", "GetItem"),
        DynamoRequest(0.1, "LAYER", "GetItem"),
        DynamoRequest(0.2, "LAYER", "PutItem"),
        DynamoRequest(0.3, "ROUTE", "UpdateItem"),
        DynamoRequest(0.4, "ROUTE", "DescribeTable"),  # neither a read nor a write of items
    ]
    labels = {"LAYER": "layer", "ROUTE": "$default route handler"}
    assert tally(requests, labels.__getitem__, 2) == {
        "$default route handler": {"reads": 0.0, "writes": 0.5},
        "layer": {"reads": 1.0, "writes": 0.5},
        "total": {"reads": 1.0, "writes": 1.0},
    }


def test_quick_run_writes_a_complete_report(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "plldb.bench", "--quick", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["mode"] == "quick"
    assert set(report["machine"]) >= {"cpu_model", "cpus", "python", "os", "moto"}

    levels = report["overhead"]["by_concurrency"]
    assert list(levels) == ["1", "2"]
    for concurrency, rounds in (("1", 3), ("2", 4)):
        level = levels[concurrency]
        assert level["layer_failures"] == 0, level["layer_failure_examples"]
        for name in ("plain_invoke_ms", "layer_invoke_ms", "overhead_ms", "floor_ms"):
            assert set(level[name]) == SUMMARY_KEYS
            assert level[name]["n"] == rounds
        # The p99 target is judged only where the floor's own p99 is under it.
        assert level["p99_target_applies"] == (level["floor_ms"]["p99"] < 100)
        assert (level["p99_target_met"] is None) == (not level["p99_target_applies"])
        assert level["overhead_to_floor_p99_ratio"] == pytest.approx(
            level["overhead_ms"]["p99"] / level["floor_ms"]["p99"], abs=0.001
        )
        assert level["throughput_per_second"]["layer"] > 0
        assert level["throughput_per_second"]["plain"] > 0

    counted = report["overhead"]["dynamodb_per_invocation"]
    assert counted["invocations"] == 2
    # At least the layer's PutItem of the correlation item, and one read of the answer.
    assert counted["layer"]["writes"] >= 1
    assert counted["layer"]["reads"] >= 1
    hold = report["overhead"]["breakpoint_hold"]
    assert hold["hold_seconds"] >= 1.0
    assert hold["latency_ms"] >= 1000
    assert hold["per_second"]["layer"]["reads"] > 0

    cycles = report["attach"]["attach_detach"]["by_function_count"]
    assert list(cycles) == ["1", "2"]
    for cycle in cycles.values():
        assert len(cycle["runs"]) == 1
        assert cycle["attach_seconds_median"] > 0
        assert cycle["detach_seconds_median"] > 0
    assert report["attach"]["real_worker_overhead"]["rounds"] == 2
    assert list(report["attach"]["payload_round_trip"]) == ["1 KB", "100 KB"]
    assert report["attach"]["payload_round_trip"]["100 KB"]["event_travels"] == "as DynamoDB chunk items"

    markdown = (tmp_path / "benchmark.md").read_text()
    for heading in (
        "# plldb benchmark",
        "### Concurrency 1 (3 rounds)",
        "### Concurrency 2 (4 rounds)",
        "## DynamoDB requests",
        "## Attach and detach",
        "## Payload round trip",
    ):
        assert heading in markdown
