"""The WebSocket API's $connect, $disconnect and $default routes (one function, dispatched by event type).

$connect asks the manager to instrument the session's stack (first connection only; a reconnect
keeps the instrumentation). $disconnect of the session's current connection records DisconnectedAt
and asks the manager to restore after a grace period unless the client reconnects meanwhile; a
stale connection's $disconnect changes nothing. $default takes the debugger's messages (ack,
response, ping, detach); a refused message gets an ``error`` message back and changes nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from typing import Any, Dict, Mapping, Optional, Tuple

from plldb import protocol
from plldb.bootstrap.cloudformation.handlers.common import (
    Resources,
    authorizer_context,
    configure_logging,
    error_code,
    from_item,
    is_condition_failure,
    log,
    now_millis,
    now_seconds,
    redact,
)

LOGGER = configure_logging("plldb.websocket")
RESOURCES = Resources().warm_up("dynamodb", "lambda_client", "connections")

OK = {"statusCode": 200}
MAX_REQUEST_ID_LENGTH = 128
CONNECTION_CACHE_TTL_SECONDS = 60.0

_connection_sessions: Dict[str, Tuple[str, float]] = {}
_cache_lock = threading.Lock()


def handler(event: Dict[str, Any], context: Any) -> Dict[str, Any]:
    kind = (event.get("requestContext") or {}).get("eventType")
    if kind == "CONNECT":
        return on_connect(event, RESOURCES)
    if kind == "DISCONNECT":
        return on_disconnect(event, RESOURCES)
    return on_message(event, RESOURCES)


# --- $connect ---------------------------------------------------------------------------------------
def on_connect(event: Mapping[str, Any], resources: Resources) -> Dict[str, Any]:
    connection_id = _connection_id(event)
    context = authorizer_context(event)
    session_id = context.get("sessionId")
    if not session_id:
        log(LOGGER, logging.WARNING, "connect without an authorized session", connectionId=connection_id)
        return {"statusCode": 403}
    _remember(connection_id, str(session_id))
    if str(context.get("reconnect")) == "true":
        log(
            LOGGER,
            logging.INFO,
            "session reconnected",
            session=redact(session_id),
            connectionId=connection_id,
        )
        return OK
    try:
        resources.invoke_manager_async({"action": "instrument", "sessionId": session_id})
    except Exception:
        LOGGER.exception(
            "could not ask the manager to instrument", extra={"fields": {"connectionId": connection_id}}
        )
        _close_session_of_connection(resources, str(session_id), connection_id)
        return {"statusCode": 500}
    log(LOGGER, logging.INFO, "session connected", session=redact(session_id), connectionId=connection_id)
    return OK


def _close_session_of_connection(resources: Resources, session_id: str, connection_id: str) -> None:
    """A connection that failed to open must not leave its session ACTIVE (it would block the stack)."""
    try:
        resources.update_session(
            session_id,
            "SET #status = :closed",
            "#conn = :conn",
            {"#status": protocol.A_STATUS, "#conn": protocol.A_CONNECTION_ID},
            {":closed": {"S": protocol.STATUS_CLOSED}, ":conn": {"S": connection_id}},
        )
    except Exception:
        LOGGER.exception("could not close the session of a failed connection")


# --- $disconnect ------------------------------------------------------------------------------------
def on_disconnect(event: Mapping[str, Any], resources: Resources) -> Dict[str, Any]:
    connection_id = _connection_id(event)
    session_id = _session_for(event, resources)
    _forget(connection_id)
    if not session_id:
        log(LOGGER, logging.INFO, "disconnect of a connection without a session", connectionId=connection_id)
        return OK
    now = now_seconds()
    marked = resources.update_session(
        session_id,
        "SET #disc = :now",
        "#conn = :conn AND #status = :active",
        {
            "#disc": protocol.A_DISCONNECTED_AT,
            "#conn": protocol.A_CONNECTION_ID,
            "#status": protocol.A_STATUS,
        },
        {":now": {"N": str(now)}, ":conn": {"S": connection_id}, ":active": {"S": protocol.STATUS_ACTIVE}},
    )
    if marked is None:
        log(
            LOGGER,
            logging.INFO,
            "disconnect of a connection that is no longer the session's; nothing to do",
            session=redact(session_id),
            connectionId=connection_id,
        )
        return OK
    resources.invoke_manager_async(
        {
            "action": "restore_if_abandoned",
            "sessionId": session_id,
            "connectionId": connection_id,
            "notBefore": time.time() + resources.disconnect_grace_seconds,
        }
    )
    log(
        LOGGER,
        logging.INFO,
        "session disconnected; restore scheduled unless it reconnects",
        session=redact(session_id),
        connectionId=connection_id,
        graceSeconds=resources.disconnect_grace_seconds,
    )
    return OK


# --- $default ---------------------------------------------------------------------------------------
def on_message(event: Mapping[str, Any], resources: Resources) -> Dict[str, Any]:
    connection_id = _connection_id(event)
    body: Any = event.get("body")
    if event.get("isBase64Encoded") and isinstance(body, str):
        try:
            body = base64.b64decode(body)
        except ValueError:
            body = None
    try:
        message = protocol.decode(body, protocol.CLIENT_MESSAGE_TYPES)
    except protocol.ProtocolError as exc:
        log(
            LOGGER,
            logging.INFO,
            "message refused",
            code=exc.code,
            reason=exc.message,
            connectionId=connection_id,
        )
        resources.post(connection_id, protocol.error_message(exc.code, exc.message, *_ids_of(body)))
        return OK
    session_id = _session_for(event, resources)
    kind = message["type"]
    if not session_id:
        resources.post(
            connection_id,
            protocol.error_message(
                protocol.ERR_SESSION_CLOSED,
                "this connection has no plldb session; run 'plldb attach' again",
                message.get("requestId"),
                message.get("deliveryId"),
            ),
        )
        return OK
    if kind == protocol.MSG_RESPONSE:
        _store_response(resources, connection_id, session_id, message)
    elif kind == protocol.MSG_ACK:
        _store_ack(resources, connection_id, session_id, message)
    elif kind == protocol.MSG_PING:
        _extend_session(resources, connection_id, session_id)
        resources.post(connection_id, {"type": protocol.MSG_PONG})
    elif kind == protocol.MSG_DETACH:
        log(LOGGER, logging.INFO, "detach requested", session=redact(session_id), connectionId=connection_id)
        resources.invoke_manager_async(
            {"action": "restore", "sessionId": session_id, "connectionId": connection_id}
        )
    return OK


def _store_response(
    resources: Resources, connection_id: str, session_id: str, message: Mapping[str, Any]
) -> None:
    """ResponseCode with Response, Error or chunk references: one conditional update, or nothing."""
    request_id, delivery_id = message["requestId"], message["deliveryId"]
    if not _valid_request_id(request_id):
        resources.post(connection_id, _unknown_request(request_id, delivery_id))
        return
    names = {"#code": protocol.A_RESPONSE_CODE}
    values: Dict[str, Any] = {":code": {"N": str(message["statusCode"])}}
    assignments = ["#code = :code"]
    if "payload" in message:
        names["#response"] = protocol.A_RESPONSE
        values[":response"] = {"S": message["payload"]}
        assignments.append("#response = :response")
    elif "payloadChunks" in message:
        names["#chunks"] = protocol.A_RESPONSE_CHUNKS
        names["#sha"] = protocol.A_RESPONSE_SHA256
        values[":chunks"] = {"N": str(message["payloadChunks"])}
        values[":sha"] = {"S": message["payloadSha256"]}
        assignments.extend(["#chunks = :chunks", "#sha = :sha"])
    if "error" in message:
        names["#error"] = protocol.A_ERROR
        values[":error"] = {"S": json.dumps(message["error"], separators=(",", ":"), ensure_ascii=False)}
        assignments.append("#error = :error")
    refusal = _conditional_update(
        resources,
        session_id=session_id,
        request_id=request_id,
        delivery_id=delivery_id,
        update="SET " + ", ".join(assignments),
        names=names,
        values=values,
    )
    if refusal is not None:
        resources.post(connection_id, refusal)
        return
    log(
        LOGGER,
        logging.DEBUG,
        "response stored",
        requestId=request_id,
        statusCode=message["statusCode"],
        session=redact(session_id),
    )
    resources.post(connection_id, protocol.stored_message(request_id, delivery_id))


def _store_ack(resources: Resources, connection_id: str, session_id: str, message: Mapping[str, Any]) -> None:
    request_id, delivery_id = message["requestId"], message["deliveryId"]
    if not _valid_request_id(request_id):
        resources.post(connection_id, _unknown_request(request_id, delivery_id))
        return
    refusal = _conditional_update(
        resources,
        session_id=session_id,
        request_id=request_id,
        delivery_id=delivery_id,
        update="SET #acked = :acked",
        names={"#acked": protocol.A_ACKED_AT},
        values={":acked": {"N": str(now_millis())}},
    )
    if refusal is not None:
        resources.post(connection_id, refusal)


def _conditional_update(
    resources: Resources,
    *,
    session_id: str,
    request_id: str,
    delivery_id: str,
    update: str,
    names: Dict[str, str],
    values: Dict[str, Any],
) -> Optional[Dict[str, Any]]:
    """Apply ``update`` to the request's item only if it is this session's, in this round, and unanswered.

    Returns None on success, else the error message to send back (the item is unchanged): the item as
    it was when the condition failed says why.
    """
    names = dict(
        names,
        **{
            "#rid": protocol.A_REQUEST_ID,
            "#sid": protocol.A_SESSION_ID,
            "#did": protocol.A_DELIVERY_ID,
            "#code": protocol.A_RESPONSE_CODE,
        },
    )
    values = dict(values, **{":sid": {"S": session_id}, ":did": {"S": delivery_id}})
    try:
        resources.dynamodb.update_item(
            TableName=resources.debugger_table,
            Key={protocol.A_REQUEST_ID: {"S": request_id}},
            UpdateExpression=update,
            ConditionExpression=(
                "attribute_exists(#rid) AND #sid = :sid AND #did = :did AND attribute_not_exists(#code)"
            ),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return None
    except Exception as exc:
        if not is_condition_failure(exc):
            raise
        old = from_item(getattr(exc, "response", {}).get("Item"))
    if old is None:
        old = from_item(
            resources.dynamodb.get_item(
                TableName=resources.debugger_table,
                Key={protocol.A_REQUEST_ID: {"S": request_id}},
                ConsistentRead=True,
            ).get("Item")
        )
    return _refusal(old, session_id, request_id, delivery_id)


def _refusal(
    old: Optional[Mapping[str, Any]], session_id: str, request_id: str, delivery_id: str
) -> Dict[str, Any]:
    """Why an ack or response for (request_id, delivery_id) cannot change the item ``old``."""
    if old is None or old.get(protocol.A_SESSION_ID) != session_id:
        return _unknown_request(request_id, delivery_id)
    if old.get(protocol.A_DELIVERY_ID) != delivery_id:
        text = (
            "this message is for an earlier delivery of the request; Lambda has delivered it again since, "
            "and only the newest delivery can be answered"
        )
        return protocol.error_message(protocol.ERR_STALE_DELIVERY, text, request_id, delivery_id)
    code = old.get(protocol.A_RESPONSE_CODE)
    if code == protocol.RESPONSE_CODE_TIMEOUT:
        text = "the function stopped waiting at its deadline; this answer came too late"
        return protocol.error_message(protocol.ERR_REQUEST_CLOSED, text, request_id, delivery_id)
    if code == protocol.RESPONSE_CODE_UNAVAILABLE:
        text = "the function stopped waiting because no debugger acknowledged the invocation in time"
        return protocol.error_message(protocol.ERR_REQUEST_CLOSED, text, request_id, delivery_id)
    if code is not None:
        text = "this request already has a response"
        return protocol.error_message(protocol.ERR_ALREADY_ANSWERED, text, request_id, delivery_id)
    return _unknown_request(request_id, delivery_id)  # not reachable: the condition held after all


def _unknown_request(request_id: Any, delivery_id: Optional[str] = None) -> Dict[str, Any]:
    return protocol.error_message(
        protocol.ERR_UNKNOWN_REQUEST,
        "no request %r is waiting in this session" % (str(request_id)[:MAX_REQUEST_ID_LENGTH],),
        str(request_id)[:MAX_REQUEST_ID_LENGTH],
        delivery_id,
    )


def _valid_request_id(request_id: str) -> bool:
    """Chunk items ('rid#kind#n') and oversized keys are never answerable requests."""
    return 0 < len(request_id) <= MAX_REQUEST_ID_LENGTH and "#" not in request_id


def _extend_session(resources: Resources, connection_id: str, session_id: str) -> None:
    """A live session keeps its TTL ahead of now (only while this is its current connection)."""
    resources.update_session(
        session_id,
        "SET #ttl = :ttl",
        "#conn = :conn AND #status = :active",
        {"#ttl": protocol.A_TTL, "#conn": protocol.A_CONNECTION_ID, "#status": protocol.A_STATUS},
        {
            ":ttl": {"N": str(now_seconds() + protocol.SESSION_TTL_SECONDS)},
            ":conn": {"S": connection_id},
            ":active": {"S": protocol.STATUS_ACTIVE},
        },
    )


# --- Helpers ----------------------------------------------------------------------------------------
def _connection_id(event: Mapping[str, Any]) -> str:
    return str((event.get("requestContext") or {}).get("connectionId") or "")


def _session_for(event: Mapping[str, Any], resources: Resources) -> Optional[str]:
    """The sender's session: from the authorizer's context, else the ConnectionId index (cached)."""
    session_id = authorizer_context(event).get("sessionId")
    if session_id:
        return str(session_id)
    connection_id = _connection_id(event)
    with _cache_lock:
        cached = _connection_sessions.get(connection_id)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    try:
        found = resources.session_id_for_connection(connection_id)
    except Exception as exc:
        log(
            LOGGER, logging.WARNING, "session lookup failed", code=error_code(exc), connectionId=connection_id
        )
        return None
    if found:
        _remember(connection_id, found)
    return found


def _remember(connection_id: str, session_id: str) -> None:
    with _cache_lock:
        _connection_sessions[connection_id] = (session_id, time.monotonic() + CONNECTION_CACHE_TTL_SECONDS)


def _forget(connection_id: str) -> None:
    with _cache_lock:
        _connection_sessions.pop(connection_id, None)


def _ids_of(body: Any) -> Tuple[Optional[str], Optional[str]]:
    """Best effort: the requestId and deliveryId of a refused message, so the sender can tell which failed."""
    try:
        if isinstance(body, bytes):
            body = body.decode("utf-8")
        if not isinstance(body, str) or len(body) > protocol.WEBSOCKET_MESSAGE_LIMIT:
            return None, None
        parsed = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    request_id, delivery_id = parsed.get("requestId"), parsed.get("deliveryId")
    return (
        request_id[:MAX_REQUEST_ID_LENGTH] if isinstance(request_id, str) else None,
        delivery_id
        if isinstance(delivery_id, str) and len(delivery_id) <= protocol.MAX_DELIVERY_ID_LENGTH
        else None,
    )
