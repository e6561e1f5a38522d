"""The benchmark's record: machine facts, the JSON report and its short Markdown rendering."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

RESULT_NAME = "benchmark"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict[str, Any]:
    """What the figures depend on, so a reader can tell a slower machine from a regression."""

    def version(distribution: str) -> str:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "moto": version("moto"),
        "boto3": version("boto3"),
        "awslambdaric": version("awslambdaric"),
        "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
    }


def _row(name: str, stats: dict[str, float]) -> str:
    return f"| {name} | {stats['p50']} | {stats['p95']} | {stats['p99']} | {stats['mean']} | {stats['n']} |"


def _yes(flag: bool) -> str:
    return "met" if flag else "**NOT met**"


def _p99_verdict(level: dict[str, Any], target: dict[str, Any]) -> str:
    limit = f"{target['overhead_p99_ms']:g} ms"
    if not level["p99_target_applies"]:
        return f"target < {limit} not applicable: the floor's own p99 is {level['floor_ms']['p99']} ms here"
    return f"target < {limit}: {_yes(level['p99_target_met'])}"


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    overhead = report["overhead"]
    lines = [
        "# plldb benchmark",
        "",
        f"{report['mode']} run on the local cloud, {report['measured_at']}, {report['duration_seconds']} s: "
        f"{machine['cpu_model']}, {machine['cpus']} CPUs, Python {machine['python']}, moto {machine['moto']}, "
        f"{machine['os']}. What each figure means: docs/performance.md.",
        "",
        "## Overhead per invocation (no-op handler, scripted debugger)",
        "",
    ]
    for level in overhead["by_concurrency"].values():
        throughput = level["throughput_per_second"]
        lines += [
            f"### Concurrency {level['concurrency']} ({level['rounds']} rounds)",
            "",
            "| ms | p50 | p95 | p99 | mean | n |",
            "|---|---:|---:|---:|---:|---:|",
            _row("plain invoke (no plldb)", level["plain_invoke_ms"]),
            _row("invoke through the layer", level["layer_invoke_ms"]),
            _row("**overhead** (layer minus plain p50)", level["overhead_ms"]),
            _row("**floor** (put, post, reply via $default, read)", level["floor_ms"]),
            "",
            f"Overhead p50 / floor p50 = **{level['overhead_to_floor_p50_ratio']}** "
            f"(target ≤ {overhead['target']['overhead_to_floor_p50_ratio']}: {_yes(level['ratio_target_met'])}); "
            f"overhead p99 {level['overhead_ms']['p99']} ms ({_p99_verdict(level, overhead['target'])}); "
            f"overhead p99 / floor p99 = {level['overhead_to_floor_p99_ratio']}. "
            f"Throughput: {throughput['layer']} invocations/s through the layer, "
            f"{throughput['plain']} plain. Failed invocations: {level['layer_failures']}.",
            "",
            "Floor hops, p50 ms: "
            + ", ".join(
                f"{hop.replace('_', ' ')} {value}" for hop, value in level["floor_hops_p50_ms"].items()
            )
            + ".",
            "",
        ]
        lines += [f"- `{example}`" for example in level["layer_failure_examples"]]
    counted = overhead["dynamodb_per_invocation"]
    hold = overhead["breakpoint_hold"]
    lines += [
        "## DynamoDB requests",
        "",
        "| | reads | writes |",
        "|---|---:|---:|",
    ]
    for label, counts in counted.items():
        if isinstance(counts, dict):
            lines.append(f"| per invocation, {label} | {counts['reads']} | {counts['writes']} |")
    for label, counts in hold["per_second"].items():
        lines.append(f"| per second held at a breakpoint, {label} | {counts['reads']} | {counts['writes']} |")
    steady = hold["per_second_second_half"]["total"]
    lines += [
        "",
        f"One invocation held {hold['hold_seconds']} s at a breakpoint: {hold['total']['total']['reads']:g} "
        f"reads and {hold['total']['total']['writes']:g} writes in all; {steady['reads']} reads/s in the "
        "second half of the hold (the steady polling rate).",
        "",
    ]
    attach = report["attach"]["attach_detach"]
    lines += [
        "## Attach and detach (`plldb attach --json` as a subprocess)",
        "",
        "| functions | attach s (median) | detach s (median) | runs |",
        "|---:|---:|---:|---:|",
    ]
    for cycle in attach["by_function_count"].values():
        lines.append(
            f"| {cycle['functions']} | {cycle['attach_seconds_median']} | {cycle['detach_seconds_median']} "
            f"| {len(cycle['runs'])} |"
        )
    lines += [
        "",
        f"Attach of the most / attach of one = **{attach['attach_ratio_most_to_fewest']}** "
        f"(target < {attach['target_ratio']:g}: {_yes(attach['target_met'])}).",
        "",
    ]
    worker = report["attach"]["real_worker_overhead"]
    if worker:
        lines += [
            f"## End to end with the real local worker ({worker['rounds']} rounds)",
            "",
            "| ms | p50 | p95 | p99 | mean | n |",
            "|---|---:|---:|---:|---:|---:|",
            _row("plain echo invoke", worker["plain_invoke_ms"]),
            _row("invoke answered by `plldb attach`", worker["attached_invoke_ms"]),
            _row("**overhead**", worker["overhead_ms"]),
            "",
        ]
    payloads = report["attach"]["payload_round_trip"]
    if payloads:
        lines += [
            "## Payload round trip (event echoed back by the real worker)",
            "",
            "| size | event travels | plain p50 ms | attached p50 ms | attached p99 ms | added p50 ms |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for label, result in payloads.items():
            lines.append(
                f"| {label} | {result['event_travels']} | {result['plain_invoke_ms']['p50']} | "
                f"{result['attached_invoke_ms']['p50']} | {result['attached_invoke_ms']['p99']} | "
                f"{result['added_ms_p50']} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_results(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{RESULT_NAME}.json"
    markdown_path = directory / f"{RESULT_NAME}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown_path.write_text(markdown(report), encoding="utf-8")
    return json_path, markdown_path


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
