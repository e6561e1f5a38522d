"""The dead-man's switch: API Gateway delivers ``$disconnect`` on a best-effort basis, so a developer whose
plldb dies without one must still get their stack restored, and must not keep it locked.

The gateway's fault hook drops the ``$disconnect`` of the attach's connection; the sweep (an EventBridge
schedule, ``rate(1 minute)`` by default) is fired through the local cloud's scheduler with injected
times, never by waiting for the timer: the first sweep after the loss finds the connection gone and
starts the grace period, the first sweep at least the grace period later restores the stack. With the
default schedule and grace period (10 s, shorter than a period), that is the second sweep after the
loss: the stack is restored within two sweep periods, plus the manager's own work.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack
from tests.attach.test_attach_e2e import AttachProcess, invoke
from tests.cloud_state import (
    live_sessions,
    manager_records,
    routes_records,
    session_item,
    variables,
    wait_for,
)
from tests.faults.faults_support import (
    GRACE_SECONDS,
    FaultsApp,
    Sweeps,
    fully_restored,
    killed_without_disconnect,
    snapshot,
)
from tests.faults.held_requests import HeldRequests, function_update, held_requests, role_tagging

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a liveness guard, never a bound


def attach_modes(
    start_attach: Callable[..., AttachProcess], helper: HelperStack, app: FaultsApp
) -> AttachProcess:
    attach = start_attach(
        app.directory,
        "--stack-name",
        app.stack_name,
        "--helper-stack",
        helper.stack_name,
        "-f",
        "FaultsModes",
    )
    assert attach.wait_for("ready")[0]["functions"] == [app.name("FaultsModes")]
    return attach


def test_a_lost_disconnect_is_restored_by_the_scheduled_sweep(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
) -> None:
    app = restored_app
    function = app.name("FaultsModes")
    before = snapshot(local_cloud, app)
    attach = attach_modes(start_attach, faults_helper, app)
    session = killed_without_disconnect(local_cloud, faults_helper, app, attach)
    session_id = str(session[protocol.A_SESSION_ID])
    # Nothing told the helper stack: the session is still ACTIVE on its (gone) connection.
    assert not routes_records(
        local_cloud, faults_helper, "session disconnected; restore scheduled unless it reconnects", session_id
    )
    assert session_item(local_cloud, faults_helper, session_id) == session

    sweeps = Sweeps(local_cloud, faults_helper)
    first = sweeps.fire()
    # The first sweep finds the connection gone and starts the grace period; it restores nothing yet.
    assert (first["restored"], first["staleLocks"]) == (0, 0)
    noticed = session_item(local_cloud, faults_helper, session_id)
    assert noticed is not None and noticed[protocol.A_STATUS] == protocol.STATUS_ACTIVE
    disconnected_at = int(noticed[protocol.A_DISCONNECTED_AT])
    assert variables(local_cloud, function)[protocol.ENV_SESSION_ID] == session_id

    # A sweep period is longer than the grace period: the next sweep comes after it is over.
    wait_for(lambda: time.time() >= disconnected_at + GRACE_SECONDS + 1, "the grace period to pass")
    second = sweeps.fire()
    assert (second["restored"], second["staleLocks"]) == (1, 0)
    assert manager_records(local_cloud, faults_helper, "session restored", session_id)
    assert fully_restored(local_cloud, faults_helper, app, before)
    closed = session_item(local_cloud, faults_helper, session_id)
    assert closed is not None
    assert (closed[protocol.A_STATUS], closed[protocol.A_CLOSED_REASON]) == (
        protocol.STATUS_CLOSED,
        protocol.CLOSED_ABANDONED,
    )
    error, answer = invoke(local_cloud, function, {"after": "sweep"})
    assert (error, answer["echo"]) == (None, {"after": "sweep"})  # the deployed code, in the cloud


def role_name(local_cloud: Any, function: str) -> str:
    return str(local_cloud.client("lambda").get_function_configuration(FunctionName=function)["Role"]).rsplit(
        "/", 1
    )[-1]


def attach_through(
    forwarder: HeldRequests, environment: dict[str, str], app: FaultsApp, helper: HelperStack
) -> AttachProcess:
    """attach to FaultsModes with its AWS calls going through ``forwarder``."""
    return AttachProcess(
        app.directory,
        {**environment, "AWS_ENDPOINT_URL": forwarder.endpoint_url},
        "--stack-name",
        app.stack_name,
        "--helper-stack",
        helper.stack_name,
        "-f",
        "FaultsModes",
    )


def assert_debugged_by(
    local_cloud: Any, helper: HelperStack, app: FaultsApp, before: dict[str, Any], session_id: str
) -> None:
    """FaultsModes carries the session, and so does its role: the tag naming it and plldb's policy."""
    function = app.name("FaultsModes")
    assert variables(local_cloud, function)[protocol.ENV_SESSION_ID] == session_id
    role = snapshot(local_cloud, app)[function]["role"]
    assert role == {
        "policies": sorted([*before[function]["role"]["policies"], helper.instrumented_function_policy_arn]),
        "tags": sorted(
            [*before[function]["role"]["tags"], (protocol.role_tag_key("us-east-1", function), session_id)]
        ),
    }


def test_a_lock_held_by_a_session_whose_connection_is_gone_does_not_block_the_next_attach(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
    attach_environment: dict[str, str],
) -> None:
    app = restored_app
    function = app.name("FaultsModes")
    before = snapshot(local_cloud, app)
    crashed = attach_modes(start_attach, faults_helper, app)
    dead_id = str(killed_without_disconnect(local_cloud, faults_helper, app, crashed)[protocol.A_SESSION_ID])

    # No sweep has run and no $disconnect came: the dead session still holds the stack's lock. The next
    # attach takes it over; the helper stack hands the dead session to the manager. Here the manager is
    # done before the new attach starts instrumenting (its first change, the role's tag, waits for it).
    with held_requests(local_cloud.endpoint_url) as forwarder:
        barrier = forwarder.hold(role_tagging(role_name(local_cloud, function)))
        again = attach_through(forwarder, attach_environment, app, faults_helper)
        try:
            barrier.wait_until_held()
            wait_for(
                lambda: manager_records(local_cloud, faults_helper, "session restored", dead_id),
                "the manager's restore of the abandoned session",
            )
            barrier.release()
            assert again.wait_for("ready")[0]["functions"] == [function]
            (live,) = live_sessions(local_cloud, faults_helper, app.stack_name)
            assert live[protocol.A_SESSION_ID] != dead_id
            abandoned = session_item(local_cloud, faults_helper, dead_id)
            assert abandoned is not None
            assert (abandoned[protocol.A_STATUS], abandoned[protocol.A_CLOSED_REASON]) == (
                protocol.STATUS_CLOSED,
                protocol.CLOSED_ABANDONED,
            )
            assert_debugged_by(local_cloud, faults_helper, app, before, str(live[protocol.A_SESSION_ID]))

            error, answer = invoke(local_cloud, function, {"to": "the next attach"})
            assert (error, answer["echo"]) == (None, {"to": "the next attach"})
            assert [e["function"] for e in again.wait_for("invocation_finished")] == [function]
            assert again.stop(signal.SIGINT) == 0
        finally:
            again.close()
    assert fully_restored(local_cloud, faults_helper, app, before)


def test_the_abandoned_sessions_cleanup_during_the_next_attachs_instrumentation_leaves_it_intact(
    local_cloud: Any,
    faults_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
    attach_environment: dict[str, str],
) -> None:
    app = restored_app
    function = app.name("FaultsModes")
    before = snapshot(local_cloud, app)
    crashed = attach_modes(start_attach, faults_helper, app)
    dead_id = str(killed_without_disconnect(local_cloud, faults_helper, app, crashed)[protocol.A_SESSION_ID])
    manager = local_cloud.client("lambda").get_function_configuration(
        FunctionName=faults_helper.manager_function_name
    )
    # The manager's first attempt at the abandoned session fails (its first read is refused), as an
    # asynchronous invocation may; Lambda retries it later (up to twice, minutes apart). The retry is
    # made below, at the moment it lands: between the next attach's tagging of the role and its update
    # of the function, an interleaving nothing prevents.
    local_cloud.iam_propagation.deny_next(manager["Role"], "dynamodb:GetItem")
    with held_requests(local_cloud.endpoint_url) as forwarder:
        barrier = forwarder.hold(function_update(function))
        again = attach_through(forwarder, attach_environment, app, faults_helper)
        try:
            barrier.wait_until_held()
            wait_for(
                lambda: [
                    d
                    for d in local_cloud.iam_propagation.denials
                    if d.action.lower() == "dynamodb:getitem"
                    and manager["Role"].rsplit("/", 1)[-1] in d.caller_arn
                ],
                "the manager's failed first attempt",
            )
            retry = local_cloud.client("lambda").invoke(
                FunctionName=faults_helper.manager_function_name,
                Payload=json.dumps({"action": "restore_session", "sessionId": dead_id}).encode(),
            )
            assert json.loads(retry["Payload"].read())["restored"] is True
            barrier.release()
            assert again.wait_for("ready")[0]["functions"] == [function]
            (live,) = live_sessions(local_cloud, faults_helper, app.stack_name)
            assert_debugged_by(local_cloud, faults_helper, app, before, str(live[protocol.A_SESSION_ID]))
            assert again.stop(signal.SIGINT) == 0
        finally:
            again.close()
    assert fully_restored(local_cloud, faults_helper, app, before)
