"""Payloads of every size Lambda allows, concurrency, and what the invoke message carries."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from typing import Any

from layer_harness import (
    FUNCTION_ARN,
    FUNCTION_NAME,
    LambdaEnvironment,
    LayerCloud,
    Reply,
    ScriptedDebugger,
)

from plldb import protocol

TRACE_ID = "Root=1-65a00000-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=0"


def start_attached(
    cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    debugger: ScriptedDebugger,
    count: int = 1,
) -> tuple[str, list[LambdaEnvironment]]:
    session_id = cloud.put_session(debugger.connection_id)
    environments = [
        start_environment(instrumentation=cloud.instrumentation(session_id, debugger.connection_id))
        for _ in range(count)
    ]
    for environment in environments:
        environment.wait_until_ready()
    return session_id, environments


def test_a_5_mb_event_and_a_5_mb_response_round_trip_intact(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    blob = "".join(format(i, "08x") for i in range(5 * 1024 * 1024 // 8))

    def script(message: dict[str, Any], event: Any) -> Reply:
        return Reply(
            payload=json.dumps({"reversed": event["blob"][::-1], "note": "réponse"}, ensure_ascii=False)
        )

    debugger = connect_debugger(script=script)
    _, (environment,) = start_attached(layer_cloud, start_environment, debugger)
    result = environment.invoke({"blob": blob}, timeout_seconds=60)

    assert result.error_type is None
    assert (
        result.payload == json.dumps({"reversed": blob[::-1], "note": "réponse"}, ensure_ascii=False).encode()
    )
    body_size = len(json.dumps({"blob": blob}).encode("utf-8"))
    message = debugger.invokes[0]
    assert message["eventChunks"] == math.ceil(body_size / protocol.CHUNK_SIZE) == 18
    assert "event" not in message
    assert protocol.message_size(message) <= protocol.INLINE_MESSAGE_LIMIT
    item = layer_cloud.debugger_item(result.request_id)
    assert item is not None
    assert item[protocol.A_REQUEST_CHUNKS] == {"N": "18"}
    assert json.loads(item[protocol.A_REQUEST]["S"])["eventSha256"] == message["eventSha256"]
    assert item[protocol.A_RESPONSE_CHUNKS] == {
        "N": str(math.ceil(len(result.payload) / protocol.CHUNK_SIZE))
    }


def test_an_event_just_too_large_to_inline_goes_by_reference(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    debugger = connect_debugger()
    _, (environment,) = start_attached(layer_cloud, start_environment, debugger)
    small = environment.invoke({"blob": "s" * 80_000})
    large = environment.invoke({"blob": "l" * 100_000})
    assert small.json() == {"echo": {"blob": "s" * 80_000}}
    assert large.json() == {"echo": {"blob": "l" * 100_000}}
    assert "event" in debugger.invokes[0]
    assert debugger.invokes[1]["eventChunks"] == 1
    assert all(protocol.message_size(m) <= protocol.INLINE_MESSAGE_LIMIT for m in debugger.invokes)


def test_fifty_concurrent_invocations_each_get_their_own_answer(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    """50 invocations in flight at once over 5 execution environments and one debugger connection."""

    def script(message: dict[str, Any], event: Any) -> Reply:
        return Reply(payload=json.dumps({"order": event["order"], "answeredFor": message["requestId"]}))

    debugger = connect_debugger(script=script)
    _, environments = start_attached(layer_cloud, start_environment, debugger, count=5)
    started = time.monotonic()
    submitted = [
        (environments[order % 5], environments[order % 5].submit({"order": order}), order)
        for order in range(50)
    ]
    results = [
        (environment.result(invocation, started), order) for environment, invocation, order in submitted
    ]
    for result, order in results:
        assert result.error_type is None
        assert result.json() == {"order": order, "answeredFor": result.request_id}
    assert len({result.request_id for result, _ in results}) == 50
    assert len(debugger.invokes) == 50
    assert time.monotonic() - started < 30


def test_the_invoke_message_carries_the_invocation_and_its_context(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    client_context = json.dumps({"custom": {"tenant": "acme"}, "client": {"app_title": "shop"}})
    debugger = connect_debugger()
    session_id, (environment,) = start_attached(layer_cloud, start_environment, debugger)
    before_ms = time.time() * 1000
    result = environment.invoke({"order": 1}, timeout_seconds=30, client_context=client_context)
    message = debugger.invokes[0]
    assert protocol.decode(protocol.encode(message), protocol.SERVER_MESSAGE_TYPES) == message
    context = message["context"]
    assert 30_000 - 1_000 <= context["deadlineMs"] - before_ms <= 30_000 + 1_000
    assert re.fullmatch(r"[0-9a-f]{32}", message["deliveryId"])
    assert {key: value for key, value in message.items() if key not in ("environment", "credentials")} == {
        "type": "invoke",
        "v": protocol.PROTOCOL_VERSION,
        "requestId": result.request_id,
        "deliveryId": message["deliveryId"],
        "sessionId": session_id,
        "handler": "app.echo",
        "event": '{"order": 1}',
        "context": {
            "functionName": FUNCTION_NAME,
            "functionVersion": "$LATEST",
            "invokedFunctionArn": FUNCTION_ARN,
            "memoryLimitInMB": "256",
            "logGroupName": f"/aws/lambda/{FUNCTION_NAME}",
            "logStreamName": "2025/01/01/[$LATEST]0123456789abcdef",
            "deadlineMs": context["deadlineMs"],
            "traceId": TRACE_ID,
            "clientContext": client_context,
            "cognitoIdentity": None,
            "tenantId": None,
        },
    }
    assert message["environment"]["_X_AMZN_TRACE_ID"] == TRACE_ID
