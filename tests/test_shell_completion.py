"""Shell completion as the README tells users to enable it: the installed `plldb` command answers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PLLDB = Path(sys.executable).parent / "plldb"


def complete(words: str, index: int) -> list[str]:
    environment = dict(os.environ, _PLLDB_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=str(index))
    completed = subprocess.run([str(PLLDB)], env=environment, capture_output=True, text=True, check=True)
    return completed.stdout.splitlines()


def test_the_bash_script_the_readme_evaluates_is_a_completion_function() -> None:
    environment = dict(os.environ, _PLLDB_COMPLETE="bash_source")
    script = subprocess.run([str(PLLDB)], env=environment, capture_output=True, text=True, check=True).stdout
    assert "complete -o nosort -F _plldb_completion plldb" in script
    bash = shutil.which("bash")
    if bash is not None:  # the script is valid bash
        subprocess.run([bash, "-n"], input=script, text=True, check=True)


def test_commands_and_options_complete() -> None:
    assert complete("plldb at", 1) == ["plain,attach"]
    assert "plain,--debugpy-allow-remote" in complete("plldb attach --debugpy-a", 2)
