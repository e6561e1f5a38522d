"""API Gateway WebSocket events as AWS sends them to the route integrations, and IAM callers.

$connect is authorized with AWS_IAM: API Gateway puts the signer's identity into
requestContext.identity of the $connect event only (accountId, caller, user, userArn, accessKey, with the
source address and user agent); $disconnect and $default events carry only the address and user agent.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
API_ID = "h4testapi1"
STAGE = "plldb"
DOMAIN = f"{API_ID}.execute-api.{REGION}.amazonaws.com"


@dataclass(frozen=True)
class Caller:
    """An IAM identity as API Gateway reports the signer of a request."""

    user_arn: str
    user_id: str
    access_key: str

    def identity(self) -> dict[str, str]:
        return {
            "accountId": ACCOUNT_ID,
            "caller": self.user_id,
            "user": self.user_id,
            "userArn": self.user_arn,
            "accessKey": self.access_key,
        }


def assumed_role(role: str, session_name: str, role_id: str = "AROA3XFRBF535PLBIFPI4") -> Caller:
    return Caller(
        f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/{session_name}",
        f"{role_id}:{session_name}",
        "ASIA" + uuid.uuid4().hex[:16].upper(),
    )


def iam_user(name: str) -> Caller:
    return Caller(
        f"arn:aws:iam::{ACCOUNT_ID}:user/{name}", "AIDA" + uuid.uuid4().hex[:17].upper(), "AKIAEXAMPLE"
    )


ALICE = assumed_role("Developer", "alice@example.com")
ALICE_REFRESHED = assumed_role("Developer", "alice-refreshed")  # the same principal, a new role session
BOB = iam_user("bob")
ADMIN_ALICE = assumed_role("Admin", "alice@example.com", role_id="AROA4ADMINROLEID0001")


def new_connection_id() -> str:
    """API Gateway connection ids look like 'LuHwzfXCoAMCJkQ=' (16 characters)."""
    return base64.b64encode(os.urandom(11)).decode()[:15] + "="


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
        "identity": {"sourceIp": "192.0.2.10", "userAgent": "Python/3.12 websockets/13.1"},
        "requestId": uuid.uuid4().hex[:16] + "=",
        "domainName": DOMAIN,
        "connectionId": connection_id,
        "apiId": API_ID,
    }


def connect_event(connection_id: str, query: dict[str, str] | None, caller: Caller | None) -> dict[str, Any]:
    """$connect of an AWS_IAM route: the signer's identity (None: a route without IAM authorization)."""
    context = _request_context(connection_id, "$connect", "CONNECT")
    if caller is not None:
        context["identity"].update(caller.identity())
    headers = {"Host": DOMAIN, "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    return {
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "requestContext": context,
        "isBase64Encoded": False,
    }


def disconnect_event(connection_id: str) -> dict[str, Any]:
    context = _request_context(connection_id, "$disconnect", "DISCONNECT")
    context["disconnectStatusCode"] = 1006
    context["disconnectReason"] = ""
    return {"headers": {"Host": DOMAIN}, "requestContext": context, "isBase64Encoded": False}


def message_event(connection_id: str, body: str | bytes, binary: bool = False) -> dict[str, Any]:
    context = _request_context(connection_id, "$default", "MESSAGE")
    context["messageId"] = uuid.uuid4().hex[:16] + "="
    if binary:
        raw = body if isinstance(body, bytes) else body.encode()
        return {"requestContext": context, "body": base64.b64encode(raw).decode(), "isBase64Encoded": True}
    return {"requestContext": context, "body": body, "isBase64Encoded": False}
