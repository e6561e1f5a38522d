"""Stack locks: one session debugs a stack alone, or any number of sessions with a match share it.

A plain session (every invocation of the stack comes to it) holds its stack's lock alone: the item
names it (``SessionId``). Sessions with a match (``open`` with ``shared: true``) each receive only the
invocations their expression selects, so they may debug one stack together: the item is ``Shared``
and keeps the set of its ``Holders``. A lock held only by shared sessions admits another shared
session; a plain open is refused while any holder is live, and a shared open while a plain holder is
live. A holder that is closed, expired or whose connection is gone blocks nobody: it is abandoned
(closed, handed to the manager) and dropped from the lock. Releasing removes one holder; the lock goes
with the last. Every change is conditional on the ``Revision`` the change was decided from.

The lock is a courtesy between developers: who may change a function is IAM's decision, and who
receives an invocation is the dispatcher's (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from plldb import protocol
from plldb.bootstrap.cloudformation.handlers.common import Resources, is_condition_failure, now_seconds

ATTEMPTS = 8


def holder_ids(lock: Mapping[str, Any] | None) -> list[str]:
    """The sessions holding a lock item (as read by from_item)."""
    if not lock:
        return []
    if lock.get(protocol.A_SHARED):
        return sorted(str(h) for h in lock.get(protocol.A_HOLDERS) or ())
    holder = lock.get(protocol.A_SESSION_ID)
    return [str(holder)] if holder else []


def _revision_condition(lock: Mapping[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The condition that the lock is still as read (a lock from before revisions: by its holder)."""
    if protocol.A_LOCK_REVISION in lock:
        return (
            "#rev = :rev",
            {"#rev": protocol.A_LOCK_REVISION},
            {":rev": {"N": str(int(lock[protocol.A_LOCK_REVISION]))}},
        )
    return (
        "attribute_not_exists(#rev) AND #sid = :holder",
        {"#rev": protocol.A_LOCK_REVISION, "#sid": protocol.A_SESSION_ID},
        {":holder": {"S": str(lock.get(protocol.A_SESSION_ID) or "")}},
    )


def _item(
    stack_id: str, session: Mapping[str, Any], shared: bool, holders: list[str], revision: int
) -> dict[str, Any]:
    item: dict[str, Any] = {
        protocol.A_STACK_ID: {"S": stack_id},
        protocol.A_CREATED_AT: {"N": str(now_seconds())},
        protocol.A_LOCK_REVISION: {"N": str(revision)},
    }
    if shared:
        item[protocol.A_SHARED] = {"BOOL": True}
        item[protocol.A_HOLDERS] = {"SS": sorted(holders)}
    else:
        item[protocol.A_SESSION_ID] = {"S": str(session[protocol.A_SESSION_ID])}
        item[protocol.A_OWNER] = {"S": str(session.get(protocol.A_OWNER) or "")}
    return item


def acquire(
    resources: Resources,
    stack_id: str,
    session: Mapping[str, Any],
    *,
    shared: bool,
    is_live: Callable[[Mapping[str, Any] | None], bool],
    abandon: Callable[[str, Mapping[str, Any] | None], None],
) -> tuple[list[dict[str, Any]], bool]:
    """Take the stack for ``session``: ([], _) when taken; otherwise the live sessions that keep it from
    doing so, and whether they hold it shared (sessions with a match) or alone."""
    session_id = str(session[protocol.A_SESSION_ID])
    for _ in range(ATTEMPTS):
        lock = resources.get_lock(stack_id)
        try:
            if lock is None:
                resources.dynamodb.put_item(
                    TableName=resources.locks_table,
                    Item=_item(stack_id, session, shared, [session_id], 1),
                    ConditionExpression="attribute_not_exists(#stack)",
                    ExpressionAttributeNames={"#stack": protocol.A_STACK_ID},
                )
                return [], shared
            holders = holder_ids(lock)
            if session_id in holders:
                return [], shared
            sessions = {holder: resources.get_session(holder) for holder in holders}
            live = [h for h in holders if is_live(sessions[h])]
            lock_shared = bool(lock.get(protocol.A_SHARED))
            if live and not (shared and lock_shared):
                return [dict(sessions[h] or {}) for h in live], lock_shared
            for holder in holders:
                if holder not in live:
                    abandon(holder, sessions[holder])
            condition, names, values = _revision_condition(lock)
            revision = int(lock.get(protocol.A_LOCK_REVISION) or 0) + 1
            resources.dynamodb.put_item(
                TableName=resources.locks_table,
                Item=_item(stack_id, session, shared, [*live, session_id], revision),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
            return [], shared
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
    raise RuntimeError(f"the lock of stack {stack_id} keeps changing")


def release(resources: Resources, stack_id: str, session_id: str) -> None:
    """Remove ``session_id`` from the stack's lock (if it holds it); the lock goes with its last holder."""
    for _ in range(ATTEMPTS):
        lock = resources.get_lock(stack_id)
        holders = holder_ids(lock)
        if lock is None or session_id not in holders:
            return
        condition, names, values = _revision_condition(lock)
        remaining = [h for h in holders if h != session_id]
        try:
            if remaining:
                resources.dynamodb.update_item(
                    TableName=resources.locks_table,
                    Key={protocol.A_STACK_ID: {"S": stack_id}},
                    UpdateExpression="SET #holders = :holders, #rev = :next",
                    ConditionExpression=condition,
                    ExpressionAttributeNames={**names, "#holders": protocol.A_HOLDERS},
                    ExpressionAttributeValues={
                        **values,
                        ":holders": {"SS": remaining},
                        ":next": {"N": str(int(lock.get(protocol.A_LOCK_REVISION) or 0) + 1)},
                    },
                )
            else:
                resources.dynamodb.delete_item(
                    TableName=resources.locks_table,
                    Key={protocol.A_STACK_ID: {"S": stack_id}},
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
            return
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
    raise RuntimeError(f"the lock of stack {stack_id} keeps changing")
