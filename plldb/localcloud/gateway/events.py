"""Connections, routing and the events API Gateway sends a WebSocket API's Lambda integrations."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from plldb.localcloud.gateway.framing import CLOSE_ABNORMAL, REASON_ABNORMAL, LimitedWebSocketResponse

_LAMBDA_URI = re.compile(r"^arn:[^:]+:apigateway:[^:]+:lambda:path/[^/]+/functions/(?P<arn>.+)/invocations$")
_BODY_REFERENCE = re.compile(
    r"\$\{request\.body\.(?P<braced>[^}]+)\}|\$request\.body\.(?P<bare>[A-Za-z0-9_\-.]+)"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# The upgrade request's own hop-by-hop headers: the authorizer sees them, the $connect integration not.
_UPGRADE_HEADERS = frozenset({"connection", "upgrade"})
# Headers of a $connect result that the handshake itself owns.
HANDSHAKE_HEADERS = frozenset(
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


# --- small helpers --------------------------------------------------------------------------------
def new_id() -> str:
    """An id shaped like API Gateway's connection and request ids (16 URL-safe characters)."""
    return base64.urlsafe_b64encode(os.urandom(11)).decode("ascii")


def epoch_ms() -> int:
    return time.time_ns() // 1_000_000


def request_time(epoch_ms: int) -> str:
    """API Gateway's requestTime, e.g. 19/Jan/2023:21:13:26 +0000 (independent of the locale)."""
    moment = time.gmtime(epoch_ms / 1000)
    month = _MONTHS[moment.tm_mon - 1]
    return (
        f"{moment.tm_mday:02d}/{month}/{moment.tm_year:04d}:"
        f"{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d} +0000"
    )


def iso8601(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{os.urandom(12).hex()}"


def lambda_arn(integration_uri: str) -> str:
    """The function ARN inside an apigateway ``.../functions/{arn}/invocations`` URI (or a bare ARN)."""
    match = _LAMBDA_URI.match(integration_uri)
    return match.group("arn") if match else integration_uri


def select_route_key(expression: str | None, body: str | None) -> str | None:
    """Evaluate a ``$request.body.x`` route selection expression; None means "use $default"."""
    if not expression or body is None or "request.body" not in expression:
        return None
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # a body too deeply nested to parse selects no route key either
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


def gateway_message(text: str, connection_id: str, request_id: str) -> str:
    """The JSON text API Gateway sends a client when it cannot deliver its message, byte for byte."""
    return f'{{"message": "{text}", "connectionId":"{connection_id}", "requestId":"{request_id}"}}'


def json_response(status: int, body: Any, error_type: str | None = None) -> web.Response:
    headers = {"x-amzn-RequestId": new_id()}
    if error_type:
        headers["x-amzn-ErrorType"] = error_type
    text = "" if body is None else json.dumps(body)
    return web.Response(status=status, text=text, content_type="application/json", headers=headers)


# --- connections -------------------------------------------------------------------------------------
class Connection:
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection_id = new_id()
        self.api_id = api_id
        self.stage = stage
        self.domain_name = domain_name
        self.stage_variables = dict(stage_variables)
        self.source_ip = source_ip
        self.user_agent = user_agent
        self.connected_at_ms = epoch_ms()
        self._clock = clock  # the gateway's clock of the idle and lifetime limits
        self.opened_monotonic = clock()
        self.last_active_epoch = time.time()
        self.last_active_monotonic = clock()
        self.authorizer: dict[str, Any] | None = None
        self.iam_identity: dict[str, str] = {}  # the signer of an AWS_IAM $connect, in its events only
        self.ws: LimitedWebSocketResponse | None = None
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
        self.close_code = CLOSE_ABNORMAL
        self.close_reason = REASON_ABNORMAL

    def touch(self) -> None:
        self.last_active_epoch = time.time()
        self.last_active_monotonic = self._clock()

    def identity(self, event_type: str = "MESSAGE") -> dict[str, str]:
        """``requestContext.identity``: the caller's IAM identity on ``$connect`` only (API Gateway
        authorizes a WebSocket connection once, when it opens), its address and user agent always."""
        identity = dict(self.iam_identity) if event_type == "CONNECT" else {}
        identity["sourceIp"] = self.source_ip
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
            "requestTime": request_time(now_ms),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": self.connected_at_ms,
            "requestTimeEpoch": now_ms,
            "identity": self.identity(event_type),
            "requestId": request_id,
            "domainName": self.domain_name,
            "connectionId": self.connection_id,
            "apiId": self.api_id,
        }
        if self.authorizer is not None:
            context["authorizer"] = dict(self.authorizer)
        return context


@dataclass
class Target:
    """Where a route's integration sends its events."""

    integration_type: str
    function_arn: str | None


# --- routing ---------------------------------------------------------------------------------------------
def find_route(api: Any, route_key: str) -> Any:
    """The API's route with this key, if any."""
    for route in list(api.routes.values()):
        if route.route_key == route_key:
            return route
    return None


def route_target(api: Any, route: Any) -> Target | None:
    """Where a route's integration sends its events (None when it has no integration)."""
    target = route.target or ""
    if not target.startswith("integrations/"):
        return None
    integration = api.integrations.get(target[len("integrations/") :])
    if integration is None:
        return None
    kind = (integration.integration_type or "").upper()
    arn = lambda_arn(integration.integration_uri) if integration.integration_uri else None
    return Target(kind, arn)


def request_headers(request: web.Request, conn: Connection, keep_upgrade: bool) -> dict[str, list[str]]:
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
    headers.setdefault("X-Amzn-Trace-Id", [trace_id()])
    headers["X-Forwarded-For"] = [conn.source_ip]
    headers["X-Forwarded-Port"] = ["443"]
    headers["X-Forwarded-Proto"] = ["https"]
    return headers


def query_of(request: web.Request) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for name, value in request.query.items():
        query.setdefault(name, []).append(value)
    return query


def connect_event(request: web.Request, conn: Connection) -> dict[str, Any]:
    headers = request_headers(request, conn, keep_upgrade=False)
    event: dict[str, Any] = {
        "headers": {name: values[-1] for name, values in headers.items()},
        "multiValueHeaders": headers,
    }
    query = query_of(request)
    if query:
        event["queryStringParameters"] = {name: values[-1] for name, values in query.items()}
        event["multiValueQueryStringParameters"] = query
    if conn.stage_variables:
        event["stageVariables"] = dict(conn.stage_variables)
    event["requestContext"] = conn.request_context("$connect", "CONNECT", new_id(), epoch_ms())
    event["isBase64Encoded"] = False
    return event


def message_event(conn: Connection, route_key: str, request_id: str, data: str | bytes) -> dict[str, Any]:
    """The event of one message on a connection, routed to route_key."""
    context = conn.request_context(route_key, "MESSAGE", request_id, epoch_ms())
    context = {"routeKey": context.pop("routeKey"), "messageId": new_id(), **context}
    binary = isinstance(data, bytes)
    body = base64.b64encode(data).decode("ascii") if isinstance(data, bytes) else data
    return {"requestContext": context, "body": body, "isBase64Encoded": binary}


def disconnect_event(conn: Connection, code: int, reason: str) -> dict[str, Any]:
    """The ``$disconnect`` event of a connection that closed with code and reason."""
    headers = {"Host": conn.domain_name, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
    context = conn.request_context("$disconnect", "DISCONNECT", new_id(), epoch_ms())
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
    return event
