"""The layer's parts on their own: polling schedule, configuration checks, session states, message building,
and the Runtime API client's connection handling (against a real socket)."""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plldb import protocol
from plldb.bootstrap.cloudformation.layer import lambda_runtime
from plldb.bootstrap.cloudformation.layer.lambda_runtime import (
    DebuggerBridge,
    DebuggerRole,
    SessionView,
    Settings,
    max_reads,
    poll_delays,
    restore_function_environment,
)
from plldb.bootstrap.cloudformation.layer.runtime_client import Invocation, RuntimeApiClient, RuntimeApiError

VALID = {
    "AWS_REGION": "eu-west-1",
    "AWS_LAMBDA_FUNCTION_NAME": "orders-create",
    "_HANDLER": "app.handler",
    protocol.ENV_SESSION_ID: "9ada04b8-639d-476f-af6a-40c89714b812",
    protocol.ENV_CONNECTION_ID: "Vq3zXcHKoAMCJ0g=",
    protocol.ENV_DEBUGGER_ROLE_ARN: "arn:aws:iam::123456789012:role/PLLDBDebuggerRole",
    protocol.ENV_SESSIONS_TABLE: "PLLDBSessions",
    protocol.ENV_DEBUGGER_TABLE: "PLLDBDebugger",
    protocol.ENV_MANAGEMENT_URL: "https://abc123.execute-api.eu-west-1.amazonaws.com/live",
}


# --- Polling schedule -------------------------------------------------------------------------------------------
def test_the_poll_schedule_starts_at_a_few_milliseconds_and_settles_at_two_reads_a_second() -> None:
    delays = list(itertools.islice(poll_delays(), 30))
    assert delays[:3] == pytest.approx([0.002, 0.0026, 0.00338])
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays))
    assert delays[21] < 0.5
    assert delays[22:] == [0.5] * 8
    assert sum(delays[:22]) == pytest.approx(2.1346, abs=1e-3)


def test_the_documented_worst_case_read_counts() -> None:
    assert max_reads(0.05) == 9
    assert max_reads(1.0) == 20
    assert max_reads(5.0) == 28
    assert max_reads(900.0) == 1818


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.0, max_value=900.0), st.floats(min_value=0.0, max_value=10.0))
def test_reads_grow_at_most_two_a_second_after_the_first_22(wait: float, extra: float) -> None:
    assert max_reads(wait) <= 23 + 2 * max(0.0, wait - 2.13) + 1
    assert max_reads(wait + extra) >= max_reads(wait)


# --- Configuration -----------------------------------------------------------------------------------------------
def test_valid_session_variables_have_no_problems() -> None:
    settings_ = Settings(VALID)
    assert settings_.problems == []
    assert settings_.session_configured
    assert settings_.management_url == "https://abc123.execute-api.eu-west-1.amazonaws.com/live"


def test_the_management_url_honours_the_execute_api_override() -> None:
    environ = dict(VALID, PLLDB_EXECUTE_API_ENDPOINT="http://127.0.0.1:4510")
    assert Settings(environ).management_url == "http://127.0.0.1:4510/abc123/live"


@pytest.mark.parametrize(
    ("changes", "problems"),
    [
        ({protocol.ENV_SESSIONS_TABLE: ""}, ["PLLDB_SESSIONS_TABLE not set"]),
        (
            {protocol.ENV_DEBUGGER_TABLE: " ", protocol.ENV_MANAGEMENT_URL: ""},
            ["PLLDB_DEBUGGER_TABLE, PLLDB_WEBSOCKET_MANAGEMENT_URL not set"],
        ),
        (
            {protocol.ENV_DEBUGGER_ROLE_ARN: "arn:aws:iam::123:role/x"},
            ["PLLDB_DEBUGGER_ROLE_ARN is not an IAM role ARN"],
        ),
        ({protocol.ENV_DEBUGGER_TABLE: "bad table!"}, ["PLLDB_DEBUGGER_TABLE is not a DynamoDB table name"]),
        ({protocol.ENV_MANAGEMENT_URL: "wss://x/y"}, ["PLLDB_WEBSOCKET_MANAGEMENT_URL is not an https URL"]),
        ({"AWS_REGION": ""}, ["AWS_REGION is not set"]),
        (
            {protocol.ENV_SESSIONS_TABLE: "arn:aws:dynamodb:eu-west-1:123456789012:table/PLLDBSessions"},
            [],
        ),
    ],
)
def test_invalid_session_variables_are_named(changes: dict[str, str], problems: list[str]) -> None:
    assert Settings(dict(VALID, **changes)).problems == problems


def test_restoring_the_environment_removes_plldb_variables_and_puts_back_a_chained_wrapper() -> None:
    environ = dict(
        VALID,
        AWS_LAMBDA_EXEC_WRAPPER="/opt/plldb-debugger/wrapper",
        PLLDB_ORIGINAL_EXEC_WRAPPER="/opt/otel-instrument",
        ORDERS_TABLE="orders",
    )
    restore_function_environment(environ)
    assert environ == {
        "AWS_REGION": "eu-west-1",
        "AWS_LAMBDA_FUNCTION_NAME": "orders-create",
        "_HANDLER": "app.handler",
        "ORDERS_TABLE": "orders",
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/otel-instrument",
    }


# --- Sessions -------------------------------------------------------------------------------------------------------
def _session_item(**overrides: Any) -> dict[str, Any]:
    item = {
        protocol.A_STATUS: {"S": protocol.STATUS_ACTIVE},
        protocol.A_CONNECTION_ID: {"S": "conn-1"},
        protocol.A_STACK_NAME: {"S": "orders"},
        protocol.A_TTL: {"N": "2000"},
    }
    item.update(overrides)
    return {k: v for k, v in item.items() if v is not None}


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (_session_item(), None),
        (None, "its debugging session no longer exists"),
        (_session_item(Status={"S": "CLOSED"}), "its debugging session has ended"),
        (_session_item(Status={"S": "PENDING"}), "no debugger has connected to its debugging session"),
        (_session_item(TTL={"N": "999"}), "its debugging session has expired"),
        (_session_item(ConnectionId=None), "its debugging session has no WebSocket connection"),
    ],
)
def test_session_states_that_mean_no_debugger(item: dict[str, Any] | None, reason: str | None) -> None:
    assert SessionView.from_item(item, 0.0).absent_reason(now=1000.0) == reason


@pytest.mark.parametrize(
    ("stored", "fallback"),
    [(None, "error"), ("passthrough", "passthrough"), ("error", "error"), ("sideways", "error")],
)
def test_the_fallback_defaults_to_error(stored: str | None, fallback: str) -> None:
    item = _session_item(Fallback={"S": stored} if stored else None)
    assert SessionView.from_item(item, 0.0).fallback == fallback


# --- The invoke message --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bridge() -> Iterator[DebuggerBridge]:
    settings_ = Settings(VALID)
    yield DebuggerBridge(settings_, DebuggerRole(settings_), lambda_runtime.CloudHandler("app.handler"))


def _invocation(body: bytes) -> Invocation:
    return Invocation(
        body,
        {
            "Lambda-Runtime-Aws-Request-Id": "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
            "Lambda-Runtime-Deadline-Ms": "1700000000000",
            "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:eu-west-1:123456789012:function:orders",
        },
    )


@settings(max_examples=60, deadline=None)
@given(size=st.integers(min_value=0, max_value=400_000), filler=st.sampled_from(["a", "é", "\u20ac", "\\n"]))
def test_events_are_inline_exactly_when_the_message_fits(
    bridge: DebuggerBridge, size: int, filler: str
) -> None:
    body = json.dumps({"data": filler * (size // len(filler.encode()))}, ensure_ascii=False).encode("utf-8")
    message, chunks = bridge._invoke_message(_invocation(body))
    with_event = dict(message, event=body.decode("utf-8"))
    with_event.pop("eventChunks", None)
    with_event.pop("eventSha256", None)
    fits = protocol.message_size(with_event) <= protocol.INLINE_MESSAGE_LIMIT
    assert (chunks is None) == fits
    assert protocol.message_size(message) <= protocol.INLINE_MESSAGE_LIMIT
    if chunks is not None:
        assert b"".join(chunks) == body
        assert all(len(chunk) <= protocol.CHUNK_SIZE for chunk in chunks)
        assert message["eventChunks"] == len(chunks)
        assert message["eventSha256"] == protocol.sha256_hex(body)
        assert "event" not in message


def test_an_event_that_is_not_utf8_goes_by_reference(bridge: DebuggerBridge) -> None:
    message, chunks = bridge._invoke_message(_invocation(b'"\xff\xfe"'))
    assert chunks == [b'"\xff\xfe"']
    assert "event" not in message


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (
            json.dumps({"errorMessage": "x", "errorType": "E", "stackTrace": ["a"]}),
            {"errorMessage": "x", "errorType": "E", "requestId": "r", "stackTrace": ["a"]},
        ),
        (
            json.dumps({"errorType": "E", "stackTrace": "not a list"}),
            {"errorMessage": "", "errorType": "E", "requestId": "r", "stackTrace": []},
        ),
        (
            "[1]",
            {
                "errorMessage": "plldb's debugger layer failed: the debugger's error answer is not a JSON object",
                "errorType": "PlldbLayerError",
                "requestId": "r",
                "stackTrace": [],
            },
        ),
    ],
)
def test_local_errors_are_reported_in_awslambdarics_shape(stored: str, expected: dict[str, Any]) -> None:
    assert lambda_runtime._local_error(stored, "r") == expected


# --- Runtime API client ----------------------------------------------------------------------------------------------
class _OneShotServer:
    """Answers one request per connection, then closes it without saying so (a stale keep-alive)."""

    def __init__(self, statuses: list[int]) -> None:
        self._statuses = statuses
        self.connections = 0
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        for status in self._statuses:
            connection, _ = self._listener.accept()
            self.connections += 1
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += connection.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(
                    dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:]).get(
                        b"Content-Length", b"0"
                    )
                )
                while len(body) < length:
                    body += connection.recv(65536)
                self.requests.append(head.split(b"\r\n")[0] + b" " + body)
                headers = (
                    b"Lambda-Runtime-Aws-Request-Id: r-%d\r\nLambda-Runtime-Deadline-Ms: 5\r\n"
                    % self.connections
                )
                connection.sendall(
                    b"HTTP/1.1 %d X\r\n%sContent-Length: 2\r\n\r\n{}"
                    % (status, headers if status == 200 else b"")
                )


def test_the_runtime_api_client_reopens_a_connection_the_server_dropped() -> None:
    server = _OneShotServer([200, 202, 200])
    client = RuntimeApiClient(server.address)
    first = client.next_invocation()
    client.post_response(first.request_id, b'"ok"')
    second = client.next_invocation()
    assert (first.request_id, first.deadline_ms, first.body) == ("r-1", 5, b"{}")
    assert second.request_id == "r-3"
    assert server.connections == 3
    assert server.requests[1] == b'POST /2018-06-01/runtime/invocation/r-1/response HTTP/1.1 "ok"'


def test_a_refused_call_raises_with_the_status() -> None:
    server = _OneShotServer([413])
    client = RuntimeApiClient(server.address)
    with pytest.raises(RuntimeApiError, match="invocation/r/response answered 413: {}"):
        client.post_response("r", b"x" * 10)


def test_error_reports_carry_the_error_type_header() -> None:
    server = _OneShotServer([202])
    RuntimeApiClient(server.address).post_error(
        "r", {"errorMessage": "m", "errorType": "Café", "stackTrace": []}
    )
    assert server.requests == [
        b'POST /2018-06-01/runtime/invocation/r/error HTTP/1.1 {"errorMessage": "m", "errorType": "Caf\\u00e9", '
        b'"stackTrace": []}'
    ]


def test_a_malformed_runtime_api_address_is_refused() -> None:
    with pytest.raises(ValueError, match="AWS_LAMBDA_RUNTIME_API must be host:port, got 'localhost'"):
        RuntimeApiClient("localhost")
