"""Payloads in and out of the session: events and results inline, or as S3 objects when too large.

An event too large for a WebSocket message arrives as a presigned URL with its SHA-256; a result too
large for one goes up through a presigned PUT the helper stack hands out for that delivery alone.
Errors always travel inline, cut to fit.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from typing import Any

from plldb import protocol
from plldb.local.invocation import Outcome

ERROR_MESSAGE_BYTE_LIMIT = 16 * 1024  # error sizes, as encoded JSON: together well inside one message
ERROR_FIELD_BYTE_LIMIT = 1024
STACK_LINE_BYTE_LIMIT = 2048
STACK_TRACE_BYTE_LIMIT = 48 * 1024
HTTP_TIMEOUT_SECONDS = 60


class EventUnavailableError(Exception):
    """The event of an invocation could not be read (a missing object or a wrong digest)."""


def inline_event(invoke: Mapping[str, Any]) -> str | None:
    """The event's JSON text when it came in the message, else None (``download_event`` gets it)."""
    event = invoke.get("event")
    return event if isinstance(event, str) else None


def download_event(invoke: Mapping[str, Any]) -> str:
    """The event's JSON text downloaded from its presigned URL and checked against its digest."""
    url = invoke.get("eventUrl")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise EventUnavailableError("the invoke message has neither an event nor an event URL")
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310 - http(s) only
            data = response.read(protocol.MAX_PAYLOAD_BYTES + 1)
    except OSError as exc:
        raise EventUnavailableError(f"the event object could not be downloaded ({exc})")
    if protocol.sha256_hex(data) != invoke.get("eventSha256"):
        raise EventUnavailableError("the event object does not match its SHA-256 digest")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise EventUnavailableError("the event is not UTF-8 text")


def upload(url: str, data: bytes) -> None:
    """PUT a result to the presigned URL the helper stack handed out for its delivery."""
    if not url.startswith(("https://", "http://")):
        raise OSError("the upload URL is not http(s)")
    request = urllib.request.Request(url, data=data, method="PUT")  # noqa: S310 - http(s) only
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310
        if response.status >= 300:
            raise OSError(f"the upload answered HTTP {response.status}")


def response_text(outcome: Outcome) -> str:
    """The result's JSON text as it goes to Lambda (UTF-8 clean)."""
    return clean_text(outcome.payload) if outcome.payload is not None else "null"


def inline_response(caller: str, delivery_id: str, outcome: Outcome) -> protocol.ResponseMessage | None:
    """The `response` message, or None when the result is too large and must be uploaded first."""
    if not outcome.ok:
        return protocol.failure_message(caller, delivery_id, fit_error(outcome.error or {}))
    message = protocol.result_message(caller, delivery_id, response_text(outcome))
    if protocol.message_size(message) <= protocol.INLINE_MESSAGE_LIMIT:
        return message
    return None


def response_too_large(size: int) -> Outcome:
    """The error Lambda itself returns when a function's result exceeds the synchronous limit."""
    return Outcome(
        status_code=protocol.RESPONSE_CODE_ERROR,
        error={
            "errorMessage": f"Response payload size ({size} bytes) exceeded maximum allowed payload size "
            f"({protocol.MAX_PAYLOAD_BYTES} bytes).",
            "errorType": "Function.ResponseSizeTooLarge",
            "stackTrace": [],
        },
    )


def fit_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """A Lambda error object that fits one inline message (errors never travel as objects).

    Sizes are measured as encoded JSON, so escapes cannot push the message over the quota.
    """
    fitted: dict[str, Any] = {
        "errorMessage": fit_json_text(str(error.get("errorMessage", "")), ERROR_MESSAGE_BYTE_LIMIT),
        "errorType": fit_json_text(str(error.get("errorType") or "Error"), ERROR_FIELD_BYTE_LIMIT),
    }
    for key, value in error.items():  # e.g. requestId, as the Lambda runtime adds it
        extra = key not in fitted and key != "stackTrace" and isinstance(key, str) and isinstance(value, str)
        if extra and json_size(key) + json_size(value) <= ERROR_FIELD_BYTE_LIMIT:
            fitted[key] = clean_text(value)
    trace = error.get("stackTrace")
    lines = [str(line) for line in trace] if isinstance(trace, list) else []
    budget = STACK_TRACE_BYTE_LIMIT
    kept: list[str] = []
    for line in reversed(lines):  # the innermost frames are the useful ones
        line = fit_json_text(line, STACK_LINE_BYTE_LIMIT)
        budget -= json_size(line) + 1
        if budget < 0:
            kept.append("... (outer frames truncated)")
            break
        kept.append(line)
    fitted["stackTrace"] = list(reversed(kept))
    return fitted


def clean_text(text: str) -> str:
    """``text`` with anything UTF-8 cannot carry (lone surrogates) replaced."""
    return text.encode("utf-8", "replace").decode("utf-8")


def json_size(text: str) -> int:
    """Bytes of ``text`` as a JSON string in a message (quotes and escapes included)."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "replace"))


def fit_json_text(text: str, limit: int) -> str:
    """``text`` cut (at a character, marked) so that it takes at most ``limit`` bytes as a JSON string."""
    text = clean_text(text)
    if json_size(text) <= limit:
        return text
    marker = " ... (truncated)"
    low, high = 0, len(text)
    while low < high:  # the longest prefix that fits with the marker
        middle = (low + high + 1) // 2
        if json_size(text[:middle] + marker) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low] + marker


def split_fragments(text: str, limit: int = protocol.WEBSOCKET_FRAME_LIMIT) -> list[str]:
    """``text`` cut into fragments of at most ``limit`` UTF-8 bytes, never inside a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return [text]
    fragments = []
    start = 0
    while start < len(encoded):
        end = min(start + limit, len(encoded))
        while end < len(encoded) and (encoded[end] & 0xC0) == 0x80:  # continuation byte
            end -= 1
        fragments.append(encoded[start:end].decode("utf-8"))
        start = end
    return fragments
