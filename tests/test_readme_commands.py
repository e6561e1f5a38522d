"""The commands the READMEs tell a user to type parse, and the files they name exist where they run.

Each README says which folder its commands run from; a command that names a missing option or file
there is a broken first experience, caught here rather than by the next new user.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from plldb.cli import cli

ROOT = Path(__file__).resolve().parents[1]
# README → the folder its commands run from.
READMES = {
    ROOT / "README.md": ROOT,
    ROOT / "examples" / "hello-sam" / "README.md": ROOT / "examples" / "hello-sam",
}


def shell_commands(readme: Path) -> list[str]:
    """Every command of the README's ```sh blocks, continuation lines joined, comments dropped."""
    blocks = re.findall(r"^ *```sh\n(.*?)^ *```", readme.read_text(encoding="utf-8"), re.S | re.M)
    commands = []
    for block in blocks:
        for command in re.sub(r" *\\\n\s*", " ", block).splitlines():
            command = command.split(" #", 1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def plldb_commands() -> list[tuple[Path, str]]:
    return [
        (readme, command)
        for readme in READMES
        for command in shell_commands(readme)
        if command.startswith("plldb ")
    ]


def test_every_readme_has_plldb_commands_to_check():
    assert {readme for readme, _ in plldb_commands()} == set(READMES)


@pytest.mark.parametrize(("readme", "command"), plldb_commands(), ids=lambda v: str(v)[-60:])
def test_each_plldb_command_of_a_readme_parses(readme: Path, command: str):
    words = shlex.split(re.sub(r'"\$\(cat ([^)]*)\)"', r"'{}'", command))[1:]
    context = cli.make_context("plldb", list(words))
    while isinstance(context.command, click.Group):
        name, sub, rest = context.command.resolve_command(context, context.protected_args + context.args)
        assert sub is not None, command
        context = sub.make_context(name, rest, parent=context)
    assert context.args == [], command


@pytest.mark.parametrize(("readme", "command"), plldb_commands(), ids=lambda v: str(v)[-60:])
def test_each_file_a_readme_command_names_exists_where_it_runs(readme: Path, command: str):
    named = re.findall(r"--template (\S+)|fileb://(\S+)|\$\(cat (\S+)\)", command)
    for path in [p for group in named for p in group if p]:
        assert (READMES[readme] / path).is_file(), f"{command}: {path} is not in {READMES[readme]}"


def test_the_example_readmes_other_commands_name_files_of_its_folder():
    readme = ROOT / "examples" / "hello-sam" / "README.md"
    commands = [c for c in shell_commands(readme) if not c.startswith("plldb ")]
    assert commands == [
        "sam deploy",
        "aws lambda invoke --payload fileb://events/hello.json out.json "
        '--function-name "$(aws cloudformation describe-stacks --stack-name hello-sam '
        '--query "Stacks[0].Outputs[?OutputKey==\'HelloFunctionName\'].OutputValue" --output text)"',
    ]
    assert (readme.parent / "events" / "hello.json").is_file()
    samconfig = (readme.parent / "samconfig.toml").read_text(encoding="utf-8")
    assert 'stack_name = "hello-sam"' in samconfig
    template = (readme.parent / "template.yaml").read_text(encoding="utf-8")
    assert "HelloFunctionName:" in template
