"""Small helpers that every piece of plldb running inside Lambda shares: the layer and the helper stack.

One copy of each, so they cannot drift: how a secret is shortened for a log line, how an AWS error is
read, and the JSON log line format. Standard library only, duck-typed on botocore's ClientError so it
imports nothing beyond the standard library (Python 3.10 to 3.13).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

CONDITION_FAILED = "ConditionalCheckFailedException"
ACCESS_DENIED_CODES = ("AccessDenied", "AccessDeniedException")


def redact(secret: str | None) -> str:
    """A secret (a session id, a key) named in a log line by an 8-character prefix only."""
    if not secret:
        return "-"
    return str(secret)[:8] + "..."


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "")
    return ""


def error_text(exc: BaseException) -> str:
    """'Code: message' of an AWS error, or the exception's own text."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        return "{}: {}".format(error.get("Code", "Error"), error.get("Message", str(exc)))
    return str(exc) or type(exc).__name__


def is_condition_failure(exc: BaseException) -> bool:
    return error_code(exc) == CONDITION_FAILED


def is_access_denied(exc: BaseException) -> bool:
    return error_code(exc) in ACCESS_DENIED_CODES


class JsonFormatter(logging.Formatter):
    """One JSON object per line, so CloudWatch Logs Insights can filter on any field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the time (Lambda's log stream, or a test's capture)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def json_logger(name: str, level_name: str = "INFO") -> logging.Logger:
    """A logger writing JSON lines to stdout at ``level_name``; configuring it twice changes nothing."""
    logger = logging.getLogger(name)
    logger.setLevel(getattr(logging, level_name.upper(), logging.INFO))
    if not any(getattr(handler, "_plldb_json", False) for handler in logger.handlers):
        handler = StdoutHandler()
        handler.setFormatter(JsonFormatter())
        handler._plldb_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
    return logger
