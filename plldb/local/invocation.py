"""The one invocation model of the developer's side: what runs (an ``Invocation``) and what it gave
(an ``Outcome``).

The session builds an Invocation from an ``invoke`` message, the console shows it, the worker pool
runs it, `plldb invoke` and `plldb replay` build one of their own, recordings store it; the Outcome
goes back the same way. One pair, so no layer copies one shape into another field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plldb import protocol


@dataclass(frozen=True)
class Invocation:
    """One invocation to run here, as the layer reported it (or as `plldb invoke`/`replay` make one)."""

    request_id: str
    event_json: str  # the event as JSON text, exactly as Lambda received it
    context: Mapping[str, Any]  # the protocol "context" object (deadline, memory, identity...)
    environment: Mapping[str, str]  # the deployed function's variables (no credentials)
    credentials: Mapping[str, str] | None  # {"accessKeyId", "secretAccessKey", "sessionToken"} or None
    function_name: str = ""  # the deployed function's name
    handler: str = ""
    caller: str = ""  # with delivery_id: the invocation item's key in the helper stack
    delivery_id: str = ""
    version: str = "$LATEST"
    # Names of the variables the function itself configures (its deployed Environment.Variables);
    # None: those its template declares.
    configured_variables: frozenset[str] | None = None


@dataclass(frozen=True)
class Outcome:
    """What the run produced: a 200 with the result's JSON text, or a 500 with a Lambda error."""

    status_code: int
    payload: str | None = None
    error: Mapping[str, Any] | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status_code == protocol.RESPONSE_CODE_OK


def local_failure(error_type: str, message: str, stack_trace: list[str] | None = None) -> Outcome:
    """A Lambda-shaped error for failures on this side (the caller sees why, not a timeout)."""
    trace = [line.rstrip("\n") for line in stack_trace or []]
    return Outcome(
        status_code=protocol.RESPONSE_CODE_ERROR,
        error={"errorMessage": message, "errorType": error_type, "stackTrace": trace},
    )
