"""The WebSocket API's routes: every change a developer makes to helper-stack state passes here.

``$connect`` is authorized by API Gateway with the developer's own IAM credentials (SigV4), so the
identity in ``requestContext.identity`` is AWS's word, not the client's. A first connection
(``?sessionId=S``) creates a PENDING session owned by that identity; it must ``open`` within
PENDING_SESSION_TTL_SECONDS. A reconnection (``?sessionId=S&reconnectToken=T``) moves an ACTIVE session
to the new connection when the same principal presents the next token of the session's chain.
``$default`` takes the developer's messages (open, release, ack, upload, response, ping, close); every
refusal is an ``error`` message and changes nothing. ``$disconnect`` schedules the restore of a session
that does not reconnect in time. Sessions, connections and stack locks are written by this stack's
functions only; nothing a client sends is trusted beyond its own session.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from plldb import protocol
from plldb.bootstrap.cloudformation.handlers import stack_locks
from plldb.bootstrap.cloudformation.handlers.common import (
    Resources,
    configure_logging,
    error_code,
    from_item,
    is_condition_failure,
    log,
    now_millis,
    now_seconds,
    redact,
    to_attribute_values,
)
from plldb.instrumentation import decisions, stacks

LOGGER = configure_logging("plldb.routes")
RESOURCES = Resources().warm_up("dynamodb", "lambda_client", "connections", "s3", "cloudformation")

OK = {"statusCode": 200}
FORBIDDEN = {"statusCode": 403}
CACHE_SECONDS = 60.0
MAX_RELEASE_CHECKS = 16  # functions read in parallel when verifying a release

_connection_sessions: dict[str, tuple[str, float]] = {}
_session_keys: dict[str, str] = {}
_cache_lock = threading.Lock()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    kind = (event.get("requestContext") or {}).get("eventType")
    if kind == "CONNECT":
        return on_connect(event, RESOURCES)
    if kind == "DISCONNECT":
        return on_disconnect(event, RESOURCES)
    return on_message(event, RESOURCES)


# --- $connect ---------------------------------------------------------------------------------------
def on_connect(event: Mapping[str, Any], resources: Resources) -> dict[str, Any]:
    connection_id = _connection_id(event)
    identity = (event.get("requestContext") or {}).get("identity") or {}
    owner = identity.get("userArn") if isinstance(identity, dict) else None
    query = event.get("queryStringParameters") or {}
    session_id = query.get("sessionId") if isinstance(query, dict) else None
    token = query.get("reconnectToken") if isinstance(query, dict) else None
    if not isinstance(owner, str) or not owner:
        return _refuse_connect("no IAM identity (the $connect route must use AWS_IAM)", connection_id)
    if not isinstance(session_id, str) or not protocol.SESSION_ID_PATTERN.match(session_id):
        return _refuse_connect("missing or malformed session id", connection_id)
    if not connection_id:
        return _refuse_connect("no connection id", connection_id)
    if token is None:
        allowed, reason = _create_session(resources, session_id, owner, connection_id)
    else:
        allowed, reason = _reconnect(resources, session_id, str(token), owner, connection_id)
    if not allowed:
        return _refuse_connect(reason, connection_id, session_id)
    resources.dynamodb.put_item(
        TableName=resources.connections_table,
        Item=to_attribute_values(
            {
                protocol.A_CONNECTION_ID: connection_id,
                protocol.A_SESSION_ID: session_id,
                protocol.A_TTL: now_seconds() + protocol.CONNECTION_ITEM_TTL_SECONDS,
            }
        ),
    )
    _remember(connection_id, session_id)
    log(
        LOGGER,
        logging.INFO,
        "connection allowed",
        session=redact(session_id),
        connectionId=connection_id,
        owner=owner,
        reconnect=token is not None,
    )
    return OK


def _refuse_connect(reason: str, connection_id: str, session_id: str | None = None) -> dict[str, Any]:
    log(
        LOGGER,
        logging.INFO,
        "connection refused",
        reason=reason,
        session=redact(session_id),
        connectionId=connection_id,
    )
    return FORBIDDEN


def _create_session(
    resources: Resources, session_id: str, owner: str, connection_id: str
) -> tuple[bool, str]:
    """A PENDING session owned by the authenticated identity; a session id is used once, ever."""
    now = now_seconds()
    item = {
        protocol.A_SESSION_ID: session_id,
        protocol.A_STATUS: protocol.STATUS_PENDING,
        protocol.A_OWNER: owner,
        protocol.A_CONNECTION_ID: connection_id,
        protocol.A_CREATED_AT: now,
        protocol.A_TTL: now + protocol.PENDING_SESSION_TTL_SECONDS,
    }
    try:
        resources.dynamodb.put_item(
            TableName=resources.sessions_table,
            Item=to_attribute_values(item),
            ConditionExpression="attribute_not_exists(#sid)",
            ExpressionAttributeNames={"#sid": protocol.A_SESSION_ID},
        )
    except ClientError as exc:
        if is_condition_failure(exc):
            return False, "the session id was used before (a session id connects once)"
        raise
    return True, ""


def _reconnect(
    resources: Resources, session_id: str, token: str, owner: str, connection_id: str
) -> tuple[bool, str]:
    """The same principal, with the next token of the chain, moves its ACTIVE session here."""
    now = now_seconds()
    session = resources.get_session(session_id)
    if session is None:
        return False, "no such session"
    if session.get(protocol.A_STATUS) != protocol.STATUS_ACTIVE:
        return False, f"the session is {session.get(protocol.A_STATUS)}, not ACTIVE"
    if int(session.get(protocol.A_TTL) or 0) <= now:
        return False, "the session has expired"
    if protocol.principal_of(str(session.get(protocol.A_OWNER) or "")) != protocol.principal_of(owner):
        return False, "the session belongs to another principal"
    anchor = session.get(protocol.A_RECONNECT_ANCHOR)
    if not protocol.reconnect_token_matches(token, anchor):
        return False, "the reconnect token does not match the session"
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
            ":anchor": {"S": str(anchor)},
            ":now": {"N": str(now)},
        },
    )
    if moved is None:
        return False, "the session changed meanwhile (the token was used already)"
    return True, ""


# --- $disconnect ------------------------------------------------------------------------------------
def on_disconnect(event: Mapping[str, Any], resources: Resources) -> dict[str, Any]:
    connection_id = _connection_id(event)
    session_id = _session_of_connection(resources, connection_id)
    _forget(connection_id)
    try:
        resources.dynamodb.delete_item(
            TableName=resources.connections_table, Key={protocol.A_CONNECTION_ID: {"S": connection_id}}
        )
    except ClientError:
        LOGGER.exception("could not delete a connection item")
    if not session_id:
        return OK
    session = resources.get_session(session_id)
    if not session or session.get(protocol.A_CONNECTION_ID) != connection_id:
        log(LOGGER, logging.INFO, "disconnect of a replaced connection", session=redact(session_id))
        return OK
    if session.get(protocol.A_STATUS) == protocol.STATUS_PENDING:
        resources.close_session(session_id, protocol.CLOSED_ABANDONED, connection_id=connection_id)
        return OK
    marked = resources.update_session(
        session_id,
        "SET #disc = :now",
        "#conn = :conn AND #status = :active",
        {
            "#disc": protocol.A_DISCONNECTED_AT,
            "#conn": protocol.A_CONNECTION_ID,
            "#status": protocol.A_STATUS,
        },
        {
            ":now": {"N": str(now_seconds())},
            ":conn": {"S": connection_id},
            ":active": {"S": protocol.STATUS_ACTIVE},
        },
    )
    if marked is None:
        # The session moved to a new connection (or closed) between the read above and this update.
        log(LOGGER, logging.INFO, "disconnect of a replaced connection", session=redact(session_id))
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
        graceSeconds=resources.disconnect_grace_seconds,
    )
    return OK


# --- $default ---------------------------------------------------------------------------------------
class _Reply:
    """Answers to the sender, authenticated with its session's key once it has one."""

    def __init__(self, resources: Resources, connection_id: str, key: str | None) -> None:
        self.resources = resources
        self.connection_id = connection_id
        self.key = key

    def send(self, message: Mapping[str, Any]) -> None:
        outgoing = protocol.sign(message, self.key) if self.key else dict(message)
        self.resources.post(self.connection_id, outgoing)

    def error(self, code: str, text: str, message: Mapping[str, Any] | None = None, **extra: Any) -> None:
        caller = message.get("caller") if message else None
        delivery = message.get("deliveryId") if message else None
        reply: dict[str, Any] = {**protocol.error_message(code, text, caller, delivery), **extra}
        self.send(reply)


def on_message(event: Mapping[str, Any], resources: Resources) -> dict[str, Any]:
    connection_id = _connection_id(event)
    body: Any = event.get("body")
    if event.get("isBase64Encoded") and isinstance(body, str):
        try:
            body = base64.b64decode(body)
        except ValueError:
            body = None
    session_id = _session_of_connection(resources, connection_id)
    reply = _Reply(resources, connection_id, _session_key(resources, session_id) if session_id else None)
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
        reply.error(exc.code, exc.message)
        return OK
    if not session_id:
        reply.error(
            protocol.ERR_NO_SESSION, "this connection has no plldb session; run 'plldb attach' again", message
        )
        return OK
    kind = message["type"]
    try:
        if kind == protocol.MSG_OPEN:
            _open(resources, reply, session_id, message)
        elif kind == protocol.MSG_RELEASE:
            _release(resources, reply, session_id, message)
        elif kind == protocol.MSG_ACK:
            _store(
                resources,
                reply,
                session_id,
                message,
                update="SET #acked = :acked",
                names={"#acked": protocol.A_ACKED_AT},
                values={":acked": {"N": str(now_millis())}},
            )
        elif kind == protocol.MSG_UPLOAD:
            _upload_url(resources, reply, session_id, message)
        elif kind == protocol.MSG_RESPONSE:
            _store_response(resources, reply, session_id, message)
        elif kind == protocol.MSG_PING:
            _ping(resources, reply, session_id, connection_id)
        elif kind == protocol.MSG_CLOSE:
            _close(resources, reply, session_id, connection_id)
    except Exception as exc:  # one failed message must never take the route down
        LOGGER.exception("message failed", extra={"fields": {"type": kind, "session": redact(session_id)}})
        reply.error(
            "InternalError",
            f"the helper stack failed on this {kind} message: {error_code(exc) or type(exc).__name__}",
            message,
        )
    return OK


# --- open ---------------------------------------------------------------------------------------------
def _open(resources: Resources, reply: _Reply, session_id: str, message: Mapping[str, Any]) -> None:
    """Bind a PENDING session to a stack: resolve it canonically, refuse the helper stack, take the lock."""
    reply.key = str(message["sessionKey"])  # from now on this session's messages are authenticated
    session = resources.get_session(session_id)
    if not session or session.get(protocol.A_STATUS) != protocol.STATUS_PENDING:
        reply.error(
            protocol.ERR_WRONG_STATE, "this session is already open or closed; run 'plldb attach' again"
        )
        return
    if session.get(protocol.A_CONNECTION_ID) != reply.connection_id:
        reply.error(protocol.ERR_WRONG_STATE, "this session belongs to another connection")
        return
    if int(session.get(protocol.A_TTL) or 0) <= now_seconds():
        reply.error(
            protocol.ERR_WRONG_STATE, "this session expired before it was opened; run 'plldb attach' again"
        )
        return
    stack = stacks.resolve_stack(resources.cloudformation, str(message["stack"]))
    if stack is None:
        reply.error(
            protocol.ERR_STACK_NOT_FOUND,
            "Stack {!r} does not exist in {}.".format(str(message["stack"])[:200], resources.region),
        )
        return
    if resources.helper_stack_id and stack.stack_id == resources.helper_stack_id:
        reply.error(
            protocol.ERR_HELPER_STACK,
            f"Stack {stack.name!r} is the plldb helper stack itself; it cannot be debugged with plldb.",
        )
        return
    shared = message.get("shared") is True
    blocking, held_shared = stack_locks.acquire(
        resources,
        stack.stack_id,
        session,
        shared=shared,
        is_live=lambda holder: (
            holder is not None
            and _still_holding(holder)
            and resources.connection_alive(str(holder[protocol.A_CONNECTION_ID]))
        ),
        abandon=lambda holder_id, holder: _abandon(resources, holder_id, holder),
    )
    if blocking:
        blocking.sort(key=lambda h: int(h.get(protocol.A_CREATED_AT) or 0))
        owners = " and ".join(
            "{} (since {})".format(h.get(protocol.A_OWNER) or "someone", _when(h.get(protocol.A_CREATED_AT)))
            for h in blocking
        )
        hint = ""
        if held_shared:
            hint = " They share it with --match: attach with --match or --match-token to join them."
        elif shared:
            hint = " A session with --match shares a stack only with other sessions that have a match."
        reply.error(
            protocol.ERR_STACK_LOCKED,
            f"Stack {stack.name!r} is already being debugged by {owners}.{hint}",
            owner=", ".join(str(h.get(protocol.A_OWNER) or "") for h in blocking),
            since=min(int(h.get(protocol.A_CREATED_AT) or 0) for h in blocking),
            stackName=stack.name,
        )
        return
    now = now_seconds()
    opened = resources.update_session(
        session_id,
        "SET #status = :active, #stack = :stack, #name = :name, #anchor = :anchor, #key = :key, #ttl = :ttl",
        "#status = :pending AND #conn = :conn AND #ttl > :now",
        {
            "#status": protocol.A_STATUS,
            "#stack": protocol.A_STACK_ID,
            "#name": protocol.A_STACK_NAME,
            "#anchor": protocol.A_RECONNECT_ANCHOR,
            "#key": protocol.A_SESSION_KEY,
            "#ttl": protocol.A_TTL,
            "#conn": protocol.A_CONNECTION_ID,
        },
        {
            ":active": {"S": protocol.STATUS_ACTIVE},
            ":pending": {"S": protocol.STATUS_PENDING},
            ":stack": {"S": stack.stack_id},
            ":name": {"S": stack.name},
            ":anchor": {"S": str(message["reconnectAnchor"])},
            ":key": {"S": str(message["sessionKey"])},
            ":ttl": {"N": str(now + protocol.SESSION_TTL_SECONDS)},
            ":conn": {"S": reply.connection_id},
            ":now": {"N": str(now)},
        },
    )
    if opened is None:
        resources.delete_lock(stack.stack_id, session_id)
        reply.error(
            protocol.ERR_WRONG_STATE,
            "this session expired or closed while it opened; run 'plldb attach' again",
        )
        return
    with _cache_lock:
        _session_keys[session_id] = str(message["sessionKey"])
    log(LOGGER, logging.INFO, "session opened", session=redact(session_id), stackId=stack.stack_id)
    reply.send(
        protocol.opened_message(
            session_id, stack.stack_id, stack.name, str(session.get(protocol.A_OWNER) or "")
        )
    )


def _still_holding(holder: Mapping[str, Any] | None) -> bool:
    """Neither closed, nor expired, nor without a connection. A PENDING holder is one whose open is under
    way (it took the lock and is about to become ACTIVE): it holds the lock like an ACTIVE one, until its
    short PENDING TTL says its open never finished."""
    if holder is None or holder.get(protocol.A_STATUS) not in (
        protocol.STATUS_PENDING,
        protocol.STATUS_ACTIVE,
    ):
        return False
    return int(holder.get(protocol.A_TTL) or 0) > now_seconds() and bool(holder.get(protocol.A_CONNECTION_ID))


def _abandon(resources: Resources, session_id: str, session: Mapping[str, Any] | None) -> None:
    """A lock holder that is no longer there: closed now, its functions restored by the manager."""
    if session is not None and session.get(protocol.A_STATUS) != protocol.STATUS_CLOSED:
        resources.close_session(session_id, protocol.CLOSED_ABANDONED)
    if session is not None:
        resources.invoke_manager_async({"action": "restore_session", "sessionId": session_id})
    log(LOGGER, logging.INFO, "stale stack lock taken over", holder=redact(session_id))


# --- release --------------------------------------------------------------------------------------------
def _release(resources: Resources, reply: _Reply, session_id: str, message: Mapping[str, Any]) -> None:
    """End another session of a stack, once its instrumentation is gone from the stack's functions.

    Anyone connected may ask, but the release takes effect only when no function of the stack still
    carries that session: only someone allowed to change those functions can have removed it (or the
    session's owner, who may always end their own session).
    """
    sender = resources.get_session(session_id) or {}
    if sender.get(protocol.A_STATUS) != protocol.STATUS_PENDING:
        reply.error(protocol.ERR_WRONG_STATE, "release is sent before open, from a new connection")
        return
    stack = stacks.resolve_stack(resources.cloudformation, str(message["stack"]))
    if stack is None:
        reply.error(
            protocol.ERR_STACK_NOT_FOUND,
            "Stack {!r} does not exist in {}.".format(str(message["stack"])[:200], resources.region),
        )
        return
    releaser = str(sender.get(protocol.A_OWNER) or "")
    closed = 0
    for holder_id in stack_locks.holder_ids(resources.get_lock(stack.stack_id)):
        outcome = _release_holder(resources, reply, stack, holder_id, releaser)
        if outcome is None:
            return
        closed += outcome
    reply.send(protocol.released_message(stack.stack_id, closed))


def _release_holder(
    resources: Resources, reply: _Reply, stack: stacks.Stack, holder_id: str, releaser: str
) -> int | None:
    """End one holder of the stack's lock: 1 when closed, 0 when it was over already, None when refused."""
    holder = resources.get_session(holder_id)
    if holder is None or holder.get(protocol.A_STATUS) == protocol.STATUS_CLOSED:
        resources.delete_lock(stack.stack_id, holder_id)
        return 0
    if protocol.principal_of(releaser) != protocol.principal_of(str(holder.get(protocol.A_OWNER) or "")):
        still = _functions_carrying(resources, stack.stack_id, holder_id)
        if still:
            reply.error(
                protocol.ERR_RELEASE_REFUSED,
                "{} still carr{} the instrumentation of the session of {}; plldb ends that session only once "
                "its functions are restored (which needs permission to change them).".format(
                    ", ".join(still[:5]) + (f" and {len(still) - 5} more" if len(still) > 5 else ""),
                    "ies" if len(still) == 1 else "y",
                    holder.get(protocol.A_OWNER) or "someone",
                ),
            )
            return None
    text = f"stack {stack.name} was restored and released by {releaser}"
    resources.close_session(holder_id, protocol.CLOSED_RELEASED, by=releaser)
    resources.delete_lock(stack.stack_id, holder_id)
    resources.post_signed(holder, protocol.closed_message(protocol.CLOSED_RELEASED, releaser, text))
    resources.invoke_manager_async({"action": "restore_session", "sessionId": holder_id})
    log(
        LOGGER,
        logging.INFO,
        "session released",
        holder=redact(holder_id),
        by=releaser,
        stackId=stack.stack_id,
    )
    return 1


def _functions_carrying(resources: Resources, stack_id: str, session_id: str) -> list[str]:
    """The functions (and aliases) of the stack that still carry ``session_id``'s instrumentation."""
    functions = stacks.list_stack_functions(resources.cloudformation, stack_id)

    def check(function: stacks.StackFunction) -> list[str]:
        found = []
        client = resources.lambda_client
        try:
            config = client.get_function_configuration(FunctionName=function.function_name)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return []
            raise
        if session_id in decisions.sessions_of(config):
            found.append(function.path)
        for page in client.get_paginator("list_aliases").paginate(FunctionName=function.function_name):
            for alias in page.get("Aliases", []):
                version = str(alias.get("FunctionVersion") or "")
                if not version.isdigit():
                    continue
                aliased = client.get_function_configuration(
                    FunctionName=function.function_name, Qualifier=version
                )
                if session_id in decisions.sessions_of(aliased):
                    found.append("{}:{}".format(function.path, alias.get("Name")))
        return found

    with ThreadPoolExecutor(max_workers=MAX_RELEASE_CHECKS) as pool:
        results = list(pool.map(check, functions))
    return [name for found in results for name in found]


# --- invocations ------------------------------------------------------------------------------------------
def _key(message: Mapping[str, Any]) -> dict[str, Any]:
    return {protocol.A_CALLER: {"S": message["caller"]}, protocol.A_DELIVERY_ID: {"S": message["deliveryId"]}}


def _store(
    resources: Resources,
    reply: _Reply,
    session_id: str,
    message: Mapping[str, Any],
    *,
    update: str,
    names: dict[str, str],
    values: dict[str, Any],
) -> bool:
    """Apply ``update`` to the invocation only if it is this session's and unanswered; else say why."""
    names = dict(
        names,
        **{"#caller": protocol.A_CALLER, "#sid": protocol.A_SESSION_ID, "#code": protocol.A_RESPONSE_CODE},
    )
    values = dict(values, **{":sid": {"S": session_id}})
    try:
        resources.dynamodb.update_item(
            TableName=resources.invocations_table,
            Key=_key(message),
            UpdateExpression=update,
            ConditionExpression="attribute_exists(#caller) AND #sid = :sid AND attribute_not_exists(#code)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return True
    except ClientError as exc:
        if not is_condition_failure(exc):
            raise
        old = from_item(exc.response.get("Item"))
    if old is None:
        old = from_item(
            resources.dynamodb.get_item(
                TableName=resources.invocations_table, Key=_key(message), ConsistentRead=True
            ).get("Item")
        )
    code, text = _refusal(old, session_id)
    reply.error(code, text, message)
    return False


def _refusal(old: Mapping[str, Any] | None, session_id: str) -> tuple[str, str]:
    """Why an ack or response cannot change the invocation ``old``."""
    if old is None or old.get(protocol.A_SESSION_ID) != session_id:
        return protocol.ERR_UNKNOWN_REQUEST, "no such invocation is waiting in this session"
    code = old.get(protocol.A_RESPONSE_CODE)
    if code == protocol.RESPONSE_CODE_TIMEOUT:
        return (
            protocol.ERR_REQUEST_CLOSED,
            "the function stopped waiting at its deadline; this answer came too late",
        )
    if code == protocol.RESPONSE_CODE_UNAVAILABLE:
        reason = old.get(protocol.A_REASON) or "no debugger acknowledged the invocation in time"
        return protocol.ERR_REQUEST_CLOSED, f"the function stopped waiting: {reason}"
    if code is not None:
        return protocol.ERR_ALREADY_ANSWERED, "this invocation already has an answer"
    return protocol.ERR_UNKNOWN_REQUEST, "no such invocation is waiting in this session"


def _upload_url(resources: Resources, reply: _Reply, session_id: str, message: Mapping[str, Any]) -> None:
    """A presigned PUT for a result too large for a message, only for this session's open invocation."""
    item = from_item(
        resources.dynamodb.get_item(
            TableName=resources.invocations_table, Key=_key(message), ConsistentRead=True
        ).get("Item")
    )
    if item is None or item.get(protocol.A_SESSION_ID) != session_id or protocol.A_RESPONSE_CODE in item:
        code, text = _refusal(item, session_id)
        reply.error(code, text, message)
        return
    url = resources.s3.generate_presigned_url(
        "put_object",
        Params={
            "Bucket": resources.payload_bucket,
            "Key": protocol.response_object_key(message["caller"], message["deliveryId"]),
        },
        ExpiresIn=protocol.PAYLOAD_URL_SECONDS,
    )
    reply.send(protocol.upload_url_message(message["caller"], message["deliveryId"], url))


def _store_response(resources: Resources, reply: _Reply, session_id: str, message: Mapping[str, Any]) -> None:
    """ResponseCode with Response, Error or an uploaded object: one conditional update, or nothing."""
    names = {"#code": protocol.A_RESPONSE_CODE}
    values: dict[str, Any] = {":code": {"N": str(message["statusCode"])}}
    assignments = ["#code = :code"]
    if "payload" in message:
        names["#response"] = protocol.A_RESPONSE
        values[":response"] = {"S": message["payload"]}
        assignments.append("#response = :response")
    elif message.get("payloadObject"):
        key = protocol.response_object_key(message["caller"], message["deliveryId"])
        size = _object_size(resources, key)
        if size != message["payloadSize"]:
            reply.error(
                protocol.ERR_PAYLOAD_MISSING,
                "the result object is {}, not {} bytes as announced".format(
                    "missing" if size is None else f"{size} bytes", message["payloadSize"]
                ),
                message,
            )
            return
        names.update(
            {
                "#object": protocol.A_RESPONSE_OBJECT,
                "#sha": protocol.A_RESPONSE_SHA256,
                "#size": protocol.A_RESPONSE_SIZE,
            }
        )
        values.update(
            {":object": {"S": key}, ":sha": {"S": message["payloadSha256"]}, ":size": {"N": str(size)}}
        )
        assignments.extend(["#object = :object", "#sha = :sha", "#size = :size"])
    if "error" in message:
        names["#error"] = protocol.A_ERROR
        values[":error"] = {"S": json.dumps(message["error"], separators=(",", ":"), ensure_ascii=False)}
        assignments.append("#error = :error")
    if _store(
        resources,
        reply,
        session_id,
        message,
        update="SET " + ", ".join(assignments),
        names=names,
        values=values,
    ):
        reply.send(protocol.stored_message(message["caller"], message["deliveryId"]))


def _object_size(resources: Resources, key: str) -> int | None:
    try:
        return int(resources.s3.head_object(Bucket=resources.payload_bucket, Key=key)["ContentLength"])
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


# --- ping and close -----------------------------------------------------------------------------------------
def _ping(resources: Resources, reply: _Reply, session_id: str, connection_id: str) -> None:
    """A live session keeps its TTL ahead of now (only from its current connection)."""
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
    reply.send({"type": protocol.MSG_PONG})


def _close(resources: Resources, reply: _Reply, session_id: str, connection_id: str) -> None:
    """The developer restored its functions: the session ends and its stack is free."""
    session = resources.get_session(session_id) or {}
    resources.close_session(session_id, protocol.CLOSED_DETACHED, by=str(session.get(protocol.A_OWNER) or ""))
    stack_id = session.get(protocol.A_STACK_ID)
    if stack_id:
        resources.delete_lock(str(stack_id), session_id)
    log(LOGGER, logging.INFO, "session closed by its developer", session=redact(session_id))
    reply.send(protocol.closed_message(protocol.CLOSED_DETACHED, str(session.get(protocol.A_OWNER) or "")))


# --- Helpers ----------------------------------------------------------------------------------------
def _connection_id(event: Mapping[str, Any]) -> str:
    return str((event.get("requestContext") or {}).get("connectionId") or "")


def _session_of_connection(resources: Resources, connection_id: str) -> str | None:
    with _cache_lock:
        cached = _connection_sessions.get(connection_id)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    if not connection_id:
        return None
    found = resources.connection_session(connection_id)
    if found:
        _remember(connection_id, found)
    return found


def _session_key(resources: Resources, session_id: str) -> str | None:
    with _cache_lock:
        key = _session_keys.get(session_id)
    if key:
        return key
    session = resources.get_session(session_id) or {}
    key = session.get(protocol.A_SESSION_KEY)
    if key:
        with _cache_lock:
            _session_keys[session_id] = str(key)
    return str(key) if key else None


def _remember(connection_id: str, session_id: str) -> None:
    with _cache_lock:
        _connection_sessions[connection_id] = (session_id, time.monotonic() + CACHE_SECONDS)


def _forget(connection_id: str) -> None:
    with _cache_lock:
        _connection_sessions.pop(connection_id, None)


def _when(epoch: Any) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unknown time"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
