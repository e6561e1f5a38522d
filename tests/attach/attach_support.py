"""Shared helpers of the attach tests: a moto server handle, and a debug session wired to the fake helper stack.

The session under test is the real DebugSession on real sockets; around it, as a command would wire it:
a runner that runs invocations on the session's threads (each can be held on an event), a lifecycle
that records instrument / restore / take_over calls, and an observer that records every callback (and
each invocation the session says is finished). All
of them write to the fake's Timeline, so a test waits for what happened and checks in which order.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from attach_fake_api import ACCOUNT_ID, DEVELOPER, REGION, STACK_NAME, FakeHelperStack, Principal, Timeline

from plldb import protocol
from plldb.local.invocation import Invocation, Outcome
from plldb.local.session import (
    ConnectionSettings,
    DebugSession,
    Lifecycle,
    Opened,
    SessionObserver,
    SessionOutcome,
    Signer,
)

__all__ = ["ACCOUNT_ID", "REGION"]  # conftest and the moto tests take them from here

SEED = "5eed" * 16  # the reconnect chain's seed of the sessions under test


@dataclass
class MotoServer:
    endpoint_url: str

    def session(self) -> boto3.Session:
        return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)

    def client(self, service: str) -> Any:
        return self.session().client(service, endpoint_url=self.endpoint_url)  # type: ignore[call-overload]


# Timers that never fire unless a test shortens them: what happens is what the test makes happen.
FAST = ConnectionSettings(
    keepalive_seconds=3600,
    pong_timeout_seconds=3600,
    max_connection_age_seconds=3600,
    drain_seconds=0.2,
    open_timeout_seconds=30,
    reply_timeout_seconds=3600,
    response_confirm_seconds=3600,
    ack_delay_seconds=3600,
    reconnect_delays=(0.0, 0.05, 0.1),
    reconnect_give_up_seconds=3600,
)


def settings(**changes: Any) -> ConnectionSettings:
    return ConnectionSettings(**{**FAST.__dict__, **changes})


def echo(invocation: Invocation) -> Outcome:
    return Outcome(200, json.dumps({"echo": invocation.event_json}))


class Runner:
    """Runs invocations as the worker pool would: blocking, on the session's threads.

    ``hold(request_id)`` makes the runs of that request wait until ``release(request_id)``.
    """

    def __init__(self, timeline: Timeline, answer: Callable[[Invocation], Outcome] = echo) -> None:
        self.timeline = timeline
        self.answer = answer
        self.calls: list[Invocation] = []
        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def hold(self, request_id: str) -> None:
        with self._lock:
            self._gates[request_id] = threading.Event()

    def release(self, request_id: str | None = None) -> None:
        with self._lock:
            gates = [self._gates[request_id]] if request_id else list(self._gates.values())
        for gate in gates:
            gate.set()

    def __call__(self, invocation: Invocation) -> Outcome:
        with self._lock:
            self.calls.append(invocation)
            gate = self._gates.get(invocation.request_id)
        self.timeline.add("run", invocation.request_id)
        if gate is not None:
            gate.wait()
        outcome = self.answer(invocation)
        self.timeline.add("ran", invocation.request_id)
        return outcome

    def count(self, request_id: str) -> int:
        with self._lock:
            return sum(1 for call in self.calls if call.request_id == request_id)


class FakeLifecycle:
    """What the command does around the session, recorded: instrument, restore, take_over."""

    def __init__(self, timeline: Timeline, api: FakeHelperStack) -> None:
        self.timeline = timeline
        self.api = api
        self.restore_failures: list[str] = []
        self.instrument_error: Exception | None = None
        self.restore_gate = threading.Event()
        self.restore_gate.set()

    def instrument(self, opened: Opened) -> None:
        self.timeline.add("instrument", opened)
        if self.instrument_error is not None:
            raise self.instrument_error

    def restore(self) -> list[str]:
        self.timeline.add("restore")
        self.restore_gate.wait()
        return list(self.restore_failures)

    def take_over(self) -> None:
        self.timeline.add("take_over", len(self.api.upgrades))

    def lifecycle(self) -> Lifecycle:
        return Lifecycle(instrument=self.instrument, restore=self.restore, take_over=self.take_over)


class Observer(SessionObserver):
    """Every callback, as (method name, argument) on the timeline."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline

    def on_connected(self) -> None:
        self.timeline.add("on_connected")

    def on_connection_lost(self, reason: str) -> None:
        self.timeline.add("on_connection_lost", reason)

    def on_reconnect_failed(self, attempt: int, reason: str) -> None:
        self.timeline.add("on_reconnect_failed", (attempt, reason))

    def on_reconnected(self, rotated: bool) -> None:
        self.timeline.add("on_reconnected", rotated)

    def on_invocation_started(self, invocation: Invocation) -> None:
        self.timeline.add("on_invocation_started", invocation.request_id)

    def on_invocation_answered(self, invocation: Invocation, outcome: Outcome) -> None:
        self.timeline.add("on_invocation_answered", (invocation.request_id, outcome.status_code))

    def on_invocation_stored(self, request_id: str) -> None:
        self.timeline.add("on_invocation_stored", request_id)

    def on_invocation_refused(self, request_id: str, code: str, message: str) -> None:
        self.timeline.add("on_invocation_refused", (request_id, code, message))

    def on_duplicate_invoke(self, request_id: str) -> None:
        self.timeline.add("on_duplicate_invoke", request_id)

    def on_detaching(self) -> None:
        self.timeline.add("on_detaching")

    def on_session_ended(self, by: str | None, reason: str) -> None:
        self.timeline.add("on_session_ended", (by, reason))

    def on_warning(self, text: str) -> None:
        self.timeline.add("on_warning", text)


@dataclass
class Attached:
    """One DebugSession running against the fake, with what surrounds it."""

    api: FakeHelperStack
    session: DebugSession
    task: asyncio.Task[SessionOutcome]
    runner: Runner
    lifecycle: FakeLifecycle
    timeline: Timeline  # the runner's, the lifecycle's and the observer's events (the fake's too by default)
    session_id: str
    key: str
    principal: Principal = DEVELOPER

    async def until(self, predicate: Callable[[], bool]) -> None:
        await self.timeline.until(lambda: predicate() or self.task.done())
        if not predicate():
            raise AssertionError(f"the session ended first: {self.task.result()}")

    async def until_instrumented(self) -> Opened:
        """The session is open and the lifecycle was asked to instrument it."""
        await self.until(lambda: bool(self.timeline.values("instrument")))
        opened: Opened = self.timeline.values("instrument")[0]
        return opened

    async def outcome(self) -> SessionOutcome:
        return await asyncio.shield(self.task)

    async def detach(self) -> SessionOutcome:
        self.session.interrupt()
        return await self.outcome()

    async def cleanup(self) -> None:
        """Unblock whatever the test held and end the session (a test that failed midway)."""
        self.runner.release()
        self.lifecycle.restore_gate.set()
        if not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def current_connection(self) -> str:
        return self.api.sessions[self.session_id].connection_id


def start(
    api: FakeHelperStack,
    *,
    runner: Runner | None = None,
    principal: Principal = DEVELOPER,
    connection_settings: ConnectionSettings = FAST,
    stack: str = STACK_NAME,
    take_over: bool = False,
    session_id: str | None = None,
    seed: str = SEED,
    separate: bool = False,
    signer: Signer | None = None,
    websocket_url: str | None = None,
) -> Attached:
    """Start a DebugSession as `plldb attach` does (a fresh session id and key, signed by ``principal``).

    ``separate``: this session's own events go to a timeline of their own (a test with two sessions).
    """
    import uuid

    timeline = Timeline(api.timeline.changes) if separate else api.timeline
    lifecycle = FakeLifecycle(timeline, api)
    runner = runner or Runner(timeline)
    session_id = session_id or str(uuid.uuid4())
    key = protocol.new_secret()
    session = DebugSession(
        websocket_url=websocket_url or api.url,
        signer=signer or principal.signer(),
        session_id=session_id,
        session_key=key,
        reconnect_seed=seed,
        stack=stack,
        runner=runner,
        lifecycle=lifecycle.lifecycle(),
        observer=Observer(timeline),
        settings=connection_settings,
        take_over=take_over,
        finished=lambda request_id: timeline.add("finished", request_id),
    )
    task = asyncio.ensure_future(session.run())
    attached = Attached(api, session, task, runner, lifecycle, timeline, session_id, key, principal)
    api.cleanups.append(attached.cleanup)
    return attached


def run(body: Callable[[FakeHelperStack], Awaitable[Any]], **api_options: Any) -> Any:
    """Run ``body`` with a fresh fake helper stack; whatever it returns is returned."""

    async def main() -> Any:
        async with FakeHelperStack(**api_options) as api:
            return await body(api)

    return asyncio.run(main())


def single_key(value: Mapping[str, Any]) -> tuple[str, str]:
    return (str(value["caller"]), str(value["deliveryId"]))
