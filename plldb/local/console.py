"""What `plldb attach` shows: a live status view on a terminal, plain lines otherwise, or JSON events.

One object receives everything that happens (session events, progress, handler output) from the
event loop and from worker threads, and renders it in the chosen mode. NO_COLOR and non-terminal
output are respected, so piping the output into a file or CI log gives readable plain lines that are
never wrapped.

The screen never holds up the session. Once the session is running, every call (an event, a line a
handler printed) only records what happened and appends it to a queue; one renderer thread drains
the queue and is the only thread that writes to the terminal or calls into rich. No lock is held
across a call into rich, and rich never calls back into a lock that a session-facing call waits for,
so a slow, paused or busy terminal cannot delay an acknowledgement or an answer. Handler output that
piles up beyond ``OUTPUT_BACKLOG_CHARS`` (a terminal that stopped reading) is counted and reported
instead of being kept. Before the session starts and after ``stop()`` lines are written at once by
the caller, so they keep their order with the command's own messages.

The terminal is restored on every exit path: ``stop()`` (which the command calls in ``finally``)
shows the cursor and puts back the terminal settings saved when the live view started, also when it
is interrupted by Ctrl-C or SIGTERM; an ``atexit`` hook does the same for any path that skips it.

Why one module of this size: the status view's state, the queue and the renderer thread share two
leaf locks and one write lock whose ordering rules (above) are what keep the console from locking up;
kept in one class they can be read and checked together, split they could not.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console as RichConsole
from rich.console import ConsoleOptions, Group, RenderableType
from rich.live import Live
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

from plldb.local.invocation import Invocation, Outcome
from plldb.local.session import SessionObserver, short_id

_termios: Any
try:
    import termios as _termios
except ImportError:  # no POSIX terminal: the status view still works, nothing to save or restore
    _termios = None

MODE_LIVE = "live"
MODE_PLAIN = "plain"
MODE_JSON = "json"
RECENT_INVOCATIONS = 12
OUTPUT_BACKLOG_CHARS = 64 * 1024 * 1024  # handler output waiting for a terminal that stopped reading
FOOTER_REFRESH_SECONDS = 0.1  # at most ten redraws of the status view a second
BATCH_ENTRIES = 2000  # lines printed in one write, so the status view is redrawn between large batches
ENTRY_OVERHEAD_CHARS = 64  # what one queued line costs beyond its text, for the backlog limit

SHOW_CURSOR = b"\x1b[?25h"

# Connection states of the status view; the first three still accept Ctrl-C to detach.
CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
DETACHING = "detaching"
DETACHED = "detached"
ENDED = "ended"
STOPPED = "stopped"
_RUNNING_STATES = (CONNECTING, CONNECTED, RECONNECTING)


@dataclass(frozen=True)
class FunctionRow:
    """One deployed function as the status view lists it."""

    physical_name: str
    label: str  # the logical id path, e.g. "App/HelloFunction"
    source: str | None  # "hello/app.py:lambda_handler", or None without local code
    note: str | None = None  # why there is no local code, or why it is not instrumented


@dataclass
class _InvocationRow:
    request_id: str
    label: str
    started: float
    state: str = "running"
    duration_ms: float | None = None
    detail: str = ""


@dataclass
class _Status:
    stack_name: str = ""
    connection: str = CONNECTING
    reconnects: int = 0
    ended_by: str = ""
    ended_reason: str = ""
    functions: list[FunctionRow] = field(default_factory=list)
    instrumented: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    recent: deque[_InvocationRow] = field(default_factory=lambda: deque(maxlen=RECENT_INVOCATIONS))


@dataclass
class _Entry:
    """One thing to write. Plain and JSON modes: ``text``, a finished line. Live mode: ``styled``, a
    line and its rich style; ``output``, a line of handler output as (prefix, stream, line); or
    ``make``, which builds a rich renderable. Rich objects are only made by the renderer thread."""

    text: str | None = None
    styled: tuple[str, str] | None = None
    output: tuple[str, str, str] | None = None
    make: Callable[[], RenderableType] | None = None
    to_err: bool = False
    output_size: int = 0  # > 0 for handler output: what it counts against the backlog limit

    @property
    def kind(self) -> str:
        if self.text is not None:
            return "text"
        return "output" if self.output is not None else "rich"

    def renderable(self) -> RenderableType:
        if self.make is not None:
            return self.make()
        text, style = self.styled or ("", "")
        return Text(text, style=style)

    def plain(self) -> str:
        if self.output is not None:
            prefix, _, line = self.output
            return f"{prefix} {line}"
        if self.styled is not None:
            return self.styled[0]
        renderable = self.renderable()
        return renderable.plain if isinstance(renderable, Text) else str(renderable)


# Control characters a handler prints would move the cursor inside the status view: on the live view
# they are shown as their Unicode control pictures (ESC as U+241B), tabs kept.
_CONTROL_PICTURES = {code: 0x2400 + code for code in range(0x20) if code != 0x09} | {0x7F: 0x2421}
_OUTPUT_STYLES = {"stdout": Style(color="cyan"), "stderr": Style(color="magenta")}


class _OutputLines:
    """Handler output lines as one renderable: segments straight to the terminal, never wrapped by
    rich (the terminal wraps what is too long), about seven times faster than a Text per line."""

    def __init__(self, lines: list[tuple[str, str, str]]) -> None:
        self._lines = lines

    def __rich_console__(self, console: RichConsole, options: ConsoleOptions) -> Iterator[Segment]:
        newline = Segment.line()
        for prefix, stream, line in self._lines:
            yield Segment(prefix + " ", _OUTPUT_STYLES.get(stream, _OUTPUT_STYLES["stderr"]))
            yield Segment(line.translate(_CONTROL_PICTURES))
            yield newline


def function_name(entry: Any) -> str:
    """A function named in a progress message: a plain name, or an object with a name field."""
    if isinstance(entry, Mapping):
        for key in ("function", "functionName", "name", "FunctionName"):
            if isinstance(entry.get(key), str):
                return str(entry[key])
    return str(entry)


def _yes_no(value: bool) -> Text:
    return Text("yes", style="green") if value else Text("no", style="yellow")


def _stack_table(stack_name: str, functions: Sequence[FunctionRow], instrumented: set[str]) -> Table:
    table = Table(title=f"Functions of stack {stack_name}", title_justify="left")
    table.add_column("Logical id")
    table.add_column("Deployed function")
    table.add_column("Instrumented")
    table.add_column("Local source")
    for row in functions:
        source = Text(row.source) if row.source else Text(row.note or "no local source", style="yellow")
        table.add_row(row.label, row.physical_name, _yes_no(row.physical_name in instrumented), source)
    return table


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def choose_mode(json_output: bool, stream: TextIO | None = None) -> str:
    """JSON when asked; the live view only on a real terminal (not TERM=dumb); plain lines otherwise."""
    if json_output:
        return MODE_JSON
    stream = stream or sys.stdout
    if _is_terminal(stream) and os.environ.get("TERM", "") != "dumb":
        return MODE_LIVE
    return MODE_PLAIN


def rich_console(stream: TextIO) -> RichConsole:
    """A rich console for ``stream`` that never hard-wraps: long lines (S3 URIs, ARNs) stay whole.

    On a terminal the terminal itself wraps what is too long; in a file or a pipe a line is one line.
    """
    return RichConsole(file=stream, highlight=False, soft_wrap=True)


class _TerminalGuard:
    """While the status view is drawn, the terminal does not echo what is typed (a "^C" or stray keys
    would land inside it) nor discard, on Ctrl-C, the output it has not shown yet (termios NOFLSH: the
    lost bytes would include part of a redraw, and rich's next one, starting from a row it never
    reached, would erase the lines above it); its settings as they were, and the cursor, are put back
    exactly once, and the keys typed unseen meanwhile are thrown away (as Ctrl-C did without NOFLSH),
    so the shell does not run them."""

    def __init__(self, stream: TextIO) -> None:
        self._fd: int | None = None
        self._settings: list[Any] | None = None
        self._restored = threading.Event()
        try:
            fd = stream.fileno()
        except (AttributeError, ValueError, OSError):
            return
        if not os.isatty(fd):
            return
        self._fd = fd
        if _termios is not None:
            try:
                self._settings = _termios.tcgetattr(fd)
                quiet = list(self._settings)
                quiet[3] &= ~_termios.ECHO  # Ctrl-C still interrupts (ISIG), it just is not echoed
                quiet[3] |= _termios.NOFLSH
                _termios.tcsetattr(fd, _termios.TCSANOW, quiet)
            except (OSError, _termios.error):
                self._settings = None
        atexit.register(self.restore)

    def restore(self, show_cursor: bool = True) -> None:
        """Cursor shown and settings as saved; idempotent, and never blocks on Python's buffers."""
        if self._restored.is_set():
            return
        self._restored.set()
        with contextlib.suppress(Exception):
            atexit.unregister(self.restore)
        if self._fd is None:
            return
        if show_cursor:
            with contextlib.suppress(OSError):
                os.write(self._fd, SHOW_CURSOR)
        if self._settings is not None and _termios is not None:
            with contextlib.suppress(Exception):
                _termios.tcflush(self._fd, _termios.TCIFLUSH)
            with contextlib.suppress(Exception):
                _termios.tcsetattr(self._fd, _termios.TCSANOW, self._settings)


def _progress_line(phase: str, status: str, label: str, text: str) -> str:
    """One function's progress: its verb and name, then what the message adds (aliases moved, a note)."""
    if status != "ok":
        return f"{status}: {label}" + (f": {text}" if text else "")
    verb = {"instrument": "instrumented", "restore": "restored"}.get(phase, phase)
    # "instrumented (timeout 60 s); aliases live now send traffic to version 4": the part after the verb.
    extra = text.split("; ", 1)[1] if "; " in text else ""
    return f"{verb}: {label}" + (f" ({extra})" if extra else "")


STOP_JOIN_STEP_SECONDS = 0.1  # how often stop() lets a pending Ctrl-C or SIGTERM run while it drains


class Console(SessionObserver):
    """Thread-safe output for one attach run. ``quiet`` keeps only handler output, warnings and errors.

    ``output_backlog_chars`` bounds the handler output kept while the terminal does not keep up.
    """

    def __init__(
        self,
        mode: str,
        quiet: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
        output_backlog_chars: int = OUTPUT_BACKLOG_CHARS,
    ) -> None:
        self.mode = mode
        self.quiet = quiet
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._err_is_terminal = _is_terminal(self._err)
        self._backlog_limit = output_backlog_chars
        # The state the status view shows; a leaf lock, never held while writing or calling rich.
        self._state_lock = threading.Lock()
        self._status = _Status()
        self._labels: dict[str, str] = {}
        self._rows: dict[str, _InvocationRow] = {}
        # The queue between the callers and the renderer thread; a leaf lock as well.
        self._queue_changed = threading.Condition(threading.Lock())
        self._queue: deque[_Entry] = deque()
        self._backlog = 0
        self._dropped = 0
        self._streaming = False  # the renderer thread writes; callers only enqueue
        self._stopping = False
        self._stopped = False
        self._busy = False  # the renderer is writing what it took from the queue
        self._live_wanted = False
        self._footer_dirty = False
        self._renderer: threading.Thread | None = None
        # Writes by callers (before streaming and after stop) and by the renderer never overlap.
        self._write_lock = threading.Lock()
        self._rich = rich_console(self._out)
        self._rich_err = rich_console(self._err)
        self._live: Live | None = None
        self._guard: _TerminalGuard | None = None

    # -- lifecycle ------------------------------------------------------------------------------------
    def start_live(self) -> None:
        """Show the status view (live mode, not quiet); lines printed meanwhile appear above it."""
        if self.mode != MODE_LIVE or self.quiet:
            return
        self._begin_streaming()
        with self._queue_changed:
            if self._stopping:
                return
            self._live_wanted = True
            self._footer_dirty = True
            self._queue_changed.notify_all()

    def flush(self) -> None:
        """Return once everything submitted so far has been written (the status view redrawn)."""
        with self._queue_changed:
            while self._streaming and (self._queue or self._busy or self._footer_dirty):
                self._queue_changed.wait()

    def stop(self) -> None:
        """Write what is still queued, end the status view and restore the terminal; later lines are
        written at once. Ctrl-C or SIGTERM while it drains still restores the terminal."""
        with self._queue_changed:
            if self._stopping:
                return
        with self._state_lock:
            # The last status view must not offer Ctrl-C, nor claim a detach that never finished.
            if self._status.connection in _RUNNING_STATES or self._status.connection == DETACHING:
                self._status.connection = STOPPED
        # Before the renderer is told: a SIGTERM from then on must end the process through the finally
        # blocks below (the terminal restored), never by the default action.
        previous = self._raise_on_sigterm()
        try:
            with self._queue_changed:
                self._stopping = True
                self._footer_dirty = True
                renderer = self._renderer
                self._queue_changed.notify_all()
            # Joined in short waits: a signal the kernel hands to another thread (the renderer's, say) is
            # run by the main thread only when it returns to Python, which one endless join never does.
            while renderer is not None and renderer.is_alive():
                renderer.join(STOP_JOIN_STEP_SECONDS)
            self._note_dropped_output()
        except BaseException:
            if self._guard is not None:
                self._guard.restore()
            raise
        finally:
            with self._queue_changed:
                self._streaming = False
                self._stopped = True
                self._queue_changed.notify_all()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            atexit.unregister(self.stop)

    @staticmethod
    def _raise_on_sigterm() -> Any:
        """While stop() drains the queue, SIGTERM ends the process through ``finally`` blocks."""
        if threading.current_thread() is not threading.main_thread():
            return None
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None

        def leave(signal_number: int, frame: Any) -> None:
            raise SystemExit(128 + signal_number)

        return signal.signal(signal.SIGTERM, leave)

    # -- general messages ---------------------------------------------------------------------------
    def info(self, text: str, event: str = "info", **fields: Any) -> None:
        if self.quiet and self.mode != MODE_JSON:
            return
        self._line(text, event, fields)

    def warning(self, text: str) -> None:
        self._line(text, "warning", {}, style="yellow", to_err=True)

    def error(self, text: str) -> None:
        self._line(text, "error", {}, style="bold red", to_err=True)

    def on_warning(self, text: str) -> None:
        self._begin_streaming()
        self.warning(text)

    # -- the stack and its functions ------------------------------------------------------------------
    def set_stack(self, stack_name: str, functions: Sequence[FunctionRow]) -> None:
        """The deployed functions the status view lists (shown once they are instrumented)."""
        with self._state_lock:
            self._status.stack_name = stack_name
            self._status.functions = list(functions)
            self._labels = {row.physical_name: row.label for row in functions}
        self._status_changed()

    def show_stack(self) -> None:
        """Which deployed function runs which local source, and which have none."""
        with self._state_lock:
            stack_name = self._status.stack_name
            functions = list(self._status.functions)
            instrumented = set(self._status.instrumented)
        if self.mode == MODE_JSON:
            self._emit(
                "mapping",
                stack=stack_name,
                functions=[
                    {
                        "function": row.physical_name,
                        "logicalId": row.label,
                        "source": row.source,
                        "note": row.note,
                        "instrumented": row.physical_name in instrumented,
                    }
                    for row in functions
                ],
            )
            return
        if self.quiet:
            return
        if self.mode == MODE_LIVE:
            self._submit(_Entry(make=lambda: _stack_table(stack_name, functions, instrumented)))
            return
        self._plain(f"Functions of stack {stack_name}:")
        for row in functions:
            target = row.source or f"no local source ({row.note or 'not in the template'})"
            mark = "" if row.physical_name in instrumented else " [not instrumented]"
            self._plain(f"  {row.label} ({row.physical_name}){mark} -> {target}")

    def label(self, function_name: str) -> str:
        return self._labels.get(function_name, function_name)

    def function_names(self, function: Any) -> dict[str, Any]:
        """How every --json event names a function: its deployed name and its logical id (the worker
        knows a function by the latter, AWS by the former)."""
        if function is None:
            return {"function": None, "logicalId": None}
        name = str(function)
        with self._state_lock:
            if name in self._labels:
                return {"function": name, "logicalId": self._labels[name]}
            physical = next((p for p, label in self._labels.items() if label == name), None)
        if physical is not None:
            return {"function": physical, "logicalId": name}
        return {"function": name, "logicalId": None}

    # -- session events (SessionObserver) -------------------------------------------------------------
    def on_connected(self) -> None:
        self._begin_streaming()
        self._set_connection(CONNECTED)
        self.info("Connected; instrumenting the functions...", event="connected")

    def on_connection_lost(self, reason: str) -> None:
        self._begin_streaming()
        self._set_connection(RECONNECTING)
        self._line(f"Connection lost ({reason}); reconnecting...", "connection_lost", {"reason": reason})

    def on_reconnect_failed(self, attempt: int, reason: str) -> None:
        self._begin_streaming()
        self._line(
            f"Reconnect attempt {attempt} failed: {reason}",
            "reconnect_failed",
            {"attempt": attempt, "reason": reason},
            style="yellow",
            to_err=True,
        )

    def on_reconnected(self, rotated: bool) -> None:
        self._begin_streaming()
        with self._state_lock:
            self._status.reconnects += 1
        self._set_connection(CONNECTED)
        text = "Renewed the connection before its time limit." if rotated else "Reconnected."
        if rotated:
            self.info(text, event="reconnected", rotated=True)
        else:
            self._line(text, "reconnected", {"rotated": False}, style="green")

    def on_progress(self, message: Mapping[str, Any]) -> None:
        self._begin_streaming()
        phase, status = str(message.get("phase")), str(message.get("status"))
        function = message.get("function")
        text = str(message.get("message", ""))
        self._record_progress(phase, status, function, message)
        if self.mode == MODE_JSON:
            self._emit("progress", phase=phase, status=status, **self.function_names(function), message=text)
            return
        if status == "failed":
            subject = f"{self.label(str(function))}: " if function else ""
            self.warning(f"{phase}: {subject}{text or 'failed'}")
            return
        if self.quiet or status == "done":
            return
        if function:
            self._line(f"  {_progress_line(phase, status, self.label(str(function)), text)}", "", {})
        elif text:
            self._line(text, "", {})

    def _record_progress(self, phase: str, status: str, function: Any, message: Mapping[str, Any]) -> None:
        """What a progress message changes in the status view: instrumented functions, a detach done."""
        with self._state_lock:
            if function and status == "ok":
                if phase == "instrument":
                    self._status.instrumented.add(str(function))
                elif phase == "restore":
                    self._status.instrumented.discard(str(function))
            if phase == "restore" and status == "done":
                for entry in message.get("functions") or []:
                    if not isinstance(entry, Mapping) or entry.get("status") != "failed":
                        self._status.instrumented.discard(function_name(entry))
                if self._status.connection == DETACHING:
                    self._status.connection = DETACHED
                elif self._status.connection != ENDED:
                    # Restored by another command (detach, --take-over, destroy --force): over. The
                    # manager's message says so; on_session_ended() may name who, later.
                    self._status.connection = ENDED
                    self._status.ended_reason = str(message.get("message") or "restored by another command")
        self._status_changed()

    def on_instrumented(self, message: Mapping[str, Any]) -> None:
        self._begin_streaming()
        names = [
            function_name(entry)
            for entry in message.get("functions") or []
            if not isinstance(entry, Mapping) or entry.get("status", "ok") == "ok"
        ]
        with self._state_lock:
            self._status.instrumented.update(names)
        self._status_changed()
        self.show_stack()
        self.info(
            f"Ready: {len(names)} function(s) instrumented. Invoke them as usual; press Ctrl-C to detach.",
            event="ready",
            functions=names,
            logicalIds=[self.function_names(name)["logicalId"] for name in names],
        )
        self.start_live()

    def on_invocation_started(self, invocation: Invocation) -> None:
        self._begin_streaming()
        label = self.label(invocation.function_name)
        with self._state_lock:
            row = _InvocationRow(invocation.request_id, label, time.monotonic())
            self._rows[invocation.request_id] = row
            self._status.recent.append(row)
            self._status.counts[invocation.function_name] = (
                self._status.counts.get(invocation.function_name, 0) + 1
            )
            self._forget_rows()
        self._status_changed()
        if self.mode == MODE_JSON:
            self._emit(
                "invocation_started",
                **self.function_names(invocation.function_name),
                requestId=invocation.request_id,
            )
        elif self.mode == MODE_PLAIN and not self.quiet:
            self._plain(f"-> {label} {short_id(invocation.request_id)}")

    def on_invocation_answered(self, invocation: Invocation, outcome: Outcome) -> None:
        self._begin_streaming()
        label = self.label(invocation.function_name)
        detail = ""
        if not outcome.ok and outcome.error:
            detail = f"{outcome.error.get('errorType', 'Error')}: {outcome.error.get('errorMessage', '')}"
        with self._state_lock:
            row = self._rows.get(invocation.request_id)
            if row is None:
                row = _InvocationRow(invocation.request_id, label, time.monotonic())
                self._rows[invocation.request_id] = row
                self._status.recent.append(row)
            row.state = "ok" if outcome.ok else "error"
            row.duration_ms = outcome.duration_ms
            row.detail = detail
        self._status_changed()
        if self.mode == MODE_JSON:
            self._emit(
                "invocation_finished",
                **self.function_names(invocation.function_name),
                requestId=invocation.request_id,
                durationMs=round(outcome.duration_ms, 1),
                status="ok" if outcome.ok else "error",
                error=dict(outcome.error) if outcome.error else None,
            )
            return
        if self.quiet and outcome.ok:
            return
        result = "ok" if outcome.ok else f"error {detail}"
        line = f"<- {label} {short_id(invocation.request_id)} {outcome.duration_ms:.0f} ms {result}"
        if self.mode == MODE_PLAIN:
            self._plain(line)
        elif not outcome.ok:
            self._submit(_Entry(styled=(line, "red")))

    def on_invocation_observed(
        self, invocation: Invocation, outcome: Outcome, observed: Mapping[str, Any]
    ) -> None:
        """Observe mode: the local run next to the cloud's outcome, a difference highlighted."""
        from plldb.local.session_options import observed_event, observed_lines

        self.on_invocation_answered(invocation, outcome)
        event = observed_event(invocation, outcome, observed)
        if self.mode == MODE_JSON:
            self._emit("observed", **{**event, **self.function_names(invocation.function_name)})
            return
        label = self.label(invocation.function_name)
        for text, style in observed_lines(label, short_id(invocation.request_id), event):
            if self.mode == MODE_PLAIN:
                self._plain(text)
            else:
                self._submit(_Entry(styled=(text, style)))

    def on_invocation_stored(self, request_id: str) -> None:
        self._begin_streaming()
        if self.mode == MODE_JSON:
            self._emit("invocation_delivered", requestId=request_id)

    def on_invocation_refused(self, request_id: str, code: str, message: str) -> None:
        self._begin_streaming()
        with self._state_lock:
            row = self._rows.get(request_id)
            if row is not None:
                row.state = "refused"
                row.detail = message
        self._status_changed()
        self._line(
            f"The answer to {short_id(request_id)} was not delivered: {message}",
            "invocation_refused",
            {"requestId": request_id, "code": code, "message": message},
            style="yellow",
            to_err=True,
        )

    def on_duplicate_invoke(self, request_id: str) -> None:
        self._begin_streaming()
        if self.mode == MODE_JSON:
            self._emit("duplicate_invoke", requestId=request_id)

    def on_detaching(self) -> None:
        self._begin_streaming()
        self._set_connection(DETACHING)
        self._line("Detaching: restoring the functions...", "detaching", {})

    def on_session_ended(self, by: str | None, reason: str) -> None:
        """The session was ended from elsewhere: ``by`` who (another developer's take-over, `plldb
        detach`, `plldb bootstrap destroy --force`) and why. The status view says so, lists no function
        as instrumented by this session any more, and stops offering Ctrl-C to detach."""
        self._begin_streaming()
        with self._state_lock:
            self._status.connection = ENDED
            self._status.ended_by = by or ""
            self._status.ended_reason = reason
            self._status.instrumented.clear()
        self._status_changed()
        self._line(
            f"Session ended by {by}: {reason}" if by and by not in reason else f"Session ended: {reason}",
            "session_ended",
            {"by": by, "reason": reason},
            style="bold yellow",
            to_err=True,
        )

    # -- handler output ----------------------------------------------------------------------------------
    def handler_output(self, function_name: str, request_id: str | None, stream: str, line: str) -> None:
        """One line the handler printed or logged, prefixed with its function and short request id.

        Never blocks: it is queued for the renderer (or dropped and counted when the terminal is
        ``output_backlog_chars`` behind).
        """
        self._begin_streaming()
        size = len(line) + ENTRY_OVERHEAD_CHARS
        if self.mode == MODE_JSON:
            entry = _Entry(
                text=self._json(
                    "output",
                    **self.function_names(function_name),
                    requestId=request_id,
                    stream=stream,
                    line=line,
                ),
                output_size=size,
            )
        else:
            prefix = f"[{self.label(function_name)} {short_id(request_id) if request_id else '-'}]"
            if self.mode == MODE_LIVE:
                entry = _Entry(output=(prefix, stream, line), output_size=size)
            else:
                entry = _Entry(text=f"{prefix} {line}", output_size=size)
        self._submit(entry)

    # -- rendering ------------------------------------------------------------------------------------
    def _set_connection(self, state: str) -> None:
        with self._state_lock:
            if self._status.connection == ENDED:
                return  # how the session ended stays on screen
            self._status.connection = state
        self._status_changed()

    def _forget_rows(self) -> None:
        """Rows are looked up by request id until they leave the recent list (caller holds the lock)."""
        if len(self._rows) > 4 * RECENT_INVOCATIONS:
            kept = {row.request_id for row in self._status.recent}
            self._rows = {key: row for key, row in self._rows.items() if key in kept}

    def _render(self) -> RenderableType:
        """The status view, from a snapshot of the state (no lock is held while rich lays it out)."""
        with self._state_lock:
            status = self._status
            stack_name, connection, reconnects = status.stack_name, status.connection, status.reconnects
            ended_by, ended_reason = status.ended_by, status.ended_reason
            functions = [
                (row.label, row.physical_name in status.instrumented, status.counts.get(row.physical_name, 0))
                for row in status.functions
            ]
            recent = [
                (row.label, row.request_id, row.duration_ms, row.state, row.detail) for row in status.recent
            ]
        # Every line of the status view is cropped to the terminal's width (so rich always knows its
        # height); only the line saying who ended the session wraps, so all of it stays readable.
        header = Text()
        header.append(f"plldb: stack {stack_name}  ", style="bold")
        ended = None
        if connection == ENDED:
            header.append("[session ended]", style="red")
            said = (
                f"Ended by {ended_by}: {ended_reason}"
                if ended_by and ended_by not in ended_reason
                else ended_reason
            )
            ended = Text(said, style="red", no_wrap=False, overflow="fold")
        else:
            style = "green" if connection in (CONNECTED, DETACHED) else "yellow"
            header.append(f"[{connection}]", style=style)
        if reconnects:
            header.append(f"  reconnects: {reconnects}")
        if connection in _RUNNING_STATES:
            header.append("  Ctrl-C to detach", style="dim")
        elif connection == DETACHING:
            header.append("  restoring the functions; Ctrl-C again to leave without waiting", style="dim")
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        table.add_column("Function")
        table.add_column("Instrumented")
        table.add_column("Invocations", justify="right")
        for label, instrumented, count in functions:
            table.add_row(label, _yes_no(instrumented), str(count))
        parts: list[RenderableType] = [header, *([ended] if ended is not None else []), table]
        if recent:
            invocations = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
            invocations.add_column("Function")
            invocations.add_column("Request")
            invocations.add_column("Duration", justify="right")
            invocations.add_column("Result")
            for label, request_id, duration_ms, state, detail in recent:
                duration = f"{duration_ms:.0f} ms" if duration_ms is not None else ""
                style = {"ok": "green", "error": "red", "refused": "yellow"}.get(state, "")
                result = Text(state, style=style)
                if detail:
                    result.append(f" {detail[:80]}")
                invocations.add_row(label, short_id(request_id), duration, result)
            parts.append(invocations)
        return Group(*parts)

    def _line(
        self,
        text: str,
        event: str,
        fields: Mapping[str, Any],
        style: str | None = None,
        to_err: bool = False,
    ) -> None:
        if self.mode == MODE_JSON:
            if event:
                # The line's text is the record's message unless the caller gives a message field itself.
                self._emit(event, **{"message": text, **fields})
            return
        if self.mode == MODE_LIVE:
            self._submit(_Entry(styled=(text, style or ""), to_err=to_err))
        else:
            self._plain(text, to_err=to_err)

    def _plain(self, text: str, to_err: bool = False) -> None:
        self._submit(_Entry(text=text, to_err=to_err))

    def _json(self, event: str, **fields: Any) -> str:
        record = {"event": event, "time": datetime.now(UTC).isoformat(timespec="milliseconds")}
        record.update({key: value for key, value in fields.items() if key != "event"})
        return json.dumps(record, ensure_ascii=False, default=str)

    def _emit(self, event: str, **fields: Any) -> None:
        self._submit(_Entry(text=self._json(event, **fields)))

    # -- the queue and the renderer thread --------------------------------------------------------------
    def _begin_streaming(self) -> None:
        """From the session's first event on, callers only enqueue and the renderer thread writes."""
        if self._streaming or self._stopped:
            return
        with self._queue_changed:
            if self._streaming or self._stopping:
                return
            self._streaming = True
            self._renderer = threading.Thread(target=self._render_loop, name="plldb-console", daemon=True)
            self._renderer.start()
        atexit.register(self.stop)  # whatever ends the process, what was queued is written

    def _status_changed(self) -> None:
        if not self._live_wanted:
            return
        with self._queue_changed:
            self._footer_dirty = True
            self._queue_changed.notify_all()

    def _submit(self, entry: _Entry) -> None:
        with self._queue_changed:
            if self._streaming:
                if entry.output_size:
                    if self._backlog + entry.output_size > self._backlog_limit:
                        self._dropped += 1
                        return
                    if self._dropped:
                        self._queue.append(self._dropped_entry(self._dropped))
                        self._dropped = 0
                    self._backlog += entry.output_size
                self._queue.append(entry)
                self._queue_changed.notify_all()
                return
        # Before the session and after stop(): written at once, in the caller's order.
        with self._write_lock:
            self._write_entries([entry])

    def _dropped_entry(self, count: int) -> _Entry:
        text = (
            f"plldb: {count} line(s) of handler output were not shown: the terminal did not keep up "
            f"(more than {_amount(self._backlog_limit)} were waiting)."
        )
        if self.mode == MODE_JSON:
            return _Entry(text=self._json("output_dropped", lines=count, message=text))
        if self.mode == MODE_LIVE:
            return _Entry(styled=(text, "yellow"))
        return _Entry(text=text)

    def _note_dropped_output(self) -> None:
        with self._queue_changed:
            count, self._dropped = self._dropped, 0
        if count:
            with self._write_lock:
                self._write_entries([self._dropped_entry(count)])

    # Kept whole: the order in which it takes the console's and rich's locks is checked here, in one place.
    def _render_loop(self) -> None:  # noqa: PLR0912, PLR0915
        last_footer = 0.0
        try:
            while True:
                with self._queue_changed:
                    while not (self._queue or self._stopping):
                        if self._footer_dirty and self._live_wanted:
                            wait = last_footer + FOOTER_REFRESH_SECONDS - time.monotonic()
                            if wait <= 0:
                                break
                            self._queue_changed.wait(wait)
                        else:
                            self._busy = False
                            self._queue_changed.notify_all()
                            self._queue_changed.wait()
                    self._busy = True
                    batch = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH_ENTRIES))]
                    self._backlog -= sum(entry.output_size for entry in batch)
                    finishing = self._stopping and not self._queue
                    start_live = self._live_wanted and self._live is None
                    redraw = self._footer_dirty
                    self._footer_dirty = False
                    if finishing:
                        # Callers write for themselves from now on, after what this thread still writes.
                        self._write_lock.acquire()
                        self._streaming = False
                if not finishing:
                    self._write_lock.acquire()
                try:
                    with _output_gone_is_ignored():
                        if start_live:
                            self._start_live_view()
                    self._write_entries(batch)
                    with _output_gone_is_ignored():
                        if self._live is not None and (redraw or finishing):
                            self._live.update(self._render(), refresh=True)
                            last_footer = time.monotonic()
                    if finishing:
                        with _output_gone_is_ignored():
                            self._end_live_view()
                        return
                finally:
                    self._write_lock.release()
        finally:
            with self._queue_changed:
                self._busy = False
                if self._streaming:  # this thread failed: callers write for themselves
                    self._streaming = False
                    leftover = list(self._queue)
                    self._queue.clear()
                else:
                    leftover = []
                self._queue_changed.notify_all()
            if leftover:
                with self._write_lock:
                    self._write_entries(leftover)

    def _start_live_view(self) -> None:
        self._guard = _TerminalGuard(self._out)
        self._live = Live(
            self._render(),
            console=self._rich,
            auto_refresh=False,  # this thread redraws it; rich runs no thread of its own
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start(refresh=True)

    def _end_live_view(self) -> None:
        live, self._live = self._live, None
        stopped = False
        try:
            if live is not None:
                live.stop()  # the final status view, then the cursor shown
            stopped = True
        finally:
            if self._guard is not None:
                self._guard.restore(show_cursor=not stopped)

    def _write_entries(self, entries: list[_Entry]) -> None:
        """Write entries in order (the caller holds the write lock), each run of one kind in one write."""
        for to_err, kind, group in _runs(entries):
            if kind == "text":
                stream = self._err if to_err else self._out
                self._write_text(stream, "".join(f"{entry.text}\n" for entry in group))
            elif to_err and self._live is None and not self._err_is_terminal:
                plain = "".join(f"{entry.plain()}\n" for entry in group)
                self._write_text(self._err, plain)
            elif kind == "output":
                target = self._rich_err if to_err and self._live is None else self._rich
                self._print_rich(target, [_OutputLines([entry.output for entry in group if entry.output])])
            else:
                target = self._rich_err if to_err and self._live is None else self._rich
                self._print_rich(target, [entry.renderable() for entry in group])

    @staticmethod
    def _write_text(stream: TextIO, text: str) -> None:
        with _output_gone_is_ignored():
            stream.write(text)
            stream.flush()

    @staticmethod
    def _print_rich(target: RichConsole, renderables: list[Any]) -> None:
        texts = [r for r in renderables if isinstance(r, Text)]
        with _output_gone_is_ignored():
            if len(texts) == len(renderables):
                target.print(Text("\n").join(texts))
            else:
                for renderable in renderables:
                    target.print(renderable, end="" if isinstance(renderable, _OutputLines) else "\n")


@contextlib.contextmanager
def _output_gone_is_ignored() -> Iterator[None]:
    """The terminal or pipe went away (closed, hung up): there is nothing left to show it on."""
    try:
        yield
    except (OSError, ValueError):
        pass


def _amount(chars: int) -> str:
    mebi = 1024 * 1024
    return f"{chars // mebi} MiB" if chars % mebi == 0 else f"{chars} characters"


def _runs(entries: list[_Entry]) -> Iterator[tuple[bool, str, list[_Entry]]]:
    """Consecutive entries of the same destination and kind, in order."""
    group: list[_Entry] = []
    for entry in entries:
        if group and (group[0].to_err != entry.to_err or group[0].kind != entry.kind):
            yield group[0].to_err, group[0].kind, group
            group = []
        group.append(entry)
    if group:
        yield group[0].to_err, group[0].kind, group
