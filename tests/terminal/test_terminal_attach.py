"""`plldb attach` in a pseudo-terminal (the live status view, not piped output), end to end.

Handlers print 0 to 10 000 lines per call, 50 calls at a time five by five, calls are made while the
terminal is not reading, and Ctrl-C comes at every stage of a session. Every call is answered, every
printed line reaches the screen once and in order, Ctrl-C always detaches and restores the function,
and the terminal is left as it was (cursor shown, same settings). Order is proved by what the screen
shows and what the invoker receives, never by waiting for time to pass.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import termios
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.cloud_state import configuration, wait_for
from tests.terminal.support import PrintingApp, invoke, printed_lines, warm_up
from tests.terminal.terminal import WAIT_LIMIT, Terminal

pytestmark = pytest.mark.slow

CALLS = 50
AT_A_TIME = 3  # calls in flight at once: each needs a Lambda environment of its own
HELD_CALLS = 5  # calls running (held by their handler) when Ctrl-C comes
READY = "Ready: 1 function(s) instrumented. Invoke them as usual; press Ctrl-C to detach."
DETACHED = "Detached: every function is restored."
READ_BUFFER_FULL = 4000  # what a Linux pseudo-terminal reports unread (FIONREAD) once its 4 KB buffer is full


def columns(line: str) -> list[str]:
    """The cells of a status view row (rich separates them with two or more spaces)."""
    return re.split(r"\s{2,}", line.strip())


def final_status(lines: list[str]) -> list[str]:
    """The status view as the session left it on screen: its header and the function table."""
    header = max(index for index, line in enumerate(lines) if line.startswith("plldb: stack "))
    return lines[header : header + 3]


def assert_terminal_restored(terminal: Terminal) -> None:
    """The live view hid the cursor; at the end it is shown again and the settings are as before."""
    assert terminal.screen.cursor_hidden_count >= 1
    assert terminal.screen.cursor_visible
    assert terminal.settings() == terminal.settings_before
    assert terminal.screen.unknown == []


def expected_lines(answer: dict[str, Any]) -> list[tuple[str, int, int]]:
    count = answer["lines"]
    return [(answer["requestId"][:8], index, count) for index in range(1, count + 1)]


def outcome(error: str | None, answer: dict[str, Any]) -> tuple[str | None, str, Any]:
    """(None, tag, lines) of an answer, or the Lambda error the invoker got instead, in full."""
    if error is None:
        return None, answer["tag"], answer["lines"]
    return error, answer.get("errorType", "?"), answer.get("errorMessage")


def start_ready(attach_in_terminal: Any, app: PrintingApp, *arguments: str) -> Terminal:
    """attach showing its status view; meanwhile the terminal echoes nothing typed into it."""
    terminal = attach_in_terminal(app.directory, app.stack_name, *arguments)
    terminal.wait_for_text(READY)
    assert terminal.settings()[3] & termios.ECHO == 0
    assert terminal.settings_before[3] & termios.ECHO
    return terminal


def wait_until_every_call_is_shown(terminal: Terminal, answers: list[tuple[str | None, Any]]) -> None:
    """Until the terminal shows the last line of every call: Ctrl-C typed while output is still being
    drawn would echo "^C" into the middle of it, as it does in any terminal."""
    terminal.wait_for_all(
        [
            f"{answer['tag']} line {answer['lines']}/{answer['lines']}"
            for _, answer in answers
            if answer["lines"]
        ]
    )


@pytest.mark.parametrize(
    ("lines", "calls"),
    # 10 000 lines a call are checked with ten calls (100 000 lines): fifty would be half a million
    # lines drawn on a machine that runs other tests beside this one.
    [(0, CALLS), (5, CALLS), (300, CALLS), (10_000, 10)],
)
def test_calls_are_all_answered_and_every_line_they_print_is_shown(
    local_cloud: Any,
    printing_app: PrintingApp,
    attach_in_terminal: Any,
    lines: int,
    calls: int,
    tmp_path: Path,
) -> None:
    before = configuration(local_cloud, printing_app.function)
    terminal = start_ready(attach_in_terminal, printing_app)
    warmed = warm_up(local_cloud, terminal, printing_app.function, tmp_path / "release", AT_A_TIME)

    def call(number: int) -> tuple[str | None, Any]:
        return invoke(local_cloud, printing_app.function, {"tag": f"call{number}", "lines": lines})

    with ThreadPoolExecutor(AT_A_TIME) as pool:
        answers = list(pool.map(call, range(calls)))
    assert [outcome(error, answer) for error, answer in answers] == [
        (None, f"call{number}", lines) for number in range(calls)
    ]
    assert len({answer["requestId"] for _, answer in answers}) == calls

    wait_until_every_call_is_shown(terminal, answers)
    terminal.ctrl_c()
    assert terminal.wait_for_exit() == 0
    shown = terminal.lines()
    printed = printed_lines(shown)
    assert printed == {
        f"call{number}": expected_lines(answer) for number, (_, answer) in enumerate(answers) if lines
    }
    status = final_status(shown)
    assert status[0] == f"plldb: stack {printing_app.stack_name}  [detached]"
    assert [columns(row) for row in status[1:]] == [
        ["Function", "Instrumented", "Invocations"],
        ["PrintFunction", "no", str(warmed + calls)],
    ]
    assert shown[-1] == DETACHED
    assert_terminal_restored(terminal)
    assert configuration(local_cloud, printing_app.function) == before


def test_calls_are_answered_while_the_terminal_does_not_read(
    local_cloud: Any, printing_app: PrintingApp, attach_in_terminal: Any
) -> None:
    """A terminal that stops reading (Ctrl-S, a stuck emulator) fills up and blocks plldb's writes:
    the answers never wait for it, and once it reads again it shows everything."""
    terminal = start_ready(attach_in_terminal, printing_app)
    terminal.pause_reading()
    # 20 x 300 lines of about 60 characters: far more than a pseudo-terminal buffers.
    with ThreadPoolExecutor(AT_A_TIME) as pool:
        answers = list(
            pool.map(
                lambda number: invoke(
                    local_cloud, printing_app.function, {"tag": f"paused{number}", "lines": 300}
                ),
                range(20),
            )
        )
    # Every answer arrived while the terminal was still not reading, and the terminal was full: it
    # holds far less than the lines printed, the rest waits in plldb.
    assert [outcome(error, answer) for error, answer in answers] == [
        (None, f"paused{number}", 300) for number in range(20)
    ]
    printed_bytes = sum(
        len(f"[PrintFunction 12345678] paused{n} line {i}/300\r\n") for n in range(20) for i in range(1, 301)
    )
    assert terminal.unread_bytes() < printed_bytes // 2
    terminal.resume_reading()
    wait_until_every_call_is_shown(terminal, answers)
    terminal.ctrl_c()
    assert terminal.wait_for_exit() == 0
    shown = terminal.lines()
    expected = {f"paused{number}": expected_lines(answer) for number, (_, answer) in enumerate(answers)}
    assert printed_lines(shown) == expected
    assert shown[-1] == DETACHED
    assert_terminal_restored(terminal)


@pytest.mark.skipif(sys.platform != "linux", reason="READ_BUFFER_FULL is Linux's pseudo-terminal buffer")
def test_ctrl_c_never_throws_away_what_the_terminal_has_not_shown_yet(
    local_cloud: Any, printing_app: PrintingApp, attach_in_terminal: Any
) -> None:
    """On Ctrl-C the terminal driver discards the output it holds unread (termios: unless NOFLSH):
    lines would be lost, and rich's next redraw, starting from a row it never reached, would erase the
    lines above it. While its status view is shown, plldb has the terminal keep that output."""
    before = configuration(local_cloud, printing_app.function)
    terminal = start_ready(attach_in_terminal, printing_app)
    assert terminal.settings()[3] & termios.NOFLSH
    terminal.pause_reading()
    # About 10 KB of lines: more than the terminal's read buffer (4 KB), so the rest waits in the driver.
    error, answer = invoke(local_cloud, printing_app.function, {"tag": "unread", "lines": 200})
    assert (error, answer["tag"], answer["lines"]) == (None, "unread", 200)
    wait_for(lambda: terminal.unread_bytes() >= READ_BUFFER_FULL, "the terminal's read buffer full")
    terminal.type(b"ls -la\n")  # typed unseen (no echo): Ctrl-C without NOFLSH threw it away too
    terminal.ctrl_c()
    # The driver has taken the Ctrl-C (and discarded what it discards) once plldb restores the function.
    wait_for(lambda: configuration(local_cloud, printing_app.function) == before, "the function restored")
    terminal.resume_reading()
    assert terminal.wait_for_exit() == 0
    shown = terminal.lines()
    assert printed_lines(shown) == {"unread": expected_lines(answer)}
    assert shown[-1] == DETACHED
    assert_terminal_restored(terminal)
    assert terminal.unread_input() == 0  # nothing typed unseen is left for the shell to run


def held_answer_or_not_attached(error: str | None, answer: dict[str, Any], tag: str, lines: int) -> str:
    """A call in flight when the developer detaches: its result if the answer won the race with the
    restore, else the layer's PlldbNotAttached. Either way it is answered; which one, said exactly."""
    if error is None:
        assert (answer["tag"], answer["lines"]) == (tag, lines)
        return "result"
    assert error == "Unhandled"
    assert answer["errorType"] == "PlldbNotAttached"
    assert answer["errorMessage"].startswith("plldb is not attached to this function's stack: ")
    return "not attached"


@pytest.mark.parametrize("moment", ["instrumenting", "ready", "printing", "calls running"])
def test_ctrl_c_at_any_moment_detaches_and_restores_the_terminal(
    local_cloud: Any, printing_app: PrintingApp, attach_in_terminal: Any, tmp_path: Path, moment: str
) -> None:
    before = configuration(local_cloud, printing_app.function)
    terminal = attach_in_terminal(printing_app.directory, printing_app.stack_name)
    release = tmp_path / "release"
    with ThreadPoolExecutor(HELD_CALLS) as pool:
        calls = []
        if moment == "instrumenting":
            terminal.wait_for_text("Connected; instrumenting the functions...")
        else:
            terminal.wait_for_text(READY)
        if moment == "printing":
            calls.append(
                (
                    "flood",
                    10_000,
                    pool.submit(
                        invoke, local_cloud, printing_app.function, {"tag": "flood", "lines": 10_000}
                    ),
                )
            )
            terminal.wait_for_text("flood line 1/10000")
        if moment == "calls running":
            for number in range(HELD_CALLS):
                event = {"tag": f"held{number}", "lines": 3, "hold": str(release)}
                calls.append(
                    (f"held{number}", 3, pool.submit(invoke, local_cloud, printing_app.function, event))
                )
            for number in range(HELD_CALLS):
                terminal.wait_for_text(f"held{number} holding")
        terminal.ctrl_c()
        terminal.wait_for_text("Detaching: restoring the functions...")
        release.write_text("go")
        outcomes = [
            held_answer_or_not_attached(*call.result(WAIT_LIMIT), tag, lines) for tag, lines, call in calls
        ]
    assert (
        len(outcomes) == {"instrumenting": 0, "ready": 0, "printing": 1, "calls running": HELD_CALLS}[moment]
    )
    assert terminal.wait_for_exit() == 0
    shown = terminal.lines()
    assert shown[-1] == DETACHED
    if moment == "instrumenting":
        # Ctrl-C raced the manager's instrumentation: the status view may never have been shown, and
        # an instrumentation that finishes after the restore undoes itself (the session is closed).
        assert terminal.screen.cursor_visible
        assert terminal.settings() == terminal.settings_before
        assert terminal.screen.unknown == []
        wait_for(lambda: configuration(local_cloud, printing_app.function) == before, "the restore")
        return
    status = final_status(shown)
    assert status[0] == f"plldb: stack {printing_app.stack_name}  [detached]"
    assert columns(status[2])[:2] == ["PrintFunction", "no"]
    assert_terminal_restored(terminal)
    assert configuration(local_cloud, printing_app.function) == before


def test_sigterm_detaches_like_ctrl_c(
    local_cloud: Any, printing_app: PrintingApp, attach_in_terminal: Any
) -> None:
    before = configuration(local_cloud, printing_app.function)
    terminal = start_ready(attach_in_terminal, printing_app)
    error, answer = invoke(local_cloud, printing_app.function, {"tag": "before-term", "lines": 5})
    assert error is None
    terminal.process.send_signal(signal.SIGTERM)
    assert terminal.wait_for_exit() == 0
    shown = terminal.lines()
    assert printed_lines(shown) == {"before-term": expected_lines(answer)}
    assert shown[-1] == DETACHED
    assert_terminal_restored(terminal)
    assert configuration(local_cloud, printing_app.function) == before


def test_a_second_ctrl_c_leaves_at_once_and_still_restores_the_terminal(
    local_cloud: Any, printing_app: PrintingApp, attach_in_terminal: Any, tmp_path: Path
) -> None:
    terminal = start_ready(attach_in_terminal, printing_app)
    release = tmp_path / "release"
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(
            invoke, local_cloud, printing_app.function, {"tag": "held", "lines": 1, "hold": str(release)}
        )
        terminal.wait_for_text("held holding")
        terminal.ctrl_c()
        terminal.wait_for_text("Detaching: restoring the functions...")
        terminal.ctrl_c()
        code = terminal.wait_for_exit()
        release.write_text("go")
        held_answer_or_not_attached(*held.result(WAIT_LIMIT), "held", 1)
    assert code == 130
    shown = terminal.logical_lines()
    assert shown[-1] == (
        "Left without waiting for the restore. The helper stack restores the functions 10 s after the "
        f"connection closes; to restore them now run 'plldb detach --stack-name {printing_app.stack_name}'."
    )
    assert_terminal_restored(terminal)


def test_a_session_ended_by_another_command_says_so_and_leaves_a_true_status(
    local_cloud: Any,
    printing_app: PrintingApp,
    attach_in_terminal: Any,
    attach_environment: dict[str, str],
    terminal_helper: Any,
) -> None:
    """`plldb detach` run elsewhere restores the stack under an attached developer: their terminal
    says the session ended and why, its status view no longer offers Ctrl-C nor shows the function
    as instrumented, and the terminal is restored."""
    terminal = start_ready(attach_in_terminal, printing_app)
    detach = subprocess.run(
        [sys.executable, "-m", "plldb", "detach", "--stack-name", printing_app.stack_name]
        + ["--helper-stack", terminal_helper.stack_name],
        cwd=printing_app.directory,
        env=attach_environment,
        capture_output=True,
        text=True,
        timeout=WAIT_LIMIT,
    )
    assert detach.returncode == 0, detach.stderr
    assert terminal.wait_for_exit() == 1
    lines = terminal.logical_lines()
    header = max(index for index, line in enumerate(lines) if line.startswith("plldb: stack "))
    table = lines.index("Function       Instrumented  Invocations", header)
    developer = local_cloud.session().client("sts").get_caller_identity()["Arn"]
    reason = f"stack {printing_app.stack_name} was restored and released by {developer}"
    assert lines[header] == f"plldb: stack {printing_app.stack_name}  [session ended]"
    assert " ".join(lines[header + 1 : table]) == reason  # wrapped to the terminal's width
    assert columns(lines[table + 1]) == ["PrintFunction", "no", "0"]
    assert lines[-1] == f"Error: The session was ended elsewhere: {reason}"
    assert_terminal_restored(terminal)
