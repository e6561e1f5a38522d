"""Log lines in the Python runtime's text and JSON forms, and an invocation error as it logs one."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from plldb.lambda_python.marshalling import to_json

ERROR_LOG_LINE_TERMINATE = "\r"  # keeps a multi-line error in one CloudWatch event
ERROR_LOG_IDENT = "\u00a0"  # leading spaces of traceback lines become no-break spaces
_LOG_FORMAT_TEXT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
_LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
_JSON_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class Unbuffered:
    """A stream that flushes every write, so log lines reach CloudWatch in order, as in awslambdaric."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.stream, attr)

    def write(self, msg: str) -> Any:
        result = self.stream.write(msg)
        self.stream.flush()
        return result

    def writelines(self, msgs: Any) -> None:
        self.stream.writelines(msgs)
        self.stream.flush()


class _RequestIdFilter(logging.Filter):
    def __init__(self, current_request: Callable[[], tuple[str, str | None]]) -> None:
        super().__init__()
        self._current_request = current_request

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id, record.tenant_id = self._current_request()
        return True


class _StdoutHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record))
        except Exception:
            self.handleError(record)


# LogRecord attributes awslambdaric's JSON lines leave out; every other attribute (a logging call's
# ``extra``, for one) becomes a field of its own.
_RESERVED_FIELDS = frozenset(
    {
        "name",
        "msg",
        "args",
        "levelname",
        "levelno",
        "pathname",
        "filename",
        "module",
        "exc_info",
        "exc_text",
        "stack_info",
        "lineno",
        "funcName",
        "created",
        "msecs",
        "relativeCreated",
        "thread",
        "threadName",
        "processName",
        "process",
        "aws_request_id",
        "tenant_id",
        "_frame_type",
    }
)


class _JsonFormatter(logging.Formatter):
    """awslambdaric's JSON log lines (AWS_LAMBDA_LOG_FORMAT=JSON)."""

    def __init__(self) -> None:
        super().__init__(datefmt=_JSON_DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.levelno = min(50, max(0, record.levelno)) // 10 * 10
        record.levelname = logging.getLevelName(record.levelno)
        exc_info = record.exc_info
        result = {
            "timestamp": self.formatTime(record, self.datefmt),
            "level": record.levelname,
            "message": record.msg
            if isinstance(record.msg, dict) and not record.args
            else record.getMessage(),
            "logger": record.name,
            "stackTrace": traceback.format_tb(exc_info[2]) if exc_info else None,
            "errorType": exc_info[0].__name__ if exc_info and exc_info[0] else None,
            "errorMessage": str(exc_info[1]) if exc_info else None,
            "requestId": getattr(record, "aws_request_id", None),
            "location": f"{record.pathname}:{record.funcName}:{record.lineno}" if exc_info else None,
        }
        if getattr(record, "tenant_id", None) is not None:
            result["tenantId"] = record.tenant_id  # type: ignore[attr-defined]
        result.update(
            (k, v) for k, v in record.__dict__.items() if k not in _RESERVED_FIELDS and k not in result
        )
        return (
            json.dumps({k: v for k, v in result.items() if v is not None}, ensure_ascii=False, default=str)
            + "\n"
        )


def json_log_format() -> bool:
    return (os.environ.get("AWS_LAMBDA_LOG_FORMAT") or "").upper() == "JSON"


def setup_logging(current_request: Callable[[], tuple[str, str | None]]) -> None:
    """Route ``logging`` to stdout in the Lambda form, as awslambdaric does for handlers."""
    sys.stdout = Unbuffered(sys.stdout)  # type: ignore[assignment]
    sys.stderr = Unbuffered(sys.stderr)  # type: ignore[assignment]
    logging.Formatter.converter = time.gmtime
    handler = _StdoutHandler()
    if json_log_format():
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_LOG_FORMAT_TEXT, _LOG_DATE_FORMAT))
    handler.addFilter(_RequestIdFilter(current_request))
    level = {None: "", "TRACE": "DEBUG"}.get(
        os.environ.get("AWS_LAMBDA_LOG_LEVEL"), os.environ.get("AWS_LAMBDA_LOG_LEVEL") or ""
    ).upper()
    root = logging.getLogger()
    if level in logging._nameToLevel:
        root.setLevel(level)
    root.addHandler(handler)


def _replace_line_indentation(line: str) -> str:
    stripped = line.lstrip(" ")
    return ERROR_LOG_IDENT * (len(line) - len(stripped)) + stripped


def log_error(error: dict[str, Any]) -> None:
    """Write an invocation error to the log the way awslambdaric does (one CloudWatch event)."""
    if json_log_format():
        entry = {
            "timestamp": time.strftime(_JSON_DATE_FORMAT, time.gmtime(time.time())),
            "level": "ERROR",
        }
        entry.update(error)
        sys.stdout.write(to_json(entry) + "\n")
        return
    description = "[ERROR]"
    error_type = error.get("errorType")
    if error_type:
        description += " " + error_type
    message = error.get("errorMessage")
    if message:
        if error_type:
            description += ":"
        description += " " + message
    lines = [description]
    stack_trace = error.get("stackTrace")
    if stack_trace is not None:
        lines.append("Traceback (most recent call last):")
        for element in stack_trace:
            if element == "":
                lines.append("")
            else:
                lines.extend(_replace_line_indentation(line) for line in element.splitlines())
    sys.stdout.write(ERROR_LOG_LINE_TERMINATE.join(lines) + "\n")
