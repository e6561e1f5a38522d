"""Option checks of `plldb attach` / `plldb detach` that fail before any AWS call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from plldb.cli.attach import attach, detach
from plldb.errors import PlldbError


def run(command: click.Command, arguments: list[str], cwd: Path) -> Result:
    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=cwd):
        return runner.invoke(command, arguments, catch_exceptions=True)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ([], "No stack name was given. Pass --stack-name, or run where samconfig.toml sets stack_name."),
        (
            ["--stack-name", "bad_name!"],
            "'bad_name!' is not a valid CloudFormation stack name. Use letters, digits and hyphens, "
            "starting with a letter, at most 128 characters.",
        ),
        (
            ["--stack-name", "s", "--debugpy", "--pycharm", "localhost:1234"],
            "--debugpy and --pycharm cannot be used together. Choose one debugger.",
        ),
        (["--stack-name", "s", "--wait-for-client"], "--wait-for-client needs --debugpy. Add --debugpy."),
        (["--stack-name", "s", "--write-vscode"], "--write-vscode needs --debugpy. Add --debugpy."),
        (
            ["--stack-name", "s", "--pycharm", "localhost:notaport"],
            "'localhost:notaport' is not HOST:PORT. For example --pycharm localhost:12345.",
        ),
    ],
)
def test_attach_refuses_bad_options_with_the_fix(tmp_path: Path, arguments: list[str], expected: str) -> None:
    result = run(attach, arguments, tmp_path)
    assert isinstance(result.exception, PlldbError)
    assert result.exception.one_line() == expected


def test_attach_function_timeout_is_within_lambda_limits(tmp_path: Path) -> None:
    result = run(attach, ["--stack-name", "s", "--function-timeout", "901"], tmp_path)
    assert result.exit_code == 2
    assert "901 is not in the range 1<=x<=900" in result.output


def test_detach_needs_a_stack_name(tmp_path: Path) -> None:
    result = run(detach, [], tmp_path)
    assert isinstance(result.exception, PlldbError)
    assert result.exception.one_line() == (
        "No stack name was given. Pass --stack-name, or run where samconfig.toml sets stack_name."
    )


STACK_ID = "arn:aws:cloudformation:eu-west-1:123456789012:stack/orders/3f1c9a5e-1d2b-4c3d-8e9f-0a1b2c3d4e5f"


def test_a_stack_id_is_taken_as_the_stack_and_anything_else_must_be_a_stack_name(tmp_path: Path) -> None:
    from plldb.cli.attach import _resolve_target

    def resolve(stack_name: str) -> Any:
        return _resolve_target(
            stack_name=stack_name,
            template=None,
            profile=None,
            region=None,
            config_file=None,
            config_env="default",
        )

    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=tmp_path):
        settings = resolve(STACK_ID)
        assert (settings.stack_name, settings.sources["stack_name"]) == (STACK_ID, "--stack-name")
        for almost in (STACK_ID.replace("123456789012", "1234"), STACK_ID + "/extra", "stack/orders"):
            with pytest.raises(PlldbError) as caught:
                resolve(almost)
            assert caught.value.one_line() == (
                f"{almost!r} is not a valid CloudFormation stack name. Use letters, digits and hyphens, "
                "starting with a letter, at most 128 characters."
            )


@pytest.mark.parametrize("command", [attach, detach])
def test_a_malformed_stack_id_is_refused_before_any_aws_call(tmp_path: Path, command: click.Command) -> None:
    almost = STACK_ID.replace("cloudformation", "lambda")
    result = run(command, ["--stack-name", almost], tmp_path)
    assert isinstance(result.exception, PlldbError)
    assert result.exception.one_line() == (
        f"{almost!r} is not a valid CloudFormation stack name. Use letters, digits and hyphens, "
        "starting with a letter, at most 128 characters."
    )
