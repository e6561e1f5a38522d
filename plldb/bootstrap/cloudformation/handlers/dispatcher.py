"""The dispatcher: an instrumented function's invocation, to the developer who debugs it, and no one else.

The layer writes its invocation item under its own ``aws:userid`` (IAM lets a function's code write
nothing else: ``dynamodb:LeadingKeys``), then invokes this function with the item's key and the
payload. Anyone able to invoke this function can only make it act on such an item:

- the payload's digest must equal the one in the item (which only that caller can have written), so
  nobody can attach other data, an environment or credentials to another function's invocation;
- the item's session must be live;
- the caller must belong to that session: the function named by the caller's identity carries the
  session's id in its configuration, its execution role's unique id is the caller's, and it is a
  function of the session's stack;
- an item is posted once.

Only then is the invocation posted to the session's connection, authenticated with the session's key.
Actions: ``deliver`` and ``status`` (is the item's session still there, for an acknowledged wait). A
``deliver`` that names its session (``sessionId``, as the layer sends it) makes the same checks with one
request fewer: the item is checked and marked posted by one conditional update.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from plldb import protocol
from plldb.bootstrap.cloudformation.handlers.common import (
    Resources,
    absent_reason,
    configure_logging,
    error_code,
    from_item,
    is_condition_failure,
    log,
    now_millis,
    redact,
)
from plldb.instrumentation import decisions, stacks

LOGGER = configure_logging("plldb.dispatcher")
RESOURCES = Resources().warm_up("dynamodb", "connections", "lambda_client", "iam", "s3", "cloudformation")

MEMBERSHIP_CACHE_SECONDS = 60.0
ROLE_ID_CACHE_SECONDS = 600.0
POSTED = "posted"
ABSENT = "absent"  # no debugger can take it: the layer applies the function's fallback
REFUSED = "refused"  # not a legitimate request: the layer answers with a plldb error
LIVE = "live"

_members: dict[tuple[str, str, str], tuple[str, float]] = {}  # (session, caller, version) -> logical path
_role_ids: dict[str, tuple[str, float]] = {}
_stack_functions: dict[str, tuple[dict[str, stacks.StackFunction], float]] = {}
_cache_lock = threading.Lock()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, RESOURCES)


def handle(event: Mapping[str, Any], resources: Resources) -> dict[str, Any]:
    action = event.get("action")
    caller, delivery_id = event.get("caller"), event.get("deliveryId")
    if not isinstance(caller, str) or not protocol.CALLER_PATTERN.match(caller):
        return _refused("the caller is not a Lambda function's identity")
    if not isinstance(delivery_id, str) or not protocol.DELIVERY_ID_PATTERN.match(delivery_id):
        return _refused("the delivery id is malformed")
    claimed = event.get("sessionId")
    payload = event.get("payload")
    if (
        action == "deliver"
        and isinstance(claimed, str)
        and protocol.SESSION_ID_PATTERN.match(claimed)
        and isinstance(payload, dict)
    ):
        return _deliver_to_claimed_session(resources, caller, delivery_id, claimed, payload)
    item = from_item(
        resources.dynamodb.get_item(
            TableName=resources.invocations_table,
            Key={protocol.A_CALLER: {"S": caller}, protocol.A_DELIVERY_ID: {"S": delivery_id}},
            ConsistentRead=True,
        ).get("Item")
    )
    if item is None:
        return _refused("no invocation item was written for this delivery")
    session_id = str(item.get(protocol.A_SESSION_ID) or "")
    session = resources.get_session(session_id) if session_id else None
    if action == "status":
        reason = absent_reason(session)
        return {"status": ABSENT, "reason": reason} if reason else {"status": LIVE}
    if action != "deliver":
        return _refused(f"unknown action {str(action)[:40]!r}")
    payload = event.get("payload")
    if not isinstance(payload, dict) or protocol.payload_digest(payload) != item.get(
        protocol.A_PAYLOAD_SHA256
    ):
        return _refused("the payload does not match the invocation item")
    if protocol.A_POSTED_AT in item:
        return _posted_already(caller, delivery_id)
    reason = absent_reason(session)
    if reason is not None:
        return {"status": ABSENT, "reason": reason}
    assert session is not None
    version = str((payload.get("function") or {}).get("version") or "$LATEST")
    member, why = membership(resources, session, caller, version)
    if member is None:
        return _refused_stranger(caller, session_id, why)
    message = invoke_message(resources, caller, delivery_id, payload, member)
    if message is None:
        return _refused("the payload is malformed")
    return _post(resources, session, caller, delivery_id, message)


def membership(
    resources: Resources, session: Mapping[str, Any], caller: str, version: str
) -> tuple[str | None, str]:
    """(the function's logical path, "") when ``caller`` is a function of the session; (None, why) else."""
    session_id = str(session[protocol.A_SESSION_ID])
    key = (session_id, caller, version)
    now = time.monotonic()
    with _cache_lock:
        cached = _members.get(key)
    if cached and cached[1] > now:
        return cached[0], ""
    role_id, function_name = protocol.caller_parts(caller)
    arguments: dict[str, Any] = {"FunctionName": function_name}
    if version and version != "$LATEST":
        arguments["Qualifier"] = version
    try:
        config = resources.lambda_client.get_function_configuration(**arguments)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None, f"function {function_name} (version {version}) does not exist"
        raise
    if session_id not in decisions.sessions_of(config):
        return None, f"function {function_name} is not instrumented for this session"
    if _role_id(resources, str(config.get("Role") or "")) != role_id:
        return None, f"the caller is not the execution role of function {function_name}"
    functions = _functions_of(resources, str(session.get(protocol.A_STACK_ID) or ""))
    member = functions.get(function_name)
    if member is None:
        return None, f"function {function_name} is not part of the session's stack"
    with _cache_lock:
        _members[key] = (member.path, now + MEMBERSHIP_CACHE_SECONDS)
    return member.path, ""


def _role_id(resources: Resources, role_arn: str) -> str | None:
    now = time.monotonic()
    with _cache_lock:
        cached = _role_ids.get(role_arn)
    if cached and cached[1] > now:
        return cached[0]
    try:
        role_id = str(resources.iam.get_role(RoleName=role_arn.rsplit("/", 1)[-1])["Role"]["RoleId"])
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return None
        raise
    with _cache_lock:
        _role_ids[role_arn] = (role_id, now + ROLE_ID_CACHE_SECONDS)
    return role_id


def _functions_of(resources: Resources, stack_id: str) -> dict[str, stacks.StackFunction]:
    if not stack_id:
        return {}
    now = time.monotonic()
    with _cache_lock:
        cached = _stack_functions.get(stack_id)
    if cached and cached[1] > now:
        return cached[0]
    functions = stacks.function_names(stacks.list_stack_functions(resources.cloudformation, stack_id))
    with _cache_lock:
        _stack_functions[stack_id] = (functions, now + MEMBERSHIP_CACHE_SECONDS)
    return functions


def invoke_message(
    resources: Resources, caller: str, delivery_id: str, payload: Mapping[str, Any], logical_path: str
) -> dict[str, Any] | None:
    """The `invoke` message for the developer: the layer's payload, an event object as a presigned URL."""
    function = payload.get("function")
    environment = payload.get("environment")
    if not isinstance(function, dict) or not isinstance(environment, dict):
        return None
    _, function_name = protocol.caller_parts(caller)
    message: dict[str, Any] = {
        "type": protocol.MSG_INVOKE,
        "v": protocol.PROTOCOL_VERSION,
        "caller": caller,
        "deliveryId": delivery_id,
        "requestId": str(payload.get("requestId") or "")[: protocol.MAX_REQUEST_ID_LENGTH],
        "function": {
            "name": function_name,
            "version": str(function.get("version") or "$LATEST"),
            "logicalPath": logical_path,
        },
        "handler": str(payload.get("handler") or ""),
        "context": payload.get("context") if isinstance(payload.get("context"), dict) else {},
        "environment": protocol.without_credentials(
            {str(k): str(v) for k, v in environment.items() if isinstance(v, str)}
        ),
        "credentials": payload.get("credentials") if isinstance(payload.get("credentials"), dict) else None,
    }
    if "observed" in payload:
        observed = payload["observed"]
        try:
            protocol.validate_observed(observed)
        except protocol.ProtocolError:
            return None
        message["observed"] = observed
    if isinstance(payload.get("event"), str):
        message["event"] = payload["event"]
    elif payload.get("eventObject") is True and isinstance(payload.get("eventSha256"), str):
        message["eventUrl"] = resources.s3.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": resources.payload_bucket,
                "Key": protocol.event_object_key(caller, delivery_id),
            },
            ExpiresIn=protocol.PAYLOAD_URL_SECONDS,
        )
        message["eventSha256"] = payload["eventSha256"]
        message["eventSize"] = int(payload.get("eventSize") or 0)
    else:
        return None
    return message


def _deliver_to_claimed_session(
    resources: Resources, caller: str, delivery_id: str, session_id: str, payload: Mapping[str, Any]
) -> dict[str, Any]:
    """``deliver`` when the layer names its session: the same checks, one request fewer.

    The session is read first; the item is then checked and marked posted by one conditional update
    (it exists, names that session, has the payload's digest and was not posted) instead of being read
    before the checks and updated after them. A failed condition reads the item as it was and gives the
    same reason; a caller that then proves not to belong has the mark taken back, so a refused
    delivery is never marked posted.
    """
    session = resources.get_session(session_id)
    reason = absent_reason(session)
    if reason is not None:
        return {"status": ABSENT, "reason": reason}
    assert session is not None
    key = {protocol.A_CALLER: {"S": caller}, protocol.A_DELIVERY_ID: {"S": delivery_id}}
    digest = protocol.payload_digest(payload)
    posted_at = {"N": str(now_millis())}
    try:
        resources.dynamodb.update_item(
            TableName=resources.invocations_table,
            Key=key,
            UpdateExpression="SET #posted = :now",
            ConditionExpression=(
                "attribute_exists(#caller) AND #sid = :sid AND #sha = :sha AND attribute_not_exists(#posted)"
            ),
            ExpressionAttributeNames={
                "#posted": protocol.A_POSTED_AT,
                "#caller": protocol.A_CALLER,
                "#sid": protocol.A_SESSION_ID,
                "#sha": protocol.A_PAYLOAD_SHA256,
            },
            ExpressionAttributeValues={":now": posted_at, ":sid": {"S": session_id}, ":sha": {"S": digest}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if not is_condition_failure(exc):
            raise
        old = from_item(exc.response.get("Item"))
        if old is None:
            return _refused("no invocation item was written for this delivery")
        if old.get(protocol.A_PAYLOAD_SHA256) != digest:
            return _refused("the payload does not match the invocation item")
        if protocol.A_POSTED_AT in old:
            return _posted_already(caller, delivery_id)
        return _refused("the invocation item names another session")
    version = str((payload.get("function") or {}).get("version") or "$LATEST")
    member, why = membership(resources, session, caller, version)
    message = invoke_message(resources, caller, delivery_id, payload, member) if member is not None else None
    if message is None:
        resources.dynamodb.update_item(
            TableName=resources.invocations_table,
            Key=key,
            UpdateExpression="REMOVE #posted",
            ConditionExpression="#posted = :now",
            ExpressionAttributeNames={"#posted": protocol.A_POSTED_AT},
            ExpressionAttributeValues={":now": posted_at},
        )
        if member is None:
            return _refused_stranger(caller, session_id, why)
        return _refused("the payload is malformed")
    return _send(resources, session, message)


def _post(
    resources: Resources, session: Mapping[str, Any], caller: str, delivery_id: str, message: dict[str, Any]
) -> dict[str, Any]:
    """Post once (marking the item), following a reconnect; a gone connection starts its restore clock."""
    try:
        resources.dynamodb.update_item(
            TableName=resources.invocations_table,
            Key={protocol.A_CALLER: {"S": caller}, protocol.A_DELIVERY_ID: {"S": delivery_id}},
            UpdateExpression="SET #posted = :now",
            ConditionExpression="attribute_not_exists(#posted)",
            ExpressionAttributeNames={"#posted": protocol.A_POSTED_AT},
            ExpressionAttributeValues={":now": {"N": str(now_millis())}},
        )
    except ClientError as exc:
        if is_condition_failure(exc):
            return _posted_already(caller, delivery_id)
        raise
    return _send(resources, session, message)


def _send(resources: Resources, session: Mapping[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Post a marked delivery, following a reconnect; a gone connection starts its restore clock."""
    for _ in range(2):
        if resources.post_signed(session, message):
            return {"status": POSTED}
        fresh = resources.get_session(str(session[protocol.A_SESSION_ID]))
        reason = absent_reason(fresh)
        if reason is not None:
            return {"status": ABSENT, "reason": reason}
        assert fresh is not None
        if fresh.get(protocol.A_CONNECTION_ID) == session.get(protocol.A_CONNECTION_ID):
            break
        session = fresh  # the debugger reconnected meanwhile
    _connection_gone(resources, session)
    return {"status": ABSENT, "reason": "the debugger's WebSocket connection is gone"}


def _posted_already(caller: str, delivery_id: str) -> dict[str, Any]:
    """The same delivery handed over again (the SDK retried an invoke whose answer was lost): it was
    posted once, and the layer waits for its answer as the first hand-over would have."""
    log(
        LOGGER, logging.INFO, "delivery handed over again; posted once", caller=caller, deliveryId=delivery_id
    )
    return {"status": POSTED}


def _connection_gone(resources: Resources, session: Mapping[str, Any]) -> None:
    """API Gateway may never deliver $disconnect: start the session's restore clock from here."""
    session_id = str(session[protocol.A_SESSION_ID])
    try:
        resources.invoke_manager_async(
            {
                "action": "restore_if_abandoned",
                "sessionId": session_id,
                "connectionId": str(session.get(protocol.A_CONNECTION_ID) or ""),
                "notBefore": time.time() + resources.disconnect_grace_seconds,
            }
        )
    except ClientError:
        LOGGER.exception("could not hand a gone connection to the manager")


def _refused(reason: str) -> dict[str, Any]:
    return {"status": REFUSED, "reason": reason}


def _refused_stranger(caller: str, session_id: str, why: str) -> dict[str, Any]:
    """Refuse a caller that does not belong to the session, with a warning in the log: a probe or a bug."""
    log(
        LOGGER,
        logging.WARNING,
        "refused a caller that does not belong to the session",
        caller=caller,
        session=redact(session_id),
        reason=why,
    )
    return _refused(why)
