"""The manager's instrument / restore against real Lambda, IAM, CloudFormation and DynamoDB calls (moto).

The central property: whatever a function looked like, and wherever the manager is interrupted,
restoring puts back exactly the configuration it had, and the execution role's policies too.
"""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from typing import Any

import pytest
from helper_stack_events import new_connection_id
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plldb import protocol

VOLATILE = {"LastModified", "RevisionId", "ResponseMetadata", "LastUpdateStatus", "LastUpdateStatusReason"}
CUSTOM_WRAPPER = "/opt/observability/wrapper.sh"


@pytest.fixture(scope="module")
def manager(helper):
    from plldb.bootstrap.cloudformation.handlers import manager

    return manager


def _code_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
    return buffer.getvalue()


CODE = _code_zip()


class App:
    """The application side: execution roles, the app's own layers, functions and stacks."""

    def __init__(self, helper) -> None:
        self.helper = helper
        self.lambda_client = helper.session.client("lambda")
        self.iam = helper.session.client("iam")
        self.suffix = uuid.uuid4().hex[:8]
        self.roles = [self.new_role() for _ in range(2)]
        self.preattached_role = self.new_role()
        self.iam.attach_role_policy(
            RoleName=self.preattached_role.rsplit("/", 1)[-1], PolicyArn=self.policy_arn
        )
        self.layers = [
            self.lambda_client.publish_layer_version(
                LayerName=f"app-{self.suffix}-layer{i}", Content={"ZipFile": CODE}
            )["LayerVersionArn"]
            for i in range(5)
        ]

    @property
    def policy_arn(self) -> str:
        return self.helper.resources.instrumented_function_policy_arn

    def new_role(self) -> str:
        name = f"app-role-{uuid.uuid4().hex[:10]}"
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        return self.iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]

    def create_function(
        self,
        *,
        variables: dict[str, str] | None = None,
        layers: list[str] | None = None,
        timeout: int = 3,
        role: str | None = None,
        runtime: str = "python3.13",
    ) -> str:
        name = f"app-{self.suffix}-{uuid.uuid4().hex[:10]}"
        arguments: dict[str, Any] = {
            "FunctionName": name,
            "Runtime": runtime,
            "Role": role or self.roles[0],
            "Handler": "app.lambda_handler",
            "Code": {"ZipFile": CODE},
            "Timeout": timeout,
            "MemorySize": 256,
        }
        if variables is not None:
            arguments["Environment"] = {"Variables": variables}
        if layers:
            arguments["Layers"] = layers
        self.lambda_client.create_function(**arguments)
        return name

    def snapshot(self, name: str) -> str:
        """The function's configuration (without Lambda's own bookkeeping) and its role's policies."""
        config = self.lambda_client.get_function_configuration(FunctionName=name)
        config = {k: v for k, v in config.items() if k not in VOLATILE}
        attached = self.attached_policies(config["Role"])
        return json.dumps({"configuration": config, "rolePolicies": attached}, sort_keys=True)

    def attached_policies(self, role_arn: str) -> list[str]:
        page = self.iam.list_attached_role_policies(RoleName=role_arn.rsplit("/", 1)[-1])
        return sorted(p["PolicyArn"] for p in page["AttachedPolicies"])

    def configuration(self, name: str) -> dict[str, Any]:
        return self.lambda_client.get_function_configuration(FunctionName=name)

    def session(self, stack_name: str, **attributes: Any) -> dict[str, Any]:
        connection_id = attributes.pop("ConnectionId", new_connection_id())
        session_id = self.helper.put_session(
            Status=protocol.STATUS_ACTIVE, StackName=stack_name, ConnectionId=connection_id, **attributes
        )
        item = self.helper.session_item(session_id)
        assert item is not None
        return item


@pytest.fixture(scope="module")
def app(helper) -> App:
    return App(helper)


class SimulatedCrash(BaseException):
    """The manager's process dies here: nothing after this point runs, no cleanup either."""


def _crash(*args: Any, **kwargs: Any) -> None:
    raise SimulatedCrash()


variable_names = st.from_regex(r"[A-Z][A-Z0-9_]{0,15}", fullmatch=True).filter(
    lambda name: not name.startswith(("AWS_", "PLLDB_", "DEBUGGER_", "LAMBDA_", "_"))
)
variable_values = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40)


@st.composite
def original_configurations(draw: Any) -> dict[str, Any]:
    variables = draw(st.one_of(st.none(), st.dictionaries(variable_names, variable_values, max_size=6)))
    if variables is not None and draw(st.booleans()):
        variables["AWS_LAMBDA_EXEC_WRAPPER"] = CUSTOM_WRAPPER
    return {
        "variables": variables,
        "layer_indexes": draw(st.lists(st.integers(0, 4), unique=True, max_size=4)),
        "timeout": draw(st.integers(1, 900)),
        "role": draw(st.sampled_from(["fresh", "shared", "preattached"])),
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    original=original_configurations(),
    instrument_crash=st.sampled_from([None, "save_original", "reference_role", "_update_until_applied"]),
    instrument_again=st.booleans(),
    restore_crash=st.sampled_from([None, "release_role", "_delete_record"]),
    session_timeout=st.sampled_from([60, 900]),
)
def test_restore_puts_back_exactly_what_was_deployed_wherever_the_manager_stopped(
    helper, manager, app, original, instrument_crash, instrument_again, restore_crash, session_timeout
):
    role = {"fresh": app.new_role(), "shared": app.roles[1], "preattached": app.preattached_role}[
        original["role"]
    ]
    layers = [app.layers[i] for i in original["layer_indexes"]]
    name = app.create_function(
        variables=original["variables"], layers=layers, timeout=original["timeout"], role=role
    )
    stack_name = f"stack-{uuid.uuid4().hex[:8]}"
    session = app.session(stack_name, FunctionTimeout=session_timeout)
    function = manager.StackFunction(name, "HelloFunction", "HelloFunction")
    before = app.snapshot(name)

    with pytest.MonkeyPatch.context() as patch:
        if instrument_crash:
            patch.setattr(manager, instrument_crash, _crash)
        try:
            result, _ = manager.instrument_function(
                helper.resources, function, stack_name, session, session_timeout
            )
            assert result.status == "ok", result
        except SimulatedCrash:
            assert instrument_crash is not None
    if instrument_again or instrument_crash is None:
        result, _ = manager.instrument_function(
            helper.resources, function, stack_name, session, session_timeout
        )
        assert result.status == "ok", result
        _assert_instrumented(helper, app, name, original, layers, session, session_timeout)

    with pytest.MonkeyPatch.context() as patch:
        if restore_crash:
            patch.setattr(manager, restore_crash, _crash)
        try:
            manager.restore_stack(helper.resources, stack_name)
        except SimulatedCrash:
            assert restore_crash is not None
    restored = manager.restore_stack(helper.resources, stack_name)

    assert app.snapshot(name) == before
    assert (
        manager._get_record(helper.resources, manager._unqualified(app.configuration(name)["FunctionArn"]))
        is None
    )
    assert all(f["status"] in ("ok", "skipped") for f in restored["functions"])


def _assert_instrumented(helper, app, name, original, layers, session, timeout) -> None:
    config = app.configuration(name)
    variables = config["Environment"]["Variables"]
    expected = dict(original["variables"] or {})
    if expected.get("AWS_LAMBDA_EXEC_WRAPPER") == CUSTOM_WRAPPER:
        expected[protocol.ENV_ORIGINAL_EXEC_WRAPPER] = CUSTOM_WRAPPER
    expected.update(
        {
            protocol.ENV_EXEC_WRAPPER: protocol.LAYER_WRAPPER_PATH,
            protocol.ENV_SESSION_ID: session[protocol.A_SESSION_ID],
            protocol.ENV_CONNECTION_ID: session[protocol.A_CONNECTION_ID],
            protocol.ENV_DEBUGGER_ROLE_ARN: helper.resources.debugger_role_arn,
            protocol.ENV_SESSIONS_TABLE: helper.resources.sessions_table,
            protocol.ENV_DEBUGGER_TABLE: helper.resources.debugger_table,
            protocol.ENV_MANAGEMENT_URL: helper.resources.management_url,
        }
    )
    assert variables == expected
    assert [layer["Arn"] for layer in config["Layers"]] == [*layers, helper.resources.layer_version_arn]
    assert config["Timeout"] == timeout
    assert app.policy_arn in app.attached_policies(config["Role"])


def _instrument(helper: Any, manager: Any, name: str, stack_name: str, session: dict[str, Any]) -> Any:
    """Instrument one function named HelloFunction in the template, with a 60 s session timeout."""
    function = manager.StackFunction(name, "HelloFunction", "HelloFunction")
    return manager.instrument_function(helper.resources, function, stack_name, session, 60)


def test_a_settled_function_costs_one_lambda_read_and_one_write_to_instrument_and_to_restore(
    helper, manager, app
):
    """Lambda's control plane allows 15 requests a second per account: a 50-function stack must not
    spend them on re-reading what the manager has just read or been told."""
    name = app.create_function(variables={"GREETING": "hi"}, timeout=30)
    stack_name = f"stack-{uuid.uuid4().hex[:8]}"
    session = app.session(stack_name)
    calls: list[str] = []

    def count(model: Any, **_: Any) -> None:
        calls.append(model.name)

    events = helper.resources.lambda_client.meta.events
    events.register("before-call.lambda", count)
    try:
        result, _ = _instrument(helper, manager, name, stack_name, session)
        instrumented = list(calls)
        calls.clear()
        manager.restore_stack(helper.resources, stack_name)
    finally:
        events.unregister("before-call.lambda", count)

    assert result.status == "ok", result
    assert instrumented == ["GetFunctionConfiguration", "UpdateFunctionConfiguration"]
    assert calls == ["GetFunctionConfiguration", "UpdateFunctionConfiguration"]
    assert app.configuration(name)["Environment"] == {"Variables": {"GREETING": "hi"}}


@pytest.mark.parametrize(
    ("configuration", "settled"),
    [
        ({"State": "Active", "LastUpdateStatus": "Successful"}, True),
        ({"State": "Active"}, True),
        ({"State": "Active", "LastUpdateStatus": "InProgress"}, False),
        ({"State": "Pending", "LastUpdateStatus": "Successful"}, False),
        ({"State": "Active", "LastUpdateStatus": "Failed"}, False),
    ],
)
def test_only_a_settled_configuration_skips_the_wait_for_lambda(manager, configuration, settled):
    assert manager._settled(configuration) is settled


def _deploy_after_the_first_read(
    patch: pytest.MonkeyPatch, manager: Any, app: App, name: str, **changes: Any
):
    """A `sam deploy` of the function lands right after the manager has read its configuration."""
    read = manager.get_configuration
    deployed: list[dict[str, Any]] = []

    def read_then_deploy(resources: Any, function: str) -> dict[str, Any]:
        config = read(resources, function)
        if not deployed:
            deployed.append(app.lambda_client.update_function_configuration(FunctionName=name, **changes))
        return config

    patch.setattr(manager, "get_configuration", read_then_deploy)
    return deployed


def test_a_deploy_during_instrumentation_is_kept_and_the_function_left_out(helper, manager, app):
    role = app.new_role()
    name = app.create_function(variables={"GREETING": "hi"}, timeout=30, role=role)
    stack_name = f"stack-{uuid.uuid4().hex[:8]}"
    session = app.session(stack_name)
    with pytest.MonkeyPatch.context() as patch:
        _deploy_after_the_first_read(
            patch, manager, app, name, Environment={"Variables": {"GREETING": "new"}}
        )
        result, changed = _instrument(helper, manager, name, stack_name, session)

    assert (result.status, result.message, changed) == (
        "failed",
        "it was updated (a deploy?) while plldb instrumented it and is left as deployed; attach again to include it",
        None,
    )
    config = app.configuration(name)
    assert (config["Environment"], config.get("Layers", []), config["Timeout"]) == (
        {"Variables": {"GREETING": "new"}},
        [],
        30,
    )
    assert manager._get_record(helper.resources, manager._unqualified(config["FunctionArn"])) is None
    assert app.attached_policies(role) == []


def test_a_deploy_during_restore_is_kept(helper, manager, app):
    name = app.create_function(variables={"GREETING": "hi"}, timeout=30)
    stack_name = f"stack-{uuid.uuid4().hex[:8]}"
    session = app.session(stack_name)
    function = manager.StackFunction(name, "HelloFunction", "HelloFunction")
    assert manager.instrument_function(helper.resources, function, stack_name, session, 60)[0].status == "ok"
    with pytest.MonkeyPatch.context() as patch:
        # What `sam deploy` sends: the template's whole configuration, without plldb's parts.
        _deploy_after_the_first_read(
            patch, manager, app, name, Environment={"Variables": {"GREETING": "new"}}, Layers=[], Timeout=3
        )
        restored = manager.restore_stack(helper.resources, stack_name)

    assert [(f["status"], f["message"]) for f in restored["functions"]] == [
        ("ok", "redeployed meanwhile; left as deployed")
    ]
    config = app.configuration(name)
    assert (config["Environment"], config.get("Layers", []), config["Timeout"]) == (
        {"Variables": {"GREETING": "new"}},
        [],
        3,
    )
    assert manager._get_record(helper.resources, manager._unqualified(config["FunctionArn"])) is None


def test_a_lost_record_is_rebuilt_from_the_instrumented_configuration_without_plldb_parts(
    helper, manager, app
):
    layers = [app.layers[0]]
    name = app.create_function(
        variables={"GREETING": "hi", "AWS_LAMBDA_EXEC_WRAPPER": CUSTOM_WRAPPER}, layers=layers, timeout=30
    )
    stack_name = f"stack-{uuid.uuid4().hex[:8]}"
    session = app.session(stack_name)
    function = manager.StackFunction(name, "HelloFunction", "HelloFunction")
    manager.instrument_function(helper.resources, function, stack_name, session, 900)
    arn = manager._unqualified(app.configuration(name)["FunctionArn"])
    manager._delete_record(helper.resources, arn)  # the instrumentation table lost it

    result, _ = manager.instrument_function(helper.resources, function, stack_name, session, 900)
    record = manager._get_record(helper.resources, arn)

    assert result.status == "ok"
    assert "without a saved original" in result.message
    assert record[manager.A_DERIVED] is True
    assert json.loads(record[manager.A_ORIGINAL]) == {
        "environment": {"GREETING": "hi", "AWS_LAMBDA_EXEC_WRAPPER": CUSTOM_WRAPPER},
        "layers": layers,
        "timeout": 900,  # the deployed timeout cannot be known any more
    }


def test_a_function_with_five_layers_is_refused_with_a_clear_message_and_left_alone(helper, manager, app):
    name = app.create_function(layers=app.layers)
    before = app.snapshot(name)
    session = app.session("five-layers")

    result, changed = manager.instrument_function(
        helper.resources, manager.StackFunction(name, "Busy", "Busy"), "five-layers", session, 900
    )

    assert (result.status, changed) == ("failed", None)
    assert result.message == (
        "it already has 5 layers and Lambda allows 5, so the plldb layer cannot be added; "
        "remove a layer or leave this function out with --function"
    )
    assert app.snapshot(name) == before
    arn = manager._unqualified(app.configuration(name)["FunctionArn"])
    assert manager._get_record(helper.resources, arn) is None


def test_non_python_functions_are_skipped(helper, manager, app):
    name = app.create_function(runtime="nodejs20.x")
    result, _ = manager.instrument_function(
        helper.resources, manager.StackFunction(name, "Node", "Node"), "s", app.session("s"), 900
    )
    assert (result.status, result.message) == ("skipped", "runtime nodejs20.x is not Python")


def test_the_policy_is_detached_only_when_the_last_function_of_a_role_is_restored(helper, manager, app):
    role = app.new_role()
    names = [app.create_function(role=role) for _ in range(2)]
    stack_name = f"stack-{uuid.uuid4().hex[:8]}"
    session = app.session(stack_name)
    for i, name in enumerate(names):
        manager.instrument_function(
            helper.resources, manager.StackFunction(name, f"F{i}", f"F{i}"), stack_name, session, 900
        )
    assert app.attached_policies(role) == [app.policy_arn]

    first = manager._get_record(
        helper.resources, manager._unqualified(app.configuration(names[0])["FunctionArn"])
    )
    assert manager.restore_function(helper.resources, first).status == "ok"
    assert app.attached_policies(role) == [app.policy_arn], "still used by the second function"

    manager.restore_stack(helper.resources, stack_name)
    assert app.attached_policies(role) == []


def test_a_policy_attached_before_plldb_is_never_detached(helper, manager, app):
    name = app.create_function(role=app.preattached_role)
    stack_name = f"stack-{uuid.uuid4().hex[:8]}"
    manager.instrument_function(
        helper.resources, manager.StackFunction(name, "F", "F"), stack_name, app.session(stack_name), 900
    )

    manager.restore_stack(helper.resources, stack_name)

    assert app.policy_arn in app.attached_policies(app.preattached_role)


# --- Whole stacks: discovery, nested stacks, filters, one session per stack, progress ----------------------
def _function_resource(role: str, variables: dict[str, str] | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "Runtime": "python3.13",
        "Handler": "index.handler",
        "Role": role,
        "Timeout": 3,
        "Code": {"ZipFile": "def handler(event, context):\n    return event\n"},
    }
    if variables:
        properties["Environment"] = {"Variables": variables}
    return {"Type": "AWS::Lambda::Function", "Properties": properties}


@pytest.fixture(scope="module")
def app_stack(helper, app) -> dict[str, Any]:
    """A deployed app: two functions and a nested stack with a third."""
    s3 = helper.session.client("s3")
    bucket = f"app-templates-{app.suffix}"
    s3.create_bucket(Bucket=bucket)
    nested = {"Resources": {"WorkerFunction": _function_resource(app.roles[0])}}
    s3.put_object(Bucket=bucket, Key="nested.json", Body=json.dumps(nested).encode())
    parent = {
        "Resources": {
            "HelloFunction": _function_resource(app.roles[0], {"GREETING": "hello"}),
            "GoodbyeFunction": _function_resource(app.roles[1]),
            "Workers": {
                "Type": "AWS::CloudFormation::Stack",
                "Properties": {"TemplateURL": f"https://s3.amazonaws.com/{bucket}/nested.json"},
            },
        }
    }
    name = f"app-stack-{app.suffix}"
    cloudformation = helper.session.client("cloudformation")
    cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(parent))
    return {"name": name}


def _stack_functions(helper, manager, stack_name: str) -> dict[str, str]:
    return {f.path: f.function_name for f in manager.list_stack_functions(helper.resources, stack_name)}


def test_stack_discovery_includes_nested_stacks(helper, manager, app_stack):
    functions = _stack_functions(helper, manager, app_stack["name"])
    assert sorted(functions) == ["GoodbyeFunction", "HelloFunction", "Workers/WorkerFunction"]


def test_attach_instruments_the_stack_reports_progress_and_detach_restores_it(
    helper, manager, app, app_stack
):
    stack_name = app_stack["name"]
    functions = _stack_functions(helper, manager, stack_name)
    before = {path: app.snapshot(name) for path, name in functions.items()}
    session = app.session(stack_name, FunctionTimeout=120)
    connection_id = session[protocol.A_CONNECTION_ID]

    result = manager.handle(
        {"action": "instrument", "sessionId": session[protocol.A_SESSION_ID]}, helper.resources
    )

    assert sorted((f["logicalId"], f["status"]) for f in result["functions"]) == [
        ("GoodbyeFunction", "ok"),
        ("HelloFunction", "ok"),
        ("WorkerFunction", "ok"),
    ]
    messages = helper.capture.messages(connection_id)
    assert messages[0] == {
        "type": "progress",
        "phase": "instrument",
        "status": "started",
        "message": f"Instrumenting 3 functions of stack {stack_name}",
        "total": 3,
    }
    assert sorted((m["function"], m["status"]) for m in messages[1:4]) == sorted(
        (name, "ok") for name in functions.values()
    )
    assert messages[4]["status"] == "done"
    assert messages[4]["message"] == "3 instrumented, 0 skipped, 0 failed"
    assert sorted(f["functionName"] for f in messages[4]["functions"]) == sorted(functions.values())
    for name in functions.values():
        assert app.configuration(name)["Timeout"] == 120

    helper.capture.clear()
    manager.handle({"action": "restore", "sessionId": session[protocol.A_SESSION_ID]}, helper.resources)

    assert {path: app.snapshot(name) for path, name in functions.items()} == before
    assert helper.session_item(session[protocol.A_SESSION_ID])[protocol.A_STATUS] == protocol.STATUS_CLOSED
    restore_messages = helper.capture.messages(connection_id)
    assert [m["status"] for m in restore_messages] == ["started", "ok", "ok", "ok", "done"]
    assert restore_messages[-1]["message"] == f"Stack {stack_name} restored (3 functions)"
    assert manager._get_record(helper.resources, manager._lock_key(stack_name)) is None


def test_the_function_filter_selects_by_logical_id_nested_path_or_name(helper, manager, app, app_stack):
    stack_name = app_stack["name"]
    functions = _stack_functions(helper, manager, stack_name)
    session = app.session(stack_name, FunctionPatterns=["Hello*", "Workers/*"])

    result = manager.handle(
        {"action": "instrument", "sessionId": session[protocol.A_SESSION_ID]}, helper.resources
    )
    try:
        statuses = {f["logicalId"]: (f["status"], f["message"]) for f in result["functions"]}
        assert statuses["GoodbyeFunction"] == ("skipped", "excluded by the function filter")
        assert statuses["HelloFunction"][0] == "ok"
        assert statuses["WorkerFunction"][0] == "ok"
        assert protocol.ENV_SESSION_ID not in app.configuration(functions["GoodbyeFunction"]).get(
            "Environment", {}
        ).get("Variables", {})
    finally:
        manager.handle({"action": "restore", "sessionId": session[protocol.A_SESSION_ID]}, helper.resources)


def test_a_second_session_on_the_same_stack_is_refused_naming_the_first(helper, manager, app, app_stack):
    stack_name = app_stack["name"]
    first = app.session(
        stack_name, Owner="arn:aws:iam::123456789012:user/alice on alice-laptop", CreatedAt=1767225600
    )
    second = app.session(stack_name, Owner="arn:aws:iam::123456789012:user/bob on bob-laptop")
    manager.handle({"action": "instrument", "sessionId": first[protocol.A_SESSION_ID]}, helper.resources)
    instrumented = {
        name: app.snapshot(name) for name in _stack_functions(helper, manager, stack_name).values()
    }

    result = manager.handle(
        {"action": "instrument", "sessionId": second[protocol.A_SESSION_ID]}, helper.resources
    )

    text = (
        f"Stack {stack_name!r} already has an active plldb session, attached by "
        "arn:aws:iam::123456789012:user/alice on alice-laptop since 2026-01-01 00:00:00 UTC. "
        f"Detach it first ('plldb detach --stack-name {stack_name}') or attach with --take-over."
    )
    assert result == {"action": "instrument", "functions": [], "error": text}
    assert helper.capture.messages(second[protocol.A_CONNECTION_ID]) == [
        {"type": "progress", "phase": "instrument", "status": "failed", "message": text},
        {
            "type": "progress",
            "phase": "instrument",
            "status": "done",
            "message": text,
            "functions": [],
            "error": text,
        },
    ]
    assert {name: app.snapshot(name) for name in instrumented} == instrumented

    # Taking over: restore_stack (from any machine) closes both sessions and frees the stack.
    taken = manager.handle({"action": "restore_stack", "stackName": stack_name}, helper.resources)
    assert taken["closedSessions"] == 2
    assert sorted(f["status"] for f in taken["functions"]) == ["ok", "ok", "ok"]
    for session in (first, second):
        assert (
            helper.session_item(session[protocol.A_SESSION_ID])[protocol.A_STATUS] == protocol.STATUS_CLOSED
        )
    assert helper.capture.messages(first[protocol.A_CONNECTION_ID])[-1]["message"].startswith(
        f"Another plldb command restored stack {stack_name} and closed this session"
    )


def test_restore_tolerates_a_function_deleted_meanwhile(helper, manager, app):
    names = [app.create_function(), app.create_function()]
    stack_name = f"stack-{uuid.uuid4().hex[:8]}"
    session = app.session(stack_name)
    for i, name in enumerate(names):
        manager.instrument_function(
            helper.resources, manager.StackFunction(name, f"F{i}", f"F{i}"), stack_name, session, 900
        )
    app.lambda_client.delete_function(FunctionName=names[0])

    result = manager.restore_stack(helper.resources, stack_name)

    assert sorted((f["functionName"], f["status"], f["message"]) for f in result["functions"]) == sorted(
        [(names[0], "skipped", "the function no longer exists"), (names[1], "ok", "restored")]
    )


def test_one_function_failing_to_restore_does_not_stop_the_others(helper, manager, app):
    names = [app.create_function(), app.create_function()]
    stack_name = f"stack-{uuid.uuid4().hex[:8]}"
    session = app.session(stack_name)
    for i, name in enumerate(names):
        manager.instrument_function(
            helper.resources, manager.StackFunction(name, f"F{i}", f"F{i}"), stack_name, session, 900
        )
    broken = manager._unqualified(app.configuration(names[0])["FunctionArn"])
    missing_layer = "arn:aws:lambda:us-east-1:123456789012:layer:deleted-meanwhile:1"
    helper.dynamodb.update_item(
        TableName=helper.resources.instrumentation_table,
        Key={manager.A_RESOURCE_ARN: {"S": broken}},
        UpdateExpression="SET #o = :o",
        ExpressionAttributeNames={"#o": manager.A_ORIGINAL},
        ExpressionAttributeValues={
            ":o": {"S": json.dumps({"environment": None, "layers": [missing_layer], "timeout": 3})}
        },
    )

    result = manager.restore_stack(helper.resources, stack_name)

    statuses = {f["functionName"]: f["status"] for f in result["functions"]}
    assert statuses == {names[0]: "failed", names[1]: "ok"}
    assert manager._get_record(helper.resources, broken) is not None, "kept so a later restore can retry"
    assert protocol.ENV_SESSION_ID not in app.configuration(names[1]).get("Environment", {}).get(
        "Variables", {}
    )


def test_a_missing_stack_and_the_helper_stack_itself_are_refused(helper, manager, app):
    missing = app.session("no-such-stack")
    result = manager.handle(
        {"action": "instrument", "sessionId": missing[protocol.A_SESSION_ID]}, helper.resources
    )
    assert result["error"] == "Stack 'no-such-stack' does not exist in us-east-1."

    own = app.session(helper.resources.helper_stack_name)
    result = manager.handle(
        {"action": "instrument", "sessionId": own[protocol.A_SESSION_ID]}, helper.resources
    )
    assert result["error"] == (
        f"Stack {helper.resources.helper_stack_name!r} is the plldb helper stack itself; "
        "it cannot be debugged with plldb."
    )


def test_an_abandoned_session_is_restored_only_if_it_did_not_reconnect(helper, manager, app):
    name = app.create_function()
    stack_name = f"stack-{uuid.uuid4().hex[:8]}"
    before = app.snapshot(name)
    session = app.session(stack_name)
    session_id, connection_id = session[protocol.A_SESSION_ID], session[protocol.A_CONNECTION_ID]
    manager.instrument_function(
        helper.resources, manager.StackFunction(name, "F", "F"), stack_name, session, 900
    )

    reconnected = new_connection_id()
    helper.dynamodb.update_item(
        TableName=helper.resources.sessions_table,
        Key={protocol.A_SESSION_ID: {"S": session_id}},
        UpdateExpression="SET #c = :c",
        ExpressionAttributeNames={"#c": protocol.A_CONNECTION_ID},
        ExpressionAttributeValues={":c": {"S": reconnected}},
    )
    started = time.monotonic()
    kept = manager.handle(
        {
            "action": "restore_if_abandoned",
            "sessionId": session_id,
            "connectionId": connection_id,
            "notBefore": time.time() + 0.3,
        },
        helper.resources,
    )
    assert time.monotonic() - started >= 0.3, "waits out the grace period"
    assert kept == {"action": "restore_if_abandoned", "restored": False, "functions": []}
    assert helper.session_item(session_id)[protocol.A_STATUS] == protocol.STATUS_ACTIVE
    assert protocol.ENV_SESSION_ID in app.configuration(name)["Environment"]["Variables"]

    restored = manager.handle(
        {
            "action": "restore_if_abandoned",
            "sessionId": session_id,
            "connectionId": reconnected,
            "notBefore": 0,
        },
        helper.resources,
    )
    assert restored["restored"] is True
    assert helper.session_item(session_id)[protocol.A_STATUS] == protocol.STATUS_CLOSED
    assert app.snapshot(name) == before


def test_status_lists_active_sessions_and_instrumented_functions(helper, manager, app):
    stack_name = f"stack-{uuid.uuid4().hex[:8]}"
    session = app.session(stack_name, Owner="carol on box", CreatedAt=1767225600)
    name = app.create_function()
    manager.instrument_function(
        helper.resources, manager.StackFunction(name, "F", "F"), stack_name, session, 900
    )
    try:
        report = manager.handle({"action": "status"}, helper.resources)
        assert {"stackName": stack_name, "owner": "carol on box", "createdAt": 1767225600} in report[
            "activeSessions"
        ]
        assert report["instrumentedFunctions"][stack_name] == 1
    finally:
        manager.restore_stack(helper.resources, stack_name)


def test_unknown_actions_and_missing_arguments_fail_clearly(helper, manager):
    with pytest.raises(manager.ManagerError, match="unknown action 'explode'"):
        manager.handle({"action": "explode"}, helper.resources)
    with pytest.raises(
        manager.ManagerError, match="the 'restore_stack' action needs a non-empty string 'stackName'"
    ):
        manager.handle({"action": "restore_stack"}, helper.resources)
