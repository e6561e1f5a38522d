"""Where an invocation's time goes, read from the DynamoDB requests on its item as the local cloud served them.

Every invocation through plldb (and every floor round) writes one item and everything else happens
around it: the layer's ``PutItem``, then the dispatcher's (or relay's) requests, then the answer's
``UpdateItem`` from ``$default``, then the layer's reads. The local cloud runs in the benchmark's process,
so each request's arrival and answer are seen on one clock. Callers are told apart by access key
(each role session has its own): the first writer is the layer, the next caller the dispatcher, the
next one that updates the item is ``$default``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from plldb.bench.dynamodb_counter import DynamoRequest
from plldb.bench.stats import percentile

PHASES = (
    "before_put",
    "put",
    "to_dispatcher",
    "dispatcher_on_item",
    "to_answer",
    "answer_update",
    "polling_lag",
    "after_read",
    "put_to_answer",  # to_dispatcher + dispatcher_on_item + to_answer
)


def invocation_phases(
    requests: list[DynamoRequest], spans: list[list[Any]] | None = None
) -> dict[str, float] | None:
    """The phases of one invocation, in ms, from the requests on its item (None when incomplete).

    With the invocations' ``spans`` (the driver's monotonic start and end of each, the same clock on
    one machine), the time before the item's ``PutItem`` and after the read that saw the answer too. A
    span is matched to its item by delivery id when it names one (the floor's), else by containing the
    ``PutItem`` (which holds only when invocations run one at a time).
    """
    ordered = sorted(requests, key=lambda request: request.at)
    if not ordered or ordered[0].action != "PutItem":
        return None
    put = ordered[0]
    layer = put.access_key
    others = [request for request in ordered[1:] if request.access_key != layer]
    if not others:
        return None
    dispatcher = others[0].access_key
    dispatched = [request for request in others if request.access_key == dispatcher]
    answers = [
        request
        for request in others
        if request.access_key != dispatcher and request.action == "UpdateItem" and request.status == 200
    ]
    reads = [request for request in ordered if request.access_key == layer and request.action == "GetItem"]
    if not answers or not reads:
        return None
    answer = answers[0]
    # The layer stops reading once a read returns the answer, so its last read is the one that saw it.
    # Under load that read can arrive before the answer's UpdateItem has finished and still be served
    # after it: what matters is that it ended after the update began, not when it arrived.
    seen = reads[-1]
    if seen.done < answer.at:
        return None
    outside = {}
    if spans is not None:
        span = next(
            (
                span
                for span in spans
                if (span[2] == put.delivery_id if len(span) > 2 else span[0] <= put.at <= span[1])
            ),
            None,
        )
        if span is None:
            return None  # not one of the measured invocations (a warm-up round)
        outside = {"before_put": (put.at - span[0]) * 1000, "after_read": (span[1] - seen.done) * 1000}
    return {
        **outside,
        "put": (put.done - put.at) * 1000,
        "to_dispatcher": (dispatched[0].at - put.done) * 1000,
        "dispatcher_on_item": (dispatched[-1].done - dispatched[0].at) * 1000,
        "to_answer": (answer.at - dispatched[-1].done) * 1000,
        "answer_update": (answer.done - answer.at) * 1000,
        "put_to_answer": (answer.at - put.done) * 1000,
        # A read served while the update's own answer was still on its way ends before it: no lag.
        "polling_lag": max(0.0, (seen.done - answer.done) * 1000),
        "layer_reads": float(len(reads)),
    }


def breakdown(
    requests: list[DynamoRequest], table: str, spans: list[list[float]] | None = None
) -> dict[str, Any]:
    """p50 of each phase over the complete invocations on ``table`` (``n`` of them)."""
    items: dict[str, list[DynamoRequest]] = defaultdict(list)
    for request in requests:
        if request.table == table and request.delivery_id:
            items[request.delivery_id].append(request)
    phases = [
        found for found in (invocation_phases(group, spans) for group in items.values()) if found is not None
    ]
    if not phases:
        return {"n": 0}
    names = [name for name in (*PHASES, "layer_reads") if all(name in entry for entry in phases)]
    return {
        **{name: round(percentile([entry[name] for entry in phases], 0.5), 2) for name in names},
        "n": len(phases),
    }
