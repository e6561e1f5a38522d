"""The breakdown: the cloud side alone, with a scripted debugger instead of `plldb attach`.

The scripted debugger (responder.py, session mode) connects and opens a session exactly as `plldb
attach` does, the benchmark instruments the function with the developer's credentials exactly as
`plldb attach` does (plldb.local.instrument), and then each ``invoke`` is answered at once, with no
worker and no ack. Compared with the real path, the difference is what the developer's machine adds.
This phase also counts DynamoDB requests per invocation and per second at a breakpoint, and hands the
floor a real `invoke` message to post (same size, same shape).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3

from plldb import protocol
from plldb.bench.attach_bench import DeployedProject
from plldb.bench.dynamodb_counter import DynamoRequestCounter, session_names_by_access_key, tally
from plldb.bench.floor import FloorStack
from plldb.bench.latency import DriverRunner, latency_work, level_summary
from plldb.bench.processes import JsonLinesProcess
from plldb.bench.timeline import breakdown
from plldb.bootstrap.helper_stack import HelperStack

OPEN_TIMEOUT_SECONDS = 120.0


def caller_labels(function_name: str) -> Callable[[str], str]:
    """Who made a DynamoDB request, by the role session behind its access key."""
    names = session_names_by_access_key()

    def label(access_key: str) -> str:
        name = names.get(access_key, "")
        if name == function_name:
            return "layer"
        if "Dispatcher" in name:
            return "dispatcher"
        if "Routes" in name:
            return "routes ($default)"
        if "Manager" in name:
            return "manager"
        return "other" if name else "developer"

    return label


class ScriptedBreakdown:
    def __init__(
        self,
        session: boto3.Session,
        helper: HelperStack,
        counter: DynamoRequestCounter,
        runner: DriverRunner,
        *,
        environment: dict[str, str],
        log: Callable[[str], None],
    ) -> None:
        self.session = session
        self.helper = helper
        self.counter = counter
        self.runner = runner
        self.environment = environment
        self.log = log

    def run(
        self,
        project: DeployedProject,
        plain: str,
        floor: FloorStack,
        *,
        rounds: int,
        warm_up: int,
        counted: int,
        hold_seconds: float,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The breakdown's report, and the `invoke` message the floor posts."""
        from plldb.instrumentation.functions import FunctionRef
        from plldb.local.instrument import StackInstrumentation, developer_clients
        from plldb.local.session import Opened, SessionObserver, connect_url

        target = project.functions[0]
        responder = JsonLinesProcess.python_module(
            "plldb.bench.responder",
            ["session", connect_url(self.helper.websocket_url), project.stack_name],
            self.environment,
        )
        responder.start()
        try:
            _, opened = responder.wait_for("opened", OPEN_TIMEOUT_SECONDS)
            instrumentation = StackInstrumentation(
                clients=developer_clients(self.session, self.helper),
                helper=self.helper,
                functions=[FunctionRef(target, "Echo001")],
                observer=SessionObserver(),
                fallback=protocol.FALLBACK_ERROR,
                timeout=60,
                account_id=self.helper.stack_id.split(":")[4],
                partition=self.helper.stack_id.split(":")[1],
            )
            instrumentation.instrument(
                Opened(opened["sessionId"], opened["stackId"], project.stack_name, "plldb bench")
            )
            if not instrumentation.instrumented:
                raise RuntimeError(f"the scripted session instrumented nothing: {instrumentation.results}")
            try:
                self.log("Scripted: first invocation")
                self.runner.run(latency_work(1, 1, warm_up=0, plain=None, target=target, floor=None))
                _, shown = responder.wait_for("invoke", OPEN_TIMEOUT_SECONDS)
                message = shown["message"]
                floor_config = floor.driver_config(message)
                self.log(f"Scripted: {rounds} rounds at concurrency 1")
                mark = self.counter.mark()
                result = self.runner.run(
                    latency_work(1, rounds, warm_up=warm_up, plain=plain, target=target, floor=floor_config)
                )
                level = level_summary(1, result, judge_ratio=False)
                requests = self.counter.since(mark)
                level["phases_p50_ms"] = {
                    "attached": breakdown(
                        requests, self.helper.invocations_table_name, result["spans"]["target"]
                    ),
                    "floor": breakdown(requests, floor.invocations_table, result["spans"]["floor"]),
                }
                counts = self._count(target, counted)
                hold = self._hold(responder, target, hold_seconds)
            finally:
                failures = instrumentation.restore()
                responder.send("close")
                responder.wait_for("closed", OPEN_TIMEOUT_SECONDS)
            if failures:
                raise RuntimeError(f"the scripted session's function was not restored: {failures}")
        finally:
            responder.stop()
        report = {
            "method": (
                "scripted debugger: the real connection, session and instrumentation, each invoke answered at "
                "once (no worker, no ack); overhead = latency through the layer minus the plain function's p50"
            ),
            "by_concurrency": {"1": level},
            "dynamodb_per_invocation": counts,
            "breakpoint_hold": hold,
            "invoke_message_bytes": len(protocol.encode(message)),
        }
        return report, floor_config

    def _count(self, target: str, count: int) -> dict[str, Any]:
        """DynamoDB requests of sequential invocations through the layer (nothing else runs meanwhile)."""
        self.log(f"Scripted: counting DynamoDB requests of {count} invocations")
        mark = self.counter.mark()
        self.runner.run(latency_work(1, count, warm_up=0, plain=None, target=target, floor=None))
        return {"invocations": count, **tally(self.counter.since(mark), caller_labels(target), count)}

    def _hold(self, responder: JsonLinesProcess, target: str, seconds: float) -> dict[str, Any]:
        """DynamoDB requests per second while the debugger holds one invocation at a breakpoint."""
        self.log(f"Scripted: one invocation held at a breakpoint for {seconds:g} s")
        after = len(responder.events)
        responder.send(f"hold {seconds}")
        responder.wait_for("holding", OPEN_TIMEOUT_SECONDS, after=after)
        result: dict[str, Any] = {}
        invoker = threading.Thread(
            target=lambda: result.update(
                self.runner.run(latency_work(1, 1, warm_up=0, plain=None, target=target, floor=None))
            ),
            daemon=True,
        )
        mark = self.counter.mark()
        invoker.start()
        started, _ = responder.wait_for("hold_started", OPEN_TIMEOUT_SECONDS, after=after)
        answered_at, _ = responder.wait_for("held", seconds + OPEN_TIMEOUT_SECONDS, after=after)
        held_for = answered_at - started
        end_mark = self.counter.mark()
        invoker.join()
        requests = [request for request in self.counter.since(mark, end_mark) if request.at >= started]
        # The second half of the hold shows the steady polling rate, past the first quick reads.
        halfway = started + held_for / 2
        steady = [request for request in requests if request.at >= halfway]
        label = caller_labels(target)
        return {
            "hold_seconds": round(held_for, 2),
            "latency_ms": round(result["target"][0], 1) if result.get("target") else None,
            "per_second": tally(requests, label, held_for),
            "per_second_second_half": tally(steady, label, held_for / 2),
            "total": tally(requests, label, 1),
        }
