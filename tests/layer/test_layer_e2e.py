"""The layer end to end on the local cloud, as a developer meets it.

`plldb bootstrap setup` logic deploys the helper stack (layer, tables, WebSocket API, $default
handler, manager); a scripted debugger attaches over the WebSocket, the manager instruments the
application stack's function, and the function is invoked with boto3 ``lambda.invoke``: the layer in
a real execution environment hands each invocation to the debugger and returns its answer.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import time
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from layer_harness import FUNCTION_CODE, Reply, ScriptedDebugger, echo_reply

from plldb import protocol
from plldb.bootstrap import deploy
from plldb.bootstrap.helper_stack import HelperStack, load_helper_stack

pytestmark = pytest.mark.slow

TRUST_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)


@dataclass
class Attached:
    session: boto3.Session
    helper: HelperStack
    function_name: str
    session_id: str
    debugger: ScriptedDebugger
    role_arn: str

    def invoke(self, payload: Any, function_name: str | None = None) -> dict[str, Any]:
        response = self.session.client("lambda").invoke(
            FunctionName=function_name or self.function_name,
            Payload=json.dumps(payload).encode("utf-8"),
            LogType="Tail",
        )
        response["Body"] = response["Payload"].read()
        return response


def _as_debugger_role(session: boto3.Session, helper: HelperStack) -> boto3.Session:
    credentials = session.client("sts").assume_role(
        RoleArn=helper.debugger_role_arn, RoleSessionName="plldb-dev"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=session.region_name,
    )


@pytest.fixture(scope="module")
def attached(local_cloud: Any) -> Iterator[Attached]:
    session = local_cloud.session()
    suffix = uuid.uuid4().hex[:6]
    helper_name = f"plldb-layer-{suffix}"
    deploy.setup(session, helper_name, parameters={"DisconnectGraceSeconds": "1"}, poll_seconds=0.2)
    helper = load_helper_stack(session, helper_name)

    role_arn = session.client("iam").create_role(
        RoleName=f"orders-{suffix}", AssumeRolePolicyDocument=TRUST_POLICY
    )["Role"]["Arn"]
    app_stack = f"orders-{suffix}"
    template = {
        "Resources": {
            "Orders": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Runtime": "python3.12",
                    "Handler": "index.echo",
                    "Role": role_arn,
                    "Timeout": 3,
                    "MemorySize": 256,
                    "Environment": {"Variables": {"ORDERS_TABLE": "orders"}},
                    "Code": {"ZipFile": FUNCTION_CODE},
                },
            }
        }
    }
    cloudformation = session.client("cloudformation")
    cloudformation.create_stack(StackName=app_stack, TemplateBody=json.dumps(template))
    deploy.wait_for_stack(cloudformation, app_stack, "CREATE", lambda message: None, 0.2)
    function_name = cloudformation.describe_stack_resource(StackName=app_stack, LogicalResourceId="Orders")[
        "StackResourceDetail"
    ]["PhysicalResourceId"]

    as_debugger = _as_debugger_role(session, helper)
    session_id, now = str(uuid.uuid4()), int(time.time())
    as_debugger.client("dynamodb").put_item(
        TableName=helper.sessions_table_name,
        Item={
            protocol.A_SESSION_ID: {"S": session_id},
            protocol.A_STATUS: {"S": protocol.STATUS_PENDING},
            protocol.A_STACK_NAME: {"S": app_stack},
            protocol.A_TTL: {"N": str(now + protocol.SESSION_TTL_SECONDS)},
            protocol.A_CREATED_AT: {"N": str(now)},
            protocol.A_OWNER: {"S": "arn:aws:iam::123456789012:user/dev on laptop"},
            protocol.A_FUNCTION_TIMEOUT: {"N": "120"},
            protocol.A_FALLBACK: {"S": protocol.FALLBACK_ERROR},
            protocol.A_RECONNECT_ANCHOR: {
                "S": protocol.reconnect_token(secrets.token_hex(32), protocol.RECONNECT_CHAIN_LENGTH)
            },
        },
        ConditionExpression="attribute_not_exists(SessionId)",
    )
    debugger = ScriptedDebugger(
        protocol.execute_api_url(helper.websocket_url) + "?sessionId=" + session_id,
        as_debugger.client("dynamodb"),
        helper.debugger_table_name,
    ).connect()
    debugger.wait_for_server_message(
        lambda m: (
            m.get("type") == "progress" and m.get("phase") == "instrument" and m.get("status") == "done"
        ),
        timeout=60,
    )
    try:
        yield Attached(session, helper, function_name, session_id, debugger, role_arn)
    finally:
        debugger.script = echo_reply
        debugger._send({"type": protocol.MSG_DETACH})
        debugger.wait_for_server_message(
            lambda m: (
                m.get("type") == "progress" and m.get("phase") == "restore" and m.get("status") == "done"
            ),
            timeout=60,
        )
        debugger.close()


def _all_items_text(attached: Attached) -> str:
    dynamodb = attached.session.client("dynamodb")
    texts = []
    for table in (
        attached.helper.debugger_table_name,
        attached.helper.sessions_table_name,
        attached.helper.instrumentation_table_name,
    ):
        for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
            texts.extend(repr(item) for item in page["Items"])
    return "\n".join(texts)


def _item(attached: Attached, request_id: str) -> dict[str, Any]:
    return attached.session.client("dynamodb").get_item(
        TableName=attached.helper.debugger_table_name,
        Key={protocol.A_REQUEST_ID: {"S": request_id}},
        ConsistentRead=True,
    )["Item"]


def test_e2e_an_invocation_is_answered_by_the_debugger_recorded_and_no_credentials_are_stored(
    attached: Attached,
) -> None:
    attached.debugger.script = lambda message, event: Reply(payload=json.dumps({"local": event}))
    response = attached.invoke({"order": 1})
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["Body"] == b'{"local": {"order": 1}}'

    message = attached.debugger.invokes[-1]
    request_id = message["requestId"]
    assert message["context"]["functionName"] == attached.function_name
    item = _item(attached, request_id)
    assert json.loads(json.loads(item[protocol.A_REQUEST]["S"])["event"]) == {"order": 1}
    assert item[protocol.A_RESPONSE_CODE] == {"N": "200"}
    assert item[protocol.A_RESPONSE] == {"S": '{"local": {"order": 1}}'}
    assert item[protocol.A_SESSION_ID] == {"S": attached.session_id}
    assert "plldb: answered with 200" in base64.b64decode(response["LogResult"]).decode()

    credentials = message["credentials"]
    assert credentials["accessKeyId"].startswith("ASIA")
    stored = _all_items_text(attached)
    for secret in credentials.values():
        assert secret not in stored


def test_e2e_a_local_exception_is_the_functions_error(attached: Attached) -> None:
    trace = ['  File "/home/dev/orders/index.py", line 14, in echo\n    raise ValueError("bad order")\n']
    attached.debugger.script = lambda message, event: Reply(
        error={"errorMessage": "bad order", "errorType": "ValueError", "stackTrace": trace}
    )
    response = attached.invoke({"order": 2})
    request_id = attached.debugger.invokes[-1]["requestId"]
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Body"]) == {
        "errorMessage": "bad order",
        "errorType": "ValueError",
        "requestId": request_id,
        "stackTrace": trace,
    }
    assert _item(attached, request_id)[protocol.A_RESPONSE_CODE] == {"N": "500"}


def test_e2e_a_5_mb_event_and_a_5_mb_response_round_trip(attached: Attached) -> None:
    blob = "".join(format(i, "08x") for i in range(5 * 1024 * 1024 // 8))
    attached.debugger.script = lambda message, event: Reply(payload=json.dumps({"back": event["blob"][::-1]}))
    response = attached.invoke({"blob": blob})
    assert "FunctionError" not in response
    assert response["Body"] == json.dumps({"back": blob[::-1]}).encode()
    assert attached.debugger.invokes[-1]["eventChunks"] == 18


def test_e2e_concurrent_invocations_each_get_their_own_answer(attached: Attached) -> None:
    attached.debugger.script = lambda message, event: Reply(
        payload=json.dumps({"order": event["order"], "for": message["requestId"]})
    )
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda n: attached.invoke({"order": n}), range(8)))
    answers = [json.loads(response["Body"]) for response in responses]
    assert [answer["order"] for answer in answers] == list(range(8))
    assert len({answer["for"] for answer in answers}) == 8


def _environment_of(attached: Attached, function_name: str) -> dict[str, str]:
    response = attached.invoke({}, function_name=function_name)
    assert "FunctionError" not in response, response["Body"]
    variables = json.loads(response["Body"])
    opt = variables["PYTHONPATH"].split(":")[-1].removesuffix("/python")
    per_environment = ("AWS_LAMBDA_LOG_STREAM_NAME", "AWS_LAMBDA_RUNTIME_API", "_X_AMZN_TRACE_ID")
    return {
        name: value.replace(opt, "/opt")
        for name, value in variables.items()
        if name not in per_environment and name not in protocol.CREDENTIAL_VARIABLES
    }


def test_e2e_with_the_layer_but_no_session_the_function_is_as_without_the_layer(attached: Attached) -> None:
    lambda_client = attached.session.client("lambda")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("app.py", FUNCTION_CODE)
    name = f"orders-plain-{uuid.uuid4().hex[:6]}"
    lambda_client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=attached.role_arn,
        Handler="app.environment",
        Code={"ZipFile": archive.getvalue()},
        Environment={"Variables": {"ORDERS_TABLE": "orders"}},
    )
    without_layer = _environment_of(attached, name)
    lambda_client.update_function_configuration(
        FunctionName=name,
        Layers=[attached.helper.layer_version_arn],
        Environment={
            "Variables": {"ORDERS_TABLE": "orders", protocol.ENV_EXEC_WRAPPER: protocol.LAYER_WRAPPER_PATH}
        },
    )
    with_layer = _environment_of(attached, name)
    assert with_layer == without_layer


# --- Without a debugger, on the local cloud -----------------------------------------------------------------
def _code_zip() -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("app.py", FUNCTION_CODE)
    return archive.getvalue()


def _function(
    attached: Attached,
    handler: str,
    timeout: int = 30,
    session_id: str | None = None,
    connection_id: str = "",
) -> str:
    """A function of its own, instrumented by hand the way the manager instruments (or plain)."""
    name = f"orders-{handler.split('.')[1]}-{uuid.uuid4().hex[:6]}"
    variables = {"ORDERS_TABLE": "orders"}
    layers = []
    if session_id is not None:
        helper = attached.helper
        layers = [helper.layer_version_arn]
        variables.update(
            {
                protocol.ENV_EXEC_WRAPPER: protocol.LAYER_WRAPPER_PATH,
                protocol.ENV_SESSION_ID: session_id,
                protocol.ENV_CONNECTION_ID: connection_id,
                protocol.ENV_DEBUGGER_ROLE_ARN: helper.debugger_role_arn,
                protocol.ENV_SESSIONS_TABLE: helper.sessions_table_name,
                protocol.ENV_DEBUGGER_TABLE: helper.debugger_table_name,
                protocol.ENV_MANAGEMENT_URL: helper.management_url,
            }
        )
    attached.session.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=attached.role_arn,
        Handler=handler,
        Timeout=timeout,
        Code={"ZipFile": _code_zip()},
        Layers=layers,
        Environment={"Variables": variables},
    )
    return name


def _session(attached: Attached, status: str, fallback: str, connection_id: str) -> str:
    session_id = str(uuid.uuid4())
    attached.session.client("dynamodb").put_item(
        TableName=attached.helper.sessions_table_name,
        Item={
            protocol.A_SESSION_ID: {"S": session_id},
            protocol.A_STATUS: {"S": status},
            protocol.A_STACK_NAME: {"S": "orders-stack"},
            protocol.A_CONNECTION_ID: {"S": connection_id},
            protocol.A_FALLBACK: {"S": fallback},
            protocol.A_TTL: {"N": str(int(time.time()) + 600)},
        },
    )
    return session_id


def test_e2e_a_closed_session_is_answered_not_attached(attached: Attached) -> None:
    session_id = _session(attached, protocol.STATUS_CLOSED, protocol.FALLBACK_ERROR, "Vq3zClosedConn=")
    name = _function(attached, "app.echo", session_id=session_id, connection_id="Vq3zClosedConn=")
    response = attached.invoke({"order": 3}, function_name=name)
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Body"])
    assert error["errorType"] == "PlldbNotAttached"
    assert error["errorMessage"].startswith(
        "plldb is not attached to this function's stack: its debugging session has ended. "
        "Run `plldb attach --stack-name orders-stack` to debug it"
    )


def test_e2e_passthrough_reports_errors_exactly_as_the_python_runtime(attached: Attached) -> None:
    session_id = _session(attached, protocol.STATUS_ACTIVE, protocol.FALLBACK_PASSTHROUGH, "Vq3zGoneConnE2E=")
    layered = _function(attached, "app.fail", session_id=session_id, connection_id="Vq3zGoneConnE2E=")
    plain = _function(attached, "app.fail")
    expected = attached.invoke({"id": "A-9"}, function_name=plain)
    actual = attached.invoke({"id": "A-9"}, function_name=layered)
    assert actual["FunctionError"] == expected["FunctionError"] == "Unhandled"
    expected_error, actual_error = json.loads(expected["Body"]), json.loads(actual["Body"])
    assert actual_error.pop("requestId") != expected_error.pop("requestId")
    assert actual_error == expected_error
    assert (actual_error["errorType"], actual_error["errorMessage"]) == ("ValueError", "order A-9 is invalid")


def test_e2e_a_debugger_too_slow_for_the_functions_timeout_gets_a_clear_error(attached: Attached) -> None:
    connection_id = attached.session.client("dynamodb").get_item(
        TableName=attached.helper.sessions_table_name,
        Key={protocol.A_SESSION_ID: {"S": attached.session_id}},
        ConsistentRead=True,
    )["Item"][protocol.A_CONNECTION_ID]["S"]
    name = _function(
        attached, "app.echo", timeout=3, session_id=attached.session_id, connection_id=connection_id
    )
    attached.debugger.script = lambda message, event: Reply(payload='"late"', delay=3.0)
    response = attached.invoke({"order": 4}, function_name=name)
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Body"])["errorType"] == "PlldbDebuggerTimeout"
    log = base64.b64decode(response["LogResult"]).decode()
    duration_ms = float(re.search(r"REPORT RequestId: \S+\tDuration: ([0-9.]+) ms", log).group(1))  # type: ignore[union-attr]
    assert 3000 - protocol.DEADLINE_MARGIN_MS - 100 <= duration_ms < 3000
    assert "Task timed out" not in log
    request_id = attached.debugger.invokes[-1]["requestId"]
    assert _item(attached, request_id)[protocol.A_RESPONSE_CODE] == {"N": "504"}
