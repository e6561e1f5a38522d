"""Errors a user can act on: one line that says what is wrong and how to fix it."""

from __future__ import annotations


class PlldbError(Exception):
    """A failure caused by input or environment, shown to the user as one line without a traceback."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        return f"{self.message} {self.fix}".strip() if self.fix else self.message
