"""Mistyped command lines: the installed entry point answers with one line that names the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PLLDB = str(Path(sys.executable).with_name("plldb"))  # the console script pip installed


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["attach", "--bogus"],
            "Error: No such option '--bogus'. Run 'plldb attach --help' for the usage.",
        ),
        (
            ["atach"],
            "Error: No such command 'atach'. (Did you mean one of: 'attach', 'detach'?) "
            "Run 'plldb --help' for the usage.",
        ),
        (
            ["attach", "--stack-name", "s", "--debugpy-port", "abc"],
            "Error: Invalid value for '--debugpy-port': 'abc' is not a valid integer range. "
            "Run 'plldb attach --help' for the usage.",
        ),
    ],
)
def test_a_usage_error_is_one_line_with_exit_code_2(arguments: list[str], expected: str) -> None:
    result = subprocess.run([PLLDB, *arguments], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", expected + "\n")
