"""Lambda retrying a request id, end to end: the layer, the real $default route and plldb's local session.

Lambda retries a failed asynchronous invocation under the same request id. Each time the layer takes
such an id it starts a new delivery (a fresh deliveryId); the local session runs every new delivery
once, and the answer of one delivery can never fill another.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import boto3
import pytest
from layer_harness import HARNESS_ACCESS_KEY_ID, REGION, LambdaEnvironment, LayerCloud

from plldb import protocol
from plldb.local.session import (
    ConnectionSettings,
    DebuggerTableChunks,
    DebugSession,
    IncomingInvocation,
    InvocationOutcome,
    SessionObserver,
)

SETTINGS = ConnectionSettings(
    keepalive_seconds=3600,
    instrument_timeout_seconds=3600,  # this small cloud has no manager to report instrumentation
    response_confirm_seconds=3600,
    protocol_ping_seconds=None,
)


class Recorder(SessionObserver):
    """What the local session reports, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_invocation_stored(self, request_id: str) -> None:
        self.events.append(("stored", request_id))

    def on_invocation_refused(self, request_id: str, code: str, message: str) -> None:
        self.events.append(("refused", (request_id, code, message)))

    def on_duplicate_invoke(self, request_id: str) -> None:
        self.events.append(("duplicate", request_id))


class Runs:
    """The local handler: counts its runs per request id; a test may hold a run until it releases it."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, int]] = []
        self.gates: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def hold(self, run: int) -> threading.Event:
        gate = self.gates[run] = threading.Event()
        return gate

    def __call__(self, invocation: IncomingInvocation) -> InvocationOutcome:
        with self._lock:
            run = 1 + sum(1 for request_id, _ in self.deliveries if request_id == invocation.request_id)
            self.deliveries.append((invocation.request_id, run))
        gate = self.gates.get(run)
        if gate is not None:
            assert gate.wait(20), "the test never released the run"
        return InvocationOutcome(200, json.dumps({"run": run, "event": json.loads(invocation.event_json)}))

    def started(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            assert time.monotonic() < deadline, f"only {self.deliveries} started"
            time.sleep(0.005)


class AttachedSession:
    """plldb's DebugSession, connected through the gateway, on an event loop of its own."""

    def __init__(self, cloud: LayerCloud, runs: Runs) -> None:
        self.cloud = cloud
        self.recorder = Recorder()
        self.session_id = str(uuid.uuid4())
        debugger_role = boto3.Session(
            aws_access_key_id=HARNESS_ACCESS_KEY_ID, aws_secret_access_key="testing", region_name=REGION
        )
        self.session = DebugSession(
            websocket_url=cloud.websocket_url,
            session_id=self.session_id,
            reconnect_seed="5eed" * 16,
            stack_name="orders-stack",
            runner=runs,
            chunks=DebuggerTableChunks(debugger_role, cloud.debugger_table),
            observer=self.recorder,
            settings=SETTINGS,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._run: Future[Any] | None = None
        self.connection_id = ""

    def start(self) -> AttachedSession:
        before = set(self.cloud.gateway.connection_ids())
        self._thread.start()
        self._run = asyncio.run_coroutine_threadsafe(self.session.run(), self._loop)
        deadline = time.monotonic() + 10
        while not self.connection_id:
            new = set(self.cloud.gateway.connection_ids()) - before
            if new:
                (self.connection_id,) = new
            else:
                assert time.monotonic() < deadline, "the session never connected"
                assert not self._run.done(), f"the session ended: {self._run.result()}"
                time.sleep(0.005)
        self.cloud.put_session(self.connection_id, session_id=self.session_id)
        return self

    def stop(self) -> None:
        if self._run is not None:
            self._run.cancel()
            time.sleep(0.05)  # let run() shut its pools and connection down
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def wait_for(self, event: tuple[str, Any], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while event not in self.recorder.events:
            assert time.monotonic() < deadline, f"no {event}; got {self.recorder.events}"
            time.sleep(0.005)


@pytest.fixture
def attach_local_session(
    layer_cloud: LayerCloud, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Runs], AttachedSession]]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", layer_cloud.endpoint_url)  # the session's chunk items
    started: list[AttachedSession] = []

    def attach(runs: Runs) -> AttachedSession:
        attached = AttachedSession(layer_cloud, runs).start()
        started.append(attached)
        return attached

    yield attach
    for attached in started:
        attached.stop()


def _environment(
    layer_cloud: LayerCloud, start_environment: Callable[..., LambdaEnvironment], attached: AttachedSession
) -> LambdaEnvironment:
    environment = start_environment(
        instrumentation=layer_cloud.instrumentation(attached.session_id, attached.connection_id)
    )
    environment.wait_until_ready()
    return environment


def _delivery_of(layer_cloud: LayerCloud, request_id: str) -> str:
    item = layer_cloud.debugger_item(request_id)
    assert item is not None
    return str(item[protocol.A_DELIVERY_ID]["S"])


def test_a_retried_request_id_runs_again_locally_and_gets_the_new_answer(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    attach_local_session: Callable[[Runs], AttachedSession],
) -> None:
    runs = Runs()
    attached = attach_local_session(runs)
    environment = _environment(layer_cloud, start_environment, attached)
    request_id = str(uuid.uuid4())

    first = environment.invoke({"order": 1}, request_id=request_id)
    first_delivery = _delivery_of(layer_cloud, request_id)
    attached.wait_for(("stored", request_id))
    retried = environment.invoke({"order": 1}, request_id=request_id)  # Lambda retrying it

    assert (first.error_type, first.json()) == (None, {"run": 1, "event": {"order": 1}})
    assert (retried.error_type, retried.json()) == (None, {"run": 2, "event": {"order": 1}})
    assert runs.deliveries == [(request_id, 1), (request_id, 2)]
    assert _delivery_of(layer_cloud, request_id) != first_delivery
    attached.wait_for(("stored", request_id))
    assert attached.recorder.events == [("stored", request_id), ("stored", request_id)]


def test_the_answer_of_an_earlier_delivery_is_refused_and_never_reaches_the_retry(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    attach_local_session: Callable[[Runs], AttachedSession],
) -> None:
    runs = Runs()
    first_run, second_run = runs.hold(1), runs.hold(2)
    attached = attach_local_session(runs)
    environment = _environment(layer_cloud, start_environment, attached)
    request_id = str(uuid.uuid4())

    # The developer sits at a breakpoint past the function's deadline: the layer answers 504 ...
    timed_out = environment.invoke({"order": 2}, timeout_seconds=2, request_id=request_id)
    assert timed_out.error_type == "PlldbDebuggerTimeout"
    # ... and Lambda retries the request id while that first run is still going.
    started = time.monotonic()
    retry = environment.submit({"order": 2}, request_id=request_id)
    runs.started(2)
    first_run.set()  # the first run ends now, with the current delivery still waiting for its answer
    attached.wait_for(
        (
            "refused",
            (
                request_id,
                protocol.ERR_STALE_DELIVERY,
                "this message is for an earlier delivery of the request; Lambda has delivered it again "
                "since, and only the newest delivery can be answered",
            ),
        )
    )
    item = layer_cloud.debugger_item(request_id)
    assert item is not None and protocol.A_RESPONSE_CODE not in item
    second_run.set()
    result = environment.result(retry, started)

    assert (result.error_type, result.json()) == (None, {"run": 2, "event": {"order": 2}})
    attached.wait_for(("stored", request_id))
    assert [name for name, _ in attached.recorder.events] == ["refused", "stored"]


def test_a_late_answer_after_the_layer_gave_up_is_shown_as_refused_not_delivered(
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    attach_local_session: Callable[[Runs], AttachedSession],
) -> None:
    runs = Runs()
    first_run = runs.hold(1)
    attached = attach_local_session(runs)
    environment = _environment(layer_cloud, start_environment, attached)

    result = environment.invoke({"order": 3}, timeout_seconds=2)
    assert result.error_type == "PlldbDebuggerTimeout"
    first_run.set()

    attached.wait_for(
        (
            "refused",
            (
                result.request_id,
                protocol.ERR_REQUEST_CLOSED,
                "the function stopped waiting at its deadline; this answer came too late",
            ),
        )
    )
    assert ("stored", result.request_id) not in attached.recorder.events
    item = layer_cloud.debugger_item(result.request_id)
    assert item is not None
    assert item[protocol.A_RESPONSE_CODE] == {"N": "504"}
    assert protocol.A_RESPONSE not in item
