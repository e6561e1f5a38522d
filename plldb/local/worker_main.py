"""The worker process: one Lambda execution environment on the developer's machine.

The parent (plldb.local.worker.process.WorkerProcess, for the pool) starts ``python -S -u -m
plldb.local.worker_main <LogicalId> <fd>`` so ``ps`` and debuggers' process lists name the function.
The worker talks to its parent over the inherited socket ``fd`` with length-prefixed JSON messages,
never over stdout: the handler owns stdout and stderr, which the parent streams line by line.

What the AWS Python runtime does around a handler (the import at init with its exact error types and
messages, the ``context`` object, the JSON encoding of results, the error object of an unhandled
exception, the root logger's handler and format) comes from the layer's reproduction of awslambdaric,
``plldb.lambda_python``, so a handler behaves the same here as under
the layer's passthrough in the cloud. This module adds only what is local: the channel, ``sys.path``
in Lambda's order from the developer's folders, the debugger, and writing output for a terminal.
``sys.exit`` in a handler really ends the process, as it ends the runtime in Lambda.

This module runs before the function's own ``sys.path`` is in place, on the function's Python (3.10
to 3.13), so it and everything it imports use only the standard library (tests/local/test_worker_python.py
checks it on each of those versions).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import site
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from plldb import lambda_python
from plldb.errors import PlldbError
from plldb.local import context as local_context

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


# --- What the runtime does, from the layer's reproduction of it ------------------------------------
# Leading traceback frames in these files are the runtime's, not the function's: awslambdaric drops its
# own frames from a handler's stack trace in the same way.
RUNTIME_FILES = (
    os.path.abspath(__file__),
    *lambda_python.RUNTIME_FILES,
    os.path.abspath(local_context.__file__),
)
_NOT_UTF8_BYTES = (
    "Unable to marshal response: the handler returned bytes that are not UTF-8 text, "
    "which plldb cannot carry back to Lambda"
)


def encode_response(response: Any) -> str:
    """The result's JSON text as the runtime marshals it; FaultException(Runtime.MarshalError) if it cannot.

    Unlike the runtime (which hands bytes to Lambda untouched), the protocol carries the result as
    text, so bytes must be UTF-8. ``lambda_python.marshal_response`` is not used: it also encodes the
    text to UTF-8 bytes, which the protocol does not need and which fails on a lone surrogate.
    """
    if isinstance(response, bytes):
        try:
            return response.decode("utf-8")
        except UnicodeDecodeError:
            raise lambda_python.FaultException(lambda_python.MARSHAL_ERROR, _NOT_UTF8_BYTES)
    try:
        return lambda_python.to_json(response)
    except Exception as exc:
        raise lambda_python.FaultException(lambda_python.MARSHAL_ERROR, f"Unable to marshal response: {exc}")


def log_error(error: dict[str, Any]) -> None:
    """The runtime's log entry for an error, one line per line of text as CloudWatch shows it.

    Writing to stdout, the runtime joins the lines of one entry with carriage returns (a terminal
    would overwrite them on screen); in Lambda, its telemetry log sink joins them with newlines,
    which is what CloudWatch displays and what the developer's console shows here.
    """
    entry = io.StringIO()
    with contextlib.redirect_stdout(entry):
        lambda_python.log_error(error)
    sys.stdout.write(entry.getvalue().replace(lambda_python.ERROR_LOG_LINE_TERMINATE, "\n"))


_current_request_id: str | None = None
_current_tenant_id: str | None = None


def _current_request() -> tuple[str, str | None]:
    """What the runtime's log filter stamps on each record: the request id ("" between invocations)."""
    return _current_request_id or "", _current_tenant_id


# --- sys.path ----------------------------------------------------------------------------------------
def function_sys_path(
    code_dir: str,
    layer_paths: list[str],
    site_dirs: list[str],
    *,
    runtime_paths: list[str] | None = None,
    debugger_paths: list[str] | None = None,
    boot_path: str | None = None,
    excluded_paths: list[str] | None = None,
) -> list[str]:
    """Lambda's order: the code, the layers, the project's packages, the runtime's, then the standard library.

    ``site_dirs`` are processed like site-packages (their .pth files run), so editable installs in
    the project's virtualenv work. ``runtime_paths`` hold what the Lambda runtime provides (the AWS
    SDK), after the function's own packages as ``/var/runtime`` is in Lambda. What the interpreter
    started with follows (the standard library, and the folder a debugger runs from), without the
    working folder ``-m`` put first, without ``boot_path``, through which this module was found, and
    without ``excluded_paths`` (plldb's own installation, which a debugger may have added).
    ``debugger_paths`` (the debugger's packages) come last, so the function's own copies win.
    """
    left_out = {"", os.getcwd(), code_dir, *(debugger_paths or ()), *(excluded_paths or ())}
    if boot_path is not None:
        left_out.add(boot_path)
    left_out = {os.path.normpath(entry) if entry else entry for entry in left_out}
    inherited = [entry for entry in sys.path if (os.path.normpath(entry) if entry else entry) not in left_out]
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
    new_path.extend(entry for entry in runtime_paths or () if entry not in new_path)
    new_path.extend(entry for entry in inherited if entry not in new_path)
    new_path.extend(entry for entry in debugger_paths or () if entry not in new_path)
    return new_path


def hide_plldb() -> None:
    """The handler cannot import plldb: its modules leave ``sys.modules``, their package folders go.

    The worker keeps using the modules it already holds; ``sys.path`` has no way back to them.
    """
    for name in [name for name in sys.modules if name == "plldb" or name.startswith("plldb.")]:
        module = sys.modules.pop(name)
        if hasattr(module, "__path__"):
            module.__path__ = []


def install_site_builtins() -> None:
    """What ``site`` adds to builtins (exit, quit, help, copyright...), which ``-S`` leaves out.

    The worker starts with ``-S`` so that the interpreter's own site-packages stay out of the
    handler's path; a handler calling ``exit()`` still works as it does in Lambda.
    """
    if sys.flags.no_site:
        site.setquit()
        site.setcopyright()
        site.sethelper()


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
            self.handler = lambda_python.load_handler(self.handler_name)
        except Exception as exc:
            return lambda_python.error_from_exception(exc, None, RUNTIME_FILES)
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
        except Exception as exc:
            error = lambda_python.error_from_exception(exc, request_id, RUNTIME_FILES)
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
        """The runtime's steps in its order: context, event, handler, result; each fault as it reports it."""
        context = local_context.lambda_context(request_id, context_fields)
        event = lambda_python.unmarshal_event(event_json.encode("utf-8", "surrogatepass"))
        assert self.handler is not None
        response = self.handler(event, context)
        return encode_response(response)

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

        connect_worker_to_pycharm(settings["host"], int(settings["port"]), float(settings["timeout"]))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m plldb.local.worker_main LOGICAL_ID CHANNEL_FD\n")
        return 2
    # PYTHONPATH only served to find this module: the handler and what it starts never see it.
    os.environ.pop("PYTHONPATH", None)
    channel = socket.socket(fileno=int(argv[1]))
    start = receive_message(channel)
    if start is None or start.get("type") != "start":
        return 0
    worker = Worker(channel, start)
    sys.path[:] = function_sys_path(
        start["codeDir"],
        start.get("layerPaths", []),
        start.get("siteDirs", []),
        runtime_paths=start.get("runtimePaths", []),
        debugger_paths=start.get("debuggerPaths", []),
        boot_path=start.get("bootPath"),
        excluded_paths=start.get("excludedPaths", []),
    )
    install_site_builtins()
    lambda_python.setup_logging(_current_request)
    try:
        _attach_debugger(start.get("debugger"))
    except Exception as exc:
        reason = exc.one_line() if isinstance(exc, PlldbError) else f"{type(exc).__name__}: {exc}"
        send_message(channel, {"type": "fatal", "message": reason})
        return 1
    hide_plldb()
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
