"""`plldb bootstrap setup | destroy | status`: the helper stack every attach needs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from plldb.aws import make_session, translate_aws_errors, validate_stack_name
from plldb.bootstrap.helper_stack import DEFAULT_STACK_NAME
from plldb.cli.common import aws_options
from plldb.cli.settings import resolve, samconfig_options, where

if TYPE_CHECKING:
    import boto3

T = TypeVar("T")

# The helper stack is named --helper-stack in every command (attach and detach too): --stack-name always
# means the application stack being debugged.
HELPER_STACK_OPTION = click.option(
    "--helper-stack",
    "stack_name",
    default=DEFAULT_STACK_NAME,
    show_default=True,
    help="Name of the plldb helper stack.",
)


def _console() -> Any:
    """Progress on stderr, never hard-wrapped (an S3 URI or an ARN stays one line in a log file)."""
    from plldb.local.console import rich_console

    return rich_console(sys.stderr)


@contextmanager
def _progress(console: Any, title: str) -> Iterator[Callable[[str], None]]:
    """On a terminal, a spinner showing the latest step; elsewhere (a log), one plain line per step, under
    the title printed with the first step (a command refused before its first step prints its error only)."""
    if not console.is_terminal:
        titled: list[bool] = []

        def log(message: str) -> None:
            if not titled:
                console.print(title)
                titled.append(True)
            console.print(f"  {message}", soft_wrap=True)

        yield log
        return
    with console.status(title) as spinner:
        yield lambda message: spinner.update(f"{title} {message}")


@click.group("bootstrap")
def bootstrap() -> None:
    """Deploy, inspect or remove the plldb helper stack (once per account and region)."""


def _helper_stack_command(
    name: str, *options: Callable[[Any], Any]
) -> Callable[[Callable[..., None]], click.Command]:
    """`plldb bootstrap NAME`: --helper-stack, the given options and the AWS ones; the command gets a session
    for the validated stack name, and any AWS failure reaches the user as one line."""

    def decorate(run: Callable[..., None]) -> click.Command:
        @wraps(run)
        def command(
            stack_name: str,
            profile: str | None,
            region: str | None,
            config_file: Path | None,
            config_env: str,
            **values: Any,
        ) -> None:
            validate_stack_name(stack_name)
            # The same region and profile as `plldb attach` in this folder: options, then samconfig.
            settings = resolve(profile=profile, region=region, config_file=config_file, config_env=config_env)
            session = make_session(settings.profile, settings.region)
            _console().print(f"Working in {where(session, settings)}.", soft_wrap=True)
            run(session, stack_name, **values)

        decorated: Any = samconfig_options(aws_options(translate_aws_errors(command)))
        for option in (HELPER_STACK_OPTION, *options)[::-1]:
            decorated = option(decorated)
        return bootstrap.command(name)(decorated)

    return decorate


@_helper_stack_command("setup")
def setup_command(session: boto3.Session, stack_name: str) -> None:
    """Create or update the helper stack; a no-op when nothing changed."""
    from plldb.bootstrap import deploy

    console = _console()
    with _progress(console, f"Setting up the plldb helper stack {stack_name}...") as report:
        result = deploy.setup(session, stack_name, on_event=report)
    verdict = {
        "created": "created",
        "updated": "updated",
        "unchanged": "already up to date (nothing changed)",
    }[result.action]
    console.print(f"Helper stack {result.stack_name} in {session.region_name} {verdict}.")
    for key in sorted(result.outputs):
        click.echo(f"{key}: {result.outputs[key]}")


@_helper_stack_command(
    "destroy",
    click.option(
        "--force",
        is_flag=True,
        help="Also when developers are attached: restore their functions and end their sessions first.",
    ),
)
def destroy_command(session: boto3.Session, stack_name: str, force: bool) -> None:
    """Restore instrumented functions, delete the helper stack and its asset bucket."""
    from plldb.bootstrap import deploy

    with _progress(_console(), f"Destroying the plldb helper stack {stack_name}...") as report:
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


@_helper_stack_command("status")
def status_command(session: boto3.Session, stack_name: str) -> None:
    """Show the helper stack's state, template version and active sessions."""
    from plldb.bootstrap import deploy

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
            since = deploy.utc_time_text(item.get("createdAt"))
            click.echo(f"  {item.get('stackName')}  {item.get('owner') or 'unknown owner'}  since {since}")
