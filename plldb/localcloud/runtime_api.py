"""The Lambda Runtime API (version 2018-06-01) for one local execution environment.

Each execution environment gets its own small threaded HTTP server on 127.0.0.1 (its address is the
environment's ``AWS_LAMBDA_RUNTIME_API``), so the runtime process talks to it exactly as it talks to
Lambda's own endpoint. Status codes, bodies and the runtime state machine follow Lambda's Runtime API:

* ``GET  /2018-06-01/runtime/invocation/next`` blocks until an invocation is handed over, then answers
  200 with the event and the ``Lambda-Runtime-*`` headers.
* ``POST /2018-06-01/runtime/invocation/{id}/response`` and ``.../error`` answer 202 ``{"status":"OK"}``;
  an unknown or already answered id is 400 ``InvalidRequestID``; a response larger than Lambda's limit is
  413 ``RequestEntityTooLarge`` and the invocation fails with ``Function.ResponseSizeTooLarge``.
* ``POST /2018-06-01/runtime/init/error`` answers 202 during initialisation only.
* A call that does not fit the runtime's current state is 403 ``InvalidStateTransition``.

The environment waits on the shared :class:`threading.Condition`; every state change notifies it, so
nobody polls.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

logger = logging.getLogger(__name__)

API_PREFIX = "/2018-06-01/runtime"
NEXT_PATH = API_PREFIX + "/invocation/next"
INIT_ERROR_PATH = API_PREFIX + "/init/error"
_INVOCATION_PATH = re.compile(
    r"^" + re.escape(API_PREFIX) + r"/invocation/(?P<id>[^/]+)/(?P<kind>response|error)$"
)

# Lambda accepts a runtime response of up to 6 MiB plus 100 bytes of framing.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
RESPONSE_SIZE_TOO_LARGE = "Function.ResponseSizeTooLarge"

# Runtime states, named as Lambda names them in its InvalidStateTransition messages.
STATE_STARTED = "Started"
STATE_READY = "Ready"
STATE_RUNNING = "Running"
STATE_INIT_ERROR = "InitError"
STATE_RESPONSE_SENT = "RuntimeResponseSentState"
_TRANSITION_TARGETS = {
    "next": STATE_READY,
    "response": "InvocationResponse",
    "error": "InvocationErrorResponse",
}


@dataclass(frozen=True)
class Outcome:
    """What the runtime reported for an invocation (or for its initialisation)."""

    payload: bytes
    error_type: str | None = None  # None: the handler's result; otherwise the invocation failed
    content_type: str = "application/json"

    @property
    def is_error(self) -> bool:
        return self.error_type is not None


@dataclass(eq=False)
class Invocation:
    """One invocation handed to the runtime; the server fills in the dispatch time and the outcome."""

    request_id: str
    payload: bytes
    invoked_function_arn: str
    timeout_seconds: float
    trace_id: str
    client_context: str | None = None
    cognito_identity: str | None = None
    content_type: str = "application/json"
    dispatched_at: float | None = None  # time.monotonic() when the runtime received it
    deadline_ms: int | None = None  # epoch milliseconds, as sent in Lambda-Runtime-Deadline-Ms
    outcome: Outcome | None = field(default=None)


def _error_body(error_type: str, message: str) -> bytes:
    return _json_body({"errorMessage": message, "errorType": error_type})


def _json_body(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, separators=(",", ":")) + "\n").encode("utf-8")


_ACCEPTED = _json_body({"status": "OK"})


@dataclass(frozen=True)
class _Reply:
    """One HTTP answer to the runtime."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"


class RuntimeApi:
    """The Runtime API state of one environment plus the HTTP server that exposes it."""

    def __init__(self, condition: threading.Condition | None = None) -> None:
        self.condition = condition or threading.Condition()
        self.state = STATE_STARTED
        self.current: Invocation | None = None
        self.init_error: Outcome | None = None
        self.ready_at: float | None = None  # time.monotonic() of the runtime's first /next (end of init)
        self.closed = False
        self._pending: deque[Invocation] = deque()
        self._server = _RuntimeHttpServer(self)
        self._thread = threading.Thread(target=self._serve, name="runtime-api", daemon=True)

    @property
    def address(self) -> str:
        """host:port, the value of AWS_LAMBDA_RUNTIME_API."""
        port = self._server.server_address[1]
        return f"127.0.0.1:{port}"

    @property
    def initialized(self) -> bool:
        """True once the runtime asked for its first invocation (Lambda's end of the init phase)."""
        return self.state not in (STATE_STARTED, STATE_INIT_ERROR)

    def start(self) -> None:
        """Start accepting the runtime's connections (the port is already bound)."""
        self._thread.start()

    def submit(self, invocation: Invocation) -> None:
        """Queue an invocation for the runtime's next ``/invocation/next``."""
        with self.condition:
            self._pending.append(invocation)
            self.condition.notify_all()

    def close(self) -> None:
        """Stop serving: release blocked ``/next`` calls and drop every connection."""
        with self.condition:
            if self.closed:
                return
            self.closed = True
            self.condition.notify_all()
        self._server.close_everything()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        """Accept connections until closed; a blocking accept wakes at once when the socket shuts down."""
        listener = self._server.socket
        while True:
            try:
                connection, address = listener.accept()
            except OSError:
                if self.closed:
                    return
                continue
            self._server.process_request(connection, address)

    # --- Request handling (called from connection threads) ------------------------------------------
    def _refuse_transition(self, target: str) -> _Reply:
        message = (
            f"State transition from {self.state} to {target} failed for runtime. "
            "Error: State transition is not allowed"
        )
        return _Reply(HTTPStatus.FORBIDDEN, _error_body("InvalidStateTransition", message))

    def next_invocation(self) -> _Reply | None:
        """Block until an invocation is queued; None when the environment is shutting down."""
        with self.condition:
            if self.state not in (STATE_STARTED, STATE_READY, STATE_RESPONSE_SENT):
                return self._refuse_transition(_TRANSITION_TARGETS["next"])
            self.state = STATE_READY
            if self.ready_at is None:
                self.ready_at = time.monotonic()
            self.condition.notify_all()
            self.condition.wait_for(lambda: self.closed or bool(self._pending))
            if self.closed:
                return None
            invocation = self._pending.popleft()
            now = time.time()
            invocation.dispatched_at = time.monotonic()
            invocation.deadline_ms = int(now * 1000 + invocation.timeout_seconds * 1000)
            self.current = invocation
            self.state = STATE_RUNNING
            self.condition.notify_all()
        headers = [
            ("Lambda-Runtime-Aws-Request-Id", invocation.request_id),
            ("Lambda-Runtime-Deadline-Ms", str(invocation.deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn", invocation.invoked_function_arn),
            ("Lambda-Runtime-Trace-Id", invocation.trace_id),
        ]
        if invocation.client_context:
            headers.append(("Lambda-Runtime-Client-Context", invocation.client_context))
        if invocation.cognito_identity:
            headers.append(("Lambda-Runtime-Cognito-Identity", invocation.cognito_identity))
        return _Reply(HTTPStatus.OK, invocation.payload, tuple(headers), invocation.content_type)

    def finish_invocation(
        self,
        request_id: str,
        kind: str,
        *,
        payload: bytes,
        size: int,
        content_type: str,
        error_type: str | None,
    ) -> _Reply:
        """Record the runtime's response or error for the current invocation."""
        with self.condition:
            if self.state != STATE_RUNNING:
                return self._refuse_transition(_TRANSITION_TARGETS[kind])
            invocation = self.current
            if invocation is None or invocation.request_id != request_id or invocation.outcome is not None:
                return _Reply(HTTPStatus.BAD_REQUEST, _error_body("InvalidRequestID", "Invalid request ID"))
            reply = _Reply(HTTPStatus.ACCEPTED, _ACCEPTED)
            if kind == "response" and size > MAX_RESPONSE_BYTES:
                message = (
                    f"Response payload size ({size} bytes) exceeded maximum allowed payload size "
                    f"({MAX_RESPONSE_BYTES} bytes)."
                )
                outcome = Outcome(
                    _error_body(RESPONSE_SIZE_TOO_LARGE, message).rstrip(), RESPONSE_SIZE_TOO_LARGE
                )
                reply = _Reply(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    _error_body(
                        "RequestEntityTooLarge",
                        f"Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
                    ),
                )
            elif kind == "response":
                outcome = Outcome(payload, None, content_type or "application/json")
            else:
                outcome = Outcome(_error_payload(payload, error_type), error_type or "")
            invocation.outcome = outcome
            self.current = None
            self.state = STATE_RESPONSE_SENT
            self.condition.notify_all()
            return reply

    def report_init_error(self, payload: bytes, error_type: str | None) -> _Reply:
        """Record the runtime's initialisation failure (allowed only before its first ``/next``)."""
        with self.condition:
            if self.state != STATE_STARTED:
                return self._refuse_transition(STATE_INIT_ERROR)
            self.init_error = Outcome(_error_payload(payload, error_type), error_type or "")
            self.state = STATE_INIT_ERROR
            self.condition.notify_all()
            return _Reply(HTTPStatus.ACCEPTED, _ACCEPTED)


def _error_payload(payload: bytes, error_type: str | None) -> bytes:
    """The error document the caller sees: the runtime's own, or Lambda's default when it sent none."""
    if payload.strip():
        return payload
    document = {"errorMessage": "Unknown application error occurred"}
    if error_type:
        document["errorType"] = error_type
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


class _RuntimeHttpServer(socketserver.ThreadingMixIn, HTTPServer):
    """A threaded HTTP server on an ephemeral 127.0.0.1 port that can drop all its connections."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, api: RuntimeApi) -> None:
        self.api = api
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RuntimeApiHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A runtime killed while connected only resets its connection (socketserver would print that
        traceback); anything else is a bug worth logging."""
        if isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            return
        logger.exception("Runtime API request from %s failed", client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_everything(self) -> None:
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.socket.close()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _BodyTooLong(Exception):
    pass


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    """Routes the Runtime API paths; every reply goes out in a single write."""

    protocol_version = "HTTP/1.1"
    server: _RuntimeHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        """The runtime's requests are not worth logging; its output is captured elsewhere."""

    def do_GET(self) -> None:
        if self.path != NEXT_PATH:
            self._discard_body()
            self._send(_Reply(HTTPStatus.NOT_FOUND, b"404 page not found\n", content_type="text/plain"))
            return
        reply = self.server.api.next_invocation()
        if reply is None:
            self.close_connection = True
            return
        self._send(reply)

    def do_POST(self) -> None:
        api = self.server.api
        error_type = self.headers.get(ERROR_TYPE_HEADER)
        if self.path == INIT_ERROR_PATH:
            payload, _size = self._read_body(MAX_RESPONSE_BYTES)
            self._send(api.report_init_error(payload, error_type))
            return
        match = _INVOCATION_PATH.match(self.path)
        if match is None:
            self._discard_body()
            self._send(_Reply(HTTPStatus.NOT_FOUND, b"404 page not found\n", content_type="text/plain"))
            return
        payload, size = self._read_body(MAX_RESPONSE_BYTES)
        content_type = self.headers.get("Content-Type", "application/json")
        self._send(
            api.finish_invocation(
                match.group("id"),
                match.group("kind"),
                payload=payload,
                size=size,
                content_type=content_type,
                error_type=error_type,
            )
        )

    def _send(self, reply: _Reply) -> None:
        status = HTTPStatus(reply.status)
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            "Date: " + self.date_time_string(),
            "Content-Type: " + reply.content_type,
            f"Content-Length: {len(reply.body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in reply.headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
        try:
            self.wfile.write(head + reply.body)
        except OSError:
            self.close_connection = True

    def _discard_body(self) -> None:
        self._read_body(0)

    def _read_body(self, keep_limit: int) -> tuple[bytes, int]:
        """Read the whole body (Content-Length or chunked), keeping at most keep_limit + 1 bytes."""
        kept = bytearray()
        total = 0

        def take(count: int) -> None:
            nonlocal total
            while count > 0:
                chunk = self.rfile.read(min(count, 1 << 16))
                if not chunk:
                    raise _BodyTooLong("connection closed inside the body")
                count -= len(chunk)
                total += len(chunk)
                room = keep_limit + 1 - len(kept)
                if room > 0:
                    kept.extend(chunk[:room])

        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self._read_chunks(take)
            else:
                take(int(self.headers.get("Content-Length") or 0))
        except (_BodyTooLong, ValueError, OSError):
            self.close_connection = True
        return bytes(kept), total

    def _read_chunks(self, take: Callable[[int], None]) -> None:
        while True:
            size_line = self.rfile.readline(1024)
            if not size_line:
                raise _BodyTooLong("connection closed inside a chunked body")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return
            take(size)
            self.rfile.readline(1024)
