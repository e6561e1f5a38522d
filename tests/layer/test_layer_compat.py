"""The layer reproduces what awslambdaric does around a handler; each test runs both on the same input."""

from __future__ import annotations

import collections
import decimal
import enum
import importlib
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from awslambdaric import bootstrap as ric_bootstrap
from awslambdaric.lambda_context import LambdaContext as RicLambdaContext
from awslambdaric.lambda_runtime_exception import FaultException as RicFaultException
from awslambdaric.lambda_runtime_log_utils import JsonFormatter as RicJsonFormatter
from awslambdaric.lambda_runtime_marshaller import LambdaMarshaller
from awslambdaric.lambda_runtime_marshaller import to_json as ric_to_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plldb import lambda_python
from plldb.bootstrap.cloudformation.layer.passthrough import CloudHandler
from plldb.bootstrap.cloudformation.layer.runtime_client import Invocation

Point = collections.namedtuple("Point", "x y")


class Colour(enum.IntEnum):
    RED = 3


class Shouting(str):
    pass


class Ratio(float):
    pass


class HasAsDict:
    def _asdict(self) -> dict[str, int]:
        return {"converted": 1}


class BadAsDict:
    def _asdict(self) -> list[int]:
        return [1]


def _outcome(function: Any, value: Any) -> Any:
    try:
        return function(value)
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(max_size=8),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [Colour.RED, Shouting("loud"), Ratio(2.5), HasAsDict(), BadAsDict(), object(), {1, 2}, frozenset()]
    ),
)
keys = st.one_of(
    st.text(max_size=5),
    st.integers(min_value=-1000, max_value=1000),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.binary(max_size=4),
    st.just(decimal.Decimal("1.5")),
    st.just((1, 2)),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=4),
        st.builds(Point, children, children),
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("execution_env", ["AWS_Lambda_python3.11", "AWS_Lambda_python3.12"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=documents)
def test_results_serialise_to_the_same_json_text_as_awslambdaric(execution_env: str, value: Any) -> None:
    with mock.patch.dict(os.environ, {"AWS_EXECUTION_ENV": execution_env}):
        assert _outcome(lambda_python.to_json, value) == _outcome(ric_to_json, value)


@pytest.mark.parametrize(
    "value",
    [
        decimal.Decimal("1.10"),
        decimal.Decimal("-Infinity"),
        decimal.Decimal("NaN"),
        Point(1, [Point(2, 3)]),
        {"é": "ü\u2028\x7f\x00"},
        b"bytes",
        {b"key": b"value"},
        [b"\xff"],
        {(1, 2): 3},
        {"nested": {"set": {1}}},
        math.nan,
        "\ud800",
    ],
    ids=repr,
)
def test_awkward_results_serialise_as_awslambdaric_does(value: Any) -> None:
    assert _outcome(lambda_python.to_json, value) == _outcome(ric_to_json, value)


def test_circular_results_fail_as_in_awslambdaric() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert _outcome(lambda_python.to_json, loop) == ("raised", "ValueError", "Circular reference detected")
    assert _outcome(ric_to_json, loop) == ("raised", "ValueError", "Circular reference detected")


@pytest.mark.parametrize(
    "response", [None, {"ok": True}, b"\x00raw", "text", {"when": {1}}, [decimal.Decimal(3)]]
)
def test_marshal_response_matches_awslambdaric(response: Any) -> None:
    def ours(value: Any) -> Any:
        body, content_type = lambda_python.marshal_response(value)
        return body.decode("utf-8", "replace"), content_type

    def theirs(value: Any) -> Any:
        body, content_type = LambdaMarshaller().marshal_response(value)
        return (body if isinstance(body, str) else body.decode("utf-8", "replace")), content_type

    assert _fault(ours, response) == _fault(theirs, response)


def _fault(function: Any, value: Any) -> Any:
    try:
        return function(value)
    except (lambda_python.FaultException, RicFaultException) as exc:
        return ("fault", exc.exception_type, exc.msg, exc.trace)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"a": [1, 2.5]}', "application/json"),
        (b"not json", "application/json"),
        (b"\x01\x02", "text/plain"),
    ],
)
def test_events_unmarshal_as_in_awslambdaric(body: bytes, content_type: str) -> None:
    ours = _fault(lambda b: lambda_python.unmarshal_event(b, content_type), body)
    theirs = _fault(lambda b: LambdaMarshaller().unmarshal_request(b, content_type), body)
    if isinstance(theirs, tuple) and theirs[0] == "fault":
        # simplejson and json word the parse error differently; the error type and prefix agree.
        assert ours[:2] == theirs[:2] == ("fault", "Runtime.UnmarshalError")
        assert ours[2].startswith("Unable to unmarshal input: Expecting value")
    else:
        assert ours == theirs


# --- Handler errors -----------------------------------------------------------------------------------------
class OrderRejected(Exception):
    pass


def _validate(order: dict[str, Any]) -> None:
    raise OrderRejected(f"commande refusée: {order['id']}")


def handler_raising_nested(event: Any, context: Any) -> Any:
    _validate(event)


def handler_raising_key_error(event: Any, context: Any) -> Any:
    return event["missing"]


def handler_returning_a_set(event: Any, context: Any) -> Any:
    return {"tags": {"a"}}


def handler_using_the_context(event: Any, context: Any) -> Any:
    return {
        "requestId": context.aws_request_id,
        "function": context.function_name,
        "client": context.client_context.client.app_title,
        "custom": context.client_context.custom,
        "identity": context.identity.cognito_identity_id,
        "w3c": context.w3c(),
        "arn": context.invoked_function_arn,
    }


class _CapturingRuntimeClient:
    marshaller = LambdaMarshaller()

    def __init__(self) -> None:
        self.result: Any = None
        self.error: Any = None

    def post_invocation_result(
        self, invoke_id: str, result: Any, content_type: str, invocation_id: Any
    ) -> None:
        self.result = (result if isinstance(result, bytes) else result.encode("utf-8"), content_type)

    def post_invocation_error(self, invoke_id: str, error_json: str, xray: str, invocation_id: Any) -> None:
        self.error = json.loads(error_json)


CLIENT_CONTEXT = json.dumps(
    {
        "client": {"app_title": "orders-app", "installation_id": "i-1"},
        "custom": {"tenant": "acme"},
        "env": {"locale": "fr"},
        "w3c": {"traceparent": "00-abc-def-01", "ignored": "x"},
    }
)
COGNITO = json.dumps({"cognitoIdentityId": "us-east-1:abc", "cognitoIdentityPoolId": "us-east-1:pool"})


def _run_both(
    handler: Any, body: bytes, client_context: str | None = CLIENT_CONTEXT, capsys: Any = None
) -> tuple[Any, Any]:
    headers = {
        "Lambda-Runtime-Aws-Request-Id": "req-1",
        "Lambda-Runtime-Deadline-Ms": "9999999999999",
        "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:orders",
        "Lambda-Runtime-Client-Context": client_context,
        "Lambda-Runtime-Cognito-Identity": COGNITO,
        "Content-Type": "application/json",
    }
    runner = CloudHandler("unused.handler")
    runner._handler = handler
    answer = runner.run(Invocation(body, {k: v for k, v in headers.items() if v is not None}))
    ours = answer.error if answer.error is not None else (answer.body, answer.content_type)

    client = _CapturingRuntimeClient()
    ric_bootstrap.handle_event_request(
        client,
        handler,
        "req-1",
        body,
        "application/json",
        client_context,
        COGNITO,
        headers["Lambda-Runtime-Invoked-Function-Arn"],
        9999999999999,
        None,
        ric_bootstrap.StandardLogSink(),
    )
    theirs = client.error if client.error is not None else client.result
    return ours, theirs


@pytest.mark.parametrize(
    "handler",
    [handler_raising_nested, handler_raising_key_error, handler_returning_a_set, handler_using_the_context],
    ids=lambda h: h.__name__,
)
def test_handler_outcomes_match_awslambdaric(handler: Any) -> None:
    ours, theirs = _run_both(handler, b'{"id": "A-17"}')
    assert ours == theirs


def test_the_user_frames_start_the_stack_trace_as_in_awslambdaric() -> None:
    ours, _ = _run_both(handler_raising_nested, b'{"id": "A-17"}')
    assert ours["errorType"] == "OrderRejected"
    assert ours["errorMessage"] == "commande refusée: A-17"
    assert ours["requestId"] == "req-1"
    assert [line.split(", in ")[1].split("\n")[0] for line in ours["stackTrace"]] == [
        "handler_raising_nested",
        "_validate",
    ]


def test_an_invalid_client_context_fails_as_in_awslambdaric() -> None:
    ours, theirs = _run_both(handler_using_the_context, b"{}", client_context="{not json")
    assert ours == theirs
    assert ours["errorType"] == "Runtime.LambdaContextUnmarshalError"


def test_the_context_object_matches_awslambdaric(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    monkeypatch.setenv("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/orders")
    monkeypatch.setenv("AWS_LAMBDA_LOG_STREAM_NAME", "stream")
    ours = lambda_python.create_lambda_context(
        "req-9", CLIENT_CONTEXT, COGNITO, 4102444800000, "arn:fn", "tenant-1"
    )
    theirs = ric_bootstrap.create_lambda_context(
        CLIENT_CONTEXT, COGNITO, 4102444800000, "req-9", "arn:fn", "tenant-1"
    )
    assert repr(ours).replace("LambdaContext", "X") == repr(theirs).replace("LambdaContext", "X")
    assert ours.w3c() == theirs.w3c() == {"traceparent": "00-abc-def-01"}
    assert ours.client_context.env == theirs.client_context.env == {"locale": "fr"}
    assert ours.memory_limit_in_mb == theirs.memory_limit_in_mb == "256"
    assert abs(ours.get_remaining_time_in_millis() - theirs.get_remaining_time_in_millis()) < 50
    assert isinstance(theirs, RicLambdaContext)


# --- Handler loading --------------------------------------------------------------------------------------------
@pytest.fixture
def handler_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "layer_compat_good.py").write_text("def handler(event, context):\n    return 1\n")
    (tmp_path / "layer_compat_broken.py").write_text("def handler(event, context)\n    return 1\n")
    (tmp_path / "layer_compat_failing.py").write_text("raise RuntimeError('no database configured')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    "handler",
    [
        "nodot",
        "layer_compat_missing_module.handler",
        "sys.handler",
        "layer_compat_good.absent",
        "layer_compat_broken.handler",
    ],
)
def test_handler_loading_errors_match_awslambdaric(handler: str, handler_modules: Path) -> None:
    def load(loader: Any) -> Any:
        try:
            loader(handler)
        except (lambda_python.FaultException, RicFaultException) as exc:
            return exc.exception_type, exc.msg, exc.trace
        raise AssertionError("no fault")

    for name in ("layer_compat_good", "layer_compat_broken"):
        sys.modules.pop(name, None)
    assert load(lambda_python.load_handler) == load(ric_bootstrap._get_handler)


def test_an_exception_while_importing_the_handler_is_reported_as_awslambdaric_reports_it(
    handler_modules: Path,
) -> None:
    sys.modules.pop("layer_compat_failing", None)
    answer = CloudHandler("layer_compat_failing.handler").run(
        Invocation(b"{}", {"Lambda-Runtime-Aws-Request-Id": "req-2", "Lambda-Runtime-Deadline-Ms": "1"})
    )
    try:
        ric_bootstrap._get_handler("layer_compat_failing.handler")
    except RuntimeError:
        theirs = ric_bootstrap.build_fault_result(sys.exc_info(), None)
    # Called from awslambdaric's own run() (bootstrap.py), its trace starts after _get_handler; here
    # the caller is this test, so its first two frames (this test, _get_handler) are not user frames.
    assert theirs["stackTrace"][0].startswith(f'  File "{__file__}"')
    assert theirs["stackTrace"][1].startswith(f'  File "{ric_bootstrap.__file__}"')
    assert answer.error == dict(theirs, stackTrace=theirs["stackTrace"][2:])
    assert answer.error["stackTrace"][0].startswith('  File "' + importlib.__file__)
    assert answer.error["errorType"] == "RuntimeError"
    assert answer.error["requestId"] == ""


# --- Logs ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "error",
    [
        {
            "errorMessage": "boom",
            "errorType": "ValueError",
            "requestId": "r",
            "stackTrace": ['  File "a.py", line 1\n'],
        },
        {"errorMessage": "", "errorType": "Runtime.MarshalError", "requestId": "r", "stackTrace": []},
        {
            "errorMessage": "only message",
            "errorType": "",
            "requestId": "",
            "stackTrace": ["", "  x\n    y\n"],
        },
    ],
)
def test_error_logs_look_like_awslambdaric_error_logs(
    error: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    lambda_python.log_error(error)
    ours = capsys.readouterr().out
    ric_bootstrap.log_error(error, ric_bootstrap.StandardLogSink())
    theirs = capsys.readouterr().out
    assert ours == theirs


# --- JSON log lines (AWS_LAMBDA_LOG_FORMAT=JSON) -------------------------------------------------------------
def _log_record(extra: dict[str, Any] | None, exc_info: Any = None, msg: Any = "order %s stored") -> Any:
    """One record as a handler's logging call makes it, with the request the runtime is serving."""
    record = logging.getLogger("orders").makeRecord(
        "orders",
        logging.INFO,
        "/var/task/app.py",
        12,
        msg,
        ("o-1",) if isinstance(msg, str) else (),
        exc_info,
        func="handler",
        extra=extra,
    )
    record.aws_request_id = "8f5c5b3e-6a4b-4d0e-9f51-3c3c8f0d7a11"
    record.tenant_id = None
    return record


def _both_json_lines(extra: dict[str, Any] | None, **kwargs: Any) -> tuple[str, str]:
    ours = lambda_python.logs._JsonFormatter().format(_log_record(extra, **kwargs))
    theirs = RicJsonFormatter().format(_log_record(extra, **kwargs))
    return ours, theirs


def test_json_log_lines_carry_extra_fields_as_awslambdaric_does() -> None:
    ours, theirs = _both_json_lines({"orderId": 7})
    assert ours == theirs
    line = json.loads(ours)
    assert (line["orderId"], line["message"], line["requestId"]) == (
        7,
        "order o-1 stored",
        "8f5c5b3e-6a4b-4d0e-9f51-3c3c8f0d7a11",
    )


@pytest.mark.parametrize(
    "extra",
    [
        {"level": "custom", "requestId": "not-this-one", "logger": "other"},  # the standard fields win
        {"items": {1, 2}, "amount": decimal.Decimal("1.5")},  # not JSON: written as text
        {"skipped": None, "kept": [1, None, {"a": "é"}]},
        {"_private": True, "threadLabel": "worker"},
    ],
)
def test_json_log_extra_fields_match_awslambdaric(extra: dict[str, Any]) -> None:
    ours, theirs = _both_json_lines(extra)
    assert ours == theirs


def test_json_log_lines_of_exceptions_with_extra_fields_match_awslambdaric() -> None:
    try:
        raise KeyError("sku")
    except KeyError:
        exc_info = sys.exc_info()
    ours, theirs = _both_json_lines({"orderId": 7}, exc_info=exc_info, msg={"event": "failed"})
    assert ours == theirs
    assert json.loads(ours)["message"] == {"event": "failed"}


_RECORD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12).filter(lambda key: key not in _RECORD_ATTRIBUTES),
        _JSON_VALUES,
        max_size=4,
    )
)
def test_json_log_lines_match_awslambdaric_for_any_extra(extra: dict[str, Any]) -> None:
    ours, theirs = _both_json_lines(extra)
    assert ours == theirs
