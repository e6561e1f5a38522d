"""The values a debug session exchanges with the command that drives it (attach, the console, workers)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from plldb import protocol
from plldb.local.invocation import Invocation, Outcome

MAX_CONCURRENT_INVOCATIONS = 64


InvocationRunner = Callable[[Invocation], Outcome]


@dataclass(frozen=True)
class SessionOutcome:
    """How the session ended: the exit code for the command and one line to show, if any."""

    exit_code: int
    message: str | None = None


@dataclass(frozen=True)
class Opened:
    """What the helper stack bound this session to."""

    session_id: str
    stack_id: str
    stack_name: str
    owner: str


@dataclass(frozen=True)
class ConnectionSettings:
    """Timing of the connection; the defaults fit API Gateway's quotas, tests shorten them."""

    keepalive_seconds: float = 300.0  # an application ping inside API Gateway's 10-minute idle timeout
    pong_timeout_seconds: float = 30.0
    max_connection_age_seconds: float = 2 * 3600 - 600  # rotate well before the 2-hour limit
    drain_seconds: float = protocol.SESSION_CHECK_SECONDS + 3.0  # answers still in flight on the old one
    open_timeout_seconds: float = 15.0
    reply_timeout_seconds: float = 60.0  # open, release, close: the helper stack answers within this
    response_confirm_seconds: float = 15.0
    ack_delay_seconds: float = 1.0  # a run that takes longer than this is acknowledged first
    reconnect_delays: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
    reconnect_give_up_seconds: float = 900.0
    max_concurrency: int = MAX_CONCURRENT_INVOCATIONS


class SessionObserver:
    """Receives what happens in a session (the console implements it); every method is optional."""

    def on_connected(self) -> None: ...
    def on_connection_lost(self, reason: str) -> None: ...
    def on_reconnect_failed(self, attempt: int, reason: str) -> None: ...
    def on_reconnected(self, rotated: bool) -> None: ...
    def on_progress(self, message: Mapping[str, Any]) -> None: ...
    def on_instrumented(self, message: Mapping[str, Any]) -> None: ...
    def on_invocation_started(self, invocation: Invocation) -> None: ...
    def on_invocation_answered(self, invocation: Invocation, outcome: Outcome) -> None: ...
    def on_invocation_observed(
        self, invocation: Invocation, outcome: Outcome, observed: Mapping[str, Any]
    ) -> None: ...
    def on_invocation_stored(self, request_id: str) -> None: ...
    def on_invocation_refused(self, request_id: str, code: str, message: str) -> None: ...
    def on_duplicate_invoke(self, request_id: str) -> None: ...
    def on_detaching(self) -> None: ...
    def on_session_ended(self, by: str | None, reason: str) -> None: ...
    def on_warning(self, text: str) -> None: ...


@dataclass
class Lifecycle:
    """What the session asks of the command around it, each run off the event loop (they call AWS).

    ``take_over`` restores the stack's functions with the developer's credentials before another
    session is released; ``instrument`` instruments the selected functions for the opened session;
    ``restore`` puts back what ``instrument`` changed and returns the functions that failed.
    """

    instrument: Callable[[Opened], None]
    restore: Callable[[], list[str]]
    take_over: Callable[[], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def short_id(identifier: str) -> str:
    """The first eight characters: enough to tell requests apart on screen, never a whole secret."""
    return identifier[:8]


def describe(exc: BaseException) -> str:
    """One line for a connection failure, never including the URL (it carries the session id)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).split("?", 1)[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
