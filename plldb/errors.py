"""Errors a user can act on: one line that says what is wrong and how to fix it."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """What plldb's exit codes mean, one place for all commands."""

    SUCCESS = 0
    ERROR = 1  # a failure the message explains (bad input, AWS refused, a session that ended badly)
    USAGE = 2  # the command line itself was wrong (click's usage errors)
    INTERRUPTED = 130  # Ctrl-C twice: left at once, like a shell's 128 + SIGINT


class PlldbError(Exception):
    """A failure caused by input or environment, shown to the user as one line without a traceback."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        return f"{self.message} {self.fix}".strip() if self.fix else self.message
