"""The benchmark's subprocesses (plldb attach, the driver, the responders): JSON lines out, timed on arrival."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STDERR_KEPT = 200


class ProcessFailed(RuntimeError):
    """The subprocess exited or stayed silent before saying what the benchmark waited for."""


class JsonLinesProcess:
    """A command whose stdout is JSON objects, one a line; each is kept with its arrival time."""

    def __init__(
        self,
        argv: list[str],
        environment: dict[str, str],
        cwd: Path | None = None,
        name: str = "",
        merge_stderr: bool = False,
    ) -> None:
        self.argv = argv
        self.merge_stderr = merge_stderr  # stderr lines become text events (a command that logs, not JSON)
        self.environment = environment
        self.cwd = cwd
        self.name = name or " ".join(argv[:4])
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers: list[threading.Thread] = []
        self._stdin_lock = threading.Lock()
        self.process: subprocess.Popen[str] | None = None
        self.started = 0.0

    @classmethod
    def python_module(
        cls, module: str, arguments: list[str], environment: dict[str, str], cwd: Path | None = None
    ) -> JsonLinesProcess:
        return cls([sys.executable, "-m", module, *arguments], environment, cwd, name=module)

    def start(self) -> float:
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if self.merge_stderr else subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._readers = [threading.Thread(target=self._read_events, daemon=True)]
        if not self.merge_stderr:
            self._readers.append(threading.Thread(target=self._read_stderr, daemon=True))
        for reader in self._readers:
            reader.start()
        return self.started

    def _read_events(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            arrived = time.monotonic()
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "text", "text": line.rstrip("\n")}
                if self.merge_stderr:
                    self.stderr = [*self.stderr[-(STDERR_KEPT - 1) :], line.rstrip("\n")]
            with self._changed:
                self.events.append((arrived, event if isinstance(event, dict) else {"value": event}))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr = [*self.stderr[-(STDERR_KEPT - 1) :], line.rstrip("\n")]

    def send(self, line: str) -> None:
        """One line to the command's stdin (ignored once it has exited)."""
        assert self.process is not None and self.process.stdin is not None
        with self._stdin_lock:
            try:
                self.process.stdin.write(line + "\n")
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    def wait_for(
        self, wanted: str | Callable[[dict[str, Any]], bool], timeout: float, after: int = 0
    ) -> tuple[float, dict[str, Any]]:
        """The first event (from index ``after``) named ``wanted`` or matching it, with its arrival time."""
        assert self.process is not None

        def matches(event: dict[str, Any]) -> bool:
            return event.get("event") == wanted if isinstance(wanted, str) else wanted(event)

        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for arrived, event in self.events[after:]:
                    if matches(event):
                        return arrived, event
                if not self._readers[0].is_alive():
                    raise ProcessFailed(
                        f"{self.name} exited ({self.process.poll()}) before {wanted!r}: {self.stderr[-15:]}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProcessFailed(
                        f"no {wanted!r} from {self.name} within {timeout:g} s: {self.stderr[-15:]}"
                    )
                self._changed.wait(remaining)

    def last_event(self) -> dict[str, Any]:
        """The last event once the command's output has ended (a driver's result)."""
        assert self.process is not None
        self._readers[0].join()
        if not self.events:
            raise ProcessFailed(
                f"{self.name} printed nothing (exit {self.process.wait()}): {self.stderr[-15:]}"
            )
        return self.events[-1][1]

    def interrupt(self, timeout: float) -> tuple[float, int]:
        """Ctrl-C; returns once the command has exited: the time of the signal and the exit code."""
        assert self.process is not None
        sent = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(10)
        return sent, code

    def stop(self) -> None:
        """End it if it still runs (the benchmark's own processes only)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> JsonLinesProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
