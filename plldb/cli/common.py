"""Options and error handling shared by every command."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from plldb.errors import ExitStatus, PlldbError

F = TypeVar("F", bound=Callable[..., Any])


def aws_options(func: F) -> F:
    """--profile and --region, as the AWS CLI names them."""
    func = click.option(
        "--region", envvar=None, default=None, help="AWS region (default: from your AWS config)."
    )(func)
    func = click.option("--profile", default=None, help="AWS profile from ~/.aws/config.")(func)
    return func


# The project a local run (invoke, replay) takes its function from, and the Python that runs it.
TEMPLATE_OPTION = click.option(
    "--template",
    "-t",
    "template_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The SAM template (default: samconfig's, else template.yaml|yml|json, else cdk.out).",
)
CDK_OUT_OPTION = click.option(
    "--cdk-out",
    "cdk_out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A CDK app's cloud assembly, from 'cdk synth --no-staging' (default: cdk.out when present).",
)
PYTHON_OPTION = click.option(
    "--python",
    "python",
    type=click.Path(path_type=Path),
    default=None,
    help="The Python (interpreter or virtualenv) that runs the function, with its packages.",
)


DEBUG_FLAG = "--debug"


def run_cli(group: click.Group, argv: list[str] | None = None) -> int:
    """Run the CLI; errors are one line on stderr, never a traceback (unless --debug asks for it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args[: args.index("--")] if "--" in args else DEBUG_FLAG in args
    if debug:
        args.remove(DEBUG_FLAG)
    try:
        result = group.main(args=args, standalone_mode=False)
    except PlldbError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"Error: {exc.one_line()}", err=True)
        return ExitStatus.ERROR
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return ExitStatus.INTERRUPTED
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
        return ExitStatus.INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
            return ExitStatus.ERROR
        text = str(exc).splitlines()[0] if str(exc) else ""
        click.echo(
            f"Error: plldb failed unexpectedly ({type(exc).__name__}{': ' + text if text else ''}). "
            f"Run the command again with {DEBUG_FLAG} to see the traceback, and report it.",
            err=True,
        )
        return ExitStatus.ERROR
    # Without standalone mode, click returns the code of ctx.exit(code) instead of raising.
    return result if isinstance(result, int) else 0


def echo_err(message: str) -> None:
    click.echo(message, err=True, file=sys.stderr)
