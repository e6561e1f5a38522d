"""Payloads of every size Lambda allows, the exact inline/object boundary, and many invocations at once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from plldb import protocol
from tests.layer.layer_harness import AttachFactory, Invoke, Invoked, LayerBench


def sized_json(key: str, size: int, filler: str = "x") -> bytes:
    """``{"key": "..."}`` of exactly ``size`` bytes of UTF-8: ``filler`` repeated, then ASCII to the byte."""
    frame = len(json.dumps({key: ""}).encode("utf-8"))
    width = len(filler.encode("utf-8"))
    count, rest = divmod(size - frame, width)
    body = json.dumps({key: filler * count + "z" * rest}, ensure_ascii=False).encode("utf-8")
    assert len(body) == size
    return body


def layer_payload(invoke: Invoke, event: str | None = None) -> dict[str, Any]:
    """What the layer handed the dispatcher for this invoke, rebuilt from the message (its digest says so)."""
    message = invoke.message
    payload: dict[str, Any] = {
        "requestId": message["requestId"],
        "function": {"version": message["function"]["version"]},
        "handler": message["handler"],
        "context": message["context"],
        "environment": message["environment"],
        "credentials": message["credentials"],
    }
    if "event" in message:
        payload["event"] = message["event"]
    else:
        payload.update(eventObject=True, eventSha256=message["eventSha256"], eventSize=message["eventSize"])
    item = invoke.item()
    assert item is not None
    assert protocol.payload_digest(payload) == item[protocol.A_PAYLOAD_SHA256]["S"]
    if event is not None:
        payload.pop("eventObject", None), payload.pop("eventSha256", None), payload.pop("eventSize", None)
        payload["event"] = event
    return payload


def test_a_6_mb_event_and_a_6_mb_result_round_trip_intact_through_the_payload_objects(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    """Lambda's synchronous limit both ways: the event goes up as an object, the result comes back as one."""
    event = sized_json("blob", protocol.MAX_PAYLOAD_BYTES, "é")  # multi-byte text, exactly 6 MiB of JSON
    result = sized_json("back", protocol.MAX_PAYLOAD_BYTES)
    replies: list[dict[str, Any]] = []

    def script(invoke: Invoke) -> None:
        invoke.ack()  # a large answer takes a moment, as it does in plldb
        assert invoke.event_bytes() == event
        replies.append(invoke.answer_by_upload(result))

    debugger = attach("Echo", script=script)
    function_name = layer_bench.app.functions["Echo"]
    answered = layer_bench.invoke(function_name, raw=event)

    assert (answered.function_error, len(answered.payload)) == (None, protocol.MAX_PAYLOAD_BYTES)
    assert answered.payload == result
    (invoke,) = debugger.invokes
    message = invoke.message
    assert "event" not in message
    assert (message["eventSha256"], message["eventSize"]) == (hashlib.sha256(event).hexdigest(), len(event))
    debugger.wait_scripts()
    assert replies[0]["type"] == protocol.MSG_STORED
    objects = layer_bench.payload_objects()
    assert objects[protocol.event_object_key(invoke.caller, invoke.delivery_id)] == event
    assert objects[protocol.response_object_key(invoke.caller, invoke.delivery_id)] == result
    item = invoke.item()
    assert item is not None
    assert {
        name: item[name]
        for name in (
            protocol.A_RESPONSE_CODE,
            protocol.A_RESPONSE_OBJECT,
            protocol.A_RESPONSE_SHA256,
            protocol.A_RESPONSE_SIZE,
        )
    } == {
        protocol.A_RESPONSE_CODE: {"N": "200"},
        protocol.A_RESPONSE_OBJECT: {"S": protocol.response_object_key(invoke.caller, invoke.delivery_id)},
        protocol.A_RESPONSE_SHA256: {"S": hashlib.sha256(result).hexdigest()},
        protocol.A_RESPONSE_SIZE: {"N": str(len(result))},
    }
    assert protocol.A_RESPONSE not in item


def test_an_event_just_too_large_to_inline_goes_as_an_object(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    """Inline exactly while the dispatcher's payload fits INLINE_MESSAGE_LIMIT; one byte more, an object."""
    debugger = attach("Echo")
    function_name = layer_bench.app.functions["Echo"]
    assert layer_bench.invoke(function_name, {"probe": ""}).json() == {"local": {"probe": ""}}
    probe = layer_payload(debugger.invokes[0])

    def event(pad: int) -> str:
        return json.dumps({"probe": "p" * pad})

    pad = 1000
    pad += protocol.INLINE_MESSAGE_LIMIT - protocol.message_size(dict(probe, event=event(pad)))
    fits, too_large = event(pad), event(pad + 1)

    inline = layer_bench.invoke(function_name, raw=fits.encode("utf-8"))
    by_object = layer_bench.invoke(function_name, raw=too_large.encode("utf-8"))

    assert inline.json() == {"local": json.loads(fits)}
    assert by_object.json() == {"local": json.loads(too_large)}
    first, second = debugger.invokes[1:]
    assert first.message["event"] == fits
    assert protocol.message_size(layer_payload(first)) == protocol.INLINE_MESSAGE_LIMIT
    assert "event" not in second.message
    assert second.event_bytes() == too_large.encode("utf-8")
    assert protocol.message_size(layer_payload(second, too_large)) == protocol.INLINE_MESSAGE_LIMIT + 1
    assert all(
        protocol.message_size(invoke.message) <= protocol.WEBSOCKET_MESSAGE_LIMIT
        for invoke in debugger.invokes
    )


@pytest.mark.timeout(900)
def test_fifty_concurrent_invocations_each_get_their_own_answer(
    layer_bench: LayerBench, attach: AttachFactory
) -> None:
    """50 invocations at once, over one debugger connection: each answer reaches its own caller.

    Each ran in an execution environment of its own while in flight (the local cloud gives an invocation
    the first idle one and starts a new one only when every other is busy); how many were in flight at
    once depends on how the machine schedules the 50 callers, so it is not asserted. The local cloud
    shares 2 cores between every process: 50 functions and 50 dispatchers starting cold at once take longer
    than the 5 s ack timeout here (on AWS each has its own CPU). So their environments, and the routes',
    are started first, by a round whose outcomes are not the point; the second round is.
    """
    count = 50
    function_name = layer_bench.app.functions["Echo"]

    def script(invoke: Invoke) -> None:
        invoke.answer(json.dumps({"order": invoke.event()["order"], "answeredFor": invoke.request_id}))

    def all_at_once(event: Callable[[int], Any]) -> list[Invoked]:
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(lambda n: layer_bench.invoke(function_name, event(n)), range(count)))

    debugger = attach("Echo", script=script)
    dispatcher = layer_bench.helper.dispatcher_function_arn
    with ThreadPoolExecutor(count) as pool:
        warmed = list(pool.map(lambda _: layer_bench.invoke(dispatcher, {"action": "status"}), range(count)))
    assert {w.json()["status"] for w in warmed} == {"refused"}
    pings = [debugger.send({"type": protocol.MSG_PING}) for _ in range(8)]
    debugger.wait_message(lambda m: m.get("type") == protocol.MSG_PONG, "a pong", pings[0])
    all_at_once(lambda n: {"order": n, "warm": True})

    results = all_at_once(lambda n: {"order": n})

    assert [r.error_type for r in results] == [None] * count
    assert [r.json() for r in results] == [
        {"order": n, "answeredFor": r.request_id} for n, r in enumerate(results)
    ]
    assert len({r.request_id for r in results}) == count
    invokes = [i for i in debugger.invokes if "warm" not in i.event()]
    assert sorted(i.request_id for i in invokes) == sorted(r.request_id for r in results)
