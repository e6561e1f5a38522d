"""The manager: restores the functions of sessions nobody is debugging any more, and reports status.

It never instruments anything and acts for no client: every action is safe whoever invokes it,
because it checks the state it acts on.

- ``restore_if_abandoned`` {sessionId, connectionId, notBefore}: from $disconnect, or from the
  dispatcher when a post found the connection gone. Waits until ``notBefore``; restores only if the
  session is still ACTIVE on that connection and API Gateway reports the connection gone.
- ``restore_session`` {sessionId}: a CLOSED session's leftovers (a released or abandoned lock holder).
- ``sweep``: scheduled; the dead-man's switch for a ``$disconnect`` that never came (API Gateway
  delivers it on a best-effort basis) and for sessions past their TTL.
- ``status``: live sessions and stack locks, for ``plldb bootstrap status`` and ``destroy``.

Restoring a session removes plldb's own additions from the functions of its stack that carry that
session, as recorded on each function (``plldb.instrumentation``): nothing it restores comes from data
a client can write.
"""

from __future__ import annotations

import logging
import math
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
    from_item,
    log,
    now_seconds,
    redact,
)
from plldb.instrumentation import functions, stacks
from plldb.lambda_common import error_text

LOGGER = configure_logging("plldb.manager")
RESOURCES = Resources().warm_up("dynamodb", "lambda_client", "cloudformation", "iam", "connections")

MAX_PARALLEL_FUNCTIONS = 16  # at most the control-plane client's connection pool
MAX_GRACE_WAIT_SECONDS = 600.0


class ManagerError(Exception):
    """A failure the caller should read: returned to synchronous callers as the function error message."""


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, RESOURCES)


def handle(event: Mapping[str, Any], resources: Resources, sleep: Any = time.sleep) -> dict[str, Any]:
    action = event.get("action")
    log(LOGGER, logging.INFO, "action", action=action, session=redact(event.get("sessionId")))
    if action == "restore_if_abandoned":
        return restore_if_abandoned(
            resources,
            _required(event, "sessionId"),
            _required(event, "connectionId"),
            _number(event, "notBefore"),
            sleep,
        )
    if action == "restore_session":
        return restore_closed_session(resources, _required(event, "sessionId"))
    if action == "sweep":
        return sweep(resources)
    if action == "status":
        return status(resources)
    raise ManagerError(f"unknown action {action!r}")


def _number(event: Mapping[str, Any], name: str) -> float:
    value = event.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ManagerError("the {!r} action needs a number {!r}".format(event.get("action"), name))
    return float(value)


def _required(event: Mapping[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise ManagerError("the {!r} action needs a non-empty string {!r}".format(event.get("action"), name))
    return value


# --- Restoring ---------------------------------------------------------------------------------------
def restore_if_abandoned(
    resources: Resources, session_id: str, connection_id: str, not_before: float, sleep: Any = time.sleep
) -> dict[str, Any]:
    """After the grace period: restore only if the session never moved on and its connection is gone."""
    wait = min(max(0.0, not_before - time.time()), MAX_GRACE_WAIT_SECONDS)
    if wait:
        sleep(wait)
    session = resources.get_session(session_id)
    if (
        session is None
        or session.get(protocol.A_STATUS) != protocol.STATUS_ACTIVE
        or session.get(protocol.A_CONNECTION_ID) != connection_id
    ):
        log(
            LOGGER,
            logging.INFO,
            "session reconnected or closed meanwhile; nothing to restore",
            session=redact(session_id),
        )
        return {"action": "restore_if_abandoned", "restored": False, "functions": []}
    if resources.connection_alive(connection_id):
        log(
            LOGGER,
            logging.INFO,
            "the session's connection is alive; nothing to restore",
            session=redact(session_id),
        )
        return {"action": "restore_if_abandoned", "restored": False, "functions": []}
    if not resources.close_session(session_id, protocol.CLOSED_ABANDONED, connection_id=connection_id):
        return {"action": "restore_if_abandoned", "restored": False, "functions": []}
    results = restore_session_functions(resources, session)
    return {"action": "restore_if_abandoned", "restored": True, "functions": results}


def restore_closed_session(resources: Resources, session_id: str) -> dict[str, Any]:
    """Leftovers of a session that is already closed (never of a live one)."""
    session = resources.get_session(session_id)
    if session is None or session.get(protocol.A_STATUS) != protocol.STATUS_CLOSED:
        return {
            "action": "restore_session",
            "restored": False,
            "functions": [],
            "error": "the session is not closed",
        }
    return {
        "action": "restore_session",
        "restored": True,
        "functions": restore_session_functions(resources, session),
    }


def restore_session_functions(resources: Resources, session: Mapping[str, Any]) -> list[dict[str, str]]:
    """Strip the session's instrumentation from every function of its stack, free its lock."""
    session_id = str(session[protocol.A_SESSION_ID])
    stack_id = str(session.get(protocol.A_STACK_ID) or "")
    if not stack_id:
        return []
    try:
        found = stacks.list_stack_functions(resources.cloudformation, stack_id)
    except ClientError as exc:
        log(
            LOGGER,
            logging.WARNING,
            "the session's stack cannot be listed",
            stackId=stack_id,
            error=error_text(exc),
        )
        found = []
    clients = functions.Clients(
        lambda_client=resources.lambda_client,
        iam=resources.iam,
        region=resources.region,
        layer_version_arn=resources.layer_version_arn,
        policy_arn=resources.instrumented_function_policy_arn,
        may_tag=False,  # the manager only removes plldb's additions: it never tags a role
    )

    def restore_one(function: stacks.StackFunction) -> functions.Result:
        return functions.restore(
            clients, functions.FunctionRef(function.function_name, function.path), session_id
        )

    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL_FUNCTIONS, len(found)))) as pool:
        results = list(pool.map(restore_one, found))
    resources.delete_lock(stack_id, session_id)
    changed = [
        r
        for r in results
        if r.status != functions.STATUS_OK or r.message != "already in its deployed configuration"
    ]
    log(
        LOGGER,
        logging.INFO,
        "session restored",
        session=redact(session_id),
        stackId=stack_id,
        functions=len(results),
        failed=sum(1 for r in results if r.status == functions.STATUS_FAILED),
    )
    return [
        {
            "functionName": r.function.name,
            "logicalId": r.function.path,
            "status": r.status,
            "message": r.message,
        }
        for r in changed
    ]


# --- The sweep ------------------------------------------------------------------------------------------
def sweep(resources: Resources) -> dict[str, Any]:
    """Close and restore sessions that expired or whose connection is gone past the grace period."""
    now = now_seconds()
    restored: list[str] = []
    for session in _scan(resources, resources.sessions_table):
        session_id = str(session.get(protocol.A_SESSION_ID) or "")
        state = session.get(protocol.A_STATUS)
        if state == protocol.STATUS_CLOSED or not session_id:
            continue
        connection_id = str(session.get(protocol.A_CONNECTION_ID) or "")
        expired = int(session.get(protocol.A_TTL) or 0) <= now
        if state == protocol.STATUS_PENDING:
            if expired:
                resources.close_session(session_id, protocol.CLOSED_EXPIRED)
            continue
        if expired:
            if resources.close_session(session_id, protocol.CLOSED_EXPIRED):
                restore_session_functions(resources, session)
                restored.append(session_id)
            continue
        if connection_id and resources.connection_alive(connection_id):
            continue
        since = session.get(protocol.A_DISCONNECTED_AT)
        if since is None:
            # The $disconnect never came: the grace period starts now.
            resources.update_session(
                session_id,
                "SET #disc = :now",
                "#conn = :conn AND #status = :active AND attribute_not_exists(#disc)",
                {
                    "#disc": protocol.A_DISCONNECTED_AT,
                    "#conn": protocol.A_CONNECTION_ID,
                    "#status": protocol.A_STATUS,
                },
                {
                    ":now": {"N": str(now)},
                    ":conn": {"S": connection_id},
                    ":active": {"S": protocol.STATUS_ACTIVE},
                },
            )
            continue
        if now - int(since) >= resources.disconnect_grace_seconds and resources.close_session(
            session_id, protocol.CLOSED_ABANDONED, connection_id=connection_id
        ):
            restore_session_functions(resources, session)
            restored.append(session_id)
    stale_locks = _release_stale_locks(resources)
    log(LOGGER, logging.INFO, "sweep done", restored=len(restored), staleLocks=stale_locks)
    return {"action": "sweep", "restoredSessions": len(restored), "staleLocks": stale_locks}


def _release_stale_locks(resources: Resources) -> int:
    released = 0
    for lock in _scan(resources, resources.locks_table):
        for holder_id in stack_locks.holder_ids(lock) or [""]:
            holder = resources.get_session(holder_id) if holder_id else None
            if holder is None or holder.get(protocol.A_STATUS) == protocol.STATUS_CLOSED:
                resources.delete_lock(str(lock[protocol.A_STACK_ID]), holder_id)
                released += 1
    return released


# --- status -------------------------------------------------------------------------------------------------
def status(resources: Resources) -> dict[str, Any]:
    now = now_seconds()
    sessions = []
    for item in _scan(resources, resources.sessions_table):
        if item.get(protocol.A_STATUS) == protocol.STATUS_ACTIVE and int(item.get(protocol.A_TTL) or 0) > now:
            sessions.append(
                {
                    "stackName": item.get(protocol.A_STACK_NAME),
                    "stackId": item.get(protocol.A_STACK_ID),
                    "owner": item.get(protocol.A_OWNER),
                    "createdAt": item.get(protocol.A_CREATED_AT),
                    "disconnectedAt": item.get(protocol.A_DISCONNECTED_AT),
                }
            )
    sessions.sort(key=lambda s: (str(s["stackName"]), str(s["createdAt"])))
    return {"action": "status", "activeSessions": sessions}


# --- Tables ---------------------------------------------------------------------------------------------------
def _scan(resources: Resources, table: str) -> list[dict[str, Any]]:
    paginator = resources.dynamodb.get_paginator("scan")
    items: list[dict[str, Any]] = []
    for page in paginator.paginate(TableName=table, ConsistentRead=True):
        items.extend(from_item(item) or {} for item in page.get("Items", []))
    return items
