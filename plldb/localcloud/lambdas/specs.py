"""What shapes a Lambda execution environment: a function version's configuration, code and layers
(read from moto), the Invoke API's refusals, and the unpacked deployment packages and layers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.awslambda.exceptions import LambdaClientError

from plldb.localcloud.constants import ACCOUNT_ID
from plldb.localcloud.moto_extensions.awslambda import logging_config

DEFAULT_ACCOUNT_ID = ACCOUNT_ID
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
    # LoggingConfig: where (and how) Lambda sends the function's logs.
    log_group: str = ""
    log_format: str = "Text"
    application_log_level: str = ""  # JSON only
    system_log_level: str = ""  # JSON only

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
            [self.log_group, self.log_format, self.application_log_level, self.system_log_level],
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
    logging = logging_config(fn)
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
        log_group=logging["LogGroup"],
        log_format=logging["LogFormat"],
        application_log_level=logging.get("ApplicationLogLevel", ""),
        system_log_level=logging.get("SystemLogLevel", ""),
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
