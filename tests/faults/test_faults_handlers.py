"""Faults of the developer's code and of the debugged stack, end to end through `plldb attach`.

A handler that raises, returns what JSON cannot carry, floods its output, ends its process or
crashes it reaches the invoker as the Lambda error the real runtime would give, and the next
invocation works. A function plldb cannot instrument (five layers already) is left alone while the
other four are debugged, and everything comes back exactly as deployed.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack
from tests.attach.test_attach_e2e import AttachProcess, invoke
from tests.faults.faults_support import (
    CROWDED,
    CROWDED_REFUSAL,
    INSTRUMENTABLE,
    FaultsApp,
    debugger_timeout_message,
    fully_restored,
    snapshot,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a liveness guard, never a bound

PRINTED_LINES = 10 * 1024  # tests/faults/faults_app/modes/app.py prints these, 1 KiB each: 10 MiB


def finished(attach: AttachProcess, request_id: str) -> dict[str, Any]:
    """The attach process's record of one finished invocation."""
    records = [r for r in attach.named("invocation_finished") if r["requestId"] == request_id]
    assert len(records) == 1, records
    return records[0]


def last_request_id(attach: AttachProcess, count: int) -> str:
    return str(attach.wait_for("invocation_finished", count=count)[-1]["requestId"])


def test_one_function_of_five_cannot_be_instrumented_the_other_four_are_debugged_and_restored(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
) -> None:
    app = restored_app
    before = snapshot(local_cloud, app)
    attach = start_attach(
        app.directory, "--stack-name", app.stack_name, "--helper-stack", faults_helper.stack_name
    )

    ready = attach.wait_for("ready")[0]
    assert sorted(ready["functions"]) == app.names(INSTRUMENTABLE)
    failed = [event for event in attach.named("progress") if event["status"] == "failed"]
    assert [(e["phase"], e["function"], e["message"]) for e in failed] == [
        ("instrument", app.name(CROWDED), CROWDED_REFUSAL)
    ]
    assert snapshot(local_cloud, app)[app.name(CROWDED)] == before[app.name(CROWDED)]

    # The four run here, from local source...
    error, answer = invoke(local_cloud, app.name("FaultsEcho"), {"n": 1})
    assert (error, answer) == (None, {"echo": {"n": 1}})
    error, answer = invoke(local_cloud, app.name("FaultsMissingModule"), {})
    assert error == "Unhandled"
    assert {key: answer[key] for key in ("errorType", "errorMessage")} == {
        "errorType": "Runtime.ImportModuleError",
        "errorMessage": "Unable to import module 'absent': No module named 'absent'",
    }
    error, answer = invoke(local_cloud, app.name("FaultsMissingFunction"), {})
    assert error == "Unhandled"
    assert {key: answer[key] for key in ("errorType", "errorMessage")} == {
        "errorType": "Runtime.HandlerNotFound",
        "errorMessage": "Handler 'absent' missing on module 'app'",
    }
    local_runs = attach.wait_for("invocation_finished", count=3)
    assert [record["function"] for record in local_runs] == [
        app.name("FaultsEcho"),
        app.name("FaultsMissingModule"),
        app.name("FaultsMissingFunction"),
    ]
    # ...and the refused one keeps running its deployed code in the cloud.
    error, answer = invoke(local_cloud, app.name(CROWDED), {"n": 2})
    assert (error, answer) == (None, {"echo": {"n": 2}})
    assert len(attach.named("invocation_started")) == 3

    assert attach.stop(signal.SIGINT) == 0
    assert fully_restored(local_cloud, faults_helper, app, before)


CRASHES = [
    ("sys_exit", "Runtime exited with error: exit status 3"),
    ("os_exit", "Runtime exited with error: exit status 7"),
    ("segfault", "Runtime exited with error: signal: segmentation fault"),
]


def test_handler_faults_reach_the_invoker_as_lambda_errors_and_the_session_survives_them(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
) -> None:
    app = restored_app
    function = app.name("FaultsModes")
    before = snapshot(local_cloud, app)
    attach = start_attach(
        app.directory,
        "--stack-name",
        app.stack_name,
        "--helper-stack",
        faults_helper.stack_name,
        "-f",
        "FaultsModes",
    )
    assert attach.wait_for("ready")[0]["functions"] == [function]
    error, answer = invoke(local_cloud, function, {"n": 0})
    assert error is None and answer["echo"] == {"n": 0}
    first_pid = answer["pid"]

    error, answer = invoke(local_cloud, function, {"mode": "raise"})
    request_id = last_request_id(attach, 2)
    assert error == "Unhandled"
    assert {key: answer[key] for key in ("errorType", "errorMessage", "requestId")} == {
        "errorType": "KeyError",
        "errorMessage": "'no such order'",
        "requestId": request_id,
    }
    assert answer["stackTrace"][-1].endswith('    raise KeyError("no such order")\n')

    error, answer = invoke(local_cloud, function, {"mode": "unserialisable"})
    assert (error, answer) == (
        "Unhandled",
        {
            "errorMessage": "Unable to marshal response: Object of type set is not JSON serializable",
            "errorType": "Runtime.MarshalError",
            "requestId": last_request_id(attach, 3),
            "stackTrace": [],
        },
    )

    # 10 MB of output: every line reaches the developer's terminal, the caller gets the result.
    error, answer = invoke(local_cloud, function, {"mode": "print"})
    assert (error, answer) == (None, "printed")
    request_id = last_request_id(attach, 4)
    printed = [event["line"] for event in attach.named("output") if event["requestId"] == request_id]
    assert len(printed) == PRINTED_LINES
    assert set(printed) == {"x" * 1023}

    # A handler that ends or crashes its process: Lambda's Runtime.ExitError, then a fresh worker.
    for count, (mode, reason) in enumerate(CRASHES, start=5):
        error, answer = invoke(local_cloud, function, {"mode": mode})
        request_id = last_request_id(attach, count)
        assert (error, answer) == (
            "Unhandled",
            {
                "errorMessage": f"RequestId: {request_id} Error: {reason}",
                "errorType": "Runtime.ExitError",
                "requestId": request_id,
                "stackTrace": [],
            },
        ), mode
    error, answer = invoke(local_cloud, function, {"n": 8})
    assert error is None and answer["echo"] == {"n": 8}
    assert answer["pid"] != first_pid
    assert [record["status"] for record in attach.named("invocation_finished")] == [
        "ok",
        "error",
        "error",
        "ok",
        "error",
        "error",
        "error",
        "ok",
    ]
    assert len(attach.wait_for("invocation_delivered", count=8)) == 8

    assert attach.stop(signal.SIGINT) == 0
    assert fully_restored(local_cloud, faults_helper, app, before)


def test_a_handler_sleeping_past_the_deadline_gets_plldbs_timeout_and_its_late_answer_is_refused(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
) -> None:
    app = restored_app
    function = app.name("FaultsModes")
    before = snapshot(local_cloud, app)
    attach = start_attach(
        app.directory,
        "--stack-name",
        app.stack_name,
        "--helper-stack",
        faults_helper.stack_name,
        "-f",
        "FaultsModes",
        "--function-timeout",
        "3",
    )
    attach.wait_for("ready")
    # The layer's message names the timeout of the configuration the invocation runs under.
    timeout = snapshot(local_cloud, app)[function]["configuration"]["Timeout"]
    assert timeout == 3
    assert invoke(local_cloud, function, {"warm": True})[0] is None  # start the environment first

    error, answer = invoke(local_cloud, function, {"mode": "sleep", "seconds": 4})
    request_id = attach.named("invocation_started")[1]["requestId"]
    # plldb's answer, before Lambda's own timeout would have ended the invocation with "Task timed out".
    assert (error, answer) == (
        "Unhandled",
        {
            "errorMessage": debugger_timeout_message(timeout),
            "errorType": "PlldbDebuggerTimeout",
            "requestId": request_id,
            "stackTrace": [],
        },
    )
    # The handler finishes locally a little later; its answer is refused, and the developer told so.
    refused = attach.wait_for("invocation_refused")[0]
    assert (refused["requestId"], refused["code"]) == (request_id, protocol.ERR_REQUEST_CLOSED)
    assert [e["requestId"] for e in attach.named("invocation_delivered")] == [
        attach.named("invocation_started")[0]["requestId"]
    ]

    assert attach.stop(signal.SIGINT) == 0
    assert fully_restored(local_cloud, faults_helper, app, before)
    # The deployed timeout (the template's Globals) is back, exactly.
    assert snapshot(local_cloud, app)[function]["configuration"]["Timeout"] == 10
