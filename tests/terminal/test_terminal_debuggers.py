"""`plldb attach --debugpy` as a developer uses it: the launch.json entry it writes, taken as VS Code
takes it, attaches a real DAP client (tests/dap.py) that stops at a breakpoint of the invoked
function, whichever folder the client runs from. And debugpy on an address other machines can
reach needs the developer's explicit consent.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from plldb.local.debuggers import read_jsonc
from tests.dap import attach_to_debugpy, follow_subprocess
from tests.terminal.support import PrintingApp, invoke
from tests.terminal.terminal import WAIT_LIMIT

pytestmark = pytest.mark.slow

READY = "Ready: 1 function(s) instrumented. Invoke them as usual; press Ctrl-C to detach."


def line_of(path: Path, text: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_the_written_vscode_entry_stops_at_a_breakpoint_from_any_working_directory(
    local_cloud: Any,
    printing_app: PrintingApp,
    attach_in_terminal: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The project is a repository; the developer runs attach from a folder inside it.
    (printing_app.directory / ".git").mkdir(exist_ok=True)
    launch = printing_app.directory / ".vscode" / "launch.json"
    launch.unlink(missing_ok=True)
    terminal = attach_in_terminal(
        printing_app.directory / "src",
        printing_app.stack_name,
        "--template",
        "../template.yaml",
        "--debugpy",
        "--debugpy-port",
        "0",
        "--write-vscode",
    )
    terminal.wait_for_text(READY)
    assert f"Added it to {launch}." in terminal.logical_lines()

    # VS Code, opened anywhere, reads the entry: nothing in it depends on the workspace folder.
    [entry] = [
        configuration
        for configuration in read_jsonc(launch.read_text())["configurations"]
        if configuration["name"] == f"plldb: {printing_app.stack_name}"
    ]
    assert entry == {
        "name": f"plldb: {printing_app.stack_name}",
        "type": "debugpy",
        "request": "attach",
        "connect": {"host": "127.0.0.1", "port": entry["connect"]["port"]},
        "justMyCode": False,
    }
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    source = printing_app.directory / "src" / "app.py"
    breakpoint_line = line_of(source, 'lines = int(event.get("lines", 0))')
    host, port = entry["connect"]["host"], entry["connect"]["port"]
    parent = attach_to_debugpy(host, port, WAIT_LIMIT)
    clients = [parent]
    try:
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(invoke, local_cloud, printing_app.function, {"tag": "dap", "lines": 2})
            child = follow_subprocess(parent, host, port, {str(source): [breakpoint_line]}, WAIT_LIMIT)
            clients.append(child)
            stopped = child.wait_for_event("stopped", timeout=WAIT_LIMIT)
            assert stopped["reason"] == "breakpoint"
            frames = child.request(
                "stackTrace", {"threadId": stopped["threadId"], "startFrame": 0, "levels": 1}
            )
            top = frames["stackFrames"][0]
            assert (top["source"]["path"], top["line"]) == (str(source), breakpoint_line)
            assert child.variables_of_top_frame(stopped["threadId"])["tag"]["value"] == "'dap'"
            assert not call.done()  # the invoker waits while the developer is at the breakpoint
            child.request("continue", {"threadId": stopped["threadId"]})
            error, answer = call.result(WAIT_LIMIT)
        assert (error, answer["tag"], answer["lines"]) == (None, "dap", 2)
    finally:
        for client in clients:
            client.close()
    terminal.ctrl_c()
    assert terminal.wait_for_exit() == 0
    assert terminal.logical_lines()[-1] == "Detached: every function is restored."


def test_debugpy_on_an_address_others_can_reach_needs_consent_and_says_why(
    printing_app: PrintingApp, attach_in_terminal: Any, attach_environment: dict[str, str]
) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "plldb", "attach", "--stack-name", printing_app.stack_name, "--debugpy"]
        + ["--debugpy-host", "0.0.0.0", "--debugpy-port", "5999"],
        cwd=printing_app.directory,
        env=attach_environment,
        capture_output=True,
        text=True,
        timeout=WAIT_LIMIT,
    )
    assert (refused.returncode, refused.stdout, refused.stderr.splitlines()) == (
        1,
        "",
        [
            "Error: --debugpy-host 0.0.0.0 would let other machines connect to debugpy, which has no "
            "authentication: anyone who can reach the port could run any code as you. Add "
            "--debugpy-allow-remote if that is what you want; to debug from another machine safely, keep "
            "127.0.0.1 and forward the port over SSH (ssh -L 5999:127.0.0.1:5999)."
        ],
    )

    terminal = attach_in_terminal(
        printing_app.directory,
        printing_app.stack_name,
        "--debugpy",
        "--debugpy-host",
        "0.0.0.0",
        "--debugpy-allow-remote",
        "--debugpy-port",
        "0",
    )
    terminal.wait_for_text(READY)
    lines = terminal.logical_lines()
    warnings = [line for line in lines if line.startswith("debugpy listens on 0.0.0.0:")]
    assert len(warnings) == 1
    assert re.fullmatch(
        r"debugpy listens on 0\.0\.0\.0:\d+ without authentication: anyone who can reach that port can run "
        r"any code as you \(--debugpy-allow-remote\)\.",
        warnings[0],
    )
    terminal.ctrl_c()
    assert terminal.wait_for_exit() == 0


def test_the_debugpy_options_explain_themselves() -> None:
    from plldb.cli.attach import attach

    help_texts = {option.name: option.help for option in attach.params if option.name.startswith("debugpy")}
    assert help_texts == {
        "debugpy_host": "The address debugpy listens on for VS Code. Only this machine can connect to the "
        "default; another address needs --debugpy-allow-remote.",
        "debugpy_allow_remote": "Allow a --debugpy-host that other machines can reach. debugpy has no "
        "authentication: anyone who can reach the port can run any code as you.",
        "debugpy_port": "The port debugpy listens on (0: any free port).",
    }


def test_wait_for_client_holds_an_invocation_until_the_debugger_attaches(
    local_cloud: Any, printing_app: PrintingApp, attach_in_terminal: Any
) -> None:
    """The functions are instrumented at once; a call made before VS Code is there waits on this machine
    (not in the deployed code) and runs here, under the debugger, once it attaches."""
    terminal = attach_in_terminal(
        printing_app.directory,
        printing_app.stack_name,
        "--debugpy",
        "--debugpy-port",
        "0",
        "--wait-for-client",
    )
    terminal.wait_for_text(READY)
    [announced] = [line for line in terminal.logical_lines() if line.startswith("Until a debugger attaches")]
    match = re.fullmatch(
        r"Until a debugger attaches to (127\.0\.0\.1):(\d+), invocations wait for it here "
        r"\(--wait-for-client\), each until its deadline\.",
        announced,
    )
    assert match is not None, announced
    host, port = match.group(1), int(match.group(2))
    source = printing_app.directory / "src" / "app.py"
    breakpoint_line = line_of(source, 'lines = int(event.get("lines", 0))')
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(invoke, local_cloud, printing_app.function, {"tag": "held", "lines": 1})
        terminal.wait_for_text("waits for a debugger at 127.0.0.1:")
        assert not call.done()  # held: the hold is announced before any debugger exists
        parent = attach_to_debugpy(host, port, WAIT_LIMIT)
        clients = [parent]
        try:
            child = follow_subprocess(parent, host, port, {str(source): [breakpoint_line]}, WAIT_LIMIT)
            clients.append(child)
            stopped = child.wait_for_event("stopped", timeout=WAIT_LIMIT)
            assert child.variables_of_top_frame(stopped["threadId"])["tag"]["value"] == "'held'"
            child.request("continue", {"threadId": stopped["threadId"]})
            error, answer = call.result(WAIT_LIMIT)
        finally:
            for client in clients:
                client.close()
    assert (error, answer["tag"], answer["lines"]) == (None, "held", 1)
    terminal.ctrl_c()
    assert terminal.wait_for_exit() == 0
