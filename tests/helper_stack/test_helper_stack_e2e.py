"""The helper stack deployed with `plldb bootstrap setup` logic on the local cloud, driven over real,
SigV4-signed WebSockets message by message.

Everything here goes through the real protocols: CloudFormation deploys the template, the gateway
authenticates ``$connect`` with AWS_IAM and runs the routes in real Lambda environments, the developer
instruments and restores functions with their own credentials (the product's own code, as `plldb
attach` does), instrumented functions reach the developer through the layer and the dispatcher, and the
manager restores what a dead session left. Refusals are checked to change nothing in the helper
stack's tables, and every decision not to act is read from the helper stack's logs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from plldb import protocol
from plldb.bootstrap import deploy, packaging
from plldb.bootstrap.helper_stack import TEMPLATE_VERSION, HelperStack, load_helper_stack
from plldb.errors import PlldbError
from plldb.instrumentation import functions
from plldb.instrumentation.decisions import Target
from plldb.local.instrument import developer_clients, restore_stack
from plldb.local.session import connect_url, sigv4_signer
from plldb.local.session.release import release_stack
from tests.cloud_state import (
    function_state,
    helper_function,
    helper_resource,
    helper_tables,
    locks,
    manager_records,
    new_records,
    routes_records,
    session_item,
    stack_id_of,
    variables,
    wait_for,
)
from tests.security.raw_client import Connection, RawSession, developer, unsigned

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a liveness guard, never a bound

# The default grace period (a reconnect has 10 s), and no sweep but those a test fires.
PARAMETERS = {"SweepSchedule": "rate(1 day)"}
REFUSED = "connection refused"


@pytest.fixture(scope="module")
def cloud_session(local_cloud: Any) -> boto3.Session:
    return local_cloud.session()


@pytest.fixture(scope="module")
def helper(cloud_session: boto3.Session) -> HelperStack:
    name = f"plldb-e2e-{uuid.uuid4().hex[:6]}"
    deploy.setup(cloud_session, name, parameters=PARAMETERS, poll_seconds=0.2)
    return load_helper_stack(cloud_session, name)


def _function(role: str) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Runtime": "python3.13",
            "Handler": "index.handler",
            "Role": role,
            "Timeout": 30,
            "Environment": {"Variables": {"GREETING": "hello"}},
            "Code": {"ZipFile": "def handler(event, context):\n    return {'cloud': event}\n"},
        },
    }


@pytest.fixture(scope="module")
def app_stack(cloud_session: boto3.Session) -> str:
    """An application stack: two functions and a nested stack with a third, all with one role."""
    suffix = uuid.uuid4().hex[:6]
    iam = cloud_session.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = iam.create_role(RoleName=f"app-e2e-{suffix}", AssumeRolePolicyDocument=json.dumps(trust))["Role"][
        "Arn"
    ]
    s3 = cloud_session.client("s3")
    bucket = f"app-e2e-templates-{suffix}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(
        Bucket=bucket, Key="nested.json", Body=json.dumps({"Resources": {"Worker": _function(role)}})
    )
    template = {
        "Resources": {
            "Hello": _function(role),
            "Goodbye": _function(role),
            "Jobs": {
                "Type": "AWS::CloudFormation::Stack",
                "Properties": {"TemplateURL": f"https://s3.amazonaws.com/{bucket}/nested.json"},
            },
        }
    }
    name = f"app-e2e-{suffix}"
    cloudformation = cloud_session.client("cloudformation")
    cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(template))
    deploy.wait_for_stack(cloudformation, name, "CREATE", lambda message: None, 0.2)
    return name


def _functions(cloud_session: boto3.Session, stack: str) -> list[str]:
    """Physical names of the stack's functions, nested stacks included."""
    cloudformation = cloud_session.client("cloudformation")
    names = []
    for resource in cloudformation.list_stack_resources(StackName=stack)["StackResourceSummaries"]:
        if resource["ResourceType"] == "AWS::Lambda::Function":
            names.append(resource["PhysicalResourceId"])
        elif resource["ResourceType"] == "AWS::CloudFormation::Stack":
            names.extend(_functions(cloud_session, resource["PhysicalResourceId"]))
    return sorted(names)


def _states(local_cloud: Any, names: list[str]) -> dict[str, Any]:
    return {name: function_state(local_cloud, name) for name in names}


def instrument(cloud_session: boto3.Session, helper: HelperStack, stack: str, session_id: str) -> None:
    """What `plldb attach` does once its session is open: every function, with the developer's rights."""
    target = Target(
        session_id=session_id,
        dispatcher_arn=helper.dispatcher_function_arn,
        invocations_table=helper.invocations_table_name,
        payload_bucket=helper.payload_bucket_name,
        layer_version_arn=helper.layer_version_arn,
        timeout=30,
    )
    clients = developer_clients(cloud_session, helper)
    for name in _functions(cloud_session, stack):
        result = functions.instrument(clients, functions.FunctionRef(name, name), target)
        assert result.status == functions.STATUS_OK, result.message


def restore(cloud_session: boto3.Session, helper: HelperStack, stack: str) -> None:
    """What `plldb detach` does: restore the stack's functions, then end the session holding it."""
    stack_id = stack_id_of_session(cloud_session, stack)
    results = restore_stack(cloud_session, helper, stack_id, report=lambda _message: None)
    assert [r.status for r in results if r.status == functions.STATUS_FAILED] == []
    asyncio.run(
        release_stack(connect_url(helper.websocket_url), sigv4_signer(cloud_session, helper.region), stack_id)
    )


def stack_id_of_session(cloud_session: boto3.Session, stack: str) -> str:
    return str(
        cloud_session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]["StackId"]
    )


@pytest.fixture
def restored_afterwards(cloud_session: boto3.Session, helper: HelperStack, app_stack: str) -> Iterator[None]:
    yield
    restore(cloud_session, helper, app_stack)


def dev(cloud_session: boto3.Session, helper: HelperStack) -> RawSession:
    """A session of the account's default developer."""
    return RawSession(helper, cloud_session)


# --- setup -------------------------------------------------------------------------------------------------
def test_setup_outputs_describe_the_stack_and_a_second_setup_changes_nothing(
    local_cloud: Any, cloud_session: boto3.Session, helper: HelperStack
) -> None:
    stack = cloud_session.client("cloudformation").describe_stacks(StackName=helper.stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    api = helper.websocket_url.split("//", 1)[1].split(".", 1)[0]
    assert outputs == {
        "WebSocketUrl": f"wss://{api}.execute-api.us-east-1.amazonaws.com/plldb",
        "ConnectRouteArn": f"arn:aws:execute-api:us-east-1:123456789012:{api}/plldb/$connect",
        "LayerVersionArn": f"arn:aws:lambda:us-east-1:123456789012:layer:{helper.stack_name}-debugger:1",
        "DispatcherFunctionArn": helper.dispatcher_function_arn,
        "InvocationsTableName": helper.invocations_table_name,
        "PayloadBucketName": helper.payload_bucket_name,
        "InstrumentedFunctionPolicyArn": (
            f"arn:aws:iam::123456789012:policy/plldb/{helper.stack_name}-instrumented-function"
        ),
        "ManagerFunctionName": helper.manager_function_name,
        "TemplateVersion": TEMPLATE_VERSION,
    }
    assert helper.dispatcher_function_arn == (
        "arn:aws:lambda:us-east-1:123456789012:function:"
        + helper_function(local_cloud, helper, "DispatcherFunction")
    )
    assert not helper.outdated
    events_before = cloud_session.client("cloudformation").describe_stack_events(StackName=helper.stack_name)[
        "StackEvents"
    ]

    result = deploy.setup(cloud_session, helper.stack_name, parameters=PARAMETERS, poll_seconds=0.2)

    assert (result.action, result.uploaded) == ("unchanged", [])
    after = cloud_session.client("cloudformation").describe_stacks(StackName=helper.stack_name)["Stacks"][0]
    assert (after.get("LastUpdatedTime"), after["StackStatus"]) == (
        stack.get("LastUpdatedTime"),
        stack["StackStatus"],
    )
    events_after = cloud_session.client("cloudformation").describe_stack_events(StackName=helper.stack_name)[
        "StackEvents"
    ]
    assert events_after == events_before


def test_changed_handler_code_is_uploaded_and_redeployed(
    local_cloud: Any, cloud_session: boto3.Session, helper: HelperStack, tmp_path: Any, monkeypatch: Any
) -> None:
    marker = tmp_path / "marker.py"
    marker.write_text("CHANGED = True\n")
    original_build = packaging.build_handlers_zip

    def changed_build() -> bytes:
        return packaging.build_zip([*packaging.handler_files(), ("plldb/changed_marker.py", marker)])

    monkeypatch.setattr(packaging, "build_handlers_zip", changed_build)
    changed = changed_build()
    client = cloud_session.client("lambda")
    handlers = ("RoutesFunction", "DispatcherFunction", "ManagerFunction")
    try:
        result = deploy.setup(cloud_session, helper.stack_name, parameters=PARAMETERS, poll_seconds=0.2)

        assert result.action == "updated"
        assert result.uploaded == [f"handlers/{hashlib.sha256(changed).hexdigest()}.zip"]
        expected = base64.b64encode(hashlib.sha256(changed).digest()).decode()
        for logical_id in handlers:
            name = helper_function(local_cloud, helper, logical_id)
            assert client.get_function_configuration(FunctionName=name)["CodeSha256"] == expected, logical_id
    finally:
        monkeypatch.setattr(packaging, "build_handlers_zip", original_build)
        back = deploy.setup(cloud_session, helper.stack_name, parameters=PARAMETERS, poll_seconds=0.2)
        assert back.action == "updated"
    assert load_helper_stack(cloud_session, helper.stack_name) == HelperStack(
        **{**helper.__dict__, "status": "UPDATE_COMPLETE"}
    )


# --- $connect -------------------------------------------------------------------------------------------------
def test_the_gateway_refuses_an_unsigned_connect_and_the_routes_a_missing_or_malformed_session_id(
    local_cloud: Any, cloud_session: boto3.Session, helper: HelperStack
) -> None:
    before = helper_tables(local_cloud, helper)
    refusals_before = routes_records(local_cloud, helper, REFUSED)
    anonymous = RawSession(helper, None)
    assert asyncio.run(anonymous.status_of()) == 403  # API Gateway: Missing Authentication Token
    signed = dev(cloud_session, helper)
    base = connect_url(helper.websocket_url)
    assert asyncio.run(signed.status_of(url=base)) == 403
    assert asyncio.run(signed.status_of(url=base + "?sessionId=not-a-session")) == 403
    # The unsigned request never reached the routes; the two signed ones were refused by them.
    refusals = new_records(refusals_before, routes_records(local_cloud, helper, REFUSED))
    assert [r["reason"] for r in refusals] == ["missing or malformed session id"] * 2
    assert anonymous.session_id[:8] not in json.dumps(routes_records(local_cloud, helper, REFUSED))
    assert helper_tables(local_cloud, helper) == before


def test_a_session_id_connects_once(
    local_cloud: Any, cloud_session: boto3.Session, helper: HelperStack
) -> None:
    session = dev(cloud_session, helper)

    async def twice() -> int:
        first = await session.connect()
        await first.close()
        return await session.status_of()

    assert asyncio.run(twice()) == 403
    item = wait_for(
        lambda: (
            (found := session_item(local_cloud, helper, session.session_id))
            and found[protocol.A_STATUS] == protocol.STATUS_CLOSED
            and found
        ),
        "the first connection's $disconnect",
    )
    owner = str(cloud_session.client("sts").get_caller_identity()["Arn"])
    assert (item[protocol.A_STATUS], item[protocol.A_OWNER], item[protocol.A_CLOSED_REASON]) == (
        protocol.STATUS_CLOSED,  # a PENDING session whose connection closed is over
        owner,
        protocol.CLOSED_ABANDONED,
    )
    (refusal,) = wait_for(
        lambda: routes_records(local_cloud, helper, REFUSED, session.session_id), "the routes' refusal"
    )
    assert refusal["reason"] == "the session id was used before (a session id connects once)"


def test_two_racing_connects_with_one_session_id_let_exactly_one_in(
    local_cloud: Any, cloud_session: boto3.Session, helper: HelperStack
) -> None:
    session = dev(cloud_session, helper)

    async def race() -> tuple[list[Connection], list[int]]:
        async def one() -> Connection | int:
            try:
                return await session.connect()
            except Exception as exc:
                return int(getattr(exc, "status", 0))

        results = await asyncio.gather(one(), one())
        return [r for r in results if isinstance(r, Connection)], [r for r in results if isinstance(r, int)]

    async def run() -> str:
        winners, statuses = await race()
        assert (len(winners), statuses) == (1, [403])
        (winner,) = winners
        assert await winner.request({"type": "ping"}) == {"type": "pong"}  # PENDING: replies unsigned
        item = session_item(local_cloud, helper, session.session_id)
        assert item is not None and item[protocol.A_STATUS] == protocol.STATUS_PENDING
        connection = str(item[protocol.A_CONNECTION_ID])
        assert connection in local_cloud.gateway.connection_ids()
        await winner.close()
        return connection

    asyncio.run(run())
    assert [r["reason"] for r in routes_records(local_cloud, helper, REFUSED, session.session_id)] == [
        "the session id was used before (a session id connects once)"
    ]


# --- A session, end to end ------------------------------------------------------------------------------------
def test_open_instrument_invoke_answer_and_close_over_a_signed_websocket(
    local_cloud: Any,
    cloud_session: boto3.Session,
    helper: HelperStack,
    app_stack: str,
    restored_afterwards: None,
) -> None:
    names = _functions(cloud_session, app_stack)
    before = _states(local_cloud, names)
    session = dev(cloud_session, helper)
    owner = str(cloud_session.client("sts").get_caller_identity()["Arn"])

    async def debug() -> None:
        ws = await session.connect()
        opened = await ws.open(app_stack)
        assert ws.authentic(opened)
        assert unsigned(opened) == protocol.opened_message(
            session.session_id, stack_id_of(local_cloud, app_stack), app_stack, owner
        )
        await asyncio.get_running_loop().run_in_executor(
            None, instrument, cloud_session, helper, app_stack, session.session_id
        )
        for name in names:
            assert variables(local_cloud, name)[protocol.ENV_SESSION_ID] == session.session_id

        loop = asyncio.get_running_loop()
        lambda_client = cloud_session.client("lambda")
        invocation = loop.run_in_executor(
            None, lambda: lambda_client.invoke(FunctionName=names[0], Payload=b'{"n": 1}')
        )
        invoke = await ws.receive()
        assert ws.authentic(invoke)
        assert (invoke["type"], json.loads(invoke["event"]), invoke["function"]["name"]) == (
            protocol.MSG_INVOKE,
            {"n": 1},
            names[0],
        )
        assert invoke["environment"]["GREETING"] == "hello"
        assert not set(protocol.CREDENTIAL_VARIABLES) & set(invoke["environment"])
        caller, delivery = invoke["caller"], invoke["deliveryId"]
        assert caller == f"{role_id(cloud_session, names[0])}:{names[0]}"  # the function's own aws:userid
        stored = await ws.request(protocol.result_message(caller, delivery, '{"local": true}'))
        assert ws.authentic(stored) and unsigned(stored) == protocol.stored_message(caller, delivery)
        result = await invocation
        assert result["Payload"].read() == b'{"local": true}'

        await loop.run_in_executor(None, restore_stack_functions, cloud_session, helper, app_stack)
        closed = await ws.request({"type": protocol.MSG_CLOSE})
        assert ws.authentic(closed)
        assert unsigned(closed) == protocol.closed_message(protocol.CLOSED_DETACHED, owner)
        await ws.close()

    asyncio.run(debug())

    assert _states(local_cloud, names) == before
    item = session_item(local_cloud, helper, session.session_id)
    assert item is not None
    assert (item[protocol.A_STATUS], item[protocol.A_CLOSED_REASON]) == (
        protocol.STATUS_CLOSED,
        protocol.CLOSED_DETACHED,
    )
    assert stack_id_of(local_cloud, app_stack) not in locks(local_cloud, helper)


def role_id(cloud_session: boto3.Session, function: str) -> str:
    role = cloud_session.client("lambda").get_function_configuration(FunctionName=function)["Role"]
    return str(cloud_session.client("iam").get_role(RoleName=role.rsplit("/", 1)[-1])["Role"]["RoleId"])


def restore_stack_functions(cloud_session: boto3.Session, helper: HelperStack, stack: str) -> None:
    results = restore_stack(cloud_session, helper, stack_id_of_session(cloud_session, stack), lambda _m: None)
    assert [r.status for r in results] == [functions.STATUS_OK] * len(results)


def test_refused_messages_over_a_real_websocket_change_nothing(
    local_cloud: Any,
    cloud_session: boto3.Session,
    helper: HelperStack,
    app_stack: str,
    restored_afterwards: None,
) -> None:
    session = dev(cloud_session, helper)
    caller = "AROAEXAMPLEROLEID0000:" + _functions(cloud_session, app_stack)[0]
    delivery = "0" * 32

    async def probe() -> None:
        ws = await session.connect()
        assert ws.authentic(await ws.open(app_stack))
        before = helper_tables(local_cloud, helper)
        cases: list[tuple[Any, str]] = [
            ("{oops", protocol.ERR_MALFORMED),
            ("[1, 2]", protocol.ERR_MALFORMED),
            ('{"type": "teleport"}', protocol.ERR_UNKNOWN_TYPE),
            ('{"type": "invoke"}', protocol.ERR_UNKNOWN_TYPE),  # a server message, not a client's
            (
                {"type": "response", "caller": caller, "statusCode": 200, "payload": "1"},
                protocol.ERR_MALFORMED,
            ),
            ({"type": "ack", "caller": "not-a-role:fn", "deliveryId": delivery}, protocol.ERR_MALFORMED),
            (protocol.ack_message(caller, delivery), protocol.ERR_UNKNOWN_REQUEST),
            (protocol.result_message(caller, delivery, "1"), protocol.ERR_UNKNOWN_REQUEST),
            (protocol.upload_message(caller, delivery, 10), protocol.ERR_UNKNOWN_REQUEST),
            (protocol.open_message(app_stack, session.key, session.anchor), protocol.ERR_WRONG_STATE),
            (protocol.release_message(app_stack), protocol.ERR_WRONG_STATE),
            (b"\xff\xfe not utf-8", protocol.ERR_MALFORMED),
        ]
        for body, code in cases:
            reply = await ws.request(body)
            assert ws.authentic(reply), body
            assert (reply["type"], reply["code"]) == (protocol.MSG_ERROR, code), body
        assert helper_tables(local_cloud, helper) == before

        await ws.send(protocol.encode(protocol.result_message(caller, delivery, "x" * 140_000)))
        assert await ws.closed_code() == 1009  # API Gateway's message quota
        assert helper_tables(local_cloud, helper)["PLLDBInvocations"] == before["PLLDBInvocations"]

    asyncio.run(probe())


# --- Reconnects ---------------------------------------------------------------------------------------------
def test_a_reconnect_needs_the_same_principal_and_the_next_token_and_keeps_the_session(
    local_cloud: Any,
    cloud_session: boto3.Session,
    helper: HelperStack,
    app_stack: str,
    restored_afterwards: None,
) -> None:
    names = _functions(cloud_session, app_stack)
    session = dev(cloud_session, helper)
    other, _other_arn = developer(local_cloud)
    thief = RawSession(helper, other, session_id=session.session_id, key=session.key, seed=session.seed)

    async def drop_and_reconnect() -> tuple[str, str]:
        ws = await session.connect()
        assert ws.authentic(await ws.open(app_stack))
        await asyncio.get_running_loop().run_in_executor(
            None, instrument, cloud_session, helper, app_stack, session.session_id
        )
        first = str((session_item(local_cloud, helper, session.session_id) or {})[protocol.A_CONNECTION_ID])
        local_cloud.gateway.cut(first)
        await ws.closed_code()
        again = await session.connect(token=session.token(1))
        pong = await again.request({"type": protocol.MSG_PING})
        assert again.authentic(pong) and unsigned(pong) == {"type": protocol.MSG_PONG}
        # Another principal, even holding the valid next token, is refused, and the token stays unused.
        assert await thief.status_of(token=session.token(2)) == 403
        assert await session.status_of(token=session.token(1)) == 403  # a token works once
        assert await session.status_of(token=session.token(3)) == 403  # and only the next one works
        third = await session.connect(token=session.token(2))  # the token the thief could not use
        assert third.authentic(await third.request({"type": protocol.MSG_PING}))
        await again.close()
        again = third
        second = str((session_item(local_cloud, helper, session.session_id) or {})[protocol.A_CONNECTION_ID])
        # The first connection's $disconnect must not restore: wait for the helper stack to decide so.
        wait_for(
            lambda: (
                routes_records(local_cloud, helper, "disconnect of a replaced connection", session.session_id)
                or manager_records(
                    local_cloud,
                    helper,
                    "session reconnected or closed meanwhile; nothing to restore",
                    session.session_id,
                )
            ),
            "the helper stack's decision about the first connection",
        )
        await again.close()
        return first, second

    first, second = asyncio.run(drop_and_reconnect())

    assert second != first
    assert not manager_records(local_cloud, helper, "session restored", session.session_id)
    assert all(variables(local_cloud, name)[protocol.ENV_SESSION_ID] == session.session_id for name in names)
    reasons = sorted(r["reason"] for r in routes_records(local_cloud, helper, REFUSED, session.session_id))
    assert reasons == [
        "the reconnect token does not match the session",
        "the reconnect token does not match the session",
        "the session belongs to another principal",
    ]


def test_a_dropped_connection_restores_the_stack_after_the_grace_period(
    local_cloud: Any,
    cloud_session: boto3.Session,
    helper: HelperStack,
    app_stack: str,
    restored_afterwards: None,
) -> None:
    names = _functions(cloud_session, app_stack)
    before = _states(local_cloud, names)
    session = dev(cloud_session, helper)

    async def attach_and_drop() -> None:
        ws = await session.connect()
        assert ws.authentic(await ws.open(app_stack))
        await asyncio.get_running_loop().run_in_executor(
            None, instrument, cloud_session, helper, app_stack, session.session_id
        )
        connection_id = str(
            (session_item(local_cloud, helper, session.session_id) or {})[protocol.A_CONNECTION_ID]
        )
        local_cloud.gateway.cut(connection_id)
        await ws.closed_code()

    asyncio.run(attach_and_drop())

    wait_for(
        lambda: manager_records(local_cloud, helper, "session restored", session.session_id),
        "the manager's restore after the grace period",
    )
    assert _states(local_cloud, names) == before  # the role too: its three tags and the policy are gone
    item = session_item(local_cloud, helper, session.session_id)
    assert item is not None
    assert (item[protocol.A_STATUS], item[protocol.A_CLOSED_REASON]) == (
        protocol.STATUS_CLOSED,
        protocol.CLOSED_ABANDONED,
    )


# --- destroy ------------------------------------------------------------------------------------------------
def test_destroy_refuses_while_attached_and_force_restores_then_removes_everything(
    local_cloud: Any, cloud_session: boto3.Session, app_stack: str
) -> None:
    name = f"plldb-doomed-{uuid.uuid4().hex[:6]}"
    deploy.setup(cloud_session, name, parameters=PARAMETERS, poll_seconds=0.2)
    doomed = load_helper_stack(cloud_session, name)
    names = _functions(cloud_session, app_stack)
    before = _states(local_cloud, names)
    session = dev(cloud_session, doomed)
    owner = str(cloud_session.client("sts").get_caller_identity()["Arn"])
    s3 = cloud_session.client("s3")
    s3.put_object(Bucket=doomed.payload_bucket_name, Key="events/AROAEXAMPLE:fn/" + "0" * 32, Body=b"{}")
    tables = {
        logical_id: helper_resource(local_cloud, doomed, logical_id)
        for logical_id in ("PLLDBSessions", "PLLDBConnections", "PLLDBStackLocks", "PLLDBInvocations")
    }

    async def run() -> None:
        ws = await session.connect()
        assert ws.authentic(await ws.open(app_stack))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, instrument, cloud_session, doomed, app_stack, session.session_id)
        tables_before = helper_tables(local_cloud, doomed)
        with pytest.raises(PlldbError) as refused:
            await loop.run_in_executor(None, lambda: deploy.destroy(cloud_session, name, poll_seconds=0.2))
        assert refused.value.one_line() == (
            f"1 plldb session(s) are active: stack {app_stack} by {owner} since "
            f"{deploy.utc_time_text((session_item(local_cloud, doomed, session.session_id) or {})[protocol.A_CREATED_AT])}. "
            "Detach them first, or pass --force to restore their functions and end them."
        )
        assert helper_tables(local_cloud, doomed) == tables_before
        assert all(variables(local_cloud, n)[protocol.ENV_SESSION_ID] == session.session_id for n in names)

        result = await loop.run_in_executor(
            None, lambda: deploy.destroy(cloud_session, name, force=True, poll_seconds=0.2)
        )
        assert result.stack_deleted
        assert sorted((f["functionName"], f["status"], f["message"]) for f in result.restored) == [
            (n, "ok", "restored") for n in names
        ]
        # The developer is told, authenticated, who ended the session.
        closed = await ws.receive()
        assert ws.authentic(closed)
        assert unsigned(closed) == protocol.closed_message(
            protocol.CLOSED_RELEASED, owner, f"stack {app_stack} was restored and released by {owner}"
        )
        await ws.close()

    asyncio.run(run())

    assert _states(local_cloud, names) == before
    with pytest.raises(PlldbError, match=f"The plldb helper stack '{name}' was not found in us-east-1"):
        load_helper_stack(cloud_session, name)
    assert doomed.payload_bucket_name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    dynamodb = cloud_session.client("dynamodb")
    assert not set(tables.values()) & set(dynamodb.list_tables()["TableNames"])
    lambda_names = {f["FunctionName"] for f in cloud_session.client("lambda").list_functions()["Functions"]}
    assert not {n for n in lambda_names if n.startswith(f"{name}-")}
