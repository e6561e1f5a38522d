"""`plldb attach` whose output is piped into a program that leaves (`plldb attach | head -1`).

The reader leaving is the user's way of saying "stop": attach detaches exactly as on Ctrl-C, whether
the pipe closes while it is still starting or while it sits idle, and exits without a traceback.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.cloud_state import configuration
from tests.terminal.support import PrintingApp
from tests.terminal.terminal import WAIT_LIMIT
from tests.terminal.test_terminal_attach import DETACHED, READY

pytestmark = pytest.mark.slow

GONE = "The reader of plldb's output went away (its pipe closed): detaching."


def attach_into_a_pipe(
    printing_app: PrintingApp, helper_stack: str, environment: dict[str, str]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "plldb", "attach", "--stack-name", printing_app.stack_name]
        + ["--helper-stack", helper_stack],
        cwd=printing_app.directory,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("closed_after", ["the first line", "ready"])
def test_a_reader_that_leaves_detaches_attach_cleanly(
    local_cloud: Any,
    terminal_helper: Any,
    printing_app: PrintingApp,
    attach_environment: dict[str, str],
    closed_after: str,
) -> None:
    before = configuration(local_cloud, printing_app.function)
    process = attach_into_a_pipe(printing_app, terminal_helper.stack_name, attach_environment)
    assert process.stdout is not None
    lines = [process.stdout.readline().rstrip("\n")]
    if closed_after == "ready":
        # Idle from here on: nothing is written, so only the closed pipe itself can wake attach.
        while lines[-1] != READY:
            assert lines[-1] or process.poll() is None, lines
            lines.append(process.stdout.readline().rstrip("\n"))
    process.stdout.close()
    _, stderr = process.communicate(timeout=WAIT_LIMIT)

    assert lines[0].startswith("Working in ")
    assert process.returncode == 0, stderr
    assert GONE in stderr.splitlines()
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert DETACHED not in stderr  # said on stdout, which nobody reads any more
    assert configuration(local_cloud, printing_app.function) == before
