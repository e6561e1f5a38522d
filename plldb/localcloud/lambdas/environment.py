"""One Lambda execution environment: a runtime process with its own Runtime API server, reused while healthy."""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plldb.localcloud.lambdas.bootstrap import launch_command, runtime_directory
from plldb.localcloud.lambdas.specs import (
    CREDENTIAL_SECONDS,
    INIT_TIMEOUT_SECONDS,
    TIMED_OUT,
    FunctionSpec,
    ServiceShutDown,
    _ArtifactCache,
)
from plldb.localcloud.runtime_api import RESPONSE_SIZE_TOO_LARGE, Invocation, Outcome, RuntimeApi
from plldb.protocol import EXECUTE_API_ENDPOINT_VARIABLE

logger = logging.getLogger(__name__)

_SIGNAL_DESCRIPTIONS = {
    signal.SIGKILL: "killed",
    signal.SIGTERM: "terminated",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGINT: "interrupt",
    signal.SIGBUS: "bus error",
}


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
        self.log_group_name = spec.log_group or "/aws/lambda/" + spec.function_name
        self.log_path = context.work_dir / "logs" / spec.function_name / (self.environment_id + ".log")
        self.runtime_dir = context.work_dir / "runtimes"  # its /var/runtime is in here, once started
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
        library_path = [str(code_dir), str(code_dir / "lib"), str(opt_dir / "lib")]
        if os.environ.get("LD_LIBRARY_PATH"):
            library_path.insert(0, os.environ["LD_LIBRARY_PATH"])
        variables = {
            # Defaults a function may override.
            "PATH": f"{python_dir}:/usr/local/bin:/usr/bin/:/bin:{opt_dir / 'bin'}",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LD_LIBRARY_PATH": ":".join(library_path),
        }
        variables.update(spec.variables)
        if spec.log_format == "JSON":
            # What awslambdaric reads to write the function's logging records as JSON, at its level.
            variables["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
            variables["AWS_LAMBDA_LOG_LEVEL"] = spec.application_log_level
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
                "LAMBDA_RUNTIME_DIR": str(self.runtime_dir),
                "AWS_ENDPOINT_URL": self._context.endpoint_url,
                # One endpoint serves every host: no "sync-" (StartSyncExecution) or other host prefix.
                "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
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
        self.runtime_dir = runtime_directory(self._context.work_dir / "runtimes", opt_dir, self.spec.runtime)
        variables = self.environment_variables(code_dir, opt_dir, role_credentials(self.spec))
        wrapper = variables.get("AWS_LAMBDA_EXEC_WRAPPER", "")
        command = launch_command(self.runtime_dir, wrapper, translate_lambda_path(wrapper, code_dir, opt_dir))
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
        self._append_log(self._start_line(invocation.request_id))
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

    def _system_logs_json(self) -> bool:
        return self.spec.log_format == "JSON"

    def _system_record(self, event_type: str, record: dict[str, Any]) -> str:
        """One system log event as Lambda writes it with the JSON log format (a Telemetry API event)."""
        return json.dumps({"time": _timestamp(), "type": event_type, "record": record}) + "\n"

    def _system_logs_sent(self) -> bool:
        """start and report are INFO events: a SystemLogLevel of WARN leaves them out."""
        return not self._system_logs_json() or self.spec.system_log_level != "WARN"

    def _start_line(self, request_id: str) -> str:
        if not self._system_logs_sent():
            return ""
        if self._system_logs_json():
            return self._system_record(
                "platform.start", {"requestId": request_id, "version": self.spec.version}
            )
        return f"START RequestId: {request_id} Version: {self.spec.version}\n"

    def _write_report(self, invocation: Invocation, outcome: Outcome, started: float, ended: float) -> None:
        """END and REPORT lines (and the timeout line) in Lambda's format, or platform.report in JSON."""
        request_id = invocation.request_id
        begin = invocation.dispatched_at if invocation.dispatched_at is not None else started
        duration_ms = max((ended - begin) * 1000.0, 0.0)
        memory = self._max_memory_mb()
        ready_at = self._api.ready_at
        init_ms = None
        if ready_at is not None and not self._init_duration_reported:
            self._init_duration_reported = True
            init_ms = (ready_at - self._launched_at) * 1000.0
        if not self._system_logs_sent():
            return
        if self._system_logs_json():
            self._append_log(self._report_record(request_id, outcome, duration_ms, memory, init_ms))
            return
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
        if memory is not None:
            report += f"Max Memory Used: {memory} MB\t"
        if init_ms is not None:
            report += f"Init Duration: {init_ms:.2f} ms\t"
        lines.append(report)
        self._append_log("\n".join(lines) + "\n")

    def _report_record(
        self, request_id: str, outcome: Outcome, duration_ms: float, memory: int | None, init_ms: float | None
    ) -> str:
        metrics: dict[str, Any] = {
            "durationMs": round(duration_ms, 3),
            "billedDurationMs": math.ceil(duration_ms),
            "memorySizeMB": self.spec.memory_size,
        }
        if memory is not None:
            metrics["maxMemoryUsedMB"] = memory
        if init_ms is not None:
            metrics["initDurationMs"] = round(init_ms, 3)
        record: dict[str, Any] = {"requestId": request_id, "metrics": metrics}
        if outcome.error_type == TIMED_OUT:
            record.update(status="timeout", errorType=TIMED_OUT)
        elif outcome.is_error:
            record.update(status="error", errorType=outcome.error_type or "Unknown")
        else:
            record["status"] = "success"
        return self._system_record("platform.report", record)

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
