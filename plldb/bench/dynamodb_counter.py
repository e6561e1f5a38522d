"""Counts every DynamoDB request the local cloud serves, by caller and action, with its time.

The benchmark runs the local cloud in its own process, so wrapping moto's request handler sees every
request from every side (the layer, the route handlers, the dispatcher, the manager, the local client)
exactly once. Callers are told apart by their access keys, which the local STS hands out per
assumed-role session. Hooks see each request's action, body and status once it is answered (the
floor's StoredWatcher is one).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

READ_ACTIONS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})
WRITE_ACTIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})


@dataclass
class DynamoRequest:
    at: float  # time.monotonic() when the request arrived
    access_key: str
    action: str
    done: float = 0.0  # time.monotonic() when it was answered
    table: str = ""
    delivery_id: str = ""  # the invocation item's DeliveryId, for requests on one item
    status: int = 0

    @property
    def is_read(self) -> bool:
        return self.action in READ_ACTIONS

    @property
    def is_write(self) -> bool:
        return self.action in WRITE_ACTIONS


Hook = Callable[[str, Mapping[str, Any], int], None]  # (action, request, HTTP status) once answered


class DynamoRequestCounter:
    """Install with ``installed()``; take a ``mark()``, then ask for the requests made since it."""

    def __init__(self) -> None:
        self._requests: list[DynamoRequest] = []
        self._lock = threading.Lock()
        self.hooks: list[Hook] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[DynamoRequestCounter]:
        from moto.dynamodb.responses import DynamoHandler

        original = DynamoHandler.call_action
        counter = self

        def counting(handler: Any) -> Any:
            action = str(handler.headers.get("X-Amz-Target", "")).rpartition(".")[2]
            request = DynamoRequest(time.monotonic(), handler.get_access_key(), action)
            with counter._lock:
                counter._requests.append(request)
            response = original(handler)
            request.done = time.monotonic()
            request.status = int(response[0])
            body = handler.body  # moto's handler has parsed it by now
            request_body = body if isinstance(body, dict) else json.loads(body or "{}")
            request.table = str(request_body.get("TableName") or "")
            key = request_body.get("Key") or request_body.get("Item") or {}
            request.delivery_id = (
                str((key.get("DeliveryId") or {}).get("S") or "") if isinstance(key, dict) else ""
            )
            for hook in counter.hooks:
                hook(action, request_body, request.status)
            return response

        DynamoHandler.call_action = counting  # type: ignore[method-assign]
        try:
            yield self
        finally:
            DynamoHandler.call_action = original  # type: ignore[method-assign]

    def mark(self) -> int:
        with self._lock:
            return len(self._requests)

    def since(self, mark: int, until: int | None = None) -> list[DynamoRequest]:
        with self._lock:
            return list(self._requests[mark:until])


BACKGROUND = frozenset({"manager"})  # its scheduled sweep runs whatever the invocations do


def tally(
    requests: list[DynamoRequest], label_of: Callable[[str], str], per: float
) -> dict[str, dict[str, float]]:
    """Reads and writes divided by ``per`` (invocations or seconds), in total and per caller label.

    Background callers (the manager's sweep) are shown under their label but left out of the total.
    """
    totals: dict[str, dict[str, float]] = {"total": {"reads": 0, "writes": 0}}
    for request in requests:
        if not (request.is_read or request.is_write):
            continue
        kind = "reads" if request.is_read else "writes"
        label = label_of(request.access_key)
        totals.setdefault(label, {"reads": 0, "writes": 0})[kind] += 1
        if label not in BACKGROUND:
            totals["total"][kind] += 1
    return {
        label: {kind: round(count / per, 2) for kind, count in counts.items()}
        for label, counts in sorted(totals.items())
    }


def session_names_by_access_key() -> dict[str, str]:
    """The role session name behind each access key the local STS has issued."""
    from moto.sts.models import sts_backends

    return {
        role.access_key_id: role.session_name
        for backend in sts_backends.values()
        for partition in backend.values()
        for role in partition.assumed_roles
    }
