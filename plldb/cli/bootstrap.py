"""`plldb bootstrap setup | destroy | status`: the helper stack every attach needs."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import botocore.exceptions
import click

from plldb.aws import make_session, translate_aws_errors, validate_stack_name
from plldb.bootstrap.helper_stack import DEFAULT_STACK_NAME
from plldb.cli.common import aws_options
from plldb.errors import PlldbError

T = TypeVar("T")

STACK_NAME_OPTION = click.option(
    "--stack-name",
    default=DEFAULT_STACK_NAME,
    show_default=True,
    help="Name of the plldb helper stack.",
)


def aws_failures_as_one_line(func: Callable[..., T]) -> Callable[..., T]:
    """Whatever AWS refusal translate_aws_errors does not know still reaches the user as one line."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            raise PlldbError(
                f"AWS refused {exc.operation_name}: {error.get('Code', 'Error')}: {error.get('Message', exc)}",
                "Check your permissions, --region and the helper stack in the CloudFormation console.",
            )
        except botocore.exceptions.BotoCoreError as exc:
            raise PlldbError(f"The AWS SDK failed: {exc}", "Check your AWS configuration and network.")

    return wrapper


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@click.group("bootstrap")
def bootstrap() -> None:
    """Deploy, inspect or remove the plldb helper stack (once per account and region)."""


@bootstrap.command("setup")
@STACK_NAME_OPTION
@aws_options
@aws_failures_as_one_line
@translate_aws_errors
def setup_command(stack_name: str, profile: str | None, region: str | None) -> None:
    """Create or update the helper stack; a no-op when nothing changed."""
    from plldb.bootstrap import deploy

    validate_stack_name(stack_name)
    session = make_session(profile, region)
    console = _console()
    with console.status(f"Setting up the plldb helper stack {stack_name}...") as spinner:

        def report(message: str) -> None:
            spinner.update(message)
            console.print(f"  {message}", style="dim")

        result = deploy.setup(session, stack_name, on_event=report)
    verdict = {
        "created": "created",
        "updated": "updated",
        "unchanged": "already up to date (nothing changed)",
    }[result.action]
    console.print(f"Helper stack {result.stack_name} in {session.region_name} {verdict}.")
    for key in sorted(result.outputs):
        click.echo(f"{key}: {result.outputs[key]}")


@bootstrap.command("destroy")
@STACK_NAME_OPTION
@click.option(
    "--force",
    is_flag=True,
    help="Also when developers are attached: restore their functions and end their sessions first.",
)
@aws_options
@aws_failures_as_one_line
@translate_aws_errors
def destroy_command(stack_name: str, force: bool, profile: str | None, region: str | None) -> None:
    """Restore instrumented functions, delete the helper stack and its asset bucket."""
    from plldb.bootstrap import deploy

    validate_stack_name(stack_name)
    session = make_session(profile, region)
    console = _console()
    with console.status(f"Destroying the plldb helper stack {stack_name}...") as spinner:

        def report(message: str) -> None:
            spinner.update(message)
            console.print(f"  {message}", style="dim")

        result = deploy.destroy(session, stack_name, force=force, on_event=report)
    if result.stack_deleted:
        click.echo(f"Deleted the helper stack {result.stack_name}.")
    else:
        click.echo(f"The helper stack {result.stack_name} did not exist.")
    if result.bucket_deleted:
        click.echo(f"Deleted the asset bucket {result.bucket}.")
    elif result.bucket_kept_for:
        click.echo(f"Kept the asset bucket {result.bucket} (used by {', '.join(result.bucket_kept_for)}).")
    if result.restored:
        click.echo(f"Restored {len(result.restored)} function(s) first.")


@bootstrap.command("status")
@STACK_NAME_OPTION
@aws_options
@aws_failures_as_one_line
@translate_aws_errors
def status_command(stack_name: str, profile: str | None, region: str | None) -> None:
    """Show the helper stack's state, template version and active sessions."""
    from plldb.bootstrap import deploy

    validate_stack_name(stack_name)
    session = make_session(profile, region)
    report = deploy.status(session, stack_name)
    click.echo(f"Stack:            {report.stack_name} ({report.region})")
    click.echo(f"Status:           {report.stack_status}")
    version = report.template_version
    if report.outdated:
        version += " (outdated: run 'plldb bootstrap setup')"
    click.echo(f"Template version: {version}")
    if not report.active_sessions:
        click.echo("Active sessions:  none")
    else:
        click.echo("Active sessions:")
        for item in report.active_sessions:
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(item.get("createdAt") or 0)))
            click.echo(f"  {item.get('stackName')}  {item.get('owner') or 'unknown owner'}  since {since}")
    if report.instrumented_functions:
        click.echo("Instrumented functions:")
        for stack, count in sorted(report.instrumented_functions.items()):
            click.echo(f"  {stack}: {count}")
