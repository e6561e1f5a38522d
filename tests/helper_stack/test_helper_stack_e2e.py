"""The helper stack deployed with `plldb bootstrap setup` logic on the local cloud, driven over WebSockets.

Everything here goes through the real protocols: CloudFormation deploys the template, API Gateway's
emulator runs the authorizer and the routes in real Lambda environments, the manager changes real
function configurations, and the debugger is a `websockets` client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from plldb import protocol
from plldb.bootstrap import deploy, packaging
from plldb.bootstrap.helper_stack import TEMPLATE_VERSION, HelperStack, invoke_manager, load_helper_stack
from plldb.errors import PlldbError

pytestmark = pytest.mark.slow

VOLATILE = {"LastModified", "RevisionId", "ResponseMetadata", "LastUpdateStatus", "LastUpdateStatusReason"}
GRACE_SECONDS = 1
MESSAGE_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def cloud_session(local_cloud) -> boto3.Session:
    return local_cloud.session()


@pytest.fixture(scope="module")
def helper(cloud_session) -> HelperStack:
    name = f"plldb-e2e-{uuid.uuid4().hex[:6]}"
    deploy.setup(
        cloud_session, name, parameters={"DisconnectGraceSeconds": str(GRACE_SECONDS)}, poll_seconds=0.2
    )
    return load_helper_stack(cloud_session, name)


def _function(role: str, handler_body: str = "return {'echo': event}") -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Runtime": "python3.13",
            "Handler": "index.handler",
            "Role": role,
            "Timeout": 3,
            "Environment": {"Variables": {"GREETING": "hello"}},
            "Code": {"ZipFile": f"def handler(event, context):\n    {handler_body}\n"},
        },
    }


@pytest.fixture(scope="module")
def app_stack(cloud_session) -> str:
    """An application stack: two functions and a nested stack with a third."""
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


def _functions(cloud_session, stack: str) -> list[str]:
    """Physical names of the stack's functions, nested stacks included."""
    cloudformation = cloud_session.client("cloudformation")
    names = []
    for resource in cloudformation.list_stack_resources(StackName=stack)["StackResourceSummaries"]:
        if resource["ResourceType"] == "AWS::Lambda::Function":
            names.append(resource["PhysicalResourceId"])
        elif resource["ResourceType"] == "AWS::CloudFormation::Stack":
            names.extend(_functions(cloud_session, resource["PhysicalResourceId"]))
    return sorted(names)


def _snapshot(cloud_session, names: list[str]) -> dict[str, str]:
    client = cloud_session.client("lambda")
    result = {}
    for name in names:
        config = client.get_function_configuration(FunctionName=name)
        result[name] = json.dumps({k: v for k, v in config.items() if k not in VOLATILE}, sort_keys=True)
    return result


def _variables(cloud_session, name: str) -> dict[str, str]:
    config = cloud_session.client("lambda").get_function_configuration(FunctionName=name)
    return config.get("Environment", {}).get("Variables", {})


class Sessions:
    """Creates sessions as `plldb attach` does: as PLLDBDebuggerRole, a conditional put of a PENDING item."""

    def __init__(self, cloud_session: boto3.Session, helper: HelperStack) -> None:
        credentials = cloud_session.client("sts").assume_role(
            RoleArn=helper.debugger_role_arn, RoleSessionName="plldb-e2e"
        )["Credentials"]
        self.as_debugger = boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=cloud_session.region_name,
        )
        self.dynamodb = self.as_debugger.client("dynamodb")
        self.helper = helper

    def create(self, stack: str, *, ttl: int = protocol.SESSION_TTL_SECONDS, **extra: str) -> tuple[str, str]:
        """(session id, reconnect seed)."""
        session_id, seed, now = str(uuid.uuid4()), secrets.token_hex(32), int(time.time())
        item = {
            protocol.A_SESSION_ID: {"S": session_id},
            protocol.A_STATUS: {"S": protocol.STATUS_PENDING},
            protocol.A_STACK_NAME: {"S": stack},
            protocol.A_TTL: {"N": str(now + ttl)},
            protocol.A_CREATED_AT: {"N": str(now)},
            protocol.A_OWNER: {"S": extra.get("owner", "arn:aws:iam::123456789012:user/dev on e2e")},
            protocol.A_FUNCTION_TIMEOUT: {"N": "120"},
            protocol.A_FALLBACK: {"S": protocol.FALLBACK_ERROR},
            protocol.A_RECONNECT_ANCHOR: {
                "S": protocol.reconnect_token(seed, protocol.RECONNECT_CHAIN_LENGTH)
            },
        }
        self.dynamodb.put_item(
            TableName=self.helper.sessions_table_name,
            Item=item,
            ConditionExpression="attribute_not_exists(SessionId)",
        )
        return session_id, seed

    def item(self, session_id: str) -> dict[str, Any]:
        return self.dynamodb.get_item(
            TableName=self.helper.sessions_table_name,
            Key={protocol.A_SESSION_ID: {"S": session_id}},
            ConsistentRead=True,
        ).get("Item", {})

    def status(self, session_id: str) -> str:
        return self.item(session_id)[protocol.A_STATUS]["S"]


@pytest.fixture(scope="module")
def sessions(cloud_session, helper) -> Sessions:
    return Sessions(cloud_session, helper)


def _url(helper: HelperStack, **query: str) -> str:
    return (
        protocol.execute_api_url(helper.websocket_url) + "?" + "&".join(f"{k}={v}" for k, v in query.items())
    )


async def _until_done(ws: Any, phase: str) -> list[dict[str, Any]]:
    """Progress messages of one phase, up to and including its 'done'."""
    messages = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), MESSAGE_TIMEOUT))
        if message.get("type") == "progress" and message.get("phase") == phase:
            messages.append(message)
            if message["status"] == "done":
                return messages


async def _reply(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), MESSAGE_TIMEOUT))


def _eventually(check: Any, timeout: float = 30.0) -> None:
    """Wait for an asynchronous effect (an async Lambda invocation) to become visible."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the expected change did not happen in time"
        time.sleep(0.2)


@pytest.fixture
def restored_afterwards(cloud_session, helper, app_stack) -> Iterator[None]:
    yield
    invoke_manager(cloud_session, helper, {"action": "restore_stack", "stackName": app_stack})


# --- setup -------------------------------------------------------------------------------------------------
def test_setup_outputs_describe_the_stack_and_a_second_setup_changes_nothing(cloud_session, helper):
    assert helper.websocket_url.startswith("wss://") and helper.websocket_url.endswith(
        ".execute-api.us-east-1.amazonaws.com/plldb"
    )
    assert helper.management_url == "https://" + helper.websocket_url[len("wss://") :]
    assert helper.layer_version_arn.startswith(
        f"arn:aws:lambda:us-east-1:123456789012:layer:{helper.stack_name}-debugger:"
    )
    assert helper.template_version == TEMPLATE_VERSION and not helper.outdated
    cloudformation = cloud_session.client("cloudformation")
    before = cloudformation.describe_stacks(StackName=helper.stack_name)["Stacks"][0]

    started = time.monotonic()
    result = deploy.setup(
        cloud_session,
        helper.stack_name,
        parameters={"DisconnectGraceSeconds": str(GRACE_SECONDS)},
        poll_seconds=0.2,
    )

    assert (result.action, result.uploaded) == ("unchanged", [])
    assert time.monotonic() - started < 5
    after = cloudformation.describe_stacks(StackName=helper.stack_name)["Stacks"][0]
    assert after.get("LastUpdatedTime") == before.get("LastUpdatedTime")
    assert after["StackStatus"] == before["StackStatus"]


def test_changed_handler_code_is_uploaded_and_redeployed(cloud_session, helper, tmp_path, monkeypatch):
    marker = tmp_path / "marker.py"
    marker.write_text("CHANGED = True\n")
    original_build = packaging.build_handlers_zip

    def changed_build() -> bytes:
        return packaging.build_zip([*packaging.handler_files(), ("plldb/changed_marker.py", marker)])

    monkeypatch.setattr(packaging, "build_handlers_zip", changed_build)
    changed = changed_build()
    try:
        result = deploy.setup(
            cloud_session,
            helper.stack_name,
            parameters={"DisconnectGraceSeconds": str(GRACE_SECONDS)},
            poll_seconds=0.2,
        )

        assert result.action == "updated"
        assert result.uploaded == [f"handlers/{hashlib.sha256(changed).hexdigest()}.zip"]
        expected = base64.b64encode(hashlib.sha256(changed).digest()).decode()
        client = cloud_session.client("lambda")
        for logical_id in ("AuthorizerFunction", "WebSocketFunction", "ManagerFunction"):
            name = cloud_session.client("cloudformation").describe_stack_resource(
                StackName=helper.stack_name, LogicalResourceId=logical_id
            )["StackResourceDetail"]["PhysicalResourceId"]
            assert client.get_function_configuration(FunctionName=name)["CodeSha256"] == expected
    finally:
        monkeypatch.setattr(packaging, "build_handlers_zip", original_build)
        back = deploy.setup(
            cloud_session,
            helper.stack_name,
            parameters={"DisconnectGraceSeconds": str(GRACE_SECONDS)},
            poll_seconds=0.2,
        )
        assert back.action == "updated"


# --- The authorizer, through API Gateway -----------------------------------------------------------------
async def _handshake_status(url: str) -> int:
    """101 when the connection opens, else the HTTP status API Gateway answered."""
    try:
        async with websockets.connect(url, open_timeout=MESSAGE_TIMEOUT):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def _connect_status(url: str) -> int:
    return asyncio.run(_handshake_status(url))


def test_the_gateway_refuses_missing_unknown_expired_and_closed_session_ids(
    cloud_session, helper, sessions, app_stack
):
    base = protocol.execute_api_url(helper.websocket_url)
    assert _connect_status(base) == 401, "no identity source: API Gateway answers 401 without the authorizer"
    assert _connect_status(_url(helper, sessionId=str(uuid.uuid4()))) == 403
    assert _connect_status(_url(helper, sessionId="not-a-session")) == 403
    expired, _ = sessions.create(app_stack, ttl=-5)
    assert _connect_status(_url(helper, sessionId=expired)) == 403
    assert sessions.status(expired) == protocol.STATUS_PENDING
    closed, _ = sessions.create(app_stack)
    cloud_session.client("dynamodb").update_item(  # as the manager does when a session ends
        TableName=helper.sessions_table_name,
        Key={protocol.A_SESSION_ID: {"S": closed}},
        UpdateExpression="SET #s = :c",
        ExpressionAttributeNames={"#s": protocol.A_STATUS},
        ExpressionAttributeValues={":c": {"S": protocol.STATUS_CLOSED}},
    )
    assert _connect_status(_url(helper, sessionId=closed)) == 403


def test_two_racing_connects_with_one_session_id_let_exactly_one_in(
    helper, sessions, app_stack, restored_afterwards
):
    session_id, _ = sessions.create(app_stack)
    url = _url(helper, sessionId=session_id)

    async def race() -> None:
        async def one() -> Any:
            try:
                ws = await websockets.connect(url, open_timeout=MESSAGE_TIMEOUT)
                return ws
            except InvalidStatus as exc:
                return exc.response.status_code

        results = await asyncio.gather(one(), one())
        winners = [r for r in results if not isinstance(r, int)]
        assert sorted(r for r in results if isinstance(r, int)) == [403]
        assert len(winners) == 1
        await _until_done(winners[0], "instrument")
        assert await _handshake_status(url) == 403, "a session id connects once"
        await winners[0].close()

    asyncio.run(race())


# --- Attach, invoke, detach --------------------------------------------------------------------------------
def test_attach_instruments_every_function_invocations_reach_the_debugger_and_detach_restores(
    cloud_session, helper, sessions, app_stack, restored_afterwards
):
    names = _functions(cloud_session, app_stack)
    before = _snapshot(cloud_session, names)
    session_id, _ = sessions.create(app_stack)

    async def debug() -> None:
        async with websockets.connect(_url(helper, sessionId=session_id), open_timeout=MESSAGE_TIMEOUT) as ws:
            progress = await _until_done(ws, "instrument")
            assert progress[0]["status"] == "started" and progress[0]["total"] == 3
            assert sorted((m["function"], m["status"]) for m in progress[1:-1]) == [(n, "ok") for n in names]
            assert progress[-1]["message"] == "3 instrumented, 0 skipped, 0 failed"
            assert sessions.status(session_id) == protocol.STATUS_ACTIVE
            for name in names:
                variables = _variables(cloud_session, name)
                assert variables[protocol.ENV_SESSION_ID] == session_id
                assert variables[protocol.ENV_EXEC_WRAPPER] == protocol.LAYER_WRAPPER_PATH
                assert variables["GREETING"] == "hello"

            lambda_client = cloud_session.client("lambda")
            loop = asyncio.get_running_loop()
            invocation = loop.run_in_executor(
                None, lambda: lambda_client.invoke(FunctionName=names[0], Payload=b'{"n": 1}')
            )
            invoke = await _reply(ws)
            assert invoke["type"] == "invoke" and json.loads(invoke["event"]) == {"n": 1}
            assert len(invoke["deliveryId"]) == 32
            await ws.send(
                json.dumps(
                    {"type": "ack", "requestId": invoke["requestId"], "deliveryId": invoke["deliveryId"]}
                )
            )
            await ws.send(
                json.dumps(
                    {
                        "type": "response",
                        "requestId": invoke["requestId"],
                        "deliveryId": invoke["deliveryId"],
                        "statusCode": 200,
                        "payload": '{"local": true}',
                    }
                )
            )
            assert await _reply(ws) == {
                "type": "stored",
                "requestId": invoke["requestId"],
                "deliveryId": invoke["deliveryId"],
            }
            result = await invocation
            assert result["Payload"].read() == b'{"local": true}'

            await ws.send(json.dumps({"type": "detach"}))
            restore = await _until_done(ws, "restore")
            assert restore[-1]["message"] == f"Stack {app_stack} restored (3 functions)"

    asyncio.run(debug())

    assert _snapshot(cloud_session, names) == before
    assert sessions.status(session_id) == protocol.STATUS_CLOSED


def test_refused_messages_over_the_websocket_change_nothing(
    cloud_session, helper, sessions, app_stack, restored_afterwards
):
    session_id, _ = sessions.create(app_stack)
    other_request = str(uuid.uuid4())
    sessions.dynamodb.put_item(
        TableName=helper.debugger_table_name,
        Item={
            protocol.A_REQUEST_ID: {"S": other_request},
            protocol.A_SESSION_ID: {"S": str(uuid.uuid4())},
            protocol.A_REQUEST: {"S": "{}"},
            protocol.A_TTL: {"N": str(int(time.time()) + 600)},
        },
    )
    retried_request = str(uuid.uuid4())
    sessions.dynamodb.put_item(
        TableName=helper.debugger_table_name,
        Item={
            protocol.A_REQUEST_ID: {"S": retried_request},
            protocol.A_SESSION_ID: {"S": session_id},
            protocol.A_DELIVERY_ID: {"S": "second-round"},
            protocol.A_REQUEST: {"S": "{}"},
            protocol.A_TTL: {"N": str(int(time.time()) + 600)},
        },
    )

    def table() -> list[Any]:
        return sorted(
            json.dumps(item, sort_keys=True)
            for item in sessions.dynamodb.scan(TableName=helper.debugger_table_name, ConsistentRead=True)[
                "Items"
            ]
        )

    async def probe() -> None:
        async with websockets.connect(_url(helper, sessionId=session_id), open_timeout=MESSAGE_TIMEOUT) as ws:
            await _until_done(ws, "instrument")
            before = table()
            cases = [
                ("{oops", protocol.ERR_MALFORMED),
                ('{"type": "teleport"}', protocol.ERR_UNKNOWN_TYPE),
                (
                    json.dumps(
                        {"type": "response", "requestId": other_request, "statusCode": 200, "payload": "1"}
                    ),
                    protocol.ERR_MALFORMED,
                ),
                (
                    json.dumps(
                        {
                            "type": "response",
                            "requestId": other_request,
                            "deliveryId": "first-round",
                            "statusCode": 200,
                            "payload": "1",
                        }
                    ),
                    protocol.ERR_UNKNOWN_REQUEST,
                ),
                (
                    json.dumps(
                        {
                            "type": "response",
                            "requestId": str(uuid.uuid4()),
                            "deliveryId": "first-round",
                            "statusCode": 200,
                            "payload": "1",
                        }
                    ),
                    protocol.ERR_UNKNOWN_REQUEST,
                ),
                (
                    json.dumps(
                        {
                            "type": "response",
                            "requestId": retried_request,
                            "deliveryId": "first-round",
                            "statusCode": 200,
                            "payload": "1",
                        }
                    ),
                    protocol.ERR_STALE_DELIVERY,
                ),
            ]
            for body, code in cases:
                await ws.send(body)
                reply = await _reply(ws)
                assert (reply["type"], reply["code"]) == ("error", code), body
            assert table() == before

            await ws.send(
                json.dumps(
                    {
                        "type": "response",
                        "requestId": other_request,
                        "deliveryId": "first-round",
                        "statusCode": 200,
                        "payload": "x" * 140_000,
                    }
                )
            )
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), MESSAGE_TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            assert table() == before

    asyncio.run(probe())


# --- Disconnects and reconnects ----------------------------------------------------------------------------
def test_a_dropped_connection_restores_the_stack_after_the_grace_period(
    cloud_session, helper, sessions, app_stack, local_cloud, restored_afterwards
):
    names = _functions(cloud_session, app_stack)
    before = _snapshot(cloud_session, names)
    session_id, _ = sessions.create(app_stack)

    async def attach_and_drop() -> None:
        ws = await websockets.connect(_url(helper, sessionId=session_id), open_timeout=MESSAGE_TIMEOUT)
        await _until_done(ws, "instrument")
        connection_id = sessions.item(session_id)[protocol.A_CONNECTION_ID]["S"]
        local_cloud.gateway.cut(connection_id)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), MESSAGE_TIMEOUT)

    asyncio.run(attach_and_drop())

    _eventually(lambda: sessions.status(session_id) == protocol.STATUS_CLOSED)
    _eventually(lambda: _snapshot(cloud_session, names) == before)


def test_a_reconnect_within_the_grace_period_keeps_the_instrumentation(
    cloud_session, helper, sessions, app_stack, local_cloud, restored_afterwards
):
    names = _functions(cloud_session, app_stack)
    session_id, seed = sessions.create(app_stack)

    async def attach_drop_reconnect() -> str:
        ws = await websockets.connect(_url(helper, sessionId=session_id), open_timeout=MESSAGE_TIMEOUT)
        await _until_done(ws, "instrument")
        first = sessions.item(session_id)[protocol.A_CONNECTION_ID]["S"]
        local_cloud.gateway.cut(first)
        token = protocol.reconnect_token(seed, protocol.RECONNECT_CHAIN_LENGTH - 1)
        again = await websockets.connect(
            _url(helper, sessionId=session_id, reconnectToken=token), open_timeout=MESSAGE_TIMEOUT
        )
        await again.send(json.dumps({"type": "ping"}))
        assert await _reply(again) == {"type": "pong"}
        await asyncio.sleep(GRACE_SECONDS + 2.5)  # past the grace period and the manager's check
        await again.close()
        return first

    first = asyncio.run(attach_drop_reconnect())

    item = sessions.item(session_id)
    assert item[protocol.A_CONNECTION_ID]["S"] != first
    assert all(_variables(cloud_session, name).get(protocol.ENV_SESSION_ID) == session_id for name in names)


# --- One session per stack, take-over, destroy -------------------------------------------------------------
def test_a_second_attach_is_refused_and_a_take_over_restores_first(
    cloud_session, helper, sessions, app_stack, restored_afterwards
):
    names = _functions(cloud_session, app_stack)
    before = _snapshot(cloud_session, names)
    first, _ = sessions.create(app_stack, owner="arn:aws:iam::123456789012:user/alice on alice-laptop")
    second, _ = sessions.create(app_stack, owner="arn:aws:iam::123456789012:user/bob on bob-laptop")

    async def contend() -> None:
        alice = await websockets.connect(_url(helper, sessionId=first), open_timeout=MESSAGE_TIMEOUT)
        await _until_done(alice, "instrument")
        bob = await websockets.connect(_url(helper, sessionId=second), open_timeout=MESSAGE_TIMEOUT)
        refused = await _until_done(bob, "instrument")
        assert refused[0]["status"] == "failed"
        assert (
            "attached by arn:aws:iam::123456789012:user/alice on alice-laptop since" in refused[0]["message"]
        )
        assert all(_variables(cloud_session, n)[protocol.ENV_SESSION_ID] == first for n in names)

        taken = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: invoke_manager(
                cloud_session, helper, {"action": "restore_stack", "stackName": app_stack}
            ),
        )
        assert taken["closedSessions"] == 2
        notice = await _until_done(alice, "restore")
        assert notice[-1]["message"].startswith(f"Another plldb command restored stack {app_stack}")
        await alice.close()
        await bob.close()

    asyncio.run(contend())

    assert _snapshot(cloud_session, names) == before
    assert sessions.status(first) == sessions.status(second) == protocol.STATUS_CLOSED


def test_destroy_refuses_while_attached_and_force_restores_then_removes_everything(
    cloud_session, helper, sessions, app_stack
):
    names = _functions(cloud_session, app_stack)
    before = _snapshot(cloud_session, names)
    session_id, _ = sessions.create(app_stack, owner="dana on desk")

    async def attached() -> Any:
        ws = await websockets.connect(_url(helper, sessionId=session_id), open_timeout=MESSAGE_TIMEOUT)
        await _until_done(ws, "instrument")
        return ws

    async def run() -> None:
        ws = await attached()
        loop = asyncio.get_running_loop()
        with pytest.raises(PlldbError) as refused:
            await loop.run_in_executor(
                None, lambda: deploy.destroy(cloud_session, helper.stack_name, poll_seconds=0.2)
            )
        assert refused.value.message.startswith(
            f"1 plldb session(s) are active: stack {app_stack} by dana on desk since "
        )
        assert (
            refused.value.fix == "Detach them first, or pass --force to restore their functions and end them."
        )

        result = await loop.run_in_executor(
            None, lambda: deploy.destroy(cloud_session, helper.stack_name, force=True, poll_seconds=0.2)
        )
        assert result.stack_deleted
        assert sorted(f["functionName"] for f in result.restored) == names
        assert result.bucket_deleted == (result.bucket_kept_for == [])
        await ws.close()

    asyncio.run(run())

    assert _snapshot(cloud_session, names) == before
    with pytest.raises(
        PlldbError, match=f"The plldb helper stack '{helper.stack_name}' was not found in us-east-1"
    ):
        load_helper_stack(cloud_session, helper.stack_name)
