"""The attach console: JSON events, plain lines off a terminal, the live view on one, NO_COLOR."""

from __future__ import annotations

import _thread
import gc
import io
import json
import os
import pty
import re
import signal
import sys
import termios
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rich

from plldb.local.console import (
    MODE_JSON,
    MODE_LIVE,
    MODE_PLAIN,
    Console,
    FunctionRow,
    choose_mode,
    rich_console,
)
from plldb.local.invocation import Invocation, Outcome
from tests.terminal.screen import Screen

ROWS = [
    FunctionRow("hello-sam-HelloFunction-AB12", "HelloFunction", "hello/app.py:lambda_handler"),
    FunctionRow("hello-sam-NodeFunction-CD34", "NodeFunction", None, "runtime nodejs20.x is not Python"),
]
SGR_COLOR = re.compile(r"\x1b\[[0-9;]*3[0-9]m|\x1b\[[0-9;]*9[0-7]m")


def invocation(request_id: str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789") -> Invocation:
    return Invocation(
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
    console.on_invocation_answered(good, Outcome(200, '{"ok": true}', duration_ms=12.4))
    bad = invocation("99999999-0000-0000-0000-000000000000")
    console.on_invocation_started(bad)
    console.on_invocation_answered(
        bad,
        Outcome(500, error={"errorType": "ValueError", "errorMessage": "asked to fail"}, duration_ms=3),
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
            "logicalId": "HelloFunction",
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
            "logicalIds": ["HelloFunction"],
        },
        {
            "event": "invocation_started",
            "function": ROWS[0].physical_name,
            "logicalId": "HelloFunction",
            "requestId": "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
        },
        {
            "event": "output",
            "function": ROWS[0].physical_name,
            "logicalId": "HelloFunction",
            "requestId": "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
            "stream": "stdout",
            "line": "hello from the handler",
        },
        {
            "event": "invocation_finished",
            "function": ROWS[0].physical_name,
            "logicalId": "HelloFunction",
            "requestId": "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
            "durationMs": 12.4,
            "status": "ok",
            "error": None,
        },
        {
            "event": "invocation_started",
            "function": ROWS[0].physical_name,
            "logicalId": "HelloFunction",
            "requestId": "99999999-0000-0000-0000-000000000000",
        },
        {
            "event": "invocation_finished",
            "function": ROWS[0].physical_name,
            "logicalId": "HelloFunction",
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


class GatedTerminal:
    """The terminal side of a pty as a file that a test can stop accepting writes, like a terminal
    whose user pressed Ctrl-S or that is busy: ``close_gate(when, on_stuck)`` makes the next write for
    which ``when(text)`` holds wait (inside whatever rich or the console holds at that moment) until
    ``open_gate()``; ``stuck`` is set once it waits, and ``on_stuck`` runs then."""

    def __init__(self) -> None:
        self.controller, self.terminal = pty.openpty()
        self.file = os.fdopen(self.terminal, "w", encoding="utf-8")
        self.settings_before = termios.tcgetattr(self.terminal)
        self.stuck = threading.Event()
        self._on_stuck: Callable[[], None] = lambda: None
        self._gate = threading.Event()
        self._gate.set()
        self.gate_opened = False
        self._raw: list[bytes] = []
        self._when: Callable[[str], bool] = lambda text: True
        self._changed = threading.Condition()
        self.screen = Screen(160)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # The file interface rich and the console use.
    def write(self, text: str) -> int:
        if not self._gate.is_set() and self._when(text):
            self.stuck.set()
            self._on_stuck()
            self._gate.wait()
        return self.file.write(text)

    def flush(self) -> None:
        self.file.flush()

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.terminal

    @property
    def encoding(self) -> str:
        return "utf-8"

    # The test's side.
    def close_gate(
        self, when: Callable[[str], bool] = lambda text: True, on_stuck: Callable[[], None] = lambda: None
    ) -> None:
        """Set before the gate closes: the status view may redraw (and be stopped) at any moment."""
        self._when = when
        self._on_stuck = on_stuck
        self.stuck.clear()
        self.gate_opened = False
        self._gate.clear()

    def open_gate(self) -> None:
        self.gate_opened = True
        self._gate.set()

    def raw(self) -> str:
        with self._changed:
            return b"".join(self._raw).decode("utf-8", "replace")

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.controller, 65536)
            except OSError:
                return
            if not data:
                return
            with self._changed:
                self._raw.append(data)
                self.screen.feed(data)
                self._changed.notify_all()

    def shown(self, predicate: Callable[[Screen], bool]) -> None:
        """Until the screen satisfies ``predicate`` (a limit only so a broken console fails, not hangs)."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.screen), timeout=60):
                raise AssertionError("the terminal never showed it:\n" + "\n".join(self.screen.lines()))

    def lines(self) -> list[str]:
        with self._changed:
            return self.screen.lines()

    def close(self) -> None:
        self.open_gate()
        self.file.close()
        self._reader.join(60)
        os.close(self.controller)


class GatedStream(io.StringIO):
    """A pipe or file whose writes can be held up the same way (for the plain and JSON modes)."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck = threading.Event()
        self._gate = threading.Event()
        self._gate.set()

    def write(self, text: str) -> int:
        if not self._gate.is_set():
            self.stuck.set()
            self._gate.wait()
        return super().write(text)

    def close_gate(self) -> None:
        self._gate.clear()

    def open_gate(self) -> None:
        self._gate.set()


@pytest.fixture
def gated_terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedTerminal]:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = GatedTerminal()
    yield terminal
    terminal.close()


def status_view(lines: list[str]) -> list[str]:
    """The last status view on screen: from its header to the end."""
    header = max(index for index, line in enumerate(lines) if line.startswith("plldb: stack "))
    return lines[header:]


FINAL_STATUS = "plldb: stack hello-sam  [stopped]"


def live_view_ended(screen: Screen) -> bool:
    """The live view hid the cursor and, as the very last thing it writes when it ends, showed it."""
    return screen.cursor_hidden_count > 0 and screen.cursor_visible


@pytest.mark.parametrize("no_color", [False, True])
def test_live_view_on_a_terminal_respects_no_color(
    gated_terminal: GatedTerminal, monkeypatch: pytest.MonkeyPatch, no_color: bool
) -> None:
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    console = Console(choose_mode(False, gated_terminal.file), out=gated_terminal, err=gated_terminal)
    assert console.mode == MODE_LIVE
    play(console)
    gated_terminal.shown(live_view_ended)
    assert status_view(gated_terminal.lines())[0] == FINAL_STATUS
    lines = gated_terminal.lines()
    assert "[HelloFunction 0a1b2c3d] hello from the handler" in lines
    assert "Functions of stack hello-sam" in lines
    assert "<- HelloFunction 99999999 3 ms error ValueError: asked to fail" in lines
    assert bool(SGR_COLOR.search(gated_terminal.raw())) is not no_color


def start_session(console: Console) -> Invocation:
    """Instrumented with the live view on, one invocation running."""
    console.set_stack("hello-sam", ROWS[:1])
    console.on_connected()
    console.on_instrumented({"functions": [{"functionName": ROWS[0].physical_name, "status": "ok"}]})
    running = invocation()
    console.on_invocation_started(running)
    return running


class SessionSide:
    """Runs the session's calls (event loop, output pumps) on a thread of their own, and tells the
    moment one of them runs any code of rich: rich's locks are what a redraw holds while the terminal
    does not take its write, so a session call inside rich can be stuck behind it."""

    RICH = str(Path(rich.__file__).parent) + os.sep

    def __init__(self, calls: Callable[[], None]) -> None:
        self._changed = threading.Condition()
        self.entered_rich: str | None = None
        self.returned = False
        self._thread = threading.Thread(target=self._run, args=(calls,), daemon=True)
        self._thread.start()

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(self.RICH) and self.entered_rich is None:
            with self._changed:
                self.entered_rich = f"{frame.f_code.co_name} ({frame.f_code.co_filename})"
                self._changed.notify_all()

    def _run(self, calls: Callable[[], None]) -> None:
        sys.setprofile(self._profile)
        try:
            calls()
        finally:
            sys.setprofile(None)
            with self._changed:
                self.returned = True
                self._changed.notify_all()

    def outcome(self) -> str:
        """ "returned", or the first function of rich a session call ran."""
        with self._changed:
            assert self._changed.wait_for(lambda: self.returned or self.entered_rich, timeout=60)
            return f"entered rich: {self.entered_rich}" if self.entered_rich else "returned"


def test_a_terminal_stuck_while_the_status_view_redraws_never_blocks_the_session(
    gated_terminal: GatedTerminal,
) -> None:
    """The lock-order inversion that hung attach: the status view is being redrawn (rich holds its
    lock, waiting for the terminal) while the handler floods output and the session reports events.
    No session call runs any code of rich, so every one returns while the redraw is still stuck;
    then everything is shown. (The old console printed through rich from these calls and hung.)"""
    console = Console(MODE_LIVE, out=gated_terminal, err=gated_terminal)
    gated_terminal.close_gate(when=lambda text: "plldb: stack hello-sam" in text)

    def session_calls() -> None:
        running = start_session(console)
        gated_terminal.stuck.wait()
        for number in range(1, 301):
            console.handler_output("HelloFunction", running.request_id, "stdout", f"flood line {number}/300")
        console.on_invocation_answered(running, Outcome(200, "{}", duration_ms=5))
        console.on_invocation_stored(running.request_id)
        console.on_progress({"phase": "instrument", "status": "ok", "function": ROWS[0].physical_name})
        console.warning("a warning while the terminal is stuck")

    assert SessionSide(session_calls).outcome() == "returned"
    assert gated_terminal.stuck.is_set()
    assert not gated_terminal.gate_opened  # every call returned while the redraw was stuck
    gated_terminal.open_gate()
    console.on_detaching()
    console.stop()
    gated_terminal.shown(live_view_ended)
    assert status_view(gated_terminal.lines())[0] == FINAL_STATUS
    lines = gated_terminal.lines()
    assert [line for line in lines if "flood line" in line] == [
        f"[HelloFunction 0a1b2c3d] flood line {number}/300" for number in range(1, 301)
    ]
    assert "a warning while the terminal is stuck" in lines
    assert gated_terminal.screen.cursor_visible


def test_output_beyond_the_backlog_is_dropped_counted_and_reported() -> None:
    """A terminal that stops reading costs at most the backlog: later lines are counted, not kept,
    and the count is shown where they would have been."""
    out = GatedStream()
    console = Console(MODE_PLAIN, out=out, err=io.StringIO(), output_backlog_chars=10 * (7 + 64))
    out.close_gate()
    console.on_connected()  # the renderer takes this line and waits in its write
    out.stuck.wait()
    for number in range(100):
        console.handler_output("HelloFunction", "0a1b2c3d-0000", "stdout", f"line {number:02}")
    out.open_gate()
    console.flush()
    console.handler_output("HelloFunction", "0a1b2c3d-0000", "stdout", "after")
    console.stop()
    assert out.getvalue().splitlines() == [
        "Connected; instrumenting the functions...",
        *[f"[HelloFunction 0a1b2c3d] line {number:02}" for number in range(10)],
        "plldb: 90 line(s) of handler output were not shown: the terminal did not keep up "
        "(more than 710 characters were waiting).",
        "[HelloFunction 0a1b2c3d] after",
    ]


def test_lines_dropped_at_the_end_are_reported_by_stop() -> None:
    out = GatedStream()
    console = Console(MODE_JSON, out=out, err=io.StringIO(), output_backlog_chars=64 + 4)
    out.close_gate()
    console.on_connected()
    out.stuck.wait()
    for number in range(3):
        console.handler_output("HelloFunction", "0a1b2c3d-0000", "stdout", f"l{number:03}")
    out.open_gate()
    console.stop()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(event["event"], event.get("line"), event.get("lines")) for event in events] == [
        ("connected", None, None),
        ("output", "l000", None),
        ("output_dropped", None, 2),
    ]
    assert events[2]["message"] == (
        "plldb: 2 line(s) of handler output were not shown: the terminal did not keep up "
        "(more than 68 characters were waiting)."
    )


S3_LINE = (
    "Uploaded the layer to s3://plldb-assets-123456789012-us-east-1/"
    "layers/3f1c0e9a8b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f.zip "
    "for the helper stack plldb in us-east-1"
)


def test_output_that_is_not_a_terminal_is_never_wrapped(gated_terminal: GatedTerminal) -> None:
    out, err = io.StringIO(), io.StringIO()
    plain = Console(MODE_PLAIN, out=out, err=err)
    plain.info(S3_LINE)
    plain.warning(S3_LINE)
    plain.on_connected()
    plain.handler_output("HelloFunction", "0a1b2c3d-0000", "stdout", S3_LINE)
    plain.stop()
    assert out.getvalue().splitlines() == [
        S3_LINE,
        "Connected; instrumenting the functions...",
        f"[HelloFunction 0a1b2c3d] {S3_LINE}",
    ]
    assert err.getvalue() == S3_LINE + "\n"
    # The live view on a terminal, with its warnings and errors sent to a file.
    err = io.StringIO()
    live = Console(MODE_LIVE, out=gated_terminal, err=err)
    live.warning(S3_LINE)
    live.error(S3_LINE)
    live.stop()
    live.error(S3_LINE)
    assert err.getvalue() == f"{S3_LINE}\n" * 3
    # What other commands print with rich (progress of plldb bootstrap) into a file.
    stream = io.StringIO()
    rich_console(stream).print(f"  {S3_LINE}", style="dim")
    assert stream.getvalue() == f"  {S3_LINE}\n"


def test_the_status_view_does_not_offer_ctrl_c_once_detaching_and_ends_detached(
    gated_terminal: GatedTerminal,
) -> None:
    console = Console(MODE_LIVE, out=gated_terminal, err=gated_terminal)
    start_session(console)
    console.flush()  # written to the terminal; shown once the terminal has read it
    connected = "plldb: stack hello-sam  [connected]  Ctrl-C to detach"
    gated_terminal.shown(lambda screen: connected in screen.lines())
    assert status_view(gated_terminal.lines())[0] == connected
    console.on_detaching()
    gated_terminal.shown(lambda screen: "[detaching]" in status_view(screen.lines())[0])
    assert status_view(gated_terminal.lines())[0] == (
        "plldb: stack hello-sam  [detaching]  restoring the functions; Ctrl-C again to leave without waiting"
    )
    console.on_progress(
        {"phase": "restore", "status": "ok", "function": ROWS[0].physical_name, "message": "ok"}
    )
    console.on_progress(
        {
            "phase": "restore",
            "status": "done",
            "message": "Restored 1 function",
            "functions": [{"functionName": ROWS[0].physical_name, "status": "ok"}],
        }
    )
    console.stop()
    console.info("Detached: every function is restored.")
    gated_terminal.shown(lambda screen: screen.lines()[-1:] == ["Detached: every function is restored."])
    view = status_view(gated_terminal.lines())
    assert view[0] == "plldb: stack hello-sam  [detached]"
    assert [re.split(r"\s{2,}", row.strip()) for row in view[1:3]] == [
        ["Function", "Instrumented", "Invocations"],
        ["HelloFunction", "no", "1"],
    ]
    assert gated_terminal.screen.cursor_visible


@pytest.mark.parametrize("interruption", ["Ctrl-C", "SIGTERM"])
def test_stop_interrupted_while_it_drains_still_restores_the_terminal(
    gated_terminal: GatedTerminal, monkeypatch: pytest.MonkeyPatch, interruption: str
) -> None:
    """Ctrl-C or SIGTERM while stop() waits for a terminal that does not take the last redraw: the
    cursor is shown and the settings saved when the live view started are put back, then the
    interruption goes on (KeyboardInterrupt, or exit status 143 for SIGTERM)."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        console = Console(MODE_LIVE, out=gated_terminal, err=gated_terminal)
        start_session(console)
        gated_terminal.shown(lambda screen: not screen.cursor_visible)
        console.flush()  # every redraw of the session written: the one stop() asks for is the next
        # Something (a debugger, a crashed tool) changed the terminal's settings meanwhile.
        changed = termios.tcgetattr(gated_terminal.terminal)
        changed[3] &= ~termios.ECHO
        termios.tcsetattr(gated_terminal.terminal, termios.TCSANOW, changed)
        sent = signal.SIGINT if interruption == "Ctrl-C" else signal.SIGTERM
        expected: type[BaseException] = KeyboardInterrupt if interruption == "Ctrl-C" else SystemExit
        # The signal arrives in the main thread as from the terminal or `kill` (interrupt_main: Python's
        # handler runs there, whichever thread the kernel would have picked), once the redraw is stuck.
        gated_terminal.close_gate(
            when=lambda text: "plldb: stack hello-sam" in text,
            on_stuck=lambda: _thread.interrupt_main(sent),
        )
        # Python runs the signal's handler at the main thread's next bytecode; were that inside a garbage
        # collection's callback (hypothesis installs one), it would print "Exception ignored in gc
        # callback" and drop the KeyboardInterrupt. No collection runs meanwhile.
        collecting = gc.isenabled()
        gc.disable()
        try:
            with pytest.raises(expected) as raised:
                console.stop()
        finally:
            if collecting:
                gc.enable()
        if interruption == "SIGTERM":
            assert raised.value.code == 143
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        gated_terminal.shown(lambda screen: screen.cursor_visible)
        assert not gated_terminal.gate_opened  # restored while the redraw is still stuck
        assert termios.tcgetattr(gated_terminal.terminal) == gated_terminal.settings_before
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_sigint)


def test_a_session_ended_elsewhere_says_by_whom_and_leaves_a_true_status(
    gated_terminal: GatedTerminal,
) -> None:
    console = Console(MODE_LIVE, out=gated_terminal, err=gated_terminal)
    start_session(console)
    gated_terminal.shown(lambda screen: any("[connected]" in line for line in screen.lines()))
    console.on_session_ended(
        "arn:aws:iam::123456789012:user/bob on bobs-laptop (--take-over)",
        "stack hello-sam was restored and given to another session",
    )
    console.stop()
    console.error("The session was ended elsewhere.")
    gated_terminal.shown(lambda screen: screen.lines()[-1:] == ["The session was ended elsewhere."])
    lines = gated_terminal.lines()
    assert (
        "Session ended by arn:aws:iam::123456789012:user/bob on bobs-laptop (--take-over): "
        "stack hello-sam was restored and given to another session"
    ) in lines
    view = status_view(lines)
    assert view[:2] == [
        "plldb: stack hello-sam  [session ended]",
        "Ended by arn:aws:iam::123456789012:user/bob on bobs-laptop (--take-over): "
        "stack hello-sam was restored and given to another session",
    ]
    assert re.split(r"\s{2,}", view[3].strip()) == ["HelloFunction", "no", "1"]
    assert not any("Ctrl-C" in line for line in view)


def test_a_restore_by_another_command_ends_the_status_view_even_unannounced(
    gated_terminal: GatedTerminal,
) -> None:
    """Until the session code names who ended it, the restore it did not ask for is enough to say so."""
    console = Console(MODE_LIVE, out=gated_terminal, err=gated_terminal)
    start_session(console)
    console.on_progress(
        {
            "phase": "restore",
            "status": "done",
            "message": "Another plldb command restored stack hello-sam and closed this session: 1 restored",
            "functions": [{"functionName": ROWS[0].physical_name, "status": "ok"}],
        }
    )
    console.stop()
    gated_terminal.shown(
        lambda screen: screen.cursor_visible and "[session ended]" in "".join(screen.lines())
    )
    view = status_view(gated_terminal.lines())
    assert view[:2] == [
        "plldb: stack hello-sam  [session ended]",
        "Another plldb command restored stack hello-sam and closed this session: 1 restored",
    ]
    assert re.split(r"\s{2,}", view[3].strip()) == ["HelloFunction", "no", "1"]


def test_a_session_ended_elsewhere_in_json_and_plain_lines() -> None:
    out = io.StringIO()
    console = Console(MODE_JSON, out=out, err=io.StringIO())
    console.on_session_ended("plldb bootstrap destroy --force", "the helper stack plldb is being deleted")
    console.stop()
    event = json.loads(out.getvalue())
    del event["time"]
    assert event == {
        "event": "session_ended",
        "message": "Session ended by plldb bootstrap destroy --force: the helper stack plldb is being deleted",
        "by": "plldb bootstrap destroy --force",
        "reason": "the helper stack plldb is being deleted",
    }
    out, err = io.StringIO(), io.StringIO()
    console = Console(MODE_PLAIN, out=out, err=err)
    console.on_session_ended("plldb detach", "stack hello-sam was restored")
    console.stop()
    assert (out.getvalue(), err.getvalue()) == (
        "",
        "Session ended by plldb detach: stack hello-sam was restored\n",
    )


def test_a_session_ended_by_someone_unnamed_says_why_only() -> None:
    out, err = io.StringIO(), io.StringIO()
    console = Console(MODE_PLAIN, out=out, err=err)
    console.on_session_ended(None, "the helper stack closed it")
    console.stop()
    assert (out.getvalue(), err.getvalue()) == ("", "Session ended: the helper stack closed it\n")


def test_each_functions_progress_line_says_what_its_message_adds() -> None:
    out = io.StringIO()
    console = Console(MODE_PLAIN, out=out, err=io.StringIO())
    console.set_stack("hello-sam", ROWS)
    hello = ROWS[0].physical_name
    for status, message in [
        ("ok", "instrumented (timeout 60 s)"),
        ("ok", "instrumented (timeout 60 s); alias live now sends traffic to version 4"),
        ("note", "fed by SQS queue jobs (visibility timeout 30 s): a pause longer than that redelivers"),
        ("skipped", "runtime nodejs20.x is not Python"),
    ]:
        console.on_progress({"phase": "instrument", "status": status, "message": message, "function": hello})
    console.stop()
    assert out.getvalue().splitlines() == [
        "  instrumented: HelloFunction",
        "  instrumented: HelloFunction (alias live now sends traffic to version 4)",
        "  note: HelloFunction: fed by SQS queue jobs (visibility timeout 30 s): a pause longer than that "
        "redelivers",
        "  skipped: HelloFunction: runtime nodejs20.x is not Python",
    ]


def test_lines_before_the_session_and_after_stop_keep_their_order_with_the_session() -> None:
    """Before the session's first event and after stop() lines are written at once by the caller, so
    they stay in order with what the command prints itself (an error, a traceback) around them."""
    out = io.StringIO()
    console = Console(MODE_PLAIN, out=out, err=out)
    console.info("before the session")
    assert out.getvalue() == "before the session\n"  # written already, not queued
    console.on_connected()
    console.handler_output("HelloFunction", None, "stderr", "during")
    console.flush()
    console.stop()
    console.info("after stop")
    assert out.getvalue().splitlines() == [
        "before the session",
        "Connected; instrumenting the functions...",
        "[HelloFunction -] during",
        "after stop",
    ]


def test_control_characters_a_handler_prints_cannot_move_the_cursor_in_the_live_view(
    gated_terminal: GatedTerminal,
) -> None:
    console = Console(MODE_LIVE, out=gated_terminal, err=gated_terminal)
    running = start_session(console)
    console.handler_output("HelloFunction", running.request_id, "stdout", "clear\x1b[2J\x1b[Hme\rnot\tme")
    console.stop()
    gated_terminal.shown(live_view_ended)
    assert status_view(gated_terminal.lines())[0] == FINAL_STATUS
    assert "[HelloFunction 0a1b2c3d] clear\u241b[2J\u241b[Hme\u240dnot     me" in gated_terminal.lines()
    assert gated_terminal.screen.unknown == []
