"""The pool: warm workers per function, as Lambda keeps execution environments.

Each function gets its own worker processes (``process``). A worker stays warm between invocations,
so module state persists; concurrent invocations of one function get separate workers. A worker
whose source changed (any file under its code or layer folders, compared by path, mtime and size:
``source_fingerprint``), whose deployed configuration changed (its handler's variables, or the
function as the template describes it), or that crashed, is replaced before its next invocation; a
busy worker always finishes first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from plldb import protocol
from plldb.errors import PlldbError
from plldb.local import debuggers
from plldb.local.debuggers import DebuggerConfig
from plldb.local.invocation import Invocation, Outcome
from plldb.local.template import LocalFunction
from plldb.local.worker.hints import missing_module_hint
from plldb.local.worker.output import OutputCallback
from plldb.local.worker.process import STOP_GRACE_SECONDS, WorkerProcess
from plldb.local.worker.runtime_plan import FunctionRuntime, RuntimePlan, plan_function, version_tag
from plldb.local.worker.support_folders import SupportFolders
from plldb.local.worker.variables import worker_environment

logger = logging.getLogger(__name__)

WarningCallback = Callable[[str], None]
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
        "cdk.out",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".idea",
        ".vscode",
    }
)


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
        runtimes: RuntimePlan | None = None,
        python: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``runtimes``: each function's interpreter and packages, as ``plan_runtimes`` chose them at
        start (functions it does not cover are planned at their first invocation, with ``python``).
        ``extra_sys_path``: site-packages folders after the code and layers, instead of the project's
        environment. ``environ``: the developer's environment (default: this process's, read at each
        invocation). ``warn`` receives one-line warnings."""
        self._output = output
        self._debugger = debugger
        self._local_credentials = local_credentials
        self._extra_sys_path = extra_sys_path
        self._warn = warn or logger.warning
        self._runtimes = runtimes
        self._python = python
        self._environ = environ
        self._lock = threading.Lock()
        self._idle: dict[str, list[WorkerProcess]] = {}
        self._workers: set[WorkerProcess] = set()
        self._planned: dict[str, FunctionRuntime] = {}
        self._plan_lock = threading.Lock()
        self._closed = False
        debuggers.prepare_parent(debugger)
        self._support = SupportFolders(debugger)

    def run(self, function: LocalFunction, invocation: Invocation) -> Outcome:
        """Run one invocation to its end and return its result (blocking)."""
        runtime = self.runtime(function)
        environment, per_invocation = worker_environment(
            function,
            invocation,
            self._local_credentials,
            self._debugger,
            self._environ,
            runtime=version_tag(runtime.version),
        )
        fingerprint = source_fingerprint(function)
        worker = self._take_idle(function, environment, fingerprint)
        if worker is None:
            worker = WorkerProcess(
                function,
                environment=environment,
                fingerprint=fingerprint,
                output=self._output,
                debugger=self._debugger,
                runtime=runtime,
                support=self._support,
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
                self._hint(function, runtime, init_error)
                duration = (time.monotonic() - started) * 1000
                return Outcome(protocol.RESPONSE_CODE_ERROR, None, init_error, duration)
        try:
            result = worker.invoke(invocation, per_invocation)
        finally:
            self._release(worker)
        if result.error is not None:
            self._hint(function, runtime, result.error)
        return result

    def runtime(self, function: LocalFunction) -> FunctionRuntime:
        """The function's interpreter and packages: as planned at start, else planned now.

        Planning runs once per function, however many of its invocations arrive together.
        """
        if self._extra_sys_path is None and self._runtimes is not None:
            planned = self._runtimes.get(function)
            if planned is not None:
                return planned
        with self._plan_lock:
            known = self._planned.get(function.logical_id)
            if known is not None and known.function == function:
                return known
            planned = plan_function(
                function, python=self._python, environ=self._environ, site_dirs=self._extra_sys_path
            )
            self._planned[function.logical_id] = planned
        warning = RuntimePlan({function.logical_id: planned}).warning()
        if warning and (known is None or known.interpreter != planned.interpreter):
            self._warn(warning)
        return planned

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
        self._support.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _hint(self, function: LocalFunction, runtime: FunctionRuntime, error: Mapping[str, Any]) -> None:
        hint = missing_module_hint(function, runtime, error)
        if hint is not None:
            self._warn(hint)

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
