"""A stack's functions instrumented and restored by the developer's plldb, with the developer's credentials.

IAM, SCPs, permission boundaries and CloudTrail therefore apply to the developer: plldb changes only
what its user may change. Functions are handled 16 at a time (Lambda allows 15 control-plane requests
a second per account; the clients retry adaptively when it throttles), and progress goes to the
console one function at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from plldb.bootstrap.helper_stack import HelperStack
from plldb.instrumentation import functions, stacks, traffic
from plldb.instrumentation.decisions import Target
from plldb.instrumentation.functions import FunctionRef, Instrumented, Result
from plldb.lambda_common import error_text
from plldb.local.session import Opened, SessionObserver

MAX_PARALLEL_FUNCTIONS = 16
CONTROL_CONFIG = Config(
    connect_timeout=10,
    read_timeout=60,
    retries={"mode": "adaptive", "max_attempts": 8},
    max_pool_connections=MAX_PARALLEL_FUNCTIONS * 2,
)
PHASE_INSTRUMENT = "instrument"
PHASE_RESTORE = "restore"


def developer_clients(session: boto3.Session, helper: HelperStack) -> functions.Clients:
    """Lambda and IAM clients with the developer's credentials, and what they need of the helper stack."""
    return functions.Clients(
        lambda_client=session.client("lambda", config=CONTROL_CONFIG),
        iam=session.client("iam", config=CONTROL_CONFIG),
        region=str(session.region_name),
        layer_version_arn=helper.layer_version_arn,
        policy_arn=helper.instrumented_function_policy_arn,
        sqs=session.client("sqs"),
    )


def progress(
    phase: str, status: str, text: str, result: Result | None = None, **extra: Any
) -> dict[str, Any]:
    """A progress event as the console shows it."""
    message: dict[str, Any] = {"phase": phase, "status": status, "message": text, **extra}
    if result is not None:
        message["function"] = result.function.name
        message["logicalId"] = result.function.path
    return message


def result_entry(result: Result) -> dict[str, str]:
    return {
        "functionName": result.function.name,
        "logicalId": result.function.path,
        "status": result.status,
        "message": result.message,
    }


@dataclass
class StackInstrumentation:
    """The selected functions of one stack, as one session instruments and restores them."""

    clients: functions.Clients
    helper: HelperStack
    functions: Sequence[FunctionRef]
    observer: SessionObserver
    fallback: str
    timeout: int
    redirect_aliases: bool = True
    include_provisioned: bool = False
    account_id: str = ""
    partition: str = "aws"
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[Result] = field(default_factory=list)
    session_id: str = ""
    options: Any = None  # plldb.local.session_options.SessionOptions of a session with options
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def instrumented(self) -> list[Instrumented]:
        with self._lock:
            return [r.instrumented for r in self.results if r.ok and r.instrumented is not None]

    def variable_names(self, function_name: str) -> frozenset[str]:
        """The function's own configured variables: the only names its local run may take from AWS."""
        for item in self.instrumented:
            if item.function.name == function_name:
                return item.variable_names
        return frozenset()

    def instrument(self, opened: Opened) -> None:
        """Instrument every selected function for ``opened``; a stop request leaves the rest untouched."""
        self.session_id = opened.session_id
        target = Target(
            session_id=opened.session_id,
            dispatcher_arn=self.helper.dispatcher_function_arn,
            invocations_table=self.helper.invocations_table_name,
            payload_bucket=self.helper.payload_bucket_name,
            layer_version_arn=self.helper.layer_version_arn,
            fallback=self.fallback,
            timeout=self.timeout,
            entry=self.options.entry(opened.session_id) if self.options is not None else None,
        )
        count = len(self.functions)
        try:
            mappings = traffic.event_source_mappings(self.clients.lambda_client)
        except Exception as exc:  # only notes depend on them: each function still says what is wrong
            mappings = {}
            self.observer.on_warning(
                f"Could not list the event source mappings ({_failure_text(exc)}); plldb cannot say which "
                "queues and streams a breakpoint holds up."
            )
        prefix = f"arn:{self.partition}:lambda:{self.clients.region}:{self.account_id}:function:"

        def function_arn(name: str) -> str:
            return prefix + name

        self.observer.on_progress(
            progress(
                PHASE_INSTRUMENT,
                "started",
                f"Instrumenting {count} function{'' if count == 1 else 's'} of stack {opened.stack_name}",
                total=count,
            )
        )

        def one(function: FunctionRef) -> None:
            if self.stop.is_set():
                return
            try:
                result = functions.instrument(
                    self.clients,
                    function,
                    target,
                    redirect_aliases=self.redirect_aliases,
                    include_provisioned=self.include_provisioned,
                    mappings=mappings.get(function_arn(function.name), ()),
                )
            except Exception as exc:  # no answer from AWS (the network, a timeout): undo what it changed
                result = _put_back(self.clients, function, target.session_id, exc)
            with self._lock:
                self.results.append(result)
            self.observer.on_progress(progress(PHASE_INSTRUMENT, result.status, result.message, result))
            for note in result.notes:
                self.observer.on_progress(progress(PHASE_INSTRUMENT, "note", note, result))

        _parallel(one, self.functions)
        with self._lock:
            ordered = sorted(self.results, key=lambda r: r.function.path)
        counts = {s: sum(1 for r in ordered if r.status == s) for s in ("ok", "skipped", "failed")}
        self.observer.on_instrumented(
            {
                "phase": PHASE_INSTRUMENT,
                "status": "done",
                "message": f"{counts['ok']} instrumented, {counts['skipped']} skipped, {counts['failed']} failed",
                "functions": [result_entry(r) for r in ordered],
            }
        )

    def restore(self) -> list[str]:
        """Put back every function this session instrumented; the labels of those that failed."""
        done = self.instrumented
        self.observer.on_progress(
            progress(
                PHASE_RESTORE, "started", f"Restoring {len(done)} function{'' if len(done) == 1 else 's'}"
            )
        )
        failures: list[str] = []
        lock = threading.Lock()

        results: list[Result] = []

        def one(item: Instrumented) -> None:
            result = _restore(self.clients, item.function, self.session_id)
            self.observer.on_progress(progress(PHASE_RESTORE, result.status, result.message, result))
            with lock:
                results.append(result)
                if result.status == functions.STATUS_FAILED:
                    failures.append(f"{item.function.path}: {result.message}")

        _parallel(one, done)
        ordered = sorted(results, key=lambda r: r.function.path)
        self.observer.on_progress(
            {
                "phase": PHASE_RESTORE,
                "status": "done",
                "message": f"{len(ordered) - len(failures)} restored, {len(failures)} failed",
                "functions": [result_entry(r) for r in ordered],
            }
        )
        return sorted(failures)


def restore_stack(
    session: boto3.Session,
    helper: HelperStack,
    stack_id: str,
    report: Callable[[Mapping[str, Any]], None],
) -> list[Result]:
    """Remove every trace of plldb from a stack's functions (any session's), with the developer's rights."""
    clients = developer_clients(session, helper)
    found = stacks.list_stack_functions(session.client("cloudformation", config=CONTROL_CONFIG), stack_id)
    results: list[Result] = []
    lock = threading.Lock()

    def one(function: stacks.StackFunction) -> None:
        result = _restore(clients, FunctionRef(function.function_name, function.path), None)
        with lock:
            results.append(result)
        report(progress(PHASE_RESTORE, result.status, result.message, result))

    _parallel(one, found)
    return sorted(results, key=lambda r: r.function.path)


def _failure_text(exc: Exception) -> str:
    """An AWS failure as AWS words it; anything else (a bug) with its type, so it can be reported."""
    if isinstance(exc, (ClientError, BotoCoreError)):
        return error_text(exc)
    return f"{type(exc).__name__}: {exc}"


def _restore(clients: functions.Clients, function: FunctionRef, session_id: str | None) -> Result:
    """functions.restore, with a failure to reach AWS reported as this function's failure, not raised."""
    try:
        return functions.restore(clients, function, session_id)
    except Exception as exc:
        return Result(function, functions.STATUS_FAILED, _failure_text(exc))


def _put_back(clients: functions.Clients, function: FunctionRef, session_id: str, exc: Exception) -> Result:
    """A function whose instrumenting stopped midway without an AWS answer: restored if possible."""
    text = _failure_text(exc)
    put_back = _restore(clients, function, session_id)
    if put_back.status == functions.STATUS_FAILED:
        text += f"; putting it back failed too ({put_back.message}): run 'plldb detach'"
    return Result(function, functions.STATUS_FAILED, text)


def _parallel(work: Callable[[Any], None], items: Sequence[Any]) -> None:
    if not items:
        return
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_FUNCTIONS, len(items))) as pool:
        for future in [pool.submit(work, item) for item in items]:
            future.result()
