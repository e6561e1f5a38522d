"""When no debugger answers: absent, gone, silent or late debuggers, the passthrough fallback, bad setups.

Bounds asserted here are the ones docs/protocol.md promises: an absent session or a gone connection
is answered within a second, a silent debugger after ACK_TIMEOUT_SECONDS, a late one
DEADLINE_MARGIN_MS before the function's deadline, one that acknowledged and then lost its session
within CONNECTION_CACHE_SECONDS (plus one poll) of the session's end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from layer_harness import (
    FUNCTION_NAME,
    STACK_NAME,
    LambdaEnvironment,
    LayerCloud,
    Reply,
    ScriptedDebugger,
)

from plldb import protocol
from plldb.bootstrap.cloudformation.layer.lambda_runtime import MAX_POLL_DELAY_SECONDS

NOT_ATTACHED_FIX = (
    "Run `plldb attach --stack-name {0}` to debug it, or `plldb detach --stack-name {0}` to remove "
    "plldb's instrumentation from the stack's functions."
)


def not_attached(reason: str, stack: str = STACK_NAME) -> str:
    return f"plldb is not attached to this function's stack: {reason}. " + NOT_ATTACHED_FIX.format(stack)


def start_instrumented(
    cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    session_id: str,
    connection_id: str,
    handler: str = "app.echo",
) -> LambdaEnvironment:
    environment = start_environment(handler, instrumentation=cloud.instrumentation(session_id, connection_id))
    environment.wait_until_ready()
    return environment


def expect_not_attached(result: Any, reason: str, stack: str = STACK_NAME) -> None:
    assert result.error_type == "PlldbNotAttached"
    assert result.json() == {
        "errorMessage": not_attached(reason, stack),
        "errorType": "PlldbNotAttached",
        "requestId": result.request_id,
        "stackTrace": [],
    }


def test_a_closed_session_is_answered_not_attached_at_once(
    layer_cloud: LayerCloud, start_environment: Callable[..., LambdaEnvironment]
) -> None:
    session_id = layer_cloud.put_session("conn-closed", status=protocol.STATUS_CLOSED)
    environment = start_instrumented(layer_cloud, start_environment, session_id, "conn-closed")
    result = environment.invoke({"order": 1})
    expect_not_attached(result, "its debugging session has ended")
    assert result.seconds < 1.0
    assert layer_cloud.debugger_item(result.request_id) is None


def test_a_missing_session_is_answered_not_attached(
    layer_cloud: LayerCloud, start_environment: Callable[..., LambdaEnvironment]
) -> None:
    environment = start_instrumented(layer_cloud, start_environment, "0b1d6c52-deleted-session", "conn-x")
    result = environment.invoke({"order": 2})
    expect_not_attached(result, "its debugging session no longer exists", stack="<stack-name>")
    assert result.seconds < 1.0


def test_an_expired_session_is_answered_not_attached(
    layer_cloud: LayerCloud, start_environment: Callable[..., LambdaEnvironment]
) -> None:
    session_id = layer_cloud.put_session("conn-old", expires_in=-60)
    environment = start_instrumented(layer_cloud, start_environment, session_id, "conn-old")
    result = environment.invoke({"order": 3})
    expect_not_attached(result, "its debugging session has expired")
    assert result.seconds < 1.0


def test_a_gone_connection_is_answered_not_attached_and_marked_unavailable(
    layer_cloud: LayerCloud, start_environment: Callable[..., LambdaEnvironment]
) -> None:
    session_id = layer_cloud.put_session("Vq3zGoneConnAA=")
    environment = start_instrumented(layer_cloud, start_environment, session_id, "Vq3zGoneConnAA=")
    result = environment.invoke({"order": 4})
    expect_not_attached(result, "the debugger's WebSocket connection is gone")
    assert result.seconds < 1.0
    item = layer_cloud.debugger_item(result.request_id)
    assert item is not None
    assert item[protocol.A_RESPONSE_CODE] == {"N": "503"}


def test_an_invocation_follows_the_debugger_to_its_new_connection(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    """The cached connection is gone: the layer re-reads the session once and posts to the new one."""
    first = connect_debugger()
    second = connect_debugger()
    session_id = layer_cloud.put_session(first.connection_id)
    environment = start_instrumented(layer_cloud, start_environment, session_id, first.connection_id)
    # Well inside CONNECTION_CACHE_SECONDS of the layer's last session read: it still posts to `first`.
    layer_cloud.put_session(second.connection_id, session_id=session_id)
    first.close()
    deadline = time.monotonic() + 5
    while first.connection_id in layer_cloud.gateway.connection_ids():
        assert time.monotonic() < deadline, "the gateway kept the closed connection"
        time.sleep(0.005)
    result = environment.invoke({"order": 5})
    assert result.json() == {"echo": {"order": 5}}
    assert [m["requestId"] for m in second.invokes] == [result.request_id]
    assert first.invokes == []
    assert "plldb: the debugger reconnected; sending to its new connection" in environment.logs()


def test_a_silent_debugger_is_given_up_after_the_ack_timeout_and_its_late_answer_refused(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    debugger = connect_debugger(script=lambda message, event: Reply(ack=False))
    session_id = layer_cloud.put_session(debugger.connection_id)
    environment = start_instrumented(layer_cloud, start_environment, session_id, debugger.connection_id)
    result = environment.invoke({"order": 6})
    expect_not_attached(result, "the debugger did not acknowledge the invocation within 5 s")
    assert protocol.ACK_TIMEOUT_SECONDS <= result.seconds < protocol.ACK_TIMEOUT_SECONDS + 1.0
    assert layer_cloud.debugger_item(result.request_id)[protocol.A_RESPONSE_CODE] == {"N": "503"}  # type: ignore[index]

    (invoke,) = debugger.invokes
    debugger.send_answer(invoke, '"too late"')
    refusal = debugger.wait_for_server_message(lambda m: m.get("type") == protocol.MSG_ERROR)
    assert refusal == {
        "type": "error",
        "code": protocol.ERR_REQUEST_CLOSED,
        "message": "the function stopped waiting because no debugger acknowledged the invocation in time",
        "requestId": result.request_id,
        "deliveryId": invoke["deliveryId"],
    }
    item = layer_cloud.debugger_item(result.request_id)
    assert item is not None
    assert item[protocol.A_RESPONSE_CODE] == {"N": "503"}
    assert protocol.A_RESPONSE not in item


def test_a_debugger_answering_after_the_deadline_gets_a_clear_timeout_and_is_refused(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    """A 3 s function: the layer stops DEADLINE_MARGIN_MS early, so Lambda never kills it silently."""
    debugger = connect_debugger(script=lambda message, event: Reply(payload='"late"', delay=2.5))
    session_id = layer_cloud.put_session(debugger.connection_id)
    environment = start_instrumented(layer_cloud, start_environment, session_id, debugger.connection_id)
    result = environment.invoke({"order": 7}, timeout_seconds=3)
    assert result.error_type == "PlldbDebuggerTimeout"
    assert result.json() == {
        "errorMessage": (
            "The debugger did not answer in time: the function's timeout (about 3 s) was about to end, so plldb "
            "stopped waiting 1000 ms before it. To stay longer at a breakpoint, attach with a longer timeout: "
            f"`plldb attach --stack-name {STACK_NAME} --function-timeout 900`."
        ),
        "errorType": "PlldbDebuggerTimeout",
        "requestId": result.request_id,
        "stackTrace": [],
    }
    assert 3 - protocol.DEADLINE_MARGIN_MS / 1000 - 0.1 <= result.seconds < 3
    refusal = debugger.wait_for_server_message(lambda m: m.get("type") == protocol.MSG_ERROR)
    assert (refusal["code"], refusal["message"]) == (
        protocol.ERR_REQUEST_CLOSED,
        "the function stopped waiting at its deadline; this answer came too late",
    )
    item = layer_cloud.debugger_item(result.request_id)
    assert item is not None
    assert item[protocol.A_RESPONSE_CODE] == {"N": "504"}
    assert protocol.A_RESPONSE not in item


# --- A debugger that vanishes after acknowledging ---------------------------------------------------------------
# The session is checked every CONNECTION_CACHE_SECONDS and the item every MAX_POLL_DELAY_SECONDS at most.
SESSION_END_NOTICED_WITHIN = protocol.CONNECTION_CACHE_SECONDS + MAX_POLL_DELAY_SECONDS + 0.5


def wait_for_ack(cloud: LayerCloud, request_id: str) -> None:
    deadline = time.monotonic() + 5
    while protocol.A_ACKED_AT not in (cloud.debugger_item(request_id) or {}):
        assert time.monotonic() < deadline, "the debugger's ack was never stored"
        time.sleep(0.01)


def close_session_as_the_manager_does(cloud: LayerCloud, session_id: str, connection_id: str) -> None:
    """What $disconnect and the manager's restore_if_abandoned leave once the grace period has passed."""
    cloud.client("dynamodb").update_item(
        TableName=cloud.sessions_table,
        Key={protocol.A_SESSION_ID: {"S": session_id}},
        UpdateExpression="SET #disc = :now, #status = :closed",
        ConditionExpression="#conn = :conn AND #status = :active",
        ExpressionAttributeNames={
            "#disc": protocol.A_DISCONNECTED_AT,
            "#status": protocol.A_STATUS,
            "#conn": protocol.A_CONNECTION_ID,
        },
        ExpressionAttributeValues={
            ":now": {"N": str(int(time.time()))},
            ":closed": {"S": protocol.STATUS_CLOSED},
            ":active": {"S": protocol.STATUS_ACTIVE},
            ":conn": {"S": connection_id},
        },
    )


@pytest.mark.parametrize("fallback", [None, protocol.FALLBACK_PASSTHROUGH])
def test_an_acknowledged_invocation_ends_soon_after_its_session_closes_not_at_the_deadline(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
    fallback: str | None,
) -> None:
    """The developer's process dies while running the handler: acked, never answered.

    Whatever the fallback, the caller gets PlldbNotAttached: the handler already ran (in part) on the
    developer's machine, so it is not run again in the cloud.
    """
    debugger = connect_debugger(script=lambda message, event: Reply(ack=True))
    session_id = layer_cloud.put_session(debugger.connection_id, fallback=fallback)
    environment = start_instrumented(layer_cloud, start_environment, session_id, debugger.connection_id)
    started = time.monotonic()
    invocation = environment.submit({"order": 13}, timeout_seconds=60)
    wait_for_ack(layer_cloud, invocation.request_id)
    debugger.close()
    time.sleep(protocol.CONNECTION_CACHE_SECONDS + 0.5)  # the layer keeps waiting while the session is ACTIVE
    assert invocation.outcome is None
    close_session_as_the_manager_does(layer_cloud, session_id, debugger.connection_id)
    closed_at = time.monotonic()

    result = environment.result(invocation, started, timeout=60)
    assert time.monotonic() - closed_at < SESSION_END_NOTICED_WITHIN
    expect_not_attached(result, "its debugging session has ended")
    assert (
        "plldb: the debugging session ended before the debugger answered (its debugging session has ended)"
        in (environment.logs())
    )
    assert "fallback passthrough" not in environment.logs()
    item = layer_cloud.debugger_item(result.request_id)
    assert item is not None
    assert item[protocol.A_RESPONSE_CODE] == {"N": "503"}
    assert item[protocol.A_DELIVERY_ID] == {"S": debugger.invokes[0]["deliveryId"]}
    assert protocol.A_RESPONSE not in item


def test_an_acknowledged_invocation_waits_for_a_reconnected_debugger_and_takes_its_answer(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    """A new ConnectionId on an ACTIVE session is a reconnect: the answer comes through the new connection."""
    first = connect_debugger(script=lambda message, event: Reply(ack=True))
    second = connect_debugger()
    session_id = layer_cloud.put_session(first.connection_id)
    environment = start_instrumented(layer_cloud, start_environment, session_id, first.connection_id)
    started = time.monotonic()
    invocation = environment.submit({"order": 14}, timeout_seconds=60)
    wait_for_ack(layer_cloud, invocation.request_id)
    first.close()
    layer_cloud.put_session(second.connection_id, session_id=session_id)
    time.sleep(SESSION_END_NOTICED_WITHIN)  # the layer has re-read the moved session meanwhile
    assert invocation.outcome is None

    (invoke,) = first.invokes
    second.send_answer(invoke, '{"answered": "after reconnecting"}')
    result = environment.result(invocation, started, timeout=60)
    assert result.error_type is None
    assert result.json() == {"answered": "after reconnecting"}
    assert second.wait_for_server_message(lambda m: m.get("type") == protocol.MSG_STORED) == {
        "type": protocol.MSG_STORED,
        "requestId": invocation.request_id,
        "deliveryId": invoke["deliveryId"],
    }


# --- Fallback passthrough ------------------------------------------------------------------------------------
def test_passthrough_runs_the_real_handler_in_the_cloud_with_its_module_kept_warm(
    layer_cloud: LayerCloud, start_environment: Callable[..., LambdaEnvironment]
) -> None:
    session_id = layer_cloud.put_session("conn-closed", status=protocol.STATUS_CLOSED, fallback="passthrough")
    environment = start_instrumented(layer_cloud, start_environment, session_id, "conn-closed")
    first = environment.invoke({"order": 8})
    second = environment.invoke({"order": 9})
    assert first.json() == {
        "event": {"order": 8},
        "calls": 1,
        "function": FUNCTION_NAME,
        "requestId": first.request_id,
    }
    assert second.json()["calls"] == 2
    assert (
        "plldb: no debugger (its debugging session has ended); running the function's own handler "
        "(fallback passthrough)" in environment.logs()
    )


def test_passthrough_after_a_gone_connection_runs_the_real_handler(
    layer_cloud: LayerCloud, start_environment: Callable[..., LambdaEnvironment]
) -> None:
    session_id = layer_cloud.put_session("Vq3zGoneConnBB=", fallback="passthrough")
    environment = start_instrumented(layer_cloud, start_environment, session_id, "Vq3zGoneConnBB=")
    result = environment.invoke({"order": 10})
    assert result.json()["event"] == {"order": 10}
    assert layer_cloud.debugger_item(result.request_id)[protocol.A_RESPONSE_CODE] == {"N": "503"}  # type: ignore[index]


def _without_request_id(payload: bytes) -> dict[str, Any]:
    document = json.loads(payload)
    document.pop("requestId")
    return document


def test_passthrough_errors_are_exactly_those_of_the_python_runtime(
    layer_cloud: LayerCloud, start_environment: Callable[..., LambdaEnvironment]
) -> None:
    session_id = layer_cloud.put_session("conn-closed", status=protocol.STATUS_CLOSED, fallback="passthrough")
    for handler in ("app.fail", "app.not_serialisable"):
        plain = start_environment(handler, with_wrapper=False)
        layered = start_instrumented(
            layer_cloud, start_environment, session_id, "conn-closed", handler=handler
        )
        expected = plain.invoke({"id": "A-1"})
        actual = layered.invoke({"id": "A-1"})
        # awslambdaric 4 leaves out the optional error-type header; the layer sends it, as the Runtime
        # API documentation asks, with the document's errorType.
        assert actual.error_type == json.loads(actual.payload)["errorType"]
        assert _without_request_id(actual.payload) == _without_request_id(expected.payload)
        assert json.loads(actual.payload)["requestId"] == actual.request_id
        expected_logs = plain.logs()
        assert expected_logs.split("[ERROR]", 1)[1] in layered.logs()
    assert json.loads(expected.payload)["errorType"] == "Runtime.MarshalError"


def test_passthrough_imports_the_functions_own_plldb_module(
    layer_cloud: LayerCloud, start_environment: Callable[..., LambdaEnvironment], task_root: Path
) -> None:
    """The layer's package is off the import path before the handler is imported."""
    (task_root / "plldb.py").write_text('VALUE = "the function\'s own plldb"\n', encoding="utf-8")
    (task_root / "uses_plldb.py").write_text(
        "import plldb\n\ndef handler(event, context):\n    return [plldb.VALUE, plldb.__file__]\n",
        encoding="utf-8",
    )
    session_id = layer_cloud.put_session("conn-closed", status=protocol.STATUS_CLOSED, fallback="passthrough")
    environment = start_instrumented(
        layer_cloud, start_environment, session_id, "conn-closed", "uses_plldb.handler"
    )
    assert environment.invoke({}).json() == ["the function's own plldb", str(task_root / "plldb.py")]


# --- Set-ups ---------------------------------------------------------------------------------------------------------
def test_invalid_session_variables_are_reported_as_an_init_error(
    layer_cloud: LayerCloud, start_environment: Callable[..., LambdaEnvironment]
) -> None:
    instrumentation = layer_cloud.instrumentation("5f0c3a1e-session", "conn-1")
    del instrumentation[protocol.ENV_DEBUGGER_TABLE]
    instrumentation[protocol.ENV_DEBUGGER_ROLE_ARN] = "PLLDBDebuggerRole"
    environment = start_environment(instrumentation=instrumentation)
    init_error = environment.wait_for_init_error()
    assert init_error.error_type == "PlldbInvalidConfiguration"
    assert json.loads(init_error.payload) == {
        "errorMessage": (
            "plldb's debugger layer cannot start: PLLDB_DEBUGGER_TABLE not set; PLLDB_DEBUGGER_ROLE_ARN is not an "
            "IAM role ARN. " + NOT_ATTACHED_FIX.format("<stack-name>")
        ),
        "errorType": "PlldbInvalidConfiguration",
        "requestId": "",
        "stackTrace": [],
    }
    assert environment.process.wait(timeout=10) == 1


def test_without_session_variables_the_function_runs_exactly_as_without_the_layer(
    layer_cloud: LayerCloud, start_environment: Callable[..., LambdaEnvironment]
) -> None:
    """Layer installed, no DEBUGGER_* variables: same result and same environment as no layer at all."""
    leftovers = {
        protocol.ENV_DEBUGGER_ROLE_ARN: layer_cloud.role_arn,
        protocol.ENV_DEBUGGER_TABLE: layer_cloud.debugger_table,
        protocol.ENV_SESSION_ID: "",
    }
    plain = start_environment("app.environment", with_wrapper=False)
    layered = start_environment("app.environment", extra=leftovers)
    expected = plain.invoke({"order": 11}).json()
    actual = layered.invoke({"order": 11}).json()
    assert expected.pop("AWS_LAMBDA_RUNTIME_API") != actual.pop("AWS_LAMBDA_RUNTIME_API")
    assert actual == expected
    assert "plldb" not in layered.logs()


def test_without_session_variables_a_chained_wrapper_takes_over(
    layer_cloud: LayerCloud, start_environment: Callable[..., LambdaEnvironment], tmp_path: Path
) -> None:
    their_wrapper = tmp_path / "their-wrapper"
    their_wrapper.write_text('#!/bin/sh\nTHEIR_WRAPPER_RAN=yes\nexport THEIR_WRAPPER_RAN\nexec "$@"\n')
    their_wrapper.chmod(0o755)
    theirs_alone = start_environment("app.environment", extra={protocol.ENV_EXEC_WRAPPER: str(their_wrapper)})
    layered = start_environment(
        "app.environment", extra={protocol.ENV_ORIGINAL_EXEC_WRAPPER: str(their_wrapper)}
    )
    expected = theirs_alone.invoke({}).json()
    actual = layered.invoke({}).json()
    assert actual["THEIR_WRAPPER_RAN"] == "yes"
    assert actual[protocol.ENV_EXEC_WRAPPER] == str(their_wrapper)
    del expected["AWS_LAMBDA_RUNTIME_API"], actual["AWS_LAMBDA_RUNTIME_API"]
    assert actual == expected


def test_the_debugger_sees_the_functions_own_environment(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
    tmp_path: Path,
) -> None:
    """plldb's variables are not part of it; a chained wrapper is shown as the function's own."""
    debugger = connect_debugger()
    session_id = layer_cloud.put_session(debugger.connection_id)
    instrumentation = layer_cloud.instrumentation(session_id, debugger.connection_id)
    instrumentation[protocol.ENV_ORIGINAL_EXEC_WRAPPER] = "/opt/their/wrapper"
    environment = start_environment(instrumentation=instrumentation)
    environment.wait_until_ready()
    environment.invoke({"order": 12})
    seen = debugger.invokes[0]["environment"]
    assert seen[protocol.ENV_EXEC_WRAPPER] == "/opt/their/wrapper"
    assert not {
        name for name in protocol.INSTRUMENTATION_VARIABLES if name != protocol.ENV_EXEC_WRAPPER
    } & set(seen)
    assert not set(protocol.CREDENTIAL_VARIABLES) & set(seen)
    assert seen["ORDERS_TABLE"] == "orders"
