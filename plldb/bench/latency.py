"""Latency phases run by the driver process, and what each level's figures mean against the floor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from plldb.bench.floor import StoredWatcher
from plldb.bench.processes import JsonLinesProcess
from plldb.bench.stats import percentile, summary

TARGET_RATIO = 1.2  # at concurrency 1, the real path's overhead p50 at most this multiple of the floor's
TARGET_RATIO_CONCURRENCY = 1
TARGET_P99_MS = 100.0  # at every concurrency, the overhead's p99 under this
EVENT = '{"ok": true}'  # what the echo functions return, and what the scripted debugger answers


@dataclass
class DriverRunner:
    """Starts one driver process per phase and feeds it the floor's stored answers."""

    environment: dict[str, str]
    watcher: StoredWatcher | None

    def run(self, work: dict[str, Any]) -> dict[str, Any]:
        driver = JsonLinesProcess.python_module("plldb.bench.driver", [], self.environment)
        driver.start()
        try:
            if self.watcher is not None:
                self.watcher.attach(lambda caller, delivery_id: driver.send(f"stored {caller} {delivery_id}"))
            driver.send(json.dumps(work))
            result = driver.last_event()
            assert driver.process is not None
            code = driver.process.wait(60)
        finally:
            if self.watcher is not None:
                self.watcher.attach(None)
            driver.stop()
        if code != 0:
            raise RuntimeError(f"the driver failed (exit {code}): {driver.stderr[-15:]}")
        return result


def latency_work(
    concurrency: int,
    rounds: int,
    *,
    warm_up: int,
    plain: str | None,
    target: str | None,
    floor: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "mode": "latency",
        "concurrency": concurrency,
        "rounds": rounds,
        "warm_up_rounds_per_thread": warm_up,
        "plain": plain,
        "target": target,
        "floor": floor,
        "event": EVENT,
        "expect": EVENT,
    }


def throughput_work(concurrency: int, invocations: int, function: str) -> dict[str, Any]:
    return {
        "mode": "throughput",
        "concurrency": concurrency,
        "rounds": invocations,
        "target": function,
        "event": EVENT,
        "expect": EVENT,
    }


def level_summary(concurrency: int, result: dict[str, Any], judge_ratio: bool) -> dict[str, Any]:
    """One concurrency's figures: overhead = target latency minus the plain function's p50 there."""
    plain, target, floor = result["plain"], result["target"], result["floor"]
    if not target:
        raise RuntimeError(
            f"every invocation failed at concurrency {concurrency}, e.g. {result['failures'][:1]}"
        )
    baseline = percentile(plain, 0.5)
    overhead = summary([max(0.0, value - baseline) for value in target])
    level: dict[str, Any] = {
        "concurrency": concurrency,
        "rounds": len(target),
        "plain_invoke_ms": summary(plain),
        "target_invoke_ms": summary(target),
        "overhead_ms": overhead,
        "failures": len(result["failures"]),
        "failure_examples": result["failures"][:3],
    }
    if floor:
        floor_summary = summary(floor)
        ratio = overhead["p50"] / floor_summary["p50"]
        level.update(
            floor_ms=floor_summary,
            floor_hops_p50_ms={
                hop: round(percentile(values, 0.5), 2) for hop, values in result["floor_hops"].items()
            },
            overhead_to_floor_p50_ratio=round(ratio, 3),
            overhead_to_floor_p99_ratio=round(overhead["p99"] / floor_summary["p99"], 3),
        )
        if judge_ratio and concurrency == TARGET_RATIO_CONCURRENCY:
            level["ratio_target_met"] = ratio <= TARGET_RATIO
    level["p99_target_met"] = overhead["p99"] < TARGET_P99_MS
    return level
