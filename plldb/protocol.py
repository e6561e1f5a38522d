"""The plldb wire protocol, shared by the layer, the helper stack's handlers and the local client.

Everything that more than one side must agree on lives here: message types and their fields (as
TypedDicts with one builder each), the one hostile-input-safe decoder, the message authentication of
the cloud's messages, table attribute names, environment variable names, size thresholds, timeouts,
the reconnect token chain and the one mechanism that points execute-api URLs at a local endpoint.
docs/protocol.md explains it in prose. It stays one module, longer than the others, because it is
the contract itself: split, the two sides' agreement would be spread over files that can drift apart.
Standard library only: this module is packaged into Lambda and runs on Python 3.10 to 3.13.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from typing import Any

try:  # TypedDict is only for type checkers and readers; Lambda's Pythons all have it.
    from typing import TypedDict
except ImportError:  # pragma: no cover
    TypedDict = dict  # type: ignore[assignment,misc]

PROTOCOL_VERSION = 2

# --- Limits (bytes) -----------------------------------------------------------------------------
WEBSOCKET_MESSAGE_LIMIT = 128 * 1024  # API Gateway WebSocket message payload quota
WEBSOCKET_FRAME_LIMIT = 32 * 1024  # API Gateway WebSocket frame quota; larger messages are fragmented
INLINE_MESSAGE_LIMIT = 96 * 1024  # a message above this carries its payload as an S3 object instead
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's synchronous request and response limit (6 MB)
INLINE_ITEM_LIMIT = 300 * 1024  # the most a Response/Error attribute holds (DynamoDB items stop at 400 KB)
MAX_MESSAGE_DEPTH = 8  # no message of this protocol nests deeper; anything deeper is refused unread

# --- Timing ---------------------------------------------------------------------------------------
ACK_TIMEOUT_SECONDS = 5.0  # the layer gives up ("not attached") when no ack arrives within this
DEADLINE_MARGIN_MS = 1000  # the layer answers "did not answer in time" this long before the deadline
PENDING_SESSION_TTL_SECONDS = 60  # a connected session that has not sent `open` by then is gone
SESSION_TTL_SECONDS = 3600  # an ACTIVE session lives this long past its last open, reconnect or ping
CONNECTION_ITEM_TTL_SECONDS = 3 * 3600  # API Gateway closes a connection after 2 hours
INVOCATION_ITEM_TTL_SECONDS = 3600  # invocation items (and their payload objects' URLs) expire after this
PAYLOAD_URL_SECONDS = 900  # presigned URLs of payload objects
DISCONNECT_GRACE_SECONDS = 10  # a dropped session is restored unless it reconnects within this
SWEEP_INTERVAL_SECONDS = 60  # the helper stack's sweep of abandoned sessions runs this often
SESSION_CHECK_SECONDS = 2.0  # while an acknowledged invocation waits, the layer re-checks its session
RECONNECT_CHAIN_LENGTH = 1000  # reconnects a session allows (each consumes one token of the chain)
IAM_PROPAGATION_SECONDS = 15.0  # the layer retries AccessDenied this long (a just-attached policy)

# --- Environment variables set on an instrumented function by the developer's plldb -------------------
ENV_EXEC_WRAPPER = "AWS_LAMBDA_EXEC_WRAPPER"
ENV_SESSION_ID = "DEBUGGER_SESSION_ID"  # the session whose debugger gets this function's invocations
ENV_DISPATCHER = "PLLDB_DISPATCHER_FUNCTION"  # ARN of the helper stack's dispatcher function
ENV_INVOCATIONS_TABLE = "PLLDB_INVOCATIONS_TABLE"
ENV_PAYLOAD_BUCKET = "PLLDB_PAYLOAD_BUCKET"
ENV_FALLBACK = "PLLDB_FALLBACK"  # FALLBACK_ERROR | FALLBACK_PASSTHROUGH
# What plldb replaced, kept on the function itself so any restore puts back exactly what was there:
ENV_ORIGINAL_EXEC_WRAPPER = "PLLDB_ORIGINAL_EXEC_WRAPPER"  # the function's own wrapper, chained by ours
ENV_ORIGINAL_TIMEOUT = "PLLDB_ORIGINAL_TIMEOUT"  # its timeout in seconds
ENV_ORIGINAL_ENVIRONMENT = "PLLDB_ORIGINAL_ENVIRONMENT"  # "absent" when it had no Environment at all
ORIGINAL_ENVIRONMENT_ABSENT = "absent"
# JSON {alias: {"version": "3", "weights": {"2": 0.1}}}: where each alias pointed before plldb moved it
# to the version it published of the instrumented configuration (which inherits this variable).
ENV_ALIASES = "PLLDB_ALIASES"
# JSON list of sessions with options, in the order the layer tries them (a function carries either
# DEBUGGER_SESSION_ID or this, never both): [{"id": S, "observe": bool, "match": JMESPath|null,
# "sample": 0<x<=1}]. See parse_sessions and docs/protocol.md.
ENV_SESSIONS = "PLLDB_SESSIONS"
INSTRUMENTATION_VARIABLES = (
    ENV_EXEC_WRAPPER,
    ENV_SESSION_ID,
    ENV_DISPATCHER,
    ENV_INVOCATIONS_TABLE,
    ENV_PAYLOAD_BUCKET,
    ENV_FALLBACK,
    ENV_ORIGINAL_EXEC_WRAPPER,
    ENV_ORIGINAL_TIMEOUT,
    ENV_ORIGINAL_ENVIRONMENT,
    ENV_ALIASES,
    ENV_SESSIONS,
)
# The description of a version plldb publishes: the session's id follows.
PUBLISHED_VERSION_PREFIX = "plldb session "

# Where the layer's wrapper lands in the execution environment (layers are unpacked under /opt).
LAYER_DIRECTORY = "plldb-debugger"
LAYER_WRAPPER_PATH = "/opt/" + LAYER_DIRECTORY + "/wrapper"

# Tag on an instrumented function's execution role, one per function using plldb's policy through it:
# the role carries InstrumentedFunctionPolicy exactly while at least one such tag is there.
ROLE_TAG_PREFIX = "plldb:fn:"


def role_tag_key(region: str, function_name: str) -> str:
    """The role tag that records one instrumented function (roles are global, functions regional)."""
    return f"{ROLE_TAG_PREFIX}{region}:{function_name}"


# Every variable through which Lambda can hand a function credentials. Never stored, never logged, and
# never part of the environment sent to the developer (the role's credentials travel apart, once).
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_ACCESS_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)
# Lambda-internal endpoints of the execution environment: meaningless anywhere else.
ENVIRONMENT_INTERNAL_VARIABLES = ("AWS_LAMBDA_RUNTIME_API", "_LAMBDA_TELEMETRY_LOG_FD")

# --- Session item (PLLDBSessions) -------------------------------------------------------------------
STATUS_PENDING = "PENDING"  # connected, not yet opened
STATUS_ACTIVE = "ACTIVE"  # opened: owns its stack's lock, receives invocations
STATUS_CLOSED = "CLOSED"
SESSION_STATUSES = (STATUS_PENDING, STATUS_ACTIVE, STATUS_CLOSED)
FALLBACK_ERROR = "error"  # answer "plldb is not attached" when the debugger is absent
FALLBACK_PASSTHROUGH = "passthrough"  # run the function's real handler in the cloud instead
FALLBACK_MODES = (FALLBACK_ERROR, FALLBACK_PASSTHROUGH)

# --- Invocation item (PLLDBInvocations) ----------------------------------------------------------------
RESPONSE_CODE_OK = 200  # the handler returned; Response (or ResponseObject) holds its JSON
RESPONSE_CODE_ERROR = 500  # the handler raised; Error holds {errorMessage, errorType, stackTrace}
RESPONSE_CODE_UNAVAILABLE = 503  # the layer gave up: no debugger acknowledged, or its session ended
RESPONSE_CODE_TIMEOUT = 504  # the layer gave up at the deadline; any later answer is refused
PAYLOAD_EVENTS_PREFIX = "events/"  # events/{caller}/{deliveryId}: an event too large for a message
PAYLOAD_RESPONSES_PREFIX = "responses/"  # responses/{caller}/{deliveryId}: a large result


def event_object_key(caller: str, delivery_id: str) -> str:
    return f"{PAYLOAD_EVENTS_PREFIX}{caller}/{delivery_id}"


def response_object_key(caller: str, delivery_id: str) -> str:
    return f"{PAYLOAD_RESPONSES_PREFIX}{caller}/{delivery_id}"


# --- Attribute names ---------------------------------------------------------------------------------
# PLLDBSessions (key SessionId); written only by the helper stack's functions.
A_SESSION_ID = "SessionId"
A_STATUS = "Status"
A_OWNER = "Owner"  # the developer's ARN, as API Gateway authenticated it on $connect
A_CONNECTION_ID = "ConnectionId"  # the session's current WebSocket connection
A_TTL = "TTL"  # epoch seconds; DynamoDB TTL attribute of every table that has one
A_CREATED_AT = "CreatedAt"  # epoch seconds
A_STACK_ID = "StackId"  # the debugged stack, canonical
# A stack lock held by sessions with a match (`open` with shared: true): any number of them at once.
A_SHARED = "Shared"  # BOOL true on a shared lock
A_HOLDERS = "Holders"  # string set: the session ids holding a shared lock
A_LOCK_REVISION = "Revision"  # bumped by every change of a lock, the condition of the next one
A_STACK_NAME = "StackName"  # its name, for messages
A_RECONNECT_ANCHOR = "ReconnectAnchor"  # see the reconnect token chain below
A_SESSION_KEY = "SessionKey"  # the MAC key of the cloud's messages to this session (hex)
A_DISCONNECTED_AT = "DisconnectedAt"
A_CLOSED_REASON = "ClosedReason"
A_CLOSED_BY = "ClosedBy"
# PLLDBConnections (key ConnectionId) -> SessionId, TTL
# PLLDBStackLocks (key StackId) -> SessionId, Owner, CreatedAt
# PLLDBInvocations (key Caller + DeliveryId). Caller is the layer's aws:userid (role id:function name):
# IAM lets each function's code write and read only items under its own Caller.
A_CALLER = "Caller"
A_DELIVERY_ID = "DeliveryId"
A_REQUEST_ID = "RequestId"  # Lambda's request id
A_FUNCTION_NAME = "FunctionName"
A_PAYLOAD_SHA256 = "PayloadSha256"  # digest of what the layer hands the dispatcher: it must match
A_POSTED_AT = "PostedAt"
A_ACKED_AT = "AckedAt"  # epoch milliseconds when the debugger acknowledged
A_RESPONSE_CODE = "ResponseCode"  # RESPONSE_CODE_*
A_RESPONSE = "Response"  # JSON text of the handler's result
A_RESPONSE_OBJECT = "ResponseObject"  # S3 key of a result too large for the item
A_RESPONSE_SHA256 = "ResponseSha256"
A_RESPONSE_SIZE = "ResponseSize"
A_ERROR = "Error"  # JSON text {errorMessage, errorType, stackTrace}
A_REASON = "Reason"  # why the layer or the helper stack closed the item without an answer

# --- Messages -------------------------------------------------------------------------------------
# Local client -> cloud (WebSocket messages on route $default)
MSG_OPEN = "open"  # bind this connection's session to a stack (takes the stack's lock)
MSG_RELEASE = "release"  # end another session of a stack whose functions this developer restored
MSG_ACK = "ack"  # the local side has the invocation and is running it
MSG_UPLOAD = "upload"  # ask where to put a result too large for a message
MSG_RESPONSE = "response"  # the result of an invocation
MSG_PING = "ping"  # liveness: keeps the connection inside the idle timeout and the session's TTL
MSG_CLOSE = "close"  # the developer restored the functions: close the session and free the stack
# Cloud -> local client (post_to_connection by the helper stack's functions only)
MSG_OPENED = "opened"
MSG_RELEASED = "released"
MSG_INVOKE = "invoke"  # an invocation to run locally (the dispatcher)
MSG_UPLOAD_URL = "uploadUrl"
MSG_STORED = "stored"  # a response was accepted
MSG_ERROR = "error"  # a message was refused; nothing changed
MSG_PONG = "pong"
MSG_CLOSED = "closed"  # the session is over (asked for, taken over, swept)

CLIENT_MESSAGE_TYPES = (MSG_OPEN, MSG_RELEASE, MSG_ACK, MSG_UPLOAD, MSG_RESPONSE, MSG_PING, MSG_CLOSE)
SERVER_MESSAGE_TYPES = (
    MSG_OPENED,
    MSG_RELEASED,
    MSG_INVOKE,
    MSG_UPLOAD_URL,
    MSG_STORED,
    MSG_ERROR,
    MSG_PONG,
    MSG_CLOSED,
)

# Error codes in MSG_ERROR
ERR_MALFORMED = "MalformedMessage"
ERR_UNKNOWN_TYPE = "UnknownMessageType"
ERR_TOO_LARGE = "MessageTooLarge"
ERR_NO_SESSION = "NoSession"  # this connection has no session (or it is closed)
ERR_WRONG_STATE = "WrongSessionState"  # e.g. `open` twice, or `ack` before `open`
ERR_STACK_NOT_FOUND = "StackNotFound"
ERR_HELPER_STACK = "HelperStack"  # the helper stack itself cannot be debugged
ERR_STACK_LOCKED = "StackLocked"  # another live session debugs the stack
ERR_RELEASE_REFUSED = "ReleaseRefused"  # the other session's instrumentation is still on a function
ERR_UNKNOWN_REQUEST = "UnknownRequest"  # no such invocation, or it belongs to another session
ERR_ALREADY_ANSWERED = "AlreadyAnswered"  # this delivery already has the debugger's answer (200/500)
ERR_REQUEST_CLOSED = "RequestClosed"  # the layer stopped waiting for this delivery (503/504): too late
ERR_PAYLOAD_MISSING = "PayloadMissing"  # a response names an object that was not uploaded as promised

CLOSED_DETACHED = "detached"
CLOSED_RELEASED = "released"
CLOSED_ABANDONED = "abandoned"
CLOSED_EXPIRED = "expired"

# Every pattern ends with \Z, not $: "$" also matches before a trailing newline.
SESSION_ID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
HEX256_PATTERN = re.compile(r"^[0-9a-f]{64}\Z")
DELIVERY_ID_PATTERN = re.compile(r"^[0-9a-f]{32}\Z")
# aws:userid of a Lambda function's execution role session: the role's unique id, ':', the function name.
CALLER_PATTERN = re.compile(r"^AROA[A-Z0-9]{1,124}:[A-Za-z0-9_-]{1,64}\Z")
MAX_REQUEST_ID_LENGTH = 128
MAX_STACK_REFERENCE_LENGTH = 1024


class ProtocolError(ValueError):
    """A message that does not follow this protocol; ``code`` is one of the ERR_* values."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- Message shapes -------------------------------------------------------------------------------
class InvocationRef(TypedDict):
    """Names one delivery of one invocation: the layer's identity and its round."""

    caller: str
    deliveryId: str


class OpenMessage(TypedDict, total=False):
    type: str
    stack: str  # stack name or StackId
    sessionKey: str  # 64 hex: the MAC key of the cloud's messages to this session
    reconnectAnchor: str  # 64 hex: H^N(seed) of the reconnect chain
    shared: bool  # true for a session with a match: it may share the stack with other such sessions


class ReleaseMessage(TypedDict):
    type: str
    stack: str


class AckMessage(TypedDict):
    type: str
    caller: str
    deliveryId: str


class UploadMessage(TypedDict):
    type: str
    caller: str
    deliveryId: str
    size: int


class ResponseMessage(TypedDict, total=False):
    type: str
    caller: str
    deliveryId: str
    statusCode: int
    payload: str  # 200: the handler's result as JSON text, or
    payloadObject: bool  # 200: the result was PUT to the uploadUrl, with
    payloadSha256: str
    payloadSize: int
    error: dict[str, Any]  # 500: {errorMessage, errorType, stackTrace}


class ObservedOutcome(TypedDict, total=False):
    """The cloud's outcome of an observed invocation: ``result`` (the JSON text Lambda returned) or
    ``error`` (the Runtime API error document), or, for a result too large to travel in the message,
    only its ``resultSize`` and ``resultSha256``; always ``durationMs``."""

    result: str
    error: dict[str, Any]
    resultSize: int
    resultSha256: str
    durationMs: float


class InvokeMessage(TypedDict, total=False):
    type: str
    v: int
    caller: str
    deliveryId: str
    requestId: str
    function: dict[str, Any]  # {name, version, arn}
    handler: str
    context: dict[str, Any]
    event: str  # the event's JSON text, or
    eventUrl: str  # a presigned GET of the event object, with
    eventSha256: str
    eventSize: int
    environment: dict[str, str]
    credentials: dict[str, Any] | None
    observed: ObservedOutcome  # observe mode: what the deployed code answered in the cloud
    mac: str


class ErrorMessage(TypedDict, total=False):
    type: str
    code: str
    message: str
    caller: str
    deliveryId: str
    mac: str


class StoredMessage(TypedDict):
    type: str
    caller: str
    deliveryId: str


class UploadUrlMessage(TypedDict):
    type: str
    caller: str
    deliveryId: str
    url: str


class OpenedMessage(TypedDict):
    type: str
    sessionId: str
    stackId: str
    stackName: str
    owner: str


class ReleasedMessage(TypedDict):
    type: str
    stackId: str
    closed: int


class ClosedMessage(TypedDict, total=False):
    type: str
    reason: str
    by: str
    message: str


# Fields every message of a type must carry, with their types (bool is never an int here).
_REQUIRED_FIELDS: dict[str, dict[str, type]] = {
    MSG_OPEN: {"stack": str, "sessionKey": str, "reconnectAnchor": str},
    MSG_RELEASE: {"stack": str},
    MSG_ACK: {"caller": str, "deliveryId": str},
    MSG_UPLOAD: {"caller": str, "deliveryId": str, "size": int},
    MSG_RESPONSE: {"caller": str, "deliveryId": str, "statusCode": int},
    MSG_PING: {},
    MSG_CLOSE: {},
    MSG_OPENED: {"sessionId": str, "stackId": str, "stackName": str, "owner": str},
    MSG_RELEASED: {"stackId": str, "closed": int},
    MSG_INVOKE: {
        "caller": str,
        "deliveryId": str,
        "requestId": str,
        "function": dict,
        "context": dict,
        "environment": dict,
    },
    MSG_UPLOAD_URL: {"caller": str, "deliveryId": str, "url": str},
    MSG_STORED: {"caller": str, "deliveryId": str},
    MSG_ERROR: {"code": str, "message": str},
    MSG_PONG: {},
    MSG_CLOSED: {"reason": str},
}


def encode(message: Mapping[str, Any]) -> str:
    """Compact JSON text of a message (the form every side sends)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def message_size(message: Mapping[str, Any]) -> int:
    return len(encode(message).encode("utf-8"))


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (iterative, so hostile depth cannot recurse)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def decode(text: Any, allowed_types: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Parse and validate one message; raise ProtocolError with a precise reason otherwise.

    Never raises anything else, whatever ``text`` is: hostile input (deep nesting, huge numbers,
    invalid UTF-8) is a protocol error like any other, so one bad message cannot end a session or a
    handler.
    """
    try:
        return _decode(text, allowed_types)
    except ProtocolError:
        raise
    except (RecursionError, MemoryError, ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError(ERR_MALFORMED, f"message cannot be read: {type(exc).__name__}")


def _decode(text: Any, allowed_types: tuple[str, ...] | None) -> dict[str, Any]:
    message = _parse_object(_text_within_limit(text))
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ERR_MALFORMED, "message has no string 'type'")
    if kind not in _REQUIRED_FIELDS or (allowed_types is not None and kind not in allowed_types):
        raise ProtocolError(ERR_UNKNOWN_TYPE, f"unknown message type {kind[:64]!r}")
    for name, expected in _REQUIRED_FIELDS[kind].items():
        value = message.get(name)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ProtocolError(ERR_MALFORMED, f"{kind!r} message needs {name!r} of type {expected.__name__}")
    if "caller" in message or "deliveryId" in message:
        _validate_reference(message)
    validator = _VALIDATORS.get(kind)
    if validator is not None:
        validator(message)
    return message


def _text_within_limit(text: Any) -> str:
    """The message as text, refused before parsing when it is not UTF-8 or exceeds a frame's size."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > WEBSOCKET_MESSAGE_LIMIT:
            raise ProtocolError(ERR_TOO_LARGE, f"message exceeds {WEBSOCKET_MESSAGE_LIMIT} bytes")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ERR_MALFORMED, "message is not UTF-8 text")
    if not isinstance(text, str) or not text:
        raise ProtocolError(ERR_MALFORMED, "message is empty")
    if len(text.encode("utf-8", "surrogatepass")) > WEBSOCKET_MESSAGE_LIMIT:
        raise ProtocolError(ERR_TOO_LARGE, f"message exceeds {WEBSOCKET_MESSAGE_LIMIT} bytes")
    return text


def _parse_object(text: str) -> dict[str, Any]:
    """A JSON object no deeper than MAX_MESSAGE_DEPTH levels."""
    try:
        message = json.loads(text)
    except RecursionError:
        raise ProtocolError(ERR_MALFORMED, f"message nests deeper than {MAX_MESSAGE_DEPTH} levels")
    except ValueError as exc:
        raise ProtocolError(ERR_MALFORMED, f"message is not valid JSON: {str(exc)[:200]}")
    if not isinstance(message, dict):
        raise ProtocolError(ERR_MALFORMED, "message must be a JSON object")
    if _too_deep(message, MAX_MESSAGE_DEPTH):
        raise ProtocolError(ERR_MALFORMED, f"message nests deeper than {MAX_MESSAGE_DEPTH} levels")
    return message


def _validate_reference(message: Mapping[str, Any]) -> None:
    caller, delivery_id = message.get("caller"), message.get("deliveryId")
    if not isinstance(caller, str) or not CALLER_PATTERN.match(caller):
        raise ProtocolError(ERR_MALFORMED, "'caller' must be a Lambda function's aws:userid")
    if not isinstance(delivery_id, str) or not DELIVERY_ID_PATTERN.match(delivery_id):
        raise ProtocolError(ERR_MALFORMED, "'deliveryId' must be 32 lowercase hex digits")


def _validate_open(message: Mapping[str, Any]) -> None:
    if "shared" in message and not isinstance(message["shared"], bool):
        raise ProtocolError(ERR_MALFORMED, "'shared' must be true or false")
    stack = message["stack"]
    if not 0 < len(stack) <= MAX_STACK_REFERENCE_LENGTH:
        raise ProtocolError(ERR_MALFORMED, "'stack' must name a stack")
    for name in ("sessionKey", "reconnectAnchor"):
        if not HEX256_PATTERN.match(message[name]):
            raise ProtocolError(ERR_MALFORMED, f"{name!r} must be 64 lowercase hex digits")


def _validate_release(message: Mapping[str, Any]) -> None:
    if not 0 < len(message["stack"]) <= MAX_STACK_REFERENCE_LENGTH:
        raise ProtocolError(ERR_MALFORMED, "'stack' must name a stack")


def _validate_upload(message: Mapping[str, Any]) -> None:
    if not 0 < message["size"] <= MAX_PAYLOAD_BYTES:
        raise ProtocolError(ERR_MALFORMED, f"'size' must be from 1 to {MAX_PAYLOAD_BYTES} bytes")


def _validate_response(message: Mapping[str, Any]) -> None:
    code = message["statusCode"]
    if code not in (RESPONSE_CODE_OK, RESPONSE_CODE_ERROR):
        raise ProtocolError(ERR_MALFORMED, "response statusCode must be 200 or 500")
    has_payload = "payload" in message
    has_object = "payloadObject" in message
    if code == RESPONSE_CODE_OK and has_payload == has_object:
        raise ProtocolError(ERR_MALFORMED, "a 200 response needs exactly one of 'payload' or 'payloadObject'")
    if code == RESPONSE_CODE_ERROR and not isinstance(message.get("error"), dict):
        raise ProtocolError(ERR_MALFORMED, "a 500 response needs an 'error' object")
    if has_payload and not isinstance(message["payload"], str):
        raise ProtocolError(ERR_MALFORMED, "'payload' must be the handler's result as JSON text")
    if has_object:
        size = message.get("payloadSize")
        if message["payloadObject"] is not True:
            raise ProtocolError(ERR_MALFORMED, "'payloadObject' must be true")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_PAYLOAD_BYTES:
            raise ProtocolError(ERR_MALFORMED, f"'payloadSize' must be from 0 to {MAX_PAYLOAD_BYTES}")
        digest = message.get("payloadSha256")
        if not isinstance(digest, str) or not HEX256_PATTERN.match(digest):
            raise ProtocolError(ERR_MALFORMED, "'payloadSha256' must be a hex SHA-256 digest")
    if code == RESPONSE_CODE_ERROR:
        error = message["error"]
        if not isinstance(error.get("errorMessage"), str) or not isinstance(error.get("errorType"), str):
            raise ProtocolError(ERR_MALFORMED, "'error' needs string 'errorMessage' and 'errorType'")


def _validate_invoke(message: Mapping[str, Any]) -> None:
    if not 0 < len(message["requestId"]) <= MAX_REQUEST_ID_LENGTH:
        raise ProtocolError(ERR_MALFORMED, "'requestId' is too long")
    has_event = isinstance(message.get("event"), str)
    has_url = isinstance(message.get("eventUrl"), str)
    if has_event == has_url:
        raise ProtocolError(ERR_MALFORMED, "an invoke needs exactly one of 'event' or 'eventUrl'")
    if has_url and not (
        isinstance(message.get("eventSha256"), str) and HEX256_PATTERN.match(message["eventSha256"])
    ):
        raise ProtocolError(ERR_MALFORMED, "an 'eventUrl' needs its 'eventSha256'")
    environment = message["environment"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in environment.items()):
        raise ProtocolError(ERR_MALFORMED, "'environment' must map names to strings")
    if "observed" in message:
        validate_observed(message["observed"])


def validate_observed(observed: Any) -> None:
    if not isinstance(observed, dict):
        raise ProtocolError(ERR_MALFORMED, "'observed' must be an object")
    duration = observed.get("durationMs")
    if not isinstance(duration, (int, float)) or isinstance(duration, bool) or duration < 0:
        raise ProtocolError(ERR_MALFORMED, "'observed' needs a non-negative 'durationMs'")
    kinds = [name for name in ("result", "error", "resultSha256") if name in observed]
    if len(kinds) != 1:
        raise ProtocolError(
            ERR_MALFORMED, "'observed' needs exactly one of 'result', 'error', 'resultSha256'"
        )
    if "result" in observed and not isinstance(observed["result"], str):
        raise ProtocolError(ERR_MALFORMED, "'observed.result' must be the result's JSON text")
    if "error" in observed and not isinstance(observed["error"], dict):
        raise ProtocolError(ERR_MALFORMED, "'observed.error' must be an error document")
    if "resultSha256" in observed and not (
        isinstance(observed["resultSha256"], str)
        and HEX256_PATTERN.match(observed["resultSha256"])
        and isinstance(observed.get("resultSize"), int)
    ):
        raise ProtocolError(ERR_MALFORMED, "'observed.resultSha256' needs 64 hex digits and 'resultSize'")


_VALIDATORS = {
    MSG_OPEN: _validate_open,
    MSG_RELEASE: _validate_release,
    MSG_UPLOAD: _validate_upload,
    MSG_RESPONSE: _validate_response,
    MSG_INVOKE: _validate_invoke,
}


# --- Builders -------------------------------------------------------------------------------------
def new_delivery_id() -> str:
    """A fresh id for one round of the layer: 128 random bits, so rounds never collide."""
    return os.urandom(16).hex()


def new_secret() -> str:
    """256 random bits as hex: a session's MAC key or the seed of its reconnect chain."""
    return os.urandom(32).hex()


def reference(caller: str, delivery_id: str) -> InvocationRef:
    return {"caller": caller, "deliveryId": delivery_id}


def open_message(stack: str, session_key: str, reconnect_anchor: str, shared: bool = False) -> OpenMessage:
    message: OpenMessage = {
        "type": MSG_OPEN,
        "stack": stack,
        "sessionKey": session_key,
        "reconnectAnchor": reconnect_anchor,
    }
    if shared:
        message["shared"] = True
    return message


def release_message(stack: str) -> ReleaseMessage:
    return {"type": MSG_RELEASE, "stack": stack}


def ack_message(caller: str, delivery_id: str) -> AckMessage:
    return {"type": MSG_ACK, "caller": caller, "deliveryId": delivery_id}


def upload_message(caller: str, delivery_id: str, size: int) -> UploadMessage:
    return {"type": MSG_UPLOAD, "caller": caller, "deliveryId": delivery_id, "size": size}


def result_message(caller: str, delivery_id: str, payload: str) -> ResponseMessage:
    return {
        "type": MSG_RESPONSE,
        "caller": caller,
        "deliveryId": delivery_id,
        "statusCode": RESPONSE_CODE_OK,
        "payload": payload,
    }


def result_object_message(caller: str, delivery_id: str, sha256: str, size: int) -> ResponseMessage:
    return {
        "type": MSG_RESPONSE,
        "caller": caller,
        "deliveryId": delivery_id,
        "statusCode": RESPONSE_CODE_OK,
        "payloadObject": True,
        "payloadSha256": sha256,
        "payloadSize": size,
    }


def failure_message(caller: str, delivery_id: str, error: Mapping[str, Any]) -> ResponseMessage:
    return {
        "type": MSG_RESPONSE,
        "caller": caller,
        "deliveryId": delivery_id,
        "statusCode": RESPONSE_CODE_ERROR,
        "error": dict(error),
    }


def error_message(
    code: str, text: str, caller: str | None = None, delivery_id: str | None = None
) -> ErrorMessage:
    message: ErrorMessage = {"type": MSG_ERROR, "code": code, "message": text}
    if caller is not None:
        message["caller"] = caller
    if delivery_id is not None:
        message["deliveryId"] = delivery_id
    return message


def stored_message(caller: str, delivery_id: str) -> StoredMessage:
    return {"type": MSG_STORED, "caller": caller, "deliveryId": delivery_id}


def upload_url_message(caller: str, delivery_id: str, url: str) -> UploadUrlMessage:
    return {"type": MSG_UPLOAD_URL, "caller": caller, "deliveryId": delivery_id, "url": url}


def opened_message(session_id: str, stack_id: str, stack_name: str, owner: str) -> OpenedMessage:
    return {
        "type": MSG_OPENED,
        "sessionId": session_id,
        "stackId": stack_id,
        "stackName": stack_name,
        "owner": owner,
    }


def released_message(stack_id: str, closed: int) -> ReleasedMessage:
    return {"type": MSG_RELEASED, "stackId": stack_id, "closed": closed}


def closed_message(reason: str, by: str | None = None, text: str | None = None) -> ClosedMessage:
    message: ClosedMessage = {"type": MSG_CLOSED, "reason": reason}
    if by:
        message["by"] = by
    if text:
        message["message"] = text
    return message


# --- Message authentication ---------------------------------------------------------------------------
# Every message the cloud posts to an opened session carries "mac": HMAC-SHA256 under the session's key
# (which only the developer's plldb and the helper stack's functions know) of the message's canonical
# JSON without "mac". The client refuses any message whose mac does not verify, so nobody who can post
# to a connection, or who knows a connection id, can make a developer's machine run anything.
def _canonical(message: Mapping[str, Any]) -> bytes:
    body = {key: value for key, value in message.items() if key != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def sign(message: Mapping[str, Any], key_hex: str) -> dict[str, Any]:
    signed = dict(message)
    signed["mac"] = hmac.new(bytes.fromhex(key_hex), _canonical(message), hashlib.sha256).hexdigest()
    return signed


def verify(message: Mapping[str, Any], key_hex: str) -> bool:
    mac = message.get("mac")
    if not isinstance(mac, str):
        return False
    try:
        expected = hmac.new(bytes.fromhex(key_hex), _canonical(message), hashlib.sha256).hexdigest()
    except (ValueError, TypeError, RecursionError):
        return False
    return hmac.compare_digest(mac, expected)


# --- Payloads -------------------------------------------------------------------------------------
def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload_digest(payload: Mapping[str, Any]) -> str:
    """The digest of what the layer hands the dispatcher, recorded in the item the layer alone writes."""
    return sha256_hex(_canonical(payload))


# --- Sessions with options (PLLDB_SESSIONS) ----------------------------------------------------------
# A shared function's role tag names no session (several hold it): its last session removes this value.
SHARED_TAG_VALUE = "shared"
MAX_MATCH_LENGTH = 1024  # a JMESPath expression of --match; Lambda's 4 KB of variables bound the list
# Multi-select lists and hashes ([a, b], {a: b}) in one --match: each can multiply what the next one
# works on (`@.[@,@,@,@][]` repeated grows fourfold each time), so an expression is refused beyond this.
MAX_MATCH_MULTISELECTS = 2


def match_cost_problem(parsed: Any) -> str | None:
    """Why a compiled JMESPath expression (its ``parsed`` tree) could cost too much per event, or None."""
    pending, multiselects = [parsed], 0
    while pending:
        node = pending.pop()
        if not isinstance(node, dict):
            continue
        if node.get("type") in ("multi_select_list", "multi_select_dict"):
            multiselects += 1
        pending.extend(child for child in node.get("children", ()) if isinstance(child, dict))
    if multiselects > MAX_MATCH_MULTISELECTS:
        return (
            f"it has {multiselects} multi-select expressions ([a, b] or {{a: b}}); at most "
            f"{MAX_MATCH_MULTISELECTS} are allowed, so that matching stays cheap for every invocation"
        )
    return None


class SessionEntry(TypedDict):
    id: str
    observe: bool
    match: str | None
    sample: float


def session_entry(session_id: str, observe: bool, match: str | None, sample: float) -> SessionEntry:
    return {"id": session_id, "observe": observe, "match": match, "sample": sample}


def parse_sessions(text: str) -> list[SessionEntry]:
    """The entries of a PLLDB_SESSIONS value; ValueError naming the first problem otherwise."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # too deeply nested to parse is not JSON either
        raise ValueError(f"{ENV_SESSIONS} is not JSON")
    if not isinstance(value, list) or not value:
        raise ValueError(f"{ENV_SESSIONS} must be a non-empty JSON list")
    entries: list[SessionEntry] = []
    seen: set[str] = set()
    for position, entry in enumerate(value):
        where = f"{ENV_SESSIONS} entry {position}"
        if not isinstance(entry, dict) or set(entry) != {"id", "observe", "match", "sample"}:
            raise ValueError(f"{where} must be an object with exactly id, observe, match, sample")
        session_id, observe, match, sample = entry["id"], entry["observe"], entry["match"], entry["sample"]
        if not isinstance(session_id, str) or not SESSION_ID_PATTERN.match(session_id):
            raise ValueError(f"{where}: id is not a session id")
        if session_id in seen:
            raise ValueError(f"{where}: session {session_id[:8]} is listed twice")
        seen.add(session_id)
        if not isinstance(observe, bool):
            raise ValueError(f"{where}: observe must be true or false")
        if match is not None and (not isinstance(match, str) or not 0 < len(match) <= MAX_MATCH_LENGTH):
            raise ValueError(f"{where}: match must be null or a JMESPath expression")
        if isinstance(sample, bool) or not isinstance(sample, (int, float)) or not 0 < sample <= 1:
            raise ValueError(f"{where}: sample must be a number greater than 0 and at most 1")
        entries.append(session_entry(session_id, observe, match, float(sample)))
    return entries


def sessions_variable(entries: list[SessionEntry]) -> str:
    """The PLLDB_SESSIONS value of ``entries``: compact JSON, in order."""
    return json.dumps(
        [session_entry(e["id"], e["observe"], e["match"], e["sample"]) for e in entries],
        separators=(",", ":"),
    )


# --- Credentials ----------------------------------------------------------------------------------
def without_credentials(environment: Mapping[str, str]) -> dict[str, str]:
    """The environment safe to send: no credentials of any kind, no environment-internal endpoints."""
    hidden = set(CREDENTIAL_VARIABLES) | set(ENVIRONMENT_INTERNAL_VARIABLES)
    return {k: v for k, v in environment.items() if k not in hidden}


# --- Identities -------------------------------------------------------------------------------------
def principal_of(arn: str) -> str:
    """The principal behind an ARN API Gateway authenticated: an assumed role without its session name.

    A developer whose role session name changes when the credentials are refreshed is still the same
    principal; reconnecting also needs the session's secret token, which only their plldb has.
    """
    match = re.match(r"^(arn:[^:]+:sts::\d+:assumed-role/[^/]+)/.+$", arn or "")
    return match.group(1) if match else (arn or "")


def caller_parts(caller: str) -> tuple[str, str]:
    """(role unique id, function name) of a layer's aws:userid."""
    role_id, _, function_name = caller.partition(":")
    return role_id, function_name


# --- Reconnect token chain --------------------------------------------------------------------------
# The client keeps a random seed. The session stores anchor = H^N(seed). A reconnect presents
# H^(N-k)(seed) for the k-th reconnect; the helper stack accepts a token whose hash equals the stored
# anchor and replaces the anchor with it. A token works once, and none can be derived from those seen.
def _h(value: str) -> str:
    return hashlib.sha256(value.encode("ascii")).hexdigest()


def reconnect_token(seed: str, remaining: int) -> str:
    """H^remaining(seed): the anchor for remaining=N, the k-th reconnect token for remaining=N-k."""
    value = seed
    for _ in range(remaining):
        value = _h(value)
    return value


def reconnect_token_matches(token: Any, anchor: Any) -> bool:
    if not isinstance(token, str) or not HEX256_PATTERN.match(token) or not isinstance(anchor, str):
        return False
    return hmac.compare_digest(_h(token), anchor)


# --- Stacks -----------------------------------------------------------------------------------------
STACK_ID_PATTERN = re.compile(
    r"^arn:aws[a-z-]*:cloudformation:[a-z0-9-]+:\d{12}:stack/[A-Za-z][A-Za-z0-9-]{0,127}/[0-9a-f-]+\Z"
)
STACK_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}\Z")


def is_stack_reference(value: str) -> bool:
    """A stack name or a StackId: nothing else may reach DescribeStacks."""
    return bool(STACK_NAME_PATTERN.match(value) or STACK_ID_PATTERN.match(value))


# --- The execute-api endpoint override -------------------------------------------------------------
# On AWS this variable is unset and URLs are used as CloudFormation outputs them. Where it is set
# (for example to http://127.0.0.1:4510 by the local cloud), every
#   wss://{api}.execute-api.{region}.amazonaws.com/{stage}  ->  ws://HOST:PORT/{api}/{stage}
#   https://{api}.execute-api.{region}.amazonaws.com/{stage} -> http://HOST:PORT/{api}/{stage}
EXECUTE_API_ENDPOINT_VARIABLE = "PLLDB_EXECUTE_API_ENDPOINT"
_EXECUTE_API_URL = re.compile(
    r"^(?P<scheme>wss|https|ws|http)://(?P<api>[A-Za-z0-9]+)\.execute-api\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?"
    r"(?P<path>/.*)?$"
)


def execute_api_url(url: str, environ: Mapping[str, str] | None = None) -> str:
    """The URL to use for an execute-api URL, honouring PLLDB_EXECUTE_API_ENDPOINT."""
    base = (os.environ if environ is None else environ).get(EXECUTE_API_ENDPOINT_VARIABLE, "")
    match = _EXECUTE_API_URL.match(url)
    if not base or not match:
        return url
    host = re.sub(r"^[a-z]+://", "", base).rstrip("/")
    secure = base.startswith("https://")
    websocket = match.group("scheme") in ("wss", "ws")
    scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
    return "{}://{}/{}{}".format(scheme, host, match.group("api"), match.group("path") or "")
