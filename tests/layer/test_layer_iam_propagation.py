"""Right after plldb attaches its policy to a function's role, IAM may still refuse the role for a while
("changes that you make are not always immediately visible", IAM user guide). The layer retries such
AccessDenied refusals for IAM_PROPAGATION_SECONDS, then gives up on that invocation.

The local cloud's IAM propagation hook refuses the next calls of the function's role to an action with
that service's own AccessDenied error, and records each refusal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from plldb import protocol
from tests.layer.layer_harness import AttachFactory, LayerBench


@pytest.fixture
def propagation(local_cloud: Any) -> Iterator[Any]:
    yield local_cloud.iam_propagation
    local_cloud.iam_propagation.clear()


def role_of(bench: LayerBench, function_name: str) -> str:
    return str(bench.client("lambda").get_function_configuration(FunctionName=function_name)["Role"])


def test_access_denied_right_after_the_policy_is_attached_is_retried(
    layer_bench: LayerBench, attach: AttachFactory, propagation: Any
) -> None:
    debugger = attach("Echo")
    function_name = layer_bench.app.functions["Echo"]
    role = role_of(layer_bench, function_name)
    denied_before = len(propagation.denials)
    propagation.deny_next(role, "dynamodb:PutItem", count=2)  # its invocation item
    propagation.deny_next(role, "lambda:InvokeFunction", count=1)  # the dispatcher
    propagation.deny_next(role, "dynamodb:GetItem", count=1)  # polling its item

    result = layer_bench.invoke(function_name, {"order": 1})

    assert (result.function_error, result.json()) == (None, {"local": {"order": 1}})
    assert propagation.pending() == 0
    denials = propagation.denials[denied_before:]
    assert sorted(d.action for d in denials) == [
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:PutItem",
        "lambda:InvokeFunction",
    ]
    role_name = role.rsplit("/", 1)[-1]
    assert {d.caller_arn for d in denials} == {
        f"arn:aws:sts::123456789012:assumed-role/{role_name}/{function_name}"
    }
    waits = re.findall(r"plldb: access denied, waiting for IAM to propagate plldb's policy", result.log)
    assert len(waits) == 4
    (invoke,) = debugger.invokes
    item = invoke.item()
    assert item is not None and item[protocol.A_RESPONSE_CODE] == {"N": "200"}


def test_access_denied_for_longer_than_iam_propagation_fails_only_that_invocation(
    layer_bench: LayerBench, attach: AttachFactory, propagation: Any
) -> None:
    """The layer stops retrying by itself (long before the function's minute is up), reports a layer
    error for that invocation, and the next one, once IAM has caught up, is answered."""
    debugger = attach("Echo", timeout=60)
    function_name = layer_bench.app.functions["Echo"]
    denied_before = len(propagation.denials)
    propagation.deny_next(role_of(layer_bench, function_name), "dynamodb:PutItem", count=100_000)

    failed = layer_bench.invoke(function_name, {"order": 2})
    refused = len(propagation.denials) - denied_before
    still_to_refuse = propagation.pending()
    propagation.clear()
    answered = layer_bench.invoke(function_name, {"order": 3})

    error = failed.json()
    assert error["errorType"] == "PlldbLayerError"
    assert error["errorMessage"].startswith(
        "plldb's debugger layer failed: ClientError: An error occurred (AccessDeniedException) when calling the "
        "PutItem operation: User: arn:aws:sts::123456789012:assumed-role/"
    )
    assert refused > 1 and still_to_refuse > 0  # it retried, and it stopped by itself
    assert answered.json() == {"local": {"order": 3}}
    assert [i.request_id for i in debugger.invokes] == [answered.request_id]
