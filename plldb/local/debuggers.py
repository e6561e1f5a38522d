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
    and VS Code handles it natively: one "Remote Attach" covers every function.

PyCharm
    Two ways. (1) The debug server (``--pycharm HOST:PORT``): start PyCharm's "Python Debug Server" run
    configuration, and every worker calls ``pydevd_pycharm.settrace()`` at start-up (the optional
    extra ``plldb[pycharm]``, or the ``pydevd-pycharm`` version matching your PyCharm build). This
    covers every worker automatically. (2) "Run > Attach to Process": attach to a *worker*, not to
    the plldb process: PyCharm's attach does not follow subprocesses, and handlers run in workers.
    Workers show up in the list as ``python -u -m plldb.local.worker_main <LogicalId> <fd>`` (one per
    function, started at the function's first invocation and kept warm; a code change or a crash
    starts a new one, which needs attaching again).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from plldb.errors import PlldbError

DEBUGPY = "debugpy"
PYCHARM = "pycharm"
DEFAULT_DEBUGPY_PORT = 5678
LAUNCH_CONFIGURATION_NAME = "Python Debugger: Remote Attach"


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


def debugpy_address() -> tuple[str, int] | None:
    """Where this process's debugpy adapter accepts clients, once start_debugpy() has run."""
    return _debugpy_address


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
                announce(f"debugpy is listening on {host}:{port} (VS Code: '{LAUNCH_CONFIGURATION_NAME}').")
        address = _debugpy_address
    if config.wait_for_client:
        import debugpy

        if not debugpy.is_client_connected():
            if announce is not None:
                announce(f"Waiting for a debugger to attach to {address[0]}:{address[1]}...")
            debugpy.wait_for_client()
    return address


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
        return {"kind": PYCHARM, "host": config.host, "port": config.port}
    return None


# --- PyCharm (runs inside the worker) --------------------------------------------------------------
PYCHARM_INSTALL_FIX = (
    "Run 'pip install \"plldb[pycharm]\"', or 'pip install pydevd-pycharm~=BUILD' with the build "
    "number of your PyCharm (Help > About)."
)


def connect_worker_to_pycharm(host: str, port: int) -> None:
    """Called by a worker at start-up: connect to PyCharm's debug server, without stopping."""
    try:
        import pydevd_pycharm  # type: ignore[import-not-found]
    except ImportError:
        raise PlldbError(
            "PyCharm debugging needs the pydevd-pycharm package, which is not installed.", PYCHARM_INSTALL_FIX
        )
    try:
        pydevd_pycharm.settrace(host, port=port, suspend=False, stdoutToServer=True, stderrToServer=True)
    except Exception as exc:
        raise PlldbError(
            f"Could not connect to the PyCharm debug server at {host}:{port} ({exc}).",
            "Start the 'Python Debug Server' run configuration in PyCharm first, with that host and port.",
        )


# --- VS Code launch.json -----------------------------------------------------------------------------
def vscode_launch_configuration(
    host: str, port: int, code_dirs: Iterable[Path], workspace: Path | None = None
) -> dict[str, Any]:
    """The "Remote Attach" entry for .vscode/launch.json.

    Paths are the same on both sides when VS Code runs on this machine, so mappings are only added
    for code folders inside ``workspace``, written relative to ``${workspaceFolder}``: that keeps
    breakpoints working when the workspace is opened through a symlink or from another machine.
    """
    configuration: dict[str, Any] = {
        "name": LAUNCH_CONFIGURATION_NAME,
        "type": "debugpy",
        "request": "attach",
        "connect": {"host": host, "port": port},
        "justMyCode": False,
    }
    if workspace is not None:
        root = workspace.resolve()
        mappings = []
        for code_dir in sorted({Path(d).resolve() for d in code_dirs}):
            if code_dir == root or root in code_dir.parents:
                relative = code_dir.relative_to(root).as_posix()
                local_root = "${workspaceFolder}" + ("" if relative == "." else "/" + relative)
                mappings.append({"localRoot": local_root, "remoteRoot": str(code_dir)})
        if mappings:
            configuration["pathMappings"] = mappings
    return configuration


def write_vscode_launch(workspace: Path, config: dict[str, Any]) -> Path:
    """Add ``config`` to workspace/.vscode/launch.json, replacing only the entry with the same name.

    launch.json is JSON with comments (JSONC): the file is edited in place, so comments, other
    entries and formatting elsewhere survive.
    """
    path = workspace / ".vscode" / "launch.json"
    entry_text = _indent_json(config, "        ")
    if not path.exists() or not path.read_text(encoding="utf-8").strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {"version": "0.2.0", "configurations": [config]}
        path.write_text(json.dumps(document, indent=4) + "\n", encoding="utf-8")
        return path
    text = path.read_text(encoding="utf-8")
    try:
        root = _JsoncParser(text).parse_document()
    except ValueError as exc:
        raise PlldbError(f"{path} is not valid JSON with comments: {exc}.", "Fix or remove the file.")
    if not isinstance(root.value, dict):
        raise PlldbError(f"{path} does not contain a JSON object.", "Fix or remove the file.")
    configurations = root.members.get("configurations")
    if configurations is None:
        document = dict(root.value)
        document["configurations"] = [config]
        path.write_text(json.dumps(document, indent=4) + "\n", encoding="utf-8")
        return path
    if not isinstance(configurations.value, list):
        raise PlldbError(f"'configurations' in {path} is not a list.", "Fix or remove the file.")
    for element in configurations.elements:
        if isinstance(element.value, dict) and element.value.get("name") == config["name"]:
            new_text = text[: element.start] + entry_text.lstrip() + text[element.end :]
            break
    else:
        if configurations.elements:
            last = configurations.elements[-1]
            new_text = text[: last.end] + ",\n" + entry_text + text[last.end :]
        else:
            inside = configurations.start + 1
            new_text = text[:inside] + "\n" + entry_text + "\n    " + text[inside:]
    path.write_text(new_text, encoding="utf-8")
    return path


def _indent_json(value: Any, indent: str) -> str:
    return "\n".join(indent + line for line in json.dumps(value, indent=4).splitlines())


@dataclass
class _Node:
    """A parsed JSONC value and where it lies in the text (``end`` is exclusive)."""

    value: Any
    start: int
    end: int
    members: dict[str, _Node]
    elements: list[_Node]


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
        while True:
            self._skip()
            if self.text.startswith("}", self.index):
                self.index += 1
                break
            if not self.text.startswith('"', self.index):
                self._fail("expected a property name")
            key = self._string()
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
        return _Node(value, start, self.index, members, [])

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
