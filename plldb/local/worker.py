"""Running invocations locally: one worker process per execution environment, as in Lambda.

Each function gets its own worker processes (``python -u -m plldb.local.worker_main <LogicalId>``,
run by ``sys.executable``: the interpreter plldb itself runs on, so a Runtime of another Python
version is reported as a warning). A worker stays warm between invocations, so module state persists;
concurrent invocations of one function get separate workers. A worker whose source changed (any file
under its code or layer folders, compared by mtime and size), whose deployed configuration changed, or
that crashed, is replaced before its next invocation; a busy worker always finishes first.

The worker's stdout and stderr are pipes read line by line on threads and handed to ``output`` as
they come (never buffered whole, so a handler printing 10 MB cannot stall or exhaust memory). The
result travels on a separate socket. After each invocation the worker writes a marker line to both
pipes, so ``run()`` returns only once every line of that invocation has been delivered.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from plldb import protocol
from plldb.errors import PlldbError
from plldb.local import debuggers
from plldb.local.debuggers import DebuggerConfig
from plldb.local.template import (
    LocalFunction,
    layer_python_paths,
    project_site_packages,
    python_version_tag,
)
from plldb.local.worker_main import receive_message, send_message, sync_marker

logger = logging.getLogger(__name__)

OutputCallback = Callable[[str, str, str, str], None]  # (logical id, request id, "stdout"/"stderr", line)
WarningCallback = Callable[[str], None]

EXIT_ERROR = "Runtime.ExitError"
LINE_PIECE_BYTES = 64 * 1024  # a longer line is delivered in pieces of this size
OUTPUT_SYNC_TIMEOUT = 30.0  # the markers are already in the pipes when the result arrives
STOP_GRACE_SECONDS = 2.0
SOURCE_SKIPPED_DIRS = frozenset(
    {
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "node_modules",
        ".aws-sam",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".idea",
        ".vscode",
    }
)

# Variables of the cloud execution environment that describe the cloud machine, not the function:
# they would break or mislead the local process.
CLOUD_ONLY_VARIABLES = frozenset(
    {
        "PATH",
        "LD_LIBRARY_PATH",
        "PYTHONPATH",
        "PYTHONHOME",
        "HOME",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_MAX_CONCURRENCY",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "_HANDLER",
        *protocol.INSTRUMENTATION_VARIABLES,
        *protocol.CREDENTIAL_VARIABLES,
    }
)
# Variables that may differ between invocations without making a new execution environment.
PER_INVOCATION_VARIABLES = (*protocol.CREDENTIAL_VARIABLES, "_X_AMZN_TRACE_ID", "AWS_LAMBDA_LOG_STREAM_NAME")


@dataclass
class Invocation:
    """One invocation to run, as the layer reported it."""

    request_id: str
    event_json: str  # the event as JSON text, exactly as Lambda received it
    context: dict[str, Any]  # the protocol "context" object
    environment: dict[str, str]  # the deployed function's variables (no credentials)
    credentials: dict[str, str] | None  # {"accessKeyId", "secretAccessKey", "sessionToken"} or None


@dataclass
class InvocationResult:
    status_code: int  # protocol.RESPONSE_CODE_OK or RESPONSE_CODE_ERROR
    payload: str | None  # the result's JSON text when 200
    error: dict[str, Any] | None  # {"errorMessage", "errorType", "stackTrace", ...} when 500
    duration_ms: float


# --- Environment -----------------------------------------------------------------------------------
def worker_environment(
    function: LocalFunction,
    invocation: Invocation,
    local_credentials: bool = False,
    debugger: DebuggerConfig | None = None,
    parent_environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, str | None]]:
    """The worker's environment: (variables fixed for its life, variables set per invocation).

    The developer's environment is the base (PATH, HOME, locale...) without its AWS_* variables,
    unless ``local_credentials`` keeps the developer's credentials, profile and endpoints. Then the
    deployed function's variables, then what Lambda itself defines, then the execution role's
    credentials.
    """
    parent = dict(os.environ if parent_environ is None else parent_environ)
    if not local_credentials:
        parent = {name: value for name, value in parent.items() if not name.startswith("AWS_")}
    environment = parent
    deployed = {
        name: value
        for name, value in invocation.environment.items()
        if name not in CLOUD_ONLY_VARIABLES and not name.startswith("_LAMBDA_") and isinstance(value, str)
    }
    environment.update(deployed)
    context = invocation.context
    function_name = str(
        context.get("functionName")
        or deployed.get("AWS_LAMBDA_FUNCTION_NAME")
        or function.logical_id.split("/")[-1]
    )
    region = (
        deployed.get("AWS_REGION")
        or _arn_region(context.get("invokedFunctionArn"))
        or parent.get("AWS_REGION")
        or parent.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    memory = context.get("memoryLimitInMB") or function.memory_size or 128
    runtime = function.runtime or python_version_tag()
    environment.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": str(context.get("functionVersion") or "$LATEST"),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": str(context.get("logGroupName") or f"/aws/lambda/{function_name}"),
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": deployed.get("AWS_DEFAULT_REGION", region),
            "_HANDLER": function.handler,
            "LAMBDA_TASK_ROOT": str(function.code_dir),
            "AWS_EXECUTION_ENV": deployed.get("AWS_EXECUTION_ENV") or f"AWS_Lambda_{runtime}",
        }
    )
    environment.update(debuggers.worker_environment(debugger))
    per_invocation: dict[str, str | None] = {
        "AWS_LAMBDA_LOG_STREAM_NAME": context.get("logStreamName")
        or deployed.get("AWS_LAMBDA_LOG_STREAM_NAME"),
        "_X_AMZN_TRACE_ID": context.get("traceId") or None,
    }
    if not local_credentials:
        credentials = invocation.credentials or {}
        per_invocation["AWS_ACCESS_KEY_ID"] = credentials.get("accessKeyId")
        per_invocation["AWS_SECRET_ACCESS_KEY"] = credentials.get("secretAccessKey")
        per_invocation["AWS_SESSION_TOKEN"] = credentials.get("sessionToken")
    for name in PER_INVOCATION_VARIABLES:
        if name in per_invocation:
            environment.pop(name, None)
    return environment, per_invocation


def _arn_region(arn: Any) -> str | None:
    parts = arn.split(":") if isinstance(arn, str) else []
    return parts[3] if len(parts) > 4 and parts[0] == "arn" and parts[3] else None


def source_fingerprint(function: LocalFunction) -> str:
    """Changes whenever a file under the function's code or layer folders is saved, added or removed."""
    digest = hashlib.sha256()
    for root in [function.code_dir, *function.layer_dirs]:
        digest.update(b"\x01" + os.fsencode(root))
        for directory, subdirectories, files in os.walk(root):
            subdirectories[:] = sorted(name for name in subdirectories if name not in SOURCE_SKIPPED_DIRS)
            for name in sorted(files):
                if name.endswith((".pyc", ".pyo")):
                    continue
                path = os.path.join(directory, name)
                try:
                    status = os.stat(path)
                except OSError:
                    continue
                digest.update(b"%s\x00%d\x00%d\n" % (os.fsencode(path), status.st_mtime_ns, status.st_size))
    return digest.hexdigest()


def runtime_mismatch(function: LocalFunction) -> str | None:
    """A warning when the function's Runtime is another Python version than the one running it here."""
    local = python_version_tag()
    if function.runtime and function.runtime.startswith("python") and function.runtime != local:
        return (
            f"{function.logical_id} runs on {function.runtime} in Lambda but on {local} here "
            f"({sys.executable}); behaviour that differs between the versions may show."
        )
    return None


def exit_error(request_id: str, returncode: int | None) -> dict[str, Any]:
    """Lambda's error when the runtime process ends without answering."""
    if returncode is None or returncode == 0:
        reason = "Runtime exited without providing a reason"
    elif returncode < 0:
        try:
            name = signal.strsignal(-returncode) or f"signal {-returncode}"
        except ValueError:
            name = f"signal {-returncode}"
        reason = f"Runtime exited with error: signal: {name.lower()}"
    else:
        reason = f"Runtime exited with error: exit status {returncode}"
    return {
        "errorMessage": f"RequestId: {request_id} Error: {reason}",
        "errorType": EXIT_ERROR,
        "stackTrace": [],
    }


# --- Output --------------------------------------------------------------------------------------
class LineSplitter:
    """Cuts a byte stream into lines (long ones into pieces) and spots the worker's sync marker.

    ``feed`` returns the complete lines found, without their newline, and None where a marker was.
    A marker may follow text without a newline; that text is delivered as a line of its own.
    """

    def __init__(self, marker: bytes, piece_bytes: int = LINE_PIECE_BYTES) -> None:
        self._marker = marker
        self._piece_bytes = piece_bytes
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes | None]:
        buffer = self._pending + data if self._pending else data
        found: list[bytes | None] = []
        position = 0
        while True:
            newline = buffer.find(b"\n", position)
            if newline < 0:
                break
            line = buffer[position : newline + 1]
            position = newline + 1
            if line.endswith(self._marker):
                head = line[: -len(self._marker)]
                if head:
                    found.append(head)
                found.append(None)
            else:
                found.append(line[:-1])
        rest = buffer[position:]
        if len(rest) > self._piece_bytes:
            keep = len(self._marker) - 1  # could be the start of a marker
            found.append(rest[:-keep])
            rest = rest[-keep:]
        self._pending = rest
        return found

    def finish(self) -> list[bytes]:
        rest, self._pending = self._pending, b""
        return [rest] if rest else []


def _text(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\r") else text


# --- One worker process ----------------------------------------------------------------------------
class WorkerProcess:
    """The parent's handle on one worker: its process, channel and output pumps."""

    def __init__(
        self,
        function: LocalFunction,
        *,
        environment: dict[str, str],
        fingerprint: str,
        output: OutputCallback | None,
        debugger: DebuggerConfig | None,
        site_dirs: list[Path],
        request_id: str,
    ) -> None:
        self.function = function
        self.environment = environment
        self.fingerprint = fingerprint
        self.request_id = request_id
        self.usable = True
        self._output = output
        self._debugger = debugger
        self._site_dirs = site_dirs
        self._token = secrets.token_hex(16)
        self._marker = sync_marker(self._token)
        self._synced = {"stdout": 0, "stderr": 0}
        self._ended = {"stdout": False, "stderr": False}
        self._output_changed = threading.Condition()
        self._pumps: list[threading.Thread] = []
        self._channel: socket.socket | None = None
        self._lifecycle = threading.Lock()  # a worker being stopped is never started afterwards
        self._stopping = False
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self, channel_fd: int) -> list[str]:
        """What ``ps`` shows: the interpreter, then plldb.local.worker_main and the logical id."""
        return [
            sys.executable,
            "-u",
            *debuggers.worker_interpreter_options(self._debugger),
            "-m",
            "plldb.local.worker_main",
            self.function.logical_id,
            str(channel_fd),
        ]

    def start(self, per_invocation: Mapping[str, str | None]) -> dict[str, Any] | None:
        """Start the process and run its init phase; the init error object when init failed.

        Raises PlldbError when the worker cannot run at all (debugger set-up). A crash during init
        is reported as Lambda reports it (Runtime.ExitError), not raised.
        """
        environment = dict(self.environment)
        environment.update({name: value for name, value in per_invocation.items() if value is not None})
        ours, theirs = socket.socketpair()
        try:
            with self._lifecycle:
                if self._stopping:
                    ours.close()
                    raise PlldbError("The worker pool is closed.")
                self._channel = ours
                self.process = subprocess.Popen(
                    self.command(theirs.fileno()),
                    cwd=self.function.code_dir,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
        except OSError as exc:
            ours.close()
            raise PlldbError(f"Could not start a worker for {self.function.logical_id}: {exc}.")
        finally:
            theirs.close()
        assert self.process.stdout is not None and self.process.stderr is not None
        for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            pump = threading.Thread(
                target=self._pump,
                args=(name, stream),
                name=f"plldb-output-{self.function.logical_id}-{name}",
                daemon=True,
            )
            pump.start()
            self._pumps.append(pump)
        layer_paths = [
            str(p) for layer in reversed(self.function.layer_dirs) for p in layer_python_paths(layer)
        ]
        start = {
            "type": "start",
            "functionId": self.function.logical_id,
            "handler": self.function.handler,
            "codeDir": str(self.function.code_dir),
            "layerPaths": layer_paths,
            "siteDirs": [str(p) for p in self._site_dirs],
            "syncToken": self._token,
            "debugger": debuggers.worker_settings(self._debugger),
        }
        try:
            send_message(ours, start)
        except OSError:
            reply = None
        else:
            reply = self._receive()
        if reply is None:
            self.usable = False
            error = exit_error(self.request_id, self._wait_for_exit())
            self._wait_for_output_end()
            return error
        if reply.get("type") == "fatal":
            self.usable = False
            self.stop()
            raise PlldbError(
                f"The worker for {self.function.logical_id} could not start: {reply.get('message')}"
            )
        init_error = reply.get("initError")
        if init_error is not None:
            self.usable = False
            self._wait_for_output({"stdout": 1, "stderr": 1})
        return init_error

    def invoke(self, invocation: Invocation, per_invocation: Mapping[str, str | None]) -> InvocationResult:
        assert self._channel is not None
        self.request_id = invocation.request_id
        with self._output_changed:
            expected = {name: count + 1 for name, count in self._synced.items()}
        started = time.monotonic()
        try:
            send_message(
                self._channel,
                {
                    "type": "invoke",
                    "requestId": invocation.request_id,
                    "event": invocation.event_json,
                    "context": invocation.context,
                    "environ": dict(per_invocation),
                },
            )
            reply = self._receive()
        except OSError:
            reply = None
        if reply is None or reply.get("type") != "result":
            self.usable = False
            error = exit_error(invocation.request_id, self._wait_for_exit())
            self._wait_for_output_end()
            return InvocationResult(
                protocol.RESPONSE_CODE_ERROR, None, error, (time.monotonic() - started) * 1000
            )
        self._wait_for_output(expected)
        duration = (time.monotonic() - started) * 1000
        if reply.get("statusCode") == protocol.RESPONSE_CODE_OK:
            return InvocationResult(protocol.RESPONSE_CODE_OK, reply.get("payload"), None, duration)
        return InvocationResult(protocol.RESPONSE_CODE_ERROR, None, reply.get("error"), duration)

    def alive(self) -> bool:
        return self.usable and self.process is not None and self.process.poll() is None

    def close_channel(self) -> None:
        """The worker exits as soon as its channel closes, even in the middle of a handler."""
        with self._lifecycle:
            self._stopping = True
        if self._channel is not None:
            with contextlib.suppress(OSError):
                self._channel.shutdown(socket.SHUT_RDWR)
            self._channel.close()

    def stop(self, deadline: float | None = None) -> None:
        """End the worker and whatever its handlers started (its whole process group)."""
        self.usable = False
        self.close_channel()
        process = self.process
        if process is None:
            return
        if deadline is None:
            deadline = time.monotonic() + STOP_GRACE_SECONDS
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for pump in self._pumps:
            pump.join(timeout=STOP_GRACE_SECONDS)

    def _receive(self) -> dict[str, Any] | None:
        assert self._channel is not None
        try:
            return receive_message(self._channel)
        except (OSError, ValueError):
            return None

    def _wait_for_exit(self) -> int | None:
        assert self.process is not None
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.stop()
            return self.process.returncode

    def _wait_for_output(self, expected: Mapping[str, int]) -> None:
        deadline = time.monotonic() + OUTPUT_SYNC_TIMEOUT
        with self._output_changed:
            while not all(
                self._synced[name] >= count or self._ended[name] for name, count in expected.items()
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning("Output of %s did not catch up with its result.", self.function.logical_id)
                    return
                self._output_changed.wait(remaining)

    def _wait_for_output_end(self, timeout: float = STOP_GRACE_SECONDS) -> None:
        """After a crash: the pipes close with the process (unless its children still hold them)."""
        deadline = time.monotonic() + timeout
        with self._output_changed:
            while not all(self._ended.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._output_changed.wait(remaining)

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        splitter = LineSplitter(self._marker)
        try:
            fd = stream.fileno()
            while True:
                try:
                    data = os.read(fd, LINE_PIECE_BYTES)
                except OSError:
                    break
                if not data:
                    break
                for item in splitter.feed(data):
                    if item is None:
                        with self._output_changed:
                            self._synced[name] += 1
                            self._output_changed.notify_all()
                    else:
                        self._deliver(name, item)
            for rest in splitter.finish():
                self._deliver(name, rest)
        finally:
            stream.close()
            with self._output_changed:
                self._ended[name] = True
                self._output_changed.notify_all()

    def _deliver(self, name: str, line: bytes) -> None:
        if self._output is None:
            return
        try:
            self._output(self.function.logical_id, self.request_id, name, _text(line))
        except Exception:
            logger.exception("The output callback failed.")


# --- The pool --------------------------------------------------------------------------------------
class WorkerPool:
    """Warm workers per function; ``run`` takes an idle one or starts a new one. Thread-safe."""

    def __init__(
        self,
        *,
        output: OutputCallback | None = None,
        debugger: DebuggerConfig | None = None,
        local_credentials: bool = False,
        extra_sys_path: list[Path] | None = None,
        warn: WarningCallback | None = None,
    ) -> None:
        """``extra_sys_path``: site-packages folders after the code and layers (default: the project's
        virtualenv, see template.project_site_packages). ``warn`` receives one-line warnings."""
        self._output = output
        self._debugger = debugger
        self._local_credentials = local_credentials
        self._extra_sys_path = extra_sys_path
        self._warn = warn or logger.warning
        self._lock = threading.Lock()
        self._idle: dict[str, list[WorkerProcess]] = {}
        self._workers: set[WorkerProcess] = set()
        self._warned: set[str] = set()
        self._closed = False
        debuggers.prepare_parent(debugger)

    def run(self, function: LocalFunction, invocation: Invocation) -> InvocationResult:
        """Run one invocation to its end and return its result (blocking)."""
        environment, per_invocation = worker_environment(
            function, invocation, self._local_credentials, self._debugger
        )
        site_dirs = self._site_dirs(function)
        fingerprint = source_fingerprint(function)
        worker = self._take_idle(function, environment, fingerprint)
        if worker is None:
            worker = WorkerProcess(
                function,
                environment=environment,
                fingerprint=fingerprint,
                output=self._output,
                debugger=self._debugger,
                site_dirs=site_dirs,
                request_id=invocation.request_id,
            )
            with self._lock:
                if self._closed:
                    raise PlldbError("The worker pool is closed.")
                self._workers.add(worker)
            started = time.monotonic()
            try:
                init_error = worker.start(per_invocation)
            except BaseException:
                self._discard(worker)
                raise
            if init_error is not None:
                self._discard(worker)
                duration = (time.monotonic() - started) * 1000
                return InvocationResult(protocol.RESPONSE_CODE_ERROR, None, init_error, duration)
        try:
            return worker.invoke(invocation, per_invocation)
        finally:
            self._release(worker)

    def pids(self, logical_id: str | None = None) -> list[int]:
        """Process ids of the live workers (of one function), for "Attach to Process" and tests."""
        with self._lock:
            workers = list(self._workers)
        return sorted(
            w.pid
            for w in workers
            if w.pid and w.alive() and (logical_id is None or w.function.logical_id == logical_id)
        )

    def close(self) -> None:
        """Stop every worker, busy or not; their running invocations end with Runtime.ExitError."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
            self._idle.clear()
        for worker in workers:
            worker.close_channel()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in workers:
            worker.stop(deadline)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _site_dirs(self, function: LocalFunction) -> list[Path]:
        if self._extra_sys_path is not None:
            return list(self._extra_sys_path)
        paths, warnings = project_site_packages(function.template_dir)
        mismatch = runtime_mismatch(function)
        for warning in [*warnings, *([mismatch] if mismatch else [])]:
            with self._lock:
                if warning in self._warned:
                    continue
                self._warned.add(warning)
            self._warn(warning)
        return paths

    def _take_idle(
        self, function: LocalFunction, environment: dict[str, str], fingerprint: str
    ) -> WorkerProcess | None:
        """The most recently used matching idle worker; idle workers with old code or settings are retired."""
        stale = []
        current = []
        with self._lock:
            if self._closed:
                raise PlldbError("The worker pool is closed.")
            for worker in self._idle.get(function.logical_id, []):
                if (
                    worker.alive()
                    and worker.fingerprint == fingerprint
                    and worker.function == function
                    and worker.environment == environment
                ):
                    current.append(worker)
                else:
                    stale.append(worker)
                    self._workers.discard(worker)
            chosen = current.pop() if current else None
            self._idle[function.logical_id] = current
        for worker in stale:
            worker.stop()
        return chosen

    def _release(self, worker: WorkerProcess) -> None:
        with self._lock:
            if not self._closed and worker.alive():
                self._idle.setdefault(worker.function.logical_id, []).append(worker)
                return
            self._workers.discard(worker)
        worker.stop()

    def _discard(self, worker: WorkerProcess) -> None:
        with self._lock:
            self._workers.discard(worker)
        worker.stop()
