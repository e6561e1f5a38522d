"""A program run in a pseudo-terminal, as a developer runs it in theirs.

The program's stdin, stdout and stderr are the terminal side of a pty, which is also its controlling
terminal, so typing Ctrl-C (the byte 0x03) makes the terminal send SIGINT to it exactly as a real
terminal does. A thread reads the other side as it comes (so the program never blocks on a full
terminal unless a test pauses the reading) and feeds a Screen. Tests wait for what the screen shows
(events), never for time to pass; the waits have generous limits only so a broken program fails the
test instead of hanging it.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.terminal.screen import Screen, Watch

WAIT_LIMIT = 120.0  # what a broken program costs before its test fails; never a measure of speed
CTRL_C = b"\x03"

# Becomes the session's controlling terminal (start_new_session made it a session leader without
# one), then runs the real command in the same process.
_TAKE_TERMINAL = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


class Terminal:
    """``python ARGS...`` in a ROWSxCOLUMNS pseudo-terminal."""

    def __init__(
        self,
        arguments: Sequence[str],
        *,
        cwd: Path,
        environment: dict[str, str],
        rows: int = 40,
        columns: int = 120,
    ) -> None:
        self.columns = columns
        self._controller, self._terminal = os.openpty()
        fcntl.ioctl(self._terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        # Ctrl-C is echoed as the control character itself, not as "^C": typed while output flows,
        # "^C" would land in the middle of an escape sequence and garble it, in any terminal.
        settings = termios.tcgetattr(self._terminal)
        settings[3] &= ~termios.ECHOCTL
        termios.tcsetattr(self._terminal, termios.TCSANOW, settings)
        self.settings_before = termios.tcgetattr(self._terminal)
        self.screen = Screen(columns)
        self.raw = bytearray()
        self._fed = 0  # how much of raw the screen has interpreted
        self._changed = threading.Condition()
        self._reading = threading.Event()
        self._reading.set()
        self._closed = False
        environment = {**environment, "TERM": "xterm-256color", "LINES": str(rows), "COLUMNS": str(columns)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _TAKE_TERMINAL, *arguments],
            cwd=cwd,
            env=environment,
            stdin=self._terminal,
            stdout=self._terminal,
            stderr=self._terminal,
            start_new_session=True,
        )
        self._stop_r, self._stop_w = os.pipe()
        self._reader = threading.Thread(target=self._read, name="terminal-reader", daemon=True)
        self._reader.start()

    # -- the terminal's side ------------------------------------------------------------------------
    def _read(self) -> None:
        while True:
            self._reading.wait()
            ready, _, _ = select.select([self._controller, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._controller, 65536)
            except OSError:
                data = b""
            if not data:
                return
            with self._changed:
                self.raw.extend(data)
                self._changed.notify_all()

    def pause_reading(self) -> None:
        """Stop reading, like a terminal whose user pressed Ctrl-S: the program's writes fill it up."""
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def unread_bytes(self) -> int:
        """What the program wrote that the terminal holds unread (while reading is paused)."""
        return int(struct.unpack("i", fcntl.ioctl(self._controller, termios.FIONREAD, b"\0" * 4))[0])

    def unread_input(self) -> int:
        """What was typed into the terminal that no program has read (it would go to the shell next)."""
        return int(struct.unpack("i", fcntl.ioctl(self._terminal, termios.FIONREAD, b"\0" * 4))[0])

    def type(self, data: bytes) -> None:
        os.write(self._controller, data)

    def ctrl_c(self) -> None:
        self.type(CTRL_C)

    def settings(self) -> list[Any]:
        """The terminal's current settings (termios), to compare with ``settings_before``."""
        return termios.tcgetattr(self._terminal)

    # -- waiting for what it shows ------------------------------------------------------------------
    def wait_until(self, what: str, predicate: Callable[[Screen], Any]) -> Any:
        """The first truthy ``predicate(screen)``, re-evaluated whenever the terminal shows more."""
        with self._changed:
            while True:
                self._update_screen()
                found = predicate(self.screen)
                if found:
                    return found
                if self.process.poll() is not None and not self._more_to_read():
                    raise AssertionError(
                        f"the program exited ({self.process.returncode}) before showing {what}; it showed:\n"
                        + "\n".join(self.screen.lines()[-60:])
                    )
                if not self._changed.wait(WAIT_LIMIT if self.process.poll() is None else 0.5):
                    if self.process.poll() is None:
                        raise AssertionError(
                            f"the terminal showed nothing new for {WAIT_LIMIT} s while waiting for {what}; "
                            "it showed:\n" + "\n".join(self.screen.lines()[-60:])
                        )

    def _more_to_read(self) -> bool:
        ready, _, _ = select.select([self._controller], [], [], 0)
        return bool(ready) and self._reading.is_set()

    def wait_for_text(self, text: str) -> None:
        """Until some row shows ``text`` (each wake-up reads only the rows written since the last)."""
        with self._changed:
            watch = Watch(self.screen)
        try:
            self.wait_until(repr(text), lambda screen: any(text in row for row in watch.changed_rows()))
        finally:
            with self._changed:
                watch.close()

    def wait_for_all(self, texts: list[str]) -> None:
        """Until every one of ``texts`` has been shown in some row (reading each row once)."""
        pending = set(texts)
        with self._changed:
            watch = Watch(self.screen)

        def all_shown(screen: Screen) -> bool:
            for row in watch.changed_rows():
                pending.difference_update([text for text in pending if text in row])
            return not pending

        try:
            self.wait_until(f"{len(texts)} texts", all_shown)
        finally:
            with self._changed:
                watch.close()

    def wait_for_exit(self) -> int:
        """The exit status, once everything the program wrote has been read."""
        code = self.process.wait(WAIT_LIMIT)
        self.resume_reading()
        self._drain()
        return code

    def _drain(self) -> None:
        """After the program ended: read what it left in the terminal, then stop the reader."""
        with self._changed:
            while self._more_to_read():
                self._changed.wait(0.5)
        os.write(self._stop_w, b"x")
        self._reader.join(WAIT_LIMIT)
        while True:
            ready, _, _ = select.select([self._controller], [], [], 0)
            if not ready:
                return
            try:
                data = os.read(self._controller, 65536)
            except OSError:
                return
            if not data:
                return
            self.raw.extend(data)
        self._update_screen()

    def _update_screen(self) -> None:
        """The screen catches up with what was read (only when a test looks: parsing while calls run
        would take the interpreter from the local cloud that serves them)."""
        if self._fed < len(self.raw):
            self.screen.feed(bytes(self.raw[self._fed :]))
            self._fed = len(self.raw)

    def lines(self) -> list[str]:
        with self._changed:
            self._update_screen()
            return self.screen.lines()

    def logical_lines(self) -> list[str]:
        """Like ``lines`` with the rows the terminal wrapped joined again into the lines written."""
        with self._changed:
            self._update_screen()
            return self.screen.logical_lines()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT_LIMIT)
        if self._reader.is_alive():
            self.resume_reading()
            os.write(self._stop_w, b"x")
            self._reader.join(WAIT_LIMIT)
        for fd in (self._controller, self._terminal, self._stop_r, self._stop_w):
            os.close(fd)
