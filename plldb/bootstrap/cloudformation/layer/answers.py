"""What the layer gives back to the Runtime API, and the errors it reports when plldb, not the function,
decided the outcome (each names its cause and the command that fixes it)."""

from __future__ import annotations

from typing import Any

from plldb import lambda_python, protocol

# Error types the invoker sees when plldb, not the function, decided the outcome.
ERROR_NOT_ATTACHED = "PlldbNotAttached"
ERROR_TIMEOUT = "PlldbDebuggerTimeout"
ERROR_CONFIGURATION = "PlldbInvalidConfiguration"
ERROR_LAYER = "PlldbLayerError"
ERROR_REFUSED = "PlldbRefused"
ERROR_CORRUPT_RESPONSE = "PlldbCorruptResponse"


class Answer:
    """What goes back to the Runtime API: a result body, or an error document."""

    __slots__ = ("body", "content_type", "error")

    def __init__(
        self, body: bytes | None, content_type: str = "application/json", error: dict[str, Any] | None = None
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.error = error

    @classmethod
    def result(cls, body: bytes, content_type: str = "application/json") -> Answer:
        return cls(body, content_type)

    @classmethod
    def failure(cls, error: dict[str, Any]) -> Answer:
        return cls(None, error=error)


# What _give_up answers when the debugger's ack landed just before the ack timeout closed the item.
ACKNOWLEDGED_MEANWHILE = Answer(None)


def fix_hint() -> str:
    return (
        "Run `plldb attach` in the stack's project to debug it, or `plldb detach --stack-name STACK` to "
        "remove plldb's instrumentation from the stack's functions."
    )


def not_attached_error(reason: str, request_id: str) -> dict[str, Any]:
    message = f"plldb is not attached to this function's stack: {reason}. {fix_hint()}"
    return lambda_python.make_error(message, ERROR_NOT_ATTACHED, [], request_id)


def timeout_error(timeout_seconds: int, request_id: str) -> dict[str, Any]:
    message = (
        f"The debugger did not answer in time: the function's timeout (about {timeout_seconds} s) was about "
        f"to end, so plldb stopped waiting {protocol.DEADLINE_MARGIN_MS} ms before it. To stay longer at a "
        "breakpoint, attach with a longer timeout: `plldb attach --function-timeout 900`."
    )
    return lambda_python.make_error(message, ERROR_TIMEOUT, [], request_id)


def layer_error(text: str, request_id: str) -> dict[str, Any]:
    return lambda_python.make_error("plldb's debugger layer failed: " + text, ERROR_LAYER, [], request_id)


def refused_error(text: str, request_id: str) -> dict[str, Any]:
    message = f"plldb's helper stack refused this invocation: {text}. {fix_hint()}"
    return lambda_python.make_error(message, ERROR_REFUSED, [], request_id)
