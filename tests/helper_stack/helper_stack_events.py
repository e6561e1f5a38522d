"""API Gateway WebSocket events as AWS sends them to the authorizer and to the route integrations."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
API_ID = "h4testapi1"
STAGE = "plldb"
DOMAIN = f"{API_ID}.execute-api.{REGION}.amazonaws.com"


def _request_context(connection_id: str, route_key: str, event_type: str) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    return {
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": uuid.uuid4().hex[:16] + "=",
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
        "messageDirection": "IN",
        "stage": STAGE,
        "connectedAt": now_ms,
        "requestTimeEpoch": now_ms,
        "identity": {"sourceIp": "127.0.0.1", "userAgent": "Python/3.11 websockets/13"},
        "requestId": uuid.uuid4().hex[:16] + "=",
        "domainName": DOMAIN,
        "connectionId": connection_id,
        "apiId": API_ID,
    }


def new_connection_id() -> str:
    """API Gateway connection ids look like 'LuHwzfXCoAMCJkQ=' (base64 of random bytes)."""
    return base64.b64encode(uuid.uuid4().bytes[:10]).decode()


def authorizer_event(connection_id: str, query: dict[str, str] | None) -> dict[str, Any]:
    """The REQUEST authorizer event of a WebSocket $connect."""
    headers = {"Host": DOMAIN, "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    return {
        "type": "REQUEST",
        "methodArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{API_ID}/{STAGE}/$connect",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "stageVariables": {},
        "requestContext": _request_context(connection_id, "$connect", "CONNECT"),
    }


def authorized(context: dict[str, Any], allow: dict[str, Any]) -> dict[str, Any]:
    """requestContext.authorizer as API Gateway passes an Allow's context (plus principalId)."""
    context["authorizer"] = {"principalId": allow["principalId"], **allow.get("context", {})}
    return context


def connect_event(connection_id: str, allow: dict[str, Any]) -> dict[str, Any]:
    context = authorized(_request_context(connection_id, "$connect", "CONNECT"), allow)
    return {"requestContext": context, "headers": {"Host": DOMAIN}, "isBase64Encoded": False}


def disconnect_event(connection_id: str, allow: dict[str, Any] | None) -> dict[str, Any]:
    context = _request_context(connection_id, "$disconnect", "DISCONNECT")
    if allow is not None:
        authorized(context, allow)
    context["disconnectStatusCode"] = 1001
    context["disconnectReason"] = "Going away"
    return {"requestContext": context, "headers": {"Host": DOMAIN}, "isBase64Encoded": False}


def message_event(
    connection_id: str, body: str | bytes, allow: dict[str, Any] | None, binary: bool = False
) -> dict[str, Any]:
    context = _request_context(connection_id, "$default", "MESSAGE")
    context["messageId"] = uuid.uuid4().hex[:16] + "="
    if allow is not None:
        authorized(context, allow)
    if binary:
        raw = body if isinstance(body, bytes) else body.encode()
        return {"requestContext": context, "body": base64.b64encode(raw).decode(), "isBase64Encoded": True}
    return {"requestContext": context, "body": body, "isBase64Encoded": False}
