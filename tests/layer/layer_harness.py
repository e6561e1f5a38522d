"""A small cloud for the debugger layer's tests, built from the local cloud's real pieces.

* moto in server mode (DynamoDB, STS, IAM, API Gateway v2), reached over HTTP;
* the local cloud's WebSocket gateway, whose ``$default`` route runs the helper stack's real
  ``$default`` handler (in this process, with its own boto3 clients pointed at moto);
* Lambda execution environments: the local cloud's Runtime API server plus a subprocess started the
  way Lambda starts a Python function with ``AWS_LAMBDA_EXEC_WRAPPER`` set: ``wrapper python -m
  awslambdaric HANDLER``;
* a scripted debugger: a ``websockets`` client that receives invoke messages and answers as a test
  says, through the gateway and ``$default`` like plldb's local side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from plldb import protocol
from plldb.bootstrap.cloudformation.handlers.common import Resources
from plldb.localcloud import moto_extensions
from plldb.localcloud.runtime_api import Invocation, Outcome, RuntimeApi
from plldb.localcloud.websocket_gateway import WebSocketGateway

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "plldb" / "bootstrap" / "cloudformation" / "layer" / "wrapper"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
STAGE = "live"
FUNCTION_NAME = "orders-create"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{FUNCTION_NAME}"
WEBSOCKET_FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:plldb-websocket"
STACK_NAME = "orders-stack"

# The execution role's temporary credentials, as Lambda would put them in the environment. They are
# distinctive so a test can search every stored item for them.
EXECUTION_ACCESS_KEY_ID = "ASIAEXECROLE7Q2W9ZKD"
EXECUTION_SECRET_ACCESS_KEY = "exec-role-secret-" + uuid.uuid4().hex
EXECUTION_SESSION_TOKEN = "exec-role-session-token-" + uuid.uuid4().hex

FUNCTION_CODE = """
import json
import os

CALLS = {"count": 0}


def echo(event, context):
    CALLS["count"] += 1
    return {"event": event, "calls": CALLS["count"], "function": context.function_name,
            "requestId": context.aws_request_id}


def fail(event, context):
    raise ValueError("order %s is invalid" % event.get("id"))


def environment(event, context):
    return dict(os.environ)


def large(event, context):
    return {"size": len(json.dumps(event)), "blob": "r" * event["response_size"]}


def not_serialisable(event, context):
    return {"when": {1, 2}}
"""


# What the tests and the in-process $default handler sign with (20 characters, so moto can name it).
HARNESS_ACCESS_KEY_ID = "AKIAHARNESSTESTKEY01"


def _fake_session() -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=HARNESS_ACCESS_KEY_ID, aws_secret_access_key="testing", region_name=REGION
    )


class _LocalResources(Resources):
    """The $default handler's resources, with its clients pointed at this test cloud's moto server."""

    def __init__(self, environ: dict[str, str], endpoint_url: str) -> None:
        super().__init__(environ)
        self._endpoint_url = endpoint_url

    def _boto3_client(self, service: str, config: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("endpoint_url", self._endpoint_url)
        return _fake_session().client(service, config=config, **kwargs)  # type: ignore[call-overload]


class LayerCloud:
    """moto + the WebSocket gateway + the helper stack's tables, role and WebSocket API."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.sessions_table = f"PLLDBSessions-{suffix}"
        self.debugger_table = f"PLLDBDebugger-{suffix}"
        self.role_name = f"PLLDBDebuggerRole-{suffix}"
        self.role_arn = f"arn:aws:iam::{ACCOUNT_ID}:role/{self.role_name}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.gateway = WebSocketGateway(self._invoke_lambda)
        self.endpoint_url = ""
        self.execute_api_endpoint = ""
        self.api_id = ""
        self.default_route_events: list[dict[str, Any]] = []
        self._resources: _LocalResources | None = None

    def start(self) -> LayerCloud:
        moto_extensions.install()  # among others: atomic item operations, which polling relies on
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        self.gateway.start()
        self.execute_api_endpoint = f"http://127.0.0.1:{self.gateway.port}"
        self._create_tables()
        self.client("iam").create_role(
            RoleName=self.role_name,
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Principal": {"AWS": ACCOUNT_ID}, "Action": "sts:AssumeRole"}
                    ],
                }
            ),
        )
        self._create_websocket_api()
        self._resources = _LocalResources(
            {
                "AWS_REGION": REGION,
                protocol.ENV_SESSIONS_TABLE: self.sessions_table,
                protocol.ENV_DEBUGGER_TABLE: self.debugger_table,
                protocol.ENV_MANAGEMENT_URL: self.management_url,
                protocol.EXECUTE_API_ENDPOINT_VARIABLE: self.execute_api_endpoint,
            },
            self.endpoint_url,
        )
        self._resources.warm_up("dynamodb", "connections")  # as the real function's init does
        return self

    def stop(self) -> None:
        self.gateway.stop()
        self._server.stop()

    def client(self, service: str) -> Any:
        return _fake_session().client(service, endpoint_url=self.endpoint_url)  # type: ignore[call-overload]

    @property
    def management_url(self) -> str:
        return f"https://{self.api_id}.execute-api.{REGION}.amazonaws.com/{STAGE}"

    @property
    def websocket_url(self) -> str:
        return protocol.execute_api_url(
            f"wss://{self.api_id}.execute-api.{REGION}.amazonaws.com/{STAGE}",
            {protocol.EXECUTE_API_ENDPOINT_VARIABLE: self.execute_api_endpoint},
        )

    def _create_tables(self) -> None:
        dynamodb = self.client("dynamodb")
        dynamodb.create_table(
            TableName=self.debugger_table,
            KeySchema=[{"AttributeName": protocol.A_REQUEST_ID, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": protocol.A_REQUEST_ID, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.create_table(
            TableName=self.sessions_table,
            KeySchema=[{"AttributeName": protocol.A_SESSION_ID, "KeyType": "HASH"}],
            AttributeDefinitions=[
                {"AttributeName": protocol.A_SESSION_ID, "AttributeType": "S"},
                {"AttributeName": protocol.A_STACK_NAME, "AttributeType": "S"},
                {"AttributeName": protocol.A_CONNECTION_ID, "AttributeType": "S"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": protocol.STACK_INDEX,
                    "KeySchema": [{"AttributeName": protocol.A_STACK_NAME, "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                },
                {
                    "IndexName": protocol.CONNECTION_INDEX,
                    "KeySchema": [{"AttributeName": protocol.A_CONNECTION_ID, "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                },
            ],
            BillingMode="PAY_PER_REQUEST",
        )

    def _create_websocket_api(self) -> None:
        api = self.client("apigatewayv2")
        self.api_id = api.create_api(
            Name="plldb-websocket", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
        )["ApiId"]
        integration_id = api.create_integration(
            ApiId=self.api_id,
            IntegrationType="AWS_PROXY",
            IntegrationUri=(
                f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{WEBSOCKET_FUNCTION_ARN}/invocations"
            ),
        )["IntegrationId"]
        api.create_route(ApiId=self.api_id, RouteKey="$default", Target=f"integrations/{integration_id}")
        api.create_stage(ApiId=self.api_id, StageName=STAGE)

    def _invoke_lambda(self, function_arn: str, event: dict[str, Any]) -> Any:
        """The WebSocket function: its real $default handler; nothing to do on $connect/$disconnect."""
        from plldb.bootstrap.cloudformation.handlers import websocket

        assert function_arn == WEBSOCKET_FUNCTION_ARN
        assert self._resources is not None
        if event["requestContext"]["eventType"] != "MESSAGE":
            return {"statusCode": 200}
        self.default_route_events.append(event)
        return websocket.on_message(event, self._resources)

    # --- sessions and items ---------------------------------------------------------------------------
    def put_session(
        self,
        connection_id: str,
        status: str = protocol.STATUS_ACTIVE,
        fallback: str | None = None,
        expires_in: int = 3600,
        session_id: str | None = None,
    ) -> str:
        session_id = session_id or str(uuid.uuid4())
        item = {
            protocol.A_SESSION_ID: {"S": session_id},
            protocol.A_CONNECTION_ID: {"S": connection_id},
            protocol.A_STATUS: {"S": status},
            protocol.A_STACK_NAME: {"S": STACK_NAME},
            protocol.A_TTL: {"N": str(int(time.time()) + expires_in)},
        }
        if fallback is not None:
            item[protocol.A_FALLBACK] = {"S": fallback}
        self.client("dynamodb").put_item(TableName=self.sessions_table, Item=item)
        return session_id

    def debugger_item(self, key: str) -> dict[str, Any] | None:
        return (
            self.client("dynamodb")
            .get_item(
                TableName=self.debugger_table, Key={protocol.A_REQUEST_ID: {"S": key}}, ConsistentRead=True
            )
            .get("Item")
        )

    def all_items_text(self) -> str:
        """Every item of both tables, as text (for searching stored data)."""
        dynamodb = self.client("dynamodb")
        texts = []
        for table in (self.debugger_table, self.sessions_table):
            paginator = dynamodb.get_paginator("scan")
            for page in paginator.paginate(TableName=table, ConsistentRead=True):
                for item in page["Items"]:
                    texts.append(repr(item))
        return "\n".join(texts)

    def debugger(self, **kwargs: Any) -> ScriptedDebugger:
        return ScriptedDebugger(
            self.websocket_url, self.client("dynamodb"), self.debugger_table, gateway=self.gateway, **kwargs
        )

    def instrumentation(self, session_id: str, connection_id: str) -> dict[str, str]:
        """The variables plldb's manager sets on an instrumented function."""
        return {
            protocol.ENV_EXEC_WRAPPER: str(WRAPPER),
            protocol.ENV_SESSION_ID: session_id,
            protocol.ENV_CONNECTION_ID: connection_id,
            protocol.ENV_DEBUGGER_ROLE_ARN: self.role_arn,
            protocol.ENV_SESSIONS_TABLE: self.sessions_table,
            protocol.ENV_DEBUGGER_TABLE: self.debugger_table,
            protocol.ENV_MANAGEMENT_URL: self.management_url,
        }


# --- The scripted debugger -----------------------------------------------------------------------------
@dataclass
class Reply:
    """How the scripted debugger answers one invocation."""

    ack: bool = True
    payload: str | None = None  # the handler's result as JSON text
    error: dict[str, Any] | None = None  # {errorMessage, errorType, stackTrace}
    delay: float = 0.0  # seconds between the ack and the answer
    chunked: bool = False  # write the payload as chunk items and send a reference (always when large)

    @property
    def answers(self) -> bool:
        return self.payload is not None or self.error is not None


def echo_reply(message: dict[str, Any], event: Any) -> Reply:
    """Answer with the event itself, as a local run of an echo handler would."""
    return Reply(payload=json.dumps({"echo": event}))


@dataclass
class ScriptedDebugger:
    """plldb's local side as a script: a WebSocket client that acks and answers invoke messages.

    Large answers go as chunk items written to the debugger table (``dynamodb``, with the rights the
    local side has), referenced from the response message, as plldb's client does.
    """

    url: str
    dynamodb: Any
    debugger_table: str
    script: Callable[[dict[str, Any], Any], Reply] = echo_reply  # (invoke message, event) -> reply
    gateway: WebSocketGateway | None = None  # to learn the connection id, when the test owns the gateway
    invokes: list[dict[str, Any]] = field(default_factory=list)
    server_messages: list[dict[str, Any]] = field(default_factory=list)
    connection_id: str = ""
    unsent: list[str] = field(default_factory=list)
    _socket: ClientConnection | None = None
    _send_lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self) -> ScriptedDebugger:
        before = set(self.gateway.connection_ids()) if self.gateway else set()
        self._socket = connect(self.url, max_size=None, open_timeout=60)
        deadline = time.monotonic() + 5
        while self.gateway is not None and not self.connection_id:
            new = set(self.gateway.connection_ids()) - before
            if new:
                (self.connection_id,) = new
            elif time.monotonic() > deadline:
                raise AssertionError("the gateway never registered the debugger's connection")
            else:
                time.sleep(0.005)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()

    def _read(self) -> None:
        assert self._socket is not None
        for raw in self._socket:
            message = json.loads(raw)
            self.server_messages.append(message)
            if message.get("type") == protocol.MSG_INVOKE:
                self.invokes.append(message)
                worker = threading.Thread(target=self._answer, args=(message,), daemon=True)
                worker.start()

    def _send(self, message: dict[str, Any]) -> None:
        """One message, in frames API Gateway accepts (at most 32 KB each), as plldb's client sends them."""
        assert self._socket is not None
        text = protocol.encode(message)
        step = protocol.WEBSOCKET_FRAME_LIMIT // 4  # characters; at most 4 bytes each in UTF-8
        with self._send_lock:
            if len(text) <= step:
                self._socket.send(text)
            else:
                self._socket.send(text[i : i + step] for i in range(0, len(text), step))

    def event(self, message: dict[str, Any]) -> Any:
        """The invocation's event: inline, or read back from its chunk items as plldb's local side does."""
        if "event" in message:
            return json.loads(message["event"])
        data = b"".join(
            self.dynamodb.get_item(
                TableName=self.debugger_table,
                Key={
                    protocol.A_REQUEST_ID: {
                        "S": protocol.chunk_request_id(message["requestId"], protocol.CHUNK_KIND_EVENT, index)
                    }
                },
                ConsistentRead=True,
            )["Item"][protocol.A_DATA]["B"]
            for index in range(message["eventChunks"])
        )
        assert protocol.sha256_hex(data) == message["eventSha256"]
        return json.loads(data)

    def _answer(self, message: dict[str, Any]) -> None:
        try:
            self._reply(message)
        except ConnectionClosed:
            self.unsent.append(message["requestId"])  # closed by its test before a delayed answer

    def _reply(self, message: dict[str, Any]) -> None:
        reply = self.script(message, self.event(message))
        request_id, delivery_id = message["requestId"], message["deliveryId"]
        if reply.ack:
            self._send(protocol.ack_message(request_id, delivery_id))
        if reply.delay:
            time.sleep(reply.delay)
        if reply.error is not None:
            self._send(
                {
                    "type": protocol.MSG_RESPONSE,
                    "requestId": request_id,
                    "deliveryId": delivery_id,
                    "statusCode": protocol.RESPONSE_CODE_ERROR,
                    "error": reply.error,
                }
            )
        elif reply.payload is not None and (
            reply.chunked or len(reply.payload.encode("utf-8")) > protocol.INLINE_MESSAGE_LIMIT - 1024
        ):
            data = reply.payload.encode("utf-8")
            parts = protocol.split_payload(data)
            for index, part in enumerate(parts):
                self.dynamodb.put_item(
                    TableName=self.debugger_table,
                    Item={
                        protocol.A_REQUEST_ID: {
                            "S": protocol.chunk_request_id(
                                request_id, protocol.CHUNK_KIND_RESPONSE, index, delivery_id
                            )
                        },
                        protocol.A_DATA: {"B": part},
                    },
                )
            self._send(
                {
                    "type": protocol.MSG_RESPONSE,
                    "requestId": request_id,
                    "deliveryId": delivery_id,
                    "statusCode": protocol.RESPONSE_CODE_OK,
                    "payloadChunks": len(parts),
                    "payloadSha256": protocol.sha256_hex(data),
                }
            )
        elif reply.payload is not None:
            self.send_answer(message, reply.payload)

    def send_answer(self, invoke: dict[str, Any], payload: str) -> None:
        """A 200 response to the delivery ``invoke`` (also long after the layer stopped waiting for it)."""
        self._send(
            {
                "type": protocol.MSG_RESPONSE,
                "requestId": invoke["requestId"],
                "deliveryId": invoke["deliveryId"],
                "statusCode": protocol.RESPONSE_CODE_OK,
                "payload": payload,
            }
        )

    def wait_for_server_message(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in list(self.server_messages):
                if predicate(message):
                    return message
            time.sleep(0.01)
        raise AssertionError(f"no such server message; got {self.server_messages}")


# --- Lambda execution environments ------------------------------------------------------------------------
@dataclass
class InvokeResult:
    request_id: str
    payload: bytes
    error_type: str | None
    seconds: float

    def json(self) -> Any:
        return json.loads(self.payload)


class LambdaEnvironment:
    """One execution environment: the Runtime API plus the runtime process Lambda would start."""

    def __init__(
        self,
        task_root: Path,
        handler: str,
        cloud: LayerCloud,
        instrumentation: dict[str, str] | None = None,
        with_wrapper: bool = True,
        extra: dict[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.api = RuntimeApi()
        self.api.start()
        self.log_path = task_root / f"stdout-{uuid.uuid4().hex[:8]}.log"
        self.environment = function_environment(cloud, task_root, handler)
        self.environment["AWS_LAMBDA_RUNTIME_API"] = self.api.address
        if with_wrapper:
            self.environment[protocol.ENV_EXEC_WRAPPER] = str(WRAPPER)
        self.environment.update(instrumentation or {})
        self.environment.update(extra or {})
        command = [python, "-m", "awslambdaric", handler]
        if with_wrapper:
            command = [self.environment[protocol.ENV_EXEC_WRAPPER], *command]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, env=self.environment, cwd=task_root, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_until_ready(self, timeout: float = 15.0) -> None:
        """Until the runtime asks for its first invocation (Lambda's end of init)."""
        self._wait(lambda: self.api.initialized, timeout)

    def wait_for_init_error(self, timeout: float = 15.0) -> Outcome:
        self._wait(lambda: self.api.init_error is not None, timeout)
        assert self.api.init_error is not None
        return self.api.init_error

    def _wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.api.condition:
            while not predicate():
                if self.process.poll() is not None and not predicate():
                    raise AssertionError(f"the runtime exited with {self.process.returncode}:\n{self.logs()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; runtime output:\n{self.logs()}")
                self.api.condition.wait(min(left, 0.1))

    def submit(
        self,
        payload: Any,
        timeout_seconds: float = 30.0,
        client_context: str | None = None,
        request_id: str | None = None,
    ) -> Invocation:
        """Hand Lambda's next invocation to the runtime; an old ``request_id`` is Lambda retrying it."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        invocation = Invocation(
            request_id=request_id or str(uuid.uuid4()),
            payload=body,
            invoked_function_arn=FUNCTION_ARN,
            timeout_seconds=timeout_seconds,
            trace_id="Root=1-65a00000-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=0",
            client_context=client_context,
        )
        self.api.submit(invocation)
        return invocation

    def result(self, invocation: Invocation, started: float, timeout: float = 30.0) -> InvokeResult:
        self._wait(lambda: invocation.outcome is not None, timeout)
        outcome = invocation.outcome
        assert outcome is not None
        return InvokeResult(
            invocation.request_id, outcome.payload, outcome.error_type, time.monotonic() - started
        )

    def invoke(
        self,
        payload: Any,
        timeout_seconds: float = 30.0,
        client_context: str | None = None,
        request_id: str | None = None,
    ) -> InvokeResult:
        started = time.monotonic()
        invocation = self.submit(payload, timeout_seconds, client_context, request_id)
        return self.result(invocation, started, timeout=timeout_seconds + 10)

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def stop(self) -> None:
        self.api.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def function_environment(cloud: LayerCloud, task_root: Path, handler: str) -> dict[str, str]:
    """The environment Lambda gives a Python function (the parts the layer and its tests use)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "_HANDLER": handler,
        "LAMBDA_TASK_ROOT": str(task_root),
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION_NAME}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2025/01/01/[$LATEST]0123456789abcdef",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": EXECUTION_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": EXECUTION_SECRET_ACCESS_KEY,
        "AWS_SESSION_TOKEN": EXECUTION_SESSION_TOKEN,
        "AWS_ENDPOINT_URL": cloud.endpoint_url,
        protocol.EXECUTE_API_ENDPOINT_VARIABLE: cloud.execute_api_endpoint,
        "ORDERS_TABLE": "orders",
    }


def write_function(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text(FUNCTION_CODE, encoding="utf-8")
    return directory
