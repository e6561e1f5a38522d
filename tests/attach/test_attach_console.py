"""The attach console: JSON events, plain lines off a terminal, the live view on one, NO_COLOR."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import threading

import pytest

from plldb.local.console import MODE_JSON, MODE_LIVE, MODE_PLAIN, Console, FunctionRow, choose_mode
from plldb.local.session import IncomingInvocation, InvocationOutcome

ROWS = [
    FunctionRow("hello-sam-HelloFunction-AB12", "HelloFunction", "hello/app.py:lambda_handler"),
    FunctionRow("hello-sam-NodeFunction-CD34", "NodeFunction", None, "runtime nodejs20.x is not Python"),
]
SGR_COLOR = re.compile(r"\x1b\[[0-9;]*3[0-9]m|\x1b\[[0-9;]*9[0-7]m")


def invocation(request_id: str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789") -> IncomingInvocation:
    return IncomingInvocation(
        request_id=request_id,
        function_name="hello-sam-HelloFunction-AB12",
        handler="app.lambda_handler",
        event_json="{}",
        context={},
        environment={},
        credentials=None,
    )


def play(console: Console) -> None:
    """A short session: instrumented, one good and one failed invocation with output, detach."""
    console.set_stack("hello-sam", ROWS)
    console.on_progress(
        {"phase": "instrument", "status": "ok", "message": "instrumented", "function": ROWS[0].physical_name}
    )
    console.on_instrumented(
        {
            "functions": [
                {"functionName": ROWS[0].physical_name, "logicalId": "HelloFunction", "status": "ok"},
                {"functionName": ROWS[1].physical_name, "logicalId": "NodeFunction", "status": "skipped"},
            ]
        }
    )
    good = invocation()
    console.on_invocation_started(good)
    console.handler_output("HelloFunction", good.request_id, "stdout", "hello from the handler")
    console.on_invocation_answered(good, InvocationOutcome(200, '{"ok": true}', duration_ms=12.4))
    bad = invocation("99999999-0000-0000-0000-000000000000")
    console.on_invocation_started(bad)
    console.on_invocation_answered(
        bad,
        InvocationOutcome(
            500, error={"errorType": "ValueError", "errorMessage": "asked to fail"}, duration_ms=3
        ),
    )
    console.on_detaching()
    console.stop()


def test_json_mode_writes_one_event_object_per_line() -> None:
    out = io.StringIO()
    play(Console(MODE_JSON, out=out, err=io.StringIO()))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    for event in events:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", event.pop("time"))
    assert events == [
        {
            "event": "progress",
            "phase": "instrument",
            "status": "ok",
            "function": ROWS[0].physical_name,
            "message": "instrumented",
        },
        {
            "event": "mapping",
            "stack": "hello-sam",
            "functions": [
                {
                    "function": ROWS[0].physical_name,
                    "logicalId": "HelloFunction",
                    "source": "hello/app.py:lambda_handler",
                    "note": None,
                    "instrumented": True,
                },
                {
                    "function": ROWS[1].physical_name,
                    "logicalId": "NodeFunction",
                    "source": None,
                    "note": "runtime nodejs20.x is not Python",
                    "instrumented": False,
                },
            ],
        },
        {
            "event": "ready",
            "message": "Ready: 1 function(s) instrumented. Invoke them as usual; press Ctrl-C to detach.",
            "functions": [ROWS[0].physical_name],
        },
        {
            "event": "invocation_started",
            "function": ROWS[0].physical_name,
            "requestId": "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
        },
        {
            "event": "output",
            "function": "HelloFunction",
            "requestId": "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
            "stream": "stdout",
            "line": "hello from the handler",
        },
        {
            "event": "invocation_finished",
            "function": ROWS[0].physical_name,
            "requestId": "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
            "durationMs": 12.4,
            "status": "ok",
            "error": None,
        },
        {
            "event": "invocation_started",
            "function": ROWS[0].physical_name,
            "requestId": "99999999-0000-0000-0000-000000000000",
        },
        {
            "event": "invocation_finished",
            "function": ROWS[0].physical_name,
            "requestId": "99999999-0000-0000-0000-000000000000",
            "durationMs": 3,
            "status": "error",
            "error": {"errorType": "ValueError", "errorMessage": "asked to fail"},
        },
        {"event": "detaching", "message": "Detaching: restoring the functions..."},
    ]


def test_plain_mode_writes_readable_lines_with_prefixed_handler_output() -> None:
    out = io.StringIO()
    play(Console(MODE_PLAIN, out=out, err=io.StringIO()))
    assert out.getvalue().splitlines() == [
        "  instrumented: HelloFunction",
        "Functions of stack hello-sam:",
        "  HelloFunction (hello-sam-HelloFunction-AB12) -> hello/app.py:lambda_handler",
        "  NodeFunction (hello-sam-NodeFunction-CD34) [not instrumented] -> no local source "
        "(runtime nodejs20.x is not Python)",
        "Ready: 1 function(s) instrumented. Invoke them as usual; press Ctrl-C to detach.",
        "-> HelloFunction 0a1b2c3d",
        "[HelloFunction 0a1b2c3d] hello from the handler",
        "<- HelloFunction 0a1b2c3d 12 ms ok",
        "-> HelloFunction 99999999",
        "<- HelloFunction 99999999 3 ms error ValueError: asked to fail",
        "Detaching: restoring the functions...",
    ]


def test_quiet_keeps_handler_output_failures_and_warnings_only() -> None:
    out, err = io.StringIO(), io.StringIO()
    console = Console(MODE_PLAIN, quiet=True, out=out, err=err)
    play(console)
    console.warning("No answer to the keep-alive ping; reconnecting.")
    assert out.getvalue().splitlines() == [
        "[HelloFunction 0a1b2c3d] hello from the handler",
        "<- HelloFunction 99999999 3 ms error ValueError: asked to fail",
        "Detaching: restoring the functions...",
    ]
    assert err.getvalue() == "No answer to the keep-alive ping; reconnecting.\n"


def test_mode_follows_the_output_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    assert choose_mode(False, io.StringIO()) == MODE_PLAIN
    assert choose_mode(True, io.StringIO()) == MODE_JSON
    controller, terminal = pty.openpty()
    with os.fdopen(terminal, "w") as tty, os.fdopen(controller, "rb"):
        assert choose_mode(False, tty) == MODE_LIVE
        assert choose_mode(True, tty) == MODE_JSON
        monkeypatch.setenv("TERM", "dumb")
        assert choose_mode(False, tty) == MODE_PLAIN


class TerminalReader:
    """Drains the terminal's controller side on a thread, so the writer never blocks on a full pty."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except OSError:  # the terminal side was closed
                return
            if not data:
                return
            self._chunks.append(data)

    def text(self) -> str:
        self._thread.join(5)
        return b"".join(self._chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("no_color", [False, True])
def test_live_view_on_a_terminal_respects_no_color(monkeypatch: pytest.MonkeyPatch, no_color: bool) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "160")
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    controller, terminal = pty.openpty()
    reader = TerminalReader(controller)
    with os.fdopen(terminal, "w") as tty:
        console = Console(choose_mode(False, tty), out=tty, err=tty)
        assert console.mode == MODE_LIVE
        play(console)
    screen = reader.text()
    os.close(controller)
    assert "hello from the handler" in screen
    assert "Functions of stack hello-sam" in screen
    assert "asked to fail" in screen
    assert bool(SGR_COLOR.search(screen)) is not no_color
