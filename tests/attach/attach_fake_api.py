"""A WebSocket server that plays the helper stack's side of the protocol for the session client's tests.

It authorizes like the REQUEST authorizer (the session id once, then the reconnect token chain),
posts the manager's progress, answers `ping`, `response` and `detach` as the $default route does,
records every data frame's size, and lets a test post invocations and cut connections.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from plldb import protocol


class RecordingConnection(ServerConnection):
    """Records the payload size of every data frame it receives (to check fragmentation)."""

    frame_sizes: list[int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frame_sizes = []
        original = self.protocol.recv_frame

        def recv_frame(frame: Frame) -> None:
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self.frame_sizes.append(len(frame.data))
            original(frame)

        self.protocol.recv_frame = recv_frame  # type: ignore[method-assign]


@dataclass
class Received:
    connection_id: str
    message: dict[str, Any]


@dataclass
class FakeApi:
    """One session's server side. Run it in the test's event loop with ``async with``."""

    session_id: str
    reconnect_anchor: str
    functions: tuple[str, ...] = ("hello-fn",)
    refuse_instrumentation: str | None = None
    confirm_responses: bool = True
    answer_pings: bool = True
    received: list[Received] = field(default_factory=list)
    connect_queries: list[dict[str, str]] = field(default_factory=list)
    connections: dict[str, RecordingConnection] = field(default_factory=dict)
    current_connection_id: str | None = None
    stored_responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    closed: bool = False
    on_message: Callable[[Received], None] | None = None
    _pending_used: bool = False
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _server: Server | None = None

    async def __aenter__(self) -> FakeApi:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._authorize,
            create_connection=RecordingConnection,
            compression=None,
            max_size=protocol.WEBSOCKET_MESSAGE_LIMIT,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/abc123/prod"

    # -- the authorizer -----------------------------------------------------------------------------
    def _authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        query = {key: values[0] for key, values in parse_qs(urlsplit(request.path).query).items()}
        self.connect_queries.append(query)
        if self.closed or query.get("sessionId") != self.session_id:
            return connection.respond(401, "Unauthorized\n")
        token = query.get("reconnectToken")
        if token is None:
            if self._pending_used:
                return connection.respond(401, "Unauthorized\n")
            self._pending_used = True
            return None
        if not protocol.reconnect_token_matches(token, self.reconnect_anchor):
            return connection.respond(403, "Forbidden\n")
        self.reconnect_anchor = token
        return None

    # -- $connect / $default -------------------------------------------------------------------------
    async def _handle(self, connection: ServerConnection) -> None:
        assert isinstance(connection, RecordingConnection)
        connection_id = f"conn-{next(self._ids)}"
        first = not self.connections
        self.connections[connection_id] = connection
        self.current_connection_id = connection_id
        if first:
            await self._instrument(connection)
        async for raw in connection:
            message = protocol.decode(raw, protocol.CLIENT_MESSAGE_TYPES)
            record = Received(connection_id, message)
            self.received.append(record)
            if self.on_message is not None:
                self.on_message(record)
            await self._answer(connection, message)

    async def _instrument(self, connection: ServerConnection) -> None:
        await connection.send(protocol.encode(protocol.progress_message("instrument", "started", "starting")))
        if self.refuse_instrumentation is not None:
            await connection.send(
                protocol.encode(
                    protocol.progress_message("instrument", "failed", self.refuse_instrumentation)
                )
            )
            await connection.send(
                protocol.encode(protocol.progress_message("instrument", "done", "refused", functions=[]))
            )
            return
        for name in self.functions:
            await connection.send(
                protocol.encode(protocol.progress_message("instrument", "ok", "instrumented", function=name))
            )
        await connection.send(
            protocol.encode(
                protocol.progress_message("instrument", "done", "ready", functions=list(self.functions))
            )
        )

    async def _answer(self, connection: ServerConnection, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == protocol.MSG_PING and self.answer_pings:
            await connection.send(protocol.encode({"type": protocol.MSG_PONG}))
        elif kind == protocol.MSG_RESPONSE:
            request_id, delivery_id = message["requestId"], message["deliveryId"]
            if request_id in self.stored_responses:
                await connection.send(
                    protocol.encode(
                        protocol.error_message(
                            protocol.ERR_ALREADY_ANSWERED, "already answered", request_id, delivery_id
                        )
                    )
                )
                return
            self.stored_responses[request_id] = message
            if self.confirm_responses:
                await connection.send(protocol.encode(protocol.stored_message(request_id, delivery_id)))
        elif kind == protocol.MSG_DETACH:
            for name in self.functions:
                await connection.send(
                    protocol.encode(protocol.progress_message("restore", "ok", "restored", function=name))
                )
            self.closed = True
            await connection.send(protocol.encode(protocol.progress_message("restore", "done", "restored")))

    # -- what a test does ----------------------------------------------------------------------------
    async def post(self, message: dict[str, Any], connection_id: str | None = None) -> None:
        """post_to_connection: to the given connection, or the session's current one."""
        target = self.connections[connection_id or self.current_connection_id or ""]
        await target.send(protocol.encode(message))

    def cut(self, connection_id: str) -> None:
        """Drop the TCP connection with no close frame, as a network failure would."""
        self.connections[connection_id].transport.abort()

    def messages(self, kind: str, request_id: str | None = None) -> list[Received]:
        return [
            record
            for record in self.received
            if record.message["type"] == kind
            and (request_id is None or record.message.get("requestId") == request_id)
        ]


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait until ``predicate()`` holds (checked every 10 ms); fail the test after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def invoke_message(
    request_id: str,
    event: str | None = '{"name": "world"}',
    function_name: str = "hello-fn",
    **extra: Any,
) -> dict[str, Any]:
    """An invoke message as the layer posts it: a fresh delivery unless ``deliveryId`` names one."""
    message: dict[str, Any] = {
        "type": protocol.MSG_INVOKE,
        "v": protocol.PROTOCOL_VERSION,
        "requestId": request_id,
        "deliveryId": protocol.new_delivery_id(),
        "handler": "app.lambda_handler",
        "context": {
            "functionName": function_name,
            "functionVersion": "$LATEST",
            "invokedFunctionArn": f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}",
            "memoryLimitInMB": "128",
            "deadlineMs": 0,
        },
        "environment": {"GREETING": "hello"},
        "credentials": None,
    }
    if event is not None:
        message["event"] = event
    message.update(extra)
    return message
