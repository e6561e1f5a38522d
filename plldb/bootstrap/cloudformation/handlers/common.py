"""What every handler of the helper stack shares: configuration, AWS clients, JSON logging, sessions.

Handlers read their configuration from the environment the template sets and keep their boto3
clients for the life of the execution environment, so warm invocations pay no client set-up.
Standard library and boto3 only (this runs inside Lambda on Python 3.10 to 3.13).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

from plldb import lambda_common, protocol
from plldb.lambda_common import error_code, is_condition_failure, redact  # noqa: F401 - re-exported

# Variables the template sets on the helper stack's own functions.
ENV_LOG_LEVEL = "LOG_LEVEL"
ENV_SESSIONS_TABLE = "PLLDB_SESSIONS_TABLE"
ENV_CONNECTIONS_TABLE = "PLLDB_CONNECTIONS_TABLE"
ENV_LOCKS_TABLE = "PLLDB_LOCKS_TABLE"
ENV_MANAGEMENT_URL = (
    "PLLDB_WEBSOCKET_MANAGEMENT_URL"  # https://{api}.execute-api.{region}.amazonaws.com/{stage}
)
ENV_MANAGER_FUNCTION = "PLLDB_MANAGER_FUNCTION"
ENV_LAYER_VERSION_ARN = "PLLDB_LAYER_VERSION_ARN"
ENV_INSTRUMENTED_FUNCTION_POLICY_ARN = "PLLDB_INSTRUMENTED_FUNCTION_POLICY_ARN"
ENV_DISCONNECT_GRACE_SECONDS = "PLLDB_DISCONNECT_GRACE_SECONDS"
ENV_HELPER_STACK_ID = "PLLDB_HELPER_STACK_ID"

# Data-plane calls (DynamoDB, post_to_connection, S3) sit on the invocation path: fail fast, retry a little.
FAST_CLIENT_CONFIG = Config(
    connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}
)
# Control-plane calls (CloudFormation, Lambda configuration, IAM) are slower and throttle more: parallel
# workers share one client, and adaptive retries slow them all down together when Lambda's 15 requests
# per second are used up, rather than each retrying into the limit.
CONTROL_CLIENT_CONFIG = Config(
    connect_timeout=5,
    read_timeout=20,
    retries={"mode": "adaptive", "max_attempts": 8},
    max_pool_connections=32,
)

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


# --- Logging ------------------------------------------------------------------------------------------
def configure_logging(name: str, environ: Mapping[str, str] | None = None) -> logging.Logger:
    """A logger writing JSON lines to stdout at LOG_LEVEL (INFO by default)."""
    environ = os.environ if environ is None else environ
    return lambda_common.json_logger(name, (environ.get(ENV_LOG_LEVEL) or "INFO").upper())


def log(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    logger.log(level, message, extra={"fields": fields})


# --- DynamoDB values ----------------------------------------------------------------------------------
def to_attribute_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _SERIALIZER.serialize(value) for key, value in values.items()}


def from_item(item: Mapping[str, Any] | None) -> dict[str, Any] | None:
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


def now_seconds() -> int:
    return int(time.time())


def now_millis() -> int:
    return int(time.time() * 1000)


def absent_reason(session: Mapping[str, Any] | None, now: float | None = None) -> str | None:
    """Why no debugger can take an invocation of this session now, or None when one should be there."""
    now = time.time() if now is None else now
    if session is None:
        return "its debugging session no longer exists"
    status = session.get(protocol.A_STATUS)
    if status == protocol.STATUS_CLOSED:
        return "its debugging session has ended"
    if status != protocol.STATUS_ACTIVE:
        return "no debugger has opened its debugging session"
    if int(session.get(protocol.A_TTL) or 0) <= now:
        return "its debugging session has expired"
    if not session.get(protocol.A_CONNECTION_ID):
        return "its debugging session has no connection"
    return None


# --- Configuration and clients ------------------------------------------------------------------------
class Resources:
    """The helper stack's resource names and the clients to reach them, created once per environment."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ: Mapping[str, str] = dict(os.environ if environ is None else environ)
        env = self.environ
        self.region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.sessions_table = env.get(ENV_SESSIONS_TABLE, "")
        self.connections_table = env.get(ENV_CONNECTIONS_TABLE, "")
        self.locks_table = env.get(ENV_LOCKS_TABLE, "")
        self.invocations_table = env.get(protocol.ENV_INVOCATIONS_TABLE, "")
        self.payload_bucket = env.get(protocol.ENV_PAYLOAD_BUCKET, "")
        self.management_url = env.get(ENV_MANAGEMENT_URL, "")
        self.manager_function = env.get(ENV_MANAGER_FUNCTION, "")
        self.layer_version_arn = env.get(ENV_LAYER_VERSION_ARN, "")
        self.instrumented_function_policy_arn = env.get(ENV_INSTRUMENTED_FUNCTION_POLICY_ARN, "")
        self.helper_stack_id = env.get(ENV_HELPER_STACK_ID, "")
        try:
            self.disconnect_grace_seconds = float(
                env.get(ENV_DISCONNECT_GRACE_SECONDS) or protocol.DISCONNECT_GRACE_SECONDS
            )
        except ValueError:
            self.disconnect_grace_seconds = float(protocol.DISCONNECT_GRACE_SECONDS)
        self._clients: dict[str, Any] = {}
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
    def s3(self) -> Any:
        return self._client("s3", lambda: self._boto3_client("s3", FAST_CLIENT_CONFIG))

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
    def get_session(self, session_id: str) -> dict[str, Any] | None:
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
        names: dict[str, str],
        values: dict[str, Any],
        *,
        return_new: bool = False,
    ) -> dict[str, Any] | None:
        """One conditional update of a session item; None when its condition did not hold.

        Every change of a session is conditional (on its status, connection, TTL or token), and a
        failed condition is an answer, not an error: the caller decides what it means.
        """
        arguments: dict[str, Any] = {}
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
        except ClientError as exc:
            if is_condition_failure(exc):
                return None
            raise
        return from_item(response.get("Attributes")) or {}

    def close_session(
        self, session_id: str, reason: str, by: str = "", connection_id: str | None = None
    ) -> bool:
        """CLOSED with a reason, unless already closed (or no longer on ``connection_id``)."""
        names = {
            "#status": protocol.A_STATUS,
            "#reason": protocol.A_CLOSED_REASON,
            "#by": protocol.A_CLOSED_BY,
        }
        values: dict[str, Any] = {
            ":closed": {"S": protocol.STATUS_CLOSED},
            ":reason": {"S": reason},
            ":by": {"S": by or "-"},
        }
        condition = "attribute_exists(#status) AND #status <> :closed"
        if connection_id is not None:
            condition += " AND #conn = :conn"
            names["#conn"] = protocol.A_CONNECTION_ID
            values[":conn"] = {"S": connection_id}
        return (
            self.update_session(
                session_id, "SET #status = :closed, #reason = :reason, #by = :by", condition, names, values
            )
            is not None
        )

    def connection_session(self, connection_id: str) -> str | None:
        """The session a connection belongs to (a strongly consistent read of PLLDBConnections)."""
        item = self.dynamodb.get_item(
            TableName=self.connections_table,
            Key={protocol.A_CONNECTION_ID: {"S": connection_id}},
            ConsistentRead=True,
        ).get("Item")
        value = (from_item(item) or {}).get(protocol.A_SESSION_ID)
        return str(value) if value else None

    # --- Stack locks ----------------------------------------------------------------------------------------
    def get_lock(self, stack_id: str) -> dict[str, Any] | None:
        item = self.dynamodb.get_item(
            TableName=self.locks_table, Key={protocol.A_STACK_ID: {"S": stack_id}}, ConsistentRead=True
        ).get("Item")
        return from_item(item)

    def delete_lock(self, stack_id: str, session_id: str) -> None:
        """Remove ``session_id`` from the stack's lock, if it holds it (the lock goes with its last holder)."""
        from plldb.bootstrap.cloudformation.handlers import stack_locks

        stack_locks.release(self, stack_id, session_id)

    # --- Connections --------------------------------------------------------------------------------------
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

    def post_signed(self, session: Mapping[str, Any], message: Mapping[str, Any]) -> bool:
        """Post to the session's current connection, authenticated with the session's key."""
        connection_id = session.get(protocol.A_CONNECTION_ID)
        key = session.get(protocol.A_SESSION_KEY)
        if not connection_id or not key:
            return False
        return self.post(str(connection_id), protocol.sign(message, str(key)))

    def connection_alive(self, connection_id: str) -> bool:
        """GetConnection: False only when API Gateway says the connection is gone (410)."""
        try:
            self.connections.get_connection(ConnectionId=connection_id)
            return True
        except ClientError as exc:
            if error_code(exc) in ("GoneException", "NotFoundException"):
                return False
            raise

    def invoke_manager_async(self, payload: Mapping[str, Any]) -> None:
        """Hand work to the manager without waiting (InvocationType Event)."""
        self.lambda_client.invoke(
            FunctionName=self.manager_function,
            InvocationType="Event",
            Payload=json.dumps(payload).encode("utf-8"),
        )
