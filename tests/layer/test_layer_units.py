"""The layer's parts on their own: the polling schedule, the configuration checks, the environment the
handler and the debugger see, error documents, the dispatcher's Invoke (sent once, retried only when
Lambda surely did not run it, on the dispatch pool while the item is read early), and the Runtime API client's connection handling against a real socket."""

from __future__ import annotations

import concurrent.futures
import http.server
import io
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from plldb import protocol
from plldb.bootstrap.cloudformation.layer import lambda_runtime
from plldb.bootstrap.cloudformation.layer.function_access import DISPATCHER_CONFIG
from plldb.bootstrap.cloudformation.layer.lambda_runtime import DebuggerBridge, poll_delays
from plldb.bootstrap.cloudformation.layer.passthrough import lambda_python_path
from plldb.bootstrap.cloudformation.layer.runtime_client import Invocation, RuntimeApiClient, RuntimeApiError
from plldb.bootstrap.cloudformation.layer.settings import Settings, restore_function_environment

LAYER_DIRECTORY = Path(lambda_runtime.__file__).resolve().parent
DISPATCHER = "arn:aws:lambda:eu-west-1:123456789012:function:plldb-DispatcherFunction-1A2B3C"
VALID = {
    "AWS_REGION": "eu-west-1",
    "AWS_LAMBDA_FUNCTION_NAME": "orders-create",
    "_HANDLER": "app.handler",
    protocol.ENV_SESSION_ID: "9ada04b8-639d-476f-af6a-40c89714b812",
    protocol.ENV_DISPATCHER: DISPATCHER,
    protocol.ENV_INVOCATIONS_TABLE: "plldb-PLLDBInvocations-X1",
    protocol.ENV_PAYLOAD_BUCKET: "plldb-payloadbucket-x1",
}


# --- Polling schedule ----------------------------------------------------------------------------------
def test_the_poll_schedule_starts_at_a_few_milliseconds_and_settles_at_two_reads_a_second() -> None:
    delays = list(itertools.islice(poll_delays(), 30))
    assert delays[:3] == pytest.approx([0.002, 0.0026, 0.00338])
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays))
    assert delays[21] < 0.5
    assert delays[22:] == [0.5] * 8
    assert sum(delays[:22]) == pytest.approx(2.1346, abs=1e-3)


# --- Configuration -------------------------------------------------------------------------------------
def test_valid_instrumentation_variables_have_no_problems() -> None:
    settings = Settings(VALID)
    assert settings.problems == []
    assert (settings.session_id, settings.dispatcher_arn, settings.fallback) == (
        VALID[protocol.ENV_SESSION_ID],
        DISPATCHER,
        protocol.FALLBACK_ERROR,
    )
    assert (settings.function_version, settings.handler) == ("$LATEST", "app.handler")


@pytest.mark.parametrize(
    ("changes", "problems"),
    [
        ({protocol.ENV_INVOCATIONS_TABLE: ""}, ["PLLDB_INVOCATIONS_TABLE not set"]),
        (
            {protocol.ENV_DISPATCHER: " ", protocol.ENV_PAYLOAD_BUCKET: ""},
            ["PLLDB_DISPATCHER_FUNCTION, PLLDB_PAYLOAD_BUCKET not set"],
        ),
        ({protocol.ENV_SESSION_ID: "9ada04b8-session"}, ["DEBUGGER_SESSION_ID is not a session id"]),
        (
            {protocol.ENV_DISPATCHER: "arn:aws:lambda:eu-west-1:123:function:plldb"},
            ["PLLDB_DISPATCHER_FUNCTION is not a Lambda function ARN"],
        ),
        (
            {protocol.ENV_DISPATCHER: DISPATCHER + ":live"},
            ["PLLDB_DISPATCHER_FUNCTION is not a Lambda function ARN"],
        ),
        (
            {protocol.ENV_INVOCATIONS_TABLE: "a table!", protocol.ENV_PAYLOAD_BUCKET: "b/c"},
            [
                "PLLDB_INVOCATIONS_TABLE is not a table or bucket name",
                "PLLDB_PAYLOAD_BUCKET is not a table or bucket name",
            ],
        ),
        ({"AWS_REGION": ""}, ["AWS_REGION is not set"]),
        ({"AWS_REGION": "", "AWS_DEFAULT_REGION": "eu-west-1"}, []),
        ({protocol.ENV_FALLBACK: "sideways"}, []),
    ],
)
def test_invalid_instrumentation_variables_are_named(changes: dict[str, str], problems: list[str]) -> None:
    assert Settings(dict(VALID, **changes)).problems == problems


@pytest.mark.parametrize(
    ("stored", "fallback"),
    [(None, "error"), ("passthrough", "passthrough"), ("error", "error"), ("sideways", "error")],
)
def test_the_fallback_defaults_to_error(stored: str | None, fallback: str) -> None:
    environ = dict(VALID, **({protocol.ENV_FALLBACK: stored} if stored else {}))
    assert Settings(environ).fallback == fallback


def test_restoring_the_environment_removes_every_plldb_variable_and_puts_back_a_chained_wrapper() -> None:
    environ = dict(
        VALID,
        ORDERS_TABLE="orders",
        AWS_LAMBDA_EXEC_WRAPPER=protocol.LAYER_WRAPPER_PATH,
        PLLDB_FALLBACK="passthrough",
        PLLDB_ORIGINAL_EXEC_WRAPPER="/opt/otel-instrument",
        PLLDB_ORIGINAL_TIMEOUT="3",
        PLLDB_ORIGINAL_ENVIRONMENT="absent",
        PLLDB_ALIASES='{"live": {"version": "3", "weights": {}}}',
        PLLDB_EXECUTE_API_ENDPOINT="http://127.0.0.1:4510",
    )
    restore_function_environment(environ)
    assert environ == {
        "AWS_REGION": "eu-west-1",
        "AWS_LAMBDA_FUNCTION_NAME": "orders-create",
        "_HANDLER": "app.handler",
        "ORDERS_TABLE": "orders",
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/otel-instrument",
        "PLLDB_EXECUTE_API_ENDPOINT": "http://127.0.0.1:4510",  # the local cloud's, not an instrumentation
    }


def test_without_a_chained_wrapper_no_exec_wrapper_is_left() -> None:
    environ = dict(VALID, AWS_LAMBDA_EXEC_WRAPPER=protocol.LAYER_WRAPPER_PATH)
    restore_function_environment(environ)
    assert "AWS_LAMBDA_EXEC_WRAPPER" not in environ


def test_lambdas_python_path_is_the_code_then_the_layers() -> None:
    """From the source tree the layers are at /opt (unpacked, they are next to plldb's own layer)."""
    version = "python{}.{}".format(*sys.version_info[:2])
    assert lambda_python_path({"LAMBDA_TASK_ROOT": "/var/task/app"}) == [
        "/var/task/app",
        f"/opt/python/lib/{version}/site-packages",
        "/opt/python",
    ]
    assert lambda_python_path({})[0] == "/var/task"


# --- Error documents -----------------------------------------------------------------------------------
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


# --- The dispatcher's Invoke ------------------------------------------------------------------------------
class FakeLambda:
    """Answers each Invoke with the next outcome: an exception to raise, or a verdict."""

    def __init__(self, outcomes: list[Any]) -> None:
        self.outcomes = outcomes
        self.payloads: list[bytes] = []

    def invoke(self, **arguments: Any) -> dict[str, Any]:
        assert arguments["FunctionName"] == DISPATCHER
        assert arguments["InvocationType"] == "RequestResponse"
        self.payloads.append(arguments["Payload"])
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(outcome).encode())}


class FakeDynamoDB:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def put_item(self, **arguments: Any) -> None:
        self.calls.append(("put_item", arguments))

    def update_item(self, **arguments: Any) -> None:
        self.calls.append(("update_item", arguments))

    def get_item(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(("get_item", arguments))
        return {"Item": {protocol.A_CALLER: arguments["Key"][protocol.A_CALLER]}}


class FakeAccess:
    def __init__(self, lambda_client: FakeLambda) -> None:
        self.clients = {"lambda": lambda_client, "dynamodb": FakeDynamoDB()}

    def client(self, service: str) -> Any:
        return self.clients[service]

    def identify(self) -> str:
        return "AROAEXAMPLEROLEID:orders-create"

    def credentials(self) -> dict[str, Any]:
        return {"accessKeyId": "ASIAEXAMPLE", "secretAccessKey": "s", "sessionToken": "t"}

    def call(self, operation: Any) -> Any:
        return operation()


def throttled() -> ClientError:
    return ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"}}, "Invoke")


@pytest.fixture
def bridge_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in VALID.items():
        monkeypatch.setenv(name, value)
    sleeps: list[float] = []

    def make(outcomes: list[Any]) -> tuple[DebuggerBridge, FakeAccess, list[float]]:
        access = FakeAccess(FakeLambda(outcomes))
        bridge = DebuggerBridge(
            Settings(VALID), access, lambda_runtime.CloudHandler("app.handler"), sleeps.append
        )  # type: ignore[arg-type]
        return bridge, access, sleeps

    yield make


def _invocation() -> Invocation:
    return Invocation(
        b'{"order": 1}',
        {
            "Lambda-Runtime-Aws-Request-Id": "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 60_000),
        },
    )


def test_a_throttled_invoke_is_sent_again_unchanged(bridge_with: Any) -> None:
    """Lambda refused it before running anything: the same request again, after a pause."""
    bridge, access, sleeps = bridge_with([throttled(), throttled(), {"status": "refused", "reason": "r"}])
    answer = bridge.answer(_invocation())
    payloads = access.clients["lambda"].payloads
    assert len(payloads) == 3 and len(set(payloads)) == 1
    assert sleeps == [lambda_runtime.RETRY_DELAY_SECONDS, 2 * lambda_runtime.RETRY_DELAY_SECONDS]
    assert answer.error is not None and answer.error["errorType"] == "PlldbRefused"


def test_an_unreachable_dispatcher_is_tried_dispatch_attempts_times(bridge_with: Any) -> None:
    never_connected = [EndpointConnectionError(endpoint_url="https://lambda") for _ in range(3)]
    bridge, access, _ = bridge_with(never_connected)
    with pytest.raises(EndpointConnectionError):
        bridge.answer(_invocation())
    assert len(access.clients["lambda"].payloads) == lambda_runtime.DISPATCH_ATTEMPTS == 3


@pytest.mark.parametrize(
    "failure",
    [
        ClientError(
            {
                "Error": {"Code": "ServiceException", "Message": "x"},
                "ResponseMetadata": {"HTTPStatusCode": 500},
            },
            "Invoke",
        ),
        ReadTimeoutError(endpoint_url="https://lambda"),
    ],
    ids=["service-error", "read-timeout"],
)
def test_an_invoke_that_may_have_run_is_never_sent_again(bridge_with: Any, failure: Exception) -> None:
    """A second run would find the delivery posted already and refuse it, though the first posted it."""
    bridge, access, _ = bridge_with([failure, {"status": "posted"}])
    with pytest.raises(type(failure)):
        bridge.answer(_invocation())
    assert len(access.clients["lambda"].payloads) == 1
    updates = [arguments for name, arguments in access.clients["dynamodb"].calls if name == "update_item"]
    if isinstance(failure, ReadTimeoutError):  # the item is closed: a late answer is refused, not lost
        (update,) = updates
        assert update["ExpressionAttributeValues"] == {
            ":code": {"N": "503"},
            ":reason": {"S": "the helper stack's dispatcher did not answer"},
        }
        assert update["ConditionExpression"] == "attribute_exists(#caller) AND attribute_not_exists(#code)"
    else:
        assert updates == []


def test_the_dispatchers_client_never_retries_by_itself() -> None:
    config = DISPATCHER_CONFIG
    assert config.retries == {"mode": "standard", "total_max_attempts": 1}
    assert config.read_timeout >= 10 + 15  # Lambda's init phase plus the dispatcher's Timeout (template.yaml)


# --- The wrapper ---------------------------------------------------------------------------------------------
def test_the_wrapper_is_an_executable_posix_shell_script_where_plldb_points_lambda() -> None:
    wrapper = LAYER_DIRECTORY / "wrapper"
    assert wrapper.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    assert os.access(wrapper, os.X_OK)
    assert subprocess.run(["sh", "-n", str(wrapper)], capture_output=True).returncode == 0
    assert (
        protocol.LAYER_WRAPPER_PATH
        == f"/opt/{protocol.LAYER_DIRECTORY}/wrapper"
        == "/opt/plldb-debugger/wrapper"
    )


# --- Runtime API client ------------------------------------------------------------------------------------
class _KeepAliveHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: ClassVar[list[Any]] = []

    def setup(self) -> None:
        super().setup()
        self.connections.append(self.client_address)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", f"r-{len(self.connections)}")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(202)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def test_the_runtime_api_client_keeps_one_connection_for_every_call() -> None:
    """/next and /response on the hot path of every invocation share one kept-alive connection."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = RuntimeApiClient(f"127.0.0.1:{server.server_address[1]}")
        for _ in range(3):
            invocation = client.next_invocation()
            client.post_response(invocation.request_id, b'"ok"')
        client.post_error("r-1", {"errorMessage": "m", "errorType": "E", "stackTrace": []})
    finally:
        server.shutdown()
    assert len(_KeepAliveHandler.connections) == 1


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
                headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
                length = int(headers.get(b"Content-Length", b"0"))
                while len(body) < length:
                    body += connection.recv(65536)
                self.requests.append(head.split(b"\r\n")[0] + b" " + body)
                extra = (
                    b"Lambda-Runtime-Aws-Request-Id: r-%d\r\nLambda-Runtime-Deadline-Ms: 5\r\n"
                    % self.connections
                    if status == 200
                    else b""
                )
                connection.sendall(b"HTTP/1.1 %d X\r\n%sContent-Length: 2\r\n\r\n{}" % (status, extra))


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


# --- The ack timeout and an ack that lands at the same moment ---------------------------------------------------
class FakeClock:
    """time.monotonic/time.time for the layer's loop, advanced only by its sleeps."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class RacingTable(FakeDynamoDB):
    """The item as the routes would leave it when the debugger's ack lands just after the layer's last read
    before the ack timeout: the layer's conditional close then fails, and the next reads see the ack, then
    the answer."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.acked = False
        self.reads_after_ack = 0

    def get_item(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(("get_item", arguments))
        item: dict[str, Any] = {protocol.A_CALLER: arguments["Key"][protocol.A_CALLER]}
        if self.acked:
            item[protocol.A_ACKED_AT] = {"N": "1"}
            self.reads_after_ack += 1
            if self.reads_after_ack > 2:
                item.update(
                    {protocol.A_RESPONSE_CODE: {"N": "200"}, protocol.A_RESPONSE: {"S": '"acked in time"'}}
                )
        return {"Item": item}

    def update_item(self, **arguments: Any) -> None:
        self.calls.append(("update_item", arguments))
        if "attribute_not_exists(#acked)" in arguments["ConditionExpression"]:
            self.acked = True  # the ack was stored between the last read and this update
            raise ClientError(
                {"Error": {"Code": "ConditionalCheckFailedException", "Message": "x"}}, "UpdateItem"
            )


class NeverRun:
    def run(self, invocation: Invocation) -> Any:
        raise AssertionError("the handler ran in the cloud although the debugger had acknowledged it")


def test_an_ack_that_lands_as_the_ack_timeout_closes_the_item_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Neither a second run in the cloud (fallback passthrough) nor a refused answer: the layer waits on."""
    for name, value in VALID.items():
        monkeypatch.setenv(name, value)
    clock = FakeClock()
    monkeypatch.setattr(lambda_runtime, "time", clock)
    access = FakeAccess(FakeLambda([{"status": "posted"}]))
    table = access.clients["dynamodb"] = RacingTable(clock)
    settings = Settings(dict(VALID, PLLDB_FALLBACK="passthrough"))
    bridge = DebuggerBridge(settings, access, NeverRun(), clock.sleep)  # type: ignore[arg-type]
    invocation = Invocation(
        b"{}",
        {
            "Lambda-Runtime-Aws-Request-Id": "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
            "Lambda-Runtime-Deadline-Ms": str(int((clock.now + 60) * 1000)),
        },
    )

    answer = bridge.answer(invocation)

    assert (answer.body, answer.error) == (b'"acked in time"', None)
    closes = [arguments for name, arguments in table.calls if name == "update_item"]
    assert [c["ConditionExpression"] for c in closes] == [
        "attribute_exists(#caller) AND attribute_not_exists(#code) AND attribute_not_exists(#acked)"
    ]
    assert clock.now - 1_700_000_000.0 >= protocol.ACK_TIMEOUT_SECONDS


class ClosedByARetriedAttempt(FakeDynamoDB):
    """The layer's close of its item was applied, but its answer was lost and the SDK sent it again."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: dict[str, Any] | None = None

    def get_item(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(("get_item", arguments))
        return {"Item": {protocol.A_CALLER: arguments["Key"][protocol.A_CALLER], **(self.closed or {})}}

    def update_item(self, **arguments: Any) -> None:
        self.calls.append(("update_item", arguments))
        values = arguments["ExpressionAttributeValues"]
        self.closed = {protocol.A_RESPONSE_CODE: values[":code"], protocol.A_REASON: values[":reason"]}
        raise ClientError(
            {"Error": {"Code": "ConditionalCheckFailedException", "Message": "x"}}, "UpdateItem"
        )


class RunsInTheCloud:
    def __init__(self) -> None:
        self.runs = 0

    def run(self, invocation: Invocation) -> Any:
        self.runs += 1
        return lambda_runtime.Answer.result(b'"ran in the cloud"')


def test_a_close_the_sdk_sent_twice_still_leads_to_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second attempt finds the item closed by the first: the layer's own 503, not someone's answer."""
    for name, value in VALID.items():
        monkeypatch.setenv(name, value)
    clock = FakeClock()
    monkeypatch.setattr(lambda_runtime, "time", clock)
    access = FakeAccess(FakeLambda([{"status": "posted"}]))
    access.clients["dynamodb"] = ClosedByARetriedAttempt()
    cloud = RunsInTheCloud()
    bridge = DebuggerBridge(Settings(dict(VALID, PLLDB_FALLBACK="passthrough")), access, cloud, clock.sleep)  # type: ignore[arg-type]
    invocation = Invocation(
        b"{}",
        {
            "Lambda-Runtime-Aws-Request-Id": "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
            "Lambda-Runtime-Deadline-Ms": str(int((clock.now + 60) * 1000)),
        },
    )

    answer = bridge.answer(invocation)

    assert (answer.body, cloud.runs) == (b'"ran in the cloud"', 1)


class WrittenByARetriedAttempt(FakeDynamoDB):
    def put_item(self, **arguments: Any) -> None:
        self.calls.append(("put_item", arguments))
        raise ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": "x"}}, "PutItem")

    def get_item(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(("get_item", arguments))
        item = {protocol.A_CALLER: arguments["Key"][protocol.A_CALLER]}
        return {
            "Item": {**item, protocol.A_RESPONSE_CODE: {"N": "200"}, protocol.A_RESPONSE: {"S": '"answered"'}}
        }


def test_an_item_the_sdk_wrote_twice_is_still_dispatched(bridge_with: Any) -> None:
    """Its key is a fresh delivery under the function's own identity: an item already there is its own."""
    bridge, access, _ = bridge_with([{"status": "posted"}])
    access.clients["dynamodb"] = WrittenByARetriedAttempt()
    answer = bridge.answer(_invocation())
    assert (answer.body, answer.error) == (b'"answered"', None)
    assert len(access.clients["lambda"].payloads) == 1


# --- Early reads while the dispatcher's invocation is still returning --------------------------------------
class HeldDispatch(concurrent.futures.Future):  # type: ignore[type-arg]
    """A dispatcher invocation that runs only when the test lets it (or when its verdict is asked for)."""

    def __init__(self, fn: Any, args: tuple[Any, ...], events: list[str]) -> None:
        super().__init__()
        self.fn, self.args, self.events = fn, args, events

    def finish(self) -> None:
        if not self.done():
            self.events.append("dispatcher returned")
            self.set_result(self.fn(*self.args))

    def result(self, timeout: float | None = None) -> Any:
        self.finish()
        return super().result(timeout)


class HeldExecutor(concurrent.futures.Executor):
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.submitted: list[HeldDispatch] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> HeldDispatch:  # type: ignore[override]
        assert not kwargs
        self.submitted.append(HeldDispatch(fn, args, self.events))
        return self.submitted[-1]


class ScriptedTable(FakeDynamoDB):
    """Each read returns the next scripted item attributes (the last one repeats)."""

    def __init__(self, reads: list[dict[str, Any]], events: list[str]) -> None:
        super().__init__()
        self.reads, self.events = reads, events

    def get_item(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(("get_item", arguments))
        self.events.append("read")
        found = self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]
        return {"Item": {protocol.A_CALLER: arguments["Key"][protocol.A_CALLER], **found}}


ANSWERED = {protocol.A_RESPONSE_CODE: {"N": "200"}, protocol.A_RESPONSE: {"S": '"early"'}}
ACKED = {protocol.A_ACKED_AT: {"N": "1"}}


class EarlyBench:
    """A bridge with a held dispatcher, a fake clock and a scripted item; ``finish_after_waits`` lets the
    dispatcher's invocation return during that many-th wait (None: only when its verdict is asked for)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, reads: list[dict[str, Any]]) -> None:
        for name, value in VALID.items():
            monkeypatch.setenv(name, value)
        self.clock = FakeClock()
        monkeypatch.setattr(lambda_runtime, "time", self.clock)
        self.events: list[str] = []
        self.waits: list[float] = []
        self.finish_after_waits: int | None = None
        self.access = FakeAccess(FakeLambda([{"status": "posted"}]))
        self.access.clients["dynamodb"] = ScriptedTable(reads, self.events)
        self.executor = HeldExecutor(self.events)
        self.bridge = DebuggerBridge(
            Settings(VALID),
            self.access,  # type: ignore[arg-type]
            NeverRun(),  # type: ignore[arg-type]
            self.clock.sleep,
            executor=self.executor,
            clock=self.clock.monotonic,
            wait=self.wait,
        )

    def wait(self, pending: Any, seconds: float) -> bool:
        self.waits.append(round(seconds, 6))
        self.events.append("wait")
        if self.finish_after_waits is not None and len(self.waits) >= self.finish_after_waits:
            pending.finish()
            return True
        self.clock.sleep(seconds)
        return False

    def answer(self) -> lambda_runtime.Answer:
        invocation = Invocation(
            b"{}",
            {
                "Lambda-Runtime-Aws-Request-Id": "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
                "Lambda-Runtime-Deadline-Ms": str(int((self.clock.now + 60) * 1000)),
            },
        )
        return self.bridge.answer(invocation)


def test_without_a_quick_answer_seen_the_item_is_read_only_after_the_dispatcher_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = EarlyBench(monkeypatch, [ANSWERED])
    answer = bench.answer()
    assert (answer.body, answer.error) == (b'"early"', None)
    assert bench.waits == [] and bench.events == ["dispatcher returned", "read"]
    (request,) = [json.loads(p) for p in bench.access.clients["lambda"].payloads]
    assert request["sessionId"] == VALID[protocol.ENV_SESSION_ID]
    # An unacknowledged answer read by polling is a quick answer: the next invocation reads early.
    assert list(bench.bridge.quick_answers) == [
        pytest.approx(lambda_runtime.FIRST_POLL_DELAY_SECONDS, abs=1e-6)
    ]


def test_a_quick_answer_is_read_before_the_dispatcher_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads at 0.8 of the quickest recent answer, then each 1.3 times later; the answer ends the wait."""
    bench = EarlyBench(monkeypatch, [{}, ACKED, ANSWERED])
    bench.bridge.quick_answers.extend([0.5, 0.1, 0.3])
    answer = bench.answer()
    assert (answer.body, answer.error) == (b'"early"', None)
    assert bench.waits == [0.08, round(0.08 * 0.3, 6), round(0.08 * 1.3 * 0.3, 6)]
    assert bench.events == ["wait", "read"] * 3
    assert not bench.executor.submitted[0].done()  # its invocation is left to finish on its own
    assert bench.access.clients["lambda"].payloads == []
    assert bench.bridge.quick_answers[-1] == pytest.approx(0.08 * 1.3 * 1.3, abs=1e-6)


def test_early_reads_stop_after_early_reads_and_the_verdict_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    """A closed item (503) read early is not an answer: the dispatcher's verdict and the poll decide."""
    closed = {protocol.A_RESPONSE_CODE: {"N": "503"}, protocol.A_REASON: {"S": "x"}}
    bench = EarlyBench(monkeypatch, [ACKED] * lambda_runtime.EARLY_READS + [{**ACKED, **ANSWERED}])
    bench.access.clients["dynamodb"].reads[1] = closed
    bench.bridge.quick_answers.append(0.1)
    answer = bench.answer()
    assert (answer.body, answer.error) == (b'"early"', None)
    assert bench.events == ["wait", "read"] * lambda_runtime.EARLY_READS + ["dispatcher returned", "read"]
    assert len(bench.access.clients["lambda"].payloads) == 1
    assert list(bench.bridge.quick_answers) == [0.1]  # an acknowledged answer is no quick one


def test_a_dispatcher_that_returns_first_ends_the_early_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = EarlyBench(monkeypatch, [ANSWERED])
    bench.finish_after_waits = 2
    bench.access.clients["dynamodb"].reads = [{}, ANSWERED]
    bench.bridge.quick_answers.append(0.1)
    answer = bench.answer()
    assert (answer.body, answer.error) == (b'"early"', None)
    assert bench.events == ["wait", "read", "wait", "dispatcher returned", "read"]


def test_a_lost_dispatcher_answer_from_the_pool_closes_the_item(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's result carries the ReadTimeoutError: the item is closed so a late answer is refused."""
    bench = EarlyBench(monkeypatch, [{}])
    bench.access.clients["lambda"].outcomes = [ReadTimeoutError(endpoint_url="https://lambda")]
    with pytest.raises(ReadTimeoutError):
        bench.answer()
    updates = [a for name, a in bench.access.clients["dynamodb"].calls if name == "update_item"]
    assert [u["ExpressionAttributeValues"][":code"] for u in updates] == [{"N": "503"}]


def test_the_observed_hand_over_is_the_layers_own_work_and_is_waited_for_until_the_deadline_margin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its SDK records (the request body holds the role's credentials) stay out of the function's log, and
    the function's timeout, which still counts until /next, is never spent on it."""
    from plldb.bootstrap.cloudformation.layer import function_access

    for name, value in VALID.items():
        monkeypatch.setenv(name, value)
    clock = FakeClock()
    monkeypatch.setattr(lambda_runtime, "time", clock)
    now_ms = int(clock.now * 1000)
    marked: list[bool] = []
    waited: list[float] = []

    def wait(pending: Any, seconds: float) -> bool:
        waited.append(seconds)
        return bool(pending.result() is None)

    bridge = DebuggerBridge(
        Settings(VALID),
        FakeAccess(FakeLambda([])),  # type: ignore[arg-type]
        NeverRun(),  # type: ignore[arg-type]
        wait=wait,
    )
    bridge._follow_up = lambda: marked.append(getattr(function_access._work, "own", False))
    bridge.follow_up(deadline_ms=now_ms + 5000)
    assert marked == [True]
    assert waited == [5.0 - protocol.DEADLINE_MARGIN_MS / 1000]
    bridge._follow_up = lambda: marked.append(True)
    bridge.follow_up(deadline_ms=now_ms + 500)  # within the margin: not waited for at all
    assert waited[-1] == 0.0
