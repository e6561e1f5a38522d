"""What `plldb attach` shows: a live status view on a terminal, plain lines otherwise, or JSON events.

One object receives everything that happens (session events, progress, handler output) from the
event loop and from worker threads, and renders it in the chosen mode. NO_COLOR and non-terminal
output are respected, so piping the output into a file or CI log gives readable plain lines.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console as RichConsole
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from plldb.local.session import IncomingInvocation, InvocationOutcome, SessionObserver, short_id

MODE_LIVE = "live"
MODE_PLAIN = "plain"
MODE_JSON = "json"
RECENT_INVOCATIONS = 12


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
    connection: str = "connecting"
    reconnects: int = 0
    functions: list[FunctionRow] = field(default_factory=list)
    instrumented: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    recent: deque[_InvocationRow] = field(default_factory=lambda: deque(maxlen=RECENT_INVOCATIONS))


def function_name(entry: Any) -> str:
    """A function named in a progress message: a plain name, or an object with a name field."""
    if isinstance(entry, Mapping):
        for key in ("function", "functionName", "name", "FunctionName"):
            if isinstance(entry.get(key), str):
                return str(entry[key])
    return str(entry)


def _yes_no(value: bool) -> Text:
    return Text("yes", style="green") if value else Text("no", style="yellow")


def choose_mode(json_output: bool, stream: TextIO | None = None) -> str:
    """JSON when asked; the live view only on a real terminal (not TERM=dumb); plain lines otherwise."""
    if json_output:
        return MODE_JSON
    stream = stream or sys.stdout
    is_terminal = hasattr(stream, "isatty") and stream.isatty()
    if is_terminal and os.environ.get("TERM", "") != "dumb":
        return MODE_LIVE
    return MODE_PLAIN


class Console(SessionObserver):
    """Thread-safe output for one attach run. ``quiet`` keeps only handler output, warnings and errors."""

    def __init__(
        self, mode: str, quiet: bool = False, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.mode = mode
        self.quiet = quiet
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._lock = threading.RLock()
        self._status = _Status()
        self._labels: dict[str, str] = {}
        self._rows: dict[str, _InvocationRow] = {}
        self._rich = RichConsole(file=self._out, highlight=False, soft_wrap=True)
        self._rich_err = RichConsole(file=self._err, highlight=False, soft_wrap=True)
        self._live: Live | None = None

    # -- lifecycle ------------------------------------------------------------------------------------
    def start_live(self) -> None:
        """Show the status view (live mode, not quiet); lines printed meanwhile appear above it."""
        with self._lock:
            if self.mode != MODE_LIVE or self.quiet or self._live is not None:
                return
            self._live = Live(
                self._render(),
                console=self._rich,
                refresh_per_second=4,
                redirect_stdout=False,
                redirect_stderr=False,
                get_renderable=self._render,
            )
            self._live.start()

    def stop(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None

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
        self.warning(text)

    # -- the stack and its functions ------------------------------------------------------------------
    def set_stack(self, stack_name: str, functions: Sequence[FunctionRow]) -> None:
        """The deployed functions the status view lists (shown once they are instrumented)."""
        with self._lock:
            self._status.stack_name = stack_name
            self._status.functions = list(functions)
            self._labels = {row.physical_name: row.label for row in functions}

    def show_stack(self) -> None:
        """Which deployed function runs which local source, and which have none."""
        with self._lock:
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
            table = Table(title=f"Functions of stack {stack_name}", title_justify="left")
            table.add_column("Logical id")
            table.add_column("Deployed function")
            table.add_column("Instrumented")
            table.add_column("Local source")
            for row in functions:
                source = (
                    Text(row.source) if row.source else Text(row.note or "no local source", style="yellow")
                )
                table.add_row(
                    row.label, row.physical_name, _yes_no(row.physical_name in instrumented), source
                )
            self._print_rich(table)
            return
        self._plain(f"Functions of stack {stack_name}:")
        for row in functions:
            target = row.source or f"no local source ({row.note or 'not in the template'})"
            mark = "" if row.physical_name in instrumented else " [not instrumented]"
            self._plain(f"  {row.label} ({row.physical_name}){mark} -> {target}")

    def label(self, function_name: str) -> str:
        return self._labels.get(function_name, function_name)

    # -- session events (SessionObserver) -------------------------------------------------------------
    def on_connected(self) -> None:
        self._set_connection("connected")
        self.info("Connected; instrumenting the functions...", event="connected")

    def on_connection_lost(self, reason: str) -> None:
        self._set_connection("reconnecting")
        self._line(f"Connection lost ({reason}); reconnecting...", "connection_lost", {"reason": reason})

    def on_reconnect_failed(self, attempt: int, reason: str) -> None:
        self._line(
            f"Reconnect attempt {attempt} failed: {reason}",
            "reconnect_failed",
            {"attempt": attempt, "reason": reason},
            style="yellow",
            to_err=True,
        )

    def on_reconnected(self, rotated: bool) -> None:
        with self._lock:
            self._status.reconnects += 1
        self._set_connection("connected")
        text = "Renewed the connection before its time limit." if rotated else "Reconnected."
        if rotated:
            self.info(text, event="reconnected", rotated=True)
        else:
            self._line(text, "reconnected", {"rotated": False}, style="green")

    def on_progress(self, message: Mapping[str, Any]) -> None:
        phase, status = str(message.get("phase")), str(message.get("status"))
        function = message.get("function")
        text = str(message.get("message", ""))
        if self.mode == MODE_JSON:
            self._emit("progress", phase=phase, status=status, function=function, message=text)
            return
        if status == "failed":
            subject = f"{self.label(str(function))}: " if function else ""
            self.warning(f"{phase}: {subject}{text or 'failed'}")
            return
        if self.quiet or status == "done":
            return
        if function:
            with self._lock:
                if phase == "instrument" and status == "ok":
                    self._status.instrumented.add(str(function))
                if phase == "restore" and status == "ok":
                    self._status.instrumented.discard(str(function))
            verb = {"instrument": "instrumented", "restore": "restored"}.get(phase, phase)
            self._line(f"  {verb if status == 'ok' else status}: {self.label(str(function))}", "", {})
        elif text:
            self._line(text, "", {})

    def on_instrumented(self, message: Mapping[str, Any]) -> None:
        names = [
            function_name(entry)
            for entry in message.get("functions") or []
            if not isinstance(entry, Mapping) or entry.get("status", "ok") == "ok"
        ]
        with self._lock:
            self._status.instrumented.update(names)
        self.show_stack()
        self.info(
            f"Ready: {len(names)} function(s) instrumented. Invoke them as usual; press Ctrl-C to detach.",
            event="ready",
            functions=names,
        )
        self.start_live()

    def on_invocation_started(self, invocation: IncomingInvocation) -> None:
        label = self.label(invocation.function_name)
        with self._lock:
            row = _InvocationRow(invocation.request_id, label, time.monotonic())
            self._rows[invocation.request_id] = row
            self._status.recent.append(row)
            self._status.counts[invocation.function_name] = (
                self._status.counts.get(invocation.function_name, 0) + 1
            )
        if self.mode == MODE_JSON:
            self._emit(
                "invocation_started", function=invocation.function_name, requestId=invocation.request_id
            )
        elif self.mode == MODE_PLAIN and not self.quiet:
            self._plain(f"-> {label} {short_id(invocation.request_id)}")

    def on_invocation_answered(self, invocation: IncomingInvocation, outcome: InvocationOutcome) -> None:
        label = self.label(invocation.function_name)
        detail = ""
        if not outcome.ok and outcome.error:
            detail = f"{outcome.error.get('errorType', 'Error')}: {outcome.error.get('errorMessage', '')}"
        with self._lock:
            row = self._rows.get(invocation.request_id)
            if row is None:
                row = _InvocationRow(invocation.request_id, label, time.monotonic())
                self._rows[invocation.request_id] = row
                self._status.recent.append(row)
            row.state = "ok" if outcome.ok else "error"
            row.duration_ms = outcome.duration_ms
            row.detail = detail
        if self.mode == MODE_JSON:
            self._emit(
                "invocation_finished",
                function=invocation.function_name,
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
            self._print_rich(Text(line, style="red"))

    def on_invocation_stored(self, request_id: str) -> None:
        if self.mode == MODE_JSON:
            self._emit("invocation_delivered", requestId=request_id)

    def on_invocation_refused(self, request_id: str, code: str, message: str) -> None:
        with self._lock:
            row = self._rows.get(request_id)
            if row is not None:
                row.state = "refused"
                row.detail = message
        self._line(
            f"The answer to {short_id(request_id)} was not delivered: {message}",
            "invocation_refused",
            {"requestId": request_id, "code": code, "message": message},
            style="yellow",
            to_err=True,
        )

    def on_duplicate_invoke(self, request_id: str) -> None:
        if self.mode == MODE_JSON:
            self._emit("duplicate_invoke", requestId=request_id)

    def on_detaching(self) -> None:
        self._set_connection("detaching")
        self._line("Detaching: restoring the functions...", "detaching", {})

    # -- handler output ----------------------------------------------------------------------------------
    def handler_output(self, function_name: str, request_id: str | None, stream: str, line: str) -> None:
        """One line the handler printed or logged, prefixed with its function and short request id."""
        if self.mode == MODE_JSON:
            self._emit("output", function=function_name, requestId=request_id, stream=stream, line=line)
            return
        prefix = f"[{self.label(function_name)} {short_id(request_id) if request_id else '-'}]"
        if self.mode == MODE_LIVE:
            text = Text(prefix + " ", style="cyan" if stream == "stdout" else "magenta")
            text.append(line)
            self._print_rich(text)
        else:
            self._plain(f"{prefix} {line}", to_err=False)

    # -- rendering ------------------------------------------------------------------------------------
    def _set_connection(self, state: str) -> None:
        with self._lock:
            self._status.connection = state

    def _render(self) -> RenderableType:
        with self._lock:
            status = self._status
            header = Text()
            header.append(f"plldb: stack {status.stack_name}  ", style="bold")
            header.append(
                f"[{status.connection}]", style="green" if status.connection == "connected" else "yellow"
            )
            if status.reconnects:
                header.append(f"  reconnects: {status.reconnects}")
            header.append("  Ctrl-C to detach", style="dim")
            functions = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
            functions.add_column("Function")
            functions.add_column("Instrumented")
            functions.add_column("Invocations", justify="right")
            for row in status.functions:
                functions.add_row(
                    row.label,
                    _yes_no(row.physical_name in status.instrumented),
                    str(status.counts.get(row.physical_name, 0)),
                )
            recent = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
            recent.add_column("Function")
            recent.add_column("Request")
            recent.add_column("Duration", justify="right")
            recent.add_column("Result")
            for invocation in status.recent:
                duration = f"{invocation.duration_ms:.0f} ms" if invocation.duration_ms is not None else ""
                style = {"ok": "green", "error": "red", "refused": "yellow"}.get(invocation.state, "")
                result = Text(invocation.state, style=style)
                if invocation.detail:
                    result.append(f" {invocation.detail[:80]}")
                recent.add_row(invocation.label, short_id(invocation.request_id), duration, result)
            parts: list[RenderableType] = [header, functions]
            if status.recent:
                parts.append(recent)
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
            self._print_rich(Text(text, style=style or ""), to_err=to_err)
        else:
            self._plain(text, to_err=to_err)

    def _print_rich(self, renderable: RenderableType, to_err: bool = False) -> None:
        with self._lock:
            if to_err and self._live is None:
                self._rich_err.print(renderable)
            else:
                self._rich.print(renderable)

    def _plain(self, text: str, to_err: bool = False) -> None:
        stream = self._err if to_err else self._out
        with self._lock:
            stream.write(text + "\n")
            stream.flush()

    def _emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": datetime.now(UTC).isoformat(timespec="milliseconds")}
        record.update({key: value for key, value in fields.items() if key != "event"})
        with self._lock:
            self._out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            self._out.flush()
