"""The WebSocket API's REQUEST authorizer on $connect: the session id in the query string is the secret.

A first connection (``?sessionId=S``) is allowed only for a session that exists, is PENDING and has
not expired; the same conditional update flips it to ACTIVE with this connection's id, so a session
id connects at most once and of two racing connects exactly one wins. A reconnection
(``?sessionId=S&reconnectToken=T``) is allowed for an ACTIVE, unexpired session whose
ReconnectAnchor is H(T); the anchor becomes T and the ConnectionId the new connection in one
conditional update, so each token works once. Everything else is denied and logged at INFO.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from plldb import protocol
from plldb.bootstrap.cloudformation.handlers.common import (
    Resources,
    configure_logging,
    log,
    now_seconds,
    redact,
)

LOGGER = configure_logging("plldb.authorizer")
RESOURCES = Resources().warm_up("dynamodb")

SESSION_ID_PATTERN = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
QUERY_SESSION_ID = "sessionId"
QUERY_RECONNECT_TOKEN = "reconnectToken"


def handler(event: Dict[str, Any], context: Any) -> Dict[str, Any]:
    return authorize(event, RESOURCES)


def authorize(event: Mapping[str, Any], resources: Resources) -> Dict[str, Any]:
    """The IAM policy API Gateway applies to this connection attempt."""
    method_arn = str(event.get("methodArn") or "")
    request_context = event.get("requestContext") or {}
    connection_id = str(request_context.get("connectionId") or "")
    query = event.get("queryStringParameters") or {}
    session_id = query.get(QUERY_SESSION_ID)
    token = query.get(QUERY_RECONNECT_TOKEN)
    if not isinstance(session_id, str) or not SESSION_ID_PATTERN.match(session_id):
        return _deny(method_arn, "missing or malformed session id", session_id=None)
    if not connection_id:
        return _deny(method_arn, "no connection id in the request", session_id=session_id)
    if token is None:
        allowed, reason, session = _activate(resources, session_id, connection_id)
        reconnect = False
    else:
        allowed, reason, session = _reconnect(resources, session_id, str(token), connection_id)
        reconnect = True
    if not allowed:
        return _deny(method_arn, reason, session_id=session_id)
    log(
        LOGGER,
        logging.INFO,
        "connection allowed",
        session=redact(session_id),
        connectionId=connection_id,
        reconnect=reconnect,
    )
    return {
        "principalId": "plldb-session-" + session_id[:8],
        "policyDocument": _policy("Allow", method_arn),
        "context": {
            "sessionId": session_id,
            "stackName": str((session or {}).get(protocol.A_STACK_NAME, "")),
            "reconnect": "true" if reconnect else "false",
        },
    }


def _activate(
    resources: Resources, session_id: str, connection_id: str
) -> Tuple[bool, str, Optional[Dict[str, Any]]]:
    """PENDING -> ACTIVE with this connection, only if unexpired: one conditional update."""
    now = now_seconds()
    session = resources.update_session(
        session_id,
        "SET #status = :active, #conn = :conn, #ttl = :ttl",
        "attribute_exists(#sid) AND #status = :pending AND #ttl > :now",
        {
            "#sid": protocol.A_SESSION_ID,
            "#status": protocol.A_STATUS,
            "#conn": protocol.A_CONNECTION_ID,
            "#ttl": protocol.A_TTL,
        },
        {
            ":active": {"S": protocol.STATUS_ACTIVE},
            ":pending": {"S": protocol.STATUS_PENDING},
            ":conn": {"S": connection_id},
            ":ttl": {"N": str(now + protocol.SESSION_TTL_SECONDS)},
            ":now": {"N": str(now)},
        },
        return_new=True,
    )
    if session is None:
        return False, _why_refused(resources, session_id, now), None
    return True, "", session


def _reconnect(
    resources: Resources, session_id: str, token: str, connection_id: str
) -> Tuple[bool, str, Optional[Dict[str, Any]]]:
    """An ACTIVE session moves to a new connection when the token hashes to its anchor."""
    now = now_seconds()
    session = resources.get_session(session_id)
    if session is None:
        return False, "no such session", None
    if session.get(protocol.A_STATUS) != protocol.STATUS_ACTIVE:
        return False, "session is %s, not ACTIVE" % session.get(protocol.A_STATUS), None
    if int(session.get(protocol.A_TTL) or 0) <= now:
        return False, "session has expired", None
    anchor = session.get(protocol.A_RECONNECT_ANCHOR)
    if not isinstance(anchor, str) or not protocol.reconnect_token_matches(token, anchor):
        return False, "reconnect token does not match the session", None
    moved = resources.update_session(
        session_id,
        "SET #anchor = :token, #conn = :conn, #ttl = :ttl REMOVE #disc",
        "#status = :active AND #anchor = :anchor AND #ttl > :now",
        {
            "#anchor": protocol.A_RECONNECT_ANCHOR,
            "#conn": protocol.A_CONNECTION_ID,
            "#ttl": protocol.A_TTL,
            "#disc": protocol.A_DISCONNECTED_AT,
            "#status": protocol.A_STATUS,
        },
        {
            ":token": {"S": token},
            ":conn": {"S": connection_id},
            ":ttl": {"N": str(now + protocol.SESSION_TTL_SECONDS)},
            ":active": {"S": protocol.STATUS_ACTIVE},
            ":anchor": {"S": anchor},
            ":now": {"N": str(now)},
        },
        return_new=True,
    )
    if moved is None:
        return False, "the session changed meanwhile (token already used)", None
    return True, "", moved


def _why_refused(resources: Resources, session_id: str, now: int) -> str:
    session = resources.get_session(session_id)
    if session is None:
        return "no such session"
    status = session.get(protocol.A_STATUS)
    if int(session.get(protocol.A_TTL) or 0) <= now:
        return "session has expired"
    if status == protocol.STATUS_ACTIVE:
        return "session is already connected (a session id connects once)"
    return "session is %s, not PENDING" % status


def _deny(method_arn: str, reason: str, session_id: Optional[str]) -> Dict[str, Any]:
    log(LOGGER, logging.INFO, "connection denied", reason=reason, session=redact(session_id))
    return {"principalId": "plldb-denied", "policyDocument": _policy("Deny", method_arn)}


def _policy(effect: str, method_arn: str) -> Dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": method_arn}],
    }
