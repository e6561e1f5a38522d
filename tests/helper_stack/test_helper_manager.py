"""The manager: it restores the functions of sessions nobody debugs any more, and nothing else, whoever asks.

Sessions are opened through the routes and the functions instrumented with the developer's clients, as
plldb attach does; the manager then runs as Lambda would run it, with its own role's clients.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import pytest
from helper_stack_events import BOB
from helper_stack_sessions import OK, AttachedStack, Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plldb import protocol
from plldb.bootstrap.cloudformation.handlers import manager
from plldb.instrumentation import functions

OWN_WRAPPER = "/opt/observability/wrapper.sh"


class Sleeps:
    """The manager's injected sleep: records each wait, and runs what happens meanwhile."""

    def __init__(self, meanwhile: Any = None) -> None:
        self.waits: list[float] = []
        self.meanwhile = meanwhile

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.meanwhile is not None:
            self.meanwhile()


def abandoned(attached: AttachedStack, not_before: float | None = None) -> dict[str, Any]:
    """What $disconnect (or the dispatcher) hands the manager for this session."""
    return {
        "action": "restore_if_abandoned",
        "sessionId": attached.client.session_id,
        "connectionId": attached.client.connection_id,
        "notBefore": time.time() + 10 if not_before is None else not_before,
    }


@pytest.fixture
def attached(helper, app) -> AttachedStack:
    return AttachedStack(helper, app)


# --- restore_if_abandoned -------------------------------------------------------------------------------
def test_an_abandoned_session_is_restored_after_the_grace_period_exactly_as_deployed(helper, attached):
    helper.management.go(attached.client.connection_id)
    sleeps = Sleeps()

    result = manager.handle(abandoned(attached), helper.manager, sleep=sleeps)

    assert len(sleeps.waits) == 1 and 9 < sleeps.waits[0] <= 10
    assert (result["action"], result["restored"]) == ("restore_if_abandoned", True)
    assert sorted((f["logicalId"], f["status"], f["message"]) for f in result["functions"]) == [
        ("Api/Handler", "ok", "restored"),
        ("Fn0", "ok", "restored"),
        ("Fn1", "ok", "restored"),
    ]
    assert attached.snapshots() == attached.before
    session = attached.client.session()
    assert (session[protocol.A_STATUS], session[protocol.A_CLOSED_REASON]) == (
        protocol.STATUS_CLOSED,
        protocol.CLOSED_ABANDONED,
    )
    assert helper.lock_item(attached.stack_id) is None


def test_a_live_connection_is_never_restored_whoever_asks(helper, attached):
    before = attached.snapshots()
    checked = len(helper.management.checked)

    result = manager.handle(abandoned(attached, not_before=0), helper.manager, sleep=Sleeps())

    assert result == {"action": "restore_if_abandoned", "restored": False, "functions": []}
    assert helper.management.checked[checked:] == [attached.client.connection_id]
    assert attached.snapshots() == before
    assert attached.client.session()[protocol.A_STATUS] == protocol.STATUS_ACTIVE
    assert helper.lock_item(attached.stack_id)[protocol.A_SESSION_ID] == attached.client.session_id


def test_a_session_that_reconnects_within_the_grace_period_is_kept(helper, attached):
    request = abandoned(attached)
    helper.management.go(attached.client.connection_id)
    sleeps = Sleeps(meanwhile=lambda: attached.client.reconnect() == OK or pytest.fail("reconnect refused"))
    before = attached.snapshots()

    result = manager.handle(request, helper.manager, sleep=sleeps)

    assert len(sleeps.waits) == 1, "the check came after the wait"
    assert result == {"action": "restore_if_abandoned", "restored": False, "functions": []}
    assert attached.snapshots() == before
    assert attached.client.session()[protocol.A_STATUS] == protocol.STATUS_ACTIVE


def test_a_session_closed_meanwhile_is_not_restored_again(helper, attached):
    helper.management.go(attached.client.connection_id)
    helper.update_session(attached.client.session_id, **{protocol.A_STATUS: protocol.STATUS_CLOSED})
    before = attached.snapshots()
    result = manager.handle(abandoned(attached, not_before=0), helper.manager, sleep=Sleeps())
    assert result == {"action": "restore_if_abandoned", "restored": False, "functions": []}
    assert attached.snapshots() == before


def test_the_grace_wait_is_bounded_whatever_the_request_says(helper, attached):
    sleeps = Sleeps()
    manager.handle(abandoned(attached, not_before=time.time() + 86_400), helper.manager, sleep=sleeps)
    assert sleeps.waits == [manager.MAX_GRACE_WAIT_SECONDS]
    sleeps = Sleeps()
    manager.handle(abandoned(attached, not_before=time.time() - 5), helper.manager, sleep=sleeps)
    assert sleeps.waits == []


# --- restore_session ------------------------------------------------------------------------------------
def test_restore_session_restores_only_a_closed_session(helper, attached):
    before = attached.snapshots()
    refused = manager.handle(
        {"action": "restore_session", "sessionId": attached.client.session_id}, helper.manager
    )
    assert refused == {
        "action": "restore_session",
        "restored": False,
        "functions": [],
        "error": "the session is not closed",
    }
    assert attached.snapshots() == before

    helper.update_session(attached.client.session_id, **{protocol.A_STATUS: protocol.STATUS_CLOSED})
    result = manager.handle(
        {"action": "restore_session", "sessionId": attached.client.session_id}, helper.manager
    )

    assert (result["restored"], len(result["functions"])) == (True, 3)
    assert attached.snapshots() == attached.before
    assert helper.lock_item(attached.stack_id) is None


def test_restore_session_of_an_unknown_session_changes_nothing(helper):
    before = helper.snapshot()
    result = manager.handle({"action": "restore_session", "sessionId": str(uuid.uuid4())}, helper.manager)
    assert result["restored"] is False
    assert helper.snapshot() == before


def test_a_function_taken_over_by_another_session_is_left_to_it(helper, app, attached):
    """Bob took the stack over and instrumented Fn0 for his session; Alice's dead session's restore
    leaves Fn0 to Bob and restores the rest."""
    bob = Client(helper, BOB)
    assert bob.connect() == OK
    name = attached.functions["Fn0"]
    bob_target = dataclasses.replace(attached.target(), session_id=bob.session_id)
    assert functions.instrument(attached.clients, functions.FunctionRef(name, "Fn0"), bob_target).ok
    helper.update_session(attached.client.session_id, **{protocol.A_STATUS: protocol.STATUS_CLOSED})

    result = manager.handle(
        {"action": "restore_session", "sessionId": attached.client.session_id}, helper.manager
    )

    assert sorted((f["logicalId"], f["status"], f["message"]) for f in result["functions"]) == [
        ("Api/Handler", "ok", "restored"),
        ("Fn0", "skipped", "instrumented by another session; left alone"),
        ("Fn1", "ok", "restored"),
    ]
    assert attached.instrumented_for() == {"Api/Handler": None, "Fn0": bob.session_id, "Fn1": None}
    assert app.role_tags(attached.role) == {f"plldb:fn:us-east-1:{name}": bob.session_id}
    assert app.attached_policies(attached.role) == [helper.policy_arn], "Fn0 still uses the role"


def test_the_policy_is_detached_with_the_last_plldb_tag_of_a_role_only(helper, app):
    """One role for the stack's functions and for a function of another stack that another session
    instruments: restoring the first session keeps the policy for the other."""
    shared = AttachedStack(helper, app)
    other = app.create_function(role=shared.role)
    bob = Client(helper, BOB)
    assert bob.connect() == OK
    bob_target = dataclasses.replace(shared.target(), session_id=bob.session_id)
    assert functions.instrument(shared.clients, functions.FunctionRef(other, "Other"), bob_target).ok
    helper.update_session(shared.client.session_id, **{protocol.A_STATUS: protocol.STATUS_CLOSED})

    manager.handle({"action": "restore_session", "sessionId": shared.client.session_id}, helper.manager)

    assert app.role_tags(shared.role) == {f"plldb:fn:us-east-1:{other}": bob.session_id}
    assert app.attached_policies(shared.role) == [helper.policy_arn]
    assert functions.restore(shared.clients, functions.FunctionRef(other, "Other"), bob.session_id).ok
    assert (app.role_tags(shared.role), app.attached_policies(shared.role)) == ({}, [])


def _with_aliases(app: Any, functions_of_stack: dict[str, str]) -> None:
    name = functions_of_stack["Fn0"]
    first = app.lambda_client.publish_version(FunctionName=name)["Version"]
    app.lambda_client.update_function_configuration(FunctionName=name, Description="v2")
    second = app.lambda_client.publish_version(FunctionName=name)["Version"]
    app.lambda_client.create_alias(
        FunctionName=name,
        Name="live",
        FunctionVersion=second,
        RoutingConfig={"AdditionalVersionWeights": {first: 0.1}},
    )


def test_the_manager_points_aliases_back_and_deletes_plldbs_versions(helper, app):
    attached = AttachedStack(helper, app, prepare=_with_aliases)
    name = attached.functions["Fn0"]
    assert any(d.startswith("plldb session ") for d in app.versions(name).values())
    helper.update_session(attached.client.session_id, **{protocol.A_STATUS: protocol.STATUS_CLOSED})

    result = manager.handle(
        {"action": "restore_session", "sessionId": attached.client.session_id}, helper.manager
    )

    fn0 = next(f for f in result["functions"] if f["logicalId"] == "Fn0")
    assert fn0["status"] == "ok"
    assert fn0["message"].startswith("restored; alias live back on version ")
    assert attached.snapshots() == attached.before


def test_the_manager_takes_a_dead_shared_session_out_of_a_function_with_aliases(helper, app):
    """Alice and Bob share Fn0 with --match; Alice's session dies. The manager leaves the function to Bob:
    his entry only, the alias on a version that carries just him (every call it makes is one its role
    may make: PublishVersion included), and Bob's restore then puts everything back exactly."""
    attached = AttachedStack(helper, app, prepare=_with_aliases, count=1, nested=False)
    name = attached.functions["Fn0"]
    fn0 = functions.FunctionRef(name, "Fn0")
    assert functions.restore(attached.clients, fn0, attached.client.session_id).ok
    alice, bob = attached.client.session_id, str(uuid.uuid4())
    for session_id, match in ((alice, "user == 'alice'"), (bob, "user == 'bob'")):
        target = dataclasses.replace(
            attached.target(),
            session_id=session_id,
            entry=protocol.session_entry(session_id, False, match, 1.0),
        )
        assert functions.instrument(attached.clients, fn0, target).ok
    helper.update_session(alice, **{protocol.A_STATUS: protocol.STATUS_CLOSED})

    result = manager.handle({"action": "restore_session", "sessionId": alice}, helper.manager)

    [outcome] = result["functions"]
    live = app.aliases(name)["live"][0]
    assert (outcome["status"], outcome["message"]) == (
        "ok",
        f"left to the other sessions; aliases live now on version {live}",
    )
    for qualifier in (None, live):
        listed = protocol.parse_sessions(app.variables(name, qualifier)[protocol.ENV_SESSIONS])
        assert [entry["id"] for entry in listed] == [bob]
    assert functions.restore(attached.clients, fn0, bob).ok
    assert attached.snapshots() == attached.before


def test_restoring_a_settled_function_costs_one_read_one_alias_listing_and_one_write(helper, app):
    """Lambda allows 15 control-plane requests a second per account: a large stack must not spend them
    on reading again what the manager has just read."""
    attached = AttachedStack(helper, app)
    helper.update_session(attached.client.session_id, **{protocol.A_STATUS: protocol.STATUS_CLOSED})
    recorder = helper.recorders["ManagerFunction"]
    already = len(recorder.calls)

    manager.handle({"action": "restore_session", "sessionId": attached.client.session_id}, helper.manager)

    per_function: dict[str, list[str]] = {}
    for call in recorder.calls[already:]:
        if call.service == "lambda":
            per_function.setdefault(call.params["FunctionName"], []).append(call.operation)
    assert per_function == {
        name: ["GetFunctionConfiguration", "ListAliases", "UpdateFunctionConfiguration"]
        for name in attached.functions.values()
    }


# --- The property: whatever was deployed comes back ---------------------------------------------------------
variable_names = st.from_regex(r"[A-Z][A-Z0-9_]{0,15}", fullmatch=True).filter(
    lambda name: not name.startswith(("AWS_", "PLLDB_", "DEBUGGER_", "LAMBDA_", "_"))
)
variable_values = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40)


@st.composite
def deployed_configurations(draw: Any) -> dict[str, Any]:
    variables = draw(st.one_of(st.none(), st.dictionaries(variable_names, variable_values, max_size=5)))
    if variables is not None and draw(st.booleans()):
        variables["AWS_LAMBDA_EXEC_WRAPPER"] = OWN_WRAPPER
    return {
        "variables": variables,
        "layers": draw(st.lists(st.integers(0, 4), unique=True, max_size=4)),
        "timeout": draw(st.integers(1, 900)),
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deployed=deployed_configurations(), how=st.sampled_from(["restore_session", "restore_if_abandoned"]))
def test_whatever_was_deployed_the_manager_restores_exactly_that(helper, app, deployed, how):
    def deploy(app: Any, stack_functions: dict[str, str]) -> None:
        arguments: dict[str, Any] = {
            "Layers": [app.layers[i] for i in deployed["layers"]],
            "Timeout": deployed["timeout"],
        }
        if deployed["variables"] is not None:
            arguments["Environment"] = {"Variables": deployed["variables"]}
        for name in stack_functions.values():
            app.lambda_client.update_function_configuration(FunctionName=name, **arguments)

    attached = AttachedStack(helper, app, prepare=deploy, count=1, nested=False)
    session_id = attached.client.session_id
    if how == "restore_session":
        helper.update_session(session_id, **{protocol.A_STATUS: protocol.STATUS_CLOSED})
        manager.handle({"action": "restore_session", "sessionId": session_id}, helper.manager)
    else:
        helper.management.go(attached.client.connection_id)
        manager.handle(abandoned(attached, not_before=0), helper.manager, sleep=Sleeps())

    assert attached.snapshots() == attached.before


# --- status and bad requests ------------------------------------------------------------------------------------
def test_status_lists_live_sessions_with_their_owner_and_stack(helper, attached):
    helper.update_session(attached.client.session_id, **{protocol.A_CREATED_AT: 1767225600})
    mine = [
        s
        for s in manager.handle({"action": "status"}, helper.manager)["activeSessions"]
        if s["stackId"] == attached.stack_id
    ]
    assert mine == [
        {
            "stackName": attached.stack_name,
            "stackId": attached.stack_id,
            "owner": attached.client.caller.user_arn,
            "createdAt": 1767225600,
            "disconnectedAt": None,
        }
    ]
    helper.update_session(attached.client.session_id, **{protocol.A_TTL: int(time.time()) - 1})
    listed = manager.handle({"action": "status"}, helper.manager)["activeSessions"]
    assert [s for s in listed if s["stackId"] == attached.stack_id] == []


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"action": "explode"}, "unknown action 'explode'"),
        ({}, "unknown action None"),
        ({"action": "restore_session"}, "the 'restore_session' action needs a non-empty string 'sessionId'"),
        (
            {"action": "restore_session", "sessionId": 7},
            "the 'restore_session' action needs a non-empty string 'sessionId'",
        ),
        (
            {"action": "restore_if_abandoned", "sessionId": "s"},
            "the 'restore_if_abandoned' action needs a non-empty string 'connectionId'",
        ),
        (
            {"action": "restore_if_abandoned", "sessionId": "s", "connectionId": "c", "notBefore": "soon"},
            "the 'restore_if_abandoned' action needs a number 'notBefore'",
        ),
    ],
)
def test_bad_requests_fail_with_one_clear_message_and_change_nothing(helper, event, message):
    before = helper.snapshot()
    with pytest.raises(manager.ManagerError) as failed:
        manager.handle(event, helper.manager, sleep=Sleeps())
    assert str(failed.value) == message
    assert helper.snapshot() == before
