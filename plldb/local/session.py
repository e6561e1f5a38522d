"""The debug session: the developer's end of the WebSocket between the deployed functions and local code.

It creates the session item, connects with the session id, keeps the connection alive across
drops and API Gateway's two-hour limit, runs each delivery of an invocation once (however often the
layer re-posts it; a Lambda retry of the same request id is a new delivery and runs again), answers it
inline, by chunk items or in fragments as the quotas require, and detaches by asking the manager to
restore every function.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import re
import secrets
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import boto3
import botocore.exceptions
from boto3.dynamodb.conditions import Key
from botocore.credentials import RefreshableCredentials
from botocore.session import get_session as new_botocore_session
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from plldb import protocol
from plldb.errors import PlldbError

ROLE_SESSION_NAME_LIMIT = 64
RESPONSE_RESEND_LIMIT = 3
MAX_CONCURRENT_INVOCATIONS = 64
ERROR_MESSAGE_BYTE_LIMIT = 16 * 1024  # error sizes, as encoded JSON: together well inside one message
ERROR_FIELD_BYTE_LIMIT = 1024
STACK_LINE_BYTE_LIMIT = 2048
STACK_TRACE_BYTE_LIMIT = 48 * 1024
SESSION_REJECTED_STATUSES = (401, 403)


# --- Values exchanged with the command that drives the session ------------------------------------------
@dataclass(frozen=True)
class IncomingInvocation:
    """One invocation delivered by the layer, with its event already reassembled."""

    request_id: str
    function_name: str
    handler: str
    event_json: str
    context: Mapping[str, Any]
    environment: Mapping[str, str]
    credentials: Mapping[str, str] | None


@dataclass(frozen=True)
class InvocationOutcome:
    """What the local run produced: a 200 with the result's JSON text, or a 500 with a Lambda error."""

    status_code: int
    payload: str | None = None
    error: Mapping[str, Any] | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status_code == protocol.RESPONSE_CODE_OK


InvocationRunner = Callable[[IncomingInvocation], InvocationOutcome]


@dataclass(frozen=True)
class SessionOutcome:
    """How the session ended: the exit code for the command and one line to show, if any."""

    exit_code: int
    message: str | None = None


@dataclass(frozen=True)
class ConnectionSettings:
    """Timing of the connection; the defaults fit API Gateway's quotas, tests shorten them."""

    keepalive_seconds: float = 300.0  # inside API Gateway's 10-minute idle timeout
    pong_timeout_seconds: float = 30.0
    max_connection_age_seconds: float = 2 * 3600 - 600  # rotate well before the 2-hour limit
    drain_seconds: float = protocol.CONNECTION_CACHE_SECONDS + 3.0  # layers may still post to the old one
    open_timeout_seconds: float = 15.0
    instrument_timeout_seconds: float = 300.0
    detach_timeout_seconds: float = 120.0
    response_confirm_seconds: float = 15.0
    reconnect_delays: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
    reconnect_give_up_seconds: float = 900.0
    protocol_ping_seconds: float | None = 30.0
    max_concurrency: int = MAX_CONCURRENT_INVOCATIONS


class SessionObserver:
    """Receives what happens in a session (the console implements it); every method is optional."""

    def on_connected(self) -> None: ...
    def on_connection_lost(self, reason: str) -> None: ...
    def on_reconnect_failed(self, attempt: int, reason: str) -> None: ...
    def on_reconnected(self, rotated: bool) -> None: ...
    def on_progress(self, message: Mapping[str, Any]) -> None: ...
    def on_instrumented(self, message: Mapping[str, Any]) -> None: ...
    def on_invocation_started(self, invocation: IncomingInvocation) -> None: ...
    def on_invocation_answered(self, invocation: IncomingInvocation, outcome: InvocationOutcome) -> None: ...
    def on_invocation_stored(self, request_id: str) -> None: ...
    def on_invocation_refused(self, request_id: str, code: str, message: str) -> None: ...
    def on_duplicate_invoke(self, request_id: str) -> None: ...
    def on_detaching(self) -> None: ...
    def on_warning(self, text: str) -> None: ...


# --- Payload chunks in the debugger table ------------------------------------------------------------------
class ChunkStore(Protocol):
    """Where payloads too large for a WebSocket message travel (the PLLDBDebugger table)."""

    def read(self, key: str) -> bytes | None: ...
    def write(self, key: str, data: bytes) -> None: ...


class DebuggerTableChunks:
    """Chunk items in the debugger table, read and written with the debugger role."""

    def __init__(self, session: boto3.Session, table_name: str) -> None:
        self._table = session.resource("dynamodb").Table(table_name)

    def read(self, key: str) -> bytes | None:
        item = self._table.get_item(Key={protocol.A_REQUEST_ID: key}, ConsistentRead=True).get("Item")
        if item is None or protocol.A_DATA not in item:
            return None
        data = item[protocol.A_DATA]
        return bytes(data.value) if hasattr(data, "value") else bytes(data)

    def write(self, key: str, data: bytes) -> None:
        self._table.put_item(
            Item={
                protocol.A_REQUEST_ID: key,
                protocol.A_DATA: data,
                protocol.A_TTL: int(time.time()) + protocol.DEBUGGER_ITEM_TTL_SECONDS,
            }
        )


class EventUnavailableError(Exception):
    """The event of an invocation could not be reassembled from its chunk items."""


def read_event_json(invoke: Mapping[str, Any], chunks: ChunkStore) -> str:
    """The event's JSON text: inline, or reassembled from chunk items and checked against its digest."""
    if isinstance(invoke.get("event"), str):
        return invoke["event"]
    count = invoke.get("eventChunks")
    digest = invoke.get("eventSha256")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= protocol.max_chunks():
        raise EventUnavailableError("the invoke message has neither 'event' nor a valid 'eventChunks'")
    request_id = invoke["requestId"]
    parts = []
    for index in range(count):
        part = chunks.read(protocol.chunk_request_id(request_id, protocol.CHUNK_KIND_EVENT, index))
        if part is None:
            raise EventUnavailableError(f"event chunk {index + 1} of {count} is missing")
        parts.append(part)
    data = b"".join(parts)
    if protocol.sha256_hex(data) != digest:
        raise EventUnavailableError("the event's chunks do not match its SHA-256 digest")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise EventUnavailableError("the event is not UTF-8 text")


def build_response_message(
    request_id: str, delivery_id: str, outcome: InvocationOutcome, chunks: ChunkStore
) -> dict[str, Any]:
    """The `response` message answering one delivery; a payload too large to inline is written as chunks."""
    if outcome.ok:
        payload = clean_text(outcome.payload) if outcome.payload is not None else "null"
        data = payload.encode("utf-8")
        if len(data) > protocol.MAX_PAYLOAD_BYTES:
            return build_response_message(request_id, delivery_id, response_too_large(len(data)), chunks)
        message: dict[str, Any] = {
            "type": protocol.MSG_RESPONSE,
            "requestId": request_id,
            "deliveryId": delivery_id,
            "statusCode": protocol.RESPONSE_CODE_OK,
            "payload": payload,
        }
        if protocol.message_size(message) <= protocol.INLINE_MESSAGE_LIMIT:
            return message
        parts = protocol.split_payload(data)
        for index, part in enumerate(parts):
            key = protocol.chunk_request_id(request_id, protocol.CHUNK_KIND_RESPONSE, index, delivery_id)
            chunks.write(key, part)
        return {
            "type": protocol.MSG_RESPONSE,
            "requestId": request_id,
            "deliveryId": delivery_id,
            "statusCode": protocol.RESPONSE_CODE_OK,
            "payloadChunks": len(parts),
            "payloadSha256": protocol.sha256_hex(data),
        }
    return {
        "type": protocol.MSG_RESPONSE,
        "requestId": request_id,
        "deliveryId": delivery_id,
        "statusCode": protocol.RESPONSE_CODE_ERROR,
        "error": fit_error(outcome.error or {}),
    }


def response_too_large(size: int) -> InvocationOutcome:
    """The error Lambda itself returns when a function's result exceeds the synchronous limit."""
    return InvocationOutcome(
        status_code=protocol.RESPONSE_CODE_ERROR,
        error={
            "errorMessage": f"Response payload size ({size} bytes) exceeded maximum allowed payload size "
            f"({protocol.MAX_PAYLOAD_BYTES} bytes).",
            "errorType": "Function.ResponseSizeTooLarge",
            "stackTrace": [],
        },
    )


def fit_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """A Lambda error object that fits one inline message (errors cannot travel by chunk items).

    Sizes are measured as encoded JSON, so escapes cannot push the message over the quota.
    """
    fitted: dict[str, Any] = {
        "errorMessage": fit_json_text(str(error.get("errorMessage", "")), ERROR_MESSAGE_BYTE_LIMIT),
        "errorType": fit_json_text(str(error.get("errorType") or "Error"), ERROR_FIELD_BYTE_LIMIT),
    }
    for key, value in error.items():  # e.g. requestId, as the Lambda runtime adds it
        extra = key not in fitted and key != "stackTrace" and isinstance(key, str) and isinstance(value, str)
        if extra and json_size(key) + json_size(value) <= ERROR_FIELD_BYTE_LIMIT:
            fitted[key] = clean_text(value)
    trace = error.get("stackTrace")
    lines = [str(line) for line in trace] if isinstance(trace, list) else []
    budget = STACK_TRACE_BYTE_LIMIT
    kept: list[str] = []
    for line in reversed(lines):  # the innermost frames are the useful ones
        line = fit_json_text(line, STACK_LINE_BYTE_LIMIT)
        budget -= json_size(line) + 1
        if budget < 0:
            kept.append("... (outer frames truncated)")
            break
        kept.append(line)
    fitted["stackTrace"] = list(reversed(kept))
    return fitted


def clean_text(text: str) -> str:
    """``text`` with anything UTF-8 cannot carry (lone surrogates) replaced."""
    return text.encode("utf-8", "replace").decode("utf-8")


def json_size(text: str) -> int:
    """Bytes of ``text`` as a JSON string in a message (quotes and escapes included)."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "replace"))


def fit_json_text(text: str, limit: int) -> str:
    """``text`` cut (at a character, marked) so that it takes at most ``limit`` bytes as a JSON string."""
    text = clean_text(text)
    if json_size(text) <= limit:
        return text
    marker = " ... (truncated)"
    low, high = 0, len(text)
    while low < high:  # the longest prefix that fits with the marker
        middle = (low + high + 1) // 2
        if json_size(text[:middle] + marker) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low] + marker


def split_fragments(text: str, limit: int = protocol.WEBSOCKET_FRAME_LIMIT) -> list[str]:
    """``text`` cut into fragments of at most ``limit`` UTF-8 bytes, never inside a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return [text]
    fragments = []
    start = 0
    while start < len(encoded):
        end = min(start + limit, len(encoded))
        while end < len(encoded) and (encoded[end] & 0xC0) == 0x80:  # continuation byte
            end -= 1
        fragments.append(encoded[start:end].decode("utf-8"))
        start = end
    return fragments


def short_id(identifier: str) -> str:
    """The first eight characters: enough to tell requests apart on screen, never a whole secret."""
    return identifier[:8]


# --- Session creation --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionRequest:
    """What the developer asked for; stored in the session item for the manager and the layer."""

    stack_name: str
    function_patterns: tuple[str, ...] = ()
    function_timeout: int = 900
    fallback: str = protocol.FALLBACK_ERROR


@dataclass(frozen=True)
class CreatedSession:
    """A PENDING session: the secret id, the seed of its reconnect tokens and the debugger-role session."""

    session_id: str = field(repr=False)
    reconnect_seed: str = field(repr=False)
    stack_name: str
    owner: str
    created_at: int
    debugger_session: boto3.Session = field(repr=False)


def role_session_name(caller_arn: str) -> str:
    """'plldb-<user>' within STS's character set and length, so CloudTrail shows who attached."""
    user = caller_arn.rsplit("/", 1)[-1] if "/" in caller_arn else ""
    if not user or user == caller_arn:
        with contextlib.suppress(Exception):
            user = getpass.getuser()
    cleaned = re.sub(r"[^\w+=,.@-]", "-", user or "user")
    return ("plldb-" + cleaned)[:ROLE_SESSION_NAME_LIMIT]


def assume_role_session(user_session: boto3.Session, role_arn: str, session_name: str) -> boto3.Session:
    """A boto3 session under ``role_arn`` whose credentials renew themselves for long debug sessions."""
    sts = user_session.client("sts")

    def fetch() -> dict[str, str]:
        credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name)["Credentials"]
        expiration = credentials["Expiration"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": expiration.isoformat() if hasattr(expiration, "isoformat") else str(expiration),
        }

    refreshable = RefreshableCredentials.create_from_metadata(
        metadata=fetch(), refresh_using=fetch, method="sts-assume-role"
    )
    botocore_session = new_botocore_session()
    botocore_session._credentials = refreshable  # type: ignore[attr-defined]
    if user_session.region_name:
        botocore_session.set_config_variable("region", user_session.region_name)
    return boto3.Session(botocore_session=botocore_session)


@dataclass(frozen=True)
class ExistingSession:
    """Another developer's live session on the same stack."""

    owner: str
    created_at: int
    status: str


def find_live_sessions(table: Any, stack_name: str, now: float | None = None) -> list[ExistingSession]:
    """PENDING or ACTIVE unexpired sessions of ``stack_name`` (StackName-index, every page)."""
    now = time.time() if now is None else now
    live = []
    query: dict[str, Any] = {
        "IndexName": protocol.STACK_INDEX,
        "KeyConditionExpression": Key(protocol.A_STACK_NAME).eq(stack_name),
    }
    while True:
        page = table.query(**query)
        for item in page.get("Items", []):
            if protocol.A_STATUS not in item or protocol.A_TTL not in item:
                item = table.get_item(
                    Key={protocol.A_SESSION_ID: item[protocol.A_SESSION_ID]}, ConsistentRead=True
                ).get("Item", {})
            status = item.get(protocol.A_STATUS)
            expires = int(item.get(protocol.A_TTL, 0))
            if status in (protocol.STATUS_PENDING, protocol.STATUS_ACTIVE) and expires > now:
                live.append(
                    ExistingSession(
                        owner=str(item.get(protocol.A_OWNER, "someone")),
                        created_at=int(item.get(protocol.A_CREATED_AT, 0)),
                        status=str(status),
                    )
                )
        if "LastEvaluatedKey" not in page:
            return live
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def describe_time(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def create_session(
    user_session: boto3.Session,
    debugger_role_arn: str,
    sessions_table_name: str,
    request: SessionRequest,
    take_over: Callable[[], None] | None = None,
) -> CreatedSession:
    """Assume the debugger role and write a PENDING session item (nothing else changes).

    Refuses when another live session exists for the stack, unless ``take_over`` is given: then it
    runs first (it restores the stack, ending the other session).
    """
    try:
        caller_arn = user_session.client("sts").get_caller_identity()["Arn"]
        debugger_session = assume_role_session(user_session, debugger_role_arn, role_session_name(caller_arn))
        table = debugger_session.resource("dynamodb").Table(sessions_table_name)
        live = find_live_sessions(table, request.stack_name)
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise PlldbError(
                f"The sessions table {sessions_table_name} does not exist.",
                "Run 'plldb bootstrap setup' to repair the helper stack.",
            )
        raise
    if live and take_over is None:
        other = live[0]
        raise PlldbError(
            f"Stack {request.stack_name!r} is already being debugged by {other.owner} "
            f"(since {describe_time(other.created_at)}).",
            "Ask them to detach, or run again with --take-over to end their session.",
        )
    if live and take_over is not None:
        take_over()
    now = int(time.time())
    session_id = str(uuid.uuid4())
    seed = secrets.token_hex(32)
    owner = f"{caller_arn} on {socket.gethostname()}"
    table.put_item(
        Item={
            protocol.A_SESSION_ID: session_id,
            protocol.A_STACK_NAME: request.stack_name,
            protocol.A_STATUS: protocol.STATUS_PENDING,
            protocol.A_TTL: now + protocol.SESSION_TTL_SECONDS,
            protocol.A_CREATED_AT: now,
            protocol.A_OWNER: owner,
            protocol.A_FUNCTION_PATTERNS: list(request.function_patterns),
            protocol.A_FUNCTION_TIMEOUT: request.function_timeout,
            protocol.A_FALLBACK: request.fallback,
            protocol.A_RECONNECT_ANCHOR: protocol.reconnect_token(seed, protocol.RECONNECT_CHAIN_LENGTH),
        },
        ConditionExpression="attribute_not_exists(SessionId)",
    )
    return CreatedSession(
        session_id=session_id,
        reconnect_seed=seed,
        stack_name=request.stack_name,
        owner=owner,
        created_at=now,
        debugger_session=debugger_session,
    )


def abandon_pending_session(created: CreatedSession, sessions_table_name: str) -> None:
    """Close a session that never connected, so it does not block the next attach until it expires."""
    table = created.debugger_session.resource("dynamodb").Table(sessions_table_name)
    with contextlib.suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        table.update_item(
            Key={protocol.A_SESSION_ID: created.session_id},
            UpdateExpression="SET #status = :closed",
            ConditionExpression="#status = :pending",
            ExpressionAttributeNames={"#status": protocol.A_STATUS},
            ExpressionAttributeValues={
                ":closed": protocol.STATUS_CLOSED,
                ":pending": protocol.STATUS_PENDING,
            },
        )


def session_url(websocket_url: str, session_id: str, reconnect_token: str | None = None) -> str:
    """The WebSocket URL with the session id (and, on reconnect, the token) in its query string."""
    parts = urlsplit(websocket_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.append(("sessionId", session_id))
    if reconnect_token is not None:
        query.append(("reconnectToken", reconnect_token))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


# --- The connected session ---------------------------------------------------------------------------------
RUNNING = "running"
ANSWERED = "answered"  # response sent, `stored` not yet received
CONFIRMED = "confirmed"
REFUSED = "refused"


@dataclass
class _InvocationState:
    """One delivery of an invocation (request id and the layer's delivery id) and how far it got."""

    request_id: str
    delivery_id: str
    function_name: str
    phase: str = RUNNING
    invocation: IncomingInvocation | None = None
    response: dict[str, Any] | None = None
    sent_at: float = 0.0
    sends: int = 0
    finished_at: float = 0.0

    @property
    def ack(self) -> dict[str, Any]:
        return protocol.ack_message(self.request_id, self.delivery_id)


@dataclass(eq=False)
class _Connection:
    websocket: ClientConnection
    opened_at: float
    number: int


class DebugSession:
    """The connected session; ``run()`` returns when detached or when the session cannot continue."""

    def __init__(
        self,
        *,
        websocket_url: str,
        session_id: str,
        reconnect_seed: str,
        stack_name: str,
        runner: InvocationRunner,
        chunks: ChunkStore,
        observer: SessionObserver | None = None,
        settings: ConnectionSettings | None = None,
    ) -> None:
        self._url = websocket_url
        self._session_id = session_id
        self._seed = reconnect_seed
        self._stack_name = stack_name
        self._runner = runner
        self._chunks = chunks
        self._observer = observer or SessionObserver()
        self._settings = settings or ConnectionSettings()
        # Keyed by (requestId, deliveryId): a re-post of a delivery finds its state, a retry does not.
        self._invocations: dict[tuple[str, str], _InvocationState] = {}
        self._latest_delivery: dict[str, str] = {}  # requestId -> its newest deliveryId seen
        self._current: _Connection | None = None
        self._connections: set[_Connection] = set()
        self._connection_count = 0
        self._reconnects = 0
        self._pong_waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._interrupts = 0
        self._detaching = False
        self._restore_failures: list[str] = []
        self._instrument_refusal: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[SessionOutcome] | None = None
        self._instrumented: asyncio.Future[None] | None = None
        self._restored: asyncio.Future[None] | None = None
        self._reconnect_lock: asyncio.Lock | None = None
        self._run_pool: ThreadPoolExecutor | None = None
        self._io_pool: ThreadPoolExecutor | None = None

    # -- public ------------------------------------------------------------------------------------------
    @property
    def reconnect_count(self) -> int:
        return self._reconnects

    @property
    def ever_connected(self) -> bool:
        """Whether the session item was claimed by a connection (else it is still PENDING)."""
        return self._connection_count > 0

    async def run(self) -> SessionOutcome:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._done = loop.create_future()
        self._instrumented = loop.create_future()
        self._restored = loop.create_future()
        self._reconnect_lock = asyncio.Lock()
        self._run_pool = ThreadPoolExecutor(self._settings.max_concurrency, thread_name_prefix="plldb-invoke")
        self._io_pool = ThreadPoolExecutor(8, thread_name_prefix="plldb-io")
        try:
            try:
                connection = await self._open(session_url(self._url, self._session_id))
            except InvalidStatus as exc:
                return SessionOutcome(1, self._rejected_message(exc.response.status_code, first=True))
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                return SessionOutcome(1, f"Could not connect to the debugger WebSocket API: {describe(exc)}.")
            self._adopt(connection)
            self._observer.on_connected()
            if self._detaching:  # interrupted while connecting
                await self._send({"type": protocol.MSG_DETACH})
            self._spawn(self._keepalive())
            self._spawn(self._resend_unconfirmed())
            self._spawn(self._watch_instrumentation())
            return await self._done
        finally:
            await self._shutdown()

    def interrupt(self) -> None:
        """Ctrl-C or SIGTERM: the first detaches cleanly, the second leaves at once."""
        if self._done is None or self._done.done():
            return
        self._interrupts += 1
        if self._interrupts == 1:
            self._spawn(self._detach())
        else:
            self._finish(
                130,
                "Left without waiting for the restore. The functions are restored "
                f"{protocol.DISCONNECT_GRACE_SECONDS} s after the connection closes; to restore them now run "
                f"'plldb detach --stack-name {self._stack_name}'.",
            )

    # -- connections --------------------------------------------------------------------------------------
    async def _open(self, url: str) -> _Connection:
        websocket = await connect(
            url,
            compression=None,
            open_timeout=self._settings.open_timeout_seconds,
            ping_interval=self._settings.protocol_ping_seconds,
            ping_timeout=self._settings.protocol_ping_seconds,
            close_timeout=5,
            max_size=2 * protocol.WEBSOCKET_MESSAGE_LIMIT,
            user_agent_header="plldb",
        )
        self._connection_count += 1
        return _Connection(websocket=websocket, opened_at=time.monotonic(), number=self._connection_count)

    def _adopt(self, connection: _Connection) -> None:
        """Make ``connection`` the one we send on; read it until it closes."""
        self._current = connection
        self._connections.add(connection)
        self._spawn(self._read(connection))
        self._spawn(self._rotate_when_old(connection))

    async def _read(self, connection: _Connection) -> None:
        try:
            async for raw in connection.websocket:
                self._handle(raw)
        except ConnectionClosed:
            pass
        finally:
            self._connections.discard(connection)
        if self._restored is not None and self._restored.done():
            return  # detached: the server may close the connection itself
        if connection is self._current and self._done is not None and not self._done.done():
            close = connection.websocket.close_code
            reason = "the connection closed" if close is None else f"the connection closed (code {close})"
            self._observer.on_connection_lost(reason)
            await self._recover(connection)

    async def _recover(self, lost: _Connection) -> None:
        assert self._reconnect_lock is not None
        async with self._reconnect_lock:
            if lost is not self._current:
                return  # a rotation already replaced it
            self._current = None
            connection = await self._reconnect()
            if connection is None:
                return
            self._adopt(connection)
            self._observer.on_reconnected(rotated=False)
            await self._after_reconnect()

    async def _rotate_when_old(self, connection: _Connection) -> None:
        """Before API Gateway's 2-hour limit: open the next connection, then close this one."""
        assert self._reconnect_lock is not None
        age = time.monotonic() - connection.opened_at
        await asyncio.sleep(max(0.0, self._settings.max_connection_age_seconds - age))
        async with self._reconnect_lock:
            if connection is not self._current or self._done is None or self._done.done():
                return
            replacement = await self._reconnect()
            if replacement is None:
                return
            self._adopt(replacement)
            self._observer.on_reconnected(rotated=True)
            if self._detaching:
                await self._send({"type": protocol.MSG_DETACH})
        await asyncio.sleep(self._settings.drain_seconds)  # layers may still post to the old one
        await connection.websocket.close()

    async def _reconnect(self) -> _Connection | None:
        """The next connection of the chain, with backoff; None (and the session finished) when impossible."""
        assert self._done is not None
        started = time.monotonic()
        skipped_ahead = False
        attempt = 0
        delays = self._settings.reconnect_delays
        while not self._done.done():
            if attempt:
                await asyncio.sleep(delays[min(attempt, len(delays) - 1)])
            attempt += 1
            index = self._reconnects + 1
            if index > protocol.RECONNECT_CHAIN_LENGTH:
                self._finish(
                    1,
                    f"This session has used all {protocol.RECONNECT_CHAIN_LENGTH} reconnects. "
                    f"Run 'plldb detach --stack-name {self._stack_name}', then attach again.",
                )
                return None
            token = protocol.reconnect_token(self._seed, protocol.RECONNECT_CHAIN_LENGTH - index)
            try:
                return await self._open_reconnect(token, index)
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in SESSION_REJECTED_STATUSES:
                    if not skipped_ahead:
                        # The token may have been consumed by an attempt that failed after authorizing.
                        skipped_ahead = True
                        self._reconnects = index
                        attempt = 0
                        continue
                    self._finish(1, self._rejected_message(status, first=False))
                    return None
                reason = f"HTTP {status}"
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                reason = describe(exc)
            self._observer.on_reconnect_failed(attempt, reason)
            if time.monotonic() - started > self._settings.reconnect_give_up_seconds:
                self._finish(
                    1,
                    f"Could not reconnect for {int(self._settings.reconnect_give_up_seconds)} s ({reason}). "
                    "The functions are restored by the server; check with "
                    f"'plldb detach --stack-name {self._stack_name}'.",
                )
                return None
        return None

    async def _open_reconnect(self, token: str, index: int) -> _Connection:
        connection = await self._open(session_url(self._url, self._session_id, token))
        self._reconnects = index
        return connection

    async def _after_reconnect(self) -> None:
        """Nothing is lost across a reconnect: re-acknowledge, re-send unconfirmed answers and a detach."""
        for state in list(self._invocations.values()):
            if state.phase == RUNNING:
                await self._send(state.ack)
            elif state.phase == ANSWERED and state.response is not None:
                await self._send_response(state)
        if self._detaching:
            await self._send({"type": protocol.MSG_DETACH})

    def _rejected_message(self, status: int, first: bool) -> str:
        if self._detaching and not first:
            return (
                f"The connection was lost while detaching and the session is now closed (HTTP {status}). "
                f"Run 'plldb detach --stack-name {self._stack_name}' to make sure every function is restored."
            )
        if first:
            return (
                f"The debugger WebSocket API refused the new session (HTTP {status}): it expired or was "
                "closed before it connected. Run 'plldb attach' again."
            )
        return (
            f"Could not reconnect: the session was closed (HTTP {status}), most likely because the "
            f"connection was down for more than {protocol.DISCONNECT_GRACE_SECONDS} s and the functions "
            "were restored, or another developer took over. Run 'plldb attach' again."
        )

    # -- sending ------------------------------------------------------------------------------------------
    async def _send(self, message: Mapping[str, Any], connection: _Connection | None = None) -> bool:
        """Send on ``connection`` (default: the current one), fragmented above the frame quota."""
        target = connection or self._current
        if target is None:
            return False
        text = protocol.encode(message)
        fragments = split_fragments(text)
        try:
            await target.websocket.send(fragments[0] if len(fragments) == 1 else fragments)
        except ConnectionClosed:
            return False
        return True

    async def _send_response(self, state: _InvocationState) -> None:
        assert state.response is not None
        state.sends += 1
        state.sent_at = time.monotonic()
        await self._send(state.response)

    # -- receiving ----------------------------------------------------------------------------------------
    def _handle(self, raw: str | bytes) -> None:
        try:
            message = protocol.decode(raw, protocol.SERVER_MESSAGE_TYPES)
        except protocol.ProtocolError as exc:
            self._observer.on_warning(f"Ignored a message from the server: {exc.message}")
            return
        kind = message["type"]
        if kind == protocol.MSG_INVOKE:
            self._on_invoke(message)
        elif kind == protocol.MSG_PROGRESS:
            self._on_progress(message)
        elif kind == protocol.MSG_STORED:
            state = self._state_for(message)
            if state is not None:
                self._on_stored(state)
        elif kind == protocol.MSG_ERROR:
            self._on_error(message)
        elif kind == protocol.MSG_PONG:
            for waiter in self._pong_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._pong_waiters.clear()

    def _on_invoke(self, message: dict[str, Any]) -> None:
        request_id, delivery_id = message["requestId"], message["deliveryId"]
        state = self._invocations.get((request_id, delivery_id))
        if state is not None:
            # The same delivery posted again (after a reconnect): never run twice; repeat what we said.
            self._observer.on_duplicate_invoke(request_id)
            if state.phase == RUNNING:
                self._spawn(self._send(state.ack))
            elif state.phase == ANSWERED:
                self._spawn(self._send_response(state))
            return
        # A new delivery: a first one, or Lambda retrying the request id. Either way it runs.
        self._forget_old_invocations()
        function_name = str(message["context"].get("functionName", "?"))
        state = _InvocationState(request_id, delivery_id, function_name)
        self._invocations[(request_id, delivery_id)] = state
        self._latest_delivery[request_id] = delivery_id
        self._spawn(self._send(state.ack))
        self._spawn(self._execute(message, state))

    def _state_for(self, message: Mapping[str, Any]) -> _InvocationState | None:
        """The delivery a server reply is about: the one it names, else the request's newest one."""
        request_id = message.get("requestId")
        if not isinstance(request_id, str):
            return None
        delivery_id = message.get("deliveryId")
        if not isinstance(delivery_id, str):
            delivery_id = self._latest_delivery.get(request_id)
        return self._invocations.get((request_id, delivery_id)) if delivery_id is not None else None

    async def _execute(self, message: dict[str, Any], state: _InvocationState) -> None:
        assert self._loop is not None
        request_id = message["requestId"]
        context = message["context"]
        started = time.monotonic()
        invocation: IncomingInvocation | None = None
        try:
            event_json = await self._loop.run_in_executor(
                self._io_pool, read_event_json, message, self._chunks
            )
            invocation = IncomingInvocation(
                request_id=request_id,
                function_name=state.function_name,
                handler=str(message.get("handler", "")),
                event_json=event_json,
                context=context,
                environment={str(k): str(v) for k, v in message["environment"].items()},
                credentials=message.get("credentials"),
            )
            state.invocation = invocation
            self._observer.on_invocation_started(invocation)
            outcome = await self._loop.run_in_executor(self._run_pool, self._runner, invocation)
        except EventUnavailableError as exc:
            outcome = local_failure("PlldbEventUnavailable", f"plldb could not read the event: {exc}")
        except Exception as exc:
            outcome = local_failure(
                "PlldbLocalError",
                f"plldb could not run the function locally: {type(exc).__name__}: {exc}",
                traceback.format_exception(exc),
            )
        if not outcome.duration_ms:
            outcome = InvocationOutcome(
                outcome.status_code, outcome.payload, outcome.error, (time.monotonic() - started) * 1000
            )
        try:
            state.response = await self._loop.run_in_executor(
                self._io_pool, build_response_message, request_id, state.delivery_id, outcome, self._chunks
            )
        except Exception as exc:
            outcome = local_failure(
                "PlldbResponseUnavailable", f"plldb could not send the response: {type(exc).__name__}: {exc}"
            )
            state.response = build_response_message(request_id, state.delivery_id, outcome, self._chunks)
        state.phase = ANSWERED
        if invocation is None:
            invocation = IncomingInvocation(
                request_id, state.function_name, str(message.get("handler", "")), "", context, {}, None
            )
            state.invocation = invocation
        self._observer.on_invocation_answered(invocation, outcome)
        await self._send_response(state)

    def _on_stored(self, state: _InvocationState) -> None:
        if state.phase != ANSWERED:
            return  # a repeated confirmation
        state.phase = CONFIRMED
        state.response = None
        state.finished_at = time.monotonic()
        self._observer.on_invocation_stored(state.request_id)

    def _on_error(self, message: dict[str, Any]) -> None:
        code = message["code"]
        state = self._state_for(message)
        if code == protocol.ERR_SESSION_CLOSED and not self._detaching:
            self._finish(
                1, f"The server closed this session: {message['message']}. Run 'plldb attach' again."
            )
            return
        if state is not None:
            if state.phase == RUNNING:
                # The acknowledgement was refused: the function stopped waiting for this delivery.
                self._observer.on_warning(f"Request {short_id(state.request_id)}: {message['message']}")
            elif state.phase == ANSWERED and code == protocol.ERR_ALREADY_ANSWERED:
                self._on_stored(state)  # an earlier send of this very answer was stored
            elif state.phase == ANSWERED:
                # RequestClosed (the layer gave up on this delivery), StaleDelivery (Lambda delivered
                # the request again since) or UnknownRequest: the answer reached no one.
                state.phase = REFUSED
                state.response = None
                state.finished_at = time.monotonic()
                self._observer.on_invocation_refused(state.request_id, code, message["message"])
            return
        self._observer.on_warning(f"The server refused a message: {code}: {message['message']}")

    def _on_progress(self, message: dict[str, Any]) -> None:
        assert self._instrumented is not None and self._restored is not None
        self._observer.on_progress(message)
        phase, status = message["phase"], message["status"]
        if phase == "instrument":
            if status == "failed" and "function" not in message:
                self._instrument_refusal = str(message.get("message", "instrumentation failed"))
            if status == "done" and not self._instrumented.done():
                self._instrumented.set_result(None)
                if isinstance(message.get("error"), str) and self._instrument_refusal is None:
                    self._instrument_refusal = message["error"]
                if self._instrument_refusal is not None and not self._detaching:
                    self._finish(1, f"The stack was not instrumented: {self._instrument_refusal}")
                    return
                self._observer.on_instrumented(message)
        elif phase == "restore":
            if status == "failed":
                self._restore_failures.append(str(message.get("function") or message.get("message", "")))
            if status == "done" and not self._restored.done():
                self._restored.set_result(None)
                if not self._detaching:
                    # Someone ran 'plldb detach' or '--take-over' elsewhere: this session is over.
                    self._finish(1, f"The session was ended elsewhere: {message.get('message', '')}")

    # -- background duties --------------------------------------------------------------------------------
    async def _keepalive(self) -> None:
        """A `ping` message inside the idle timeout; no `pong` in time means the connection is dead."""
        assert self._loop is not None
        while True:
            await asyncio.sleep(self._settings.keepalive_seconds)
            connection = self._current
            if connection is None:
                continue
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._pong_waiters.append(waiter)
            if not await self._send({"type": protocol.MSG_PING}, connection):
                continue
            try:
                await asyncio.wait_for(waiter, self._settings.pong_timeout_seconds)
            except TimeoutError:
                if connection is self._current:
                    self._observer.on_warning("No answer to the keep-alive ping; reconnecting.")
                    self._spawn(connection.websocket.close())

    async def _resend_unconfirmed(self) -> None:
        """Answers whose `stored` never came are sent again (a repeat is harmless: AlreadyAnswered)."""
        interval = self._settings.response_confirm_seconds
        while True:
            await asyncio.sleep(interval / 2)
            now = time.monotonic()
            for state in list(self._invocations.values()):
                if state.phase != ANSWERED or now - state.sent_at < interval:
                    continue
                if state.sends >= RESPONSE_RESEND_LIMIT:
                    state.phase = REFUSED
                    state.response = None
                    state.finished_at = now
                    self._observer.on_invocation_refused(
                        state.request_id,
                        "Unconfirmed",
                        f"the server did not confirm the answer after {state.sends} sends",
                    )
                elif self._current is not None:
                    await self._send_response(state)

    async def _watch_instrumentation(self) -> None:
        assert self._instrumented is not None
        try:
            await asyncio.wait_for(
                asyncio.shield(self._instrumented), self._settings.instrument_timeout_seconds
            )
        except TimeoutError:
            if not self._detaching:
                self._finish(
                    1,
                    f"The helper stack did not instrument the functions within "
                    f"{int(self._settings.instrument_timeout_seconds)} s. Check the manager function's logs, "
                    f"then run 'plldb detach --stack-name {self._stack_name}'.",
                )

    async def _detach(self) -> None:
        assert self._restored is not None
        self._detaching = True
        self._observer.on_detaching()
        await self._send({"type": protocol.MSG_DETACH})  # if the connection is down, sent after reconnect
        try:
            await asyncio.wait_for(asyncio.shield(self._restored), self._settings.detach_timeout_seconds)
        except TimeoutError:
            self._finish(
                1,
                f"The restore was not confirmed within {int(self._settings.detach_timeout_seconds)} s. "
                f"Run 'plldb detach --stack-name {self._stack_name}'.",
            )
            return
        if self._restore_failures:
            self._finish(
                1,
                "Some functions were not restored ("
                + ", ".join(self._restore_failures)
                + f"). Run 'plldb detach --stack-name {self._stack_name}'.",
            )
            return
        self._finish(0, None)

    def _forget_old_invocations(self) -> None:
        """Keep finished deliveries as long as the layer could re-post them, then let them go."""
        horizon = time.monotonic() - protocol.DEBUGGER_ITEM_TTL_SECONDS
        for key, state in list(self._invocations.items()):
            if state.phase in (CONFIRMED, REFUSED) and state.finished_at < horizon:
                del self._invocations[key]
                if self._latest_delivery.get(state.request_id) == state.delivery_id:
                    del self._latest_delivery[state.request_id]

    # -- lifecycle ----------------------------------------------------------------------------------------
    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self._done is not None and not self._done.done():
            self._finish(1, f"Internal error in the session: {type(error).__name__}: {error}")

    def _finish(self, exit_code: int, message: str | None) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(SessionOutcome(exit_code, message))

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        for connection in list(self._connections) + ([self._current] if self._current else []):
            with contextlib.suppress(Exception):
                await connection.websocket.close()
        self._current = None
        await asyncio.gather(*[t for t in self._tasks if t is not current], return_exceptions=True)
        for pool in (self._run_pool, self._io_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


def local_failure(error_type: str, message: str, stack_trace: list[str] | None = None) -> InvocationOutcome:
    """A Lambda-shaped error for failures on this side (the caller sees why, not a timeout)."""
    trace = [line.rstrip("\n") for line in stack_trace or []]
    return InvocationOutcome(
        status_code=protocol.RESPONSE_CODE_ERROR,
        error={"errorMessage": message, "errorType": error_type, "stackTrace": trace},
    )


def describe(exc: BaseException) -> str:
    """One line for a connection failure, never including the URL (it carries the session id)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).split("?", 1)[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
