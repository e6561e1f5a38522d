"""API Gateway WebSocket data plane for the local cloud.

Serves every WEBSOCKET API found in moto's in-process apigatewayv2 backend the way
``wss://{apiId}.execute-api.{region}.amazonaws.com/{stage}`` behaves on AWS, on one local port:

* ``ws://HOST:PORT/{apiId}/{stage}``: the client endpoint. ``$connect`` runs its REQUEST authorizer and
  its integration while the upgrade request waits; messages go to the route chosen by the API's route
  selection expression (``$default`` otherwise); ``$disconnect`` runs after the connection ends, however
  it ends.
* ``http://HOST:PORT/{apiId}/{stage}/@connections/{connectionId}``: the management API (POST, GET,
  DELETE), so boto3's ``apigatewaymanagementapi`` client works against it unchanged.

Integrations are AWS_PROXY Lambda integrations, invoked through the ``invoke_lambda`` callable with
API Gateway's WebSocket proxy event shapes (MOCK integrations are accepted and do nothing). The AWS
quotas that shape a client's behaviour are enforced and configurable through :class:`WebSocketLimits`.

Behaviour chosen where AWS documents nothing precise (each checked against AWS's docs and reports):

* Message and frame quotas are checked on the raw byte stream, frame by frame, before aiohttp assembles
  messages (:class:`_FrameLimitGate`): aiohttp only knows whole-message sizes, while API Gateway also
  refuses any single frame above 32 KB. Either breach closes the connection with 1009 "Message too big".
* Data messages in either direction (client messages, management-API posts, route responses) count as
  activity for the idle timeout; ping/pong control frames are answered but do not count. Idle timeout
  and maximum connection duration both close with 1001 "Going away".
* API Gateway invokes the integration of each message independently: it gives no ordering guarantee
  between a connection's messages and does not wait for one message's integration before the next (AWS
  re:Post answers say so; ordered processing takes an SQS FIFO queue behind the route). This emulator
  hands each message to its route in arrival order without waiting for earlier ones to finish:
  messages of one connection and of different connections run concurrently, at most
  ``WebSocketLimits.messages_in_flight_per_connection`` per connection (a later one waits for a free
  slot before its integration timeout starts).
* ``$disconnect`` runs after the connection's in-flight messages have finished (each is bounded by the
  integration timeout). AWS documents no order here, only that ``$disconnect`` is best-effort and comes
  after the connection closed; the emulator picks the order in which a route never sees messages of a
  connection whose ``$disconnect`` it has already handled.
* A dropped transport (``cut``, ``restart`` or a client vanishing) reaches ``$disconnect`` as
  1006 "Connection closed abnormally"; a client close frame without a status as
  1005 "Client-side close frame status not set", as AWS reports it; DeleteConnection closes with 1000.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.http_websocket import WebSocketError, WebSocketWriter
from aiohttp.web_request import BaseRequest
from moto.apigatewayv2.models import apigatewayv2_backends

from plldb.protocol import WEBSOCKET_FRAME_LIMIT, WEBSOCKET_MESSAGE_LIMIT

logger = logging.getLogger(__name__)

__all__ = ["LambdaFunctionError", "WebSocketGateway", "WebSocketLimits"]

_INVOCATION_THREADS = 64  # Lambda calls block for their whole duration; many may wait at once
_SHUTDOWN_SECONDS = 2.0

_CLOSE_OK = 1000
_CLOSE_GOING_AWAY = 1001
_CLOSE_NO_STATUS = 1005
_CLOSE_ABNORMAL = 1006
_CLOSE_TOO_BIG = 1009
_REASON_GOING_AWAY = "Going away"
_REASON_TOO_BIG = "Message too big"
_REASON_NO_STATUS = "Client-side close frame status not set"
_REASON_ABNORMAL = "Connection closed abnormally"

_LAMBDA_URI = re.compile(r"^arn:[^:]+:apigateway:[^:]+:lambda:path/[^/]+/functions/(?P<arn>.+)/invocations$")
_BODY_REFERENCE = re.compile(
    r"\$\{request\.body\.(?P<braced>[^}]+)\}|\$request\.body\.(?P<bare>[A-Za-z0-9_\-.]+)"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# The upgrade request's own hop-by-hop headers: the authorizer sees them, the $connect integration not.
_UPGRADE_HEADERS = frozenset({"connection", "upgrade"})
# Headers of a $connect result that the handshake itself owns.
_HANDSHAKE_HEADERS = frozenset(
    {
        "connection",
        "upgrade",
        "content-length",
        "content-type",
        "sec-websocket-accept",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "transfer-encoding",
    }
)


@dataclass(frozen=True)
class WebSocketLimits:
    """API Gateway's WebSocket quotas; tests shrink them to exercise each one quickly."""

    message_bytes: int = WEBSOCKET_MESSAGE_LIMIT  # one message, in either direction (128 KB)
    frame_bytes: int = WEBSOCKET_FRAME_LIMIT  # one client frame (32 KB)
    idle_timeout_seconds: float = 600.0  # no data message either way for this long closes (10 min)
    max_connection_seconds: float = 7200.0  # a connection lives at most this long (2 h)
    integration_timeout_seconds: float = 29.0  # API Gateway stops waiting for an integration after this
    # Not an AWS quota but the emulator's bound: integrations of one connection's messages running at
    # once. AWS runs each independently, limited only by Lambda concurrency; here a burst would start a
    # Lambda environment per message, which a small machine cannot start quickly enough.
    messages_in_flight_per_connection: int = 4


class LambdaFunctionError(Exception):
    """What ``invoke_lambda`` may raise when the function itself failed (Lambda's FunctionError).

    ``error`` is the function's error payload (errorMessage, errorType, ...). The gateway needs the
    message to tell an authorizer's deliberate "Unauthorized" (401) from a broken authorizer (500); any
    other exception with a ``payload`` attribute holding that JSON works as well.
    """

    def __init__(self, function_arn: str, error: Mapping[str, Any]) -> None:
        self.function_arn = function_arn
        self.error = dict(error)
        self.error_message = str(self.error.get("errorMessage", ""))
        self.error_type = str(self.error.get("errorType", ""))
        super().__init__(f"{function_arn} failed: {self.error_type}: {self.error_message}")


class _Rejected(Exception):
    """The upgrade request is answered with an HTTP error instead of a WebSocket."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


# --- small helpers --------------------------------------------------------------------------------
def _new_id() -> str:
    """An id shaped like API Gateway's connection and request ids (16 URL-safe characters)."""
    return base64.urlsafe_b64encode(os.urandom(11)).decode("ascii")


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000


def _request_time(epoch_ms: int) -> str:
    """API Gateway's requestTime, e.g. 19/Jan/2023:21:13:26 +0000 (independent of the locale)."""
    moment = time.gmtime(epoch_ms / 1000)
    month = _MONTHS[moment.tm_mon - 1]
    return (
        f"{moment.tm_mday:02d}/{month}/{moment.tm_year:04d}:"
        f"{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d} +0000"
    )


def _iso8601(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{os.urandom(12).hex()}"


def _lambda_arn(integration_uri: str) -> str:
    """The function ARN inside an apigateway ``.../functions/{arn}/invocations`` URI (or a bare ARN)."""
    match = _LAMBDA_URI.match(integration_uri)
    return match.group("arn") if match else integration_uri


def _error_text(exc: BaseException) -> str:
    """The function's errorMessage: from LambdaFunctionError, or any error carrying Lambda's payload."""
    if isinstance(exc, LambdaFunctionError):
        return exc.error_message
    payload = getattr(exc, "payload", None)
    if isinstance(payload, bytes | str):
        try:
            error = json.loads(payload)
        except ValueError:
            error = None
        if isinstance(error, dict) and isinstance(error.get("errorMessage"), str):
            return error["errorMessage"]
    return str(exc)


def _glob_matches(pattern: Any, value: str, ignore_case: bool = False) -> bool:
    """IAM-style wildcard match: ``*`` is any run of characters, ``?`` exactly one."""
    if not isinstance(pattern, str):
        return False
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


def _any_matches(patterns: Any, value: str, ignore_case: bool = False) -> bool:
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list):
        return False
    return any(_glob_matches(pattern, value, ignore_case) for pattern in patterns)


def _policy_allows(policy: Mapping[str, Any], method_arn: str) -> bool:
    """Evaluate an authorizer's policyDocument for ``execute-api:Invoke`` on ``method_arn``."""
    statements = policy.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        return False
    allowed = False
    for statement in statements:
        if not isinstance(statement, dict):
            continue
        if not _any_matches(statement.get("Action"), "execute-api:Invoke", ignore_case=True):
            continue
        if not _any_matches(statement.get("Resource"), method_arn):
            continue
        if statement.get("Effect") == "Deny":
            return False  # an explicit deny always wins
        if statement.get("Effect") == "Allow":
            allowed = True
    return allowed


def _select_route_key(expression: str | None, body: str | None) -> str | None:
    """Evaluate a ``$request.body.x`` route selection expression; None means "use $default"."""
    if not expression or body is None or "request.body" not in expression:
        return None
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    missing = False

    def resolve(match: re.Match[str]) -> str:
        nonlocal missing
        value: Any = message
        for part in (match.group("braced") or match.group("bare")).split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
        missing = True
        return ""

    key = _BODY_REFERENCE.sub(resolve, expression)
    return None if missing else key


def _gateway_message(text: str, connection_id: str, request_id: str) -> str:
    """The JSON text API Gateway sends a client when it cannot deliver its message, byte for byte."""
    return f'{{"message": "{text}", "connectionId":"{connection_id}", "requestId":"{request_id}"}}'


def _json_response(status: int, body: Any, error_type: str | None = None) -> web.Response:
    headers = {"x-amzn-RequestId": _new_id()}
    if error_type:
        headers["x-amzn-ErrorType"] = error_type
    text = "" if body is None else json.dumps(body)
    return web.Response(status=status, text=text, content_type="application/json", headers=headers)


# --- the frame and message quota, on the raw byte stream -------------------------------------------
class _FrameLimitGate:
    """Sits between aiohttp's connection and its WebSocket parser and measures every client frame.

    Only frame headers are parsed here (payload bytes are counted, not copied), so the check costs a few
    operations per frame. A header split across reads is held back until it is complete and admitted, so
    the parser only ever sees frames that passed. On a breach nothing more reaches the parser and
    ``on_breach`` runs once.
    """

    def __init__(
        self, parser: Any, frame_limit: int, message_limit: int, on_breach: Callable[[], None]
    ) -> None:
        self._parser = parser
        self._frame_limit = frame_limit
        self._message_limit = message_limit
        self._on_breach = on_breach
        self._held = b""  # the start of a frame header whose remaining bytes have not arrived yet
        self._payload_left = 0
        self._message_bytes = 0
        self._breached = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._breached:
            return False, b""
        if self._held:
            data, self._held = self._held + data, b""
        admitted, breached = self._scan(data)
        if breached:
            self._breached = True
            if admitted:
                self._parser.feed_data(data[:admitted])  # the complete frames before the oversized one
            self._on_breach()
            return False, b""
        if admitted < len(data):
            self._held = data[admitted:]
            data = data[:admitted]
        if not data:
            return False, b""
        return self._parser.feed_data(data)  # type: ignore[no-any-return]

    def feed_eof(self) -> None:
        self._parser.feed_eof()

    def _scan(self, data: bytes) -> tuple[int, bool]:
        """Walk the frames in ``data``: how many bytes may pass, and whether a frame broke a quota."""
        position = 0
        size = len(data)
        while position < size:
            if self._payload_left:
                step = min(self._payload_left, size - position)
                self._payload_left -= step
                position += step
                continue
            if size - position < 2:
                return position, False
            second = data[position + 1]
            length_code = second & 0x7F
            header_length = 2 + (2 if length_code == 126 else 8 if length_code == 127 else 0)
            header_length += 4 if second & 0x80 else 0
            if size - position < header_length:
                return position, False
            if length_code == 126:
                length = struct.unpack_from("!H", data, position + 2)[0]
            elif length_code == 127:
                length = struct.unpack_from("!Q", data, position + 2)[0]
            else:
                length = length_code
            opcode = data[position] & 0x0F
            if opcode <= 0x2:  # data frames; control frames are capped at 125 bytes by the protocol
                self._message_bytes = length if opcode else self._message_bytes + length
                if length > self._frame_limit or self._message_bytes > self._message_limit:
                    return position, True
            self._payload_left = length
            position += header_length
        return position, False


class _LimitedWebSocketResponse(web.WebSocketResponse):
    """aiohttp's WebSocketResponse with :class:`_FrameLimitGate` in front of its frame parser.

    aiohttp has no hook between the socket and its frame parser, so ``_post_start`` swaps the parser its
    connection handler feeds (``_payload_parser``) for the gate; this relies on aiohttp's internals as of
    the version pinned in constraints.txt.
    """

    def __init__(self, limits: WebSocketLimits, on_breach: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._limits = limits
        self._on_breach = on_breach
        self._transport: asyncio.Transport | None = None

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter) -> None:
        handler = request.protocol
        early = bytes(handler._message_tail)  # frames a client sent before seeing the 101 answer
        handler._message_tail = b""
        super()._post_start(request, protocol, writer)
        gate = _FrameLimitGate(
            handler._payload_parser, self._limits.frame_bytes, self._limits.message_bytes, self._on_breach
        )
        handler._payload_parser = gate
        self._transport = request.transport
        if early:
            gate.feed_data(early)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame, as a network failure would."""
        if self._transport is not None:
            self._transport.abort()


# --- connections -------------------------------------------------------------------------------------
class _Connection:
    """One client connection and what API Gateway remembers about it."""

    def __init__(
        self,
        *,
        api_id: str,
        stage: str,
        domain_name: str,
        stage_variables: Mapping[str, str],
        source_ip: str,
        user_agent: str | None,
        message_slots: int,
    ) -> None:
        self.connection_id = _new_id()
        self.api_id = api_id
        self.stage = stage
        self.domain_name = domain_name
        self.stage_variables = dict(stage_variables)
        self.source_ip = source_ip
        self.user_agent = user_agent
        self.connected_at_ms = _epoch_ms()
        self.last_active_epoch = time.time()
        self.last_active_monotonic = time.monotonic()
        self.authorizer: dict[str, Any] | None = None
        self.ws: _LimitedWebSocketResponse | None = None
        self.handshake_done = asyncio.Event()
        # ("message", text or bytes) | ("disconnect", (code, reason)) | ("end", None)
        self.inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.dispatcher: asyncio.Task[None] | None = None
        self.in_flight: set[asyncio.Task[None]] = set()  # messages handed to their routes, not yet done
        self.message_slots = asyncio.Semaphore(message_slots)  # its messages' integrations at once
        self.close_task: asyncio.Task[Any] | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.lifetime_timer: asyncio.TimerHandle | None = None
        self.closing = False  # no longer reachable through the management API
        self.dropped = False  # its transport is to be aborted, not closed
        self.finished = False
        self.close_code = _CLOSE_ABNORMAL
        self.close_reason = _REASON_ABNORMAL

    def touch(self) -> None:
        self.last_active_epoch = time.time()
        self.last_active_monotonic = time.monotonic()

    def identity(self) -> dict[str, str]:
        identity = {"sourceIp": self.source_ip}
        if self.user_agent is not None:
            identity["userAgent"] = self.user_agent
        return identity

    def request_context(
        self, route_key: str, event_type: str, request_id: str, now_ms: int
    ) -> dict[str, Any]:
        context: dict[str, Any] = {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": _request_time(now_ms),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": self.connected_at_ms,
            "requestTimeEpoch": now_ms,
            "identity": self.identity(),
            "requestId": request_id,
            "domainName": self.domain_name,
            "connectionId": self.connection_id,
            "apiId": self.api_id,
        }
        if self.authorizer is not None:
            context["authorizer"] = dict(self.authorizer)
        return context


@dataclass
class _Target:
    """Where a route's integration sends its events."""

    integration_type: str
    function_arn: str | None


# --- the gateway -----------------------------------------------------------------------------------------
class WebSocketGateway:
    """API Gateway's WebSocket data plane for the APIs in moto's in-process apigatewayv2 backend.

    ``invoke_lambda(function_arn, event)`` invokes a function synchronously and returns its parsed JSON
    result; it raises (preferably :class:`LambdaFunctionError`) when the function fails. It is called on
    the gateway's thread pool, never on its event loop.
    """

    def __init__(  # noqa: PLR0917 - the agreed interface takes these positionally too
        self,
        invoke_lambda: Callable[[str, dict], Any],
        host: str = "127.0.0.1",
        port: int = 0,
        limits: WebSocketLimits = WebSocketLimits(),
        account_id: str = "123456789012",
        region: str = "us-east-1",
    ) -> None:
        self._invoke_lambda = invoke_lambda
        self._host = host
        self._port = port
        self._limits = limits
        self._account_id = account_id
        self._region = region
        self._connections: dict[str, _Connection] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(_INVOCATION_THREADS, thread_name_prefix="websocket-gateway")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    def start(self) -> None:
        """Serve on a thread of its own; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("the WebSocket gateway is already running")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="websocket-gateway", daemon=True)
        self._thread.start()
        try:
            self._call(self._serve())
        except BaseException:
            self._halt_loop()
            raise

    def stop(self) -> None:
        """Close every connection with 1001 and stop serving.

        The local cloud is going away, not one connection, so no ``$disconnect`` integration runs: the
        Lambda functions it would call are being shut down too.
        """
        if self._loop is None or self._thread is None:
            return
        self._stopping = True
        try:
            self._call(self._shutdown())
        finally:
            self._halt_loop()
            self._executor.shutdown(wait=False, cancel_futures=True)

    def restart(self) -> None:
        """Drop every connection abruptly and serve again on the same port, as after an outage."""
        self._call(self._restart())

    def cut(self, connection_id: str) -> None:
        """Drop one connection as a network failure would: no close frame, then ``$disconnect``."""
        self._call(self._cut(connection_id))

    def connection_ids(self) -> list[str]:
        """Ids of the connections that are open now."""
        with self._lock:
            return [cid for cid, conn in self._connections.items() if not conn.closing]

    def websocket_url(self, api_id: str, stage: str) -> str:
        return f"ws://{self._host}:{self._port}/{api_id}/{stage}"

    def management_url(self, api_id: str, stage: str) -> str:
        return f"http://{self._host}:{self._port}/{api_id}/{stage}"

    def _call(self, coroutine: Any) -> Any:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the WebSocket gateway is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _halt_loop(self) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = None
        self._thread = None

    def _application(self) -> web.Application:
        # The management API's own 128 KB check answers PayloadTooLargeException, so aiohttp's body
        # limit must sit well above it.
        app = web.Application(client_max_size=max(16 * 1024 * 1024, 2 * self._limits.message_bytes))
        app.router.add_route("GET", "/{api_id}/{stage}", self._handle_upgrade)
        app.router.add_route("POST", "/{api_id}/{stage}/@connections/{connection_id}", self._handle_post)
        app.router.add_route("GET", "/{api_id}/{stage}/@connections/{connection_id}", self._handle_get)
        app.router.add_route("DELETE", "/{api_id}/{stage}/@connections/{connection_id}", self._handle_delete)
        return app

    async def _serve(self) -> None:
        runner = web.AppRunner(self._application(), access_log=None, shutdown_timeout=_SHUTDOWN_SECONDS)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = site.port

    async def _shutdown(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
        for conn in connections:
            self._close(conn, _CLOSE_GOING_AWAY, _REASON_GOING_AWAY)
        closing = [conn.close_task for conn in connections if conn.close_task is not None]
        if closing:
            await asyncio.wait(closing, timeout=_SHUTDOWN_SECONDS)
        tasks = [conn.dispatcher for conn in connections if conn.dispatcher is not None]
        tasks += [task for conn in connections for task in conn.in_flight]
        for task in tasks:
            task.cancel()  # a Lambda call still running keeps its thread, not the loop
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _restart(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
        for conn in connections:
            self._drop(conn)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._serve()

    async def _cut(self, connection_id: str) -> None:
        with self._lock:
            conn = self._connections.get(connection_id)
        if conn is None or conn.closing:
            raise KeyError(f"no open connection {connection_id!r}")
        self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        """Abort a connection's transport (at once, or as soon as its handshake is written)."""
        if not conn.closing:
            conn.closing = True
            conn.close_code, conn.close_reason = _CLOSE_ABNORMAL, _REASON_ABNORMAL
        conn.dropped = True
        if conn.ws is not None:
            conn.ws.abort()

    def _close(self, conn: _Connection, code: int, reason: str) -> None:
        """Close a connection from the gateway's side with a close frame (idempotent)."""
        if conn.closing:
            return
        conn.closing = True
        conn.close_code, conn.close_reason = code, reason
        conn.close_task = asyncio.ensure_future(self._send_close(conn, code, reason))

    @staticmethod
    async def _send_close(conn: _Connection, code: int, reason: str) -> None:
        await conn.handshake_done.wait()
        ws = conn.ws
        if ws is not None and ws.prepared and not ws.closed:
            await ws.close(code=code, message=reason.encode("utf-8"))

    # --- moto's model --------------------------------------------------------------------------------------
    def _api_and_stage(self, api_id: str, stage_name: str) -> tuple[Any, Any] | None:
        backend = apigatewayv2_backends[self._account_id][self._region]
        api = backend.apis.get(api_id)
        if api is None or api.protocol_type != "WEBSOCKET":
            return None
        stage = api.stages.get(stage_name)
        return None if stage is None else (api, stage)

    @staticmethod
    def _route(api: Any, route_key: str) -> Any:
        for route in list(api.routes.values()):
            if route.route_key == route_key:
                return route
        return None

    @staticmethod
    def _target(api: Any, route: Any) -> _Target | None:
        target = route.target or ""
        if not target.startswith("integrations/"):
            return None
        integration = api.integrations.get(target[len("integrations/") :])
        if integration is None:
            return None
        kind = (integration.integration_type or "").upper()
        arn = _lambda_arn(integration.integration_uri) if integration.integration_uri else None
        return _Target(kind, arn)

    def _domain_name(self, api_id: str) -> str:
        return f"{api_id}.execute-api.{self._region}.amazonaws.com"

    # --- invoking Lambda -------------------------------------------------------------------------------------
    async def _invoke(self, target: _Target, event: dict[str, Any], timeout: float | None) -> Any:
        """Run one integration on the thread pool; MOCK integrations answer nothing."""
        if target.integration_type == "MOCK":
            return None
        if target.integration_type != "AWS_PROXY" or not target.function_arn:
            raise RuntimeError(f"unsupported integration type {target.integration_type!r}")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._invoke_lambda, target.function_arn, event)
        if timeout is None:
            return await future
        return await asyncio.wait_for(future, timeout)

    # --- $connect ---------------------------------------------------------------------------------------------
    async def _handle_upgrade(self, request: web.Request) -> web.StreamResponse:
        found = self._api_and_stage(request.match_info["api_id"], request.match_info["stage"])
        if found is None:
            return _json_response(403, {"message": "Forbidden"})
        api, stage = found
        probe = web.WebSocketResponse()
        if not probe.can_prepare(request).ok:
            return _json_response(426, {"message": "Upgrade Required"})
        conn = _Connection(
            api_id=api.api_id,
            stage=stage.name,
            domain_name=self._domain_name(api.api_id),
            stage_variables=stage.stage_variables or {},
            source_ip=request.remote or "127.0.0.1",
            user_agent=request.headers.get("User-Agent"),
            message_slots=self._limits.messages_in_flight_per_connection,
        )
        try:
            handshake_headers = await self._run_connect(request, api, conn)
        except _Rejected as rejection:
            response = _json_response(rejection.status, {"message": rejection.message})
            response.headers.update(rejection.headers)
            return response
        subprotocol = handshake_headers.pop("Sec-WebSocket-Protocol", None)
        ws = _LimitedWebSocketResponse(
            self._limits,
            lambda: self._close(conn, _CLOSE_TOO_BIG, _REASON_TOO_BIG),
            protocols=(subprotocol,) if subprotocol else (),
            compress=False,
            autoping=True,
            max_msg_size=self._limits.message_bytes + 1,  # the gate enforces the quota itself
        )
        ws.headers.update(handshake_headers)
        conn.ws = ws
        # Registered before the 101 leaves, so a post racing the client's first look at the socket is
        # delivered (it waits for the handshake) instead of answered with GoneException.
        self._open(conn)
        try:
            await ws.prepare(request)
            opened = True
        except (ConnectionError, RuntimeError):
            # The client left while $connect ran: the connection existed for API Gateway, so it ends
            # the usual way, with $disconnect.
            opened = False
            conn.closing = True
        conn.handshake_done.set()
        if conn.dropped:
            ws.abort()
        conn.touch()
        try:
            if opened:
                await self._receive(conn, ws)
        finally:
            self._finish(conn)
        return ws

    async def _run_connect(self, request: web.Request, api: Any, conn: _Connection) -> dict[str, str]:
        """Authorizer then integration of ``$connect``; the headers its integration adds to the 101."""
        route = self._route(api, "$connect")
        if route is None:
            return {}
        if (route.authorization_type or "").upper() == "CUSTOM" and route.authorizer_id:
            conn.authorizer = await self._authorize(request, api, route.authorizer_id, conn)
        target = self._target(api, route)
        if target is None:
            return {}
        event = self._connect_event(request, conn)
        try:
            result = await self._invoke(target, event, self._limits.integration_timeout_seconds)
        except TimeoutError:
            raise _Rejected(504, "Endpoint request timed out")
        except Exception as exc:
            logger.warning("$connect integration of %s failed: %s", conn.api_id, exc)
            raise _Rejected(502, "Internal server error")
        if not isinstance(result, dict):
            return {}
        status = result.get("statusCode", 200)
        if not isinstance(status, int) or isinstance(status, bool):
            raise _Rejected(502, "Internal server error")
        if not 200 <= status < 300:
            raise _Rejected(status, "Forbidden" if status == 403 else "Connection refused")
        headers = result.get("headers")
        if not isinstance(headers, dict):
            return {}
        handshake: dict[str, str] = {}
        for name, value in headers.items():
            if name.lower() == "sec-websocket-protocol":
                handshake["Sec-WebSocket-Protocol"] = str(value)
            elif name.lower() not in _HANDSHAKE_HEADERS:
                handshake[name] = str(value)
        return handshake

    async def _authorize(
        self, request: web.Request, api: Any, authorizer_id: str, conn: _Connection
    ) -> dict[str, Any]:
        """Run the REQUEST authorizer; the ``requestContext.authorizer`` its Allow grants."""
        authorizer = api.authorizers.get(authorizer_id)
        if authorizer is None or not authorizer.authorizer_uri:
            raise _Rejected(500, "Internal server error")
        if not self._identity_present(request, authorizer.identity_source, conn):
            raise _Rejected(401, "Unauthorized")
        method_arn = (
            f"arn:aws:execute-api:{self._region}:{self._account_id}:{conn.api_id}/{conn.stage}/$connect"
        )
        event = self._authorizer_event(request, conn, method_arn)
        target = _Target("AWS_PROXY", _lambda_arn(authorizer.authorizer_uri))
        started = time.monotonic()
        try:
            result = await self._invoke(target, event, self._limits.integration_timeout_seconds)
        except TimeoutError:
            raise _Rejected(504, "Endpoint request timed out")
        except Exception as exc:
            if _error_text(exc) == "Unauthorized":
                raise _Rejected(401, "Unauthorized")
            logger.warning("authorizer of %s failed: %s", conn.api_id, exc)
            raise _Rejected(500, "Internal server error")
        latency_ms = int((time.monotonic() - started) * 1000)
        if not isinstance(result, dict) or not isinstance(result.get("policyDocument"), dict):
            logger.warning("authorizer of %s returned no policyDocument", conn.api_id)
            raise _Rejected(500, "Internal server error")
        context = result.get("context") or {}
        if not isinstance(context, dict) or any(isinstance(v, dict | list) for v in context.values()):
            logger.warning("authorizer of %s returned a context that is not flat", conn.api_id)
            raise _Rejected(500, "Internal server error")
        if not _policy_allows(result["policyDocument"], method_arn):
            raise _Rejected(403, "Forbidden")
        granted: dict[str, Any] = dict(context)
        granted["principalId"] = result.get("principalId")
        granted["integrationLatency"] = latency_ms
        return granted

    @staticmethod
    def _identity_present(request: web.Request, identity_source: Any, conn: _Connection) -> bool:
        """Whether every identity source has a non-empty value (a missing one means 401 at once)."""
        if isinstance(identity_source, str):
            identity_source = [part.strip() for part in identity_source.split(",")]
        for source in identity_source or []:
            value: str | None
            if source.startswith("route.request.header."):
                value = request.headers.get(source[len("route.request.header.") :])
            elif source.startswith("route.request.querystring."):
                value = request.query.get(source[len("route.request.querystring.") :])
            elif source.startswith("stageVariables."):
                value = conn.stage_variables.get(source[len("stageVariables.") :])
            else:
                value = "present"  # context variables always exist
            if not value:
                return False
        return True

    def _request_headers(
        self, request: web.Request, conn: _Connection, keep_upgrade: bool
    ) -> dict[str, list[str]]:
        """The upgrade request's headers as API Gateway forwards them (Host names the API's domain)."""
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            lowered = name.lower()
            if lowered in ("host", "x-forwarded-for", "x-forwarded-port", "x-forwarded-proto"):
                continue
            if lowered in _UPGRADE_HEADERS and not keep_upgrade:
                continue
            headers.setdefault(name, []).append(value)
        headers["Host"] = [conn.domain_name]
        headers.setdefault("X-Amzn-Trace-Id", [_trace_id()])
        headers["X-Forwarded-For"] = [conn.source_ip]
        headers["X-Forwarded-Port"] = ["443"]
        headers["X-Forwarded-Proto"] = ["https"]
        return headers

    @staticmethod
    def _query(request: web.Request) -> dict[str, list[str]]:
        query: dict[str, list[str]] = {}
        for name, value in request.query.items():
            query.setdefault(name, []).append(value)
        return query

    def _authorizer_event(self, request: web.Request, conn: _Connection, method_arn: str) -> dict[str, Any]:
        headers = self._request_headers(request, conn, keep_upgrade=True)
        query = self._query(request)
        context = conn.request_context("$connect", "CONNECT", _new_id(), _epoch_ms())
        context.pop("authorizer", None)
        return {
            "type": "REQUEST",
            "methodArn": method_arn,
            "headers": {name: values[-1] for name, values in headers.items()},
            "multiValueHeaders": headers,
            "queryStringParameters": {name: values[-1] for name, values in query.items()},
            "multiValueQueryStringParameters": query,
            "stageVariables": dict(conn.stage_variables),
            "requestContext": context,
        }

    def _connect_event(self, request: web.Request, conn: _Connection) -> dict[str, Any]:
        headers = self._request_headers(request, conn, keep_upgrade=False)
        event: dict[str, Any] = {
            "headers": {name: values[-1] for name, values in headers.items()},
            "multiValueHeaders": headers,
        }
        query = self._query(request)
        if query:
            event["queryStringParameters"] = {name: values[-1] for name, values in query.items()}
            event["multiValueQueryStringParameters"] = query
        if conn.stage_variables:
            event["stageVariables"] = dict(conn.stage_variables)
        event["requestContext"] = conn.request_context("$connect", "CONNECT", _new_id(), _epoch_ms())
        event["isBase64Encoded"] = False
        return event

    # --- an open connection ---------------------------------------------------------------------------------
    def _open(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            self._connections[conn.connection_id] = conn
        conn.dispatcher = loop.create_task(self._dispatch(conn))
        conn.idle_timer = loop.call_later(self._limits.idle_timeout_seconds, self._check_idle, conn)
        conn.lifetime_timer = loop.call_later(
            self._limits.max_connection_seconds, self._close, conn, _CLOSE_GOING_AWAY, _REASON_GOING_AWAY
        )

    def _check_idle(self, conn: _Connection) -> None:
        """Close an idle connection, or look again when it would next become idle."""
        if conn.closing:
            return
        idle_for = time.monotonic() - conn.last_active_monotonic
        remaining = self._limits.idle_timeout_seconds - idle_for
        if remaining <= 0:
            self._close(conn, _CLOSE_GOING_AWAY, _REASON_GOING_AWAY)
            return
        conn.idle_timer = asyncio.get_running_loop().call_later(remaining, self._check_idle, conn)

    async def _receive(self, conn: _Connection, ws: _LimitedWebSocketResponse) -> None:
        while True:
            message = await ws.receive()
            if message.type is WSMsgType.TEXT or message.type is WSMsgType.BINARY:
                conn.touch()
                conn.inbox.put_nowait(("message", message.data))
            elif message.type is WSMsgType.CLOSE:
                if not conn.closing:
                    conn.closing = True
                    code = int(message.data or 0)
                    conn.close_code = code or _CLOSE_NO_STATUS
                    conn.close_reason = (message.extra or "") if code else _REASON_NO_STATUS
                return
            else:  # CLOSING (we are closing), CLOSED or ERROR (the transport or the protocol failed)
                if not conn.closing:
                    conn.closing = True
                    error = message.data
                    if isinstance(error, WebSocketError):
                        conn.close_code, conn.close_reason = int(error.code), str(error)
                    else:
                        conn.close_code, conn.close_reason = _CLOSE_ABNORMAL, _REASON_ABNORMAL
                return

    def _finish(self, conn: _Connection) -> None:
        """Forget a connection that ended; its pending messages and then ``$disconnect`` still run."""
        if conn.finished:
            return
        conn.finished = True
        conn.closing = True
        with self._lock:
            self._connections.pop(conn.connection_id, None)
        for timer in (conn.idle_timer, conn.lifetime_timer):
            if timer is not None:
                timer.cancel()
        if not self._stopping:
            conn.inbox.put_nowait(("disconnect", (conn.close_code, conn.close_reason)))
        conn.inbox.put_nowait(("end", None))

    async def _dispatch(self, conn: _Connection) -> None:
        """Hand each of a connection's messages to its route as it arrives; ``$disconnect`` after them all."""
        while True:
            kind, payload = await conn.inbox.get()
            if kind == "message":
                task = asyncio.ensure_future(self._deliver_concurrently(conn, payload))
                conn.in_flight.add(task)
                task.add_done_callback(conn.in_flight.discard)
            elif kind == "disconnect":
                if conn.in_flight:
                    await asyncio.wait(set(conn.in_flight))
                try:
                    await self._disconnect(conn, *payload)
                except Exception:
                    logger.exception("$disconnect of connection %s failed", conn.connection_id)
            else:
                return

    async def _deliver_concurrently(self, conn: _Connection, data: str | bytes) -> None:
        """One message's route, in one of its connection's slots, independent of its other messages."""
        async with conn.message_slots:
            try:
                await self._deliver(conn, data)
            except Exception:
                logger.exception("route invocation for connection %s failed", conn.connection_id)

    async def _deliver(self, conn: _Connection, data: str | bytes) -> None:
        found = self._api_and_stage(conn.api_id, conn.stage)
        if found is None:
            return
        api, _ = found
        request_id = _new_id()
        route_key = _select_route_key(api.route_selection_expression, data if isinstance(data, str) else None)
        route = self._route(api, route_key) if route_key and not route_key.startswith("$") else None
        if route is None:
            route = self._route(api, "$default")
        if route is None:
            await self._send(conn, _gateway_message("Forbidden", conn.connection_id, request_id))
            return
        target = self._target(api, route)
        if target is None:
            await self._send(conn, _gateway_message("Internal server error", conn.connection_id, request_id))
            return
        now_ms = _epoch_ms()
        context = conn.request_context(route.route_key, "MESSAGE", request_id, now_ms)
        context = {"routeKey": context.pop("routeKey"), "messageId": _new_id(), **context}
        binary = isinstance(data, bytes)
        body = base64.b64encode(data).decode("ascii") if isinstance(data, bytes) else data
        event = {"requestContext": context, "body": body, "isBase64Encoded": binary}
        try:
            result = await self._invoke(target, event, self._limits.integration_timeout_seconds)
        except TimeoutError:
            await self._send(
                conn, _gateway_message("Endpoint request timed out", conn.connection_id, request_id)
            )
            return
        except Exception as exc:
            logger.warning("route %s of %s failed: %s", route.route_key, conn.api_id, exc)
            await self._send(conn, _gateway_message("Internal server error", conn.connection_id, request_id))
            return
        if route.route_responses and isinstance(result, dict) and isinstance(result.get("body"), str):
            if result.get("isBase64Encoded"):
                try:
                    await self._send(conn, base64.b64decode(result["body"]))
                except binascii.Error:
                    logger.warning("route %s returned a body that is not base64", route.route_key)
            else:
                await self._send(conn, result["body"])

    async def _disconnect(self, conn: _Connection, code: int, reason: str) -> None:
        found = self._api_and_stage(conn.api_id, conn.stage)
        if found is None:
            return
        api, _ = found
        route = self._route(api, "$disconnect")
        target = self._target(api, route) if route is not None else None
        if target is None:
            return
        now_ms = _epoch_ms()
        headers = {"Host": conn.domain_name, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
        context = conn.request_context("$disconnect", "DISCONNECT", _new_id(), now_ms)
        ordered = {
            "routeKey": context.pop("routeKey"),
            "disconnectStatusCode": code,
            "eventType": context.pop("eventType"),
            "disconnectReason": reason,
            **context,
        }
        event: dict[str, Any] = {
            "headers": headers,
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
        }
        if conn.stage_variables:
            event["stageVariables"] = dict(conn.stage_variables)
        event["requestContext"] = ordered
        event["isBase64Encoded"] = False
        try:
            await self._invoke(target, event, None)
        except Exception as exc:
            logger.warning("$disconnect of %s failed: %s", conn.api_id, exc)

    async def _send(self, conn: _Connection, data: str | bytes) -> bool:
        """Send one message to a client; False when the connection is already gone."""
        if not conn.handshake_done.is_set():
            await conn.handshake_done.wait()
        ws = conn.ws
        if conn.closing or ws is None or ws.closed:
            return False
        try:
            if isinstance(data, str):
                await ws.send_str(data)
            else:
                await ws.send_bytes(data)
        except (ConnectionError, RuntimeError):
            return False
        conn.touch()
        return True

    # --- the management API ---------------------------------------------------------------------------------
    def _management_target(self, request: web.Request) -> _Connection | web.Response:
        """The open connection a management request names, or the error response AWS would give."""
        authorization = request.headers.get("Authorization", "")
        if not (authorization.startswith("AWS4-HMAC-SHA256 ") and "Signature=" in authorization):
            return _json_response(403, {"message": "Missing Authentication Token"}, "ForbiddenException")
        api_id, stage = request.match_info["api_id"], request.match_info["stage"]
        if self._api_and_stage(api_id, stage) is None:
            return _json_response(403, {"message": "Forbidden"}, "ForbiddenException")
        with self._lock:
            conn = self._connections.get(request.match_info["connection_id"])
        if conn is None or conn.closing or conn.api_id != api_id or conn.stage != stage:
            return _json_response(410, None, "GoneException")
        return conn

    async def _handle_post(self, request: web.Request) -> web.Response:
        target = self._management_target(request)
        if isinstance(target, web.Response):
            return target
        data = await request.read()
        if len(data) > self._limits.message_bytes:
            return _json_response(413, {"message": "Message too long"}, "PayloadTooLargeException")
        try:
            message: str | bytes = data.decode("utf-8")
        except UnicodeDecodeError:
            message = data
        if not await self._send(target, message):
            return _json_response(410, None, "GoneException")
        return web.Response(status=200, headers={"x-amzn-RequestId": _new_id()})

    async def _handle_get(self, request: web.Request) -> web.Response:
        target = self._management_target(request)
        if isinstance(target, web.Response):
            return target
        body = {
            "connectedAt": _iso8601(target.connected_at_ms / 1000),
            "identity": {"sourceIp": target.source_ip, "userAgent": target.user_agent or ""},
            "lastActiveAt": _iso8601(target.last_active_epoch),
        }
        return _json_response(200, body)

    async def _handle_delete(self, request: web.Request) -> web.Response:
        target = self._management_target(request)
        if isinstance(target, web.Response):
            return target
        self._close(target, _CLOSE_OK, "")
        return web.Response(status=204, headers={"x-amzn-RequestId": _new_id()})
