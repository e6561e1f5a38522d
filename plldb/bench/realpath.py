"""The headline: invocations answered by the real `plldb attach`, its worker and its ack logic, against the floor.

A one-function echo project is attached with `python -m plldb attach --json` (attach_bench.AttachCycle)
and the driver invokes it, C threads at a time, each round also invoking a plain (never instrumented)
echo function and running one floor round. Overhead = latency through plldb minus the plain
function's p50 at that concurrency. While attached, the same session also gives the DynamoDB requests
per invocation, the throughput, and the payload round trips (events of 1 KB to 5 MB echoed back).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3

from plldb import protocol
from plldb.bench.attach_bench import AttachCycle, DeployedProject
from plldb.bench.dynamodb_counter import DynamoRequestCounter, tally
from plldb.bench.latency import DriverRunner, latency_work, level_summary, throughput_work
from plldb.bench.scripted import caller_labels
from plldb.bench.stats import percentile, summary
from plldb.bench.timeline import breakdown

PAYLOAD_SIZES = {"1 KB": 1024, "100 KB": 100 * 1024, "1 MB": 1024 * 1024, "5 MB": 5 * 1024 * 1024}


def payload_summary(results: dict[str, Any]) -> dict[str, Any]:
    """Per size: whether it works, and plain, attached and added latency (p50)."""
    summarised = {}
    for label, entry in results.items():
        size = PAYLOAD_SIZES.get(label, 0)
        row: dict[str, Any] = {
            "bytes": size,
            "works": bool(entry["target"]) and not any(f.startswith("target") for f in entry["failures"]),
            "failures": entry["failures"][:2],
        }
        if entry["plain"]:
            row["plain_invoke_ms"] = summary(entry["plain"])
        if entry["target"]:
            row["attached_invoke_ms"] = summary(entry["target"])
        if entry["plain"] and entry["target"]:
            row["added_ms_p50"] = round(percentile(entry["target"], 0.5) - percentile(entry["plain"], 0.5), 1)
        summarised[label] = row
    return summarised


def payload_work(plain: str, target: str, sizes: dict[str, int], repetitions: int) -> dict[str, Any]:
    return {"mode": "payloads", "plain": plain, "target": target, "sizes": sizes, "repetitions": repetitions}


class RealPath:
    def __init__(
        self,
        session: boto3.Session,
        counter: DynamoRequestCounter,
        runner: DriverRunner,
        *,
        environment: dict[str, str],
        helper_stack: str,
        log: Callable[[str], None],
    ) -> None:
        self.session = session
        self.counter = counter
        self.runner = runner
        self.environment = environment
        self.helper_stack = helper_stack
        self.log = log

    def run(
        self,
        project: DeployedProject,
        plain: str,
        floor: dict[str, Any],
        *,
        concurrency_rounds: dict[int, int],
        warm_up: int,
        throughput_invocations: int,
        counted: int,
        payload_sizes: dict[str, int],
        payload_repetitions: int,
        invocations_table: str,
    ) -> dict[str, Any]:
        target = project.functions[0]
        cycle = AttachCycle(self.session, project, self.environment, self.helper_stack)
        attach_seconds = cycle.start()
        self.log(f"Real path: attached in {attach_seconds:.2f} s")
        try:
            levels = {}
            for concurrency, rounds in concurrency_rounds.items():
                self.log(f"Real path: concurrency {concurrency}, {rounds} rounds")
                mark = self.counter.mark()
                result = self.runner.run(
                    latency_work(
                        concurrency, rounds, warm_up=warm_up, plain=plain, target=target, floor=floor
                    )
                )
                level = level_summary(concurrency, result, judge_ratio=True)
                requests = self.counter.since(mark)
                level["phases_p50_ms"] = {
                    "attached": breakdown(
                        requests, invocations_table, result["spans"]["target"] if concurrency == 1 else None
                    ),
                    "floor": breakdown(requests, str(floor["table"]), result["spans"]["floor"]),
                }
                self.log(f"Real path: concurrency {concurrency}, throughput")
                level["throughput_per_second"] = {
                    name: round(
                        self.runner.run(throughput_work(concurrency, throughput_invocations, function))[
                            "per_second"
                        ],
                        1,
                    )
                    for name, function in (("attached", target), ("plain", plain))
                }
                levels[str(concurrency)] = level
            self.log(f"Real path: counting DynamoDB requests of {counted} invocations")
            mark = self.counter.mark()
            self.runner.run(latency_work(1, counted, warm_up=0, plain=None, target=target, floor=None))
            counts = {
                "invocations": counted,
                **tally(self.counter.since(mark), caller_labels(target), counted),
            }
            self.log("Real path: payload round trips")
            payloads = payload_summary(
                self.runner.run(payload_work(plain, target, payload_sizes, payload_repetitions))
            )
        finally:
            detached = cycle.detach()
        answer = self.session.client("lambda").invoke(FunctionName=target, Payload=b'{"ok": true}')
        works_after_detach = not answer.get("FunctionError") and answer["Payload"].read() == b'{"ok": true}'
        return {
            "method": (
                "`plldb attach --json` with its worker processes answers an echo function; overhead = latency "
                "through plldb minus the plain echo function's p50 at the same concurrency"
            ),
            "by_concurrency": levels,
            "dynamodb_per_invocation": counts,
            "payload_round_trip": payloads,
            "inline_message_limit_bytes": protocol.INLINE_MESSAGE_LIMIT,
            "restore_differences": detached["restore_differences"],
            "works_after_detach": works_after_detach,
        }
