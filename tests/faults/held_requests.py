"""A barrier on a developer's AWS calls: an HTTP forwarder in front of the local cloud that holds the
requests a test names until the test lets them go (or drops them).

plldb reaches AWS through ``AWS_ENDPOINT_URL`` only, so a test points one attach process's variable at
this forwarder and can stop it exactly between two of its AWS calls, e.g. with a function's role
already tagged but its configuration not yet updated, then kill it there. Everything else passes
through unchanged (same method, path, headers and body), so the local cloud sees the same requests.
"""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote_plus, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Hold:
    """Requests whose ``METHOD path`` (then a newline and the body, for query APIs such as IAM) matches
    ``pattern`` wait here until released."""

    pattern: re.Pattern[str]
    held: list[str] = field(default_factory=list)
    _arrived: threading.Condition = field(default_factory=threading.Condition)
    _released: threading.Event = field(default_factory=threading.Event)
    forwarded: threading.Event = field(default_factory=threading.Event)  # a released request got its answer
    forward: bool = True

    def wait_until_held(self, count: int = 1, timeout: float = 120.0) -> list[str]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.held) >= count, timeout):
                raise AssertionError(f"no request matching {self.pattern.pattern!r} arrived")
            return list(self.held)

    def release(self, forward: bool = True) -> None:
        """Let the held requests go on to the cloud, or (forward=False) drop them unanswered."""
        self.forward = forward
        self._released.set()

    def _take(self, request_line: str) -> None:
        with self._arrived:
            self.held.append(request_line)
            self._arrived.notify_all()
        self._released.wait()


class HeldRequests:
    """The forwarder: ``endpoint_url`` for AWS_ENDPOINT_URL, ``hold(pattern)`` to set a barrier."""

    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        self._target = (target.hostname or "127.0.0.1", target.port or 80)
        self._holds: list[Hold] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def hold(self, pattern: str) -> Hold:
        hold = Hold(re.compile(pattern))
        with self._lock:
            self._holds.append(hold)
        return hold

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            holds = list(self._holds)
        for hold in holds:
            hold.release(forward=False)
        self._server.shutdown()
        self._server.server_close()

    def _matching(self, request_line: str) -> Hold | None:
        with self._lock:
            for hold in self._holds:
                if not hold._released.is_set() and hold.pattern.search(request_line):
                    return hold
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        forwarder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request_line = f"{self.command} {self.path}"
                hold = forwarder._matching(request_line + "\n" + unquote_plus(body.decode("latin-1")))
                if hold is not None:
                    hold._take(request_line)
                    if not hold.forward:
                        self.close_connection = True
                        return
                connection = http.client.HTTPConnection(*forwarder._target, timeout=300)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                connection.close()
                if hold is not None:
                    hold.forwarded.set()  # the cloud has applied it, whoever still listens
                try:
                    self._answer(response, data)
                except OSError:
                    self.close_connection = True  # the caller is gone (killed): the request still happened

            def _answer(self, response: http.client.HTTPResponse, data: bytes) -> None:
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                # A HEAD response announces the object's length without carrying it.
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def held_requests(target_url: str) -> Iterator[HeldRequests]:
    forwarder = HeldRequests(target_url)
    forwarder.start()
    try:
        yield forwarder
    finally:
        forwarder.stop()


def function_update(function_name: str) -> str:
    """The pattern of Lambda's UpdateFunctionConfiguration of one function."""
    return rf"^PUT /2015-03-31/functions/{re.escape(function_name)}/configuration\b"


def role_tagging(role_name: str) -> str:
    """The pattern of IAM's TagRole of one role (a query API: the action is in the form body)."""
    return rf"^POST /\S*\n(?=.*\bAction=TagRole\b)(?=.*\bRoleName={re.escape(role_name)}(&|$))"
