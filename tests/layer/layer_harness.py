"""The debugger layer's test bench: the local cloud, plldb's helper stack, an application and a debugger.

Everything runs as it does for a developer: the helper stack is deployed by ``plldb.bootstrap.deploy``,
the application (``layer_app/``) by the local cloud's ``sam deploy``, and each function is invoked with
boto3's ``lambda.invoke``, so the real layer runs in a real execution environment behind
``AWS_LAMBDA_EXEC_WRAPPER`` and reaches the real dispatcher and routes over the local cloud.

The :class:`ScriptedDebugger` stands in for ``plldb attach``: it connects exactly as plldb does (SigV4 of
the upgrade request, a session id of its own choosing), sends ``open``, instruments the functions it is
given with ``plldb.instrumentation.functions.instrument`` and the developer's credentials, verifies the
MAC of every message it receives (dropping and recording any that fails), and answers each ``invoke``
as the test scripts it. It restores what it instrumented and closes its session at the end.

Waits are bounded only by ``WAIT_GUARD_SECONDS``, a guard against a hung test: no test asserts how long
anything takes. Order and causality are shown with the debugger's records, the items and the logs.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import re
import threading
import time
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack
from plldb.instrumentation import functions
from plldb.instrumentation.decisions import Target
from plldb.instrumentation.functions import FunctionRef, Result
from plldb.local.instrument import developer_clients
from plldb.local.session.connection import connect_url, session_url, sigv4_signer

WAIT_GUARD_SECONDS = 90.0  # how long a wait may last before the test is declared hung
POLL_SECONDS = 0.01  # the first pause of a wait for a table's state; it grows to MAX_POLL_SECONDS
MAX_POLL_SECONDS = 0.2

# Variables whose values belong to one execution environment or one invocation.
PER_ENVIRONMENT_VARIABLES = ("AWS_LAMBDA_LOG_STREAM_NAME", "AWS_LAMBDA_RUNTIME_API", "_X_AMZN_TRACE_ID")

# One synchronous invocation per call, never retried by the SDK (a retry would be a second invocation),
# and as long as Lambda's longest timeout.
INVOKE_CONFIG = Config(
    read_timeout=960,
    connect_timeout=10,
    retries={"mode": "standard", "total_max_attempts": 1},
    max_pool_connections=64,
)


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test if it never does."""
    deadline = time.monotonic() + WAIT_GUARD_SECONDS
    pause = POLL_SECONDS
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 1.5, MAX_POLL_SECONDS)


# --- The deployed pieces ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerApp:
    """The application stack of layer_app/, as deployed."""

    stack_name: str
    stack_id: str
    directory: Path
    functions: dict[str, str]  # logical id -> function name
    own_wrapper: Path

    def ref(self, logical_id: str) -> FunctionRef:
        return FunctionRef(self.functions[logical_id], logical_id)


@dataclass
class Invoked:
    """What ``lambda.invoke`` answered."""

    status: int
    function_error: str | None
    payload: bytes
    log: str  # the last 4 KB of the invocation's log (LogType Tail)

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def error_type(self) -> str | None:
        return self.json().get("errorType") if self.function_error else None

    @property
    def request_id(self) -> str:
        """From the invocation's start line: Text ``START RequestId: ...`` or JSON ``platform.start``."""
        for line in self.log.splitlines():
            if line.startswith("START RequestId: "):
                return line.split()[2]
            if line.startswith("{") and '"platform.start"' in line:
                return str(json.loads(line)["record"]["requestId"])
        raise AssertionError(f"no start line in the log tail: {self.log!r}")

    def lines(self) -> list[str]:
        """The invocation's own log lines: between its start and its end (END, or platform.report)."""
        lines = self.log.splitlines()
        start = next(i for i, line in enumerate(lines) if is_platform_line(line, ("START", "platform.start")))
        end = next(i for i, line in enumerate(lines) if is_platform_line(line, ("END", "platform.report")))
        return lines[start + 1 : end]


def is_platform_line(line: str, kinds: tuple[str, ...] = ("START", "END", "REPORT", "platform.")) -> bool:
    """A line Lambda writes itself: START/END/REPORT (Text), or a platform event (JSON system logs)."""
    if line.startswith("{"):
        try:
            kind = str(json.loads(line).get("type") or "")
        except ValueError:
            return False
        return any(kind.startswith(k) for k in kinds if k.startswith("platform."))
    return any(line.startswith(k + " RequestId: ") for k in kinds if not k.startswith("platform."))


@dataclass
class LayerBench:
    """The local cloud with plldb's helper stack and the test application deployed."""

    cloud: Any  # plldb.localcloud.cloud.LocalCloud
    helper: HelperStack
    app: LayerApp
    tables: dict[str, str]  # logical id of each helper table -> its name
    helper_functions: dict[str, str]  # logical id of each helper function -> its name
    _lambda: Any = None

    def client(self, service: str, **kwargs: Any) -> Any:
        """A client with the local cloud's administrator credentials (the test's own view of AWS)."""
        return self.cloud.session().client(service, **kwargs)

    @property
    def lambda_client(self) -> Any:
        if self._lambda is None:
            self._lambda = self.client("lambda", config=INVOKE_CONFIG)
        return self._lambda

    def invoke(
        self, function_name: str, event: Any = None, *, raw: bytes | None = None, client_context: Any = None
    ) -> Invoked:
        """A synchronous ``lambda.invoke`` with the log tail, as any caller of the function makes it."""
        payload = raw if raw is not None else json.dumps(event if event is not None else {}).encode("utf-8")
        extra = {}
        if client_context is not None:
            extra["ClientContext"] = base64.b64encode(json.dumps(client_context).encode("utf-8")).decode(
                "ascii"
            )
        response = self.lambda_client.invoke(
            FunctionName=function_name, Payload=payload, LogType="Tail", **extra
        )
        return Invoked(
            status=response["StatusCode"],
            function_error=response.get("FunctionError"),
            payload=response["Payload"].read(),
            log=base64.b64decode(response.get("LogResult") or b"").decode("utf-8", "replace"),
        )

    # --- What the helper stack holds ------------------------------------------------------------------
    def session_item(self, session_id: str) -> dict[str, Any] | None:
        return (
            self.client("dynamodb")
            .get_item(
                TableName=self.tables["PLLDBSessions"],
                Key={protocol.A_SESSION_ID: {"S": session_id}},
                ConsistentRead=True,
            )
            .get("Item")
        )

    def wait_for_session(
        self, session_id: str, condition: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """The session item, once ``condition`` holds for it."""
        return wait_until(
            lambda: (item := self.session_item(session_id)) is not None and condition(item) and item,
            f"session {session_id} to change",
        )

    def invocation_item(self, caller: str, delivery_id: str) -> dict[str, Any] | None:
        return (
            self.client("dynamodb")
            .get_item(
                TableName=self.helper.invocations_table_name,
                Key={protocol.A_CALLER: {"S": caller}, protocol.A_DELIVERY_ID: {"S": delivery_id}},
                ConsistentRead=True,
            )
            .get("Item")
        )

    def items_of_request(self, request_id: str) -> list[dict[str, Any]]:
        """Every invocation item of one Lambda request id (a test may not know its key)."""
        return [
            item
            for item in self.scan(self.helper.invocations_table_name)
            if item[protocol.A_REQUEST_ID]["S"] == request_id
        ]

    def scan(self, table: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in (
            self.client("dynamodb").get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
        ):
            items.extend(page["Items"])
        return items

    def payload_objects(self) -> dict[str, bytes]:
        s3 = self.client("s3")
        bucket = self.helper.payload_bucket_name
        objects = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for entry in page.get("Contents", []):
                objects[entry["Key"]] = s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
        return objects

    def environment_log(self, function_name: str, stream_name: str | None = None) -> str:
        """Everything the function (one execution environment of it) wrote to CloudWatch Logs, in order."""
        logs = self.client("logs")
        configuration = self.client("lambda").get_function_configuration(FunctionName=function_name)
        group = (configuration.get("LoggingConfig") or {}).get("LogGroup") or f"/aws/lambda/{function_name}"
        arguments: dict[str, Any] = {"logGroupName": group}
        if stream_name is not None:
            arguments["logStreamNames"] = [stream_name]
        lines = []
        for page in logs.get_paginator("filter_log_events").paginate(**arguments):
            lines.extend(event["message"] for event in page["events"])
        return "\n".join(lines)

    def code_zip(self) -> bytes:
        """The application's src/ folder as a deployment package."""
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in sorted((self.app.directory / "src").rglob("*.py")):
                bundle.write(path, path.relative_to(self.app.directory / "src").as_posix())
        return archive.getvalue()

    def normalized_environment(self, environ: dict[str, str]) -> dict[str, str]:
        """A function's environment with what differs from one execution environment to the next left
        out, and the local cloud's stand-ins for Lambda's fixed paths (/opt, /var/task, /var/runtime)
        named as Lambda names them."""
        work = re.escape(str(self.cloud.work_dir / "lambda"))
        text = json.dumps(environ)
        text = re.sub(work + r"/artifacts/opt/[0-9A-Za-z-]+", "/opt", text)
        text = re.sub(work + r"/artifacts/code/[0-9a-f]+", "/var/task", text)
        text = re.sub(work + r"/runtimes/[0-9a-f]+", "/var/runtime", text)
        normalized: dict[str, str] = json.loads(text)
        for name in (*PER_ENVIRONMENT_VARIABLES, *protocol.CREDENTIAL_VARIABLES):
            normalized.pop(name, None)
        return normalized

    def caller_of(self, function_name: str) -> str:
        """The layer's identity for a function: its role's unique id and its name (``aws:userid``)."""
        role_arn = self.client("lambda").get_function_configuration(FunctionName=function_name)["Role"]
        role_id = self.client("iam").get_role(RoleName=role_arn.rsplit("/", 1)[-1])["Role"]["RoleId"]
        return f"{role_id}:{function_name}"


# --- Lambda invocations as the local cloud runs them ---------------------------------------------------------
@dataclass(frozen=True)
class LambdaCall:
    """One invocation the local cloud's Lambda ran (the test's CloudTrail of data events)."""

    started: int  # sequence numbers, shared by starts and ends, so calls can be ordered
    ended: int
    function_name: str
    payload: bytes
    result: bytes

    def request(self) -> Any:
        try:
            return json.loads(self.payload)
        except ValueError:
            return None

    def answer(self) -> Any:
        try:
            return json.loads(self.result)
        except ValueError:
            return None


class LambdaCalls:
    """Records every invocation of the local cloud's Lambda service while installed."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager
        self._original = manager.invoke_function
        self._changed = threading.Condition()
        self._sequence = 0
        self._stalls: list[tuple[Callable[[str, Any], bool], threading.Event]] = []
        self.calls: list[LambdaCall] = []
        self.stalled: list[tuple[int, str, Any]] = []  # (sequence, function name, request) held by a stall

    def install(self) -> LambdaCalls:
        def recording(fn: Any, payload: bytes, *args: Any, **kwargs: Any) -> Any:
            started = self._next()
            self._hold_if_stalled(started, fn.function_name, payload)
            result = self._original(fn, payload, *args, **kwargs)
            call = LambdaCall(started, self._next(), fn.function_name, bytes(payload), bytes(result.payload))
            with self._changed:
                self.calls.append(call)
                self._changed.notify_all()
            return result

        self._manager.invoke_function = recording
        return self

    def uninstall(self) -> None:
        self._manager.__dict__.pop("invoke_function", None)
        with self._changed:
            for _, release in self._stalls:
                release.set()

    def stall(self, predicate: Callable[[str, Any], bool]) -> threading.Event:
        """Hold every invocation (function name, parsed request) that matches before it runs, until the
        returned event is set: Lambda being slow to answer, for as long as the test says."""
        release = threading.Event()
        with self._changed:
            self._stalls.append((predicate, release))
        return release

    def _hold_if_stalled(self, sequence: int, function_name: str, payload: bytes) -> None:
        try:
            request = json.loads(payload)
        except ValueError:
            request = None
        with self._changed:
            holds = [release for predicate, release in self._stalls if predicate(function_name, request)]
            if holds:
                self.stalled.append((sequence, function_name, request))
                self._changed.notify_all()
        for release in holds:
            release.wait(WAIT_GUARD_SECONDS)

    def _next(self) -> int:
        with self._changed:
            self._sequence += 1
            return self._sequence

    def mark(self) -> int:
        """A point in the sequence: calls that start after it started after this moment."""
        return self._next()

    def wait_for(self, predicate: Callable[[LambdaCall], bool], what: str) -> LambdaCall:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((c for c in self.calls if predicate(c)), None), WAIT_GUARD_SECONDS
            )
        if not found:
            raise AssertionError(f"gave up waiting for {what}")
        return found


# --- The scripted debugger --------------------------------------------------------------------------------
Script = Callable[["Invoke"], None]


class Invoke:
    """One ``invoke`` message received by the scripted debugger, and the ways to answer it."""

    def __init__(self, debugger: ScriptedDebugger, message: dict[str, Any]) -> None:
        self.debugger = debugger
        self.message = message
        self.caller: str = message["caller"]
        self.delivery_id: str = message["deliveryId"]
        self.request_id: str = message["requestId"]
        self._event: bytes | None = None
        self._ack_sent: int | None = None

    @property
    def reference(self) -> dict[str, str]:
        return protocol.reference(self.caller, self.delivery_id)

    def event_bytes(self) -> bytes:
        """The event: inline, or downloaded from its presigned URL and checked against its digest."""
        if self._event is None:
            if "event" in self.message:
                self._event = self.message["event"].encode("utf-8")
            else:
                with urllib.request.urlopen(self.message["eventUrl"], timeout=60) as response:
                    body = response.read()
                assert hashlib.sha256(body).hexdigest() == self.message["eventSha256"]
                assert len(body) == self.message["eventSize"]
                self._event = body
        return self._event

    def event(self) -> Any:
        return json.loads(self.event_bytes())

    def item(self) -> dict[str, Any] | None:
        return self.debugger.bench.invocation_item(self.caller, self.delivery_id)

    def ack(self, wait: bool = True) -> None:
        """Acknowledge; unless told not to, wait until the helper stack has recorded it (or refused it),
        so that an answer sent next cannot overtake it."""
        self._ack_sent = self.debugger.send(protocol.ack_message(self.caller, self.delivery_id))
        if wait:
            self.wait_acked()

    def wait_acked(self) -> None:
        start = self._ack_sent
        assert start is not None, "no ack was sent"
        wait_until(
            lambda: (
                protocol.A_ACKED_AT in (self.item() or {}) or self.debugger.reply_to(self, start, ("error",))
            ),
            f"the ack of {self.request_id} to be stored",
        )

    def answer(self, payload: str) -> dict[str, Any]:
        """The handler's result as JSON text, inline; the helper stack's reply."""
        start = self.debugger.send(protocol.result_message(self.caller, self.delivery_id, payload))
        return self.debugger.wait_reply(self, start, ("stored", "error"))

    def fail(self, error: dict[str, Any]) -> dict[str, Any]:
        start = self.debugger.send(protocol.failure_message(self.caller, self.delivery_id, error))
        return self.debugger.wait_reply(self, start, ("stored", "error"))

    def answer_by_upload(self, body: bytes, announced_sha256: str | None = None) -> dict[str, Any]:
        """A result too large for a message: upload, PUT to the presigned URL, then the response."""
        start = self.debugger.send(protocol.upload_message(self.caller, self.delivery_id, len(body)))
        reply = self.debugger.wait_reply(self, start, ("uploadUrl", "error"))
        if reply["type"] != protocol.MSG_UPLOAD_URL:
            return reply
        status, text = http_put(reply["url"], body)
        assert status == 200, text
        digest = announced_sha256 or hashlib.sha256(body).hexdigest()
        start = self.debugger.send(
            protocol.result_object_message(self.caller, self.delivery_id, digest, len(body))
        )
        return self.debugger.wait_reply(self, start, ("stored", "error"))


def http_put(url: str, body: bytes) -> tuple[int, bytes]:
    """PUT to a presigned URL with no Content-Type: the URL was signed without one (urllib would add
    ``application/x-www-form-urlencoded``, which a SigV2 signature covers and S3 then refuses)."""
    parts = urllib.parse.urlsplit(url)
    factory = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = factory(parts.netloc, timeout=120)
    try:
        connection.request(
            "PUT", f"{parts.path}?{parts.query}", body=body, headers={"Content-Length": str(len(body))}
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def echo_script(invoke: Invoke) -> None:
    """Answer with the event, as a handler that returns its event would."""
    invoke.answer(json.dumps({"local": invoke.event()}))


def holding_script(invoke: Invoke) -> None:
    """Receive only: the test answers (or not) from its own thread."""


def acking_script(invoke: Invoke) -> None:
    """Acknowledge at once, as plldb does when a run takes a while; the test answers later."""
    invoke.ack()


@dataclass
class ScriptedDebugger:
    """``plldb attach`` reduced to its protocol: connect, open, instrument, answer, restore, close."""

    bench: LayerBench
    session: boto3.Session
    script: Script = echo_script
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    session_key: str = field(default_factory=protocol.new_secret)
    seed: str = field(default_factory=protocol.new_secret)
    messages: list[dict[str, Any]] = field(default_factory=list)  # authenticated, in arrival order
    unauthenticated: list[Any] = field(default_factory=list)  # every message dropped for its MAC
    invokes: list[Invoke] = field(default_factory=list)
    script_errors: list[BaseException] = field(default_factory=list)
    instrumented: list[FunctionRef] = field(default_factory=list)
    opened: dict[str, Any] | None = None
    closed: bool = False
    reconnects: int = 0
    _socket: ClientConnection | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _send_lock: threading.Lock = field(default_factory=threading.Lock)
    _key_sent: bool = False
    _scripts: list[threading.Thread] = field(default_factory=list)

    # --- The connection ---------------------------------------------------------------------------------
    def connect(self) -> ScriptedDebugger:
        """A first connection (``?sessionId=``), or the next reconnection of the token chain."""
        token = None
        if self.opened is not None:
            self.reconnects += 1
            token = protocol.reconnect_token(self.seed, protocol.RECONNECT_CHAIN_LENGTH - self.reconnects)
        url = session_url(connect_url(self.bench.helper.websocket_url), self.session_id, token)
        headers = sigv4_signer(self.session, self.bench.cloud.region)(url)
        websocket = connect(url, additional_headers=headers, max_size=None, open_timeout=WAIT_GUARD_SECONDS)
        self._socket = websocket
        threading.Thread(target=self._read, args=(websocket,), name="scripted-debugger", daemon=True).start()
        return self

    def disconnect(self) -> None:
        if self._socket is not None:
            self._socket.close()

    def connection_id(self) -> str:
        item = self.bench.session_item(self.session_id)
        assert item is not None
        return str(item[protocol.A_CONNECTION_ID]["S"])

    def send(self, message: dict[str, Any]) -> int:
        """Send one message (in frames within API Gateway's frame quota); the index replies come after."""
        text = protocol.encode(message)
        with self._changed:
            start = len(self.messages)
        frames = _frames(text)
        assert self._socket is not None
        with self._send_lock:
            self._socket.send(frames[0] if len(frames) == 1 else iter(frames))
        return start

    def _read(self, websocket: ClientConnection) -> None:
        try:
            for raw in websocket:
                self._receive(raw)
        except ConnectionClosed:
            pass

    def _receive(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not self._authentic(message):
            with self._changed:
                self.unauthenticated.append(raw)
            return
        invoke = Invoke(self, message) if message.get("type") == protocol.MSG_INVOKE else None
        with self._changed:
            self.messages.append(message)
            if invoke is not None:
                self.invokes.append(invoke)
            self._changed.notify_all()
        if invoke is not None:
            script = threading.Thread(target=self._run_script, args=(invoke,), name="script", daemon=True)
            with self._changed:
                self._scripts.append(script)
            script.start()

    def _authentic(self, message: dict[str, Any]) -> bool:
        """Signed with the session key; before ``open`` is answered only released/error may be unsigned."""
        if self._key_sent and protocol.verify(message, self.session_key):
            return True
        return (
            self.opened is None
            and "mac" not in message
            and message.get("type") in (protocol.MSG_RELEASED, protocol.MSG_ERROR)
        )

    def _run_script(self, invoke: Invoke) -> None:
        try:
            self.script(invoke)
        except BaseException as exc:  # reported by the fixture's teardown
            self.script_errors.append(exc)

    def wait_scripts(self) -> None:
        """Until every script started so far has finished (an invocation may end before its script does:
        the layer reads the answer from its item while the script still waits for ``stored``)."""
        with self._changed:
            scripts = list(self._scripts)
        for script in scripts:
            script.join(WAIT_GUARD_SECONDS)
            assert not script.is_alive(), "a script never finished"

    # --- Waiting for messages ----------------------------------------------------------------------------
    def wait_message(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, start: int = 0
    ) -> dict[str, Any]:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((m for m in self.messages[start:] if predicate(m)), None), WAIT_GUARD_SECONDS
            )
        if not found:
            raise AssertionError(f"gave up waiting for {what}; received {self.messages}")
        return found

    def reply_to(self, invoke: Invoke, start: int, kinds: tuple[str, ...]) -> dict[str, Any] | None:
        with self._changed:
            return next(
                (
                    m
                    for m in self.messages[start:]
                    if m.get("type") in kinds and m.get("deliveryId") == invoke.delivery_id
                ),
                None,
            )

    def wait_reply(self, invoke: Invoke, start: int, kinds: tuple[str, ...]) -> dict[str, Any]:
        return self.wait_message(
            lambda m: m.get("type") in kinds and m.get("deliveryId") == invoke.delivery_id,
            f"a {'/'.join(kinds)} reply for {invoke.request_id}",
            start,
        )

    def wait_invoke(self, index: int = 0) -> Invoke:
        """The index-th invoke received (waiting for it)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.invokes) > index, WAIT_GUARD_SECONDS)
            if not arrived:
                raise AssertionError(f"gave up waiting for invoke #{index}; received {self.messages}")
            return self.invokes[index]

    def invoke_for(self, request_id: str) -> Invoke:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((i for i in self.invokes if i.request_id == request_id), None),
                WAIT_GUARD_SECONDS,
            )
        assert found, f"no invoke for {request_id}"
        return found

    # --- The session ------------------------------------------------------------------------------------
    def open(self, stack: str) -> dict[str, Any]:
        """``open`` the session on a stack; the reply (``opened``, or ``error``)."""
        self._key_sent = True
        anchor = protocol.reconnect_token(self.seed, protocol.RECONNECT_CHAIN_LENGTH)
        start = self.send(protocol.open_message(stack, self.session_key, anchor))
        reply = self.wait_message(lambda m: m.get("type") in ("opened", "error"), "the answer to open", start)
        if reply["type"] == protocol.MSG_OPENED:
            self.opened = reply
        return reply

    def target(self, fallback: str = protocol.FALLBACK_ERROR, timeout: int = 60) -> Target:
        helper = self.bench.helper
        return Target(
            session_id=self.session_id,
            dispatcher_arn=helper.dispatcher_function_arn,
            invocations_table=helper.invocations_table_name,
            payload_bucket=helper.payload_bucket_name,
            layer_version_arn=helper.layer_version_arn,
            fallback=fallback,
            timeout=timeout,
        )

    def instrument(
        self, refs: list[FunctionRef], fallback: str = protocol.FALLBACK_ERROR, timeout: int = 60
    ) -> list[Result]:
        """Instrument with the developer's credentials, as plldb does once its session is opened."""
        clients = developer_clients(self.session, self.bench.helper)
        results = [functions.instrument(clients, ref, self.target(fallback, timeout)) for ref in refs]
        for ref, result in zip(refs, results, strict=True):
            assert result.status == functions.STATUS_OK, f"{ref.path}: {result.message}"
            self.instrumented.append(ref)
        return results

    def restore(self) -> list[Result]:
        clients = developer_clients(self.session, self.bench.helper)
        results = [functions.restore(clients, ref, self.session_id) for ref in self.instrumented]
        self.instrumented = [r.function for r in results if r.status == functions.STATUS_FAILED]
        return results

    def close_session(self) -> dict[str, Any]:
        start = self.send({"type": protocol.MSG_CLOSE})
        reply = self.wait_message(lambda m: m.get("type") == protocol.MSG_CLOSED, "closed", start)
        self.closed = True
        return reply

    def finish(self) -> None:
        """What detach does: restore, then close the session; then the connection goes."""
        try:
            failures = [r for r in self.restore() if r.status == functions.STATUS_FAILED]
            assert not failures, f"restore failed: {failures}"
            if self.opened is not None and not self.closed and self._connected():
                self.close_session()
        finally:
            self.disconnect()

    def _connected(self) -> bool:
        from websockets.protocol import State

        return self._socket is not None and self._socket.protocol.state is State.OPEN


def _frames(text: str, limit: int = protocol.WEBSOCKET_FRAME_LIMIT) -> list[str]:
    """``text`` in pieces of at most ``limit`` UTF-8 bytes, never splitting a character."""
    encoded = text.encode("utf-8")
    frames = []
    start = 0
    while start < len(encoded):
        end = min(start + limit, len(encoded))
        while end < len(encoded) and (encoded[end] & 0xC0) == 0x80:
            end -= 1
        frames.append(encoded[start:end].decode("utf-8"))
        start = end
    return frames or [""]


# The ``attach`` fixture: a session on the application, with the named functions instrumented for it.
AttachFactory = Callable[..., ScriptedDebugger]


def credentials_of(invokes: list[Invoke]) -> Iterator[str]:
    """Every credential value the debugger received."""
    for invoke in invokes:
        credentials = invoke.message.get("credentials") or {}
        yield from (str(value) for value in credentials.values() if value)
