"""What every handler of the helper stack shares: configuration, AWS clients, JSON logging, helpers.

Handlers read their configuration from the environment the template sets and keep their boto3
clients for the life of the execution environment, so warm invocations pay no client set-up.
Standard library and boto3 only (this runs inside Lambda on Python 3.10 to 3.13).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import threading
import time
from decimal import Decimal
from typing import Any, Callable, Dict, Mapping, Optional

import boto3
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

from plldb import protocol

# Variables the template sets on the helper stack's own functions.
ENV_LOG_LEVEL = "LOG_LEVEL"
ENV_INSTRUMENTATION_TABLE = "PLLDB_INSTRUMENTATION_TABLE"
ENV_MANAGER_FUNCTION = "PLLDB_MANAGER_FUNCTION"
ENV_LAYER_VERSION_ARN = "PLLDB_LAYER_VERSION_ARN"
ENV_INSTRUMENTED_FUNCTION_POLICY_ARN = "PLLDB_INSTRUMENTED_FUNCTION_POLICY_ARN"
ENV_DISCONNECT_GRACE_SECONDS = "PLLDB_DISCONNECT_GRACE_SECONDS"
ENV_HELPER_STACK_NAME = "PLLDB_HELPER_STACK_NAME"

# Data-plane calls (DynamoDB, post_to_connection) sit on the invocation path: fail fast, retry a little.
FAST_CLIENT_CONFIG = Config(
    connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}
)
# Control-plane calls (CloudFormation, Lambda configuration, IAM) are slower and throttle more: the
# manager's parallel workers share one client, and adaptive retries slow them all down together when
# Lambda's 15 requests per second are used up, rather than each retrying into the limit.
CONTROL_CLIENT_CONFIG = Config(
    connect_timeout=5,
    read_timeout=20,
    retries={"mode": "adaptive", "max_attempts": 8},
    max_pool_connections=32,
)

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


# --- Logging ------------------------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line, so CloudWatch Logs Insights can filter on any field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: Dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the time (Lambda's log stream, or a test's capture)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(name: str, environ: Optional[Mapping[str, str]] = None) -> logging.Logger:
    """A logger writing JSON lines to stdout at LOG_LEVEL (INFO by default)."""
    environ = os.environ if environ is None else environ
    logger = logging.getLogger(name)
    level_name = (environ.get(ENV_LOG_LEVEL) or "INFO").upper()
    logger.setLevel(getattr(logging, level_name, logging.INFO))
    if not any(getattr(handler, "_plldb_json", False) for handler in logger.handlers):
        handler = StdoutHandler()
        handler.setFormatter(JsonFormatter())
        handler._plldb_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
    return logger


def log(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    logger.log(level, message, extra={"fields": fields})


def redact(secret: Optional[str]) -> str:
    """A session id is the session's shared secret: logs carry only a prefix that identifies it."""
    if not secret:
        return "-"
    return secret[:8] + "..."


# --- DynamoDB values ----------------------------------------------------------------------------------
def to_attribute_values(values: Mapping[str, Any]) -> Dict[str, Any]:
    return {key: _SERIALIZER.serialize(value) for key, value in values.items()}


def from_item(item: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """A plain dict from a DynamoDB item; integral numbers become int, binary becomes bytes."""
    if not item:
        return None
    return {key: _plain(_DESERIALIZER.deserialize(value)) for key, value in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Binary):
        return bytes(value.value)
    return value


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_condition_failure(exc: BaseException) -> bool:
    return error_code(exc) == "ConditionalCheckFailedException"


def now_seconds() -> int:
    return int(time.time())


def now_millis() -> int:
    return int(time.time() * 1000)


# --- Configuration and clients ------------------------------------------------------------------------
class Resources:
    """The helper stack's resource names and the clients to reach them, created once per environment."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        self.environ: Mapping[str, str] = dict(os.environ if environ is None else environ)
        env = self.environ
        self.region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.sessions_table = env.get(protocol.ENV_SESSIONS_TABLE, "")
        self.debugger_table = env.get(protocol.ENV_DEBUGGER_TABLE, "")
        self.instrumentation_table = env.get(ENV_INSTRUMENTATION_TABLE, "")
        self.management_url = env.get(protocol.ENV_MANAGEMENT_URL, "")
        self.debugger_role_arn = env.get(protocol.ENV_DEBUGGER_ROLE_ARN, "")
        self.manager_function = env.get(ENV_MANAGER_FUNCTION, "")
        self.layer_version_arn = env.get(ENV_LAYER_VERSION_ARN, "")
        self.instrumented_function_policy_arn = env.get(ENV_INSTRUMENTED_FUNCTION_POLICY_ARN, "")
        self.helper_stack_name = env.get(ENV_HELPER_STACK_NAME, "")
        try:
            self.disconnect_grace_seconds = float(
                env.get(ENV_DISCONNECT_GRACE_SECONDS) or protocol.DISCONNECT_GRACE_SECONDS
            )
        except ValueError:
            self.disconnect_grace_seconds = float(protocol.DISCONNECT_GRACE_SECONDS)
        self._clients: Dict[str, Any] = {}
        self._lock = threading.Lock()

    def warm_up(self, *names: str) -> Resources:
        """Create the named clients now (during init, outside any invocation's latency)."""
        for name in names:
            if name == "connections" and not self.management_url:
                continue  # outside the helper stack (tests, tooling) there may be no API to talk to
            getattr(self, name)
        return self

    def _client(self, key: str, factory: Callable[[], Any]) -> Any:
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = factory()
                    self._clients[key] = client
        return client

    def _boto3_client(self, service: str, config: Config, **kwargs: Any) -> Any:
        return boto3.session.Session().client(service, region_name=self.region, config=config, **kwargs)

    @property
    def dynamodb(self) -> Any:
        return self._client("dynamodb", lambda: self._boto3_client("dynamodb", FAST_CLIENT_CONFIG))

    @property
    def lambda_client(self) -> Any:
        return self._client("lambda", lambda: self._boto3_client("lambda", CONTROL_CLIENT_CONFIG))

    @property
    def cloudformation(self) -> Any:
        return self._client(
            "cloudformation", lambda: self._boto3_client("cloudformation", CONTROL_CLIENT_CONFIG)
        )

    @property
    def iam(self) -> Any:
        return self._client("iam", lambda: self._boto3_client("iam", CONTROL_CLIENT_CONFIG))

    @property
    def connections(self) -> Any:
        """The API Gateway management API of the helper WebSocket API (execute-api override honoured)."""
        return self._client(
            "connections",
            lambda: self._boto3_client(
                "apigatewaymanagementapi",
                FAST_CLIENT_CONFIG,
                endpoint_url=protocol.execute_api_url(self.management_url, self.environ),
            ),
        )

    # --- Sessions ---------------------------------------------------------------------------------------
    def get_session(self, session_id: str) -> Optional[Dict[str, Any]]:
        response = self.dynamodb.get_item(
            TableName=self.sessions_table,
            Key={protocol.A_SESSION_ID: {"S": session_id}},
            ConsistentRead=True,
        )
        return from_item(response.get("Item"))

    def update_session(
        self,
        session_id: str,
        update: str,
        condition: str,
        names: Dict[str, str],
        values: Dict[str, Any],
        *,
        return_new: bool = False,
    ) -> Optional[Dict[str, Any]]:
        """One conditional update of a session item; None when its condition did not hold.

        Every change of a session is conditional (on its status, connection, TTL or token), and a
        failed condition is an answer, not an error: the caller decides what it means.
        """
        arguments: Dict[str, Any] = {}
        if return_new:
            arguments["ReturnValues"] = "ALL_NEW"
        try:
            response = self.dynamodb.update_item(
                TableName=self.sessions_table,
                Key={protocol.A_SESSION_ID: {"S": session_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                **arguments,
            )
        except Exception as exc:
            if is_condition_failure(exc):
                return None
            raise
        return from_item(response.get("Attributes")) or {}

    def session_id_for_connection(self, connection_id: str) -> Optional[str]:
        """The session whose current connection this is (eventually consistent index)."""
        response = self.dynamodb.query(
            TableName=self.sessions_table,
            IndexName=protocol.CONNECTION_INDEX,
            KeyConditionExpression="#c = :c",
            ExpressionAttributeNames={"#c": protocol.A_CONNECTION_ID},
            ExpressionAttributeValues={":c": {"S": connection_id}},
        )
        for item in response.get("Items", []):
            value = from_item(item) or {}
            if value.get(protocol.A_SESSION_ID):
                return str(value[protocol.A_SESSION_ID])
        return None

    def post(self, connection_id: str, message: Mapping[str, Any]) -> bool:
        """Send one message to a connection; False when the connection is gone."""
        try:
            self.connections.post_to_connection(
                ConnectionId=connection_id, Data=protocol.encode(message).encode("utf-8")
            )
            return True
        except ClientError as exc:
            if error_code(exc) in ("GoneException", "ForbiddenException"):
                return False
            raise

    def invoke_manager_async(self, payload: Mapping[str, Any]) -> None:
        """Hand work to the manager without waiting (InvocationType Event)."""
        self.lambda_client.invoke(
            FunctionName=self.manager_function,
            InvocationType="Event",
            Payload=json.dumps(payload).encode("utf-8"),
        )


def authorizer_context(event: Mapping[str, Any]) -> Dict[str, Any]:
    """The context our authorizer attached to this connection (API Gateway passes it on every route)."""
    context = (event.get("requestContext") or {}).get("authorizer") or {}
    return dict(context) if isinstance(context, dict) else {}
