"""The layer end to end, as a developer meets it: an invocation in the cloud, answered on their machine.

Each test opens its own session with the scripted debugger, instruments the functions it needs with
the developer's credentials, and invokes them with boto3; the real layer, dispatcher and routes do the
rest on the local cloud.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import Any

import pytest

import plldb
from plldb import protocol
from plldb.bootstrap.cloudformation.layer.lambda_runtime import poll_delays
from tests.cloud_state import wait_for
from tests.layer.layer_harness import AttachFactory, Invoke, LayerBench, credentials_of, is_platform_line

TRACE = [
    "  File \"/home/dev/orders/app.py\", line 12, in handler\n    raise KeyError('sku')\n",
]


def test_an_invocation_is_answered_by_the_debugger_with_the_exact_bytes(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    payload = '{"b": [1, 2.50, "é\\u00e9", null], "a": {}}'
    replies: list[dict[str, Any]] = []
    debugger = attach("Echo", script=lambda invoke: replies.append(invoke.answer(payload)))
    function_name = layer_bench.app.functions["Echo"]

    result = layer_bench.invoke(function_name, {"order": 1})

    assert (result.status, result.function_error, result.payload) == (200, None, payload.encode("utf-8"))
    debugger.wait_scripts()
    (invoke,) = debugger.invokes
    assert invoke.request_id == result.request_id
    assert invoke.event_bytes() == b'{"order": 1}'
    assert replies == [
        protocol.sign(protocol.stored_message(invoke.caller, invoke.delivery_id), debugger.session_key)
    ]
    item = invoke.item()
    assert item is not None
    assert {
        name: item[name] for name in (protocol.A_RESPONSE_CODE, protocol.A_RESPONSE, protocol.A_SESSION_ID)
    } == {
        protocol.A_RESPONSE_CODE: {"N": "200"},
        protocol.A_RESPONSE: {"S": payload},
        protocol.A_SESSION_ID: {"S": debugger.session_id},
    }
    assert item[protocol.A_REQUEST_ID] == {"S": result.request_id}
    assert item[protocol.A_FUNCTION_NAME] == {"S": function_name}


def test_the_invoke_message_carries_the_invocation_its_function_and_its_context(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    debugger = attach("Echo")
    function_name = layer_bench.app.functions["Echo"]
    before_ms = int(time.time() * 1000)
    client_context = {"custom": {"tenant": "acme"}, "client": {"app_title": "shop"}, "env": {"locale": "fr"}}
    result = layer_bench.invoke(function_name, {"order": 2}, client_context=client_context)
    (invoke,) = debugger.invokes
    message = invoke.message

    assert result.json() == {"local": {"order": 2}}
    assert protocol.verify(message, debugger.session_key)
    assert protocol.decode(protocol.encode(message), protocol.SERVER_MESSAGE_TYPES) == message
    context = message["context"]
    assert before_ms + 59_000 <= context["deadlineMs"]  # the session's 60 s timeout, from the invocation
    assert re.fullmatch(r"[0-9a-f]{32}", message["deliveryId"])
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", context["logStreamName"])
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0", context["traceId"])
    assert {k: v for k, v in message.items() if k not in ("environment", "credentials", "mac")} == {
        "type": "invoke",
        "v": protocol.PROTOCOL_VERSION,
        "caller": layer_bench.caller_of(function_name),
        "deliveryId": message["deliveryId"],
        "requestId": result.request_id,
        "function": {"name": function_name, "version": "$LATEST", "logicalPath": "Echo"},
        "handler": "app.echo",
        "event": '{"order": 2}',
        "context": {
            "functionName": function_name,
            "functionVersion": "$LATEST",
            "invokedFunctionArn": f"arn:aws:lambda:{layer_bench.cloud.region}:123456789012:function:{function_name}",
            "memoryLimitInMB": "256",
            "logGroupName": f"/aws/lambda/{function_name}",
            "logStreamName": context["logStreamName"],
            "deadlineMs": context["deadlineMs"],
            "traceId": context["traceId"],
            "clientContext": context["clientContext"],
            "cognitoIdentity": None,
            "tenantId": None,
        },
    }
    assert json.loads(context["clientContext"]) == client_context
    assert message["environment"]["_X_AMZN_TRACE_ID"] == context["traceId"]
    assert sorted(message["credentials"]) == ["accessKeyId", "secretAccessKey", "sessionToken"]


def test_a_local_exception_is_the_functions_error(layer_bench: LayerBench, attach: AttachFactory) -> None:
    """The error reaches the invoker as awslambdaric reports one: its fields, their order, the log line."""

    def script(invoke: Invoke) -> None:
        invoke.fail({"errorMessage": "'sku'", "errorType": "KeyError", "stackTrace": TRACE})

    debugger = attach("Echo", script=script)
    function_name = layer_bench.app.functions["Echo"]
    result = layer_bench.invoke(function_name, {"order": 3})

    assert (result.status, result.function_error) == (200, "Unhandled")
    assert result.payload == json.dumps(
        {
            "errorMessage": "'sku'",
            "errorType": "KeyError",
            "requestId": result.request_id,
            "stackTrace": TRACE,
        }
    ).encode("utf-8")
    (invoke,) = debugger.invokes
    item = invoke.item()
    assert item is not None
    assert item[protocol.A_RESPONSE_CODE] == {"N": "500"}
    assert json.loads(item[protocol.A_ERROR]["S"]) == {
        "errorMessage": "'sku'",
        "errorType": "KeyError",
        "stackTrace": TRACE,
    }
    assert "[ERROR] KeyError: 'sku'\rTraceback (most recent call last):\r\u00a0\u00a0File" in result.log


def test_successive_invocations_each_get_their_own_delivery_and_item(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    debugger = attach("Echo")
    function_name = layer_bench.app.functions["Echo"]
    before = int(time.time())
    results = [layer_bench.invoke(function_name, {"order": n}) for n in range(3)]

    assert [r.json() for r in results] == [{"local": {"order": n}} for n in range(3)]
    assert [i.request_id for i in debugger.invokes] == [r.request_id for r in results]
    assert len({i.delivery_id for i in debugger.invokes}) == 3
    for invoke in debugger.invokes:
        item = invoke.item()
        assert item is not None
        assert before + protocol.INVOCATION_ITEM_TTL_SECONDS <= int(item[protocol.A_TTL]["N"])
        assert int(item[protocol.A_TTL]["N"]) <= int(time.time()) + protocol.INVOCATION_ITEM_TTL_SECONDS
    # One execution environment served them all: the layer started once.
    (stream,) = {invoke.message["context"]["logStreamName"] for invoke in debugger.invokes}
    assert layer_bench.environment_log(function_name, stream).count("plldb: debugger layer") == 1


def test_credentials_values_never_reach_a_table_item_or_a_payload_object(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    """Inline and object events, inline and object results: then every item and object is searched."""

    def script(invoke: Invoke) -> None:
        event = invoke.event()
        if event.get("large"):
            invoke.answer_by_upload(json.dumps({"blob": "y" * 200_000}).encode("utf-8"))
        else:
            invoke.answer(json.dumps({"local": event}))

    debugger = attach("Echo", script=script)
    function_name = layer_bench.app.functions["Echo"]
    small = layer_bench.invoke(function_name, {"order": 4})
    large = layer_bench.invoke(function_name, {"large": True, "blob": "x" * 200_000})

    assert small.json() == {"local": {"order": 4}}
    assert large.json() == {"blob": "y" * 200_000}
    assert "event" in debugger.invokes[0].message
    assert "eventUrl" in debugger.invokes[1].message
    secrets = set(credentials_of(debugger.invokes))
    assert len(secrets) == 3
    stored = [repr(item) for table in layer_bench.tables.values() for item in layer_bench.scan(table)]
    objects = layer_bench.payload_objects()
    assert any(key.startswith("events/") for key in objects)
    assert any(key.startswith("responses/") for key in objects)
    # The helper stack's functions handle them too (the dispatcher posts them): none writes one in its logs.
    helper_logs = "\n".join(
        layer_bench.environment_log(layer_bench.helper_functions[name])
        for name in ("DispatcherFunction", "RoutesFunction")
    )
    assert helper_logs.count("START RequestId:") >= 4  # two deliveries, two answers, at least
    for secret in secrets:
        assert not [text for text in stored if secret in text]
        assert not [key for key, body in objects.items() if secret.encode() in body]
        assert secret not in helper_logs


@pytest.mark.parametrize("logical_id", ["Echo", "EchoDebug"], ids=["text", "json-at-debug-level"])
def test_logs_are_in_lambdas_form_and_hold_no_credential_and_no_whole_session_id(
    layer_bench: LayerBench, attach: AttachFactory, logical_id: str
) -> None:
    """Only the layer's own lines, in the function's log format, whatever its log level: at DEBUG the AWS
    SDK the layer uses would otherwise log every request it makes, bodies included (the credentials)."""
    debugger = attach(logical_id)
    function_name = layer_bench.app.functions[logical_id]
    results = [layer_bench.invoke(function_name, {"order": n}) for n in range(2)]
    (stream,) = {invoke.message["context"]["logStreamName"] for invoke in debugger.invokes}

    def logged_both() -> str | None:
        """The log once both invocations' lines are in it (the layer writes its last line after it
        answered, and log delivery takes its time, as CloudWatch's does)."""
        text = layer_bench.environment_log(function_name, stream)
        layer_lines = [layer_record(line) for line in text.splitlines() if not is_platform_line(line)]
        lines_of = [sum(1 for record in layer_lines if record[3] == result.request_id) for result in results]
        return text if min(lines_of) >= 2 else None

    log = wait_for(logged_both, "both invocations' lines in the function's log")

    records = [layer_record(line) for line in log.splitlines() if not is_platform_line(line)]
    assert {(level, logger) for level, logger, _, _, _ in records} == {("INFO", "plldb.layer")}
    for result in results:
        assert [message for _, _, _, request_id, message in records if request_id == result.request_id] == [
            f"plldb: invocation sent to the local debugger (session {debugger.session_id[:8]}...)",
            AnyMatch(r"plldb: answered with 200 after \d+ ms \(\d+ reads\)"),
        ]
    for _, _, timestamp, _, _ in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", timestamp)  # JSON: to the second
    assert debugger.session_id not in log
    for secret in credentials_of(debugger.invokes):
        assert secret not in log
    # The layer as the helper stack packages it, unpacked where Lambda unpacks layers (/opt/plldb-debugger).
    started = re.search(
        r"plldb: debugger layer (\S+) \((.+)\) active for session (\S+) \(function (\S+)\)", log
    )
    assert started is not None
    assert started.group(1) == plldb.__version__
    assert started.group(2).endswith("/" + protocol.LAYER_DIRECTORY)
    assert started.groups()[2:] == (debugger.session_id[:8] + "...", function_name)


class AnyMatch(str):
    """Equal to any text the pattern matches in full."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(str(self), other) is not None

    __hash__ = str.__hash__


def layer_record(line: str) -> tuple[str, str, str, str, str]:
    """(level, logger, timestamp, request id, message) of a line the layer logged, in either format:
    Text ``[LEVEL]\tTIMESTAMP\tREQUEST-ID\tMESSAGE`` (the logger is named only in JSON)."""
    if line.startswith("{"):
        record = json.loads(line)
        return record["level"], record["logger"], record["timestamp"], record["requestId"], record["message"]
    match = re.fullmatch(r"\[(\w+)\]\t(\S+)\t(\S*)\t(plldb: .*)", line)
    assert match is not None, line
    level, timestamp, request_id, message = match.groups()
    return level, "plldb.layer", timestamp, request_id, message


def test_a_developer_at_a_breakpoint_costs_the_polling_schedule_and_no_more(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    """The layer polls its item on lambda_runtime.poll_delays(): the log's read count never exceeds what
    that schedule allows in the time it waited (at most two reads a second once settled)."""

    def script(invoke: Invoke) -> None:
        invoke.ack()
        time.sleep(1.5)  # the developer steps through the handler
        invoke.answer('{"paused": true}')

    attach("Echo", script=script)
    result = layer_bench.invoke(layer_bench.app.functions["Echo"], {"order": 5})

    assert result.payload == b'{"paused": true}'
    match = re.search(r"plldb: answered with 200 after (\d+) ms \((\d+) reads\)", result.log)
    assert match is not None
    waited, reads = int(match.group(1)) / 1000.0, int(match.group(2))
    allowed = 1 + sum(
        1 for total in itertools.accumulate(itertools.islice(poll_delays(), 10_000)) if total <= waited
    )
    assert waited >= 1.5
    assert reads <= allowed
    assert allowed <= 21 + 2 * int(waited)
