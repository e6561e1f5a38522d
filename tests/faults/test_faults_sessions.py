"""Faults of the debugging session, end to end: attach killed, connections cut, the gateway restarted,
a function's timeout reached, two developers on one stack.

Each test ends with every function configuration exactly as deployed, no session left open and no
instrumentation record left behind, and checks the exact answer the invoker got and when.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack
from plldb.local.session import describe_time
from tests.attach.test_attach_e2e import AttachProcess, invoke, wait_until
from tests.faults.faults_support import (
    GRACE_SECONDS,
    FaultsApp,
    child_pids,
    debugger_timeout_message,
    fully_restored,
    live_sessions,
    owner_of,
    run_plldb,
    running,
    session_items,
    snapshot,
)

pytestmark = pytest.mark.slow

# A restore after a lost client starts GRACE_SECONDS after the drop; the manager then needs a few
# seconds for the stack (generous here: the machine runs other suites at the same time).
RESTORE_BOUND_SECONDS = GRACE_SECONDS + 30


def attach_modes(
    start_attach: Callable[..., AttachProcess], helper: HelperStack, app: FaultsApp, *extra: str
) -> AttachProcess:
    """attach to the faults app, debugging FaultsModes only; returns once it is ready."""
    attach = start_attach(
        app.directory,
        "--stack-name",
        app.stack_name,
        "--helper-stack",
        helper.stack_name,
        "-f",
        "FaultsModes",
        *extra,
    )
    assert attach.wait_for("ready")[0]["functions"] == [app.name("FaultsModes")]
    return attach


def connection_of(local_cloud: Any, helper: HelperStack, app: FaultsApp) -> str:
    (session,) = live_sessions(local_cloud, helper, app.stack_name)
    return str(session[protocol.A_CONNECTION_ID])


def test_kill_9_during_instrumentation_is_restored_after_the_grace_period(
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
    progress = attach.wait_for("progress", count=2)  # "started", then the first function's result
    assert progress[0]["status"] == "started"
    attach.process.kill()
    attach.process.wait(10)
    assert not attach.named("ready")

    waited = wait_until(
        lambda: fully_restored(local_cloud, faults_helper, app, before),
        timeout=RESTORE_BOUND_SECONDS,
        what="the restore of a stack whose client died while it was being instrumented",
    )
    assert waited >= GRACE_SECONDS - 1  # a reconnect could still have saved the session until then
    (session,) = session_items(local_cloud, faults_helper, app.stack_name)[-1:]
    assert session[protocol.A_STATUS] == protocol.STATUS_CLOSED
    error, answer = invoke(local_cloud, app.name("FaultsEcho"), {"after": "kill"})
    assert (error, answer) == (None, {"echo": {"after": "kill"}})  # the deployed code, in the cloud


def test_kill_9_during_an_invocation_answers_it_before_the_function_times_out_and_restores(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
) -> None:
    app = restored_app
    function = app.name("FaultsModes")
    before = snapshot(local_cloud, app)
    attach = attach_modes(start_attach, faults_helper, app, "--function-timeout", "4")
    error, answer = invoke(local_cloud, function, {"warm": True})  # the environment starts outside the clock
    assert error is None and answer["echo"] == {"warm": True}

    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        pending = pool.submit(invoke, local_cloud, function, {"mode": "sleep", "seconds": 60})
        attach.wait_for("invocation_started", count=2)
        request_id = attach.named("invocation_started")[1]["requestId"]
        workers = child_pids(attach.process.pid)
        assert len(workers) == 1  # the worker process running the sleeping handler
        attach.process.kill()
        attach.process.wait(10)
        error, answer = pending.result(timeout=30)
        answered_after = time.monotonic() - started

    assert (error, answer) == (
        "Unhandled",
        {
            "errorMessage": debugger_timeout_message(4, app.stack_name),
            "errorType": "PlldbDebuggerTimeout",
            "requestId": request_id,
            "stackTrace": [],
        },
    )
    assert answered_after < 4, "plldb answers before Lambda's own timeout would end the invocation"
    wait_until(
        lambda: not any(running(pid) for pid in workers), timeout=10, what="the orphaned worker to exit"
    )
    wait_until(
        lambda: fully_restored(local_cloud, faults_helper, app, before),
        timeout=RESTORE_BOUND_SECONDS,
        what="the restore after attach was killed mid-invocation",
    )


def test_a_connection_cut_mid_invocation_still_delivers_the_answer_once(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
) -> None:
    app = restored_app
    function = app.name("FaultsModes")
    before = snapshot(local_cloud, app)
    attach = attach_modes(start_attach, faults_helper, app)
    first_connection = connection_of(local_cloud, faults_helper, app)

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(invoke, local_cloud, function, {"mode": "sleep", "seconds": 1.5})
        attach.wait_for("invocation_started")
        local_cloud.gateway.cut(first_connection)
        attach.wait_for("reconnected", timeout=30)
        error, answer = pending.result(timeout=60)

    assert error is None and answer["echo"] == {"mode": "sleep", "seconds": 1.5}
    assert connection_of(local_cloud, faults_helper, app) not in (first_connection, None)
    request_id = attach.named("invocation_started")[0]["requestId"]
    assert [e["requestId"] for e in attach.wait_for("invocation_delivered")] == [request_id]
    assert [e["requestId"] for e in attach.named("invocation_finished")] == [request_id]
    assert attach.named("connection_lost")[0]["reason"] == "the connection closed (code 1006)"

    assert attach.stop(signal.SIGINT) == 0
    assert fully_restored(local_cloud, faults_helper, app, before)


def test_a_restarted_websocket_gateway_is_survived_by_reconnecting(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
) -> None:
    app = restored_app
    function = app.name("FaultsModes")
    before = snapshot(local_cloud, app)
    attach = attach_modes(start_attach, faults_helper, app)
    assert invoke(local_cloud, function, {"n": 1})[1]["echo"] == {"n": 1}

    local_cloud.gateway.restart()
    attach.wait_for("reconnected", timeout=30)
    assert invoke(local_cloud, function, {"n": 2})[1]["echo"] == {"n": 2}
    # The old connection's $disconnect must not restore the stack once its grace period is over.
    time.sleep(GRACE_SECONDS + 2)
    error, answer = invoke(local_cloud, function, {"n": 3})
    assert (error, answer["echo"]) == (None, {"n": 3})
    assert len(attach.named("invocation_started")) == 3  # all three ran here, none in the cloud
    assert len(attach.wait_for("invocation_delivered", count=3)) == 3
    assert len(attach.named("ready")) == 1

    assert attach.stop(signal.SIGINT) == 0
    assert fully_restored(local_cloud, faults_helper, app, before)


def test_a_second_developer_is_refused_in_one_line_and_take_over_hands_the_stack_over(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
    attach_environment: dict[str, str],
) -> None:
    app = restored_app
    before = snapshot(local_cloud, app)
    first = attach_modes(start_attach, faults_helper, app)
    during = snapshot(local_cloud, app)
    (session,) = live_sessions(local_cloud, faults_helper, app.stack_name)
    sessions_before = session_items(local_cloud, faults_helper, app.stack_name)

    refused = run_plldb(
        attach_environment,
        app.directory,
        "attach",
        "--stack-name",
        app.stack_name,
        "--helper-stack",
        faults_helper.stack_name,
    )
    assert (refused.returncode, refused.stderr.splitlines(), refused.stdout) == (
        1,
        [
            f"Error: Stack {app.stack_name!r} is already being debugged by {owner_of(local_cloud)} "
            f"(since {describe_time(int(session[protocol.A_CREATED_AT]))}). "
            "Ask them to detach, or run again with --take-over to end their session."
        ],
        "",
    )
    assert snapshot(local_cloud, app) == during
    assert session_items(local_cloud, faults_helper, app.stack_name) == sessions_before

    second = attach_modes(start_attach, faults_helper, app, "--take-over")
    assert first.process.wait(30) == 1
    assert first.named("error")[-1]["message"] == (
        f"The session was ended elsewhere: Another plldb command restored stack {app.stack_name} and closed "
        f"this session: Stack {app.stack_name} restored (1 function)"
    )
    error, answer = invoke(local_cloud, app.name("FaultsModes"), {"by": "second"})
    assert (error, answer["echo"]) == (None, {"by": "second"})
    assert (len(first.named("invocation_started")), len(second.named("invocation_started"))) == (0, 1)

    assert second.stop(signal.SIGINT) == 0
    assert fully_restored(local_cloud, faults_helper, app, before)
