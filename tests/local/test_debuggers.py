"""Debuggers: debugpy followed into workers over real DAP, PyCharm's settrace, VS Code launch.json."""

from __future__ import annotations

import json
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
    parse_host_port,
    read_jsonc,
    vscode_launch_configuration,
    write_vscode_launch,
)
from plldb.local.template import LocalFunction
from plldb.local.worker import Invocation, WorkerPool
from tests.dap import attach_to_debugpy, follow_subprocess

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
PYCHARM_HANDLER = """
    import os
    import sys


    def lambda_handler(event, context):
        return {"loaded": "pydevd_pycharm" in sys.modules, "pid": os.getpid()}
"""


def pycharm_function(tmp_path: Path) -> LocalFunction:
    code_dir = tmp_path / "fn"
    code_dir.mkdir()
    (code_dir / "app.py").write_text(textwrap.dedent(PYCHARM_HANDLER))
    return LocalFunction("PycharmFunction", code_dir, "app.lambda_handler", None, {}, [], 3, 128)


def test_each_worker_connects_to_the_pycharm_debug_server(tmp_path, monkeypatch):
    record = tmp_path / "settrace.jsonl"
    monkeypatch.setenv("PLLDB_TEST_SETTRACE_RECORD", str(record))
    function = pycharm_function(tmp_path)
    config = DebuggerConfig("pycharm", "127.0.0.1", 5690)
    with WorkerPool(debugger=config, extra_sys_path=[FIXTURES / "pycharm"]) as pool:
        result = json.loads(pool.run(function, invocation({})).payload)
    assert result["loaded"] is True
    assert [json.loads(line) for line in record.read_text().splitlines()] == [
        {
            "host": "127.0.0.1",
            "port": 5690,
            "suspend": False,
            "stdoutToServer": True,
            "stderrToServer": True,
            "pid": result["pid"],
        }
    ]


def test_missing_pydevd_pycharm_says_how_to_install_it(tmp_path):
    function = pycharm_function(tmp_path)
    with WorkerPool(debugger=DebuggerConfig("pycharm", "127.0.0.1", 5690), extra_sys_path=[]) as pool:
        with pytest.raises(PlldbError) as error:
            pool.run(function, invocation({}))
    assert error.value.message == (
        "The worker for PycharmFunction could not start: PyCharm debugging needs the pydevd-pycharm package, "
        "which is not installed. Run 'pip install \"plldb[pycharm]\"', or 'pip install pydevd-pycharm~=BUILD' "
        "with the build number of your PyCharm (Help > About)."
    )


def test_unreachable_pycharm_debug_server_is_reported(tmp_path):
    function = pycharm_function(tmp_path)
    config = DebuggerConfig("pycharm", "127.0.0.1", 1)
    with WorkerPool(debugger=config, extra_sys_path=[FIXTURES / "pycharm"]) as pool:
        with pytest.raises(PlldbError) as error:
            pool.run(function, invocation({}))
        assert pool.pids() == []
    assert error.value.message == (
        "The worker for PycharmFunction could not start: Could not connect to the PyCharm debug server at "
        "127.0.0.1:1 ([Errno 111] Connection refused). Start the 'Python Debug Server' run configuration "
        "in PyCharm first, with that host and port."
    )


# --- VS Code -----------------------------------------------------------------------------------------
def test_launch_configuration():
    assert vscode_launch_configuration("127.0.0.1", 5678, [Path("/srv/app/src")]) == {
        "name": "Python Debugger: Remote Attach",
        "type": "debugpy",
        "request": "attach",
        "connect": {"host": "127.0.0.1", "port": 5678},
        "justMyCode": False,
    }


def test_launch_configuration_maps_code_inside_the_workspace(tmp_path):
    (tmp_path / "src" / "orders").mkdir(parents=True)
    outside = tmp_path.parent / "elsewhere"
    config = vscode_launch_configuration(
        "localhost", 5679, [tmp_path / "src" / "orders", tmp_path, outside], workspace=tmp_path
    )
    assert config["pathMappings"] == [
        {"localRoot": "${workspaceFolder}", "remoteRoot": str(tmp_path.resolve())},
        {
            "localRoot": "${workspaceFolder}/src/orders",
            "remoteRoot": str((tmp_path / "src" / "orders").resolve()),
        },
    ]
    json.dumps(config)


def test_write_launch_creates_the_file(tmp_path):
    config = vscode_launch_configuration("127.0.0.1", 5678, [])
    path = write_vscode_launch(tmp_path, config)
    assert path == tmp_path / ".vscode" / "launch.json"
    assert json.loads(path.read_text()) == {"version": "0.2.0", "configurations": [config]}


EXISTING_LAUNCH = """\
{
    // Use IntelliSense to learn about possible attributes.
    "version": "0.2.0",
    "configurations": [
        {
            "name": "Python: Current File", // keep me
            "type": "debugpy",
            "request": "launch",
            "program": "${file}",
        },
        /* the old plldb entry */
        {
            "name": "Python Debugger: Remote Attach",
            "type": "debugpy",
            "request": "attach",
            "connect": {"host": "localhost", "port": 1111},
        },
        {"name": "Tests", "type": "debugpy", "request": "launch", "module": "pytest"},
    ],
}
"""


def test_write_launch_replaces_only_its_entry_and_keeps_comments(tmp_path):
    path = tmp_path / ".vscode" / "launch.json"
    path.parent.mkdir()
    path.write_text(EXISTING_LAUNCH)
    config = vscode_launch_configuration("127.0.0.1", 5678, [])
    write_vscode_launch(tmp_path, config)
    text = path.read_text()
    for comment in ("// Use IntelliSense", "// keep me", "/* the old plldb entry */"):
        assert comment in text
    document = read_jsonc(text)
    assert [entry["name"] for entry in document["configurations"]] == [
        "Python: Current File",
        "Python Debugger: Remote Attach",
        "Tests",
    ]
    assert document["configurations"][1] == config
    assert document["configurations"][0]["program"] == "${file}"
    write_vscode_launch(tmp_path, config)
    assert read_jsonc(path.read_text()) == document


def test_write_launch_appends_when_absent(tmp_path):
    path = tmp_path / ".vscode" / "launch.json"
    path.parent.mkdir()
    path.write_text('{\n    "version": "0.2.0",\n    "configurations": [] // none yet\n}\n')
    config = vscode_launch_configuration("127.0.0.1", 5678, [])
    write_vscode_launch(tmp_path, config)
    assert read_jsonc(path.read_text())["configurations"] == [config]
    other = dict(config, name="Second")
    write_vscode_launch(tmp_path, other)
    assert read_jsonc(path.read_text())["configurations"] == [config, other]
    assert "// none yet" in path.read_text()


def test_write_launch_refuses_a_broken_file(tmp_path):
    path = tmp_path / ".vscode" / "launch.json"
    path.parent.mkdir()
    path.write_text('{\n  "configurations": [\n    {"name": "x",,}\n  ]\n}\n')
    with pytest.raises(PlldbError) as error:
        write_vscode_launch(tmp_path, vscode_launch_configuration("127.0.0.1", 5678, []))
    assert error.value.one_line() == (
        f"{path} is not valid JSON with comments: expected a property name at line 3, column 18. "
        "Fix or remove the file."
    )
