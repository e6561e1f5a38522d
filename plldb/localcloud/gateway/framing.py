"""WebSocket frames and API Gateway's quotas on them: message and frame sizes, close codes.

Message and frame quotas are checked on the raw byte stream, frame by frame, before aiohttp assembles
messages (:class:`FrameLimitGate`): aiohttp only knows whole-message sizes, while API Gateway also refuses
any single frame above 32 KB. Either breach closes the connection with 1009 "Message too big".
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_websocket import WebSocketWriter
from aiohttp.web_request import BaseRequest

from plldb.protocol import WEBSOCKET_FRAME_LIMIT, WEBSOCKET_MESSAGE_LIMIT

CLOSE_OK = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_TOO_BIG = 1009
REASON_GOING_AWAY = "Going away"
REASON_TOO_BIG = "Message too big"
REASON_NO_STATUS = "Client-side close frame status not set"
REASON_ABNORMAL = "Connection closed abnormally"


@dataclass(frozen=True)
class WebSocketLimits:
    """API Gateway's WebSocket quotas; tests shrink them to exercise each one quickly."""

    message_bytes: int = WEBSOCKET_MESSAGE_LIMIT  # one message, in either direction (128 KB)
    frame_bytes: int = WEBSOCKET_FRAME_LIMIT  # one client frame (32 KB)
    idle_timeout_seconds: float = 600.0  # no data message either way for this long closes (10 min)
    max_connection_seconds: float = 7200.0  # a connection lives at most this long (2 h)
    integration_timeout_seconds: float = 29.0  # API Gateway stops waiting for an integration after this
    # Not an AWS quota but the emulator's bound: integrations of one connection's messages running at
    # once. AWS runs each independently, limited only by Lambda concurrency; here a burst would start a
    # Lambda environment per message, which a small machine cannot start quickly enough.
    messages_in_flight_per_connection: int = 4


DEFAULT_LIMITS = WebSocketLimits()


# --- the frame and message quota, on the raw byte stream -------------------------------------------
class FrameLimitGate:
    """Sits between aiohttp's connection and its WebSocket parser and measures every client frame.

    Only frame headers are parsed here (payload bytes are counted, not copied), so the check costs a few
    operations per frame. A header split across reads is held back until it is complete and admitted, so
    the parser only ever sees frames that passed. On a breach nothing more reaches the parser and
    ``on_breach`` runs once.
    """

    def __init__(
        self, parser: Any, frame_limit: int, message_limit: int, on_breach: Callable[[], None]
    ) -> None:
        self._parser = parser
        self._frame_limit = frame_limit
        self._message_limit = message_limit
        self._on_breach = on_breach
        self._held = b""  # the start of a frame header whose remaining bytes have not arrived yet
        self._payload_left = 0
        self._message_bytes = 0
        self._breached = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._breached:
            return False, b""
        if self._held:
            data, self._held = self._held + data, b""
        admitted, breached = self._scan(data)
        if breached:
            self._breached = True
            if admitted:
                self._parser.feed_data(data[:admitted])  # the complete frames before the oversized one
            self._on_breach()
            return False, b""
        if admitted < len(data):
            self._held = data[admitted:]
            data = data[:admitted]
        if not data:
            return False, b""
        return self._parser.feed_data(data)  # type: ignore[no-any-return]

    def feed_eof(self) -> None:
        self._parser.feed_eof()

    def _scan(self, data: bytes) -> tuple[int, bool]:
        """Walk the frames in ``data``: how many bytes may pass, and whether a frame broke a quota."""
        position = 0
        size = len(data)
        while position < size:
            if self._payload_left:
                step = min(self._payload_left, size - position)
                self._payload_left -= step
                position += step
                continue
            if size - position < 2:
                return position, False
            second = data[position + 1]
            length_code = second & 0x7F
            header_length = 2 + (2 if length_code == 126 else 8 if length_code == 127 else 0)
            header_length += 4 if second & 0x80 else 0
            if size - position < header_length:
                return position, False
            if length_code == 126:
                length = struct.unpack_from("!H", data, position + 2)[0]
            elif length_code == 127:
                length = struct.unpack_from("!Q", data, position + 2)[0]
            else:
                length = length_code
            opcode = data[position] & 0x0F
            if opcode <= 0x2:  # data frames; control frames are capped at 125 bytes by the protocol
                self._message_bytes = length if opcode else self._message_bytes + length
                if length > self._frame_limit or self._message_bytes > self._message_limit:
                    return position, True
            self._payload_left = length
            position += header_length
        return position, False


class LimitedWebSocketResponse(web.WebSocketResponse):
    """aiohttp's WebSocketResponse with :class:`FrameLimitGate` in front of its frame parser.

    aiohttp has no hook between the socket and its frame parser, so ``_post_start`` swaps the parser its
    connection handler feeds (``_payload_parser``) for the gate; this relies on aiohttp's internals as of
    the version pinned in constraints.txt.
    """

    def __init__(self, limits: WebSocketLimits, on_breach: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._limits = limits
        self._on_breach = on_breach
        self._transport: asyncio.Transport | None = None

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter) -> None:
        handler = request.protocol
        early = bytes(handler._message_tail)  # frames a client sent before seeing the 101 answer
        handler._message_tail = b""
        super()._post_start(request, protocol, writer)
        gate = FrameLimitGate(
            handler._payload_parser, self._limits.frame_bytes, self._limits.message_bytes, self._on_breach
        )
        handler._payload_parser = gate
        self._transport = request.transport
        if early:
            gate.feed_data(early)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame, as a network failure would."""
        if self._transport is not None:
            self._transport.abort()
