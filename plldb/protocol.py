"""The plldb wire protocol, shared by the layer, the helper stack's handlers and the local client.

Everything that more than one side must agree on lives here: message types and their fields,
table attribute names, environment variable names, size thresholds, timeouts, the reconnect
token chain and the one mechanism that points execute-api URLs at a local endpoint.
docs/protocol.md explains it in prose. Standard library only: this module is packaged into Lambda.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional

PROTOCOL_VERSION = 1

# --- Limits (bytes) -----------------------------------------------------------------------------
WEBSOCKET_MESSAGE_LIMIT = 128 * 1024  # API Gateway WebSocket message payload quota
WEBSOCKET_FRAME_LIMIT = 32 * 1024  # API Gateway WebSocket frame quota; larger messages are fragmented
INLINE_MESSAGE_LIMIT = 96 * 1024  # a message above this carries its payload by reference (chunk items)
CHUNK_SIZE = 300 * 1024  # payload bytes per chunk item (DynamoDB items stop at 400 KB)
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's synchronous request and response limit
INLINE_ITEM_LIMIT = 300 * 1024  # a Request/Response larger than this is stored as chunk items

# --- Timing ---------------------------------------------------------------------------------------
ACK_TIMEOUT_SECONDS = 5.0  # the layer gives up ("not attached") when no ack arrives within this
DEADLINE_MARGIN_MS = 1000  # the layer answers "did not answer in time" this long before the deadline
SESSION_TTL_SECONDS = 3600  # a PENDING session must connect within this; ACTIVE sessions are extended
DEBUGGER_ITEM_TTL_SECONDS = 3600  # correlation items (and their payloads) expire after this
DISCONNECT_GRACE_SECONDS = 10  # $disconnect restores only if the client has not reconnected by then
CONNECTION_CACHE_SECONDS = 2.0  # the layer re-reads the session's current ConnectionId this often
RECONNECT_CHAIN_LENGTH = 1000  # reconnects a session allows (each consumes one token of the chain)

# --- Environment variables set on an instrumented function by the manager ---------------------------
ENV_SESSION_ID = "DEBUGGER_SESSION_ID"
ENV_CONNECTION_ID = "DEBUGGER_CONNECTION_ID"
ENV_EXEC_WRAPPER = "AWS_LAMBDA_EXEC_WRAPPER"
ENV_ORIGINAL_EXEC_WRAPPER = "PLLDB_ORIGINAL_EXEC_WRAPPER"  # the function's own wrapper, chained by ours
ENV_DEBUGGER_ROLE_ARN = "PLLDB_DEBUGGER_ROLE_ARN"
ENV_SESSIONS_TABLE = "PLLDB_SESSIONS_TABLE"
ENV_DEBUGGER_TABLE = "PLLDB_DEBUGGER_TABLE"
ENV_MANAGEMENT_URL = (
    "PLLDB_WEBSOCKET_MANAGEMENT_URL"  # https://{api}.execute-api.{region}.amazonaws.com/{stage}
)
INSTRUMENTATION_VARIABLES = (
    ENV_SESSION_ID,
    ENV_CONNECTION_ID,
    ENV_EXEC_WRAPPER,
    ENV_ORIGINAL_EXEC_WRAPPER,
    ENV_DEBUGGER_ROLE_ARN,
    ENV_SESSIONS_TABLE,
    ENV_DEBUGGER_TABLE,
    ENV_MANAGEMENT_URL,
)

# Where the layer's wrapper lands in the execution environment (layers are unpacked under /opt).
LAYER_DIRECTORY = "plldb-debugger"
LAYER_WRAPPER_PATH = "/opt/" + LAYER_DIRECTORY + "/wrapper"

# Never stored at rest: the function's temporary credentials travel only inside the invoke message.
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

# --- Session item (PLLDBSessions) -------------------------------------------------------------------
STATUS_PENDING = "PENDING"
STATUS_ACTIVE = "ACTIVE"
STATUS_CLOSED = "CLOSED"
SESSION_STATUSES = (STATUS_PENDING, STATUS_ACTIVE, STATUS_CLOSED)
FALLBACK_ERROR = "error"  # answer "plldb is not attached" when the debugger is absent
FALLBACK_PASSTHROUGH = "passthrough"  # run the function's real handler in the cloud instead
FALLBACK_MODES = (FALLBACK_ERROR, FALLBACK_PASSTHROUGH)
STACK_INDEX = "StackName-index"
CONNECTION_INDEX = "ConnectionId-index"

# --- Correlation item (PLLDBDebugger) ---------------------------------------------------------------
RESPONSE_CODE_OK = 200  # the handler returned; Response holds its JSON
RESPONSE_CODE_ERROR = 500  # the handler raised; Error holds {errorMessage, errorType, stackTrace}
RESPONSE_CODE_TIMEOUT = 504  # the layer gave up at the deadline; any later answer is refused
RESPONSE_CODE_UNAVAILABLE = 503  # the layer gave up because no debugger acknowledged
CHUNK_KIND_EVENT = "event"
CHUNK_KIND_RESPONSE = "response"

# --- Attribute names ---------------------------------------------------------------------------------
# PLLDBSessions (key SessionId). Seed attributes first, then plldb's additions.
A_SESSION_ID = "SessionId"
A_CONNECTION_ID = "ConnectionId"
A_TTL = "TTL"  # epoch seconds; DynamoDB TTL attribute of both tables
A_STATUS = "Status"
A_STACK_NAME = "StackName"
A_CREATED_AT = "CreatedAt"  # epoch seconds
A_OWNER = "Owner"  # caller ARN and host of the developer who attached, shown to others
A_FUNCTION_PATTERNS = "FunctionPatterns"  # list of fnmatch patterns on logical ids / names; empty = all
A_FUNCTION_TIMEOUT = "FunctionTimeout"  # seconds an instrumented function may run (default 900)
A_FALLBACK = "Fallback"  # FALLBACK_ERROR | FALLBACK_PASSTHROUGH
A_RECONNECT_ANCHOR = "ReconnectAnchor"  # see the reconnect token chain below
A_DISCONNECTED_AT = "DisconnectedAt"
# PLLDBDebugger (key RequestId)
A_REQUEST_ID = "RequestId"
A_REQUEST = "Request"  # JSON text: the invoke message without credentials (event inline or chunked)
A_REQUEST_CHUNKS = "RequestChunks"  # number of event chunk items when the event is too large to inline
A_ENVIRONMENT = "EnvironmentVariables"  # map, never with credentials
A_RESPONSE_CODE = "ResponseCode"  # RESPONSE_CODE_*
A_RESPONSE = "Response"  # JSON text of the handler's result
A_RESPONSE_CHUNKS = "ResponseChunks"
A_RESPONSE_SHA256 = "ResponseSha256"
A_ERROR = "Error"  # JSON text {errorMessage, errorType, stackTrace}
A_ACKED_AT = "AckedAt"  # epoch milliseconds when the local side acknowledged
A_DELIVERY_ID = "DeliveryId"  # the layer's current round for this RequestId (the messages' deliveryId)
A_FUNCTION_NAME = "FunctionName"
A_DATA = "Data"  # bytes of one chunk item

# --- Messages -------------------------------------------------------------------------------------
# Each round of the layer for a request id (Lambda retries an invocation under the same request id)
# has its own random deliveryId. The invoke message carries it, ack and response echo it, and $default
# stores an ack or a response only while it is the item's DeliveryId. A re-post keeps its round's id.
# invoke: {"type": "invoke", "v": 1, "requestId", "deliveryId", "sessionId", "handler": "app.lambda_handler",
#          "context": {"functionName", "functionVersion", "invokedFunctionArn", "memoryLimitInMB",
#                      "logGroupName", "logStreamName", "deadlineMs", "traceId", "clientContext",
#                      "cognitoIdentity"},
#          "event": "<event JSON text>"  |  "eventChunks": n, "eventSha256": hex,
#          "environment": {...without credentials...},
#          "credentials": {"accessKeyId", "secretAccessKey", "sessionToken"} | null}
# ack: {"type": "ack", "requestId", "deliveryId"}
# response: {"type": "response", "requestId", "deliveryId", "statusCode": 200, "payload": "<result JSON text>"}
#         | {... "statusCode": 200, "payloadChunks": n, "payloadSha256": hex}
#         | {... "statusCode": 500, "error": {"errorMessage", "errorType", "stackTrace": [...]}}
# stored / error replies of $default name the requestId and deliveryId they are about.
# Cloud -> local (post_to_connection)
MSG_INVOKE = "invoke"  # an invocation to run locally (layer)
MSG_PROGRESS = "progress"  # instrumentation / restore progress (manager)
MSG_STORED = "stored"  # a response (or ack) was accepted ($default)
MSG_ERROR = "error"  # a message was refused ($default); nothing changed
MSG_PONG = "pong"  # reply to ping ($default)
# Local -> cloud (WebSocket send, route $default)
MSG_ACK = "ack"  # the local side has the invocation and is running it
MSG_RESPONSE = "response"  # the result of an invocation
MSG_PING = "ping"  # keep-alive inside API Gateway's idle timeout
MSG_DETACH = "detach"  # restore every function and close the session

CLIENT_MESSAGE_TYPES = (MSG_ACK, MSG_RESPONSE, MSG_PING, MSG_DETACH)
SERVER_MESSAGE_TYPES = (MSG_INVOKE, MSG_PROGRESS, MSG_STORED, MSG_ERROR, MSG_PONG)

# Error codes in MSG_ERROR
ERR_MALFORMED = "MalformedMessage"
ERR_UNKNOWN_TYPE = "UnknownMessageType"
ERR_TOO_LARGE = "MessageTooLarge"
ERR_UNKNOWN_REQUEST = "UnknownRequest"  # no such RequestId, or it belongs to another session
ERR_ALREADY_ANSWERED = "AlreadyAnswered"  # this round already has the debugger's answer (200/500)
ERR_REQUEST_CLOSED = "RequestClosed"  # the layer stopped waiting for this round (503/504): too late
ERR_STALE_DELIVERY = "StaleDelivery"  # the message is for an earlier round; Lambda delivered it again since
ERR_SESSION_CLOSED = "SessionClosed"

MAX_DELIVERY_ID_LENGTH = 64


class ProtocolError(ValueError):
    """A message that does not follow this protocol; ``code`` is one of the ERR_* values."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(message: Mapping[str, Any]) -> str:
    """Compact JSON text of a message (the form every side sends)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def message_size(message: Mapping[str, Any]) -> int:
    return len(encode(message).encode("utf-8"))


_REQUIRED_FIELDS: Dict[str, Dict[str, type]] = {
    MSG_ACK: {"requestId": str, "deliveryId": str},
    MSG_RESPONSE: {"requestId": str, "deliveryId": str, "statusCode": int},
    MSG_PING: {},
    MSG_DETACH: {},
    MSG_INVOKE: {"requestId": str, "deliveryId": str, "context": dict, "environment": dict},
    MSG_PROGRESS: {"phase": str, "status": str},
    MSG_STORED: {"requestId": str},
    MSG_ERROR: {"code": str, "message": str},
    MSG_PONG: {},
}


def decode(text: Any, allowed_types: Optional[tuple] = None) -> Dict[str, Any]:
    """Parse and validate one message; raise ProtocolError with a precise reason otherwise."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ERR_MALFORMED, "message is not UTF-8 text")
    if not isinstance(text, str):
        raise ProtocolError(ERR_MALFORMED, "message is empty")
    if len(text.encode("utf-8")) > WEBSOCKET_MESSAGE_LIMIT:
        raise ProtocolError(ERR_TOO_LARGE, "message exceeds %d bytes" % WEBSOCKET_MESSAGE_LIMIT)
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(ERR_MALFORMED, "message is not valid JSON: %s" % exc)
    if not isinstance(message, dict):
        raise ProtocolError(ERR_MALFORMED, "message must be a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ERR_MALFORMED, "message has no string 'type'")
    if kind not in _REQUIRED_FIELDS or (allowed_types is not None and kind not in allowed_types):
        raise ProtocolError(ERR_UNKNOWN_TYPE, "unknown message type %r" % kind)
    for field, expected in _REQUIRED_FIELDS[kind].items():
        value = message.get(field)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ProtocolError(
                ERR_MALFORMED, "%r message needs %r of type %s" % (kind, field, expected.__name__)
            )
    if "deliveryId" in message:
        delivery_id = message["deliveryId"]
        if not isinstance(delivery_id, str) or not 0 < len(delivery_id) <= MAX_DELIVERY_ID_LENGTH:
            raise ProtocolError(
                ERR_MALFORMED, "'deliveryId' must be a string of 1 to %d characters" % MAX_DELIVERY_ID_LENGTH
            )
    if kind == MSG_RESPONSE:
        _validate_response(message)
    return message


def _validate_response(message: Dict[str, Any]) -> None:
    code = message["statusCode"]
    if code not in (RESPONSE_CODE_OK, RESPONSE_CODE_ERROR):
        raise ProtocolError(ERR_MALFORMED, "response statusCode must be 200 or 500")
    has_payload = "payload" in message
    has_chunks = "payloadChunks" in message
    has_error = "error" in message
    if code == RESPONSE_CODE_OK and has_payload == has_chunks:
        raise ProtocolError(ERR_MALFORMED, "a 200 response needs exactly one of 'payload' or 'payloadChunks'")
    if code == RESPONSE_CODE_ERROR and not isinstance(message.get("error"), dict):
        raise ProtocolError(ERR_MALFORMED, "a 500 response needs an 'error' object")
    if has_payload and not isinstance(message["payload"], str):
        raise ProtocolError(ERR_MALFORMED, "'payload' must be the handler's result as JSON text")
    if has_chunks:
        chunks = message["payloadChunks"]
        if not isinstance(chunks, int) or isinstance(chunks, bool) or not 1 <= chunks <= max_chunks():
            raise ProtocolError(
                ERR_MALFORMED, "'payloadChunks' must be an integer from 1 to %d" % max_chunks()
            )
        if not isinstance(message.get("payloadSha256"), str) or not re.match(
            r"^[0-9a-f]{64}$", message["payloadSha256"]
        ):
            raise ProtocolError(ERR_MALFORMED, "'payloadSha256' must be a hex SHA-256 digest")
    if has_error:
        error = message["error"]
        if not isinstance(error.get("errorMessage"), str) or not isinstance(error.get("errorType"), str):
            raise ProtocolError(ERR_MALFORMED, "'error' needs string 'errorMessage' and 'errorType'")


# --- Builders -------------------------------------------------------------------------------------
def new_delivery_id() -> str:
    """A fresh id for one round of the layer: 128 random bits, so rounds never collide."""
    return os.urandom(16).hex()


def error_message(
    code: str, text: str, request_id: Optional[str] = None, delivery_id: Optional[str] = None
) -> Dict[str, Any]:
    message: Dict[str, Any] = {"type": MSG_ERROR, "code": code, "message": text}
    if request_id is not None:
        message["requestId"] = request_id
    if delivery_id is not None:
        message["deliveryId"] = delivery_id
    return message


def ack_message(request_id: str, delivery_id: str) -> Dict[str, Any]:
    return {"type": MSG_ACK, "requestId": request_id, "deliveryId": delivery_id}


def stored_message(request_id: str, delivery_id: str) -> Dict[str, Any]:
    return {"type": MSG_STORED, "requestId": request_id, "deliveryId": delivery_id}


def progress_message(
    phase: str, status: str, text: str, function: Optional[str] = None, **extra: Any
) -> Dict[str, Any]:
    """phase: "instrument" | "restore"; status: "started" | "ok" | "skipped" | "failed" | "done"."""
    message: Dict[str, Any] = {"type": MSG_PROGRESS, "phase": phase, "status": status, "message": text}
    if function is not None:
        message["function"] = function
    message.update(extra)
    return message


# --- Payload chunks -------------------------------------------------------------------------------
def max_chunks() -> int:
    return -(-MAX_PAYLOAD_BYTES // CHUNK_SIZE) + 1


def chunk_request_id(request_id: str, kind: str, index: int, delivery_id: Optional[str] = None) -> str:
    """The correlation-table key of one chunk of a large payload (``kind``: event or response).

    Response chunks carry the round's delivery id, so a local run answering an earlier round can never
    overwrite the chunks of the current one. Event chunks do not: every round of a request id carries
    the same event.
    """
    if delivery_id is None:
        return "%s#%s#%d" % (request_id, kind, index)
    return "%s#%s#%s#%d" % (request_id, kind, delivery_id, index)


def split_payload(data: bytes) -> List[bytes]:
    return [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)] or [b""]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- Credentials ----------------------------------------------------------------------------------
def without_credentials(environment: Mapping[str, str]) -> Dict[str, str]:
    """The environment safe to store at rest: no AWS access keys or session tokens."""
    return {k: v for k, v in environment.items() if k not in CREDENTIAL_VARIABLES}


# --- Reconnect token chain --------------------------------------------------------------------------
# The client keeps a random seed. The session stores anchor = H^N(seed). A reconnect presents
# H^(N-k)(seed) for the k-th reconnect; the authorizer accepts a token whose hash equals the stored
# anchor and replaces the anchor with it. A token works once, and none can be derived from those seen.
def _h(value: str) -> str:
    return hashlib.sha256(value.encode("ascii")).hexdigest()


def reconnect_token(seed: str, remaining: int) -> str:
    """H^remaining(seed): the anchor for remaining=N, the k-th reconnect token for remaining=N-k."""
    value = seed
    for _ in range(remaining):
        value = _h(value)
    return value


def reconnect_token_matches(token: str, anchor: str) -> bool:
    if not isinstance(token, str) or not re.match(r"^[0-9a-f]{64}$", token):
        return False
    return hmac.compare_digest(_h(token), anchor)


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


def execute_api_url(url: str, environ: Optional[Mapping[str, str]] = None) -> str:
    """The URL to use for an execute-api URL, honouring PLLDB_EXECUTE_API_ENDPOINT."""
    base = (os.environ if environ is None else environ).get(EXECUTE_API_ENDPOINT_VARIABLE, "")
    match = _EXECUTE_API_URL.match(url)
    if not base or not match:
        return url
    host = re.sub(r"^[a-z]+://", "", base).rstrip("/")
    secure = base.startswith("https://")
    websocket = match.group("scheme") in ("wss", "ws")
    scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
    return "%s://%s/%s%s" % (scheme, host, match.group("api"), match.group("path") or "")
