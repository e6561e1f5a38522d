"""Faults of the debugging session, end to end: attach killed, connections cut, the gateway restarted,
two developers on one stack.

Each test ends with every function exactly as deployed (its configuration, aliases, versions and its
role's tags and policies), no session left open and no stack lock left behind, and checks the exact
answer the invoker got. Nothing here waits for time to pass to show that something did not happen:
the helper stack's decisions are read from its logs in CloudWatch Logs and from its tables.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack
from tests.attach.test_attach_e2e import AttachProcess, invoke
from tests.cloud_state import (
    live_sessions,
    locks,
    manager_records,
    routes_records,
    session_item,
    stack_id_of,
    variables,
    wait_for,
)
from tests.faults.faults_support import (
    CROWDED,
    GRACE_SECONDS,
    INSTRUMENTABLE,
    FaultsApp,
    Sweeps,
    child_pids,
    debugger_timeout_message,
    fully_restored,
    killed_without_disconnect,
    owner_of,
    run_plldb,
    running,
    second_developer,
    snapshot,
    utc_text,
)
from tests.faults.held_requests import function_update, held_requests

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a liveness guard, never a bound

DISCONNECTED = "session disconnected; restore scheduled unless it reconnects"
RESTORED = "session restored"
NOTHING_TO_RESTORE = "session reconnected or closed meanwhile; nothing to restore"
REPLACED = "disconnect of a replaced connection"
WORKING_IN = "Working in account 123456789012, region us-east-1 (region from your AWS configuration)."


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


def the_session(local_cloud: Any, helper: HelperStack, app: FaultsApp) -> dict[str, Any]:
    (session,) = live_sessions(local_cloud, helper, app.stack_name)
    return session


def logged_at(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["time"]).timestamp()


def assert_restored_by_the_helper_stack_after_the_grace_period(
    local_cloud: Any, helper: HelperStack, app: FaultsApp, before: dict[str, Any], session_id: str
) -> None:
    """The session's $disconnect scheduled its restore; the manager waited out the grace period, found
    the connection gone, closed the session and put every function (and its role) back exactly."""
    restored = wait_for(
        lambda: manager_records(local_cloud, helper, RESTORED, session_id),
        "the helper stack's restore of the stack of a client that died",
    )
    # The record is written once every function of the stack was handled.
    assert snapshot(local_cloud, app) == before
    assert live_sessions(local_cloud, helper, app.stack_name) == []
    assert stack_id_of(local_cloud, app.stack_name) not in locks(local_cloud, helper)
    (disconnected,) = routes_records(local_cloud, helper, DISCONNECTED, session_id)
    assert disconnected["graceSeconds"] == GRACE_SECONDS
    assert [(r["stackId"], r["failed"]) for r in restored] == [(stack_id_of(local_cloud, app.stack_name), 0)]
    # The $disconnect handed the session to the manager with the grace period (a reconnect within it
    # would have won); the restore came after it.
    assert logged_at(restored[0]) > logged_at(disconnected)
    closed = session_item(local_cloud, helper, session_id)
    assert closed is not None
    assert (closed[protocol.A_STATUS], closed[protocol.A_CLOSED_REASON]) == (
        protocol.STATUS_CLOSED,
        protocol.CLOSED_ABANDONED,
    )


def test_kill_9_during_instrumentation_with_an_update_in_flight_is_restored_by_the_helper_stack(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    attach_environment: dict[str, str],
) -> None:
    app = restored_app
    before = snapshot(local_cloud, app)
    held = app.name("FaultsModes")
    with held_requests(local_cloud.endpoint_url) as forwarder:
        barrier = forwarder.hold(function_update(held))
        attach = AttachProcess(
            app.directory,
            {**attach_environment, "AWS_ENDPOINT_URL": forwarder.endpoint_url},
            "--stack-name",
            app.stack_name,
            "--helper-stack",
            faults_helper.stack_name,
        )
        try:
            barrier.wait_until_held()
            attach.wait_for("progress", count=5)  # started, 3 instrumented, 1 refused; FaultsModes held
            # The helper stack must not act before the update lands: this connection's $disconnect is lost
            # (API Gateway's best effort), so only the sweep, fired below, can restore the stack.
            session = killed_without_disconnect(local_cloud, faults_helper, app, attach)
        finally:
            attach.close()
        # The update was sent before the process died: Lambda applies it all the same.
        barrier.release(forward=True)
        assert barrier.forwarded.wait(120)
    assert not attach.named("ready")
    session_id = str(session[protocol.A_SESSION_ID])
    assert variables(local_cloud, held)[protocol.ENV_SESSION_ID] == session_id

    sweeps = Sweeps(local_cloud, faults_helper)
    assert sweeps.fire()["restored"] == 0  # the connection is gone: the grace period starts
    noticed = session_item(local_cloud, faults_helper, session_id) or {}
    wait_for(
        lambda: time.time() >= int(noticed[protocol.A_DISCONNECTED_AT]) + GRACE_SECONDS + 1,
        "the grace period to pass",
    )
    assert sweeps.fire()["restored"] == 1
    assert manager_records(local_cloud, faults_helper, RESTORED, session_id)
    assert fully_restored(local_cloud, faults_helper, app, before)  # roles included
    closed = session_item(local_cloud, faults_helper, session_id) or {}
    assert (closed[protocol.A_STATUS], closed[protocol.A_CLOSED_REASON]) == (
        protocol.STATUS_CLOSED,
        protocol.CLOSED_ABANDONED,
    )


def test_kill_9_during_instrumentation_before_an_update_is_sent_is_restored_after_the_grace_period(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    attach_environment: dict[str, str],
) -> None:
    app = restored_app
    before = snapshot(local_cloud, app)
    held = app.name("FaultsModes")
    with held_requests(local_cloud.endpoint_url) as forwarder:
        # attach stops exactly inside the instrumentation of FaultsModes: its role is tagged and carries
        # plldb's policy, its configuration update is on its way; the other functions are done.
        barrier = forwarder.hold(function_update(held))
        attach = AttachProcess(
            app.directory,
            {**attach_environment, "AWS_ENDPOINT_URL": forwarder.endpoint_url},
            "--stack-name",
            app.stack_name,
            "--helper-stack",
            faults_helper.stack_name,
        )
        try:
            barrier.wait_until_held()
            progress = attach.wait_for("progress", count=5)  # started, 3 instrumented, 1 refused
            assert sorted((e["status"], e["function"]) for e in progress[1:]) == sorted(
                [("failed", app.name(CROWDED))]
                + [("ok", app.name(i)) for i in INSTRUMENTABLE if i != "FaultsModes"]
            )
            session_id = str(the_session(local_cloud, faults_helper, app)[protocol.A_SESSION_ID])
            assert snapshot(local_cloud, app)[held]["role"]["tags"] == sorted(
                [*before[held]["role"]["tags"], (protocol.role_tag_key("us-east-1", held), session_id)]
            )
            attach.process.kill()
            attach.process.wait(10)
        finally:
            attach.close()
        barrier.release(forward=False)  # the killed process's update never reaches Lambda
    assert not attach.named("ready")

    assert_restored_by_the_helper_stack_after_the_grace_period(
        local_cloud, faults_helper, app, before, session_id
    )
    error, answer = invoke(local_cloud, app.name("FaultsEcho"), {"after": "kill"})
    assert (error, answer) == (None, {"echo": {"after": "kill"}})  # the deployed code, in the cloud


def test_kill_9_while_idle_answers_not_attached_and_is_restored_after_the_grace_period(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
) -> None:
    app = restored_app
    function = app.name("FaultsModes")
    before = snapshot(local_cloud, app)
    attach = attach_modes(start_attach, faults_helper, app)
    session_id = str(the_session(local_cloud, faults_helper, app)[protocol.A_SESSION_ID])
    role = snapshot(local_cloud, app)[function]["role"]
    assert role["tags"] == sorted(
        [*before[function]["role"]["tags"], (protocol.role_tag_key("us-east-1", function), session_id)]
    )
    assert role["policies"] == sorted(
        [*before[function]["role"]["policies"], faults_helper.instrumented_function_policy_arn]
    )
    attach.process.kill()
    attach.process.wait(10)

    error, answer = invoke(local_cloud, function, {"nobody": "home"})
    assert error == "Unhandled"
    assert answer["errorType"] == "PlldbNotAttached"
    assert answer["errorMessage"].startswith("plldb is not attached to this function's stack: ")
    assert answer["errorMessage"].endswith(
        "Run `plldb attach` in the stack's project to debug it, or `plldb detach --stack-name STACK` to "
        "remove plldb's instrumentation from the stack's functions."
    )

    assert_restored_by_the_helper_stack_after_the_grace_period(
        local_cloud, faults_helper, app, before, session_id
    )
    error, answer = invoke(local_cloud, function, {"n": 1})
    assert (error, answer["echo"]) == (None, {"n": 1})


def test_kill_9_during_an_invocation_answers_it_before_the_function_times_out_and_restores(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
) -> None:
    app = restored_app
    function = app.name("FaultsModes")
    before = snapshot(local_cloud, app)
    # The grace period (3 s) is no shorter than the time plldb waits for an answer (4 s - 1 s), so the
    # invocation ends at its deadline margin, not because the session closed.
    attach = attach_modes(start_attach, faults_helper, app, "--function-timeout", "4")
    session_id = str(the_session(local_cloud, faults_helper, app)[protocol.A_SESSION_ID])
    error, answer = invoke(local_cloud, function, {"warm": True})
    assert error is None and answer["echo"] == {"warm": True}

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(invoke, local_cloud, function, {"mode": "sleep", "seconds": 60})
        attach.wait_for("invocation_started", count=2)
        request_id = attach.named("invocation_started")[1]["requestId"]
        workers = wait_for(lambda: child_pids(attach.process.pid), "the worker running the handler")
        assert len(workers) == 1
        attach.process.kill()
        attach.process.wait(10)
        error, answer = pending.result(timeout=120)

    # plldb's own answer, not Lambda's "Task timed out": the caller learns why and what to do.
    assert (error, answer) == (
        "Unhandled",
        {
            "errorMessage": debugger_timeout_message(4),
            "errorType": "PlldbDebuggerTimeout",
            "requestId": request_id,
            "stackTrace": [],
        },
    )
    wait_for(lambda: not any(running(pid) for pid in workers), "the orphaned worker to exit")
    assert_restored_by_the_helper_stack_after_the_grace_period(
        local_cloud, faults_helper, app, before, session_id
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
    first_connection = str(the_session(local_cloud, faults_helper, app)[protocol.A_CONNECTION_ID])

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(invoke, local_cloud, function, {"mode": "sleep", "seconds": 1.5})
        attach.wait_for("invocation_started")
        local_cloud.gateway.cut(first_connection)
        attach.wait_for("reconnected")
        error, answer = pending.result(timeout=120)

    assert error is None and answer["echo"] == {"mode": "sleep", "seconds": 1.5}
    assert the_session(local_cloud, faults_helper, app)[protocol.A_CONNECTION_ID] != first_connection
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
    session_id = str(the_session(local_cloud, faults_helper, app)[protocol.A_SESSION_ID])
    assert invoke(local_cloud, function, {"n": 1})[1]["echo"] == {"n": 1}

    local_cloud.gateway.restart()
    attach.wait_for("reconnected")
    assert invoke(local_cloud, function, {"n": 2})[1]["echo"] == {"n": 2}
    # The old connection's $disconnect must not restore the stack: either it arrived after the session
    # moved to the new connection (the routes ignore it), or the manager, after the grace period, finds
    # the session on another connection. Either decision is logged; wait for it.
    decision = wait_for(
        lambda: (
            routes_records(local_cloud, faults_helper, REPLACED, session_id)
            or manager_records(local_cloud, faults_helper, NOTHING_TO_RESTORE, session_id)
        ),
        "the helper stack's decision about the old connection's $disconnect",
    )
    assert len(decision) == 1
    assert not manager_records(local_cloud, faults_helper, RESTORED, session_id)
    assert variables(local_cloud, function)[protocol.ENV_SESSION_ID] == session_id
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
    bob = second_developer(local_cloud, attach_environment)
    before = snapshot(local_cloud, app)
    first = attach_modes(start_attach, faults_helper, app)
    during = snapshot(local_cloud, app)
    session = the_session(local_cloud, faults_helper, app)
    assert session[protocol.A_OWNER] == owner_of(local_cloud) != bob.arn
    stack_locks = locks(local_cloud, faults_helper)

    refused = run_plldb(
        bob.environment,
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
            f"(since {utc_text(session[protocol.A_CREATED_AT])}). Ask them to detach, or run again with "
            "--take-over: plldb then restores the stack's functions with your credentials and ends their "
            "session."
        ],
        f"{WORKING_IN}\n"
        f"Recording each invocation in {app.directory / '.plldb' / 'recordings'} ('plldb recordings', "
        "'plldb replay'; --no-record turns it off).\n"
        f"Connecting to the helper stack {faults_helper.stack_name} (us-east-1) for stack {app.stack_name}...\n"
        "Connected; instrumenting the functions...\n",
    )
    assert snapshot(local_cloud, app) == during
    assert live_sessions(local_cloud, faults_helper, app.stack_name) == [session]
    assert locks(local_cloud, faults_helper) == stack_locks

    second = AttachProcess(
        app.directory,
        bob.environment,
        "--stack-name",
        app.stack_name,
        "--helper-stack",
        faults_helper.stack_name,
        "-f",
        "FaultsModes",
        "--take-over",
    )
    try:
        assert second.wait_for("ready")[0]["functions"] == [app.name("FaultsModes")]
        assert first.process.wait(60) == 1
        assert first.named("error")[-1]["message"] == (
            f"The session was ended elsewhere: stack {app.stack_name} was restored and released by {bob.arn}"
        )
        (bobs,) = live_sessions(local_cloud, faults_helper, app.stack_name)
        assert bobs[protocol.A_OWNER] == bob.arn
        ended = session_item(local_cloud, faults_helper, str(session[protocol.A_SESSION_ID]))
        assert ended is not None
        assert (ended[protocol.A_STATUS], ended[protocol.A_CLOSED_REASON], ended[protocol.A_CLOSED_BY]) == (
            protocol.STATUS_CLOSED,
            protocol.CLOSED_RELEASED,
            bob.arn,
        )
        error, answer = invoke(local_cloud, app.name("FaultsModes"), {"by": "second"})
        assert (error, answer["echo"]) == (None, {"by": "second"})
        assert (len(first.named("invocation_started")), len(second.named("invocation_started"))) == (0, 1)
        assert second.stop(signal.SIGINT) == 0
    finally:
        second.close()
    assert fully_restored(local_cloud, faults_helper, app, before)
