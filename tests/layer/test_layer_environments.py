"""What the function and the debugger see of the environment, and set-ups the layer must survive.

A function that carries the layer without a session runs exactly as without it; the debugger is shown
the function's own environment and nothing of plldb's or of its credentials; broken instrumentation is
an init error naming each problem; one invocation failing inside the layer does not stop the next.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from plldb import protocol
from tests.layer.layer_harness import AttachFactory, Invoke, LayerBench, wait_until

FIX_HINT = (
    "Run `plldb attach` in the stack's project to debug it, or `plldb detach --stack-name STACK` to remove "
    "plldb's instrumentation from the stack's functions."
)


def reconfigure(bench: LayerBench, function_name: str, variables: dict[str, str], layers: list[str]) -> None:
    """A configuration change, applied before the next invocation (a new execution environment)."""
    client = bench.client("lambda")
    client.update_function_configuration(
        FunctionName=function_name, Environment={"Variables": variables}, Layers=layers
    )
    wait_until(
        lambda: (
            client.get_function_configuration(FunctionName=function_name).get("LastUpdateStatus")
            in (None, "Successful")
        ),
        f"the update of {function_name}",
    )


def seen_by_the_handler(bench: LayerBench, function_name: str) -> dict[str, Any]:
    """The handler's environment and import path, as Lambda's fixed paths name them."""
    result = bench.invoke(function_name, {})
    assert result.function_error is None, result.payload
    document = result.json()
    return {
        "environ": bench.normalized_environment(document["environ"]),
        "path": [bench.normalized_environment({"p": entry})["p"] for entry in document["path"]],
        "log": result.log,
    }


@pytest.mark.parametrize("own_wrapper", [False, True], ids=["alone", "with-its-own-wrapper"])
def test_with_the_layer_but_no_session_a_function_runs_exactly_as_without_it(
    layer_bench: LayerBench, scratch_function: Callable[..., str], own_wrapper: bool
) -> None:
    """Same environment, same import path; the function's own wrapper, chained by plldb, takes over."""
    helper = layer_bench.helper
    own = {protocol.ENV_EXEC_WRAPPER: str(layer_bench.app.own_wrapper)} if own_wrapper else {}
    function_name = scratch_function("app.environment", variables=own)
    without = seen_by_the_handler(layer_bench, function_name)

    leftovers = {  # what a half-finished restore could leave: everything but the session
        "ORDERS_TABLE": "orders",
        protocol.ENV_EXEC_WRAPPER: protocol.LAYER_WRAPPER_PATH,
        protocol.ENV_DISPATCHER: helper.dispatcher_function_arn,
        protocol.ENV_INVOCATIONS_TABLE: helper.invocations_table_name,
        protocol.ENV_PAYLOAD_BUCKET: helper.payload_bucket_name,
        protocol.ENV_FALLBACK: protocol.FALLBACK_PASSTHROUGH,
        protocol.ENV_ORIGINAL_TIMEOUT: "30",
    }
    if own_wrapper:
        leftovers[protocol.ENV_ORIGINAL_EXEC_WRAPPER] = str(layer_bench.app.own_wrapper)
    reconfigure(layer_bench, function_name, leftovers, [helper.layer_version_arn])
    layered = seen_by_the_handler(layer_bench, function_name)

    assert layered["environ"] == without["environ"]
    assert layered["path"] == without["path"]
    assert "plldb" not in layered["log"]
    if own_wrapper:
        assert layered["environ"]["OWN_WRAPPER_RAN"] == "yes, with 2 arguments"
        assert layered["environ"][protocol.ENV_EXEC_WRAPPER] == str(layer_bench.app.own_wrapper)
    else:
        assert protocol.ENV_EXEC_WRAPPER not in layered["environ"]


@pytest.mark.parametrize("logical_id", ["Environment", "OwnWrapper"])
def test_the_debugger_sees_the_functions_own_environment(
    layer_bench: LayerBench, attach: AttachFactory, logical_id: str
) -> None:
    """No variable of plldb's, no credential variable of any kind, no Runtime API address: the function's
    variables and Lambda's, as its handler sees them without plldb (its own wrapper's included)."""
    function_name = layer_bench.app.functions[logical_id]
    own = seen_by_the_handler(layer_bench, function_name)["environ"]
    debugger = attach(logical_id)
    layer_bench.invoke(function_name, {})
    (invoke,) = debugger.invokes
    seen = invoke.message["environment"]

    assert not set(seen) & set(protocol.CREDENTIAL_VARIABLES)
    assert not set(seen) & set(protocol.ENVIRONMENT_INTERNAL_VARIABLES)
    plldb_variables = set(protocol.INSTRUMENTATION_VARIABLES) - {protocol.ENV_EXEC_WRAPPER}
    assert not set(seen) & plldb_variables
    assert seen.get(protocol.ENV_EXEC_WRAPPER) == own.get(protocol.ENV_EXEC_WRAPPER)
    # Python's bootstrap sets PYTHONPATH for the handler's subprocesses inside the process: not configuration.
    # The function's own wrapper ran around plldb's runtime (whose command line it was given) as it runs
    # around Lambda's: it marked the environment, with the number of arguments it got.
    expected = {k: v for k, v in own.items() if k != "PYTHONPATH"}
    if "OWN_WRAPPER_RAN" in expected:
        assert expected["OWN_WRAPPER_RAN"] == "yes, with 2 arguments"
        assert seen["OWN_WRAPPER_RAN"] == "yes, with 6 arguments"  # python -c LOADER ROOT python bootstrap.py
        expected["OWN_WRAPPER_RAN"] = seen["OWN_WRAPPER_RAN"]
    assert layer_bench.normalized_environment(seen) == expected
    assert seen["ORDERS_TABLE"] == "orders"


def test_invalid_instrumentation_variables_are_an_init_error_naming_them(
    layer_bench: LayerBench, scratch_function: Callable[..., str]
) -> None:
    function_name = scratch_function(
        "app.echo",
        variables={
            protocol.ENV_EXEC_WRAPPER: protocol.LAYER_WRAPPER_PATH,
            protocol.ENV_SESSION_ID: "not-a-session",
            protocol.ENV_DISPATCHER: "PLLDBDispatcher",
            protocol.ENV_PAYLOAD_BUCKET: "a bucket!",
        },
        layers=[layer_bench.helper.layer_version_arn],
    )
    result = layer_bench.invoke(function_name, {"order": 1})

    message = (
        "plldb's debugger layer cannot start: PLLDB_INVOCATIONS_TABLE not set; DEBUGGER_SESSION_ID is not a "
        "session id; PLLDB_DISPATCHER_FUNCTION is not a Lambda function ARN; PLLDB_PAYLOAD_BUCKET is not a "
        f"table or bucket name. {FIX_HINT}"
    )
    assert result.function_error == "Unhandled"
    assert result.json() == {
        "errorMessage": message,
        "errorType": "PlldbInvalidConfiguration",
        "requestId": "",
        "stackTrace": [],
    }
    assert f"[ERROR] PlldbInvalidConfiguration: {message}" in result.log


def test_invocations_keep_flowing_after_one_fails_inside_the_layer(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    """A result object that does not match the digest its response announced: PlldbCorruptResponse, the
    object never becomes the function's result, and the next invocation is answered as usual."""
    replies: list[dict[str, Any]] = []

    def script(invoke: Invoke) -> None:
        event = invoke.event()
        if event["corrupt"]:
            announced = hashlib.sha256(b'{"n": "what the developer meant"}').hexdigest()
            replies.append(invoke.answer_by_upload(b'{"n": "what someone else put"}', announced))
        else:
            replies.append(invoke.answer(json.dumps({"n": event["n"]})))

    debugger = attach("Echo", script=script)
    function_name = layer_bench.app.functions["Echo"]
    corrupt = layer_bench.invoke(function_name, {"corrupt": True, "n": 1})
    healthy = layer_bench.invoke(function_name, {"corrupt": False, "n": 2})

    assert corrupt.json() == {
        "errorMessage": "The debugger's response does not match its SHA-256 digest.",
        "errorType": "PlldbCorruptResponse",
        "requestId": corrupt.request_id,
        "stackTrace": [],
    }
    assert (healthy.function_error, healthy.payload) == (None, b'{"n": 2}')
    debugger.wait_scripts()
    assert [reply["type"] for reply in replies] == [protocol.MSG_STORED, protocol.MSG_STORED]
    streams = {invoke.message["context"]["logStreamName"] for invoke in debugger.invokes}
    assert len(streams) == 1  # the same execution environment served both
