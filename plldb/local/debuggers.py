"""Debugger support for the local side: debugpy (VS Code) and PyCharm.

debugpy
    The parent process (``plldb attach`` or ``plldb invoke``) calls ``debugpy.listen()`` once. Workers
    are followed through debugpy's subprocess support (``debugpy.configure(subProcess=True)``, the
    default, set explicitly here): while the parent is being debugged, debugpy rewrites the command
    line of every Python process it spawns so that the child starts under debugpy's server and
    connects back to the parent's adapter. A client attached to the parent is told about each worker
    (a ``startDebugging`` request, which VS Code turns into a child session by itself) before the
    worker runs any user code, so breakpoints apply in every worker from its first line. Workers
    started before any client attached run undebugged but stay registered with the adapter, which
    reports them to the client when it attaches; from then on they stop at breakpoints too. This was
    chosen over each worker calling ``debugpy.connect()`` because it needs nothing inside the worker
    and VS Code handles it natively: one attach configuration covers every function.

PyCharm
    Two ways. (1) The debug server (``--pycharm HOST:PORT``): start PyCharm's "Python Debug Server" run
    configuration, and every worker calls ``pydevd_pycharm.settrace()`` at start-up (the optional
    extra ``plldb[pycharm]``, or the ``pydevd-pycharm`` version matching your PyCharm build). This
    covers every worker automatically. settrace()'s parameters are read from its signature, because
    builds from 252 (PyCharm 2025.2) renamed them; its handshake is bounded (``pycharm_timeout()``),
    and each way of failing is reported as what it is. (2) "Run > Attach to Process": attach to a
    *worker*, not to the plldb process: PyCharm's attach does not follow subprocesses, and handlers
    run in workers. Workers show up in the list as ``python -S -u -m plldb.local.worker_main
    <LogicalId> <fd>`` (one per function, started at the function's first invocation and kept warm; a code change
    or a crash starts a new one, which needs attaching again).

VS Code launch.json
    plldb writes its own entry, "plldb: <stack>", into the repository root's .vscode/launch.json,
    editing the file as text so nothing else in it changes (it is JSON with comments).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import ipaddress
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from plldb.errors import PlldbError

DEBUGPY = "debugpy"
PYCHARM = "pycharm"
DEFAULT_DEBUGPY_PORT = 5678
WAIT_FOR_DEBUGGER_STEP_SECONDS = 0.1  # how often a held invocation looks for an attached debugger
VSCODE_REMOTE_ATTACH = "Python Debugger: Remote Attach"  # VS Code's own attach configuration


@dataclass(frozen=True)
class DebuggerConfig:
    """Which debugger the workers run under. For debugpy, ``port`` 0 lets the system pick one."""

    kind: Literal["debugpy", "pycharm"]
    host: str = "127.0.0.1"
    port: int = DEFAULT_DEBUGPY_PORT
    wait_for_client: bool = False

    def __post_init__(self) -> None:
        if self.kind not in (DEBUGPY, PYCHARM):
            raise PlldbError(f"Unknown debugger {self.kind!r}.", "Use 'debugpy' or 'pycharm'.")
        if not 0 <= self.port < 65536:
            raise PlldbError(f"Debugger port {self.port} is out of range.", "Use a port from 1 to 65535.")


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``: localhost, 127.0.0.0/8 or ::1 (names are not
    resolved: any other name may reach other machines)."""
    if host.strip("[]").lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int) -> str | None:
    """The warning to show when debugpy listens where other machines can reach it, else None."""
    if is_loopback(host):
        return None
    return (
        f"debugpy listens on {host}:{port} without authentication: anyone who can reach that port can run "
        "any code as you (--debugpy-allow-remote)."
    )


def parse_host_port(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (as given to --pycharm) -> (host, port)."""
    host, _, port_text = text.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise PlldbError(f"{text!r} is not HOST:PORT.", "For example --pycharm localhost:12345.")
    if not 0 < port < 65536:
        raise PlldbError(f"Port {port} in {text!r} is out of range.", "Use a port from 1 to 65535.")
    return (host.strip("[]") or default_host), port


# --- debugpy ---------------------------------------------------------------------------------------
_debugpy_lock = threading.Lock()
_debugpy_address: tuple[str, int] | None = None


def start_debugpy(config: DebuggerConfig, announce: Callable[[str], None] | None = None) -> tuple[str, int]:
    """Listen for VS Code once per process (later calls return the same address); wait if asked.

    ``announce`` receives one-line messages for the user: where to attach, and that we are waiting.
    """
    global _debugpy_address
    with _debugpy_lock:
        if _debugpy_address is None:
            # debugpy warns on every process that frozen stdlib modules may miss breakpoints;
            # workers start with -Xfrozen_modules=off, so the warning would only be noise.
            os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
            import debugpy

            debugpy.configure(subProcess=True)
            try:
                host, port = debugpy.listen((config.host, config.port))
            except (RuntimeError, OSError) as exc:
                raise PlldbError(
                    f"debugpy could not listen on {config.host}:{config.port} ({exc}).",
                    "Pick another port with --debugpy-port, or stop the process using it.",
                )
            _debugpy_address = (str(host), int(port))
            if announce is not None:
                announce(f"debugpy is listening on {host}:{port} (VS Code: '{VSCODE_REMOTE_ATTACH}').")
        address = _debugpy_address
    if config.wait_for_client:
        import debugpy

        if not debugpy.is_client_connected():
            if announce is not None:
                announce(f"Waiting for a debugger to attach to {address[0]}:{address[1]}...")
            debugpy.wait_for_client()
    return address


def debugger_attached() -> bool:
    """Whether a debugger (VS Code) is attached to this process's debugpy."""
    import debugpy

    return bool(debugpy.is_client_connected())


def wait_for_debugger(
    deadline_seconds: float,
    attached: Callable[[], bool] = debugger_attached,
    clock: Callable[[], float] = time.time,
    pause: Callable[[float], Any] = time.sleep,
) -> bool:
    """Hold until a debugger is attached (True) or the wall-clock ``deadline_seconds`` passes (False).

    ``--wait-for-client`` holds invocations here rather than before attaching, so calls made before VS
    Code is there reach this machine instead of the deployed code; each waits until its own deadline.
    """
    while not attached():
        remaining = deadline_seconds - clock()
        if remaining <= 0:
            return False
        pause(min(WAIT_FOR_DEBUGGER_STEP_SECONDS, remaining))
    return True


def prepare_parent(config: DebuggerConfig | None) -> None:
    """What the parent must do before it starts workers: debugpy must already be listening.

    Waiting for a client is the caller's business (start_debugpy with ``announce``), never done here.
    """
    if config is not None and config.kind == DEBUGPY:
        start_debugpy(dataclasses.replace(config, wait_for_client=False))


def worker_interpreter_options(config: DebuggerConfig | None) -> list[str]:
    """Interpreter flags for workers: under debugpy, stdlib modules must not be frozen to be debuggable."""
    if config is not None and config.kind == DEBUGPY:
        return ["-Xfrozen_modules=off"]
    return []


def worker_environment(config: DebuggerConfig | None) -> dict[str, str]:
    if config is not None and config.kind == DEBUGPY:
        return {"PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    return {}


def worker_settings(config: DebuggerConfig | None) -> dict[str, Any] | None:
    """What the worker itself must do at start-up (sent in its start message)."""
    if config is not None and config.kind == PYCHARM:
        # The bound is read here, in plldb's process: the worker sees only the handler's environment.
        return {"kind": PYCHARM, "host": config.host, "port": config.port, "timeout": pycharm_timeout()}
    return None


# --- PyCharm (runs inside the worker) --------------------------------------------------------------
# The handshake of pydevd-pycharm's settrace(): connect (pydevd allows the connect itself 10 s), answer
# the debug server's VERSION (501) and wait, with no limit of its own, for its RUN (101). A server that
# accepts the connection and never sends RUN would hold the worker forever; plldb gives up after this
# many seconds, or PLLDB_PYCHARM_TIMEOUT.
PYCHARM_TIMEOUT_SECONDS = 20.0
PYCHARM_TIMEOUT_VARIABLE = "PLLDB_PYCHARM_TIMEOUT"
PYCHARM_INSTALL_FIX = (
    "Run 'pip install \"plldb[pycharm]\"', or 'pip install pydevd-pycharm~=BUILD' with the build "
    "number of your PyCharm (Help > About)."
)
PYCHARM_SERVER_FIX = "Start PyCharm's 'Python Debug Server' run configuration with that host and port."
# settrace()'s names for sending the program's output to PyCharm's console: builds up to 251 use
# camel case, builds from 252 (PyCharm 2025.2) on use snake case.
_OUTPUT_PARAMETERS = (("stdout_to_server", "stderr_to_server"), ("stdoutToServer", "stderrToServer"))


class _HandshakeTimeout(BaseException):
    """Raised in the worker's main thread when the debug server did not finish the handshake in time
    (a BaseException, so no ``except Exception`` inside pydevd can swallow it)."""


def pycharm_timeout() -> float:
    """The handshake's bound in seconds: PLLDB_PYCHARM_TIMEOUT when it is a positive number, else 20."""
    try:
        value = float(os.environ.get(PYCHARM_TIMEOUT_VARIABLE, ""))
    except ValueError:
        return PYCHARM_TIMEOUT_SECONDS
    return value if value > 0 else PYCHARM_TIMEOUT_SECONDS


def pydevd_pycharm_version(module: Any) -> str:
    """The installed pydevd-pycharm build (the PyCharm build it matches), or "(unknown version)"."""
    version = getattr(module, "__version__", None)
    if isinstance(version, str) and version and not version.startswith("@@"):
        return version
    try:
        from importlib.metadata import version as distribution_version

        return distribution_version("pydevd-pycharm")
    except Exception:
        return "(unknown version)"


def settrace_arguments(settrace: Callable[..., Any], host: str, port: int) -> dict[str, Any] | None:
    """The keyword arguments this settrace() accepts for connecting a worker without stopping it and
    with its output also in PyCharm's console; None when it cannot be called like that at all."""
    try:
        parameters = inspect.signature(settrace).parameters
    except (TypeError, ValueError):
        parameters = None
    arguments: dict[str, Any] = {"port": port, "suspend": False}
    if parameters is not None:
        for stdout_name, stderr_name in _OUTPUT_PARAMETERS:
            if stdout_name in parameters and stderr_name in parameters:
                arguments.update({stdout_name: True, stderr_name: True})
                break
        try:
            inspect.signature(settrace).bind(host, **arguments)
        except TypeError:
            return None
    return arguments


@contextlib.contextmanager
def _handshake_deadline(seconds: float) -> Iterator[None]:
    """Interrupt the calling (main) thread with _HandshakeTimeout after ``seconds``."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signal_number: int, frame: Any) -> None:
        raise _HandshakeTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _SwitchableStream:
    """stderr while settrace() runs: what pydevd prints about a failed connection (a traceback) is
    kept from the developer's terminal; afterwards it writes through to the real stream, also when
    pydevd wrapped it to send stderr to PyCharm's console."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def write(self, text: str) -> int:
        return int(self.target.write(text) or len(text))

    def flush(self) -> None:
        self.target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def connect_worker_to_pycharm(host: str, port: int, timeout: float = PYCHARM_TIMEOUT_SECONDS) -> None:
    """Called by a worker at start-up: connect to PyCharm's debug server, without stopping.

    Works with every pydevd-pycharm build (settrace's parameters are read, not assumed). Each failure
    says what is true: the package is missing, it cannot be called the way plldb needs (a build
    mismatch), nothing listens at HOST:PORT, or what listens does not finish pydevd's handshake within
    ``timeout`` seconds (``pycharm_timeout()`` of the plldb process that started the worker).
    """
    try:
        import pydevd_pycharm  # type: ignore[import-not-found]
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "pydevd_pycharm":
            raise PlldbError(
                "PyCharm debugging needs the pydevd-pycharm package, which is not installed.",
                PYCHARM_INSTALL_FIX,
            )
        raise PlldbError(
            f"pydevd-pycharm is installed but cannot be imported ({type(exc).__name__}: {exc}).",
            f"Reinstall it: {PYCHARM_INSTALL_FIX[0].lower()}{PYCHARM_INSTALL_FIX[1:]}",
        )
    version = pydevd_pycharm_version(pydevd_pycharm)
    arguments = settrace_arguments(pydevd_pycharm.settrace, host, port)
    if arguments is None:
        raise PlldbError(
            f"pydevd-pycharm {version} has a settrace() that plldb cannot call "
            f"(its parameters are: {_parameters_text(pydevd_pycharm.settrace)}).",
            PYCHARM_INSTALL_FIX,
        )
    real_stderr = sys.stderr
    quiet = _SwitchableStream(io.StringIO())
    sys.stderr = quiet
    try:
        with _handshake_deadline(timeout):
            pydevd_pycharm.settrace(host, **arguments)
    except _HandshakeTimeout:
        raise PlldbError(
            f"The PyCharm debug server at {host}:{port} accepted the connection but did not finish "
            f"pydevd's handshake within {timeout:g} s.",
            f"Make sure that what listens there is PyCharm's 'Python Debug Server' and that it is running "
            f"(not paused at a prompt); to wait longer set {PYCHARM_TIMEOUT_VARIABLE}.",
        )
    except ConnectionRefusedError:
        raise PlldbError(f"No PyCharm debug server is listening at {host}:{port}.", PYCHARM_SERVER_FIX)
    except OSError as exc:
        raise PlldbError(
            f"pydevd-pycharm could not reach the PyCharm debug server at {host}:{port} "
            f"({exc.strerror or exc or type(exc).__name__}).",
            f"Check the host and port; {PYCHARM_SERVER_FIX}",
        )
    except TypeError as exc:
        raise PlldbError(
            f"pydevd-pycharm {version} refused plldb's settrace() call ({exc}).", PYCHARM_INSTALL_FIX
        )
    except Exception as exc:
        raise PlldbError(
            f"pydevd-pycharm {version} failed to connect to {host}:{port} ({type(exc).__name__}: {exc}).",
            f"{PYCHARM_SERVER_FIX} If it runs, {PYCHARM_INSTALL_FIX[0].lower()}{PYCHARM_INSTALL_FIX[1:]}",
        )
    finally:
        quiet.target = real_stderr
        if sys.stderr is quiet:
            sys.stderr = real_stderr


def _parameters_text(function: Callable[..., Any]) -> str:
    try:
        return ", ".join(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return "unknown"


# --- VS Code launch.json -----------------------------------------------------------------------------
def launch_configuration_name(stack_name: str) -> str:
    """plldb's own entry in launch.json, one per stack; VS Code's default names are left to the user."""
    return f"plldb: {stack_name}"


def vscode_launch_configuration(host: str, port: int, stack_name: str) -> dict[str, Any]:
    """The "attach" entry for .vscode/launch.json.

    It has no ``pathMappings``: the workers run the very files VS Code has open, on this machine, so
    the paths VS Code sends are the paths the workers run, wherever the workspace is opened (a
    mapping relative to ``${workspaceFolder}`` is right only when VS Code opens the folder attach ran
    in, and an absolute one maps a path to itself).
    """
    return {
        "name": launch_configuration_name(stack_name),
        "type": "debugpy",
        "request": "attach",
        "connect": {"host": host, "port": port},
        "justMyCode": False,
    }


def find_workspace(start: Path) -> Path:
    """The folder whose .vscode VS Code reads: the repository root (the nearest folder from ``start``
    up that has a .git, a folder or, in a worktree or submodule, a file), else ``start`` itself."""
    start = start.absolute()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return start


def write_vscode_launch(workspace: Path, config: dict[str, Any]) -> Path:
    """Put ``config`` in workspace/.vscode/launch.json, replacing only the entry of the same name.

    launch.json is JSON with comments and trailing commas. The file is edited as text: plldb's entry
    is replaced or added, and every other byte (other entries, comments, formatting) stays as it was.
    """
    path = workspace / ".vscode" / "launch.json"
    text = path.read_bytes().decode("utf-8") if path.exists() else ""
    if not text.strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {"version": "0.2.0", "configurations": [config]}
        path.write_text(json.dumps(document, indent=4) + "\n", encoding="utf-8")
        return path
    try:
        root = _JsoncParser(text).parse_document()
    except ValueError as exc:
        raise PlldbError(f"{path} is not valid JSON with comments: {exc}.", "Fix or remove the file.")
    if not isinstance(root.value, dict):
        raise PlldbError(f"{path} does not contain a JSON object.", "Fix or remove the file.")
    unit = _indent_unit(text, root)
    configurations = root.members.get("configurations")
    if configurations is None:
        member = f'"configurations": [\n{_indent_json(config, unit * 2, unit)}\n{unit}]'
        new_text = _insert_member(text, root, member, unit)
    elif not isinstance(configurations.value, list):
        raise PlldbError(f"'configurations' in {path} is not a list.", "Fix or remove the file.")
    else:
        new_text = _put_entry(text, configurations, config, unit)
    if "\r\n" in text and text.count("\n") == text.count("\r\n"):  # a Windows file stays one
        new_text = new_text.replace("\r\n", "\n").replace("\n", "\r\n")
    path.write_bytes(new_text.encode("utf-8"))
    return path


def _put_entry(text: str, configurations: _Node, config: dict[str, Any], unit: str) -> str:
    """``text`` with the entry named like ``config`` replaced, or ``config`` added at the end."""
    for element in configurations.elements:
        if isinstance(element.value, dict) and element.value.get("name") == config["name"]:
            indent = _line_indent(text, element.start)
            entry = _indent_json(config, indent, unit)[len(indent) :]
            return text[: element.start] + entry + text[element.end :]
    if configurations.elements:
        last = configurations.elements[-1]
        indent = _line_indent(text, last.start) or _leading_whitespace(text, configurations.start) + unit
        return text[: last.end] + ",\n" + _indent_json(config, indent, unit) + text[last.end :]
    indent = _leading_whitespace(text, configurations.start)
    inside = configurations.start + 1
    return text[:inside] + "\n" + _indent_json(config, indent + unit, unit) + "\n" + indent + text[inside:]


def _insert_member(text: str, root: _Node, member: str, unit: str) -> str:
    """``text`` with ``member`` ("name": value) added to the root object after its last member."""
    if root.members:
        last = max(root.members.values(), key=lambda node: node.end)
        return text[: last.end] + ",\n" + unit + member + text[last.end :]
    inside = root.start + 1
    return text[:inside] + "\n" + unit + member + "\n" + text[inside:]


def _line_indent(text: str, position: int) -> str:
    """The whitespace before ``position`` on its line (empty when something else precedes it)."""
    line_start = text.rfind("\n", 0, position) + 1
    prefix = text[line_start:position]
    return prefix if not prefix.strip() else ""


def _leading_whitespace(text: str, position: int) -> str:
    """The indentation of the line ``position`` is on."""
    line_start = text.rfind("\n", 0, position) + 1
    line = text[line_start:position]
    return line[: len(line) - len(line.lstrip(" \t"))]


def _indent_unit(text: str, root: _Node) -> str:
    """The file's indentation step: that of the root object's first member, else four spaces."""
    if root.keys:
        indent = _line_indent(text, min(root.keys.values()))
        if indent:
            return indent
    return "    "


def _indent_json(value: Any, indent: str, unit: str = "    ") -> str:
    """``value`` as JSON indented by ``unit`` per level, every line starting with ``indent``."""
    dumped = json.dumps(value, indent=unit if unit.strip() == "" else "    ")
    return "\n".join(indent + line for line in dumped.splitlines())


@dataclass
class _Node:
    """A parsed JSONC value and where it lies in the text (``end`` is exclusive)."""

    value: Any
    start: int
    end: int
    members: dict[str, _Node]
    elements: list[_Node]
    keys: dict[str, int] = dataclasses.field(default_factory=dict)  # where each member's name starts


class _JsoncParser:
    """JSON plus // and /* */ comments and trailing commas, keeping the position of every value."""

    _NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")

    def __init__(self, text: str) -> None:
        self.text = text
        self.index = 0

    def parse_document(self) -> _Node:
        node = self._value()
        self._skip()
        if self.index != len(self.text):
            self._fail("unexpected text after the end of the document")
        return node

    def _fail(self, message: str) -> None:
        line = self.text.count("\n", 0, self.index) + 1
        column = self.index - (self.text.rfind("\n", 0, self.index) + 1) + 1
        raise ValueError(f"{message} at line {line}, column {column}")

    def _skip(self) -> None:
        text = self.text
        while self.index < len(text):
            char = text[self.index]
            if char in " \t\r\n\ufeff":
                self.index += 1
            elif text.startswith("//", self.index):
                end = text.find("\n", self.index)
                self.index = len(text) if end < 0 else end + 1
            elif text.startswith("/*", self.index):
                end = text.find("*/", self.index + 2)
                if end < 0:
                    self._fail("unterminated comment")
                self.index = end + 2
            else:
                return

    def _value(self) -> _Node:
        self._skip()
        if self.index >= len(self.text):
            self._fail("unexpected end of the document")
        char = self.text[self.index]
        start = self.index
        if char == "{":
            return self._object()
        if char == "[":
            return self._array()
        if char == '"':
            return _Node(self._string(), start, self.index, {}, [])
        for literal, value in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(literal, self.index):
                self.index += len(literal)
                return _Node(value, start, self.index, {}, [])
        match = self._NUMBER.match(self.text, self.index)
        if match is None:
            self._fail(f"unexpected character {char!r}")
        assert match is not None
        self.index = match.end()
        return _Node(json.loads(match.group()), start, self.index, {}, [])

    def _string(self) -> str:
        decoder = json.JSONDecoder()
        try:
            value, end = decoder.raw_decode(self.text, self.index)
        except ValueError:
            self._fail("invalid string")
        self.index = end
        return str(value)

    def _object(self) -> _Node:
        start = self.index
        self.index += 1
        members: dict[str, _Node] = {}
        keys: dict[str, int] = {}
        while True:
            self._skip()
            if self.text.startswith("}", self.index):
                self.index += 1
                break
            if not self.text.startswith('"', self.index):
                self._fail("expected a property name")
            keys_start = self.index
            key = self._string()
            keys[key] = keys_start
            self._skip()
            if not self.text.startswith(":", self.index):
                self._fail("expected ':'")
            self.index += 1
            members[key] = self._value()
            self._skip()
            if self.text.startswith(",", self.index):
                self.index += 1
            elif not self.text.startswith("}", self.index):
                self._fail("expected ',' or '}'")
        value = {key: node.value for key, node in members.items()}
        return _Node(value, start, self.index, members, [], keys)

    def _array(self) -> _Node:
        start = self.index
        self.index += 1
        elements: list[_Node] = []
        while True:
            self._skip()
            if self.text.startswith("]", self.index):
                self.index += 1
                break
            elements.append(self._value())
            self._skip()
            if self.text.startswith(",", self.index):
                self.index += 1
            elif not self.text.startswith("]", self.index):
                self._fail("expected ',' or ']'")
        return _Node([node.value for node in elements], start, self.index, {}, elements)


def read_jsonc(text: str) -> Any:
    """The value of a JSON-with-comments document (ValueError with line and column otherwise)."""
    return _JsoncParser(text).parse_document().value
