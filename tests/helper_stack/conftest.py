"""Fixtures for the helper stack's handler tests: a moto server, the stack's tables and a capture of posts.

The handlers are called directly with realistic API Gateway events. Their tables are created from the
template's own definitions (one schema), and their post_to_connection calls reach a small HTTP server
that plays API Gateway's management API, through the product's PLLDB_EXECUTE_API_ENDPOINT mechanism.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import boto3
import pytest
from cfn_flip import load_yaml
from moto.server import ThreadedMotoServer

from plldb import protocol
from plldb.bootstrap import packaging
from plldb.bootstrap.cloudformation.handlers.common import (
    ENV_HELPER_STACK_NAME,
    ENV_INSTRUMENTATION_TABLE,
    ENV_INSTRUMENTED_FUNCTION_POLICY_ARN,
    ENV_LAYER_VERSION_ARN,
    ENV_MANAGER_FUNCTION,
    Resources,
)
from plldb.localcloud import moto_extensions

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
API_ID = "h4testapi1"
STAGE = "plldb"
MANAGEMENT_URL = f"https://{API_ID}.execute-api.{REGION}.amazonaws.com/{STAGE}"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server on an ephemeral port; boto3 in this process talks to it while the module runs."""
    moto_extensions.install()  # among others: atomic conditional writes, which the race tests rely on
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_REGION", REGION)
        patch.delenv("AWS_PROFILE", raising=False)
        patch.delenv("AWS_SESSION_TOKEN", raising=False)
        try:
            yield endpoint
        finally:
            server.stop()


@dataclass
class Posted:
    connection_id: str
    message: dict[str, Any]


@dataclass
class ManagementCapture:
    """Plays API Gateway's management API: records posts; answers 410 GoneException for gone ids."""

    server: ThreadingHTTPServer
    posts: list[Posted] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def messages(self, connection_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p.message for p in self.posts if p.connection_id == connection_id]

    def clear(self) -> None:
        with self.lock:
            self.posts.clear()


def _capture_handler(capture_ref: list[ManagementCapture]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            capture = capture_ref[0]
            prefix = f"/{API_ID}/{STAGE}/@connections/"
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if not self.path.startswith(prefix) or "Authorization" not in self.headers:
                self._reply(403, "ForbiddenException", "Forbidden")
                return
            connection_id = unquote(self.path[len(prefix) :])
            if connection_id in capture.gone:
                self._reply(410, "GoneException", "")
                return
            with capture.lock:
                capture.posts.append(Posted(connection_id, json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _reply(self, status: int, error_type: str, message: str) -> None:
            data = json.dumps({"message": message}).encode()
            self.send_response(status)
            self.send_header("x-amzn-ErrorType", error_type)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def capture() -> Iterator[ManagementCapture]:
    holder: list[ManagementCapture] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _capture_handler(holder))
    capture = ManagementCapture(server)
    holder.append(capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield capture
    finally:
        server.shutdown()
        server.server_close()


def template_resources() -> dict[str, Any]:
    return load_yaml(packaging.template_body())["Resources"]


def create_table_from_template(dynamodb: Any, logical_id: str, name: str) -> None:
    """Create a table exactly as the template declares it (keys, indexes, TTL)."""
    properties = template_resources()[logical_id]["Properties"]
    arguments: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": [dict(a) for a in properties["AttributeDefinitions"]],
        "KeySchema": [dict(k) for k in properties["KeySchema"]],
        "BillingMode": properties["BillingMode"],
    }
    if "GlobalSecondaryIndexes" in properties:
        arguments["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index["IndexName"],
                "KeySchema": [dict(k) for k in index["KeySchema"]],
                "Projection": dict(index["Projection"]),
            }
            for index in properties["GlobalSecondaryIndexes"]
        ]
    dynamodb.create_table(**arguments)
    ttl = properties.get("TimeToLiveSpecification")
    if ttl:
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": bool(ttl["Enabled"])},
        )


def layer_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("python/placeholder.py", "VALUE = 1\n")
    return buffer.getvalue()


LAMBDA_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)


@dataclass
class Helper:
    """The helper stack's moving parts, created directly (names unique per module)."""

    environ: dict[str, str]
    resources: Resources
    capture: ManagementCapture
    session: boto3.Session

    @property
    def dynamodb(self) -> Any:
        return self.session.client("dynamodb")

    def put_session(self, **attributes: Any) -> str:
        """A session item as the CLI writes it (PENDING unless told otherwise)."""
        from boto3.dynamodb.types import TypeSerializer

        session_id = attributes.pop("SessionId", str(uuid.uuid4()))
        item = {
            protocol.A_SESSION_ID: session_id,
            protocol.A_STATUS: protocol.STATUS_PENDING,
            protocol.A_STACK_NAME: "app-stack",
            protocol.A_TTL: int(time.time()) + protocol.SESSION_TTL_SECONDS,
            protocol.A_CREATED_AT: int(time.time()),
            protocol.A_OWNER: "arn:aws:iam::123456789012:user/dev on laptop",
            protocol.A_FUNCTION_TIMEOUT: 900,
            protocol.A_FALLBACK: protocol.FALLBACK_ERROR,
        }
        item.update(attributes)
        serializer = TypeSerializer()
        self.dynamodb.put_item(
            TableName=self.resources.sessions_table,
            Item={k: serializer.serialize(v) for k, v in item.items() if v is not None},
        )
        return session_id

    def session_item(self, session_id: str) -> dict[str, Any] | None:
        return self.resources.get_session(session_id)

    def debugger_item(self, request_id: str) -> dict[str, Any] | None:
        from plldb.bootstrap.cloudformation.handlers.common import from_item

        return from_item(
            self.dynamodb.get_item(
                TableName=self.resources.debugger_table,
                Key={protocol.A_REQUEST_ID: {"S": request_id}},
                ConsistentRead=True,
            ).get("Item")
        )


@pytest.fixture(scope="module")
def helper(moto_endpoint: str, capture: ManagementCapture) -> Helper:
    session = boto3.Session(region_name=REGION)
    suffix = uuid.uuid4().hex[:8]
    dynamodb = session.client("dynamodb")
    names = {
        "PLLDBSessions": f"sessions-{suffix}",
        "PLLDBDebugger": f"debugger-{suffix}",
        "PLLDBInstrumentation": f"instrumentation-{suffix}",
    }
    for logical_id, name in names.items():
        create_table_from_template(dynamodb, logical_id, name)
    iam = session.client("iam")
    debugger_role = iam.create_role(
        RoleName=f"debugger-{suffix}",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    policy_arn = iam.create_policy(
        PolicyName=f"instrumented-{suffix}",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": debugger_role}],
            }
        ),
    )["Policy"]["Arn"]
    layer_arn = session.client("lambda").publish_layer_version(
        LayerName=f"helper-{suffix}-debugger", Content={"ZipFile": layer_zip()}
    )["LayerVersionArn"]
    environ = {
        "AWS_REGION": REGION,
        "LOG_LEVEL": "DEBUG",
        protocol.ENV_SESSIONS_TABLE: names["PLLDBSessions"],
        protocol.ENV_DEBUGGER_TABLE: names["PLLDBDebugger"],
        ENV_INSTRUMENTATION_TABLE: names["PLLDBInstrumentation"],
        protocol.ENV_MANAGEMENT_URL: MANAGEMENT_URL,
        protocol.ENV_DEBUGGER_ROLE_ARN: debugger_role,
        ENV_MANAGER_FUNCTION: f"manager-{suffix}",
        ENV_LAYER_VERSION_ARN: layer_arn,
        ENV_INSTRUMENTED_FUNCTION_POLICY_ARN: policy_arn,
        ENV_HELPER_STACK_NAME: f"plldb-{suffix}",
        protocol.EXECUTE_API_ENDPOINT_VARIABLE: capture.endpoint,
    }
    return Helper(environ=environ, resources=Resources(environ), capture=capture, session=session)
