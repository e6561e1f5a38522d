"""Real Lambda execution environments for the local cloud.

moto stores functions but needs Docker to run them. Here every function runs as Lambda runs it: its
deployment package and layers are unpacked (cached by content hash), a Runtime API server of ours is
started (:mod:`plldb.localcloud.runtime_api`) and the real AWS runtime interface client is launched as
``<python> -m awslambdaric <handler>`` in its own process group, with the environment variables and the
execution role's temporary credentials Lambda gives a function. Environments stay warm between
invocations, concurrent invocations get separate environments, and a configuration or code change
retires the old ones.

Where Lambda has ``/var/task`` and ``/opt``, an environment has a code directory (``LAMBDA_TASK_ROOT``,
also its working directory) and an ``/opt`` equivalent holding its layers. ``PYTHONPATH`` lists the code
directory, then the layers' ``python/lib/pythonX.Y/site-packages`` and ``python`` directories, exactly
as Lambda's runtime does with ``/opt``. An ``AWS_LAMBDA_EXEC_WRAPPER`` is run with the runtime's command
line as its arguments; a wrapper path under ``/opt/`` is translated to the same path inside the
environment's ``/opt`` equivalent, and one under ``/var/task/`` to the code directory (only the path
executed is translated: the variable keeps its value, and paths the wrapper itself uses are not
rewritten, so a layer's scripts should find their files relative to their own location).

:func:`install` routes moto's ``Invoke``/``InvokeAsync`` (and moto's own internal invocations, such as
event source mappings and custom resources) through an :class:`EnvironmentManager`.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import datetime
import hashlib
import io
import json
import logging
import math
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from moto.awslambda.exceptions import LambdaClientError

from plldb.localcloud.runtime_api import RESPONSE_SIZE_TOO_LARGE, Invocation, Outcome, RuntimeApi
from plldb.protocol import EXECUTE_API_ENDPOINT_VARIABLE

logger = logging.getLogger(__name__)

DEFAULT_ACCOUNT_ID = "123456789012"
SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024  # RequestResponse invocation payload quota
ASYNC_PAYLOAD_LIMIT = 1024 * 1024  # Event invocation payload quota
INIT_TIMEOUT_SECONDS = 10.0  # Lambda's on-demand init phase limit
LOG_TAIL_BYTES = 4096  # X-Amz-Log-Result carries the last 4 KB of the invocation's log
CREDENTIAL_SECONDS = 12 * 3600
# Lambda stops an idle environment after a while it does not document (minutes); so does this
# manager, so a long-running local cloud does not keep a process for every function it ever ran.
IDLE_ENVIRONMENT_SECONDS = 600.0
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
FUNCTION_ERROR_UNHANDLED = "Unhandled"
TIMED_OUT = "Sandbox.Timedout"  # error type recorded for a timed-out invocation (not in its payload)

_SIGNAL_DESCRIPTIONS = {
    signal.SIGKILL: "killed",
    signal.SIGTERM: "terminated",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGINT: "interrupt",
    signal.SIGBUS: "bus error",
}


class _LambdaApiError(LambdaClientError):
    """A refusal of Lambda's API; like Lambda's own, its error type is the exception's class name."""

    def __init__(self, message: str) -> None:
        super().__init__(type(self).__name__, message)


class RequestEntityTooLargeException(_LambdaApiError):
    """Lambda's refusal of an invocation payload over the synchronous or asynchronous quota."""

    code = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request must be smaller than {limit} bytes for the InvokeFunction operation")


class InvalidRequestContentException(_LambdaApiError):
    """Lambda's refusal of a payload or client context that is not JSON."""

    code = 400


class InvalidRuntimeException(_LambdaApiError):
    """A function the local cloud cannot run (not a Zip-packaged Python function)."""

    code = 502


class ValidationException(_LambdaApiError):
    """Lambda's refusal of an invocation type outside Event, RequestResponse and DryRun."""

    code = 400


class TooManyRequestsException(_LambdaApiError):
    """Lambda's throttle when a function's reserved concurrency is already in use."""

    code = 429

    def __init__(self) -> None:
        super().__init__("Rate Exceeded.")
        self.description = json.dumps(
            {
                "__type": "TooManyRequestsException",
                "message": "Rate Exceeded.",
                "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                "Type": "User",
            }
        )


class ServiceShutDown(RuntimeError):
    """The manager was shut down; no more invocations are accepted."""


@dataclass
class InvocationResult:
    """What Lambda's Invoke API answers: status, payload and the X-Amz-* response headers' values."""

    status_code: int
    payload: bytes
    function_error: str | None
    log_result: str  # base64 of the last 4 KB of the invocation's log
    executed_version: str
    request_id: str = ""


@dataclass(frozen=True)
class LayerContent:
    """One layer version attached to a function, with a way to fetch its archive lazily."""

    arn: str
    digest: str
    archive: Callable[[], bytes] = field(compare=False)


@dataclass(frozen=True)
class FunctionSpec:
    """A snapshot of everything about a function version that shapes its execution environments."""

    account_id: str
    region: str
    function_name: str
    version: str
    function_arn: str  # unqualified
    handler: str
    runtime: str
    memory_size: int
    timeout: float
    role: str
    variables: dict[str, str]
    code_digest: str
    code: Callable[[], bytes] = field(compare=False)
    layers: tuple[LayerContent, ...] = ()
    reserved_concurrency: int | None = None  # synchronous invocations beyond it are throttled

    @property
    def pool_key(self) -> tuple[str, str, str, str]:
        return (self.account_id, self.region, self.function_name, self.version)

    @property
    def fingerprint(self) -> str:
        """Changes whenever the configuration or code changes, so stale environments are retired."""
        document = [
            self.function_arn,
            self.version,
            self.handler,
            self.runtime,
            self.memory_size,
            self.timeout,
            self.role,
            sorted(self.variables.items()),
            self.code_digest,
            [(layer.arn, layer.digest) for layer in self.layers],
        ]
        return hashlib.sha256(json.dumps(document, default=str).encode("utf-8")).hexdigest()


def function_spec(fn: Any, account_id: str, region: str) -> FunctionSpec:
    """Read a moto LambdaFunction into a FunctionSpec (raises for what the local cloud cannot run)."""
    if getattr(fn, "package_type", "Zip") == "Image":
        raise InvalidRuntimeException(
            "The local cloud runs Zip-packaged Python functions only; "
            f"{fn.function_name} is a container image function."
        )
    runtime = fn.run_time or ""
    if not runtime.startswith("python"):
        raise InvalidRuntimeException(
            f"The local cloud runs Python functions only; {fn.function_name} uses the runtime {runtime!r}."
        )
    layers = []
    for layer in fn.layers or []:
        layers.append(_layer_content(layer["Arn"]))
    code_bytes: bytes = getattr(fn, "code_bytes", b"") or b""
    digest = getattr(fn, "code_digest", "") or hashlib.sha256(code_bytes).hexdigest()
    return FunctionSpec(
        account_id=account_id,
        region=region,
        function_name=fn.function_name,
        version=str(fn.version),
        function_arn=_function_arn(region, account_id, fn.function_name),
        handler=fn.handler or "",
        runtime=runtime,
        memory_size=int(fn.memory_size),
        timeout=float(fn.timeout),
        role=fn.role,
        variables={str(k): str(v) for k, v in (fn.environment_vars or {}).items()},
        code_digest=digest,
        code=lambda: code_bytes,
        layers=tuple(layers),
        reserved_concurrency=None if fn.reserved_concurrency is None else int(fn.reserved_concurrency),
    )


def _layer_content(layer_version_arn: str) -> LayerContent:
    from moto.awslambda.exceptions import UnknownLayerVersionException
    from moto.awslambda.models import lambda_backends

    parts = layer_version_arn.split(":")
    region, account_id = parts[3], parts[4]
    layer_version = lambda_backends[account_id][region].layers_versions_by_arn(layer_version_arn)
    if layer_version is None:
        raise UnknownLayerVersionException([layer_version_arn])
    data: bytes = layer_version.code_bytes or b""
    digest = layer_version.code_digest or hashlib.sha256(data).hexdigest()
    return LayerContent(layer_version_arn, digest, lambda: data)


def _function_arn(region: str, account_id: str, function_name: str) -> str:
    partition = (
        "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
    )
    return f"arn:{partition}:lambda:{region}:{account_id}:function:{function_name}"


# --- Unpacking ------------------------------------------------------------------------------------
def extract_archive(data: bytes, destination: Path) -> None:
    """Unpack a zip into destination keeping Unix modes (so scripts stay executable) and symlinks."""
    root = destination.resolve()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            target = (root / info.filename).resolve()
            if target != root and root not in target.parents:
                raise ValueError(f"archive member {info.filename!r} escapes the archive root")
            mode = (info.external_attr >> 16) & 0xFFFF if info.create_system == 3 else 0
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
            if stat.S_ISLNK(mode):
                os.symlink(archive.read(info).decode("utf-8"), target)
                continue
            with archive.open(info) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
            permissions = stat.S_IMODE(mode)
            os.chmod(target, permissions if permissions else 0o644)


class _ArtifactCache:
    """Unpacked deployment packages and layer sets under work_dir, keyed by content hash."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def code_directory(self, spec: FunctionSpec) -> Path:
        return self._unpacked("code", spec.code_digest, lambda: [spec.code()])

    def opt_directory(self, spec: FunctionSpec) -> Path:
        if not spec.layers:
            return self._unpacked("opt", "no-layers", list)
        digest = hashlib.sha256("\n".join(layer.digest for layer in spec.layers).encode("ascii")).hexdigest()
        return self._unpacked("opt", digest, lambda: [layer.archive() for layer in spec.layers])

    def _unpacked(self, kind: str, digest: str, archives: Callable[[], list[bytes]]) -> Path:
        target = self._root / kind / digest
        if target.is_dir():
            return target
        with self._locks_guard:
            lock = self._locks.setdefault(kind + digest, threading.Lock())
        with lock:
            if target.is_dir():
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=target.parent))
            try:
                for data in archives():
                    if data:
                        extract_archive(data, staging)
                os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return target


# --- Small helpers ----------------------------------------------------------------------------------
def _timestamp() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"


def _compact(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def timeout_payload(request_id: str, timeout_seconds: float) -> bytes:
    """Lambda's answer when an invocation runs past the function's timeout."""
    return _compact(
        {"errorMessage": f"{_timestamp()} {request_id} Task timed out after {timeout_seconds:.2f} seconds"}
    )


def exit_error_payload(request_id: str, exit_code: int) -> bytes:
    """Lambda's answer when the runtime process dies without reporting (Runtime.ExitError)."""
    if exit_code == 0:
        reason = "Runtime exited without providing a reason"
    elif exit_code < 0:
        try:
            description = _SIGNAL_DESCRIPTIONS.get(signal.Signals(-exit_code), f"signal {-exit_code}")
        except ValueError:
            description = f"signal {-exit_code}"
        reason = f"Runtime exited with error: signal: {description}"
    else:
        reason = f"Runtime exited with error: exit status {exit_code}"
    return _compact(
        {"errorMessage": f"RequestId: {request_id} Error: {reason}", "errorType": "Runtime.ExitError"}
    )


def _python_version_of(runtime: str) -> str:
    if runtime.startswith("python3."):
        return runtime
    return f"python{sys.version_info[0]}.{sys.version_info[1]}"


@dataclass
class _ManagerContext:
    """What every environment needs from its manager."""

    endpoint_url: str
    execute_api_endpoint: str
    work_dir: Path
    artifacts: _ArtifactCache


# --- One execution environment ------------------------------------------------------------------------
class ExecutionEnvironment:
    """One runtime process with its own Runtime API server, reused while it stays healthy."""

    def __init__(self, spec: FunctionSpec, context: _ManagerContext) -> None:
        self.spec = spec
        self.fingerprint = spec.fingerprint
        self.environment_id = uuid.uuid4().hex
        today = datetime.datetime.now(datetime.UTC)
        self.log_stream_name = f"{today:%Y/%m/%d}/[{spec.version}]{self.environment_id}"
        self.log_group_name = "/aws/lambda/" + spec.function_name
        self.log_path = context.work_dir / "logs" / spec.function_name / (self.environment_id + ".log")
        self.busy = False  # guarded by the manager's lock
        self.idle_since = 0.0  # the manager's clock when it was last released; guarded by its lock
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # One append-mode descriptor: the runtime's stdout and stderr, our START/END/REPORT lines, and reads.
        self._log_fd = os.open(self.log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._log_closed = False
        self._log_lock = threading.Lock()  # the descriptor is closed once, never used after
        self._context = context
        self._condition = threading.Condition()
        self._api = RuntimeApi(self._condition)
        self._process: subprocess.Popen[bytes] | None = None
        self._launch_error: str | None = None
        self._launched_at = 0.0
        self._exit_code: int | None = None
        self._retired = False
        self._init_duration_reported = False
        self._started = False
        self._stopped = False
        self._lifecycle_lock = threading.Lock()  # a launch and a stop never interleave

    # --- Lifecycle -----------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def reusable(self) -> bool:
        with self._condition:
            return not self._retired and self._exit_code is None and self._launch_error is None

    def environment_variables(
        self, code_dir: Path, opt_dir: Path, credentials: dict[str, str]
    ) -> dict[str, str]:
        """The process environment Lambda's Python runtime gets, in Lambda's precedence order."""
        spec = self.spec
        python_dir = os.path.dirname(sys.executable)
        site_packages = opt_dir / "python" / "lib" / _python_version_of(spec.runtime) / "site-packages"
        library_path = [str(code_dir), str(code_dir / "lib"), str(opt_dir / "lib")]
        if os.environ.get("LD_LIBRARY_PATH"):
            library_path.insert(0, os.environ["LD_LIBRARY_PATH"])
        variables = {
            # Defaults a function may override.
            "PATH": f"{python_dir}:/usr/local/bin:/usr/bin/:/bin:{opt_dir / 'bin'}",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LD_LIBRARY_PATH": ":".join(library_path),
            "PYTHONPATH": os.pathsep.join([str(code_dir), str(site_packages), str(opt_dir / "python")]),
        }
        variables.update(spec.variables)
        variables.update(
            {
                # Reserved: Lambda sets these whatever the function configures.
                "_HANDLER": spec.handler,
                "AWS_REGION": spec.region,
                "AWS_DEFAULT_REGION": spec.region,
                "AWS_EXECUTION_ENV": "AWS_Lambda_" + spec.runtime,
                "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
                "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "AWS_LAMBDA_LOG_GROUP_NAME": self.log_group_name,
                "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream_name,
                "AWS_LAMBDA_RUNTIME_API": self._api.address,
                "LAMBDA_TASK_ROOT": str(code_dir),
                "LAMBDA_RUNTIME_DIR": _runtime_directory(),
                "AWS_ENDPOINT_URL": self._context.endpoint_url,
                EXECUTE_API_ENDPOINT_VARIABLE: self._context.execute_api_endpoint,
                **credentials,
            }
        )
        return variables

    def _start(self) -> None:
        """Unpack, start the Runtime API and launch the runtime (an exec wrapper first, if configured)."""
        artifacts = self._context.artifacts
        code_dir = artifacts.code_directory(self.spec)
        opt_dir = artifacts.opt_directory(self.spec)
        variables = self.environment_variables(code_dir, opt_dir, role_credentials(self.spec))
        command = [sys.executable, "-m", "awslambdaric", self.spec.handler]
        wrapper = variables.get("AWS_LAMBDA_EXEC_WRAPPER", "")
        if wrapper:
            command.insert(0, translate_lambda_path(wrapper, code_dir, opt_dir))
        self._api.start()
        self._launched_at = time.monotonic()
        try:
            self._process = subprocess.Popen(
                command,
                cwd=code_dir,
                env=variables,
                stdin=subprocess.DEVNULL,
                stdout=self._log_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:
            reason = os.strerror(error.errno).lower() if error.errno else str(error)
            self._launch_error = f"fork/exec {wrapper or command[0]}: {reason}"
            return
        threading.Thread(target=self._watch_process, name="lambda-env-watch", daemon=True).start()

    def _watch_process(self) -> None:
        assert self._process is not None
        exit_code = self._process.wait()
        with self._condition:
            self._exit_code = exit_code
            self._condition.notify_all()

    def retire(self) -> None:
        """Never reuse this environment; it is stopped when its current invocation ends."""
        with self._condition:
            self._retired = True

    def stop(self) -> None:
        """Kill the whole process group, wait for it to be reaped and close the Runtime API; idempotent."""
        self.retire()
        with self._lifecycle_lock:
            self._stopped = True
            self.kill()
        if self._process is not None:
            with self._condition:
                reaped = self._condition.wait_for(lambda: self._exit_code is not None, timeout=10)
            if not reaped:
                logger.warning("Lambda environment process %d did not exit after SIGKILL", self._process.pid)
        self._api.close()
        with self._log_lock:
            if not self._log_closed:
                self._log_closed = True
                os.close(self._log_fd)

    def kill(self) -> None:
        """SIGKILL the environment's process group (the runtime, its wrapper and anything they started)."""
        process = self._process
        if process is not None and process.returncode is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    # --- Invocations -----------------------------------------------------------------------------------
    def run(self, invocation: Invocation) -> tuple[Outcome, bytes]:
        """Run one invocation to its outcome (result, handler error, init error, crash or timeout).

        Returns the outcome and this invocation's part of the environment's log.
        """
        log_offset = self._log_size()
        self._append_log(f"START RequestId: {invocation.request_id} Version: {self.spec.version}\n")
        started = time.monotonic()
        with self._lifecycle_lock:
            if self._stopped:
                raise ServiceShutDown("the execution environment was stopped")
            if not self._started:
                self._started = True
                try:
                    self._start()
                except BaseException:
                    self.retire()
                    raise
        outcome = self._await_outcome(invocation)
        self._write_report(invocation, outcome, started, time.monotonic())
        return outcome, self._read_log(log_offset)

    def _await_outcome(self, invocation: Invocation) -> Outcome:
        request_id = invocation.request_id
        api = self._api
        with self._condition:
            if self._launch_error is not None:
                self._retired = True
                message = f"RequestId: {request_id} Error: {self._launch_error}"
                return Outcome(
                    _compact({"errorMessage": message, "errorType": "Runtime.InvalidEntrypoint"}),
                    "Runtime.InvalidEntrypoint",
                )
            # A cold environment may spend Lambda's init allowance before the function's own timeout starts.
            dispatch_budget = invocation.timeout_seconds + (0.0 if api.initialized else INIT_TIMEOUT_SECONDS)
            api.submit(invocation)
            self._condition.wait_for(
                lambda: (
                    invocation.dispatched_at is not None
                    or self._exit_code is not None
                    or api.init_error is not None
                ),
                timeout=dispatch_budget,
            )
            if invocation.dispatched_at is not None:
                remaining = invocation.timeout_seconds - (time.monotonic() - invocation.dispatched_at)
                self._condition.wait_for(
                    lambda: invocation.outcome is not None or self._exit_code is not None,
                    timeout=max(remaining, 0.0),
                )
                if invocation.outcome is not None:
                    if invocation.outcome.error_type == RESPONSE_SIZE_TOO_LARGE:
                        self._retired = True  # the runtime client gives up after a 413; Lambda resets it
                    return invocation.outcome
            self._retired = True
            if invocation.dispatched_at is None and api.init_error is not None:
                return api.init_error
            if self._exit_code is not None:
                return Outcome(exit_error_payload(request_id, self._exit_code), "Runtime.ExitError")
        self.kill()
        return Outcome(timeout_payload(request_id, invocation.timeout_seconds), TIMED_OUT)

    # --- Logs ----------------------------------------------------------------------------------------
    def _log_size(self) -> int:
        with self._log_lock:
            return 0 if self._log_closed else os.fstat(self._log_fd).st_size

    def _append_log(self, text: str) -> None:
        with self._log_lock:
            if not self._log_closed:
                os.write(self._log_fd, text.encode("utf-8"))

    def _read_log(self, offset: int) -> bytes:
        with self._log_lock:
            if self._log_closed:
                return b""
            size = os.fstat(self._log_fd).st_size - offset
            return os.pread(self._log_fd, size, offset) if size > 0 else b""

    def _write_report(self, invocation: Invocation, outcome: Outcome, started: float, ended: float) -> None:
        """END and REPORT lines (and the timeout line) in Lambda's format."""
        request_id = invocation.request_id
        begin = invocation.dispatched_at if invocation.dispatched_at is not None else started
        duration_ms = max((ended - begin) * 1000.0, 0.0)
        lines = []
        if outcome.error_type == TIMED_OUT:
            lines.append(
                f"{_timestamp()} {request_id} Task timed out after {invocation.timeout_seconds:.2f} seconds"
            )
        lines.append(f"END RequestId: {request_id}")
        report = (
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {math.ceil(duration_ms)} ms\tMemory Size: {self.spec.memory_size} MB\t"
        )
        memory = self._max_memory_mb()
        if memory is not None:
            report += f"Max Memory Used: {memory} MB\t"
        ready_at = self._api.ready_at
        if ready_at is not None and not self._init_duration_reported:
            self._init_duration_reported = True
            report += f"Init Duration: {(ready_at - self._launched_at) * 1000.0:.2f} ms\t"
        lines.append(report)
        self._append_log("\n".join(lines) + "\n")

    def _max_memory_mb(self) -> int | None:
        if self._process is None or self._process.returncode is not None:
            return None
        try:
            with open(f"/proc/{self._process.pid}/status", encoding="ascii", errors="replace") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return max(1, int(line.split()[1]) // 1024)
        except (OSError, ValueError, IndexError):
            return None
        return None

    def publish_to_cloudwatch(self, log: bytes) -> None:
        """Copy an invocation's log lines into moto's CloudWatch Logs, as Lambda does."""
        from moto.logs.models import logs_backends

        lines = [line for line in log.decode("utf-8", errors="replace").splitlines() if line.strip()]
        if not lines:
            return
        backend = logs_backends[self.spec.account_id][self.spec.region]
        backend.ensure_log_group(self.log_group_name)
        backend.ensure_log_stream(self.log_group_name, self.log_stream_name)
        now = int(time.time() * 1000)
        backend.put_log_events(
            self.log_group_name, self.log_stream_name, [{"timestamp": now, "message": line} for line in lines]
        )


def translate_lambda_path(path: str, code_dir: Path, opt_dir: Path) -> str:
    """Map a Lambda ``/opt/...`` (or ``/var/task/...``) path into an environment's own directories."""
    for lambda_root, local_root in (("/opt", opt_dir), ("/var/task", code_dir)):
        if path == lambda_root or path.startswith(lambda_root + "/"):
            return str(local_root) + path[len(lambda_root) :]
    return path


def _runtime_directory() -> str:
    import awslambdaric

    return str(Path(awslambdaric.__file__).resolve().parent.parent)


def role_credentials(spec: FunctionSpec) -> dict[str, str]:
    """Temporary credentials of the function's execution role, from moto's STS (session = function name)."""
    from moto.sts.models import sts_backends

    partition = spec.function_arn.split(":")[1]
    assumed = sts_backends[spec.account_id][partition].assume_role(
        region_name=spec.region,
        role_session_name=spec.function_name,
        role_arn=spec.role,
        policy=None,  # type: ignore[arg-type]
        duration=CREDENTIAL_SECONDS,
        external_id=None,  # type: ignore[arg-type]
    )
    return {
        "AWS_ACCESS_KEY_ID": assumed.access_key_id,
        "AWS_SECRET_ACCESS_KEY": assumed.secret_access_key,
        "AWS_SESSION_TOKEN": assumed.session_token,
    }


# --- The manager ---------------------------------------------------------------------------------------
@dataclass
class _Pool:
    fingerprint: str = ""
    environments: list[ExecutionEnvironment] = field(default_factory=list)


class EnvironmentManager:
    """Runs Lambda invocations in warm, per-function pools of real execution environments.

    Thread-safe: concurrent invocations of one function run in separate environments; an idle
    environment is reused; a changed configuration or code retires the old environments.
    """

    def __init__(
        self,
        endpoint_url: str,
        execute_api_endpoint: str,
        work_dir: Path,
        account_id: str = DEFAULT_ACCOUNT_ID,
        region: str = "us-east-1",
        *,
        idle_seconds: float = IDLE_ENVIRONMENT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.idle_seconds = idle_seconds
        self._clock = clock
        self.execute_api_endpoint = execute_api_endpoint
        self.work_dir = Path(work_dir)
        self.account_id = account_id
        self.region = region
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._context = _ManagerContext(
            endpoint_url, execute_api_endpoint, self.work_dir, _ArtifactCache(self.work_dir / "artifacts")
        )
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, str, str, str], _Pool] = {}
        self._closed = False
        atexit.register(self.shutdown)

    # --- Public API -----------------------------------------------------------------------------------
    def invoke(
        self,
        function_name_or_arn: str,
        payload: bytes,
        invocation_type: str = "RequestResponse",
        client_context: str | None = None,
        qualifier: str | None = None,
    ) -> InvocationResult:
        """Invoke a function as Lambda's Invoke API does; client_context is base64 JSON, as in the API."""
        account_id, region = self.account_id, self.region
        if function_name_or_arn.startswith("arn:"):
            parts = function_name_or_arn.split(":")
            if len(parts) >= 7:
                region, account_id = parts[3], parts[4]
        return self.invoke_in(
            account_id,
            region,
            function_name_or_arn,
            payload,
            invocation_type=invocation_type,
            client_context=client_context,
            qualifier=qualifier,
        )

    def invoke_in(
        self,
        account_id: str,
        region: str,
        function_name_or_arn: str,
        payload: bytes,
        *,
        invocation_type: str = "RequestResponse",
        client_context: str | None = None,
        qualifier: str | None = None,
    ) -> InvocationResult:
        """Invoke with an explicit account and region (the caller's, for an unqualified function name)."""
        from moto.awslambda.models import lambda_backends

        if invocation_type not in INVOCATION_TYPES:
            raise ValidationException(
                f"1 validation error detected: Value '{invocation_type}' at 'invocationType' failed to "
                "satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            )
        fn = lambda_backends[account_id][region].get_function(function_name_or_arn, qualifier)
        invoked_arn = _invoked_arn(region, account_id, fn.function_name, function_name_or_arn, qualifier)
        return self.invoke_function(fn, payload, invocation_type, client_context, invoked_arn)

    def invoke_function(
        self,
        fn: Any,
        payload: bytes,
        invocation_type: str = "RequestResponse",
        client_context: str | None = None,
        invoked_function_arn: str | None = None,
    ) -> InvocationResult:
        """Invoke a moto LambdaFunction object (used by moto's own internal invocations too)."""
        limit = ASYNC_PAYLOAD_LIMIT if invocation_type == "Event" else SYNC_PAYLOAD_LIMIT
        if len(payload) > limit:
            raise RequestEntityTooLargeException(limit)
        event = _validated_event(payload)
        context_json = _decoded_client_context(client_context)
        spec = function_spec(fn, fn.account_id, fn.region)
        arn = invoked_function_arn or fn.function_arn
        if invocation_type == "DryRun":
            return InvocationResult(204, b"", None, "", spec.version)
        if self._closed:
            raise ServiceShutDown("the local Lambda service has been shut down")
        if invocation_type == "Event":
            worker = threading.Thread(
                target=self._run_event,
                args=(spec, event, arn, context_json),
                name="lambda-event",
                daemon=True,
            )
            worker.start()
            return InvocationResult(202, b"", None, "", spec.version)
        return self._run(spec, event, arn, context_json, throttle=True)

    def discard(self, account_id: str, region: str, function_name: str, version: str | None = None) -> None:
        """Retire a deleted function's environments (all versions, or one)."""
        doomed: list[ExecutionEnvironment] = []
        with self._lock:
            for key in list(self._pools):
                if key[:3] == (account_id, region, function_name) and version in (None, key[3]):
                    pool = self._pools.pop(key)
                    for environment in pool.environments:
                        if environment.busy:
                            environment.retire()
                        else:
                            doomed.append(environment)
        for environment in doomed:
            environment.stop()

    def environments(self) -> list[ExecutionEnvironment]:
        """Every live environment (for diagnostics: pids, log paths)."""
        with self._lock:
            return [env for pool in self._pools.values() for env in pool.environments]

    def shutdown(self) -> None:
        """Stop every environment (no orphan processes); further invocations are refused."""
        with self._lock:
            self._closed = True
            doomed = [env for pool in self._pools.values() for env in pool.environments]
            self._pools.clear()
        for environment in doomed:
            environment.kill()
        for environment in doomed:
            environment.stop()
        atexit.unregister(self.shutdown)

    # --- Internals ---------------------------------------------------------------------------------------
    def _run_event(self, spec: FunctionSpec, event: bytes, arn: str, context_json: str | None) -> None:
        try:
            result = self._run(spec, event, arn, context_json)
        except ServiceShutDown:
            return
        except Exception:
            logger.exception("asynchronous invocation of %s failed", spec.function_name)
            return
        if result.function_error:
            logger.info("asynchronous invocation of %s failed: %s", spec.function_name, result.payload[:1000])

    def _run(
        self, spec: FunctionSpec, event: bytes, arn: str, context_json: str | None, *, throttle: bool = False
    ) -> InvocationResult:
        """Run one invocation in a pooled environment; throttle enforces reserved concurrency."""
        invocation = Invocation(
            request_id=str(uuid.uuid4()),
            payload=event,
            invoked_function_arn=arn,
            timeout_seconds=spec.timeout,
            trace_id=_trace_id(),
            client_context=context_json,
        )
        environment = self._acquire(spec, throttle=throttle)
        try:
            outcome, log = environment.run(invocation)
        finally:
            self._release(environment)
        try:
            environment.publish_to_cloudwatch(log)
        except Exception:
            logger.debug("could not copy the invocation log to CloudWatch Logs", exc_info=True)
        return InvocationResult(
            status_code=200,
            payload=outcome.payload,
            function_error=FUNCTION_ERROR_UNHANDLED if outcome.is_error else None,
            log_result=base64.b64encode(log[-LOG_TAIL_BYTES:]).decode("ascii"),
            executed_version=spec.version,
            request_id=invocation.request_id,
        )

    def _acquire(self, spec: FunctionSpec, *, throttle: bool = False) -> ExecutionEnvironment:
        """An idle matching environment, or a new one; stale idle ones are stopped on the way."""
        doomed: list[ExecutionEnvironment] = []
        with self._lock:
            if self._closed:
                raise ServiceShutDown("the local Lambda service has been shut down")
            if throttle and spec.reserved_concurrency is not None:
                running = sum(
                    1
                    for key, other in self._pools.items()
                    if key[:3] == spec.pool_key[:3]
                    for environment in other.environments
                    if environment.busy
                )
                if running >= spec.reserved_concurrency:
                    raise TooManyRequestsException()
            doomed += self._take_idle_environments()
            pool = self._pools.setdefault(spec.pool_key, _Pool())
            pool.fingerprint = spec.fingerprint
            chosen = None
            for environment in list(pool.environments):
                if environment.busy:
                    continue
                if environment.fingerprint != spec.fingerprint or not environment.reusable:
                    pool.environments.remove(environment)
                    doomed.append(environment)
                elif chosen is None:
                    chosen = environment
            if chosen is None:
                chosen = ExecutionEnvironment(spec, self._context)
                pool.environments.append(chosen)
            chosen.busy = True
        for environment in doomed:
            environment.stop()
        return chosen

    def _take_idle_environments(self) -> list[ExecutionEnvironment]:
        """Remove, under the lock, the environments idle for longer than idle_seconds (stopped by the caller)."""
        cutoff = self._clock() - self.idle_seconds
        idle = []
        for pool in self._pools.values():
            for environment in list(pool.environments):
                if not environment.busy and environment.idle_since < cutoff:
                    pool.environments.remove(environment)
                    idle.append(environment)
        return idle

    def _release(self, environment: ExecutionEnvironment) -> None:
        with self._lock:
            environment.busy = False
            environment.idle_since = self._clock()
            pool = self._pools.get(environment.spec.pool_key)
            keep = (
                not self._closed
                and pool is not None
                and environment in pool.environments
                and environment.fingerprint == pool.fingerprint
                and environment.reusable
            )
            if not keep and pool is not None and environment in pool.environments:
                pool.environments.remove(environment)
        if not keep:
            environment.stop()


def _invoked_arn(
    region: str, account_id: str, function_name: str, name_or_arn: str, qualifier: str | None
) -> str:
    """The ARN the runtime sees: qualified when the caller named a version or alias."""
    explicit = qualifier
    if name_or_arn.startswith("arn:"):
        parts = name_or_arn.split(":")
        if len(parts) == 8:
            explicit = parts[7]
    elif ":" in name_or_arn:
        explicit = name_or_arn.split(":", 1)[1]
    base = _function_arn(region, account_id, function_name)
    return base + (":" + explicit if explicit else "")


def _validated_event(payload: bytes) -> bytes:
    """The event as the runtime receives it: the payload, or {} when none; JSON is required."""
    if not payload.strip():
        return b"{}"
    try:
        json.loads(payload)
    except ValueError as error:
        raise InvalidRequestContentException(
            f"Could not parse request body into json: Could not parse payload into json: {error}"
        )
    return payload


def _decoded_client_context(client_context: str | None) -> str | None:
    if not client_context:
        return None
    try:
        text = base64.b64decode(client_context, validate=True).decode("utf-8")
        json.loads(text)
    except (binascii.Error, ValueError):
        raise InvalidRequestContentException("Client context must be a valid Base64-encoded JSON object.")
    return text


# --- moto integration ------------------------------------------------------------------------------------
_installed_manager: EnvironmentManager | None = None
_original_methods: dict[str, Any] = {}


def installed_manager() -> EnvironmentManager | None:
    """The manager moto's Lambda invocations currently go to, if any."""
    return _installed_manager


def _manager() -> EnvironmentManager:
    if _installed_manager is None:
        raise ServiceShutDown("no Lambda environment manager is installed")
    return _installed_manager


def _response_headers(result: InvocationResult, log_type: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json", "status": str(result.status_code)}
    if result.status_code == 200:
        headers["X-Amz-Executed-Version"] = result.executed_version
        if result.function_error:
            headers["X-Amz-Function-Error"] = result.function_error
        if log_type == "Tail":
            headers["X-Amz-Log-Result"] = result.log_result
    return headers


def _invoke_action(self: Any) -> tuple[int, dict[str, str], bytes]:
    """moto's Invoke, answered by the environment manager with Lambda's exact headers."""
    function_name = unquote(self.path.rsplit("/", 2)[-2])
    qualifier = self.querystring.get("Qualifier", [None])[0]
    invocation_type = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
    result = _manager().invoke_in(
        self.current_account,
        self.region,
        function_name,
        self.raw_body or b"",
        invocation_type=invocation_type,
        client_context=self.headers.get("X-Amz-Client-Context"),
        qualifier=qualifier,
    )
    return result.status_code, _response_headers(result, self.headers.get("X-Amz-Log-Type")), result.payload


def _invoke_async_action(self: Any) -> tuple[int, dict[str, str], bytes]:
    """moto's (deprecated) InvokeAsync: an Event invocation answered with 202 {"Status": 202}."""
    path = self.path.rstrip("/")
    function_name = unquote(path.rsplit("/", 2)[-2])
    _manager().invoke_in(
        self.current_account, self.region, function_name, self.raw_body or b"", invocation_type="Event"
    )
    return 202, {"content-type": "application/json", "status": "202"}, b'{"Status": 202}'


def _invoke_model(self: Any, body: Any, request_headers: Any, response_headers: Any) -> bytes:
    """moto's LambdaFunction.invoke (event sources, custom resources, rotations) through the manager."""
    headers = {str(k).lower(): v for k, v in dict(request_headers or {}).items()}
    payload = body.encode("utf-8") if isinstance(body, str) else bytes(body or b"")
    result = _manager().invoke_function(
        self,
        payload,
        headers.get("x-amz-invocation-type") or "RequestResponse",
        headers.get("x-amz-client-context"),
    )
    if response_headers is not None:
        response_headers.update(_response_headers(result, "Tail"))
        response_headers.pop("status", None)
        response_headers.pop("content-type", None)
    return result.payload


def _delete_function(self: Any, function_name: str, qualifier: str | None = None) -> None:
    _original_methods["delete_function"](self, function_name, qualifier)
    name, explicit = function_name, qualifier
    if name.startswith("arn:"):
        parts = name.split(":")
        name = parts[6]
        if len(parts) == 8:
            explicit = explicit or parts[7]
    elif ":" in name:
        name, explicit = name.split(":", 1)
    if _installed_manager is not None:
        _installed_manager.discard(self.account_id, self.region_name, name, explicit)


def install(manager: EnvironmentManager) -> None:
    """Route moto's Lambda invocations through manager (idempotent; a later call swaps the manager)."""
    global _installed_manager
    from moto.awslambda.models import LambdaBackend, LambdaFunction
    from moto.awslambda.responses import LambdaResponse

    _installed_manager = manager
    if _original_methods:
        return
    _original_methods.update(
        invoke_action=LambdaResponse.invoke,
        invoke_async_action=LambdaResponse.invoke_async,
        invoke_model=LambdaFunction.invoke,
        delete_function=LambdaBackend.delete_function,
    )
    LambdaResponse.invoke = _invoke_action  # type: ignore[method-assign]
    LambdaResponse.invoke_async = _invoke_async_action  # type: ignore[method-assign]
    LambdaFunction.invoke = _invoke_model  # type: ignore[method-assign]
    LambdaBackend.delete_function = _delete_function  # type: ignore[method-assign]


def uninstall() -> None:
    """Give moto its own Lambda invocation back."""
    global _installed_manager
    from moto.awslambda.models import LambdaBackend, LambdaFunction
    from moto.awslambda.responses import LambdaResponse

    _installed_manager = None
    if not _original_methods:
        return
    LambdaResponse.invoke = _original_methods["invoke_action"]  # type: ignore[method-assign]
    LambdaResponse.invoke_async = _original_methods["invoke_async_action"]  # type: ignore[method-assign]
    LambdaFunction.invoke = _original_methods["invoke_model"]  # type: ignore[method-assign]
    LambdaBackend.delete_function = _original_methods["delete_function"]  # type: ignore[method-assign]
    _original_methods.clear()
