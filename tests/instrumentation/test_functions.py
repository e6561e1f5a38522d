"""Instrumenting and restoring one function, its aliases and its role, with the developer's clients (moto).

Whatever the function looked like, and wherever plldb was interrupted, restoring puts back exactly what
was deployed: the configuration, the aliases and their weights, the versions, the role's tags and policies.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from plldb import protocol
from plldb.instrumentation import functions
from plldb.instrumentation.functions import FunctionRef

OWN_WRAPPER = "/opt/observability/wrapper.sh"


class Interrupted(BaseException):
    """plldb's process stops here (Ctrl-C, a crash): nothing after this point runs, no cleanup either."""


def interrupt_at(client: Any, operation: str) -> None:
    """The next call of ``operation`` on this client never happens: the process stops right before it."""

    def stop(**_: Any) -> None:
        client.meta.events.unregister(
            f"before-call.{client.meta.service_model.service_name}.{operation}", stop
        )
        raise Interrupted()

    client.meta.events.register(f"before-call.{client.meta.service_model.service_name}.{operation}", stop)


def instrument(plldb: Any, name: str, session_id: str, path: str = "Fn") -> functions.Result:
    return functions.instrument(plldb.clients, FunctionRef(name, path), plldb.target(session_id))


def restore(plldb: Any, name: str, session_id: str | None, path: str = "Fn") -> functions.Result:
    return functions.restore(plldb.clients, FunctionRef(name, path), session_id)


def with_aliases(app: Any, name: str) -> dict[str, str]:
    """Two published versions; 'live' on 2 with 25% to 1, 'canary' on 1, 'latest' on $LATEST."""
    first = app.lambda_client.publish_version(FunctionName=name)["Version"]
    app.lambda_client.update_function_configuration(FunctionName=name, Description="second")
    second = app.lambda_client.publish_version(FunctionName=name)["Version"]
    app.lambda_client.create_alias(
        FunctionName=name,
        Name="live",
        FunctionVersion=second,
        RoutingConfig={"AdditionalVersionWeights": {first: 0.25}},
    )
    app.lambda_client.create_alias(FunctionName=name, Name="canary", FunctionVersion=first)
    app.lambda_client.create_alias(FunctionName=name, Name="latest", FunctionVersion="$LATEST")
    return {"first": first, "second": second}


# --- Instrument ---------------------------------------------------------------------------------------------
def test_instrumenting_adds_the_layer_the_sessions_variables_the_timeout_and_tags_the_role(plldb, app):
    role = app.new_role()
    name = app.create_function(
        role=role,
        variables={"GREETING": "hi", "AWS_LAMBDA_EXEC_WRAPPER": OWN_WRAPPER},
        layers=app.layers[:1],
        timeout=30,
    )
    session = str(uuid.uuid4())

    result = instrument(plldb, name, session)

    assert (result.status, result.message) == ("ok", "instrumented (timeout 60 s)")
    config = app.configuration(name)
    assert config["Environment"]["Variables"] == {
        "GREETING": "hi",
        protocol.ENV_EXEC_WRAPPER: protocol.LAYER_WRAPPER_PATH,
        protocol.ENV_ORIGINAL_EXEC_WRAPPER: OWN_WRAPPER,
        protocol.ENV_SESSION_ID: session,
        protocol.ENV_DISPATCHER: plldb.dispatcher_arn,
        protocol.ENV_INVOCATIONS_TABLE: plldb.invocations_table,
        protocol.ENV_PAYLOAD_BUCKET: plldb.payload_bucket,
        protocol.ENV_FALLBACK: protocol.FALLBACK_ERROR,
        protocol.ENV_ORIGINAL_TIMEOUT: "30",
    }
    assert [layer["Arn"] for layer in config["Layers"]] == [app.layers[0], plldb.layer_version_arn]
    assert config["Timeout"] == 60
    assert app.role_tags(role) == {f"plldb:fn:us-east-1:{name}": session}
    assert app.attached_policies(role) == [plldb.policy_arn]
    assert result.instrumented is not None
    assert result.instrumented.original.environment == {
        "GREETING": "hi",
        "AWS_LAMBDA_EXEC_WRAPPER": OWN_WRAPPER,
    }
    assert result.instrumented.variable_names == frozenset({"GREETING", "AWS_LAMBDA_EXEC_WRAPPER"})
    assert (result.instrumented.role_arn, result.instrumented.handler) == (role, "app.handler")


@pytest.mark.parametrize(
    "variables",
    [None, {}, {"GREETING": "hi"}, {"GREETING": "hi", "AWS_LAMBDA_EXEC_WRAPPER": OWN_WRAPPER}],
    ids=["no-environment", "empty-environment", "variables", "own-wrapper"],
)
def test_restoring_puts_back_exactly_what_was_deployed(plldb, app, variables):
    name = app.create_function(role=app.new_role(), variables=variables, layers=app.layers[1:3], timeout=7)
    before = app.snapshot(name)
    session = str(uuid.uuid4())
    assert instrument(plldb, name, session).ok

    result = restore(plldb, name, session)

    assert (result.status, result.message) == ("ok", "restored")
    assert app.snapshot(name) == before
    again = restore(plldb, name, session)
    assert (again.status, again.message) == ("ok", "already in its deployed configuration")
    assert app.snapshot(name) == before


def test_the_policy_stays_while_another_function_of_the_role_is_instrumented(plldb, app):
    role = app.new_role()
    names = [app.create_function(role=role), app.create_function(role=role)]
    session = str(uuid.uuid4())
    for name in names:
        assert instrument(plldb, name, session).ok
    assert app.role_tags(role) == {f"plldb:fn:us-east-1:{n}": session for n in names}
    assert app.attached_policies(role) == [plldb.policy_arn]

    assert restore(plldb, names[0], session).ok
    assert app.role_tags(role) == {f"plldb:fn:us-east-1:{names[1]}": session}
    assert app.attached_policies(role) == [plldb.policy_arn], "still used by the second function"

    assert restore(plldb, names[1], session).ok
    assert (app.role_tags(role), app.attached_policies(role)) == ({}, [])


def test_a_role_keeps_its_own_tags_and_policies(plldb, app):
    role = app.new_role()
    app.iam.tag_role(RoleName=role.rsplit("/", 1)[-1], Tags=[{"Key": "team", "Value": "orders"}])
    own_policy = app.iam.create_policy(
        PolicyName=f"app-own-{uuid.uuid4().hex[:6]}",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
            }
        ),
    )["Policy"]["Arn"]
    app.iam.attach_role_policy(RoleName=role.rsplit("/", 1)[-1], PolicyArn=own_policy)
    name = app.create_function(role=role)
    before = app.snapshot(name)
    session = str(uuid.uuid4())
    assert instrument(plldb, name, session).ok
    assert app.role_tags(role) == {"team": "orders", f"plldb:fn:us-east-1:{name}": session}

    assert restore(plldb, name, session).ok

    assert app.snapshot(name) == before


@contextlib.contextmanager
def deploy_after_plldbs_read(
    app: Any, plldb: Any, name: str, **changes: Any
) -> Iterator[list[dict[str, Any]]]:
    """A `sam deploy` of the function lands right after plldb first reads its configuration."""
    client = plldb.clients.lambda_client
    deployed: list[dict[str, Any]] = []

    def deploy(**_: Any) -> None:
        if not deployed:
            deployed.append(app.lambda_client.update_function_configuration(FunctionName=name, **changes))

    client.meta.events.register("after-call.lambda.GetFunctionConfiguration", deploy)
    try:
        yield deployed
    finally:
        client.meta.events.unregister("after-call.lambda.GetFunctionConfiguration", deploy)


def test_a_deploy_during_instrumentation_is_kept_and_the_function_and_its_role_left_as_deployed(plldb, app):
    role = app.new_role()
    name = app.create_function(role=role, variables={"GREETING": "hi"}, timeout=30)
    with deploy_after_plldbs_read(
        app, plldb, name, Environment={"Variables": {"GREETING": "new"}}
    ) as deployed:
        result = instrument(plldb, name, str(uuid.uuid4()))

    assert len(deployed) == 1
    assert (result.status, result.message) == (
        "failed",
        "it was updated (a deploy?) while plldb instrumented it and is left as deployed; attach again to include it",
    )
    config = app.configuration(name)
    assert (config["Environment"], config.get("Layers", []), config["Timeout"]) == (
        {"Variables": {"GREETING": "new"}},
        [],
        30,
    )
    assert (app.role_tags(role), app.attached_policies(role)) == ({}, []), (
        "the role is not left with plldb's grant"
    )


def test_a_deploy_during_restore_is_kept(plldb, app):
    role = app.new_role()
    name = app.create_function(role=role, variables={"GREETING": "hi"}, timeout=30)
    session = str(uuid.uuid4())
    assert instrument(plldb, name, session).ok
    # What `sam deploy` sends: the template's whole configuration, without plldb's parts.
    changes = {"Environment": {"Variables": {"GREETING": "new"}}, "Layers": [], "Timeout": 3}
    with deploy_after_plldbs_read(app, plldb, name, **changes) as deployed:
        result = restore(plldb, name, session)

    assert len(deployed) == 1

    assert (result.status, result.message) == ("ok", "redeployed meanwhile; left as deployed")
    config = app.configuration(name)
    assert (config["Environment"], config.get("Layers", []), config["Timeout"]) == (
        {"Variables": {"GREETING": "new"}},
        [],
        3,
    )
    assert (app.role_tags(role), app.attached_policies(role)) == ({}, [])


# --- Aliases -----------------------------------------------------------------------------------------------
def test_aliases_on_versions_are_redirected_to_plldbs_version_and_restored_exactly_weights_included(
    plldb, app
):
    name = app.create_function(role=app.new_role(), variables={"GREETING": "hi"})
    versions = with_aliases(app, name)
    before = app.snapshot(name)
    session = str(uuid.uuid4())

    result = instrument(plldb, name, session)

    assert result.ok, result
    published = result.instrumented.published_version
    assert published not in versions.values()
    assert result.message == (
        f"instrumented (timeout 60 s); aliases canary, live now send traffic to version {published}"
    )
    assert app.aliases(name) == {
        "live": (published, {}),
        "canary": (published, {}),
        "latest": ("$LATEST", {}),
    }
    assert app.versions(name)[published] == f"plldb session {session}"
    recorded = json.loads(app.variables(name, published)[protocol.ENV_ALIASES])
    assert recorded == {
        "canary": {"version": versions["first"], "weights": {}},
        "live": {"version": versions["second"], "weights": {versions["first"]: 0.25}},
    }
    assert app.variables(name, published)[protocol.ENV_SESSION_ID] == session

    restored = restore(plldb, name, session)

    assert restored.status == "ok"
    assert restored.message == (
        f"restored; alias canary back on version {versions['first']}; alias live back on version {versions['second']}"
    )
    assert app.snapshot(name) == before


def test_an_interrupted_attach_leaves_nothing_behind_once_restored(plldb, app):
    """plldb stopped after publishing its version and before pointing the aliases at it."""
    name = app.create_function(role=app.new_role(), variables={"GREETING": "hi"})
    with_aliases(app, name)
    before = app.snapshot(name)
    session = str(uuid.uuid4())
    interrupt_at(plldb.clients.lambda_client, "UpdateAlias")
    with pytest.raises(Interrupted):
        instrument(plldb, name, session)
    assert any(d == f"plldb session {session}" for d in app.versions(name).values())

    result = restore(plldb, name, session)

    assert result.status == "ok", result
    assert app.snapshot(name) == before


def test_a_version_left_by_an_interrupted_attach_is_deleted_even_after_a_deploy_removed_plldb(plldb, app):
    """The attach stopped before its alias updates; then a deploy replaced the configuration."""
    name = app.create_function(role=app.new_role(), variables={"GREETING": "hi"})
    with_aliases(app, name)
    session = str(uuid.uuid4())
    interrupt_at(plldb.clients.lambda_client, "UpdateAlias")
    with pytest.raises(Interrupted):
        instrument(plldb, name, session)
    app.lambda_client.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"GREETING": "deployed"}}, Layers=[], Timeout=3
    )
    deployed = app.snapshot(name)
    leftover = [v for v, d in app.versions(name).items() if d == f"plldb session {session}"]
    assert len(leftover) == 1

    result = restore(plldb, name, session)

    assert (result.status, result.message) == ("ok", "already in its deployed configuration")
    assert leftover[0] not in app.versions(name)
    assert app.snapshot(name) == {
        **deployed,
        "versions": {v: d for v, d in deployed["versions"].items() if v != leftover[0]},
        "rolePolicies": [],
        "roleTags": {},
    }


@pytest.mark.parametrize(
    ("operation", "aliased"),
    [
        ("TagRole", False),
        ("AttachRolePolicy", False),
        ("UpdateFunctionConfiguration", False),
        ("TagRole", True),
        ("PublishVersion", True),
    ],
)
def test_wherever_an_attach_stopped_restoring_leaves_exactly_what_was_deployed(
    plldb, app, operation, aliased
):
    role = app.new_role()
    name = app.create_function(role=role, variables={"GREETING": "hi"}, layers=app.layers[:2], timeout=9)
    if aliased:
        with_aliases(app, name)
    before = app.snapshot(name)
    session = str(uuid.uuid4())
    client = (
        plldb.clients.iam if operation in ("TagRole", "AttachRolePolicy") else plldb.clients.lambda_client
    )
    interrupt_at(client, operation)
    with pytest.raises(Interrupted):
        instrument(plldb, name, session)

    assert restore(plldb, name, session).status == "ok"

    assert app.snapshot(name) == before


@pytest.mark.parametrize(
    ("operation", "aliased"),
    [
        ("UpdateFunctionConfiguration", False),
        ("UntagRole", False),
        ("DetachRolePolicy", False),
        ("UpdateAlias", True),
        ("DeleteFunction", True),
    ],
)
def test_a_restore_that_stopped_half_way_is_finished_by_the_next(plldb, app, operation, aliased):
    role = app.new_role()
    name = app.create_function(role=role, variables={"GREETING": "hi"}, layers=app.layers[:1], timeout=9)
    if aliased:
        with_aliases(app, name)
    before = app.snapshot(name)
    session = str(uuid.uuid4())
    assert instrument(plldb, name, session).ok
    client = (
        plldb.clients.iam if operation in ("UntagRole", "DetachRolePolicy") else plldb.clients.lambda_client
    )
    interrupt_at(client, operation)
    with pytest.raises(Interrupted):
        restore(plldb, name, session)

    assert restore(plldb, name, session).status == "ok"

    assert app.snapshot(name) == before


# --- Sessions -------------------------------------------------------------------------------------------------
def test_a_function_instrumented_by_another_session_is_left_alone(plldb, app):
    role = app.new_role()
    name = app.create_function(role=role)
    theirs = str(uuid.uuid4())
    assert instrument(plldb, name, theirs).ok
    instrumented = app.snapshot(name)

    result = restore(plldb, name, str(uuid.uuid4()))

    assert (result.status, result.message) == ("skipped", "instrumented by another session; left alone")
    assert app.snapshot(name) == instrumented


@pytest.mark.parametrize(
    "aliased",
    [False, True],
    ids=["plain", "with-aliases"],
)
def test_attaching_over_a_dead_sessions_instrumentation_restores_to_what_was_deployed(plldb, app, aliased):
    role = app.new_role()
    name = app.create_function(role=role, variables={"GREETING": "hi"}, timeout=12)
    if aliased:
        with_aliases(app, name)
    before = app.snapshot(name)
    dead, current = str(uuid.uuid4()), str(uuid.uuid4())
    assert instrument(plldb, name, dead).ok  # and its plldb died without restoring

    result = instrument(plldb, name, current)

    assert result.ok, result
    assert app.variables(name)[protocol.ENV_SESSION_ID] == current
    assert app.variables(name)[protocol.ENV_ORIGINAL_TIMEOUT] == "12"
    assert app.role_tags(role) == {f"plldb:fn:us-east-1:{name}": current}
    if aliased:
        recorded = json.loads(
            app.variables(name, result.instrumented.published_version)[protocol.ENV_ALIASES]
        )
        assert sorted(recorded) == ["canary", "live"]
    assert restore(plldb, name, None).ok
    assert app.snapshot(name) == before, "both sessions' versions are gone, the aliases back where they were"


def test_restore_for_any_session_removes_whichever_session_instrumented_it(plldb, app):
    name = app.create_function(role=app.new_role(), variables={"GREETING": "hi"})
    before = app.snapshot(name)
    assert instrument(plldb, name, str(uuid.uuid4())).ok
    assert restore(plldb, name, None).ok
    assert app.snapshot(name) == before


# --- Refusals and missing functions ------------------------------------------------------------------------
def test_a_function_with_five_layers_is_refused_and_left_alone(plldb, app):
    role = app.new_role()
    name = app.create_function(role=role, layers=app.layers)
    before = app.snapshot(name)

    result = instrument(plldb, name, str(uuid.uuid4()))

    assert (result.status, result.message) == (
        "failed",
        "it already has 5 layers and Lambda allows 5, so the plldb layer cannot be added; "
        "remove a layer or leave this function out with --function",
    )
    assert app.snapshot(name) == before


def test_a_function_that_is_not_python_is_skipped_and_left_alone(plldb, app):
    name = app.create_function(role=app.new_role(), runtime="nodejs20.x")
    before = app.snapshot(name)
    result = instrument(plldb, name, str(uuid.uuid4()))
    assert (result.status, result.message) == ("skipped", "runtime nodejs20.x is not Python")
    assert app.snapshot(name) == before


def test_a_missing_function_is_reported_not_raised(plldb):
    result = instrument(plldb, "no-such-function", str(uuid.uuid4()))
    assert (result.status, result.message) == ("failed", "function not found")
    result = restore(plldb, "no-such-function", None)
    assert (result.status, result.message) == ("skipped", "the function no longer exists")


def test_functions_of_one_role_restored_at_once_leave_the_role_without_tag_or_policy(plldb, app):
    """Each reads the role's tags only after removing its own, so the last one sees none left: even when
    every read happens before any of them goes on (a barrier holds them all after their read)."""
    role = app.new_role()
    names = [app.create_function(role=role) for _ in range(3)]
    session = str(uuid.uuid4())
    for name in names:
        assert instrument(plldb, name, session).ok
    before_detach = threading.Barrier(3)
    reads: list[str] = []

    def hold(**_: Any) -> None:
        reads.append("ListRoleTags")
        if len(reads) <= 3:
            before_detach.wait()

    plldb.clients.iam.meta.events.register("after-call.iam.ListRoleTags", hold)
    try:
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda n: restore(plldb, n, session), names))
    finally:
        plldb.clients.iam.meta.events.unregister("after-call.iam.ListRoleTags", hold)

    assert [r.status for r in results] == ["ok", "ok", "ok"]
    assert (app.role_tags(role), app.attached_policies(role)) == ({}, [])
