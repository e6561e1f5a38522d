"""A developer reduced to answering, in a process of its own: the floor's, and the scripted debugger.

``python -m plldb.bench.responder floor URL`` connects to the floor stack's WebSocket API and answers
every message at once with a ``response`` (floor.py). ``python -m plldb.bench.responder session URL
STACK`` is the *scripted debugger*: it connects to the helper stack exactly as ``plldb attach`` does
(SigV4-signed, with the credentials of its environment), opens a session on STACK, and answers each
``invoke`` at once with its ``response``: no worker, no handler, no ack, no message authentication, so
that the figure isolates the cloud side (the layer, the dispatcher, ``$default``).

Events go to stdout as JSON lines (``connected``, ``opened``, the first ``invoke`` message in full,
``hold_started``, ``held``, ``closed``). Commands come on stdin: ``hold SECONDS`` (acknowledge the next invocation at once
and answer it SECONDS later, as a developer stopped at a breakpoint does), ``close`` (end the session).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

ANSWER = '{"ok": true}'
OPEN_TIMEOUT_SECONDS = 60.0


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "at": time.time(), **fields}), flush=True)


def answer_floor(url: str, session_id: str) -> None:
    from websockets.sync.client import connect

    # No keep-alive pings: API Gateway does not document answering them, and a pong the saturated local
    # cloud sends late must not close the floor's connection (plldb's own client does the same).
    with connect(
        f"{url}?sessionId={session_id}", max_size=None, compression=None, ping_interval=None
    ) as websocket:
        emit("connected")
        for raw in websocket:
            message = json.loads(raw)
            websocket.send(
                json.dumps(
                    {
                        "type": "response",
                        "caller": message["caller"],
                        "deliveryId": message["deliveryId"],
                        "statusCode": 200,
                        "payload": ANSWER,
                    }
                )
            )


class ScriptedSession:
    def __init__(self, url: str, stack: str) -> None:
        self.url = url
        self.stack = stack
        self.websocket: Any = None
        self.hold: float | None = None
        self.lock = threading.Lock()
        self.shown_invoke = False
        self.closing = False

    def run(self) -> None:
        import uuid

        import boto3
        from websockets.sync.client import connect

        from plldb import protocol
        from plldb.local.session.connection import session_url, sigv4_signer

        session = boto3.Session()
        session_id = str(uuid.uuid4())
        url = session_url(self.url, session_id)
        headers = sigv4_signer(session, str(session.region_name))(url)
        key = protocol.new_secret()
        anchor = protocol.reconnect_token(protocol.new_secret(), protocol.RECONNECT_CHAIN_LENGTH)
        with connect(
            url,
            additional_headers=headers,
            max_size=None,
            compression=None,
            open_timeout=OPEN_TIMEOUT_SECONDS,
            ping_interval=None,
        ) as websocket:
            self.websocket = websocket
            websocket.send(protocol.encode(protocol.open_message(self.stack, key, anchor)))
            threading.Thread(target=self.commands, daemon=True).start()
            for raw in websocket:
                self.on_message(json.loads(raw))

    def send(self, message: Mapping[str, Any]) -> None:
        from plldb import protocol

        self.websocket.send(protocol.encode(message))

    def on_message(self, message: dict[str, Any]) -> None:
        from plldb import protocol

        kind = message.get("type")
        if kind == protocol.MSG_OPENED:
            emit("opened", sessionId=message["sessionId"], stackId=message["stackId"])
        elif kind == protocol.MSG_INVOKE:
            self.on_invoke(message)
        elif kind == protocol.MSG_CLOSED:
            emit("closed", reason=message.get("reason"))
            self.websocket.close()
        elif kind == protocol.MSG_ERROR:
            emit("refused", code=message.get("code"), message=message.get("message"))

    def on_invoke(self, message: dict[str, Any]) -> None:
        from plldb import protocol

        caller, delivery_id = message["caller"], message["deliveryId"]
        if not self.shown_invoke:
            self.shown_invoke = True
            emit("invoke", message={k: v for k, v in message.items() if k != "mac"})
        with self.lock:
            hold, self.hold = self.hold, None
        if hold is None:
            self.send(protocol.result_message(caller, delivery_id, ANSWER))
            return
        self.send(protocol.ack_message(caller, delivery_id))
        emit("hold_started", requestId=message.get("requestId"))

        def later() -> None:
            self.send(protocol.result_message(caller, delivery_id, ANSWER))
            emit("held", requestId=message.get("requestId"), seconds=hold)

        timer = threading.Timer(hold, later)
        timer.daemon = True
        timer.start()

    def commands(self) -> None:
        for line in sys.stdin:
            parts = line.split()
            if parts[:1] == ["hold"] and len(parts) == 2:
                with self.lock:
                    self.hold = float(parts[1])
                emit("holding", seconds=float(parts[1]))
            elif parts == ["close"]:
                self.send({"type": "close"})


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "floor":
        answer_floor(argv[1], argv[2])
        return 0
    if len(argv) == 3 and argv[0] == "session":
        ScriptedSession(argv[1], argv[2]).run()
        return 0
    print("usage: python -m plldb.bench.responder floor URL SESSION_ID | session URL STACK", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
