"""The session client against a real WebSocket server playing the API side, and a moto DynamoDB table."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from attach_fake_api import FakeApi, invoke_message, until
from attach_support import MotoServer, create_debugger_table

from plldb import protocol
from plldb.local.session import (
    ConnectionSettings,
    DebuggerTableChunks,
    DebugSession,
    IncomingInvocation,
    InvocationOutcome,
    SessionObserver,
    SessionOutcome,
)

SEED = "5eed" * 16
DELIVERY = "d1" * 16  # the layer's delivery of an invocation
RETRY = "d2" * 16  # Lambda delivering the same request id again


def invoke(request_id: str, delivery_id: str = DELIVERY, **extra: Any) -> dict[str, Any]:
    """An invoke message as the layer posts it, for one delivery of the request."""
    return invoke_message(request_id, deliveryId=delivery_id, **extra)


FAST = ConnectionSettings(
    keepalive_seconds=3600,
    pong_timeout_seconds=1,
    max_connection_age_seconds=3600,
    drain_seconds=0.3,
    open_timeout_seconds=5,
    instrument_timeout_seconds=10,
    detach_timeout_seconds=10,
    response_confirm_seconds=3600,
    reconnect_delays=(0.0, 0.05, 0.1),
    reconnect_give_up_seconds=5,
    protocol_ping_seconds=None,
)


class Runner:
    """Runs invocations like the worker pool would: blocking, on the session's threads, counted."""

    def __init__(self, answer: Callable[[IncomingInvocation], InvocationOutcome] | None = None) -> None:
        self.calls: list[IncomingInvocation] = []
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        self._answer = answer or (lambda inv: InvocationOutcome(200, json.dumps({"echo": inv.event_json})))

    def __call__(self, invocation: IncomingInvocation) -> InvocationOutcome:
        with self._lock:
            self.calls.append(invocation)
        assert self.gate.wait(20), "the test never released the runner"
        return self._answer(invocation)

    def count(self, request_id: str) -> int:
        with self._lock:
            return sum(1 for call in self.calls if call.request_id == request_id)


class Events(SessionObserver):
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def on_connected(self) -> None:
        self.log.append(("connected", None))

    def on_connection_lost(self, reason: str) -> None:
        self.log.append(("lost", reason))

    def on_reconnected(self, rotated: bool) -> None:
        self.log.append(("reconnected", rotated))

    def on_instrumented(self, message: Any) -> None:
        self.log.append(("instrumented", message["functions"]))

    def on_invocation_stored(self, request_id: str) -> None:
        self.log.append(("stored", request_id))

    def on_invocation_refused(self, request_id: str, code: str, message: str) -> None:
        self.log.append(("refused", (request_id, code)))

    def on_duplicate_invoke(self, request_id: str) -> None:
        self.log.append(("duplicate", request_id))

    def kinds(self, kind: str) -> list[Any]:
        return [value for name, value in self.log if name == kind]


@pytest.fixture
def chunks(moto_env: MotoServer) -> DebuggerTableChunks:
    name = f"PLLDBDebugger-{uuid.uuid4().hex[:8]}"
    create_debugger_table(moto_env, name)
    return DebuggerTableChunks(moto_env.session(), name)


def new_api(**options: Any) -> FakeApi:
    return FakeApi(
        session_id=str(uuid.uuid4()),
        reconnect_anchor=protocol.reconnect_token(SEED, protocol.RECONNECT_CHAIN_LENGTH),
        **options,
    )


def new_session(
    api: FakeApi,
    runner: Runner,
    chunks: DebuggerTableChunks,
    events: Events | None = None,
    settings: ConnectionSettings = FAST,
) -> DebugSession:
    return DebugSession(
        websocket_url=api.url,
        session_id=api.session_id,
        reconnect_seed=SEED,
        stack_name="hello-stack",
        runner=runner,
        chunks=chunks,
        observer=events,
        settings=settings,
    )


def scenario(
    body: Callable[[FakeApi, DebugSession, asyncio.Task[SessionOutcome]], Awaitable[None]],
    runner: Runner,
    chunks: DebuggerTableChunks,
    events: Events | None = None,
    settings: ConnectionSettings = FAST,
    **api_options: Any,
) -> SessionOutcome:
    """Run ``body`` against a connected session; returns how the session ended."""

    async def main() -> SessionOutcome:
        async with new_api(**api_options) as api:
            session = new_session(api, runner, chunks, events, settings)
            task = asyncio.ensure_future(session.run())
            try:
                await until(lambda: api.current_connection_id is not None or task.done(), what="connect")
                await body(api, session, task)
                return await asyncio.wait_for(task, 15)
            finally:
                runner.gate.set()
                if not task.done():
                    task.cancel()

    return asyncio.run(asyncio.wait_for(main(), 40))


async def detach(session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
    session.interrupt()
    await asyncio.wait_for(asyncio.shield(task), 10)


def test_invocation_is_acknowledged_before_it_runs_then_answered_and_detach_restores(
    chunks: DebuggerTableChunks,
) -> None:
    runner = Runner()
    runner.gate.clear()
    events = Events()

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        await until(lambda: events.kinds("instrumented") == [["hello-fn"]], what="instrumented")
        await api.post(invoke("req-1"))
        await until(lambda: len(api.messages("ack", "req-1")) == 1, what="ack")
        assert api.stored_responses == {}  # acknowledged while the handler is still running
        runner.gate.set()
        await until(lambda: events.kinds("stored") == ["req-1"], what="stored")
        assert api.stored_responses["req-1"] == {
            "type": "response",
            "requestId": "req-1",
            "deliveryId": DELIVERY,
            "statusCode": 200,
            "payload": json.dumps({"echo": '{"name": "world"}'}),
        }
        await detach(session, task)
        assert [r.message["type"] for r in api.received] == ["ack", "response", "detach"]

    outcome = scenario(body, runner, chunks, events)
    assert outcome == SessionOutcome(0, None)
    call = runner.calls[0]
    assert (call.request_id, call.function_name, call.handler, call.event_json) == (
        "req-1",
        "hello-fn",
        "app.lambda_handler",
        '{"name": "world"}',
    )
    assert call.environment == {"GREETING": "hello"}


def test_invoke_delivered_twice_runs_once_and_repeats_ack_then_answer(chunks: DebuggerTableChunks) -> None:
    runner = Runner()
    runner.gate.clear()
    events = Events()

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        api.confirm_responses = False
        await api.post(invoke("req-dup"))
        await until(lambda: runner.count("req-dup") == 1, what="first run")
        await api.post(invoke("req-dup"))  # re-posted while running: ack again, do not run
        await until(lambda: len(api.messages("ack", "req-dup")) == 2, what="second ack")
        runner.gate.set()
        await until(lambda: len(api.messages("response", "req-dup")) == 1, what="response")
        await api.post(invoke("req-dup"))  # answered, unconfirmed: send the answer again
        await until(lambda: len(api.messages("response", "req-dup")) == 2, what="resent response")
        api.confirm_responses = True
        await api.post(protocol.stored_message("req-dup", DELIVERY))
        await until(lambda: events.kinds("stored") == ["req-dup"], what="stored")
        await api.post(invoke("req-dup"))  # confirmed: ignore entirely
        await until(lambda: events.kinds("duplicate") == ["req-dup"] * 3, what="third duplicate")
        await detach(session, task)

    outcome = scenario(body, runner, chunks, events)
    assert outcome.exit_code == 0
    assert runner.count("req-dup") == 1


def test_already_answered_error_counts_as_stored(chunks: DebuggerTableChunks) -> None:
    runner = Runner()
    events = Events()

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        api.confirm_responses = False
        await api.post(invoke("req-aa"))
        await until(lambda: len(api.messages("response", "req-aa")) == 1, what="response")
        await api.post(
            protocol.error_message(protocol.ERR_ALREADY_ANSWERED, "stored before", request_id="req-aa")
        )
        await until(lambda: events.kinds("stored") == ["req-aa"], what="stored")
        await detach(session, task)

    assert scenario(body, runner, chunks, events).exit_code == 0


def test_refused_answer_is_reported(chunks: DebuggerTableChunks) -> None:
    runner = Runner()
    events = Events()

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        api.confirm_responses = False
        await api.post(invoke("req-late"))
        await until(lambda: len(api.messages("response", "req-late")) == 1, what="response")
        await api.post(
            protocol.error_message(protocol.ERR_UNKNOWN_REQUEST, "timed out", request_id="req-late")
        )
        await until(lambda: events.kinds("refused") == [("req-late", "UnknownRequest")], what="refused")
        await detach(session, task)

    assert scenario(body, runner, chunks, events).exit_code == 0


def test_large_event_is_read_from_chunk_items_and_verified(chunks: DebuggerTableChunks) -> None:
    event = json.dumps({"blob": "é" * (protocol.CHUNK_SIZE // 2 + 1000)}, ensure_ascii=False)
    data = event.encode("utf-8")
    parts = protocol.split_payload(data)
    assert len(parts) == 2
    for index, part in enumerate(parts):
        chunks.write(protocol.chunk_request_id("req-big", "event", index), part)
    runner = Runner(lambda inv: InvocationOutcome(200, json.dumps(len(inv.event_json))))

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        await api.post(
            invoke("req-big", event=None, eventChunks=len(parts), eventSha256=protocol.sha256_hex(data))
        )
        await api.post(invoke("req-bad", event=None, eventChunks=2, eventSha256="0" * 64))
        await until(lambda: {"req-big", "req-bad"} <= set(api.stored_responses), what="answers")
        await detach(session, task)

    scenario(body, runner, chunks)
    assert [call.event_json for call in runner.calls] == [event]


def test_event_with_wrong_digest_is_answered_with_a_clear_error(chunks: DebuggerTableChunks) -> None:
    chunks.write(protocol.chunk_request_id("req-tampered", "event", 0), b'{"a": 1}')
    runner = Runner()
    api_holder: list[FakeApi] = []

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        api_holder.append(api)
        await api.post(
            invoke("req-tampered", event=None, eventChunks=1, eventSha256=protocol.sha256_hex(b"other"))
        )
        await until(lambda: "req-tampered" in api.stored_responses, what="answer")
        await detach(session, task)

    scenario(body, runner, chunks)
    assert runner.calls == []
    assert api_holder[0].stored_responses["req-tampered"] == {
        "type": "response",
        "requestId": "req-tampered",
        "deliveryId": DELIVERY,
        "statusCode": 500,
        "error": {
            "errorMessage": "plldb could not read the event: the event's chunks do not match its SHA-256 digest",
            "errorType": "PlldbEventUnavailable",
            "stackTrace": [],
        },
    }


def test_large_answer_goes_by_chunk_items_and_medium_answer_in_fragments(chunks: DebuggerTableChunks) -> None:
    large = json.dumps({"data": "x" * (protocol.CHUNK_SIZE + 5)})
    medium = json.dumps(
        {"data": "ü" * 20_000}, ensure_ascii=False
    )  # ~40 KB: inline, but above the 32 KB frame quota
    answers = {"req-large": large, "req-medium": medium}
    runner = Runner(lambda inv: InvocationOutcome(200, answers[inv.request_id]))
    seen: dict[str, Any] = {}

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        await api.post(invoke("req-large"))
        await api.post(invoke("req-medium"))
        await until(lambda: set(answers) <= set(api.stored_responses), what="answers")
        seen["stored"] = dict(api.stored_responses)
        seen["frames"] = list(api.connections[api.current_connection_id or ""].frame_sizes)
        await detach(session, task)

    scenario(body, runner, chunks)
    stored = seen["stored"]
    data = large.encode("utf-8")
    assert stored["req-large"] == {
        "type": "response",
        "requestId": "req-large",
        "deliveryId": DELIVERY,
        "statusCode": 200,
        "payloadChunks": 2,
        "payloadSha256": protocol.sha256_hex(data),
    }
    reassembled = b"".join(
        chunks.read(protocol.chunk_request_id("req-large", "response", index, DELIVERY)) or b""
        for index in range(2)
    )
    assert reassembled == data
    assert stored["req-medium"]["payload"] == medium
    assert max(seen["frames"]) <= protocol.WEBSOCKET_FRAME_LIMIT
    medium_size = protocol.message_size(stored["req-medium"])
    assert medium_size > protocol.WEBSOCKET_FRAME_LIMIT
    assert sum(seen["frames"]) >= medium_size


def test_answer_too_large_for_lambda_becomes_its_error(chunks: DebuggerTableChunks) -> None:
    runner = Runner(lambda inv: InvocationOutcome(200, '"' + "y" * protocol.MAX_PAYLOAD_BYTES + '"'))
    stored: dict[str, Any] = {}

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        await api.post(invoke("req-huge"))
        await until(lambda: "req-huge" in api.stored_responses, what="answer")
        stored.update(api.stored_responses)
        await detach(session, task)

    scenario(body, runner, chunks)
    size = protocol.MAX_PAYLOAD_BYTES + 2
    assert stored["req-huge"]["error"] == {
        "errorMessage": f"Response payload size ({size} bytes) exceeded maximum allowed payload size "
        f"({protocol.MAX_PAYLOAD_BYTES} bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
        "stackTrace": [],
    }


def test_dropped_connection_reconnects_with_the_token_chain_and_loses_nothing(
    chunks: DebuggerTableChunks,
) -> None:
    runner = Runner()
    runner.gate.clear()
    events = Events()

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        await until(lambda: bool(events.kinds("instrumented")), what="instrumented")
        await api.post(invoke("req-flight"))
        await until(lambda: runner.count("req-flight") == 1, what="running")
        api.cut("conn-1")
        await until(lambda: api.current_connection_id == "conn-2", what="reconnect")
        assert api.connect_queries[1] == {
            "sessionId": api.session_id,
            "reconnectToken": protocol.reconnect_token(SEED, protocol.RECONNECT_CHAIN_LENGTH - 1),
        }
        # The layer re-posts the invocation it could not deliver; it must not run again.
        await api.post(invoke("req-flight"))
        runner.gate.set()
        await until(lambda: events.kinds("stored") == ["req-flight"], what="stored")
        # A second drop uses the next token of the chain.
        api.cut("conn-2")
        await until(lambda: api.current_connection_id == "conn-3", what="second reconnect")
        assert api.connect_queries[2]["reconnectToken"] == protocol.reconnect_token(
            SEED, protocol.RECONNECT_CHAIN_LENGTH - 2
        )
        await api.post(invoke("req-after"))
        await until(lambda: "req-after" in api.stored_responses, what="answer after reconnect")
        await detach(session, task)
        assert session.reconnect_count == 2

    outcome = scenario(body, runner, chunks, events)
    assert outcome.exit_code == 0
    assert runner.count("req-flight") == 1
    assert runner.count("req-after") == 1
    assert events.kinds("reconnected") == [False, False]
    assert len(events.kinds("instrumented")) == 1


def test_answer_sent_on_a_dropped_connection_is_sent_again_after_reconnect(
    chunks: DebuggerTableChunks,
) -> None:
    runner = Runner()
    events = Events()

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        api.confirm_responses = False  # stored, but the confirmation is lost with the connection
        await api.post(invoke("req-lost"))
        await until(lambda: len(api.messages("response", "req-lost")) == 1, what="response")
        api.confirm_responses = True
        api.cut("conn-1")
        await until(lambda: events.kinds("stored") == ["req-lost"], what="confirmed after reconnect")
        resent = api.messages("response", "req-lost")
        assert [r.connection_id for r in resent] == ["conn-1", "conn-2"]
        await detach(session, task)

    assert scenario(body, runner, chunks, events).exit_code == 0
    assert runner.count("req-lost") == 1


def test_reconnect_refused_because_the_session_closed_exits_with_a_clear_message(
    chunks: DebuggerTableChunks,
) -> None:
    runner = Runner()

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        await until(lambda: len(api.received) == 0 and api.current_connection_id == "conn-1")
        api.closed = True  # the manager restored the stack after the grace period
        api.cut("conn-1")

    outcome = scenario(body, runner, chunks)
    assert outcome == SessionOutcome(
        1,
        "Could not reconnect: the session was closed (HTTP 401), most likely because the connection was "
        f"down for more than {protocol.DISCONNECT_GRACE_SECONDS} s and the functions were restored, or "
        "another developer took over. Run 'plldb attach' again.",
    )


def test_connection_is_rotated_before_its_age_limit_and_the_old_one_still_answers(
    chunks: DebuggerTableChunks,
) -> None:
    runner = Runner()
    events = Events()
    settings = ConnectionSettings(
        **{**FAST.__dict__, "max_connection_age_seconds": 0.5, "drain_seconds": 1.0}
    )

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        await until(lambda: api.current_connection_id == "conn-2", what="rotation")
        # During the drain period a layer with a cached connection id still posts to the old one.
        await api.post(invoke("req-old"), connection_id="conn-1")
        await until(lambda: "req-old" in api.stored_responses, what="answer via old connection")
        assert api.messages("response", "req-old")[0].connection_id == "conn-2"
        await until(lambda: api.connections["conn-1"].state.name == "CLOSED", what="old connection closed")
        await api.post(invoke("req-new"), connection_id="conn-2")
        await until(lambda: "req-new" in api.stored_responses, what="answer via new connection")
        session.interrupt()
        await asyncio.wait_for(asyncio.shield(task), 10)

    outcome = scenario(body, runner, chunks, events, settings)
    assert outcome.exit_code == 0
    assert events.kinds("reconnected")[0] is True
    assert events.kinds("lost") == []


def test_keepalive_pings_and_a_silent_server_causes_a_reconnect(chunks: DebuggerTableChunks) -> None:
    runner = Runner()
    events = Events()
    settings = ConnectionSettings(**{**FAST.__dict__, "keepalive_seconds": 0.2, "pong_timeout_seconds": 0.3})

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        await until(lambda: len(api.messages("ping")) >= 2, what="pings")
        assert {r.connection_id for r in api.messages("ping")} == {"conn-1"}
        api.answer_pings = False
        await until(lambda: api.current_connection_id == "conn-2", what="reconnect after missing pong")
        api.answer_pings = True
        await detach(session, task)

    assert scenario(body, runner, chunks, events, settings).exit_code == 0
    assert len(events.kinds("reconnected")) == 1


def test_second_interrupt_leaves_at_once_and_says_how_to_finish(chunks: DebuggerTableChunks) -> None:
    runner = Runner()

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        api.functions = ()  # the restore never completes
        api.on_message = lambda record: None
        api_answer = api._answer

        async def never_restore(connection: Any, message: dict[str, Any]) -> None:
            if message["type"] != "detach":
                await api_answer(connection, message)

        api._answer = never_restore  # type: ignore[method-assign]
        session.interrupt()
        await until(lambda: len(api.messages("detach")) == 1, what="detach sent")
        session.interrupt()

    outcome = scenario(body, runner, chunks)
    assert outcome == SessionOutcome(
        130,
        "Left without waiting for the restore. The functions are restored "
        f"{protocol.DISCONNECT_GRACE_SECONDS} s after the connection closes; to restore them now run "
        "'plldb detach --stack-name hello-stack'.",
    )


def test_instrumentation_refused_by_the_manager_exits_1(chunks: DebuggerTableChunks) -> None:
    runner = Runner()

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        return None

    outcome = scenario(
        body, runner, chunks, refuse_instrumentation="another session is active on stack hello-stack"
    )
    assert outcome == SessionOutcome(
        1, "The stack was not instrumented: another session is active on stack hello-stack"
    )


def test_first_connection_refused_exits_1_without_retrying(chunks: DebuggerTableChunks) -> None:
    runner = Runner()

    async def main() -> tuple[SessionOutcome, int]:
        async with new_api() as api:
            session = DebugSession(
                websocket_url=api.url,
                session_id="not-the-session",
                reconnect_seed=SEED,
                stack_name="hello-stack",
                runner=runner,
                chunks=chunks,
                settings=FAST,
            )
            outcome = await asyncio.wait_for(session.run(), 10)
            return outcome, len(api.connect_queries)

    outcome, attempts = asyncio.run(main())
    assert attempts == 1
    assert outcome == SessionOutcome(
        1,
        "The debugger WebSocket API refused the new session (HTTP 401): it expired or was closed before "
        "it connected. Run 'plldb attach' again.",
    )


def test_twenty_concurrent_invocations_all_run_at_once(chunks: DebuggerTableChunks) -> None:
    started = threading.Barrier(20, timeout=10)

    def answer(invocation: IncomingInvocation) -> InvocationOutcome:
        started.wait()  # only passes if all twenty run concurrently
        return InvocationOutcome(200, json.dumps(invocation.request_id))

    runner = Runner(answer)

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        for index in range(20):
            await api.post(invoke(f"req-{index:02d}"))
        await until(lambda: len(api.stored_responses) == 20, what="twenty answers")
        await detach(session, task)

    scenario(body, runner, chunks)
    assert sorted(call.request_id for call in runner.calls) == [f"req-{i:02d}" for i in range(20)]


def test_answer_after_the_function_gave_up_is_reported_not_counted_as_delivered(
    chunks: DebuggerTableChunks,
) -> None:
    runner = Runner()
    runner.gate.clear()
    events = Events()
    too_late = "the function stopped waiting at its deadline; this answer came too late"

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        api.confirm_responses = False
        await api.post(invoke("req-slow"))
        await until(lambda: runner.count("req-slow") == 1, what="running")
        # The ack reached the item after the layer had answered 504 itself.
        closed = protocol.error_message(protocol.ERR_REQUEST_CLOSED, too_late, "req-slow", DELIVERY)
        await api.post(closed)
        await until(lambda: len(api.received) >= 1, what="ack")
        runner.gate.set()
        await until(lambda: len(api.messages("response", "req-slow")) == 1, what="response")
        await api.post(closed)
        await until(lambda: bool(events.kinds("refused")), what="refused")
        await detach(session, task)

    assert scenario(body, runner, chunks, events).exit_code == 0
    assert events.kinds("refused") == [("req-slow", "RequestClosed")]
    assert events.kinds("stored") == []


def test_a_retried_request_id_is_a_new_delivery_that_runs_again_and_answers_with_its_own_id(
    chunks: DebuggerTableChunks,
) -> None:
    runner = Runner(lambda inv: InvocationOutcome(200, json.dumps(len(runner.calls))))
    events = Events()

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        api.confirm_responses = False
        await api.post(invoke("req-retry"))
        await until(lambda: len(api.messages("response", "req-retry")) == 1, what="first answer")
        await api.post(protocol.stored_message("req-retry", DELIVERY))
        await until(lambda: events.kinds("stored") == ["req-retry"], what="first stored")
        api.stored_responses.clear()  # the item starts a new round, as the layer's takeover does
        await api.post(invoke("req-retry", RETRY))  # Lambda retries the request id: a new delivery
        await until(lambda: len(api.messages("response", "req-retry")) == 2, what="second answer")
        await api.post(invoke("req-retry", RETRY))  # re-posted within that delivery: answer again, no run
        await until(lambda: len(api.messages("response", "req-retry")) == 3, what="repeated answer")
        await api.post(protocol.stored_message("req-retry", RETRY))
        await until(lambda: events.kinds("stored") == ["req-retry"] * 2, what="second stored")
        await detach(session, task)
        first, second, repeated = (record.message for record in api.messages("response", "req-retry"))
        assert (first["deliveryId"], first["payload"]) == (DELIVERY, "1")
        assert (second["deliveryId"], second["payload"]) == (RETRY, "2")
        assert repeated == second
        assert [r.message for r in api.messages("ack", "req-retry")] == [
            protocol.ack_message("req-retry", DELIVERY),
            protocol.ack_message("req-retry", RETRY),
        ]

    assert scenario(body, runner, chunks, events).exit_code == 0
    assert runner.count("req-retry") == 2
    assert events.kinds("duplicate") == ["req-retry"]


def test_replies_about_an_earlier_delivery_never_settle_the_current_one(chunks: DebuggerTableChunks) -> None:
    """Two deliveries of one request run at once: each reply goes to the delivery it names."""
    gates = {DELIVERY: threading.Event(), RETRY: threading.Event()}
    delivery_of_run: list[str] = []

    def answer(invocation: IncomingInvocation) -> InvocationOutcome:
        delivery = DELIVERY if not delivery_of_run else RETRY
        delivery_of_run.append(delivery)
        assert gates[delivery].wait(10)
        return InvocationOutcome(200, json.dumps(delivery))

    runner = Runner(answer)
    events = Events()
    stale = "this message is for an earlier delivery of the request"

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        api.confirm_responses = False
        await api.post(invoke("req-both"))
        await until(lambda: runner.count("req-both") == 1, what="first run")
        await api.post(invoke("req-both", RETRY))
        await until(lambda: runner.count("req-both") == 2, what="second run")
        gates[DELIVERY].set()
        await until(lambda: len(api.messages("response", "req-both")) == 1, what="old answer")
        await api.post(protocol.error_message(protocol.ERR_STALE_DELIVERY, stale, "req-both", DELIVERY))
        await until(lambda: bool(events.kinds("refused")), what="old answer refused")
        gates[RETRY].set()
        await until(lambda: len(api.messages("response", "req-both")) == 2, what="new answer")
        # A confirmation naming the old delivery changes nothing; the current one's settles it.
        await api.post(protocol.stored_message("req-both", DELIVERY))
        await api.post(protocol.stored_message("req-both", RETRY))
        await until(lambda: events.kinds("stored") == ["req-both"], what="stored")
        await detach(session, task)
        old, new = (record.message for record in api.messages("response", "req-both"))
        assert (old["deliveryId"], old["payload"]) == (DELIVERY, json.dumps(DELIVERY))
        assert (new["deliveryId"], new["payload"]) == (RETRY, json.dumps(RETRY))

    assert scenario(body, runner, chunks, events).exit_code == 0
    assert events.kinds("refused") == [("req-both", "StaleDelivery")]
    assert events.kinds("stored") == ["req-both"]


def test_restore_by_another_command_ends_the_session(chunks: DebuggerTableChunks) -> None:
    runner = Runner()

    async def body(api: FakeApi, session: DebugSession, task: asyncio.Task[SessionOutcome]) -> None:
        await api.post(
            protocol.progress_message(
                "restore", "done", "Another plldb command restored stack hello-stack and closed this session"
            )
        )

    outcome = scenario(body, runner, chunks)
    assert outcome == SessionOutcome(
        1,
        "The session was ended elsewhere: Another plldb command restored stack hello-stack and closed "
        "this session",
    )
