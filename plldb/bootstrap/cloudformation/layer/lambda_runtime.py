"""The debugger layer's runtime: every invocation is handed to the developer's machine and answered from there.

The wrapper starts this module instead of the Python runtime when the function carries a debugging
session (DEBUGGER_SESSION_ID and DEBUGGER_CONNECTION_ID). For each invocation it takes from the Lambda
Runtime API it records a correlation item in the PLLDBDebugger table, posts the invocation over the
session's WebSocket connection, polls the item until the local debugger's answer is stored there, and
returns that answer to Lambda as the function's result or error. All of it runs under the
PLLDBDebuggerRole, assumed once per environment. When no debugger answers, the session's fallback
decides: a clear "not attached" error, or the function's own handler run here in the cloud.
docs/protocol.md describes the messages, items, thresholds and the polling schedule.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sys
import time
from typing import Any, Dict, Iterator, List, Mapping, MutableMapping, Optional, Tuple

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

import plldb
from plldb import protocol
from plldb.bootstrap.cloudformation.layer import lambda_compat
from plldb.bootstrap.cloudformation.layer.runtime_client import Invocation, RuntimeApiClient, RuntimeApiError

LOGGER = logging.getLogger("plldb.layer")

# Error types the invoker sees when plldb, not the function, decided the outcome.
ERROR_NOT_ATTACHED = "PlldbNotAttached"
ERROR_TIMEOUT = "PlldbDebuggerTimeout"
ERROR_CONFIGURATION = "PlldbInvalidConfiguration"
ERROR_LAYER = "PlldbLayerError"
ERROR_CORRUPT_RESPONSE = "PlldbCorruptResponse"

# Polling the correlation item: the first read comes FIRST_POLL_DELAY after the post, each wait is
# POLL_BACKOFF_FACTOR times longer than the one before, and no wait exceeds MAX_POLL_DELAY. A quick
# debugger is seen within a few milliseconds; one stopped at a breakpoint costs at most 2 item reads/s.
FIRST_POLL_DELAY_SECONDS = 0.002
POLL_BACKOFF_FACTOR = 1.3
MAX_POLL_DELAY_SECONDS = 0.5

CREDENTIAL_REFRESH_MARGIN_SECONDS = 300  # assume the debugger role again this long before expiry
UNKNOWN_DEADLINE_SECONDS = 900  # Lambda always sends a deadline; this only guards a missing header
BATCH_RETRY_DELAY_SECONDS = 0.05
_BATCH_WRITE_LIMIT = 25
_BATCH_GET_LIMIT = 100

CLIENT_CONFIG = Config(
    connect_timeout=3,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 3},
    tcp_keepalive=True,
)

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_TABLE = re.compile(r"^(arn:aws[a-z-]*:dynamodb:[a-z0-9-]+:\d{12}:table/)?[A-Za-z0-9_.-]{3,255}$")
_HTTP_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_LAYER_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
)
_OWN_FILES = (os.path.abspath(__file__), os.path.abspath(lambda_compat.__file__))


def poll_delays() -> Iterator[float]:
    """The waits between reads of the correlation item (see FIRST_POLL_DELAY_SECONDS)."""
    delay = FIRST_POLL_DELAY_SECONDS
    while True:
        yield delay
        delay = min(delay * POLL_BACKOFF_FACTOR, MAX_POLL_DELAY_SECONDS)


def max_reads(wait_seconds: float) -> int:
    """The most reads one invocation makes while waiting ``wait_seconds`` for its answer.

    A read follows each wait of the schedule; one more may come when a wait is cut short at the
    ack timeout.
    """
    elapsed = 0.0
    for reads, delay in enumerate(poll_delays()):
        elapsed += delay
        if elapsed > wait_seconds:
            return reads + 1
    raise AssertionError("unreachable")


def redact(session_id: Optional[str]) -> str:
    """The session id is the session's shared secret: logs name it by a prefix only."""
    return (session_id or "-")[:8] + "..."


# --- Configuration ------------------------------------------------------------------------------------
class Settings:
    """What the manager put in the function's environment, checked once when the environment starts."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.session_id = environ.get(protocol.ENV_SESSION_ID, "")
        self.connection_id = environ.get(protocol.ENV_CONNECTION_ID, "")
        self.role_arn = environ.get(protocol.ENV_DEBUGGER_ROLE_ARN, "")
        self.sessions_table = environ.get(protocol.ENV_SESSIONS_TABLE, "")
        self.debugger_table = environ.get(protocol.ENV_DEBUGGER_TABLE, "")
        self.management_url = protocol.execute_api_url(environ.get(protocol.ENV_MANAGEMENT_URL, ""), environ)
        self.region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or ""
        self.function_name = environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.handler = environ.get("_HANDLER", "")
        self.problems = self._check(environ)

    @property
    def session_configured(self) -> bool:
        return bool(self.session_id and self.connection_id)

    def _check(self, environ: Mapping[str, str]) -> List[str]:
        problems = []
        required = (
            protocol.ENV_SESSION_ID,
            protocol.ENV_CONNECTION_ID,
            protocol.ENV_DEBUGGER_ROLE_ARN,
            protocol.ENV_SESSIONS_TABLE,
            protocol.ENV_DEBUGGER_TABLE,
            protocol.ENV_MANAGEMENT_URL,
        )
        missing = [name for name in required if not environ.get(name, "").strip()]
        if missing:
            problems.append("%s not set" % ", ".join(missing))
        if self.role_arn.strip() and not _ROLE_ARN.match(self.role_arn):
            problems.append("%s is not an IAM role ARN" % protocol.ENV_DEBUGGER_ROLE_ARN)
        for name, value in (
            (protocol.ENV_SESSIONS_TABLE, self.sessions_table),
            (protocol.ENV_DEBUGGER_TABLE, self.debugger_table),
        ):
            if value.strip() and not _TABLE.match(value):
                problems.append("%s is not a DynamoDB table name" % name)
        if environ.get(protocol.ENV_MANAGEMENT_URL, "").strip() and not _HTTP_URL.match(self.management_url):
            problems.append("%s is not an https URL" % protocol.ENV_MANAGEMENT_URL)
        if not self.region:
            problems.append("AWS_REGION is not set")
        return problems


def restore_function_environment(environ: MutableMapping[str, str]) -> None:
    """Remove plldb's instrumentation variables, so code sees the function's own environment.

    Applies to the handler run in the cloud (fallback passthrough) and to the environment sent to the
    local debugger; the function's own exec wrapper, if the manager chained one, is put back in place.
    """
    original_wrapper = environ.get(protocol.ENV_ORIGINAL_EXEC_WRAPPER)
    for name in protocol.INSTRUMENTATION_VARIABLES:
        environ.pop(name, None)
    if original_wrapper:
        environ[protocol.ENV_EXEC_WRAPPER] = original_wrapper


# --- Outcomes -----------------------------------------------------------------------------------------
class Answer:
    """What goes back to the Runtime API: a result body, or an error document."""

    __slots__ = ("body", "content_type", "error")

    def __init__(
        self,
        body: Optional[bytes],
        content_type: str = "application/json",
        error: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.error = error

    @classmethod
    def result(cls, body: bytes, content_type: str = "application/json") -> Answer:
        return cls(body, content_type)

    @classmethod
    def failure(cls, error: Dict[str, Any]) -> Answer:
        return cls(None, error=error)


def _fix_hint(stack_name: Optional[str]) -> str:
    stack = stack_name or "<stack-name>"
    return (
        "Run `plldb attach --stack-name {0}` to debug it, or `plldb detach --stack-name {0}` to remove "
        "plldb's instrumentation from the stack's functions.".format(stack)
    )


def not_attached_error(reason: str, stack_name: Optional[str], request_id: str) -> Dict[str, Any]:
    message = "plldb is not attached to this function's stack: {}. {}".format(reason, _fix_hint(stack_name))
    return lambda_compat.make_error(message, ERROR_NOT_ATTACHED, [], request_id)


def timeout_error(timeout_seconds: int, stack_name: Optional[str], request_id: str) -> Dict[str, Any]:
    message = (
        "The debugger did not answer in time: the function's timeout (about {} s) was about to end, so plldb "
        "stopped waiting {} ms before it. To stay longer at a breakpoint, attach with a longer timeout: "
        "`plldb attach --stack-name {} --function-timeout 900`.".format(
            timeout_seconds, protocol.DEADLINE_MARGIN_MS, stack_name or "<stack-name>"
        )
    )
    return lambda_compat.make_error(message, ERROR_TIMEOUT, [], request_id)


def layer_error(text: str, request_id: str) -> Dict[str, Any]:
    return lambda_compat.make_error("plldb's debugger layer failed: " + text, ERROR_LAYER, [], request_id)


# --- The session ----------------------------------------------------------------------------------------
class SessionView:
    """The parts of the PLLDBSessions item the layer acts on, and when they were read."""

    def __init__(
        self,
        exists: bool,
        *,
        status: Optional[str] = None,
        connection_id: Optional[str] = None,
        fallback: str = protocol.FALLBACK_ERROR,
        stack_name: Optional[str] = None,
        expires_at: Optional[int] = None,
        read_at: float = 0.0,
    ) -> None:
        self.exists = exists
        self.status = status
        self.connection_id = connection_id
        self.fallback = fallback if fallback in protocol.FALLBACK_MODES else protocol.FALLBACK_ERROR
        self.stack_name = stack_name
        self.expires_at = expires_at
        self.read_at = read_at

    @classmethod
    def from_item(cls, item: Optional[Mapping[str, Any]], read_at: float) -> SessionView:
        if not item:
            return cls(False, read_at=read_at)

        def text(name: str) -> Optional[str]:
            value = item.get(name)
            return value.get("S") if isinstance(value, dict) else None

        ttl = item.get(protocol.A_TTL, {}).get("N")
        return cls(
            True,
            status=text(protocol.A_STATUS),
            connection_id=text(protocol.A_CONNECTION_ID),
            fallback=text(protocol.A_FALLBACK) or protocol.FALLBACK_ERROR,
            stack_name=text(protocol.A_STACK_NAME),
            expires_at=int(float(ttl)) if ttl else None,
            read_at=read_at,
        )

    def absent_reason(self, now: float) -> Optional[str]:
        """Why no debugger can take an invocation now, or None when one should be there."""
        if not self.exists:
            return "its debugging session no longer exists"
        if self.status == protocol.STATUS_CLOSED:
            return "its debugging session has ended"
        if self.status != protocol.STATUS_ACTIVE:
            return "no debugger has connected to its debugging session"
        if self.expires_at is not None and self.expires_at < now:
            return "its debugging session has expired"
        if not self.connection_id:
            return "its debugging session has no WebSocket connection"
        return None


# --- AWS access under the debugger role ---------------------------------------------------------------
class DebuggerRole:
    """Clients acting as PLLDBDebuggerRole: assumed once, reused until shortly before the credentials expire.

    One botocore session serves every client, so service models load once per environment and a
    credential refresh only builds new clients. botocore rather than boto3: the same clients, and a
    quicker cold start.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._botocore = botocore.session.Session()
        self._sts: Any = None
        self._dynamodb: Any = None
        self._management: Any = None
        self._expires_at = 0.0

    def clients(self) -> Tuple[Any, Any]:
        if self._dynamodb is None or time.time() > self._expires_at - CREDENTIAL_REFRESH_MARGIN_SECONDS:
            self._assume()
        return self._dynamodb, self._management

    def _assume(self) -> None:
        region = self._settings.region
        if self._sts is None:
            # Signed with the execution role's credentials, from the environment.
            self._sts = self._botocore.create_client("sts", region_name=region, config=CLIENT_CONFIG)
        session_name = "plldb-" + re.sub(r"[^\w+=,.@-]", "-", self._settings.function_name or "layer")
        credentials = self._sts.assume_role(
            RoleArn=self._settings.role_arn, RoleSessionName=session_name[:64]
        )["Credentials"]
        keys = {
            "aws_access_key_id": credentials["AccessKeyId"],
            "aws_secret_access_key": credentials["SecretAccessKey"],
            "aws_session_token": credentials["SessionToken"],
        }
        self._dynamodb = self._botocore.create_client(
            "dynamodb", region_name=region, config=CLIENT_CONFIG, **keys
        )
        self._management = self._botocore.create_client(
            "apigatewaymanagementapi",
            region_name=region,
            endpoint_url=self._settings.management_url,
            config=CLIENT_CONFIG,
            **keys,
        )
        expiration = credentials["Expiration"]
        if isinstance(expiration, datetime.datetime):
            self._expires_at = expiration.timestamp()
        else:
            self._expires_at = time.time() + 3600


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


# --- The function's own handler, for fallback passthrough -------------------------------------------------
class CloudHandler:
    """Runs the function's real handler here, exactly as the Python runtime would (module kept warm)."""

    def __init__(self, handler_name: str) -> None:
        self._handler_name = handler_name
        self._handler: Any = None

    def run(self, invocation: Invocation) -> Answer:
        if self._handler is None:
            try:
                self._handler = lambda_compat.load_handler(self._handler_name)
            except Exception as exc:
                # The runtime would fail its init with this error; the next invocation tries again,
                # as Lambda would start a new environment.
                if isinstance(exc, lambda_compat.FaultException):
                    error = lambda_compat.make_error(exc.msg, exc.exception_type, exc.trace)
                else:
                    trace = lambda_compat.user_stack_trace(exc.__traceback__, _OWN_FILES)
                    error = lambda_compat.make_error(str(exc), type(exc).__name__, trace)
                logging.warning(lambda_compat.UNHANDLED_EXCEPTION_WARNING)
                return Answer.failure(error)
        try:
            context = lambda_compat.create_lambda_context(
                invocation.request_id,
                invocation.client_context,
                invocation.cognito_identity,
                invocation.deadline_ms,
                invocation.invoked_function_arn,
                invocation.tenant_id,
            )
            event = lambda_compat.unmarshal_event(invocation.body, invocation.content_type)
            response = self._handler(event, context)
            body, content_type = lambda_compat.marshal_response(response)
        except Exception as exc:
            return Answer.failure(lambda_compat.error_from_exception(exc, invocation.request_id, _OWN_FILES))
        return Answer.result(body, content_type)


# --- The bridge to the local debugger ---------------------------------------------------------------------
class DebuggerBridge:
    """Hands invocations to the local debugger through the correlation table and the WebSocket API."""

    def __init__(self, settings: Settings, role: DebuggerRole, cloud_handler: CloudHandler) -> None:
        self._settings = settings
        self._role = role
        self._cloud_handler = cloud_handler
        # Until the first read, the connection the manager configured is the session's connection.
        self._session = SessionView(
            True,
            status=protocol.STATUS_ACTIVE,
            connection_id=settings.connection_id,
            read_at=time.monotonic(),
        )
        self.reads = 0  # correlation-item reads of the last invocation (reported in the log)

    def warm_up(self) -> None:
        """Assume the role and read the session before the first invocation, off the invocation's clock."""
        try:
            self._role.clients()
            self.session(fresh=True)
        except (BotoCoreError, ClientError) as exc:
            LOGGER.warning(
                "plldb: could not reach the debugging session yet (%s); will retry per invocation", exc
            )

    def session(self, fresh: bool = False) -> SessionView:
        """The session, re-read when asked or when the cached copy is older than CONNECTION_CACHE_SECONDS."""
        now = time.monotonic()
        if fresh or now - self._session.read_at >= protocol.CONNECTION_CACHE_SECONDS:
            dynamodb, _ = self._role.clients()
            item = dynamodb.get_item(
                TableName=self._settings.sessions_table,
                Key={protocol.A_SESSION_ID: {"S": self._settings.session_id}},
                ConsistentRead=True,
                ProjectionExpression="#status, #conn, #fallback, #stack, #ttl",
                ExpressionAttributeNames={
                    "#status": protocol.A_STATUS,
                    "#conn": protocol.A_CONNECTION_ID,
                    "#fallback": protocol.A_FALLBACK,
                    "#stack": protocol.A_STACK_NAME,
                    "#ttl": protocol.A_TTL,
                },
            ).get("Item")
            self._session = SessionView.from_item(item, time.monotonic())
        return self._session

    # The invocation path ---------------------------------------------------------------------------------
    def answer(self, invocation: Invocation) -> Answer:
        self.reads = 0
        session = self.session()
        reason = session.absent_reason(time.time())
        if reason is not None:
            return self._without_debugger(invocation, reason, session)
        message, chunks = self._invoke_message(invocation)
        delivery_id: Optional[str] = message["deliveryId"]
        if self._store_request(invocation, message, chunks, session.connection_id or ""):
            reason = self._post(message, session)
            if reason is not None:
                answered = self._give_up(invocation, delivery_id, protocol.RESPONSE_CODE_UNAVAILABLE)
                if answered is not None:
                    return answered
                return self._without_debugger(invocation, reason, self.session(fresh=True))
            LOGGER.info(
                "plldb: invocation sent to the local debugger (session %s)", redact(self._settings.session_id)
            )
        else:
            LOGGER.info("plldb: this request is already being answered elsewhere; waiting for that answer")
            delivery_id = None  # that round's id, learnt from the first read of the item
        return self._await_answer(invocation, delivery_id)

    def _without_debugger(self, invocation: Invocation, reason: str, session: SessionView) -> Answer:
        if session.fallback == protocol.FALLBACK_PASSTHROUGH:
            LOGGER.info(
                "plldb: no debugger (%s); running the function's own handler (fallback passthrough)", reason
            )
            return self._cloud_handler.run(invocation)
        return Answer.failure(not_attached_error(reason, session.stack_name, invocation.request_id))

    def _invoke_message(self, invocation: Invocation) -> Tuple[Dict[str, Any], Optional[List[bytes]]]:
        """The invoke message of a new round; an event too large to inline travels as chunk items.

        Each call draws a new deliveryId: Lambda may deliver the same request id again (a retry), and
        the local side must tell that round from a re-post of this one.
        """
        environ = os.environ
        credentials = None
        if environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
            credentials = {
                "accessKeyId": environ["AWS_ACCESS_KEY_ID"],
                "secretAccessKey": environ["AWS_SECRET_ACCESS_KEY"],
                "sessionToken": environ.get("AWS_SESSION_TOKEN"),
            }
        message: Dict[str, Any] = {
            "type": protocol.MSG_INVOKE,
            "v": protocol.PROTOCOL_VERSION,
            "requestId": invocation.request_id,
            "deliveryId": protocol.new_delivery_id(),
            "sessionId": self._settings.session_id,
            "handler": self._settings.handler,
            "context": {
                "functionName": environ.get("AWS_LAMBDA_FUNCTION_NAME"),
                "functionVersion": environ.get("AWS_LAMBDA_FUNCTION_VERSION"),
                "invokedFunctionArn": invocation.invoked_function_arn,
                "memoryLimitInMB": environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
                "logGroupName": environ.get("AWS_LAMBDA_LOG_GROUP_NAME"),
                "logStreamName": environ.get("AWS_LAMBDA_LOG_STREAM_NAME"),
                "deadlineMs": invocation.deadline_ms,
                "traceId": invocation.trace_id,
                "clientContext": invocation.client_context,
                "cognitoIdentity": invocation.cognito_identity,
                "tenantId": invocation.tenant_id,
            },
            "environment": protocol.without_credentials(environ),
            "credentials": credentials,
        }
        event_text = None
        try:
            event_text = invocation.body.decode("utf-8")
        except UnicodeDecodeError:
            pass
        if event_text is not None:
            message["event"] = event_text
            if protocol.message_size(message) <= protocol.INLINE_MESSAGE_LIMIT:
                return message, None
            del message["event"]
        chunks = protocol.split_payload(invocation.body)
        message["eventChunks"] = len(chunks)
        message["eventSha256"] = protocol.sha256_hex(invocation.body)
        return message, chunks

    def _store_request(
        self,
        invocation: Invocation,
        message: Dict[str, Any],
        chunks: Optional[List[bytes]],
        connection_id: str,
    ) -> bool:
        """Write the correlation item (and event chunks); False when the request is already in flight.

        A request id seen before is taken over only if it was answered (Lambda retrying an invocation):
        the item then starts this round, with this message's DeliveryId. One still waiting belongs to
        another environment, whose answer this one then shares.
        """
        dynamodb, _ = self._role.clients()
        expires = str(int(time.time()) + protocol.DEBUGGER_ITEM_TTL_SECONDS)
        request_id = invocation.request_id
        if chunks is not None:
            self._write_chunks(
                [
                    {
                        protocol.A_REQUEST_ID: {
                            "S": protocol.chunk_request_id(request_id, protocol.CHUNK_KIND_EVENT, index)
                        },
                        protocol.A_SESSION_ID: {"S": self._settings.session_id},
                        protocol.A_DATA: {"B": chunk},
                        protocol.A_TTL: {"N": expires},
                    }
                    for index, chunk in enumerate(chunks)
                ]
            )
        stored = {key: value for key, value in message.items() if key != "credentials"}
        item: Dict[str, Any] = {
            protocol.A_REQUEST_ID: {"S": request_id},
            protocol.A_SESSION_ID: {"S": self._settings.session_id},
            protocol.A_CONNECTION_ID: {"S": connection_id},
            protocol.A_DELIVERY_ID: {"S": message["deliveryId"]},
            protocol.A_REQUEST: {"S": protocol.encode(stored)},
            protocol.A_ENVIRONMENT: {
                "M": {key: {"S": value} for key, value in message["environment"].items()}
            },
            protocol.A_FUNCTION_NAME: {"S": self._settings.function_name},
            protocol.A_TTL: {"N": expires},
        }
        if chunks is not None:
            item[protocol.A_REQUEST_CHUNKS] = {"N": str(len(chunks))}
        try:
            dynamodb.put_item(
                TableName=self._settings.debugger_table,
                Item=item,
                ConditionExpression="attribute_not_exists(#rid) OR attribute_exists(#code)",
                ExpressionAttributeNames={"#rid": protocol.A_REQUEST_ID, "#code": protocol.A_RESPONSE_CODE},
            )
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def _write_chunks(self, items: List[Dict[str, Any]]) -> None:
        dynamodb, _ = self._role.clients()
        for start in range(0, len(items), _BATCH_WRITE_LIMIT):
            pending = {
                self._settings.debugger_table: [
                    {"PutRequest": {"Item": item}} for item in items[start : start + _BATCH_WRITE_LIMIT]
                ]
            }
            attempt = 0
            while pending:
                if attempt:
                    time.sleep(BATCH_RETRY_DELAY_SECONDS * attempt)
                pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
                attempt += 1

    def _post(self, message: Dict[str, Any], session: SessionView) -> Optional[str]:
        """Post the invoke message; None when delivered, else why no debugger can be reached."""
        data = protocol.encode(message).encode("utf-8")
        connection_id = session.connection_id or ""
        for attempt in (1, 2):
            _, management = self._role.clients()
            try:
                management.post_to_connection(ConnectionId=connection_id, Data=data)
                return None
            except ClientError as exc:
                if _error_code(exc) != "GoneException":
                    return "the WebSocket API refused the invocation ({})".format(exc)
            except BotoCoreError as exc:
                return "the WebSocket API could not be reached ({})".format(exc)
            if attempt == 2:
                break
            current = self.session(fresh=True)
            reason = current.absent_reason(time.time())
            if reason is not None:
                return reason
            if current.connection_id == connection_id:
                break
            connection_id = current.connection_id or ""
            LOGGER.info("plldb: the debugger reconnected; sending to its new connection")
        return "the debugger's WebSocket connection is gone"

    def _await_answer(self, invocation: Invocation, delivery_id: Optional[str]) -> Answer:
        """Poll the correlation item until an answer, the ack timeout, the session's end or the deadline.

        ``delivery_id`` is the round waited on; None when joining another environment's round, whose
        id the first read tells. Once acknowledged, the session is re-read every
        CONNECTION_CACHE_SECONDS: a debugger that died while running the invocation closes its session
        (after the disconnect grace period), and the caller should not wait for the deadline then.
        """
        started = time.monotonic()
        ack_deadline = started + protocol.ACK_TIMEOUT_SECONDS
        deadline_ms = invocation.deadline_ms or int((time.time() + UNKNOWN_DEADLINE_SECONDS) * 1000)
        acked = False
        next_session_check = started + protocol.CONNECTION_CACHE_SECONDS
        for delay in poll_delays():
            wait = min(delay, (deadline_ms - time.time() * 1000 - protocol.DEADLINE_MARGIN_MS) / 1000.0)
            if not acked:
                wait = min(wait, ack_deadline - time.monotonic())
            if wait > 0:
                time.sleep(wait)
            if deadline_ms - time.time() * 1000 <= protocol.DEADLINE_MARGIN_MS:
                answered = self._give_up(invocation, delivery_id, protocol.RESPONSE_CODE_TIMEOUT)
                if answered is not None:
                    return answered
                timeout = round((deadline_ms - invocation.received_at_ms) / 1000.0)
                return Answer.failure(timeout_error(timeout, self._session.stack_name, invocation.request_id))
            item = self._read_answer(invocation.request_id)
            if item is None:
                return Answer.failure(layer_error("its correlation item disappeared", invocation.request_id))
            round_id = _delivery_of(item)
            if delivery_id is None:
                delivery_id = round_id
            elif round_id != delivery_id:
                return Answer.failure(
                    layer_error(
                        "a newer delivery of this request replaced the one awaited", invocation.request_id
                    )
                )
            if protocol.A_RESPONSE_CODE in item:
                LOGGER.info(
                    "plldb: answered with %s after %d ms (%d reads)",
                    item[protocol.A_RESPONSE_CODE].get("N"),
                    (time.monotonic() - started) * 1000,
                    self.reads,
                )
                return self._answer_from_item(invocation, item)
            if not acked and protocol.A_ACKED_AT in item:
                acked = True
            if acked and time.monotonic() >= next_session_check:
                next_session_check = time.monotonic() + protocol.CONNECTION_CACHE_SECONDS
                ended = self._session_end_reason()
                if ended is not None:
                    return self._abandon_acknowledged(invocation, delivery_id, ended)
            if not acked and time.monotonic() >= ack_deadline:
                answered = self._give_up(invocation, delivery_id, protocol.RESPONSE_CODE_UNAVAILABLE)
                if answered is not None:
                    return answered
                reason = (
                    "the debugger did not acknowledge the invocation within %g s"
                    % protocol.ACK_TIMEOUT_SECONDS
                )
                return self._without_debugger(invocation, reason, self.session(fresh=True))
        raise AssertionError("unreachable")

    def _session_end_reason(self) -> Optional[str]:
        """Why the session can no longer answer an acknowledged invocation, or None while it can.

        A changed ConnectionId is fine: a reconnected debugger sends its answer again. A failed read
        changes nothing; the next check or the deadline still ends the wait.
        """
        try:
            session = self.session(fresh=True)
        except (BotoCoreError, ClientError) as exc:
            LOGGER.warning("plldb: could not re-read the debugging session (%s); still waiting", exc)
            return None
        return session.absent_reason(time.time())

    def _abandon_acknowledged(
        self, invocation: Invocation, delivery_id: Optional[str], reason: str
    ) -> Answer:
        """Stop waiting for a debugger whose session ended after it acknowledged the invocation.

        The answer is PlldbNotAttached whatever the fallback: the handler has already run, at least in
        part, on the developer's machine, and running it again here could repeat its side effects.
        """
        answered = self._give_up(invocation, delivery_id, protocol.RESPONSE_CODE_UNAVAILABLE)
        if answered is not None:
            return answered
        LOGGER.info("plldb: the debugging session ended before the debugger answered (%s)", reason)
        return Answer.failure(not_attached_error(reason, self._session.stack_name, invocation.request_id))

    def _read_answer(self, request_id: str) -> Optional[Dict[str, Any]]:
        dynamodb, _ = self._role.clients()
        self.reads += 1
        return dynamodb.get_item(  # type: ignore[no-any-return]
            TableName=self._settings.debugger_table,
            Key={protocol.A_REQUEST_ID: {"S": request_id}},
            ConsistentRead=True,
            ProjectionExpression="#rid, #did, #code, #response, #error, #chunks, #sha, #acked",
            ExpressionAttributeNames={
                "#rid": protocol.A_REQUEST_ID,
                "#did": protocol.A_DELIVERY_ID,
                "#code": protocol.A_RESPONSE_CODE,
                "#response": protocol.A_RESPONSE,
                "#error": protocol.A_ERROR,
                "#chunks": protocol.A_RESPONSE_CHUNKS,
                "#sha": protocol.A_RESPONSE_SHA256,
                "#acked": protocol.A_ACKED_AT,
            },
        ).get("Item")

    def _give_up(self, invocation: Invocation, delivery_id: Optional[str], code: int) -> Optional[Answer]:
        """Mark this round 503/504 so any later answer is refused; the answer instead if one just landed.

        Only the round waited on is marked (``delivery_id``; any unanswered round when still unknown).
        """
        dynamodb, _ = self._role.clients()
        condition = "attribute_exists(#rid) AND attribute_not_exists(#code)"
        names = {"#rid": protocol.A_REQUEST_ID, "#code": protocol.A_RESPONSE_CODE}
        values: Dict[str, Any] = {":code": {"N": str(code)}}
        if delivery_id is not None:
            condition += " AND #did = :did"
            names["#did"] = protocol.A_DELIVERY_ID
            values[":did"] = {"S": delivery_id}
        try:
            dynamodb.update_item(
                TableName=self._settings.debugger_table,
                Key={protocol.A_REQUEST_ID: {"S": invocation.request_id}},
                UpdateExpression="SET #code = :code",
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise
            item = self._read_answer(invocation.request_id)
            same_round = item is not None and (delivery_id is None or _delivery_of(item) == delivery_id)
            if item is not None and same_round and protocol.A_RESPONSE_CODE in item:
                return self._answer_from_item(invocation, item)
        return None

    def _answer_from_item(self, invocation: Invocation, item: Mapping[str, Any]) -> Answer:
        request_id = invocation.request_id
        code = int(item[protocol.A_RESPONSE_CODE]["N"])
        if code == protocol.RESPONSE_CODE_OK:
            if protocol.A_RESPONSE in item:
                return Answer.result(item[protocol.A_RESPONSE]["S"].encode("utf-8"))
            if protocol.A_RESPONSE_CHUNKS in item and protocol.A_RESPONSE_SHA256 in item:
                count = int(item[protocol.A_RESPONSE_CHUNKS]["N"])
                digest = item[protocol.A_RESPONSE_SHA256]["S"]
                body = self._read_response_chunks(request_id, _delivery_of(item), count)
                if body is None or protocol.sha256_hex(body) != digest:
                    problem = "missing chunks" if body is None else "a SHA-256 digest that does not match"
                    message = "The debugger's response arrived with {} ({} chunks expected).".format(
                        problem, count
                    )
                    return Answer.failure(
                        lambda_compat.make_error(message, ERROR_CORRUPT_RESPONSE, [], request_id)
                    )
                return Answer.result(body)
            return Answer.failure(layer_error("the debugger's answer has no payload", request_id))
        if code == protocol.RESPONSE_CODE_ERROR:
            return Answer.failure(_local_error(item.get(protocol.A_ERROR, {}).get("S"), request_id))
        if code == protocol.RESPONSE_CODE_TIMEOUT:
            timeout = round((invocation.deadline_ms - invocation.received_at_ms) / 1000.0)
            return Answer.failure(timeout_error(timeout, self._session.stack_name, request_id))
        if code == protocol.RESPONSE_CODE_UNAVAILABLE:
            if protocol.A_ACKED_AT in item:
                reason = "its debugging session ended before the debugger answered"
            else:
                reason = "the debugger did not acknowledge the invocation in time"
            return Answer.failure(not_attached_error(reason, self._session.stack_name, request_id))
        return Answer.failure(layer_error("unknown ResponseCode %d" % code, request_id))

    def _read_response_chunks(
        self, request_id: str, delivery_id: Optional[str], count: int
    ) -> Optional[bytes]:
        if not 1 <= count <= protocol.max_chunks() or delivery_id is None:
            return None
        dynamodb, _ = self._role.clients()
        keys = [
            protocol.chunk_request_id(request_id, protocol.CHUNK_KIND_RESPONSE, i, delivery_id)
            for i in range(count)
        ]
        parts: Dict[str, bytes] = {}
        for start in range(0, len(keys), _BATCH_GET_LIMIT):
            pending: Dict[str, Any] = {
                self._settings.debugger_table: {
                    "Keys": [
                        {protocol.A_REQUEST_ID: {"S": key}} for key in keys[start : start + _BATCH_GET_LIMIT]
                    ],
                    "ConsistentRead": True,
                }
            }
            attempt = 0
            while pending:
                if attempt:
                    time.sleep(BATCH_RETRY_DELAY_SECONDS * attempt)
                response = dynamodb.batch_get_item(RequestItems=pending)
                for item in response.get("Responses", {}).get(self._settings.debugger_table, []):
                    data = item.get(protocol.A_DATA, {}).get("B")
                    if data is not None:
                        parts[item[protocol.A_REQUEST_ID]["S"]] = bytes(data)
                pending = response.get("UnprocessedKeys") or {}
                attempt += 1
        if len(parts) != count:
            return None
        return b"".join(parts[key] for key in keys)


def _delivery_of(item: Mapping[str, Any]) -> Optional[str]:
    """The round a correlation item belongs to (its DeliveryId)."""
    value = item.get(protocol.A_DELIVERY_ID)
    return value.get("S") if isinstance(value, dict) else None


def _local_error(error_json: Optional[str], request_id: str) -> Dict[str, Any]:
    """The local exception as awslambdaric reports it, with this invocation's request id."""
    try:
        error = json.loads(error_json or "")
    except ValueError:
        error = None
    if not isinstance(error, dict):
        return layer_error("the debugger's error answer is not a JSON object", request_id)
    trace = error.get("stackTrace")
    return lambda_compat.make_error(
        error.get("errorMessage"),
        error.get("errorType"),
        trace if isinstance(trace, list) else [],
        request_id,
    )


# --- The runtime loop -----------------------------------------------------------------------------------
class CurrentRequest:
    """The invocation being handled, for the request id in log lines."""

    def __init__(self) -> None:
        self.request_id = ""
        self.tenant_id: Optional[str] = None

    def get(self) -> Tuple[str, Optional[str]]:
        return self.request_id, self.tenant_id


def deliver(runtime: RuntimeApiClient, invocation: Invocation, answer: Answer) -> None:
    """Hand the answer to the Runtime API; the error is logged as the Python runtime logs it."""
    if answer.error is None and answer.body is not None:
        try:
            runtime.post_response(invocation.request_id, answer.body, answer.content_type)
            return
        except RuntimeApiError as exc:
            answer = Answer.failure(layer_error(str(exc), invocation.request_id))
    error = answer.error or layer_error("no answer", invocation.request_id)
    lambda_compat.log_error(error)
    try:
        runtime.post_error(invocation.request_id, error)
    except RuntimeApiError as exc:
        LOGGER.error("plldb: the Runtime API refused the error report: %s", exc)


def serve(runtime: RuntimeApiClient, bridge: DebuggerBridge, current: CurrentRequest) -> None:
    """The runtime loop: one invocation at a time, for the life of the environment."""
    while True:
        invocation = runtime.next_invocation()
        current.request_id, current.tenant_id = invocation.request_id, invocation.tenant_id
        if invocation.trace_id is not None:
            os.environ["_X_AMZN_TRACE_ID"] = invocation.trace_id
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        try:
            answer = bridge.answer(invocation)
        except Exception as exc:
            # One failed invocation (throttling, a network error, ...) must not end the environment.
            answer = Answer.failure(layer_error("%s: %s" % (type(exc).__name__, exc), invocation.request_id))
        deliver(runtime, invocation, answer)


def _hide_layer_from_handler_imports() -> None:
    """Take the layer's package off the import path and out of sys.modules.

    A function may have its own module named ``plldb``; it must import that one, not the layer's.
    The layer's modules stay alive through the references this code already holds.
    """
    sys.path[:] = [entry for entry in sys.path if entry not in ("", _LAYER_ROOT)]
    for name in list(sys.modules):
        if name == "plldb" or name.startswith("plldb."):
            del sys.modules[name]
    task_root = os.environ.get("LAMBDA_TASK_ROOT")
    if task_root and task_root not in sys.path:
        sys.path.insert(0, task_root)


def main(original_command: List[str]) -> None:
    """Started by the wrapper with the runtime's original command line (kept to hand over to)."""
    settings = Settings(os.environ)
    if not settings.session_configured:
        os.execvp(original_command[0], original_command)  # noqa: S606 - the runtime's own command line
    runtime = RuntimeApiClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    current = CurrentRequest()
    lambda_compat.setup_logging(current.get)
    LOGGER.setLevel(logging.getLogger().level if os.environ.get("AWS_LAMBDA_LOG_LEVEL") else logging.INFO)
    restore_function_environment(os.environ)
    _hide_layer_from_handler_imports()
    if settings.problems:
        message = "plldb's debugger layer cannot start: {}. {}".format(
            "; ".join(settings.problems), _fix_hint(None)
        )
        error = lambda_compat.make_error(message, ERROR_CONFIGURATION, [])
        lambda_compat.log_error(error)
        runtime.post_init_error(error)
        sys.exit(1)
    LOGGER.info(
        "plldb: debugger layer %s (%s) active for session %s (function %s)",
        plldb.__version__,
        _LAYER_ROOT,
        redact(settings.session_id),
        settings.function_name,
    )
    bridge = DebuggerBridge(settings, DebuggerRole(settings), CloudHandler(settings.handler))
    bridge.warm_up()
    serve(runtime, bridge, current)
