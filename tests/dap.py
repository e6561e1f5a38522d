"""A minimal Debug Adapter Protocol client over TCP, enough to drive debugpy from tests.

It speaks the wire format (``Content-Length`` framed JSON), sends requests and waits for their
responses, collects events, and answers the adapter's reverse requests (``startDebugging``) so a
test can follow debugpy into subprocesses the way VS Code does.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

DEFAULT_TIMEOUT = 30.0


class DapError(Exception):
    """The adapter answered a request with ``success: false`` or the connection ended."""


class DapClient:
    """One DAP connection: requests are synchronous, events and reverse requests are queued."""

    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._socket = socket.create_connection((host, port), timeout=timeout)
        self._socket.settimeout(None)
        self._seq = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._responses: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._reverse_requests: list[dict[str, Any]] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read_forever, name="dap-reader", daemon=True)
        self._reader.start()

    # --- wire ---------------------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> int:
        with self._lock:
            self._seq += 1
            message["seq"] = self._seq
            body = json.dumps(message).encode("utf-8")
            self._socket.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            return self._seq

    def _read_forever(self) -> None:
        stream = self._socket.makefile("rb")
        try:
            while True:
                length = None
                while True:
                    line = stream.readline()
                    if not line:
                        return
                    line = line.strip()
                    if not line:
                        break
                    name, _, value = line.decode("ascii").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length is None:
                    continue
                message = json.loads(stream.read(length).decode("utf-8"))
                with self._changed:
                    kind = message.get("type")
                    if kind == "response":
                        self._responses[message["request_seq"]] = message
                    elif kind == "event":
                        self._events.append(message)
                    elif kind == "request":
                        self._reverse_requests.append(message)
                    self._changed.notify_all()
                if kind == "request":
                    self._answer_reverse_request(message)
        except OSError:
            return
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()

    def _answer_reverse_request(self, request: dict[str, Any]) -> None:
        self._send(
            {
                "type": "response",
                "request_seq": request["seq"],
                "success": True,
                "command": request["command"],
                "body": {},
            }
        )

    def _wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = predicate()
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if self._closed:
                    raise DapError(f"connection closed while waiting for {what}")
                if remaining <= 0:
                    raise TimeoutError(f"no {what} within {timeout} s")
                self._changed.wait(remaining)

    # --- requests -----------------------------------------------------------------------------------
    def send_request(self, command: str, arguments: dict[str, Any] | None = None) -> int:
        """Send a request without waiting; ``response(seq)`` collects the answer later."""
        message: dict[str, Any] = {"type": "request", "command": command}
        if arguments is not None:
            message["arguments"] = arguments
        return self._send(message)

    def response(self, seq: int, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The body of the response to request ``seq``; DapError when it failed."""
        message = self._wait(lambda: self._responses.get(seq), timeout, f"response to request {seq}")
        if not message.get("success"):
            raise DapError(f"{message.get('command')} failed: {message.get('message')} {message.get('body')}")
        return message.get("body") or {}

    def request(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        return self.response(self.send_request(command, arguments), timeout)

    # --- events -------------------------------------------------------------------------------------
    def wait_for_event(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda body: True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> dict[str, Any]:
        """The body of the first event called ``name`` whose body satisfies ``predicate``; it is consumed."""

        def find() -> dict[str, Any] | None:
            for index, event in enumerate(self._events):
                if event.get("event") == name and predicate(event.get("body") or {}):
                    del self._events[index]
                    return event.get("body") or {}
            return None

        return self._wait(find, timeout, f"{name!r} event")

    def wait_for_reverse_request(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The arguments of the first reverse request ``command`` from the adapter; it is consumed."""

        def find() -> dict[str, Any] | None:
            for index, request in enumerate(self._reverse_requests):
                if request.get("command") == command:
                    del self._reverse_requests[index]
                    return request.get("arguments") or {}
            return None

        return self._wait(find, timeout, f"{command!r} reverse request")

    def events(self, name: str) -> list[dict[str, Any]]:
        """Bodies of the ``name`` events received so far (not consumed)."""
        with self._changed:
            return [event.get("body") or {} for event in self._events if event.get("event") == name]

    # --- helpers for a debugging session ---------------------------------------------------------
    def initialize(self, start_debugging: bool = True) -> dict[str, Any]:
        return self.request(
            "initialize",
            {
                "clientID": "plldb-tests",
                "adapterID": "debugpy",
                "pathFormat": "path",
                "linesStartAt1": True,
                "columnsStartAt1": True,
                "supportsVariableType": True,
                "supportsRunInTerminalRequest": False,
                "supportsStartDebuggingRequest": start_debugging,
            },
        )

    def variables_of_top_frame(self, thread_id: int) -> dict[str, dict[str, Any]]:
        """Name -> variable (``value``, ``type``, ``variablesReference``) of the Locals of the top frame."""
        frames = self.request("stackTrace", {"threadId": thread_id, "startFrame": 0, "levels": 1})
        frame_id = frames["stackFrames"][0]["id"]
        scopes = self.request("scopes", {"frameId": frame_id})["scopes"]
        local_scope = next(scope for scope in scopes if scope["name"].lower().startswith("locals"))
        return self.children(local_scope["variablesReference"])

    def children(self, reference: int) -> dict[str, dict[str, Any]]:
        variables = self.request("variables", {"variablesReference": reference})["variables"]
        return {variable["name"]: variable for variable in variables}

    def close(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._socket.close()
        self._reader.join(timeout=5)

    def __enter__(self) -> DapClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- debugpy sessions the way VS Code runs them ----------------------------------------------------
def attach_to_debugpy(host: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> DapClient:
    """A "Remote Attach" session on a process that called debugpy.listen(), fully configured."""
    client = DapClient(host, port, timeout)
    client.initialize()
    attach = client.send_request("attach", {"connect": {"host": host, "port": port}, "justMyCode": False})
    client.wait_for_event("initialized", timeout=timeout)
    client.request("configurationDone", timeout=timeout)
    client.response(attach, timeout)
    return client


def follow_subprocess(
    parent: DapClient,
    host: str,
    port: int,
    breakpoints: dict[str, list[int]],
    timeout: float = DEFAULT_TIMEOUT,
) -> DapClient:
    """Answer debugpy's next ``startDebugging`` like VS Code: a child session with these breakpoints."""
    configuration = parent.wait_for_reverse_request("startDebugging", timeout)["configuration"]
    child = DapClient(host, port, timeout)
    child.initialize()
    attach = child.send_request("attach", configuration)
    child.wait_for_event("initialized", timeout=timeout)
    for path, lines in breakpoints.items():
        answer = child.request(
            "setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": line} for line in lines]}
        )
        if not all(breakpoint.get("verified") for breakpoint in answer["breakpoints"]):
            raise DapError(f"breakpoints in {path} were not verified: {answer}")
    child.request("configurationDone", timeout=timeout)
    child.response(attach, timeout)
    return child
