"""Debuggers: debugpy followed into workers over real DAP, PyCharm's settrace, VS Code launch.json."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from plldb.errors import PlldbError
from plldb.local.debuggers import (
    DebuggerConfig,
    find_workspace,
    parse_host_port,
    pycharm_timeout,
    read_jsonc,
    settrace_arguments,
    vscode_launch_configuration,
    write_vscode_launch,
)
from plldb.local.invocation import Invocation
from plldb.local.template import LocalFunction
from plldb.local.worker import WorkerPool
from tests.dap import attach_to_debugpy, follow_subprocess
from tests.local.fixtures.pycharm.debug_server import PydevdDebugServer

FIXTURES = Path(__file__).parent / "fixtures"
DAP_TIMEOUT = 60


def invocation(event: dict) -> Invocation:
    context = {"functionName": "fn", "deadlineMs": int(time.time() * 1000) + 30_000}
    return Invocation(str(uuid.uuid4()), json.dumps(event), context, {}, None)


# --- debugpy ----------------------------------------------------------------------------------------
HANDLER = """
    def lambda_handler(event, context):
        order = event["order"]
        total = order["quantity"] * 3
        return {"total": total}
"""


def test_worker_started_before_the_client_attached_stops_at_breakpoints(tmp_path):
    """The usual `plldb attach` order: a warm worker exists, then VS Code attaches and sets breakpoints."""
    code_dir = tmp_path / "fn"
    code_dir.mkdir()
    (code_dir / "app.py").write_text(textwrap.dedent(HANDLER))
    driver = subprocess.Popen(
        [sys.executable, str(FIXTURES / "debug_driver.py"), str(code_dir), "app.lambda_handler"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    clients = []
    try:
        assert driver.stdin is not None and driver.stdout is not None
        port = int(driver.stdout.readline().split()[1])
        driver.stdin.write(json.dumps({"order": {"quantity": 1}}) + "\n")
        driver.stdin.flush()
        assert json.loads(driver.stdout.readline()) == {"total": 3}

        parent = attach_to_debugpy("127.0.0.1", port, DAP_TIMEOUT)
        clients.append(parent)
        child = follow_subprocess(parent, "127.0.0.1", port, {str(code_dir / "app.py"): [5]}, DAP_TIMEOUT)
        clients.append(child)
        driver.stdin.write(json.dumps({"order": {"quantity": 7}}) + "\n")
        driver.stdin.flush()
        stopped = child.wait_for_event("stopped", timeout=DAP_TIMEOUT)
        assert stopped["reason"] == "breakpoint"
        variables = child.variables_of_top_frame(stopped["threadId"])
        assert variables["total"]["value"] == "21"
        order = child.children(variables["order"]["variablesReference"])
        assert order["'quantity'"]["value"] == "7"
        child.request("continue", {"threadId": stopped["threadId"]})
        assert json.loads(driver.stdout.readline()) == {"total": 21}
        driver.stdin.close()
        assert driver.wait(DAP_TIMEOUT) == 0
    finally:
        for client in clients:
            client.close()
        if driver.poll() is None:
            driver.kill()
            driver.wait()


def test_debugpy_config_validation_and_addresses():
    assert DebuggerConfig("debugpy") == DebuggerConfig("debugpy", "127.0.0.1", 5678, False)
    with pytest.raises(PlldbError) as error:
        DebuggerConfig("pdb")  # type: ignore[arg-type]
    assert error.value.one_line() == "Unknown debugger 'pdb'. Use 'debugpy' or 'pycharm'."
    assert parse_host_port("localhost:12345") == ("localhost", 12345)
    assert parse_host_port("12345") == ("127.0.0.1", 12345)
    assert parse_host_port("[::1]:9000") == ("::1", 9000)
    with pytest.raises(PlldbError) as error:
        parse_host_port("localhost:http")
    assert error.value.message == "'localhost:http' is not HOST:PORT."


# --- PyCharm ---------------------------------------------------------------------------------------
PYCHARM = FIXTURES / "pycharm"
PYCHARM_HANDLER = """
    import os
    import sys


    def lambda_handler(event, context):
        wire = sys.modules.get("pydevd_wire")
        calls = list(wire.calls) if wire is not None else []
        return {"loaded": "pydevd_pycharm" in sys.modules, "pid": os.getpid(), "settrace": calls}
"""


def pycharm_function(tmp_path: Path, logical_id: str = "PycharmFunction") -> LocalFunction:
    code_dir = tmp_path / logical_id
    code_dir.mkdir()
    (code_dir / "app.py").write_text(textwrap.dedent(PYCHARM_HANDLER))
    return LocalFunction(logical_id, code_dir, "app.lambda_handler", None, {}, [], 3, 128)


def pycharm_pool(port: int, build: str | None, output: list[tuple[str, ...]] | None = None) -> WorkerPool:
    """Workers that connect to a debug server at 127.0.0.1:PORT with the stand-in pydevd-pycharm of
    ``build`` (None: no pydevd-pycharm at all)."""
    return WorkerPool(
        output=(lambda *line: output.append(line)) if output is not None else None,
        debugger=DebuggerConfig("pycharm", "127.0.0.1", port),
        extra_sys_path=[PYCHARM / build, PYCHARM] if build else [],
    )


def closed_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("build", "version", "output_names"),
    [
        ("build_263", "263.7307.50", ("stdout_to_server", "stderr_to_server")),
        ("build_251", "251.29188.40", ("stdoutToServer", "stderrToServer")),
    ],
)
def test_every_worker_finishes_pydevds_handshake_with_the_settrace_of_its_build(
    tmp_path: Path, build: str, version: str, output_names: tuple[str, str]
) -> None:
    """Builds up to 251 name settrace()'s output parameters in camel case, later ones in snake case:
    plldb reads the signature, so both connect (252+ used to fail with "unexpected keyword argument
    'stdoutToServer'"). Each function's worker connects; its handler runs once the server said RUN."""
    functions = [pycharm_function(tmp_path, "FirstFunction"), pycharm_function(tmp_path, "SecondFunction")]
    with PydevdDebugServer() as server, pycharm_pool(server.port, build) as pool:
        results = [json.loads(pool.run(function, invocation({})).payload) for function in functions]
        connections = server.wait_for_connections(2)
    assert [(connection.debuggee_version, connection.running) for connection in connections] == [
        (version, True),
        (version, True),
    ]
    assert [result["loaded"] for result in results] == [True, True]
    calls = sorted((call for result in results for call in result["settrace"]), key=lambda c: c["pid"])
    assert calls == sorted(
        (
            {
                "host": "127.0.0.1",
                "port": server.port,
                "suspend": False,
                output_names[0]: True,
                output_names[1]: True,
                "build": version,
                "pid": result["pid"],
            }
            for result in results
        ),
        key=lambda c: c["pid"],
    )


def test_no_debug_server_listening_is_said_in_one_line_without_pydevds_traceback(tmp_path: Path) -> None:
    port = closed_port()
    output: list[tuple[str, ...]] = []
    with pycharm_pool(port, "build_263", output) as pool:
        with pytest.raises(PlldbError) as error:
            pool.run(pycharm_function(tmp_path), invocation({}))
        assert pool.pids() == []
    assert error.value.message == (
        f"The worker for PycharmFunction could not start: No PyCharm debug server is listening at "
        f"127.0.0.1:{port}. Start PyCharm's 'Python Debug Server' run configuration with that host and port."
    )
    assert output == []  # pydevd's "Could not connect to ..." and traceback stay out of the terminal


def test_a_debug_server_that_never_finishes_the_handshake_is_reported_within_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """settrace() waits for RUN with no limit of its own: plldb stops the worker after
    PLLDB_PYCHARM_TIMEOUT seconds (20 by default) and says what happened."""
    monkeypatch.setenv("PLLDB_PYCHARM_TIMEOUT", "0.5")
    with PydevdDebugServer(answer=False) as server, pycharm_pool(server.port, "build_263") as pool:
        with pytest.raises(PlldbError) as error:
            pool.run(pycharm_function(tmp_path), invocation({}))
        [connection] = server.wait_for_connections(1)
        assert pool.pids() == []
    assert (connection.running, connection.debuggee_version) == (False, None)
    assert error.value.message == (
        f"The worker for PycharmFunction could not start: The PyCharm debug server at 127.0.0.1:{server.port} "
        "accepted the connection but did not finish pydevd's handshake within 0.5 s. Make sure that what "
        "listens there is PyCharm's 'Python Debug Server' and that it is running (not paused at a prompt); "
        "to wait longer set PLLDB_PYCHARM_TIMEOUT."
    )


def test_a_settrace_plldb_cannot_call_is_reported_as_a_build_mismatch(tmp_path: Path) -> None:
    with PydevdDebugServer() as server, pycharm_pool(server.port, "unknown_build") as pool:
        with pytest.raises(PlldbError) as error:
            pool.run(pycharm_function(tmp_path), invocation({}))
        assert server.connections == []
    assert error.value.message == (
        "The worker for PycharmFunction could not start: pydevd-pycharm 999.1.1 has a settrace() that plldb "
        "cannot call (its parameters are: host, session_token, port, suspend). Run 'pip install "
        "\"plldb[pycharm]\"', or 'pip install pydevd-pycharm~=BUILD' with the build number of your PyCharm "
        "(Help > About)."
    )


def test_missing_pydevd_pycharm_says_how_to_install_it(tmp_path: Path) -> None:
    with pycharm_pool(closed_port(), None) as pool:
        with pytest.raises(PlldbError) as error:
            pool.run(pycharm_function(tmp_path), invocation({}))
    assert error.value.message == (
        "The worker for PycharmFunction could not start: PyCharm debugging needs the pydevd-pycharm package, "
        "which is not installed. Run 'pip install \"plldb[pycharm]\"', or 'pip install pydevd-pycharm~=BUILD' "
        "with the build number of your PyCharm (Help > About)."
    )


def test_a_pydevd_pycharm_that_cannot_be_imported_is_not_called_missing(tmp_path: Path) -> None:
    with pycharm_pool(closed_port(), "broken_build") as pool:
        with pytest.raises(PlldbError) as error:
            pool.run(pycharm_function(tmp_path), invocation({}))
    assert error.value.message == (
        "The worker for PycharmFunction could not start: pydevd-pycharm is installed but cannot be imported "
        "(ModuleNotFoundError: No module named '_pydevd_bundle'). Reinstall it: run 'pip install "
        "\"plldb[pycharm]\"', or 'pip install pydevd-pycharm~=BUILD' with the build number of your PyCharm "
        "(Help > About)."
    )


def test_settrace_arguments_follow_the_signature_and_the_bound_reads_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def snake(host=None, stdout_to_server=False, stderr_to_server=False, port=5678, suspend=True):
        pass

    def camel(host=None, stdoutToServer=False, stderrToServer=False, port=5678, suspend=True):  # noqa: N803
        pass

    def neither(host=None, port=5678, suspend=True, **options):
        pass

    def keyword_only_host(*, host, port, suspend):
        pass

    assert settrace_arguments(snake, "h", 1) == {
        "port": 1,
        "suspend": False,
        "stdout_to_server": True,
        "stderr_to_server": True,
    }
    assert settrace_arguments(camel, "h", 1) == {
        "port": 1,
        "suspend": False,
        "stdoutToServer": True,
        "stderrToServer": True,
    }
    assert settrace_arguments(neither, "h", 1) == {"port": 1, "suspend": False}
    assert settrace_arguments(keyword_only_host, "h", 1) is None
    for value, expected in [(None, 20.0), ("2.5", 2.5), ("0", 20.0), ("-1", 20.0), ("soon", 20.0)]:
        if value is None:
            monkeypatch.delenv("PLLDB_PYCHARM_TIMEOUT", raising=False)
        else:
            monkeypatch.setenv("PLLDB_PYCHARM_TIMEOUT", value)
        assert pycharm_timeout() == expected


# --- VS Code -----------------------------------------------------------------------------------------
def test_launch_configuration_is_plldbs_own_entry_without_path_mappings() -> None:
    assert vscode_launch_configuration("127.0.0.1", 5678, "hello-sam") == {
        "name": "plldb: hello-sam",
        "type": "debugpy",
        "request": "attach",
        "connect": {"host": "127.0.0.1", "port": 5678},
        "justMyCode": False,
    }


def test_the_workspace_is_the_repository_root_else_the_current_folder(tmp_path: Path) -> None:
    assert not any((folder / ".git").exists() for folder in (tmp_path, *tmp_path.parents))
    repository = tmp_path / "repo"
    (repository / ".git").mkdir(parents=True)
    (repository / "services" / "orders").mkdir(parents=True)
    assert find_workspace(repository / "services" / "orders") == repository
    assert find_workspace(repository) == repository
    worktree = tmp_path / "worktree"
    (worktree / "app").mkdir(parents=True)
    (worktree / ".git").write_text("gitdir: /elsewhere/.git/worktrees/worktree\n")
    assert find_workspace(worktree / "app") == worktree
    loose = tmp_path / "loose" / "app"
    loose.mkdir(parents=True)
    assert find_workspace(loose) == loose


def test_write_launch_creates_the_file(tmp_path: Path) -> None:
    config = vscode_launch_configuration("127.0.0.1", 5678, "hello-sam")
    path = write_vscode_launch(tmp_path, config)
    assert path == tmp_path / ".vscode" / "launch.json"
    assert json.loads(path.read_text()) == {"version": "0.2.0", "configurations": [config]}


# VS Code's own "Remote Attach" entry (here pointing at a container) with comments and trailing commas.
VSCODE_LAUNCH = """\
{
    // Use IntelliSense to learn about possible attributes.
    "version": "0.2.0",
    "configurations": [
        {
            "name": "Python Debugger: Remote Attach",
            "type": "debugpy",
            "request": "attach",
            "connect": {"host": "localhost", "port": 5678},
            "pathMappings": [{"localRoot": "${workspaceFolder}", "remoteRoot": "/app"}], // Docker
        },
        /* the tests */
        {"name": "Tests", "type": "debugpy", "request": "launch", "module": "pytest"},
    ],
}
"""


def plldb_entry(indent: str, port: int, stack: str = "hello-sam") -> str:
    lines = [
        "{",
        f'    "name": "plldb: {stack}",',
        '    "type": "debugpy",',
        '    "request": "attach",',
        '    "connect": {',
        '        "host": "127.0.0.1",',
        f'        "port": {port}',
        "    },",
        '    "justMyCode": false',
        "}",
    ]
    return "\n".join(indent + line for line in lines)


def test_write_launch_adds_plldbs_entry_and_changes_no_other_byte(tmp_path: Path) -> None:
    path = tmp_path / ".vscode" / "launch.json"
    path.parent.mkdir()
    path.write_text(VSCODE_LAUNCH)
    tests_entry = '        {"name": "Tests", "type": "debugpy", "request": "launch", "module": "pytest"}'

    write_vscode_launch(tmp_path, vscode_launch_configuration("127.0.0.1", 5678, "hello-sam"))
    first = VSCODE_LAUNCH.replace(tests_entry + ",", tests_entry + ",\n" + plldb_entry(" " * 8, 5678) + ",")
    assert path.read_text() == first

    # Attaching again (another port) replaces plldb's entry only.
    write_vscode_launch(tmp_path, vscode_launch_configuration("127.0.0.1", 6123, "hello-sam"))
    assert path.read_text() == first.replace(plldb_entry(" " * 8, 5678), plldb_entry(" " * 8, 6123))

    # Another stack gets an entry of its own.
    write_vscode_launch(tmp_path, vscode_launch_configuration("127.0.0.1", 5679, "orders"))
    assert path.read_text() == first.replace(plldb_entry(" " * 8, 5678), plldb_entry(" " * 8, 6123)).replace(
        plldb_entry(" " * 8, 6123) + ",",
        plldb_entry(" " * 8, 6123) + ",\n" + plldb_entry(" " * 8, 5679, "orders") + ",",
    )
    assert [entry["name"] for entry in read_jsonc(path.read_text())["configurations"]] == [
        "Python Debugger: Remote Attach",
        "Tests",
        "plldb: hello-sam",
        "plldb: orders",
    ]


def test_write_launch_adds_configurations_to_a_file_without_them_keeping_its_comments(tmp_path: Path) -> None:
    path = tmp_path / ".vscode" / "launch.json"
    path.parent.mkdir()
    path.write_text('{\n  // my settings\n  "version": "0.2.0", // keep me\n}\n')
    write_vscode_launch(tmp_path, vscode_launch_configuration("127.0.0.1", 5678, "hello-sam"))
    entry = "\n".join(
        "    " + line
        for line in json.dumps(
            vscode_launch_configuration("127.0.0.1", 5678, "hello-sam"), indent=2
        ).splitlines()
    )
    assert path.read_text() == (
        '{\n  // my settings\n  "version": "0.2.0",\n  "configurations": [\n'
        + entry
        + "\n  ], // keep me\n}\n"
    )


def test_write_launch_fills_an_empty_list_and_follows_tab_indentation(tmp_path: Path) -> None:
    path = tmp_path / ".vscode" / "launch.json"
    path.parent.mkdir()
    path.write_text('{\n\t"version": "0.2.0",\n\t"configurations": [] // none yet\n}\n')
    config = vscode_launch_configuration("127.0.0.1", 5678, "hello-sam")
    write_vscode_launch(tmp_path, config)
    entry = "\n".join("\t\t" + line for line in json.dumps(config, indent="\t").splitlines())
    assert path.read_text() == (
        '{\n\t"version": "0.2.0",\n\t"configurations": [\n' + entry + "\n\t] // none yet\n}\n"
    )
    assert read_jsonc(path.read_text())["configurations"] == [config]


def test_write_launch_keeps_windows_line_endings(tmp_path: Path) -> None:
    path = tmp_path / ".vscode" / "launch.json"
    path.parent.mkdir()
    path.write_bytes(b'{\r\n    "version": "0.2.0",\r\n    "configurations": []\r\n}\r\n')
    config = vscode_launch_configuration("127.0.0.1", 5678, "hello-sam")
    write_vscode_launch(tmp_path, config)
    expected = (
        '{\n    "version": "0.2.0",\n    "configurations": [\n' + plldb_entry(" " * 8, 5678) + "\n    ]\n}\n"
    )
    assert path.read_bytes() == expected.replace("\n", "\r\n").encode()


def test_write_launch_refuses_a_broken_file_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / ".vscode" / "launch.json"
    path.parent.mkdir()
    broken = '{\n  "configurations": [\n    {"name": "x",,}\n  ]\n}\n'
    path.write_text(broken)
    with pytest.raises(PlldbError) as error:
        write_vscode_launch(tmp_path, vscode_launch_configuration("127.0.0.1", 5678, "hello-sam"))
    assert error.value.one_line() == (
        f"{path} is not valid JSON with comments: expected a property name at line 3, column 18. "
        "Fix or remove the file."
    )
    assert path.read_text() == broken


class _Clock:
    """Wall-clock time that moves only when the code under test pauses."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def test_a_held_invocation_runs_as_soon_as_a_debugger_is_attached() -> None:
    from plldb.local.debuggers import WAIT_FOR_DEBUGGER_STEP_SECONDS, wait_for_debugger

    clock = _Clock()
    answers = iter([False, False, True])
    assert wait_for_debugger(
        1010.0, attached=lambda: next(answers), clock=lambda: clock.now, pause=clock.pause
    )
    assert clock.pauses == [WAIT_FOR_DEBUGGER_STEP_SECONDS] * 2


def test_a_held_invocation_gives_up_at_its_deadline_and_never_pauses_past_it() -> None:
    from plldb.local.debuggers import wait_for_debugger

    clock = _Clock()
    assert not wait_for_debugger(1000.25, attached=lambda: False, clock=lambda: clock.now, pause=clock.pause)
    assert clock.pauses == pytest.approx([0.1, 0.1, 0.05])
    assert clock.now == pytest.approx(1000.25)
