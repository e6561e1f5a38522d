"""`plldb attach --observe` in a pseudo-terminal: the live view shows each invocation's local run next to
the cloud's outcome, and a local edit shows as a difference, while the caller gets the deployed answer."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.cloud_state import configuration
from tests.terminal.support import PrintingApp, invoke
from tests.terminal.test_terminal_attach import (
    DETACHED,
    assert_terminal_restored,
    start_ready,
)

pytestmark = pytest.mark.slow

SAME = re.compile(r"== PrintFunction ([0-9a-f]{8}) local ok \d+ ms \| cloud ok \d+ ms \| same")
DIFFERENT = re.compile(r"== PrintFunction ([0-9a-f]{8}) local ok \d+ ms \| cloud ok \d+ ms \| DIFFERENT")


def test_observe_shows_the_local_run_beside_the_clouds_and_a_local_edit_as_a_difference(
    local_cloud: Any, printing_app: PrintingApp, attach_in_terminal: Any
) -> None:
    before = configuration(local_cloud, printing_app.function)
    source = printing_app.directory / "src" / "app.py"
    original = source.read_text()
    terminal = start_ready(attach_in_terminal, printing_app, "--observe")
    try:
        assert configuration(local_cloud, printing_app.function)["Timeout"] == before["Timeout"]
        error, answer = invoke(local_cloud, printing_app.function, {"tag": "seen", "lines": 1})
        assert (error, answer["tag"]) == (None, "seen")
        terminal.wait_for_text("| same")
        [same] = [line for line in terminal.logical_lines() if SAME.fullmatch(line)]
        assert SAME.fullmatch(same).group(1) == answer["requestId"][:8]  # type: ignore[union-attr]

        source.write_text(original.replace('return {"tag": tag', 'return {"edited": True, "tag": tag'))
        error, deployed = invoke(local_cloud, printing_app.function, {"tag": "edited", "lines": 0})
        assert (error, "edited" in deployed) == (
            None,
            False,
        )  # the caller still gets the deployed code's answer
        terminal.wait_for_text("| DIFFERENT")
        terminal.wait_for_text("edited")  # the difference, on the line after (the handler prints nothing)
        lines = terminal.logical_lines()
        [index] = [number for number, line in enumerate(lines) if DIFFERENT.fullmatch(line)]
        assert "edited" in lines[index + 1]
    finally:
        source.write_text(original)
    terminal.ctrl_c()
    assert terminal.wait_for_exit() == 0
    assert terminal.lines()[-1] == DETACHED
    assert_terminal_restored(terminal)
    assert configuration(local_cloud, printing_app.function) == before
