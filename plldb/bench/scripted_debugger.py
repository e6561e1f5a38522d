"""The developer's side reduced to answering: a WebSocket client that replies to every invoke at once.

It stands in for `plldb attach` where the benchmark wants to isolate the cloud side (the layer, the
WebSocket API, `$default`): no worker process, no handler, no ack — the ``response`` alone answers.
``hold_next()`` makes it behave like a developer stopped at a breakpoint for one invocation: it
acknowledges at once and answers only after the hold.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from plldb import protocol

ANSWER = '{"ok": true}'
MESSAGE_TIMEOUT_SECONDS = 60.0
KEPT_INVOKES = 5  # the last few invoke messages, kept as the floor's template


class ScriptedDebugger:
    def __init__(self, url: str) -> None:
        self.url = url
        self.invokes: list[dict[str, Any]] = []
        self.progress: list[dict[str, Any]] = []
        self.refusals: list[dict[str, Any]] = []
        self._stored: dict[str, threading.Event] = {}
        self._socket: Any = None
        self._lock = threading.Lock()
        self._instrumented = threading.Event()
        self._hold_seconds: float | None = None
        self._held: dict[str, threading.Event] = {}

    def connect(self) -> ScriptedDebugger:
        """Connect and wait until the manager has instrumented the stack (its ``done`` progress)."""
        from websockets.sync.client import connect

        self._socket = connect(self.url, open_timeout=MESSAGE_TIMEOUT_SECONDS, max_size=None)
        threading.Thread(target=self._read, name="scripted-debugger", daemon=True).start()
        if not self._instrumented.wait(MESSAGE_TIMEOUT_SECONDS):
            raise RuntimeError(f"the manager did not finish instrumenting: {self.progress}")
        return self

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()

    def expect_stored(self, request_id: str) -> threading.Event:
        """An event set when `$default` reports the answer to ``request_id`` stored (or refused it)."""
        event = threading.Event()
        with self._lock:
            self._stored[request_id] = event
        return event

    def hold_next(self, seconds: float) -> threading.Event:
        """Ack the next invocation at once and answer it after ``seconds``; the event is set on answering."""
        answered = threading.Event()
        with self._lock:
            self._hold_seconds = seconds
            self._held["next"] = answered
        return answered

    def send(self, message: dict[str, Any]) -> None:
        self._socket.send(protocol.encode(message))

    def _reply(self, invoke: dict[str, Any], kind: str) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "type": kind,
            "requestId": invoke["requestId"],
            "deliveryId": invoke["deliveryId"],  # answers belong to the round the invoke started
        }
        if kind == protocol.MSG_RESPONSE:
            reply.update(statusCode=protocol.RESPONSE_CODE_OK, payload=ANSWER)
        return reply

    def _answer_later(self, invoke: dict[str, Any], seconds: float, answered: threading.Event) -> None:
        def answer() -> None:
            self.send(self._reply(invoke, protocol.MSG_RESPONSE))
            answered.set()

        timer = threading.Timer(seconds, answer)
        timer.daemon = True
        timer.start()

    def _read(self) -> None:
        for raw in self._socket:
            message = json.loads(raw)
            kind = message.get("type")
            if kind == protocol.MSG_INVOKE:
                self._on_invoke(message)
            elif kind == protocol.MSG_STORED:
                with self._lock:
                    event = self._stored.pop(message["requestId"], None)
                if event is not None:
                    event.set()
            elif kind == protocol.MSG_ERROR:
                self.refusals.append(message)
                with self._lock:
                    event = self._stored.pop(str(message.get("requestId")), None)
                if event is not None:
                    event.set()  # the waiter finds the refusal instead of waiting in vain
            elif kind == protocol.MSG_PROGRESS:
                self.progress.append(message)
                if message.get("phase") == "instrument" and message.get("status") == "done":
                    self._instrumented.set()

    def _on_invoke(self, message: dict[str, Any]) -> None:
        with self._lock:
            self.invokes = [*self.invokes[-(KEPT_INVOKES - 1) :], message]
            hold, self._hold_seconds = self._hold_seconds, None
            answered = self._held.pop("next", None)
        if hold is not None and answered is not None:
            self.send(self._reply(message, protocol.MSG_ACK))
            self._answer_later(message, hold, answered)
            return
        self.send(self._reply(message, protocol.MSG_RESPONSE))
