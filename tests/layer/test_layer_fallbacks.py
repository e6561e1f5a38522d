"""When no debugger can answer: sessions that ended, callers that do not belong, silent, late, vanished
and reconnecting debuggers, and the function's own handler run in the cloud (fallback passthrough).

Nothing here is shown by waiting: an outcome names its cause (its error type and reason, the item's
Reason and marks, the dispatcher's calls recorded by the local cloud), and order comes from the
debugger's records.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import plldb
from plldb import protocol
from plldb.instrumentation.functions import FunctionRef
from tests.layer.layer_harness import (
    AttachFactory,
    Invoke,
    Invoked,
    LambdaCalls,
    LayerBench,
    ScriptedDebugger,
    acking_script,
    echo_script,
    holding_script,
    wait_until,
)

# The function timeout of the deadline tests: short enough to wait for, long enough that the dispatcher
# (and a session check, 2 s after the post) answer before the deadline on a machine loaded far beyond its
# cores. DEADLINE_MARGIN_MS is what is tested, not how quickly Lambda starts the dispatcher.
DEADLINE_TEST_TIMEOUT = 15

FIX_HINT = (
    "Run `plldb attach` in the stack's project to debug it, or `plldb detach --stack-name STACK` to remove "
    "plldb's instrumentation from the stack's functions."
)


def not_attached(result: Invoked, reason: str) -> dict[str, Any]:
    return {
        "errorMessage": f"plldb is not attached to this function's stack: {reason}. {FIX_HINT}",
        "errorType": "PlldbNotAttached",
        "requestId": result.request_id,
        "stackTrace": [],
    }


def only_item(bench: LayerBench, request_id: str) -> dict[str, Any]:
    (item,) = bench.items_of_request(request_id)
    return item


# --- Sessions that cannot answer -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("closed", "its debugging session has ended"),
        ("expired", "its debugging session has expired"),
        ("pending", "no debugger has opened its debugging session"),
        ("missing", "its debugging session no longer exists"),
    ],
)
def test_a_session_that_cannot_answer_is_plldb_not_attached_at_once(
    layer_bench: LayerBench,
    attach: AttachFactory,
    debugger_factory: Callable[..., ScriptedDebugger],
    state: str,
    reason: str,
) -> None:
    """Nothing is posted and nobody is waited for: the dispatcher says so, the item is closed with why."""
    if state in ("closed", "expired"):
        debugger = attach("Echo")
        if state == "closed":
            debugger.close_session()
        else:
            layer_bench.client("dynamodb").update_item(
                TableName=layer_bench.tables["PLLDBSessions"],
                Key={protocol.A_SESSION_ID: {"S": debugger.session_id}},
                UpdateExpression="SET #ttl = :past",
                ExpressionAttributeNames={"#ttl": protocol.A_TTL},
                ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
            )
    else:
        debugger = debugger_factory(connect=state == "pending")  # connected and never opened, or never there
        debugger.instrument([layer_bench.app.ref("Echo")])

    result = layer_bench.invoke(layer_bench.app.functions["Echo"], {"order": 1})

    assert (result.function_error, result.json()) == ("Unhandled", not_attached(result, reason))
    item = only_item(layer_bench, result.request_id)
    assert (item[protocol.A_RESPONSE_CODE], item[protocol.A_REASON]) == ({"N": "503"}, {"S": reason})
    assert protocol.A_POSTED_AT not in item
    assert "plldb: invocation sent" not in result.log
    assert debugger.invokes == []


def test_a_gone_connection_is_plldb_not_attached_and_passthrough_runs_the_handler(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    """The debugger's connection dropped ($disconnect ran): the post finds it gone (410)."""
    debugger = attach("Echo", "Fail", fallback=protocol.FALLBACK_ERROR)
    debugger.instrument([layer_bench.app.ref("Large")], fallback=protocol.FALLBACK_PASSTHROUGH)
    layer_bench.cloud.gateway.cut(debugger.connection_id())
    layer_bench.wait_for_session(debugger.session_id, lambda item: protocol.A_DISCONNECTED_AT in item)

    failed = layer_bench.invoke(layer_bench.app.functions["Echo"], {"order": 2})
    passed = layer_bench.invoke(layer_bench.app.functions["Large"], {"size": 3})

    reason = "the debugger's WebSocket connection is gone"
    assert failed.json() == not_attached(failed, reason)
    assert (passed.function_error, passed.json()) == (None, {"blob": "rrr"})
    for result in (failed, passed):
        item = only_item(layer_bench, result.request_id)
        assert (item[protocol.A_RESPONSE_CODE], item[protocol.A_REASON]) == ({"N": "503"}, {"S": reason})
        assert protocol.A_POSTED_AT in item
    assert (
        "plldb: no debugger (the debugger's WebSocket connection is gone); running the function's own handler"
        in (passed.log)
    )


# --- Callers that do not belong to the session -----------------------------------------------------------
def test_a_function_outside_the_sessions_stack_is_refused(
    layer_bench: LayerBench, attach: AttachFactory, scratch_function: Callable[..., str]
) -> None:
    debugger = attach("Echo")
    outsider = scratch_function("app.echo")
    debugger.instrument([FunctionRef(outsider, "Outsider")])

    refused = layer_bench.invoke(outsider, {"order": 3})
    answered = layer_bench.invoke(layer_bench.app.functions["Echo"], {"order": 4})

    assert refused.json() == {
        "errorMessage": "plldb's helper stack refused this invocation: function "
        f"{outsider} is not part of the session's stack. {FIX_HINT}",
        "errorType": "PlldbRefused",
        "requestId": refused.request_id,
        "stackTrace": [],
    }
    assert answered.json() == {"local": {"order": 4}}
    # Messages of one connection arrive in order: had the outsider's been posted, it would come first.
    assert [i.request_id for i in debugger.invokes] == [answered.request_id]
    item = only_item(layer_bench, refused.request_id)
    assert item[protocol.A_RESPONSE_CODE] == {"N": "503"}
    assert protocol.A_POSTED_AT not in item


def test_forged_items_are_refused_by_the_dispatcher_and_never_posted(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    """Someone able to invoke the dispatcher writes items for a live session: a caller that is not the
    function's role, and a payload that is not the one the item's digest binds."""
    debugger = attach("Echo")
    function_name = layer_bench.app.functions["Echo"]
    real_caller = layer_bench.caller_of(function_name)
    payload = {
        "requestId": "forged-request",
        "function": {"version": "$LATEST"},
        "handler": "app.echo",
        "context": {},
        "environment": {"LD_PRELOAD": "/tmp/evil.so"},
        "credentials": None,
        "event": "{}",
    }
    verdicts = []
    for caller, digest_of in (
        ("AROAFORGEDROLEID0000:" + function_name, payload),
        (real_caller, dict(payload, event='{"other": true}')),
    ):
        delivery_id = protocol.new_delivery_id()
        layer_bench.client("dynamodb").put_item(
            TableName=layer_bench.helper.invocations_table_name,
            Item={
                protocol.A_CALLER: {"S": caller},
                protocol.A_DELIVERY_ID: {"S": delivery_id},
                protocol.A_SESSION_ID: {"S": debugger.session_id},
                protocol.A_REQUEST_ID: {"S": "forged-request"},
                protocol.A_PAYLOAD_SHA256: {"S": protocol.payload_digest(digest_of)},
                protocol.A_TTL: {"N": str(int(time.time()) + 600)},
            },
        )
        dispatched = layer_bench.invoke(
            layer_bench.helper.dispatcher_function_arn,
            {"action": "deliver", "caller": caller, "deliveryId": delivery_id, "payload": payload},
        )
        verdicts.append(dispatched.json())
    answered = layer_bench.invoke(function_name, {"order": 5})

    assert verdicts == [
        {"status": "refused", "reason": f"the caller is not the execution role of function {function_name}"},
        {"status": "refused", "reason": "the payload does not match the invocation item"},
    ]
    assert [i.request_id for i in debugger.invokes] == [answered.request_id]


# --- Debuggers that do not answer in time ------------------------------------------------------------------
@pytest.mark.parametrize("fallback", [protocol.FALLBACK_ERROR, protocol.FALLBACK_PASSTHROUGH])
def test_no_ack_within_the_ack_timeout_is_the_fallback_and_the_late_answer_is_refused(
    layer_bench: LayerBench, attach: AttachFactory, fallback: str
) -> None:
    debugger = attach("Echo", script=holding_script, fallback=fallback)
    function_name = layer_bench.app.functions["Echo"]

    result = layer_bench.invoke(function_name, {"order": 6})
    (invoke,) = debugger.invokes
    refusal = invoke.answer('"too late"')

    reason = f"the debugger did not acknowledge the invocation within {protocol.ACK_TIMEOUT_SECONDS:g} s"
    if fallback == protocol.FALLBACK_ERROR:
        assert result.json() == not_attached(result, reason)
    else:
        assert result.function_error is None
        assert result.json() == {
            "event": {"order": 6},
            "calls": 1,
            "function": function_name,
            "requestId": result.request_id,
        }
    assert {k: v for k, v in refusal.items() if k != "mac"} == {
        "type": "error",
        "code": protocol.ERR_REQUEST_CLOSED,
        "message": f"the function stopped waiting: {reason}",
        **invoke.reference,
    }
    item = invoke.item()
    assert item is not None
    assert (item[protocol.A_RESPONSE_CODE], item[protocol.A_REASON]) == ({"N": "503"}, {"S": reason})
    assert protocol.A_RESPONSE not in item


def test_an_answer_after_the_deadline_margin_is_a_timeout_and_is_refused(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    """A short timeout: the layer stops DEADLINE_MARGIN_MS before its deadline, so Lambda never kills it."""
    debugger = attach("Sleep", timeout=DEADLINE_TEST_TIMEOUT)
    function_name = layer_bench.app.functions["Sleep"]
    layer_bench.invoke(function_name, {"seconds": 0})  # the environment and the dispatcher are up
    debugger.script = acking_script  # the developer sits at a breakpoint

    result = layer_bench.invoke(function_name, {"seconds": 60})
    late = debugger.wait_invoke(1)
    refusal = late.answer('{"slept": 60}')

    assert result.json() == {
        "errorMessage": (
            "The debugger did not answer in time: the function's timeout "
            f"(about {DEADLINE_TEST_TIMEOUT} s) was about to end, so "
            f"plldb stopped waiting {protocol.DEADLINE_MARGIN_MS} ms before it. To stay longer at a breakpoint, "
            "attach with a longer timeout: `plldb attach --function-timeout 900`."
        ),
        "errorType": "PlldbDebuggerTimeout",
        "requestId": result.request_id,
        "stackTrace": [],
    }
    assert "Task timed out" not in result.log
    assert (refusal["code"], refusal["message"]) == (
        protocol.ERR_REQUEST_CLOSED,
        "the function stopped waiting at its deadline; this answer came too late",
    )
    item = late.item()
    assert item is not None
    assert (item[protocol.A_RESPONSE_CODE], item[protocol.A_REASON]) == (
        {"N": "504"},
        {"S": "the function's deadline came"},
    )
    assert protocol.A_ACKED_AT in item
    assert protocol.A_RESPONSE not in item


def test_the_deadline_holds_while_a_session_check_is_stalled(
    layer_bench: LayerBench, attach: AttachFactory, lambda_calls: LambdaCalls
) -> None:
    """The dispatcher does not answer a session check before the function's deadline: the layer still
    answers PlldbDebuggerTimeout itself, before Lambda's timeout would end it."""
    debugger = attach("Sleep", timeout=DEADLINE_TEST_TIMEOUT)
    function_name = layer_bench.app.functions["Sleep"]
    layer_bench.invoke(function_name, {"seconds": 0})
    debugger.script = acking_script
    release = lambda_calls.stall(
        lambda name, request: isinstance(request, dict) and request.get("action") == "status"
    )

    result = layer_bench.invoke(function_name, {"seconds": 60})
    stalled = [request for _, _, request in lambda_calls.stalled]
    release.set()

    assert result.error_type == "PlldbDebuggerTimeout", result.log
    assert "Task timed out" not in result.log
    assert stalled and {r["deliveryId"] for r in stalled} == {debugger.wait_invoke(1).delivery_id}


# --- A debugger that vanishes, or comes back --------------------------------------------------------------
@pytest.mark.parametrize("fallback", [protocol.FALLBACK_ERROR, protocol.FALLBACK_PASSTHROUGH])
def test_an_acknowledged_invocation_ends_soon_after_its_session_closes(
    layer_bench: LayerBench, attach: AttachFactory, lambda_calls: LambdaCalls, fallback: str
) -> None:
    """Not at the deadline (a minute away): at the first session check after the close. Whatever the
    fallback, the answer is PlldbNotAttached: the handler already ran, in part, on the developer's machine."""
    debugger = attach("Echo", script=acking_script, fallback=fallback, timeout=60)
    function_name = layer_bench.app.functions["Echo"]
    with concurrent_invoke(layer_bench, function_name, {"order": 7}) as pending:
        invoke = debugger.wait_invoke()
        wait_for_acked(invoke)
        closed_at = lambda_calls.mark()
        debugger.close_session()
        result = pending.result()

    reason = "its debugging session has ended"
    assert result.json() == not_attached(result, reason)
    # What ended the wait: a session check that read the session after the close (before it, the session
    # was live, so an "absent" answer can only come from a read that followed the close).
    check = lambda_calls.wait_for(
        lambda call: is_status_call(call, invoke) and call.answer().get("status") != "live",
        "the session check that found the session closed",
    )
    assert check.answer() == {"status": "absent", "reason": reason}
    assert check.ended > closed_at
    assert f"plldb: the debugging session ended before the debugger answered ({reason})" in result.log
    assert "fallback passthrough" not in result.log
    refusal = invoke.answer('"after the close"')
    assert (refusal["code"], refusal["message"]) == (
        protocol.ERR_REQUEST_CLOSED,
        f"the function stopped waiting: {reason}",
    )
    item = invoke.item()
    assert item is not None
    assert (item[protocol.A_RESPONSE_CODE], item[protocol.A_REASON]) == ({"N": "503"}, {"S": reason})


def test_an_acknowledged_invocation_waits_for_a_debugger_that_reconnects(
    layer_bench: LayerBench, attach: AttachFactory, lambda_calls: LambdaCalls
) -> None:
    """The connection drops while the developer is at a breakpoint; the layer keeps waiting through a
    session check made while the debugger is away, and takes the answer sent over the new connection."""
    debugger = attach("Echo", script=acking_script, timeout=60)
    function_name = layer_bench.app.functions["Echo"]
    with concurrent_invoke(layer_bench, function_name, {"order": 8}) as pending:
        invoke = debugger.wait_invoke()
        wait_for_acked(invoke)
        first_connection = debugger.connection_id()
        layer_bench.cloud.gateway.cut(first_connection)
        layer_bench.wait_for_session(debugger.session_id, lambda item: protocol.A_DISCONNECTED_AT in item)
        away = lambda_calls.mark()
        check = lambda_calls.wait_for(
            lambda call: (
                (is_status_call(call, invoke) and call.started > away) or call.function_name == function_name
            ),
            "a session check while the debugger is away",
        )
        assert check.function_name != function_name, f"the invocation ended first: {check.result!r}"
        debugger.connect()  # the next token of the chain, signed by the same principal
        reply = invoke.answer('{"answered": "after reconnecting"}')
        result = pending.result()

    assert check.answer() == {"status": "live"}
    assert (result.function_error, result.json()) == (None, {"answered": "after reconnecting"})
    assert reply["type"] == protocol.MSG_STORED
    assert debugger.connection_id() != first_connection
    session = layer_bench.session_item(debugger.session_id)
    assert session is not None
    assert protocol.A_DISCONNECTED_AT not in session
    # The next invocation is posted to the new connection.
    debugger.script = echo_script
    assert layer_bench.invoke(function_name, {"order": 9}).json() == {"local": {"order": 9}}


# --- Fallback passthrough: the function's own handler, in the cloud ------------------------------------------
def passthrough(attach: AttachFactory, *logical_ids: str) -> ScriptedDebugger:
    """The functions instrumented with fallback passthrough for a session that has ended."""
    debugger = attach(*logical_ids, fallback=protocol.FALLBACK_PASSTHROUGH)
    debugger.close_session()
    return debugger


def test_passthrough_runs_the_real_handler_with_its_module_kept_warm(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    passthrough(attach, "Echo")
    function_name = layer_bench.app.functions["Echo"]
    first = layer_bench.invoke(function_name, {"order": 9})
    second = layer_bench.invoke(function_name, {"order": 10})

    assert first.json() == {
        "event": {"order": 9},
        "calls": 1,
        "function": function_name,
        "requestId": first.request_id,
    }
    assert second.json() == {
        "event": {"order": 10},
        "calls": 2,
        "function": function_name,
        "requestId": second.request_id,
    }
    assert (
        "plldb: no debugger (its debugging session has ended); running the function's own handler "
        "(fallback passthrough)" in second.log
    )


def test_passthrough_returns_a_result_of_lambdas_largest_size_intact(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    """6 MiB of JSON from the handler in the cloud, through the layer's own Runtime API client."""
    function_name = layer_bench.app.functions["Large"]
    size = protocol.MAX_PAYLOAD_BYTES - len('{"blob": ""}')
    expected = layer_bench.invoke(function_name, {"size": size})
    passthrough(attach, "Large")
    actual = layer_bench.invoke(function_name, {"size": size})

    assert len(expected.payload) == protocol.MAX_PAYLOAD_BYTES
    assert (actual.function_error, actual.payload) == (None, expected.payload)


@pytest.mark.parametrize("logical_id", ["Fail", "NotSerialisable"])
def test_passthrough_reports_errors_exactly_as_the_python_runtime(
    layer_bench: LayerBench, attach: AttachFactory, logical_id: str
) -> None:
    function_name = layer_bench.app.functions[logical_id]
    expected = layer_bench.invoke(function_name, {"id": "A-1"})
    passthrough(attach, logical_id)
    actual = layer_bench.invoke(function_name, {"id": "A-1"})

    assert expected.function_error == actual.function_error == "Unhandled"
    assert without_request_id(actual.payload) == without_request_id(expected.payload)
    assert actual.json()["requestId"] == actual.request_id
    assert error_line(actual.log) == error_line(expected.log)
    assert actual.error_type == {"Fail": "ValueError", "NotSerialisable": "Runtime.MarshalError"}[logical_id]


@pytest.mark.parametrize("logical_id", ["Chatty", "ChattyJson"], ids=["text", "json"])
def test_passthrough_logs_exactly_as_the_python_runtime(
    layer_bench: LayerBench, attach: AttachFactory, logical_id: str
) -> None:
    """print, a module's logger and the root logger, in the text and the JSON log formats."""
    function_name = layer_bench.app.functions[logical_id]
    expected = layer_bench.invoke(function_name, {"order": 12})
    passthrough(attach, logical_id)
    actual = layer_bench.invoke(function_name, {"order": 12})

    assert actual.json() == expected.json() == {"ok": True}
    handler_lines = handler_log(expected)
    assert len(handler_lines) == 3
    assert handler_log(actual) == handler_lines
    if logical_id == "ChattyJson":  # the layer's own lines are in the function's log format too
        layer_lines = [json.loads(line) for line in actual.lines() if "plldb: " in line]
        assert {(line["level"], line["logger"]) for line in layer_lines} == {("INFO", "plldb.layer")}
        assert [line["message"].split(" (")[0] for line in layer_lines] == [
            "plldb: debugger layer " + plldb.__version__,
            "plldb: no debugger",
        ]


@pytest.mark.parametrize("handler", ["no_such_module.handler", "app.no_such_function"])
def test_passthrough_reports_a_handler_that_cannot_load_as_the_python_runtime(
    layer_bench: LayerBench,
    debugger_factory: Callable[..., ScriptedDebugger],
    scratch_function: Callable[..., str],
    handler: str,
) -> None:
    """The Python runtime fails such a function's init; the layer fails the invocation with the same error."""
    function_name = scratch_function(handler)
    expected = layer_bench.invoke(function_name, {})
    debugger = debugger_factory()
    assert debugger.open(layer_bench.app.stack_name)["type"] == protocol.MSG_OPENED
    debugger.instrument([FunctionRef(function_name, "Scratch")], fallback=protocol.FALLBACK_PASSTHROUGH)
    debugger.close_session()
    actual = layer_bench.invoke(function_name, {})

    assert expected.function_error == actual.function_error == "Unhandled"
    assert without_request_id(actual.payload) == without_request_id(expected.payload)
    assert (
        actual.json()["errorType"]
        == {
            "no_such_module.handler": "Runtime.ImportModuleError",
            "app.no_such_function": "Runtime.HandlerNotFound",
        }[handler]
    )


def test_passthrough_imports_the_functions_own_plldb_module(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    """plldb's own package is off the import path before the handler is imported."""
    function_name = layer_bench.app.functions["OwnPlldb"]
    expected = layer_bench.invoke(function_name, {})
    passthrough(attach, "OwnPlldb")
    actual = layer_bench.invoke(function_name, {})

    assert expected.json()["value"] == "the function's own plldb"
    assert actual.json() == expected.json()


def test_passthrough_imports_from_the_functions_own_layer(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    """/opt/python and /opt/python/lib/pythonX.Y/site-packages, and the folders the .pth files of the
    function's code name: Lambda does not set PYTHONPATH, its runtime builds the path itself (and
    processes those .pth files), and so must the layer."""
    function_name = layer_bench.app.functions["OwnLayerUser"]
    expected = layer_bench.invoke(function_name, {"order": 11})
    passthrough(attach, "OwnLayerUser")
    actual = layer_bench.invoke(function_name, {"order": 11})

    assert expected.json() == {
        "ownlib": "from the function's own layer (/opt/python)",
        "sitelib": "from the function's own layer (/opt/python/lib/pythonX.Y/site-packages)",
        "vendlib": "from a folder named by a .pth file of the function's code",
        "event": {"order": 11},
    }
    assert (actual.function_error, actual.json()) == (None, expected.json())


def test_passthrough_runs_under_the_functions_own_exec_wrapper(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    function_name = layer_bench.app.functions["OwnWrapper"]
    expected = layer_bench.invoke(function_name, {})
    passthrough(attach, "OwnWrapper")
    actual = layer_bench.invoke(function_name, {})

    own = expected.json()["environ"]
    seen = actual.json()["environ"]
    assert own["OWN_WRAPPER_RAN"] == "yes, with 2 arguments"  # the runtime's command line
    assert (
        seen["OWN_WRAPPER_RAN"] == "yes, with 6 arguments"
    )  # around plldb's runtime: python -c LOADER ROOT ...
    assert (
        seen[protocol.ENV_EXEC_WRAPPER] == own[protocol.ENV_EXEC_WRAPPER] == str(layer_bench.app.own_wrapper)
    )
    assert not {name for name in seen if name.startswith(("PLLDB_", "DEBUGGER_"))} - {
        "PLLDB_EXECUTE_API_ENDPOINT"
    }


# --- Helpers -----------------------------------------------------------------------------------------------------
class concurrent_invoke:
    """An invocation running on its own thread while the test plays the debugger."""

    def __init__(self, bench: LayerBench, function_name: str, event: Any) -> None:
        self._pool = ThreadPoolExecutor(1)
        self._future = self._pool.submit(bench.invoke, function_name, event)

    def __enter__(self) -> concurrent_invoke:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)

    def result(self) -> Invoked:
        return self._future.result()


def wait_for_acked(invoke: Invoke) -> None:
    """The acking script has sent its ack and the helper stack recorded it."""
    wait_until(lambda: protocol.A_ACKED_AT in (invoke.item() or {}), f"the ack of {invoke.request_id}")


def is_status_call(call: Any, invoke: Invoke) -> bool:
    request = call.request()
    return (
        isinstance(request, dict)
        and request.get("action") == "status"
        and request.get("deliveryId") == invoke.delivery_id
    )


def handler_log(result: Invoked) -> list[str]:
    """What the handler wrote, with this invocation's request id and timestamps named generically."""
    return [
        re.sub(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z",
            "TIMESTAMP",
            line.replace(result.request_id, "REQUEST-ID"),
        )
        for line in result.lines()
        if "plldb: " not in line
    ]


def without_request_id(payload: bytes) -> dict[str, Any]:
    document = json.loads(payload)
    document.pop("requestId")
    return document


def error_line(log: str) -> str:
    (line,) = [line for line in log.splitlines() if line.startswith("[ERROR]")]
    return line
