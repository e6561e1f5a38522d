"""REQ-FN-0007 (Lambda layer with debugger runtime): one test per acceptance criterion.

Each runs the layer the way Lambda runs it (AWS_LAMBDA_EXEC_WRAPPER in front of awslambdaric, the
Runtime API over HTTP), with DynamoDB and STS in moto, the invocation going over the WebSocket
gateway to a scripted debugger and its answer coming back through the real $default handler.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from layer_harness import (
    EXECUTION_ACCESS_KEY_ID,
    EXECUTION_SECRET_ACCESS_KEY,
    EXECUTION_SESSION_TOKEN,
    FUNCTION_ARN,
    FUNCTION_NAME,
    HARNESS_ACCESS_KEY_ID,
    ROOT,
    LambdaEnvironment,
    LayerCloud,
    Reply,
    ScriptedDebugger,
)
from moto.dynamodb.responses import DynamoHandler
from moto.sts.models import sts_backends

import plldb
from plldb import protocol
from plldb.bootstrap.cloudformation.layer import lambda_runtime

LAYER_DIRECTORY = ROOT / "plldb" / "bootstrap" / "cloudformation" / "layer"


def attach(
    cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    debugger: ScriptedDebugger,
    handler: str = "app.echo",
    **kwargs: Any,
) -> LambdaEnvironment:
    session_id = cloud.put_session(debugger.connection_id)
    environment = start_environment(
        handler, instrumentation=cloud.instrumentation(session_id, debugger.connection_id), **kwargs
    )
    environment.wait_until_ready()
    return environment


def test_req_fn_0007_layer_code_is_implemented_in_the_layer_directory() -> None:
    wrapper = LAYER_DIRECTORY / "wrapper"
    assert (LAYER_DIRECTORY / "lambda_runtime.py").is_file()
    assert wrapper.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    assert os.access(wrapper, os.X_OK)
    assert subprocess.run(["sh", "-n", str(wrapper)], capture_output=True).returncode == 0
    assert protocol.LAYER_WRAPPER_PATH == "/opt/plldb-debugger/wrapper"


def test_req_fn_0007_registers_to_the_runtime_api(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    """The runtime asks the Runtime API for work (/next) and keeps one HTTP connection for it."""
    debugger = connect_debugger()
    session_id = layer_cloud.put_session(debugger.connection_id)
    environment = start_environment(
        instrumentation=layer_cloud.instrumentation(session_id, debugger.connection_id)
    )
    connections: list[Any] = []
    original = environment.api._server.process_request

    def counting(request: Any, address: Any) -> None:
        connections.append(address)
        original(request, address)

    environment.api._server.process_request = counting  # type: ignore[method-assign]
    environment.wait_until_ready()
    assert environment.api.state == "Ready"
    for index in range(3):
        assert environment.invoke({"n": index}).json() == {"echo": {"n": index}}
    assert len(connections) == 1
    assert re.search(r"plldb: debugger layer [0-9.]+ \(.+\) active for session", environment.logs())


def test_req_fn_0007_creates_a_new_item_in_the_debugger_table_for_each_event(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    debugger = connect_debugger()
    session_id = layer_cloud.put_session(debugger.connection_id)
    environment = start_environment(
        instrumentation=layer_cloud.instrumentation(session_id, debugger.connection_id)
    )
    environment.wait_until_ready()
    before = int(time.time())
    first = environment.invoke({"order": 1})
    second = environment.invoke({"order": 2})

    invokes = {message["requestId"]: message for message in debugger.invokes}
    assert invokes[first.request_id]["deliveryId"] != invokes[second.request_id]["deliveryId"]
    for result, order in ((first, 1), (second, 2)):
        item = layer_cloud.debugger_item(result.request_id)
        assert item is not None
        assert item[protocol.A_DELIVERY_ID] == {"S": invokes[result.request_id]["deliveryId"]}
        assert item[protocol.A_SESSION_ID] == {"S": session_id}
        assert item[protocol.A_CONNECTION_ID] == {"S": debugger.connection_id}
        assert item[protocol.A_FUNCTION_NAME] == {"S": FUNCTION_NAME}
        assert protocol.A_REQUEST_CHUNKS not in item
        stored_request = json.loads(item[protocol.A_REQUEST]["S"])
        assert stored_request["type"] == "invoke"
        assert stored_request["requestId"] == result.request_id
        assert json.loads(stored_request["event"]) == {"order": order}
        assert "credentials" not in stored_request
        assert stored_request["context"]["invokedFunctionArn"] == FUNCTION_ARN
        environment_variables = {k: v["S"] for k, v in item[protocol.A_ENVIRONMENT]["M"].items()}
        assert environment_variables["ORDERS_TABLE"] == "orders"
        assert environment_variables["AWS_LAMBDA_FUNCTION_NAME"] == FUNCTION_NAME
        assert not set(protocol.CREDENTIAL_VARIABLES) & set(environment_variables)
        assert not set(protocol.INSTRUMENTATION_VARIABLES) & set(environment_variables)
        # The ack and the answer reach $default independently; either may be stored first.
        assert before + 3600 <= int(item[protocol.A_TTL]["N"]) <= int(time.time()) + 3600


def test_req_fn_0007_starts_a_polling_loop_that_waits_for_the_response(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    """A developer takes 1.5 s at a breakpoint: the layer keeps polling, at a bounded rate, and returns it."""
    debugger = connect_debugger(script=lambda message, event: Reply(payload='{"paused": true}', delay=1.5))
    environment = attach(layer_cloud, start_environment, debugger)
    result = environment.invoke({"order": 3})
    assert result.payload == b'{"paused": true}'
    assert result.error_type is None
    assert 1.5 <= result.seconds < 3.0
    reads = int(re.findall(r"answered with 200 after \d+ ms \((\d+) reads\)", environment.logs())[-1])
    assert reads <= lambda_runtime.max_reads(result.seconds)
    assert reads <= 25


def test_req_fn_0007_updates_the_item_in_the_debugger_table_with_the_response(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    debugger = connect_debugger(script=lambda message, event: Reply(payload='{"total": 42}'))
    environment = attach(layer_cloud, start_environment, debugger)
    result = environment.invoke({"order": 4})
    item = layer_cloud.debugger_item(result.request_id)
    assert item is not None
    assert item[protocol.A_RESPONSE_CODE] == {"N": "200"}
    assert item[protocol.A_RESPONSE] == {"S": '{"total": 42}'}
    assert protocol.A_ERROR not in item
    (invoke,) = debugger.invokes
    assert debugger.wait_for_server_message(
        lambda m: m == {"type": "stored", "requestId": result.request_id, "deliveryId": invoke["deliveryId"]}
    )


def test_req_fn_0007_returns_the_response_code_to_the_runtime_api(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    """200 becomes the function's result (/response), 500 a function error (/error)."""

    def script(message: dict[str, Any], event: Any) -> Reply:
        if event["ok"]:
            return Reply(payload='"fine"')
        return Reply(error={"errorMessage": "no stock", "errorType": "OutOfStock", "stackTrace": []})

    debugger = connect_debugger(script=script)
    environment = attach(layer_cloud, start_environment, debugger)
    ok = environment.invoke({"ok": True})
    failed = environment.invoke({"ok": False})
    assert (ok.payload, ok.error_type) == (b'"fine"', None)
    assert failed.error_type == "OutOfStock"
    assert layer_cloud.debugger_item(failed.request_id)[protocol.A_RESPONSE_CODE] == {"N": "500"}  # type: ignore[index]


def test_req_fn_0007_returns_the_response_to_the_runtime_api(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    """The handler's JSON text goes back byte for byte, as the local side produced it."""
    payload = '{"b": [1, 2.50, "é\\u00e9", null], "a": {}}'
    debugger = connect_debugger(script=lambda message, event: Reply(payload=payload))
    environment = attach(layer_cloud, start_environment, debugger)
    result = environment.invoke({"order": 5})
    assert result.payload == payload.encode("utf-8")
    assert result.error_type is None


def test_req_fn_0007_returns_the_error_to_the_runtime_api(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    """The local exception reaches the invoker as awslambdaric reports one: its fields, order and type header."""
    trace = ["  File \"/home/dev/orders/app.py\", line 12, in handler\n    raise KeyError('sku')\n"]
    debugger = connect_debugger(
        script=lambda message, event: Reply(
            error={"errorMessage": "'sku'", "errorType": "KeyError", "stackTrace": trace}
        )
    )
    environment = attach(layer_cloud, start_environment, debugger)
    result = environment.invoke({"order": 6})
    assert result.error_type == "KeyError"
    assert result.payload == json.dumps(
        {
            "errorMessage": "'sku'",
            "errorType": "KeyError",
            "requestId": result.request_id,
            "stackTrace": trace,
        }
    ).encode("utf-8")
    assert (
        "[ERROR] KeyError: 'sku'\rTraceback (most recent call last):\r\u00a0\u00a0File" in environment.logs()
    )


def test_req_fn_0007_performs_every_action_under_the_debugger_role(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The role is assumed once per environment; DynamoDB never sees the execution role's own key."""
    callers: list[str] = []
    original = DynamoHandler.call_action

    def recording(self: DynamoHandler) -> Any:
        callers.append(self.get_access_key())
        return original(self)

    monkeypatch.setattr(DynamoHandler, "call_action", recording)
    debugger = connect_debugger()
    environment = attach(layer_cloud, start_environment, debugger)
    for index in range(3):
        environment.invoke({"order": index})

    assumed = [
        role
        for role in sts_backends["123456789012"]["aws"].assumed_roles
        if role.role_arn == layer_cloud.role_arn and role.session_name == f"plldb-{FUNCTION_NAME}"
    ]
    layer_keys = {role.access_key_id for role in assumed}
    assert len(assumed) >= 1
    assert EXECUTION_ACCESS_KEY_ID not in callers
    assert layer_keys & set(callers)
    assert set(callers) <= layer_keys | {HARNESS_ACCESS_KEY_ID}
    assert environment.logs().count("answered with 200") == 3


def test_credentials_travel_only_inside_the_invoke_message(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    debugger = connect_debugger()
    environment = attach(layer_cloud, start_environment, debugger)
    assert environment.invoke({"order": 7}).json() == {"echo": {"order": 7}}
    assert environment.invoke({"blob": "x" * 200_000}).json() == {"echo": {"blob": "x" * 200_000}}
    assert "eventChunks" in debugger.invokes[1]

    assert debugger.invokes[0]["credentials"] == {
        "accessKeyId": EXECUTION_ACCESS_KEY_ID,
        "secretAccessKey": EXECUTION_SECRET_ACCESS_KEY,
        "sessionToken": EXECUTION_SESSION_TOKEN,
    }
    stored = layer_cloud.all_items_text()
    for secret in (EXECUTION_ACCESS_KEY_ID, EXECUTION_SECRET_ACCESS_KEY, EXECUTION_SESSION_TOKEN):
        assert secret not in stored
        assert secret not in environment.logs()
    for role in sts_backends["123456789012"]["aws"].assumed_roles:
        assert role.secret_access_key not in stored
        assert role.session_token not in stored


def test_logs_are_in_the_lambda_form_without_secrets(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    debugger = connect_debugger()
    session_id = layer_cloud.put_session(debugger.connection_id)
    environment = start_environment(
        instrumentation=layer_cloud.instrumentation(session_id, debugger.connection_id)
    )
    environment.wait_until_ready()
    result = environment.invoke({"order": 8})
    lines = [line for line in environment.logs().splitlines() if result.request_id in line]
    assert len(lines) == 2
    for line in lines:
        assert re.match(
            r"^\[INFO\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t"
            + re.escape(result.request_id)
            + r"\tplldb: ",
            line,
        )
    assert session_id not in environment.logs()
    assert session_id[:8] + "..." in environment.logs()


def test_the_layer_runs_from_its_packaged_layout(
    tmp_path: Path,
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    """Unpacked under /opt/plldb-debugger (here a copy), the wrapper finds its files relative to itself."""
    layer_root = tmp_path / "opt" / protocol.LAYER_DIRECTORY
    for relative in (
        "plldb/__init__.py",
        "plldb/protocol.py",
        "plldb/bootstrap/__init__.py",
        "plldb/bootstrap/cloudformation/__init__.py",
        *(str(p.relative_to(ROOT)) for p in LAYER_DIRECTORY.glob("*.py")),
    ):
        (layer_root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, layer_root / relative)
    shutil.copy2(LAYER_DIRECTORY / "wrapper", layer_root / "wrapper")

    debugger = connect_debugger()
    session_id = layer_cloud.put_session(debugger.connection_id)
    instrumentation = layer_cloud.instrumentation(session_id, debugger.connection_id)
    instrumentation[protocol.ENV_EXEC_WRAPPER] = str(layer_root / "wrapper")
    environment = start_environment(instrumentation=instrumentation)
    environment.wait_until_ready()
    assert environment.invoke({"order": 9}).json() == {"echo": {"order": 9}}
    assert f"plldb: debugger layer {plldb.__version__} ({layer_root}) active" in environment.logs()


def test_invocations_keep_flowing_after_one_fails_inside_the_layer(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    """A response whose chunks fail their digest is reported; the next invocation works as usual."""
    replies = iter([Reply(payload='{"n": 1}', chunked=True), Reply(payload='{"n": 2}')])
    lock = threading.Lock()

    def script(message: dict[str, Any], event: Any) -> Reply:
        with lock:
            return next(replies)

    debugger = connect_debugger(script=script)
    environment = attach(layer_cloud, start_environment, debugger)
    original_send = debugger._send

    def tamper(message: dict[str, Any]) -> None:
        if "payloadSha256" in message:
            message = dict(message, payloadSha256="0" * 64)
        original_send(message)

    debugger._send = tamper  # type: ignore[method-assign]
    corrupt = environment.invoke({"n": 1})
    healthy = environment.invoke({"n": 2})
    assert corrupt.error_type == "PlldbCorruptResponse"
    assert corrupt.json()["errorMessage"] == (
        "The debugger's response arrived with a SHA-256 digest that does not match (1 chunks expected)."
    )
    assert (healthy.payload, healthy.error_type) == (b'{"n": 2}', None)
