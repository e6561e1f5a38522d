"""Recordings of real invocations, kept on the developer's machine to run again (`plldb replay`).

While `plldb attach` runs, each invocation that ran locally is written to one JSON file in the
project folder's ``.plldb/recordings/``: the event exactly as received, the context the handler saw
(function logical id and name, version, memory, request id, the deadline budget = deadline minus
arrival, client context, Cognito identity, invoked ARN, log names, trace id), the result or the
error, the duration and the handler's output lines.

What is never written: credentials. The role's credentials travel apart from the environment and
are not recorded; the function's environment is recorded as variable names only, unless
``record_env`` (then with values, still never a credential variable or plldb's own); and any
occurrence of a credential value known to plldb (the invocation's, and the developer's own
``AWS_*`` credential variables) in the event, the result, the error or the output is replaced by
``REDACTED`` before anything reaches the disk.

The folder is private: created 0700 with a ``.gitignore`` of its own (``*``), each file 0600,
written to a temporary file and renamed (a reader never sees half a recording). The folder is
capped (``Limits``: 200 MB and 1000 recordings by default, ``PLLDB_RECORDINGS_MAX_MB`` and
``PLLDB_RECORDINGS_MAX_COUNT`` change them); the oldest recordings go first.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from plldb import protocol
from plldb.errors import PlldbError
from plldb.local.worker import OutputCallback, lambda_runtime_variable, never_from_invocation

logger = logging.getLogger(__name__)

FOLDER = Path(".plldb") / "recordings"
FORMAT_VERSION = 1
MEGABYTE = 1024 * 1024
DEFAULT_MAX_MB = 200
DEFAULT_MAX_COUNT = 1000
MAX_MB_VARIABLE = "PLLDB_RECORDINGS_MAX_MB"
MAX_COUNT_VARIABLE = "PLLDB_RECORDINGS_MAX_COUNT"
# A store lists its folder again when the folder's mtime shows a change it did not make (another plldb
# in the same project, the developer removing files), and at the latest after this many of its writes.
RELIST_AFTER_WRITES = 100
# A handler printing without end would make one recording as large as the whole cap: its output is
# kept up to this size, and the number of lines left out is recorded.
MAX_OUTPUT_BYTES = MEGABYTE
REDACTED = "[credential removed by plldb]"
# Shorter values are not searched for: real access key ids have 20 characters, secrets 40 and session
# tokens hundreds, while a short value ("test") would deface every text it happens to occur in.
MIN_REDACTED_LENGTH = 16
GITIGNORE = "*\n"
FOLDER_MODE = 0o700
FILE_MODE = 0o600
RESULT_OK = "ok"
RESULT_ERROR = "error"


# --- Where and how much ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """The cap of a recordings folder: the oldest recordings are removed beyond either limit."""

    max_bytes: int = DEFAULT_MAX_MB * MEGABYTE
    max_count: int = DEFAULT_MAX_COUNT

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, or what ``PLLDB_RECORDINGS_MAX_MB`` and ``PLLDB_RECORDINGS_MAX_COUNT`` say."""
        environ = os.environ if environ is None else environ
        max_bytes = DEFAULT_MAX_MB * MEGABYTE
        max_count = DEFAULT_MAX_COUNT
        text = environ.get(MAX_MB_VARIABLE)
        if text is not None:
            try:
                megabytes = Decimal(text.strip())
            except InvalidOperation:
                megabytes = Decimal(0)
            if not megabytes.is_finite() or megabytes <= 0:
                raise PlldbError(
                    f"{MAX_MB_VARIABLE} must be a number of megabytes greater than 0, not {text!r}.",
                    f"Set it to {DEFAULT_MAX_MB} for example, or unset it.",
                )
            max_bytes = max(1, int(megabytes * MEGABYTE))
        text = environ.get(MAX_COUNT_VARIABLE)
        if text is not None:
            if not text.strip().isdecimal() or int(text) < 1:
                raise PlldbError(
                    f"{MAX_COUNT_VARIABLE} must be a whole number of recordings, at least 1, not {text!r}.",
                    f"Set it to {DEFAULT_MAX_COUNT} for example, or unset it.",
                )
            max_count = int(text)
        return cls(max_bytes=max_bytes, max_count=max_count)


def recordings_folder(project_dir: Path) -> Path:
    return Path(project_dir).absolute() / FOLDER


def format_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < MEGABYTE:
        return f"{size / 1024:.1f} KB"
    return f"{size / MEGABYTE:.1f} MB"


# --- One recording ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recording:
    """One recorded invocation, as read from its file."""

    path: Path
    size: int
    document: dict[str, Any]

    @property
    def id(self) -> str:
        return self.path.stem

    @property
    def function(self) -> dict[str, Any]:
        return dict(self.document.get("function") or {})

    @property
    def logical_id(self) -> str:
        return str(self.function.get("logicalId") or "")

    @property
    def function_name(self) -> str:
        return str(self.function.get("name") or "")

    @property
    def stack(self) -> str | None:
        stack = self.document.get("stack")
        return stack if isinstance(stack, str) and stack else None

    @property
    def context(self) -> dict[str, Any]:
        return dict(self.document.get("context") or {})

    @property
    def request_id(self) -> str:
        return str(self.context.get("requestId") or "")

    @property
    def recorded_at(self) -> datetime:
        return datetime.strptime(str(self.document["recordedAt"]), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=UTC
        )

    @property
    def event_json(self) -> str:
        return str(self.document["event"])

    @property
    def outcome(self) -> dict[str, Any]:
        return dict(self.document["outcome"])

    @property
    def ok(self) -> bool:
        return self.outcome.get("status") == RESULT_OK

    @property
    def error(self) -> dict[str, Any] | None:
        error = self.outcome.get("error")
        return dict(error) if isinstance(error, dict) else None

    @property
    def result_json(self) -> str | None:
        result = self.outcome.get("result")
        return result if isinstance(result, str) else None

    @property
    def duration_ms(self) -> float:
        return float(self.document.get("durationMs") or 0.0)

    @property
    def environment_names(self) -> list[str]:
        environment = self.document.get("environment") or {}
        return [str(name) for name in environment.get("names") or []]

    @property
    def environment_values(self) -> dict[str, str] | None:
        """The recorded values (attach --record-env), else None: only the names were recorded."""
        values = (self.document.get("environment") or {}).get("values")
        return {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else None

    def summary(self) -> dict[str, Any]:
        """What `plldb recordings --json` shows of it."""
        error = self.error or {}
        return {
            "id": self.id,
            "function": self.logical_id,
            "functionName": self.function_name,
            "stack": self.stack,
            "requestId": self.request_id,
            "recordedAt": self.document["recordedAt"],
            "result": RESULT_OK if self.ok else RESULT_ERROR,
            "errorType": None if self.ok else error.get("errorType"),
            "durationMs": round(self.duration_ms, 3),
            "size": self.size,
            "path": str(self.path),
        }

    def matches_function(self, pattern: str) -> bool:
        """fnmatch on the logical id path, its last part or the function's physical name."""
        names = (self.logical_id, self.logical_id.rsplit("/", 1)[-1], self.function_name)
        return any(fnmatch.fnmatchcase(name, pattern) for name in names if name)


def read_recording(path: Path) -> Recording:
    """Raises ValueError (the reason) when the file is not a recording plldb can use."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc))
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not JSON ({exc})")
    if not isinstance(document, dict) or document.get("format") != FORMAT_VERSION:
        raise ValueError(f"not a plldb recording of format {FORMAT_VERSION}")
    recording = Recording(path=path, size=len(data), document=document)
    try:
        _ = (recording.recorded_at, recording.event_json, recording.outcome["status"], recording.logical_id)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"incomplete recording ({type(exc).__name__}: {exc})")
    return recording


# --- The folder ------------------------------------------------------------------------------------
class RecordingStore:
    """A recordings folder: writes are atomic and private, the oldest recordings rotate out at the cap."""

    def __init__(self, folder: Path, limits: Limits | None = None) -> None:
        self.folder = Path(folder)
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        # The folder as this store last saw it (file name -> size), kept up to date by its own writes:
        # listing a full folder on every write would cost milliseconds of each invocation.
        self._index: dict[str, int] | None = None
        self._writes_since_listing = 0
        self._seen: int | None = None  # the folder's mtime after this store's last change to it

    def prepare(self) -> None:
        """Create the folder (0700, and its parent .plldb when missing) with its .gitignore."""
        parent = self.folder.parent
        if not parent.is_dir():
            parent.mkdir(mode=FOLDER_MODE, parents=True)
        if not self.folder.is_dir():
            self.folder.mkdir(mode=FOLDER_MODE)
        os.chmod(self.folder, FOLDER_MODE)
        gitignore = self.folder / ".gitignore"
        if not gitignore.is_file():
            self._write_atomically(gitignore, GITIGNORE.encode("ascii"))

    def write(self, document: dict[str, Any]) -> Recording:
        """Write one recording under its id (a new id if that one is taken), then rotate the folder."""
        data = (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode("utf-8", "surrogatepass")
        with self._lock:
            self.prepare()
            changed = self._seen is None or self._folder_mtime() != self._seen  # by someone else
            base = str(document["id"])
            path = self.folder / f"{base}.json"
            counter = 1
            while path.exists():
                counter += 1
                path = self.folder / f"{base}-{counter}.json"
            if path.stem != base:
                document = dict(document, id=path.stem)
                data = (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode(
                    "utf-8", "surrogatepass"
                )
            self._write_atomically(path, data)
            if self._index is None or changed or self._writes_since_listing >= RELIST_AFTER_WRITES:
                self._list()
            else:
                self._index[path.name] = len(data)
                self._writes_since_listing += 1
            self._trim(keep=path)
            self._seen = self._folder_mtime()
        return Recording(path=path, size=len(data), document=document)

    def rotate(self, keep: Path | None = None) -> list[str]:
        """Remove the oldest recordings until the folder is within both limits; ``keep`` always stays."""
        with self._lock:
            self._list()
            removed = self._trim(keep)
            self._seen = self._folder_mtime()
            return removed

    def _folder_mtime(self) -> int | None:
        try:
            return os.stat(self.folder).st_mtime_ns
        except OSError:
            return None

    def _list(self) -> None:
        """Read the folder again: another plldb in the same project, or the developer, changed it (its
        mtime moved since this store's last change), or RELIST_AFTER_WRITES writes went by (a change
        within the mtime's resolution)."""
        index = {}
        for path in self._files():
            try:
                index[path.name] = path.stat().st_size
            except FileNotFoundError:
                continue
        self._index = index
        self._writes_since_listing = 0

    def _trim(self, keep: Path | None) -> list[str]:
        index = self._index
        assert index is not None
        count, total = len(index), sum(index.values())
        if count <= self.limits.max_count and total <= self.limits.max_bytes:
            return []
        removed = []
        for name in sorted(index):  # oldest first: names start with the time of the recording
            if count <= self.limits.max_count and total <= self.limits.max_bytes:
                break
            if keep is not None and name == keep.name:
                continue
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()
            removed.append(name.removesuffix(".json"))
            count -= 1
            total -= index.pop(name)
        if removed:
            logger.info("Rotated out %d old recordings: %s", len(removed), ", ".join(removed))
        return removed

    def recordings(self, problems: list[str] | None = None) -> list[Recording]:
        """Every readable recording, newest first; each unreadable file is described in ``problems``."""
        found = []
        for path in self._files():
            try:
                found.append(read_recording(path))
            except ValueError as exc:
                if problems is not None:
                    problems.append(f"Skipped {path.name}: {exc}.")
        found.sort(key=lambda recording: (recording.recorded_at, recording.id), reverse=True)
        return found

    def _files(self) -> list[Path]:
        """The recording files, oldest first (their names start with the time they were recorded)."""
        try:
            names = sorted(
                name
                for name in os.listdir(self.folder)
                if name.endswith(".json") and not name.startswith(".")
            )
        except FileNotFoundError:
            return []
        return [self.folder / name for name in names]

    def _write_atomically(self, path: Path, data: bytes) -> None:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(descriptor, "wb") as stream:
                os.fchmod(stream.fileno(), FILE_MODE)
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


# --- Choosing a recording --------------------------------------------------------------------------
def select(
    recordings: Sequence[Recording],
    *,
    selector: str | None,
    last: bool,
    function: str | None,
    folder: Path,
) -> Recording:
    """The recording named by an id (or a unique prefix of one, or a request id), ``--last`` or the
    newest one of ``--function``. ``recordings`` are newest first. Raises PlldbError naming the fix."""
    if selector is not None and last:
        raise PlldbError("Give a recording id or --last, not both.", "Run 'plldb recordings' to see the ids.")
    if selector is None and not last and function is None:
        raise PlldbError(
            "Which recording? Give its id, --last, or --function F for the newest of F.",
            "Run 'plldb recordings' to see the ids.",
        )
    candidates = [r for r in recordings if function is None or r.matches_function(function)]
    if not recordings:
        raise PlldbError(
            f"There are no recordings in {folder}.",
            "plldb attach records every invocation that runs here; run it in this project first.",
        )
    if not candidates:
        names = ", ".join(sorted({r.logical_id for r in recordings}))
        raise PlldbError(
            f"No recording of a function matching {function!r}.", f"Recorded functions: {names}."
        )
    if selector is None:
        return candidates[0]
    exact = [r for r in candidates if r.id == selector]
    if exact:
        return exact[0]
    by_request = [r for r in candidates if r.request_id == selector]
    if by_request:
        return by_request[0]
    prefixed = [r for r in candidates if r.id.startswith(selector)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        shown = ", ".join(r.id for r in prefixed[:5]) + (", ..." if len(prefixed) > 5 else "")
        raise PlldbError(
            f"{selector!r} matches {len(prefixed)} recordings ({shown}).", "Give more of the id."
        )
    raise PlldbError(f"No recording {selector!r} in {folder}.", "Run 'plldb recordings' to see the ids.")


# --- Recording while attached ----------------------------------------------------------------------
def _now_id(now: float, request_id: str) -> tuple[str, str]:
    """(id, ISO time): the UTC time to the millisecond, then the first characters of the request id."""
    moment = datetime.fromtimestamp(now, UTC)
    milliseconds = moment.microsecond // 1000
    short = re.sub(r"[^A-Za-z0-9]", "", request_id)[:8] or "request"
    identifier = f"{moment:%Y%m%dT%H%M%S}{milliseconds:03d}Z-{short}"
    return identifier, f"{moment:%Y-%m-%dT%H:%M:%S}.{milliseconds:03d}Z"


def _reason(exc: Exception) -> str:
    """An OSError as "No space left on device (path)"; anything else as its text."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc)


def as_int(value: Any) -> int | None:
    """A recorded number, or None where the context had none (a recording is read back from JSON)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class Redactor:
    """Replaces every known credential value in a text (and in nested JSON values) by ``REDACTED``."""

    def __init__(self, secrets: Sequence[str]) -> None:
        unique = {
            secret for secret in secrets if isinstance(secret, str) and len(secret) >= MIN_REDACTED_LENGTH
        }
        # Longest first: a secret that contains another is removed whole.
        self._secrets = sorted(unique, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(key)): self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value


def developer_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The developer's own credential values in this process's environment (--local-credentials)."""
    environ = os.environ if environ is None else environ
    return [environ[name] for name in protocol.CREDENTIAL_VARIABLES if environ.get(name)]


def recorded_environment(
    environment: Mapping[str, str], configured: frozenset[str], with_values: bool
) -> dict[str, Any]:
    """What the worker takes from the invocation's environment, by name; with values only if asked.

    That is Lambda's defined runtime variables and the function's own configured ones, never a
    credential variable, plldb's instrumentation or anything else no invocation may set here.
    """
    kept = {
        name: value
        for name, value in environment.items()
        if (lambda_runtime_variable(name) or name in configured) and not never_from_invocation(name)
    }
    recorded: dict[str, Any] = {"names": sorted(kept)}
    if with_values:
        recorded["values"] = {name: kept[name] for name in sorted(kept)}
    return recorded


@dataclass
class _Pending:
    """An invocation being run: its output lines are collected until its result is known."""

    logical_id: str
    request_id: str
    arrived: float
    lines: list[dict[str, str]]
    output_bytes: int = 0
    dropped: int = 0


@dataclass
class _Finished:
    """A run whose recording waits for its invocation to be finished (its answer sent)."""

    pending: _Pending
    invocation: Any
    outcome: Any
    configured: frozenset[str]


class PendingRecording:
    """Handed to the runner for one invocation; ``done`` records its outcome."""

    def __init__(self, recorder: Recorder, pending: _Pending | None) -> None:
        self._recorder = recorder
        self._pending = pending

    def done(self, invocation: Any, outcome: Any, configured: frozenset[str]) -> None:
        """Record ``invocation`` (plldb.local.session.Invocation) and its ``outcome`` (Outcome) once
        the invocation is finished (``Recorder.finished``); ``configured``: the names of the
        function's own variables."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._recorder._release(pending)
            self._recorder._hold(_Finished(pending, invocation, outcome, configured))


class Recorder:
    """Records each invocation run by `plldb attach` into a RecordingStore, off the invocation's path.

    ``capture`` wraps the output callback of the worker pool; ``recording`` brackets one run, and
    ``finished`` says that the session is done with its invocation (its answer sent, or given up).
    Only then is its file written, by one background thread: an answer to AWS never waits for the
    disk, nor shares the processor with its own recording's work. ``close`` writes what is left and
    waits for the last ones. A failure to write is one warning, and recording goes on.
    """

    def __init__(
        self,
        store: RecordingStore | None,
        *,
        stack_name: str | None = None,
        record_env: bool = False,
        warn: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.stack_name = stack_name
        self.record_env = record_env
        self._warn = warn or logger.warning
        self._clock = clock
        self._developer_secrets = developer_secrets(environ)
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._unfinished: dict[str, list[_Finished]] = {}  # request id -> runs not yet finished
        self._closed = False
        self._writer = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="plldb-recorder") if store else None
        )
        self._failing = False

    @classmethod
    def disabled(cls) -> Recorder:
        return cls(None)

    @property
    def enabled(self) -> bool:
        return self.store is not None

    @property
    def folder(self) -> Path | None:
        return self.store.folder if self.store is not None else None

    def capture(self, output: OutputCallback) -> OutputCallback:
        """The output callback that also keeps each line for the recording of its invocation."""
        if not self.enabled:
            return output

        def tee(function_id: str, request_id: str, stream: str, line: str) -> None:
            self._keep(function_id, request_id, stream, line)
            output(function_id, request_id, stream, line)

        return tee

    @contextlib.contextmanager
    def recording(self, logical_id: str, request_id: str) -> Iterator[PendingRecording]:
        """Collect the output of one run until the runner calls ``done``; a run that raises (plldb
        failed, not the function) is not recorded."""
        if not self.enabled:
            yield PendingRecording(self, None)
            return
        pending = _Pending(logical_id, request_id, self._clock(), [])
        with self._lock:
            self._pending[(logical_id, request_id)] = pending
        try:
            yield PendingRecording(self, pending)
        finally:
            self._release(pending)

    def finished(self, request_id: str) -> None:
        """The session is done with ``request_id`` (its answer sent or given up, or only observed):
        write its recording now."""
        with self._lock:
            runs = self._unfinished.pop(request_id, [])
        for run in runs:
            self._submit(run)

    def close(self, wait: bool = True) -> None:
        """No recording is taken after this; runs never declared finished are written now. ``wait``:
        return once every one is on disk. Without it they are still written before the process exits
        (the interpreter joins the writer thread at exit), but attach's detach message is not held
        back by the disk."""
        with self._lock:
            self._closed = True
            runs = [run for held in self._unfinished.values() for run in held]
            self._unfinished.clear()
        for run in runs:
            self._submit(run)
        if self._writer is not None:
            self._writer.shutdown(wait=wait)

    def _release(self, pending: _Pending) -> None:
        with self._lock:
            if self._pending.get((pending.logical_id, pending.request_id)) is pending:
                del self._pending[(pending.logical_id, pending.request_id)]

    def _keep(self, function_id: str, request_id: str, stream: str, line: str) -> None:
        with self._lock:
            pending = self._pending.get((function_id, request_id))
            if pending is None:
                return
            size = len(line.encode("utf-8", "surrogatepass")) + 1
            if pending.output_bytes + size > MAX_OUTPUT_BYTES:
                pending.dropped += 1
                return
            pending.output_bytes += size
            pending.lines.append({"stream": stream, "line": line})

    def _hold(self, run: _Finished) -> None:
        with self._lock:
            if not self._closed:
                self._unfinished.setdefault(run.pending.request_id, []).append(run)
                return
        self._submit(run)  # after close: refused by the writer, and logged

    def _submit(self, run: _Finished) -> None:
        assert self._writer is not None
        try:
            self._writer.submit(self._write, run)
        except RuntimeError:  # closed: plldb is leaving, and the run was cut short by it
            logger.debug("Invocation %s was not recorded: the recorder is closed.", run.pending.request_id)

    def _write(self, run: _Finished) -> None:
        assert self.store is not None
        try:
            self.store.write(self.document(run.pending, run.invocation, run.outcome, run.configured))
        except (OSError, ValueError, TypeError) as exc:
            if not self._failing:
                reason = _reason(exc)
                self._warn(
                    f"Could not record invocation {run.pending.request_id} in {self.store.folder}: {reason}. "
                    "Invocations still run; the next one is recorded if the folder allows it."
                )
            self._failing = True
            return
        self._failing = False

    def document(
        self, pending: _Pending, invocation: Any, outcome: Any, configured: frozenset[str]
    ) -> dict[str, Any]:
        """The recording of one invocation, every credential value removed."""
        credentials = invocation.credentials or {}
        redactor = Redactor([*credentials.values(), *self._developer_secrets])
        identifier, recorded_at = _now_id(pending.arrived, pending.request_id)
        context = invocation.context
        deadline = as_int(context.get("deadlineMs"))
        result: dict[str, Any]
        if outcome.status_code == protocol.RESPONSE_CODE_OK:
            payload = outcome.payload if outcome.payload is not None else "null"
            result = {"status": RESULT_OK, "result": redactor.text(payload)}
        else:
            result = {"status": RESULT_ERROR, "error": redactor.value(dict(outcome.error or {}))}
        return {
            "format": FORMAT_VERSION,
            "id": identifier,
            "recordedAt": recorded_at,
            "stack": self.stack_name,
            "function": {
                "logicalId": pending.logical_id,
                "name": invocation.function_name,
                "handler": invocation.handler,
                "version": context.get("functionVersion") or "$LATEST",
                "memoryMB": as_int(context.get("memoryLimitInMB")),
            },
            "context": redactor.value(
                {
                    "requestId": pending.request_id,
                    "invokedFunctionArn": context.get("invokedFunctionArn"),
                    "deadlineBudgetMs": None if deadline is None else deadline - int(pending.arrived * 1000),
                    "clientContext": context.get("clientContext"),
                    "cognitoIdentity": context.get("cognitoIdentity"),
                    "tenantId": context.get("tenantId"),
                    "traceId": context.get("traceId"),
                    "logGroupName": context.get("logGroupName"),
                    "logStreamName": context.get("logStreamName"),
                }
            ),
            "environment": redactor.value(
                recorded_environment(invocation.environment, configured, self.record_env)
            ),
            "event": redactor.text(invocation.event_json),
            "outcome": result,
            "durationMs": round(float(outcome.duration_ms), 3),
            "output": redactor.value(pending.lines),
            "outputLinesDropped": pending.dropped,
        }


def open_recorder(
    project_dir: Path,
    *,
    enabled: bool,
    record_env: bool,
    stack_name: str | None,
    warn: Callable[[str], None],
    environ: Mapping[str, str] | None = None,
) -> Recorder:
    """The recorder of `plldb attach`; the folder is created now, so a problem shows before anything changes."""
    if not enabled:
        if record_env:
            raise PlldbError(
                "--record-env and --no-record cannot be used together.", "Pass only one of them."
            )
        return Recorder.disabled()
    store = RecordingStore(recordings_folder(project_dir), Limits.from_environment(environ))
    try:
        store.prepare()
    except OSError as exc:
        raise PlldbError(
            f"Cannot create the recordings folder {store.folder}: {exc.strerror or exc}.",
            "Fix its permissions, or pass --no-record.",
        )
    return Recorder(store, stack_name=stack_name, record_env=record_env, warn=warn, environ=environ)


# --- Comparing a replay with its recording ---------------------------------------------------------
def comparable(status_ok: bool, payload: str | None, error: Mapping[str, Any] | None) -> Any:
    """What must be equal for a replay to give "the same result": the result as a JSON value, or the
    error's type and message (its stack trace names lines, which any edit moves)."""
    if status_ok:
        try:
            return {"result": json.loads(payload if payload is not None else "null")}
        except ValueError:
            return {"resultText": payload}
    error = error or {}
    return {"errorType": error.get("errorType"), "errorMessage": error.get("errorMessage")}


def difference(recorded: Any, replayed: Any) -> list[str]:
    """A unified diff of the two (empty when they are equal)."""
    if recorded == replayed:
        return []

    def lines(value: Any) -> list[str]:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str).splitlines()

    return list(difflib.unified_diff(lines(recorded), lines(replayed), "recorded", "replayed", lineterm=""))
