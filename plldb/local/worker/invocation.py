"""What the pool runs and what it gives back: an invocation as the layer reported it, and its result.

Their own module because every other part of the worker package reads them (the handler's variables
come from an invocation, a process answers with a result) and the commands build them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Invocation:
    """One invocation to run, as the layer reported it."""

    request_id: str
    event_json: str  # the event as JSON text, exactly as Lambda received it
    context: dict[str, Any]  # the protocol "context" object
    environment: dict[str, str]  # the deployed function's variables (no credentials)
    credentials: dict[str, str] | None  # {"accessKeyId", "secretAccessKey", "sessionToken"} or None
    # Names of the variables the function itself configures (its deployed Environment.Variables);
    # None: those its template declares.
    configured_variables: frozenset[str] | None = None


@dataclass
class InvocationResult:
    status_code: int  # protocol.RESPONSE_CODE_OK or RESPONSE_CODE_ERROR
    payload: str | None  # the result's JSON text when 200
    error: dict[str, Any] | None  # {"errorMessage", "errorType", "stackTrace", ...} when 500
    duration_ms: float
