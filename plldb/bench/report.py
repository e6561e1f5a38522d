"""The benchmark's record: the commit and machine it measured, the JSON report and its Markdown rendering."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

RESULT_NAME = "benchmark"
REPOSITORY = Path(__file__).resolve().parents[2]


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
        "websockets": version("websockets"),
        "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
    }


def _git(*arguments: str) -> str:
    try:
        return subprocess.run(
            ["git", *arguments], cwd=REPOSITORY, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def commit_facts() -> dict[str, Any]:
    """The commit the benchmark measured, and whether the working tree differed from it."""
    changed = [
        line[3:] for line in _git("status", "--porcelain", "--untracked-files=no").splitlines() if line
    ]
    return {
        "sha": _git("rev-parse", "HEAD") or "unknown",
        "subject": _git("log", "-1", "--format=%s"),
        "dirty": bool(changed),
        "changed_files": changed[:20],
    }


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def _row(name: str, stats: dict[str, float]) -> str:
    return f"| {name} | {stats['p50']} | {stats['p95']} | {stats['p99']} | {stats['mean']} | {stats['n']} |"


def _met(flag: bool | None) -> str:
    return "-" if flag is None else ("met" if flag else "**not met**")


def _level_lines(level: dict[str, Any], target: dict[str, Any], attached: str) -> list[str]:
    lines = [
        f"### Concurrency {level['concurrency']} ({level['rounds']} rounds)",
        "",
        "| ms | p50 | p95 | p99 | mean | n |",
        "|---|---:|---:|---:|---:|---:|",
        _row("plain invoke (no plldb)", level["plain_invoke_ms"]),
        _row(attached, level["target_invoke_ms"]),
        _row("**overhead** (minus the plain p50)", level["overhead_ms"]),
    ]
    if "floor_ms" in level:
        lines.append(_row("**floor** (put, relay, answer, read)", level["floor_ms"]))
    lines.append("")
    verdicts = []
    if "floor_ms" in level:
        ratio = f"Overhead p50 / floor p50 = **{level['overhead_to_floor_p50_ratio']}**"
        if "ratio_target_met" in level:
            ratio += f" (target ≤ {target['overhead_to_floor_p50_ratio']}: {_met(level['ratio_target_met'])})"
        verdicts.append(ratio)
    p99 = (
        f"overhead p99 {level['overhead_ms']['p99']} ms (target < {target['overhead_p99_ms']:g} ms: "
        + _met(level["p99_target_met"])
    )
    if "floor_ms" in level:
        p99 += f"; the floor's own p99 is {level['floor_ms']['p99']} ms"
    verdicts.append(p99 + ")")
    if "floor_ms" in level:
        verdicts.append(f"overhead p99 / floor p99 = {level['overhead_to_floor_p99_ratio']}")
    throughput = level.get("throughput_per_second")
    if throughput:
        verdicts.append(
            f"throughput {throughput['attached']} invocations/s through plldb, {throughput['plain']} plain"
        )
    verdicts.append(f"failed invocations: {level['failures']}")
    lines += ["; ".join(verdicts) + ".", ""]
    if "floor_hops_p50_ms" in level:
        hops = ", ".join(f"{hop} {value}" for hop, value in level["floor_hops_p50_ms"].items())
        lines += [f"Floor hops, p50 ms: {hops}.", ""]
    lines += [f"- `{example}`" for example in level["failure_examples"]]
    return lines


def _counts_lines(title: str, counts: dict[str, Any]) -> list[str]:
    lines = [
        f"| {title}, {label} | {value['reads']} | {value['writes']} |"
        for label, value in counts.items()
        if isinstance(value, dict)
    ]
    return lines


def _payload_lines(payloads: dict[str, Any]) -> list[str]:
    lines = [
        "| size | works | plain p50 ms | attached p50 ms | attached p99 ms | added p50 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, row in payloads.items():
        attached = row.get("attached_invoke_ms") or {}
        lines.append(
            f"| {label} | {'yes' if row['works'] else '**no**'} | {_ms((row.get('plain_invoke_ms') or {}).get('p50'))} | "
            f"{_ms(attached.get('p50'))} | {_ms(attached.get('p99'))} | {_ms(row.get('added_ms_p50'))} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    machine, commit, target = report["machine"], report["commit"], report["targets"]
    lines = [
        "# plldb benchmark",
        "",
        f"{report['mode']} run on the local cloud, {report['measured_at']}, {report['duration_seconds']} s, "
        f"commit `{commit['sha'][:12]}`{' (with uncommitted changes)' if commit['dirty'] else ''}: "
        f"{machine['cpu_model']}, {machine['cpus']} CPUs, Python {machine['python']}, moto {machine['moto']}, "
        f"load average at the end {machine['load_average_at_end']}. What each figure means: docs/performance.md.",
        "",
        "## Overhead per invocation: the real path (`plldb attach` and its worker)",
        "",
    ]
    real = report["real_path"]
    for level in real["by_concurrency"].values():
        lines += _level_lines(level, target, "invoke answered by `plldb attach`")
    scripted = report["scripted"]
    lines += ["## Breakdown: the cloud side alone (scripted debugger)", ""]
    for level in scripted["by_concurrency"].values():
        lines += _level_lines(level, target, "invoke answered by the scripted debugger")
    hold = scripted["breakpoint_hold"]
    lines += [
        "## DynamoDB requests",
        "",
        "| | reads | writes |",
        "|---|---:|---:|",
        *_counts_lines("per invocation (real path)", real["dynamodb_per_invocation"]),
        *_counts_lines("per invocation (scripted)", scripted["dynamodb_per_invocation"]),
        *_counts_lines("per second held at a breakpoint", hold["per_second"]),
        "",
        f"One invocation held {hold['hold_seconds']} s at a breakpoint: {hold['total']['total']['reads']:g} reads and "
        f"{hold['total']['total']['writes']:g} writes in all; {hold['per_second_second_half']['total']['reads']} reads/s "
        "in the second half of the hold (the steady polling rate).",
        "",
        "## Payload round trip (event echoed back by the real worker)",
        "",
        *_payload_lines(real["payload_round_trip"]),
        "",
    ]
    attach = report["attach"]
    startup = attach["startup_seconds"]
    lines += [
        "## Attach and detach (`plldb attach --json` as a subprocess)",
        "",
        f"Start-up of the command (Python and its imports), median of {len(startup['runs'])}: {startup['median']} s.",
        "",
        "| functions | attach s (from process start) | attach s (net of start-up) | detach s | restored exactly | runs |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for cycle in attach["by_function_count"].values():
        lines.append(
            f"| {cycle['functions']} | {cycle['attach_seconds_median']} | {cycle['attach_net_seconds_median']} | "
            f"{cycle['detach_seconds_median']} | {'yes' if cycle['restore_exact'] else '**no**'} | {len(cycle['runs'])} |"
        )
    lines += [
        "",
        f"Attach of the most functions / attach of one = **{attach['ratio_most_to_fewest']}** from process start, "
        f"**{attach['ratio_most_to_fewest_net']}** net of start-up (target < {attach['target_ratio']:g}: "
        f"{_met(attach['target_met'])}, {_met(attach['target_met_net'])} net).",
        "",
    ]
    at_rest = report["credentials_at_rest"]
    lines += [
        "## Credentials at rest",
        "",
        f"Items and objects of the helper stack holding any of the {at_rest['issued_credentials_searched']} "
        f"temporary credentials the local cloud issued: **{at_rest['stored_with_credentials']}**.",
        "",
    ]
    lines += original_lines(report.get("original") or {})
    return "\n".join(lines)


def original_lines(original: dict[str, Any]) -> list[str]:
    lines = ["## Side by side with the original plldb 0.1.3", ""]
    if "skipped" in original:
        return [*lines, f"Not measured: {original['skipped']}.", ""]
    rows = original["table"]
    lines += ["| | original plldb 0.1.3 | this plldb |", "|---|---|---|"]
    lines += [f"| {row['what']} | {row['original']} | {row['current']} |" for row in rows]
    lines += ["", *[f"- {note}" for note in original.get("notes", [])], ""]
    return lines


def write_results(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{RESULT_NAME}.json"
    markdown_path = directory / f"{RESULT_NAME}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown_path.write_text(markdown(report) + "\n", encoding="utf-8")
    return json_path, markdown_path


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
