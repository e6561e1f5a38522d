"""Options and error handling shared by every command."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from plldb.errors import PlldbError

F = TypeVar("F", bound=Callable[..., Any])


def aws_options(func: F) -> F:
    """--profile and --region, as the AWS CLI names them."""
    func = click.option(
        "--region", envvar=None, default=None, help="AWS region (default: from your AWS config)."
    )(func)
    func = click.option("--profile", default=None, help="AWS profile from ~/.aws/config.")(func)
    return func


def run_cli(group: click.Group) -> int:
    """Run the CLI; errors the user can fix are one line on stderr, never a traceback."""
    try:
        result = group.main(standalone_mode=False)
    except PlldbError as exc:
        click.echo(f"Error: {exc.one_line()}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.UsageError as exc:
        # click prints usage, a hint and the error on four lines; one line says the same.
        command = exc.ctx.command_path if exc.ctx is not None else "plldb"
        click.echo(f"Error: {exc.format_message()} Run '{command} --help' for the usage.", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    # Without standalone mode, click returns the code of ctx.exit(code) instead of raising.
    return result if isinstance(result, int) else 0


def fail(message: str, fix: str | None = None) -> None:
    raise PlldbError(message, fix)


def echo_err(message: str) -> None:
    click.echo(message, err=True, file=sys.stderr)
