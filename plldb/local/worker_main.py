"""The worker process: one Lambda execution environment on the developer's machine.

The parent (plldb.local.worker.WorkerPool) starts ``python -u -m plldb.local.worker_main <LogicalId>
<fd>`` so ``ps`` and debuggers' process lists name the function. The worker talks to its parent over
the inherited socket ``fd`` with length-prefixed JSON messages, never over stdout: the handler owns
stdout and stderr, which the parent streams line by line.

What the worker reproduces from the AWS Python runtime (awslambdaric's bootstrap): ``sys.path`` order,
the root logger's handler and format, the import of the handler at init with the runtime's exact
error types and messages, the ``context`` object, the JSON encoding of results (``Runtime.MarshalError``
included) and the error object of an unhandled exception (errorMessage, errorType, requestId,
stackTrace). ``sys.exit`` in a handler really ends the process, as it ends the runtime in Lambda.

This module runs before the function's own ``sys.path`` is in place, so it imports only the standard
library and plldb's standard-library-only modules.
"""

from __future__ import annotations

import decimal
import importlib
import json
import logging
import math
import os
import queue
import re
import site
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from typing import Any, cast

from plldb.errors import PlldbError
from plldb.local.context import ContextUnmarshalError, LambdaContext

# --- The parent <-> worker channel -----------------------------------------------------------------
_LENGTH = struct.Struct(">I")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    """One frame: 4-byte big-endian length, then the message as UTF-8 JSON."""
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    sock.sendall(_LENGTH.pack(len(data)) + data)


def _receive_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1024 * 1024))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def receive_message(sock: socket.socket) -> dict[str, Any] | None:
    """The next frame's message, or None when the other side has closed the channel."""
    header = _receive_exactly(sock, _LENGTH.size)
    if header is None:
        return None
    (length,) = _LENGTH.unpack(header)
    if length > MAX_MESSAGE_BYTES:
        raise ValueError(f"worker channel frame of {length} bytes exceeds {MAX_MESSAGE_BYTES}")
    data = _receive_exactly(sock, length)
    if data is None:
        return None
    message = json.loads(data.decode("utf-8", "surrogatepass"))
    if not isinstance(message, dict):
        raise ValueError("worker channel frame is not a JSON object")
    return message


def sync_marker(token: str) -> bytes:
    """Written to stdout and stderr after each invocation so the parent knows it has every line."""
    return b"\x00plldb-sync:" + token.encode("ascii") + b"\n"


# --- Result encoding, as awslambdaric's LambdaMarshaller does it -----------------------------------
UNICODE_RUNTIMES = frozenset(
    {"AWS_Lambda_python3.12", "AWS_Lambda_python3.13", "AWS_Lambda_python3.14", "AWS_Lambda_python3.15"}
)


class MarshalError(Exception):
    """The handler's result cannot be encoded (Runtime.MarshalError)."""


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if value == math.inf:
        return "Infinity"
    if value == -math.inf:
        return "-Infinity"
    return float.__repr__(value)


def _call_method(value: Any, name: str) -> tuple[Any] | None:
    """simplejson's probe for ``_asdict``: a callable attribute that accepts no arguments."""
    method = getattr(value, name, None)
    if callable(method):
        try:
            return (method(),)
        except TypeError:
            pass
    return None


class _ResponseEncoder:
    """Turns a handler's result into the JSON text the Python runtime would produce.

    The runtime encodes with simplejson (namedtuples become objects, bytes become text, Decimals are
    written verbatim, NaN is allowed, dictionary keys are coerced). The worker cannot rely on
    simplejson being importable, so it normalises the value to what the standard library encodes
    identically, and splices Decimals in verbatim afterwards.
    """

    def __init__(self) -> None:
        self._decimals: list[str] = []
        self._marker = ""
        self._active: set[int] = set()

    def encode(self, value: Any, ensure_ascii: bool) -> str:
        text = json.dumps(self._plain(value), ensure_ascii=ensure_ascii, allow_nan=True)
        if not self._decimals:
            return text
        return re.sub('"' + self._marker + r'(\d+)"', lambda match: self._decimals[int(match.group(1))], text)

    def _decimal(self, value: decimal.Decimal) -> Any:
        if value.is_nan():
            return math.nan
        if not self._marker:
            self._marker = "plldb-decimal-" + uuid.uuid4().hex + "-"
        self._decimals.append(str(value))
        return self._marker + str(len(self._decimals) - 1)

    def _key(self, key: Any) -> str:
        if isinstance(key, str):
            return str(key)
        if isinstance(key, bytes):
            return str(key, "utf-8")
        if isinstance(key, float):
            return _float_text(key)
        if key is True:
            return "true"
        if key is False:
            return "false"
        if key is None:
            return "null"
        if isinstance(key, int):
            return str(int(key))
        raise TypeError(f"keys must be str, int, float, bool or None, not {key.__class__.__name__}")

    def _container(self, value: Any, convert: Callable[[], Any]) -> Any:
        marker = id(value)
        if marker in self._active:
            raise ValueError("Circular reference detected")
        self._active.add(marker)
        try:
            return convert()
        finally:
            self._active.discard(marker)

    def _plain(self, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, bytes):
            return str(value, "utf-8")
        if value is None or value is True or value is False:
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
        as_dict = _call_method(value, "_asdict")
        if as_dict is not None:
            mapping = as_dict[0]
            if not isinstance(mapping, dict):
                raise TypeError(f"_asdict() must return a dict, not {type(mapping).__name__}")
            return self._container(value, lambda: self._dict(mapping))
        if isinstance(value, (list, tuple)):
            return self._container(value, lambda: [self._plain(item) for item in value])
        if isinstance(value, dict):
            return self._container(value, lambda: self._dict(value))
        if isinstance(value, decimal.Decimal):
            return self._decimal(value)
        raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")

    def _dict(self, mapping: dict[Any, Any]) -> dict[str, Any]:
        return {self._key(key): self._plain(item) for key, item in mapping.items()}


def encode_response(response: Any, execution_env: str | None = None) -> str:
    """The JSON text Lambda would return for ``response``; MarshalError with the runtime's message."""
    if isinstance(response, bytes):
        try:
            return response.decode("utf-8")
        except UnicodeDecodeError:
            raise MarshalError(
                "Unable to marshal response: the handler returned bytes that are not UTF-8 text, "
                "which plldb cannot carry back to Lambda"
            )
    if execution_env is None:
        execution_env = os.environ.get("AWS_EXECUTION_ENV")
    try:
        return _ResponseEncoder().encode(response, ensure_ascii=execution_env not in UNICODE_RUNTIMES)
    except Exception as exc:
        raise MarshalError(f"Unable to marshal response: {exc}")


# --- Errors, as awslambdaric reports them ----------------------------------------------------------
MARSHAL_ERROR = "Runtime.MarshalError"
UNMARSHAL_ERROR = "Runtime.UnmarshalError"
USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"


class FaultError(Exception):
    """A runtime fault with its Lambda error type (awslambdaric's FaultException)."""

    def __init__(self, error_type: str, message: str, trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.trace = trace


def make_error(
    message: str | None, error_type: str | None, stack_trace: list[str] | None, request_id: str | None = None
) -> dict[str, Any]:
    return {
        "errorMessage": message if message else "",
        "errorType": error_type if error_type else "",
        "requestId": request_id if request_id is not None else "",
        "stackTrace": stack_trace if stack_trace else [],
    }


def error_from_exception(exc: BaseException, request_id: str | None = None) -> dict[str, Any]:
    """errorMessage/errorType/stackTrace of an exception, with this module's own frames cut off the top."""
    frames = [
        (frame.filename, frame.lineno, frame.name, frame.line)
        for frame in traceback.extract_tb(exc.__traceback__)
    ]
    for index, frame in enumerate(frames):
        if frame[0] != __file__:
            frames = frames[index:]
            break
    stack_trace = traceback.format_list(cast(list[tuple[str, int, str, str | None]], frames))
    return make_error(str(exc), type(exc).__name__, stack_trace, request_id)


def load_handler(handler: str) -> Callable[..., Any]:
    """Import the handler as the runtime does, raising FaultError with the runtime's messages."""
    try:
        module_name, function_name = handler.rsplit(".", 1)
    except ValueError as exc:
        raise FaultError(MALFORMED_HANDLER_NAME, f"Bad handler '{handler}': {exc}")
    try:
        if module_name.split(".")[0] in sys.builtin_module_names:
            raise FaultError(
                BUILT_IN_MODULE_CONFLICT, f"Cannot use built-in module {module_name} as a handler module"
            )
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise FaultError(IMPORT_MODULE_ERROR, f"Unable to import module '{module_name}': {exc}")
    except SyntaxError as exc:
        trace = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
        raise FaultError(USER_CODE_SYNTAX_ERROR, f"Syntax error in module '{module_name}': {exc}", trace)
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise FaultError(HANDLER_NOT_FOUND, f"Handler '{function_name}' missing on module '{module_name}'")


def log_error(error: dict[str, Any]) -> None:
    """The runtime's "[ERROR] Type: message" log entry, with the traceback on the following lines."""
    description = "[ERROR]"
    if error.get("errorType"):
        description += " " + error["errorType"]
    if error.get("errorMessage"):
        if error.get("errorType"):
            description += ":"
        description += " " + error["errorMessage"]
    lines = [description]
    if error.get("stackTrace") is not None:
        lines.append("Traceback (most recent call last):")
        for element in error["stackTrace"]:
            lines.extend(element.splitlines() or [""])
    sys.stdout.write("\n".join(lines) + "\n")


# --- Logging, as the runtime configures it ---------------------------------------------------------
_current_request_id: str | None = None
_current_tenant_id: str | None = None
TEXT_LOG_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
_RESERVED_LOG_FIELDS = frozenset(
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
        "taskName",
    }
)


class _StdoutSink:
    """Where the runtime's log handler writes: the current sys.stdout, so redirections are honoured."""

    def log(self, message: str) -> None:
        sys.stdout.write(message)


class _LambdaLogHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.log_sink = _StdoutSink()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log_sink.log(self.format(record))
        except Exception:
            self.handleError(record)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = _current_request_id or ""
        record.tenant_id = _current_tenant_id
        return True


class _JsonLogFormatter(logging.Formatter):
    """AWS_LAMBDA_LOG_FORMAT=JSON: one JSON object per record with the runtime's keys."""

    def __init__(self) -> None:
        super().__init__(datefmt="%Y-%m-%dT%H:%M:%SZ")

    def format(self, record: logging.LogRecord) -> str:
        record.levelno = min(50, max(0, record.levelno)) // 10 * 10
        record.levelname = logging.getLevelName(record.levelno)
        exc_info = record.exc_info
        result: dict[str, Any] = {
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
            result["tenantId"] = getattr(record, "tenant_id", None)
        result.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _RESERVED_LOG_FIELDS and key not in result
        )
        result = {key: value for key, value in result.items() if value is not None}
        return json.dumps(result, ensure_ascii=False, default=str) + "\n"


def configure_logging(environ: Mapping[str, str]) -> None:
    """Root logger as in the runtime: UTC timestamps, request id on each line, level only if configured."""
    logging.Formatter.converter = time.gmtime
    root = logging.getLogger()
    handler = _LambdaLogHandler()
    if (environ.get("AWS_LAMBDA_LOG_FORMAT") or "").upper() == "JSON":
        handler.setFormatter(_JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_LOG_FORMAT, "%Y-%m-%dT%H:%M:%S"))
    level = environ.get("AWS_LAMBDA_LOG_LEVEL")
    level = {None: "", "TRACE": "DEBUG"}.get(level, level or "").upper()
    if level in logging.getLevelNamesMapping():
        root.setLevel(level)
    handler.addFilter(_RequestIdFilter())
    root.addHandler(handler)


# --- sys.path --------------------------------------------------------------------------------------
def function_sys_path(code_dir: str, layer_paths: list[str], site_dirs: list[str]) -> list[str]:
    """Lambda's order: the code first, then layers, then the project's packages, then the interpreter's.

    ``site_dirs`` are processed like site-packages (their .pth files run), so editable installs in
    the project's virtualenv work. The folder ``-m`` or a debugger put first goes after the function's.
    """
    inherited = [entry for entry in sys.path if entry not in ("", os.getcwd(), code_dir)]
    new_path = [code_dir]
    new_path.extend(entry for entry in layer_paths if entry not in new_path)
    for site_dir in site_dirs:
        saved = sys.path
        sys.path = []
        try:
            site.addsitedir(site_dir)
            new_path.extend(entry for entry in sys.path if entry not in new_path)
        finally:
            sys.path = saved
    new_path.extend(entry for entry in inherited if entry not in new_path)
    return new_path


# --- The worker ------------------------------------------------------------------------------------
class Worker:
    """The state of this execution environment between invocations."""

    def __init__(self, channel: socket.socket, start: dict[str, Any]) -> None:
        self.channel = channel
        self.function_id = start["functionId"]
        self.handler_name = start["handler"]
        self.marker = sync_marker(start["syncToken"])
        self.handler: Callable[..., Any] | None = None
        self.inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def listen_to_parent(self) -> None:
        """Read the channel on a thread: the parent closing it (or dying) ends this process at once."""

        def read() -> None:
            try:
                while True:
                    message = receive_message(self.channel)
                    if message is None:
                        break
                    self.inbox.put(message)
            except (OSError, ValueError):
                pass
            os._exit(0)

        reader = threading.Thread(target=read, name="plldb-worker-channel", daemon=True)
        # Hidden from debuggers' thread lists and never traced: it is plumbing, not the function.
        reader.is_pydev_daemon_thread = True  # type: ignore[attr-defined]
        reader.pydev_do_not_trace = True  # type: ignore[attr-defined]
        reader.start()

    def initialize(self) -> dict[str, Any] | None:
        """The init phase: import the handler; the error object when that fails."""
        try:
            self.handler = load_handler(self.handler_name)
        except FaultError as exc:
            return make_error(exc.message, exc.error_type, exc.trace)
        except Exception as exc:
            return error_from_exception(exc)
        return None

    def serve(self) -> None:
        while True:
            message = self.inbox.get()
            if message is None:
                return
            if message.get("type") == "invoke":
                send_message(self.channel, self.invoke(message))

    def invoke(self, message: dict[str, Any]) -> dict[str, Any]:
        global _current_request_id, _current_tenant_id
        request_id = message["requestId"]
        context_fields = message.get("context") or {}
        for name, value in (message.get("environ") or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _current_request_id = request_id
        _current_tenant_id = context_fields.get("tenantId")
        started = time.perf_counter()
        error = None
        payload = None
        try:
            payload = self.run_handler(request_id, message.get("event", "null"), context_fields)
        except FaultError as exc:
            error = make_error(exc.message, exc.error_type, exc.trace, request_id)
        except Exception as exc:
            error = error_from_exception(exc, request_id)
        duration_ms = (time.perf_counter() - started) * 1000
        if error is not None:
            log_error(error)
        self.flush_output()
        result: dict[str, Any] = {"type": "result", "requestId": request_id, "durationMs": duration_ms}
        if error is None:
            result.update(statusCode=200, payload=payload)
        else:
            result.update(statusCode=500, error=error)
        return result

    def run_handler(self, request_id: str, event_json: str, context_fields: dict[str, Any]) -> str:
        try:
            context = LambdaContext(request_id, context_fields)
        except ContextUnmarshalError as exc:
            raise FaultError(CONTEXT_UNMARSHAL_ERROR, str(exc))
        try:
            event = json.loads(event_json)
        except ValueError as exc:
            raise FaultError(UNMARSHAL_ERROR, f"Unable to unmarshal input: {exc}")
        assert self.handler is not None
        response = self.handler(event, context)
        try:
            return encode_response(response)
        except MarshalError as exc:
            raise FaultError(MARSHAL_ERROR, str(exc))

    def flush_output(self) -> None:
        """Everything the invocation printed reaches the pipes before the marker that closes it."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd in (1, 2):
            try:
                os.write(fd, self.marker)
            except OSError:
                pass


def _attach_debugger(settings: dict[str, Any] | None) -> None:
    if settings and settings.get("kind") == "pycharm":
        from plldb.local.debuggers import connect_worker_to_pycharm

        connect_worker_to_pycharm(settings["host"], int(settings["port"]))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m plldb.local.worker_main LOGICAL_ID CHANNEL_FD\n")
        return 2
    channel = socket.socket(fileno=int(argv[1]))
    start = receive_message(channel)
    if start is None or start.get("type") != "start":
        return 0
    worker = Worker(channel, start)
    sys.path[:] = function_sys_path(start["codeDir"], start.get("layerPaths", []), start.get("siteDirs", []))
    configure_logging(os.environ)
    try:
        _attach_debugger(start.get("debugger"))
    except Exception as exc:
        reason = exc.one_line() if isinstance(exc, PlldbError) else f"{type(exc).__name__}: {exc}"
        send_message(channel, {"type": "fatal", "message": reason})
        return 1
    worker.listen_to_parent()
    init_error = worker.initialize()
    if init_error is not None:
        log_error(init_error)
        worker.flush_output()
    send_message(channel, {"type": "ready", "pid": os.getpid(), "initError": init_error})
    if init_error is not None:
        return 1
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
