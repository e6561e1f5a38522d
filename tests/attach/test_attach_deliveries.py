"""Deliveries: each one runs once however often it is posted, is acknowledged only when slow, and is answered
until the helper stack confirms it; a Lambda retry is a new delivery. The session against the fake helper
stack, then the bookkeeping (plldb/local/session/deliveries.py) alone with an injected clock.
"""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
from attach_fake_api import FakeHelperStack, caller_of
from attach_support import Runner, run, settings, start

from plldb import protocol
from plldb.local.invocation import Invocation, Outcome
from plldb.local.session import SessionOutcome
from plldb.local.session.deliveries import RESPONSE_RESEND_LIMIT, Decision, Deliveries, Phase

DELIVERY = "d1" * 16
RETRY = "d2" * 16


# --- acknowledgements --------------------------------------------------------------------------------------
def test_a_run_that_answers_before_the_ack_delay_is_not_acknowledged() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api)  # the ack delay (an hour) never passes before the answer
        await attached.until_instrumented()
        key = await api.deliver("req-quick")
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-quick"])
        assert await attached.detach() == SessionOutcome(0, None)
        assert api.received_kinds() == ["open", "response", "close"]
        assert api.items[key].acks == 0

    run(body)


def test_a_run_still_going_after_the_ack_delay_is_acknowledged_then_answered() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api, connection_settings=settings(ack_delay_seconds=0.01))
        await attached.until_instrumented()
        attached.runner.hold("req-slow")  # the developer sits at a breakpoint
        key = await api.deliver("req-slow")
        await attached.until(lambda: api.items[key].acks == 1)
        assert api.messages_about("response", key) == []  # acknowledged while it still runs
        attached.runner.release("req-slow")
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-slow"])
        assert await attached.detach() == SessionOutcome(0, None)
        assert api.received_kinds() == ["open", "ack", "response", "close"]
        assert api.messages("ack") == [protocol.ack_message(*key)]
        # The ack reached the routes while the run was held, before the run ended.
        assert attached.timeline.kinds("received", "ran") == [
            "received",
            "received",
            "ran",
            "received",
            "received",
        ]

    run(body)


# --- the same delivery posted again ----------------------------------------------------------------------
def test_a_delivery_posted_again_runs_once_repeating_its_ack_then_its_answer_then_nothing() -> None:
    async def body(api: FakeHelperStack) -> None:
        api.confirm_responses = False
        attached = start(api, connection_settings=settings(ack_delay_seconds=0))
        await attached.until_instrumented()
        attached.runner.hold("req-dup")
        key = await api.deliver("req-dup")
        await attached.until(lambda: api.items[key].acks == 1)
        await api.repost(key)  # while it runs: the ack again, no second run
        await attached.until(lambda: api.items[key].acks == 2)
        attached.runner.release("req-dup")
        await attached.until(lambda: len(api.messages_about("response", key)) == 1)
        await api.repost(key)  # answered, not confirmed: the answer again
        await attached.until(lambda: len(api.messages_about("response", key)) == 2)
        await api.post(protocol.stored_message(*key))
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-dup"])
        await api.repost(key)  # confirmed: nothing is sent any more
        await attached.until(lambda: attached.timeline.values("on_duplicate_invoke") == ["req-dup"] * 3)
        assert await attached.detach() == SessionOutcome(0, None)
        assert attached.runner.count("req-dup") == 1
        first, again = api.messages_about("response", key)
        assert first == again
        assert api.received_kinds() == ["open", "ack", "ack", "response", "response", "close"]

    run(body)


def test_already_answered_means_an_earlier_send_was_stored() -> None:
    async def body(api: FakeHelperStack) -> None:
        api.confirm_responses = False
        attached = start(api)
        await attached.until_instrumented()
        key = await api.deliver("req-aa")
        await attached.until(lambda: len(api.messages_about("response", key)) == 1)
        await api.repost(key)  # the repeated answer is refused: AlreadyAnswered
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-aa"])
        assert await attached.detach() == SessionOutcome(0, None)
        assert attached.timeline.kinds("on_invocation_refused") == []

    run(body)


@pytest.mark.parametrize(
    ("code", "reason", "message"),
    [
        (504, None, "the function stopped waiting at its deadline; this answer came too late"),
        (
            503,
            "its debugging session has ended",
            "the function stopped waiting: its debugging session has ended",
        ),
    ],
)
def test_an_answer_after_the_function_gave_up_is_refused_and_never_counted_as_delivered(
    code: int, reason: str | None, message: str
) -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api, connection_settings=settings(ack_delay_seconds=0))
        await attached.until_instrumented()
        attached.runner.hold("req-late")
        # The layer answered 504 or 503 itself before the developer's ack could reach its item.
        key = await api.deliver("req-late", given_up=(code, reason))
        await attached.until(
            lambda: attached.timeline.values("on_warning") == [f"Request req-late: {message}"]
        )
        attached.runner.release("req-late")
        await attached.until(lambda: bool(attached.timeline.values("on_invocation_refused")))
        assert attached.timeline.values("on_invocation_refused") == [("req-late", "RequestClosed", message)]
        assert await attached.detach() == SessionOutcome(0, None)
        assert attached.timeline.kinds("on_invocation_stored") == []
        assert api.items[key].response is None

    run(body)


def test_an_answer_for_a_delivery_the_routes_do_not_know_is_refused() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api)
        await attached.until_instrumented()
        key = await api.deliver("req-unknown")
        del api.items[key]  # expired (TTL) before the developer answered
        await attached.until(lambda: bool(attached.timeline.values("on_invocation_refused")))
        assert attached.timeline.values("on_invocation_refused") == [
            ("req-unknown", "UnknownRequest", "no such invocation is waiting in this session")
        ]
        assert await attached.detach() == SessionOutcome(0, None)

    run(body)


def test_answers_never_stored_are_sent_again_then_given_up_after_the_resend_limit() -> None:
    async def body(api: FakeHelperStack) -> None:
        api.lose_responses = True
        attached = start(api, connection_settings=settings(response_confirm_seconds=0.05))
        await attached.until_instrumented()
        key = await api.deliver("req-unconfirmed")
        await attached.until(lambda: bool(attached.timeline.values("on_invocation_refused")))
        assert attached.timeline.values("on_invocation_refused") == [
            (
                "req-unconfirmed",
                "Unconfirmed",
                f"the server did not confirm the answer after {RESPONSE_RESEND_LIMIT} sends",
            )
        ]
        assert await attached.detach() == SessionOutcome(0, None)
        # Everything sent before the close arrived before it: exactly the limit, nothing after giving up.
        assert len(api.messages_about("response", key)) == RESPONSE_RESEND_LIMIT

    run(body)


# --- Lambda delivering a request id again ---------------------------------------------------------------------
def test_a_retried_request_id_is_a_new_delivery_that_runs_again_and_answers_with_its_own_id() -> None:
    count = iter(range(1, 10))

    async def body(api: FakeHelperStack) -> None:
        runner = Runner(api.timeline, lambda invocation: Outcome(200, json.dumps(next(count))))
        attached = start(api, runner=runner)
        await attached.until_instrumented()
        first = await api.deliver("req-retry", delivery_id=DELIVERY)
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-retry"])
        retry = await api.deliver("req-retry", delivery_id=RETRY)  # Lambda retries the request id
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-retry"] * 2)
        assert await attached.detach() == SessionOutcome(0, None)
        assert api.items[first].response == protocol.result_message(caller_of("hello-fn"), DELIVERY, "1")
        assert api.items[retry].response == protocol.result_message(caller_of("hello-fn"), RETRY, "2")
        assert [call.delivery_id for call in runner.calls] == [DELIVERY, RETRY]
        assert attached.timeline.kinds("on_duplicate_invoke") == []

    run(body)


def test_two_deliveries_of_one_request_running_at_once_are_each_settled_by_their_own_replies() -> None:
    async def body(api: FakeHelperStack) -> None:
        api.confirm_responses = False
        gates = {DELIVERY: threading.Event(), RETRY: threading.Event()}

        def answer(invocation: Invocation) -> Outcome:
            gates[invocation.delivery_id].wait()
            return Outcome(200, json.dumps(invocation.delivery_id))

        attached = start(api, runner=Runner(api.timeline, answer))
        try:
            await attached.until_instrumented()
            old = await api.deliver("req-both", delivery_id=DELIVERY)
            new = await api.deliver("req-both", delivery_id=RETRY)
            await attached.until(lambda: attached.timeline.values("run") == ["req-both"] * 2)
            gates[DELIVERY].set()
            await attached.until(lambda: len(api.messages_about("response", old)) == 1)
            await api.post(protocol.stored_message(*old))
            await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-both"])
            # The old delivery's confirmation settled it alone: the new one's answer is still to come.
            gates[RETRY].set()
            await attached.until(lambda: len(api.messages_about("response", new)) == 1)
            await api.post(protocol.stored_message(*old))  # a repeat about the old one changes nothing
            await api.post(protocol.stored_message(*new))
            await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-both"] * 2)
        finally:
            for gate in gates.values():
                gate.set()
        assert await attached.detach() == SessionOutcome(0, None)
        assert api.items[old].response == protocol.result_message(*old, json.dumps(DELIVERY))
        assert api.items[new].response == protocol.result_message(*new, json.dumps(RETRY))

    run(body)


def test_twenty_invocations_run_at_once() -> None:
    async def body(api: FakeHelperStack) -> None:
        together = threading.Barrier(20)

        def answer(invocation: Invocation) -> Outcome:
            together.wait()  # passes only once all twenty run concurrently
            return Outcome(200, json.dumps(invocation.request_id))

        attached = start(api, runner=Runner(api.timeline, answer))
        await attached.until_instrumented()
        for index in range(20):
            await api.deliver(f"req-{index:02d}")
        await attached.until(lambda: len(attached.timeline.values("on_invocation_stored")) == 20)
        assert await attached.detach() == SessionOutcome(0, None)
        assert sorted(attached.timeline.values("on_invocation_stored")) == [f"req-{i:02d}" for i in range(20)]

    run(body)


def test_a_runner_that_raises_is_answered_with_a_local_error() -> None:
    def answer(invocation: Invocation) -> Outcome:
        raise OSError("the worker could not start")

    async def body(api: FakeHelperStack) -> None:
        attached = start(api, runner=Runner(api.timeline, answer))
        await attached.until_instrumented()
        key = await api.deliver("req-broken")
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-broken"])
        error = api.items[key].response["error"]  # type: ignore[index]
        assert (error["errorType"], error["errorMessage"]) == (
            "PlldbLocalError",
            "plldb could not run the function locally: OSError: the worker could not start",
        )
        assert error["stackTrace"][-1] == "OSError: the worker could not start"
        assert await attached.detach() == SessionOutcome(0, None)

    run(body)


# --- the bookkeeping alone, with an injected clock --------------------------------------------------------------
ids = {
    name: hashlib.md5(name.encode()).hexdigest()
    for name in (
        "req-run",
        "req-done",
        "req-confirmed",
        "req-refused",
        "req-running",
        "req-answered",
        "req-old",
        "req-new",
    )
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def invoke(request_id: str, delivery_id: str, function: str = "hello-fn") -> dict[str, object]:
    return {
        "type": "invoke",
        "caller": caller_of(function),
        "deliveryId": delivery_id,
        "requestId": request_id,
        "function": {"name": function},
        "context": {},
    }


def test_a_repost_repeats_what_was_said_and_a_retry_runs_again() -> None:
    deliveries = Deliveries(Clock())
    decision, delivery = deliveries.receive(invoke("req", DELIVERY))
    assert (decision, delivery.phase, delivery.request_id, delivery.function_name) == (
        Decision.RUN,
        Phase.RUNNING,
        "req",
        "hello-fn",
    )
    assert deliveries.receive(invoke("req", DELIVERY)) == (Decision.REPEAT_ACK, delivery)
    response = protocol.result_message(caller_of("hello-fn"), DELIVERY, "1")
    deliveries.answered(delivery, response)
    assert deliveries.receive(invoke("req", DELIVERY)) == (Decision.REPEAT_ANSWER, delivery)
    assert deliveries.stored(delivery.key) is delivery
    assert deliveries.stored(delivery.key) is None  # a repeated confirmation
    assert (delivery.phase, delivery.response) == (Phase.CONFIRMED, None)
    assert deliveries.receive(invoke("req", DELIVERY)) == (Decision.IGNORE, delivery)
    retry_decision, retry = deliveries.receive(invoke("req", RETRY))  # Lambda retries the request id
    assert (retry_decision, retry.key) == (Decision.RUN, (caller_of("hello-fn"), RETRY))
    other_decision, _ = deliveries.receive(invoke("req", DELIVERY, function="other-fn"))
    assert other_decision == Decision.RUN  # another function's delivery, however its id looks
    assert len(deliveries) == 3


def test_unconfirmed_answers_are_due_every_interval_and_given_up_after_the_limit() -> None:
    clock = Clock()
    deliveries = Deliveries(clock)
    _, delivery = deliveries.receive(invoke("req", DELIVERY))
    deliveries.answered(delivery, protocol.result_message(*delivery.key, "1"))
    deliveries.sent(delivery)
    sends_at = [clock.now]
    assert deliveries.due_resends(15) == ([], [])
    for _ in range(RESPONSE_RESEND_LIMIT - 1):
        clock.now += 14
        assert deliveries.due_resends(15) == ([], [])
        clock.now += 1
        assert deliveries.due_resends(15) == ([delivery], [])
        deliveries.sent(delivery)
        sends_at.append(clock.now)
    assert (delivery.sends, sends_at) == (RESPONSE_RESEND_LIMIT, [1000.0, 1015.0, 1030.0])
    clock.now += 15
    assert deliveries.due_resends(15) == ([], [delivery])
    assert (delivery.phase, delivery.response, delivery.finished_at) == (Phase.REFUSED, None, 1045.0)
    assert deliveries.due_resends(15) == ([], [])  # given up once


def test_a_running_delivery_is_never_due_and_a_confirmed_one_never_again() -> None:
    clock = Clock()
    deliveries = Deliveries(clock)
    _, running = deliveries.receive(invoke("req-run", ids["req-run"]))
    _, confirmed = deliveries.receive(invoke("req-done", ids["req-done"]))
    deliveries.answered(confirmed, protocol.result_message(*confirmed.key, "1"))
    deliveries.sent(confirmed)
    deliveries.stored(confirmed.key)
    clock.now += 10_000
    assert deliveries.due_resends(15) == ([], [])
    assert running.phase == Phase.RUNNING


def test_finished_deliveries_are_forgotten_after_the_item_ttl_and_unfinished_ones_never() -> None:
    clock = Clock()
    deliveries = Deliveries(clock)
    _, confirmed = deliveries.receive(invoke("req-confirmed", ids["req-confirmed"]))
    deliveries.answered(confirmed, protocol.result_message(*confirmed.key, "1"))
    deliveries.stored(confirmed.key)
    _, refused = deliveries.receive(invoke("req-refused", ids["req-refused"]))
    deliveries.answered(refused, protocol.result_message(*refused.key, "1"))
    deliveries.refused(refused)
    _, running = deliveries.receive(invoke("req-running", ids["req-running"]))
    _, answered = deliveries.receive(invoke("req-answered", ids["req-answered"]))
    deliveries.answered(answered, protocol.result_message(*answered.key, "1"))

    clock.now += protocol.INVOCATION_ITEM_TTL_SECONDS
    deliveries.forget_old()
    assert len(deliveries) == 4  # as long as the dispatcher could still post them, they are known
    assert deliveries.receive(invoke("req-confirmed", ids["req-confirmed"])) == (Decision.IGNORE, confirmed)

    clock.now += 0.001
    deliveries.forget_old()
    assert {d.request_id for d in deliveries.all()} == {"req-running", "req-answered"}
    # A delivery forgotten is a stranger again: posted now, it would run.
    assert deliveries.receive(invoke("req-confirmed", ids["req-confirmed"]))[0] == Decision.RUN


def test_receiving_forgets_what_is_old() -> None:
    clock = Clock()
    deliveries = Deliveries(clock)
    _, old = deliveries.receive(invoke("req-old", ids["req-old"]))
    deliveries.answered(old, protocol.result_message(*old.key, "1"))
    deliveries.stored(old.key)
    clock.now += protocol.INVOCATION_ITEM_TTL_SECONDS + 1
    deliveries.receive(invoke("req-new", ids["req-new"]))
    assert [d.request_id for d in deliveries.all()] == ["req-new"]
