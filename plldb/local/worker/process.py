"""One worker process: one Lambda execution environment on the developer's machine, seen from the parent.

The worker is ``<python> -S -u -m plldb.local.worker_main <LogicalId> <fd>``, so ``ps`` and
debuggers' process lists name the function. ``<python>`` is the function's (``runtime_plan``);
``-S`` keeps that interpreter's own site-packages (plldb's, when it is plldb's interpreter) out, and
the start message tells the worker its ``sys.path`` in Lambda's order: the code folder, the local
layers (as ``/opt/python`` and ``/opt/python/lib/pythonX.Y/site-packages``), the project's
environment, then what the Lambda runtime provides after the function's code (the AWS SDK, from
``support_folders``, as ``/var/runtime`` follows ``/var/task`` in Lambda), then the standard library.

The worker's stdout and stderr are pipes read line by line on threads and handed to the output
callback as they come (never buffered whole, so a handler printing 10 MB cannot stall or exhaust
memory). The result travels on a separate socket, with length-prefixed JSON messages. After each
invocation the worker writes a marker line to both pipes, so ``invoke`` returns only once every line
of that invocation has been delivered. A worker that ends without answering gives Lambda's
``Runtime.ExitError`` (``exit_error``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from plldb import protocol
from plldb.errors import PlldbError
from plldb.local import debuggers
from plldb.local.debuggers import DebuggerConfig
from plldb.local.invocation import Invocation, Outcome
from plldb.local.template import LocalFunction, layer_python_paths
from plldb.local.worker.output import LINE_PIECE_BYTES, LineSplitter, OutputCallback, line_text
from plldb.local.worker.runtime_plan import FunctionRuntime
from plldb.local.worker.support_folders import SupportFolders, plldb_installation_paths
from plldb.local.worker_main import receive_message, send_message, sync_marker

logger = logging.getLogger(__name__)

EXIT_ERROR = "Runtime.ExitError"
OUTPUT_SYNC_TIMEOUT = 30.0  # the markers are already in the pipes when the result arrives
STOP_GRACE_SECONDS = 2.0
WORKER_MODULE = "plldb.local.worker_main"


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
        runtime: FunctionRuntime,
        support: SupportFolders,
        request_id: str,
    ) -> None:
        self.function = function
        self.environment = environment
        self.fingerprint = fingerprint
        self.request_id = request_id
        self.runtime = runtime
        self.usable = True
        self._output = output
        self._debugger = debugger
        self._support = support
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
        """What ``ps`` shows: the function's interpreter, plldb.local.worker_main and the logical id.

        ``-S``: the interpreter's own site-packages (plldb's, when it is plldb's interpreter) stay out;
        the worker adds the function's packages itself.
        """
        return [
            str(self.runtime.interpreter),
            "-S",
            "-u",
            *debuggers.worker_interpreter_options(self._debugger),
            "-m",
            WORKER_MODULE,
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
        # Only for the interpreter to find plldb.local.worker_main; the worker removes it at once.
        environment["PYTHONPATH"] = os.pathsep.join(
            str(p) for p in [self._support.boot, *self._support.debugger]
        )
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
            str(p)
            for layer in reversed(self.function.layer_dirs)
            for p in layer_python_paths(layer, self.runtime.layer_version_tag)
        ]
        start = {
            "type": "start",
            "functionId": self.function.logical_id,
            "handler": self.function.handler,
            "codeDir": str(self.function.code_dir),
            "layerPaths": layer_paths,
            "siteDirs": [str(p) for p in self.runtime.site_dirs],
            "runtimePaths": [str(self._support.runtime)],
            "debuggerPaths": [str(p) for p in self._support.debugger],
            "bootPath": str(self._support.boot),
            "excludedPaths": [str(p) for p in plldb_installation_paths()],
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

    def invoke(self, invocation: Invocation, per_invocation: Mapping[str, str | None]) -> Outcome:
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
            return Outcome(protocol.RESPONSE_CODE_ERROR, None, error, (time.monotonic() - started) * 1000)
        self._wait_for_output(expected)
        duration = (time.monotonic() - started) * 1000
        if reply.get("statusCode") == protocol.RESPONSE_CODE_OK:
            return Outcome(protocol.RESPONSE_CODE_OK, reply.get("payload"), None, duration)
        return Outcome(protocol.RESPONSE_CODE_ERROR, None, reply.get("error"), duration)

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
            self._output(self.function.logical_id, self.request_id, name, line_text(line))
        except Exception:
            logger.exception("The output callback failed.")
