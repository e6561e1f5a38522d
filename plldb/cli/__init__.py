"""The `plldb` command line."""

from __future__ import annotations

import sys

import click

from plldb import __version__
from plldb.cli.common import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="plldb")
def cli() -> None:
    """plldb: debug your deployed Python Lambda functions on your machine.

    \b
    Start with:  plldb bootstrap setup
    Then:        plldb attach --stack-name my-stack --debugpy
    Add --debug anywhere to see the traceback of an unexpected error.
    """


def _register() -> None:
    """Add each command group; their modules import heavy dependencies only when run."""
    from plldb.cli.attach import attach, detach
    from plldb.cli.bootstrap import bootstrap
    from plldb.cli.demo import demo
    from plldb.cli.invoke import invoke
    from plldb.cli.localcloud import localcloud
    from plldb.cli.replay import recordings, replay

    cli.add_command(bootstrap)
    cli.add_command(attach)
    cli.add_command(detach)
    cli.add_command(demo)
    cli.add_command(invoke)
    cli.add_command(localcloud)
    cli.add_command(recordings)
    cli.add_command(replay)


_register()


def main() -> None:
    sys.exit(run_cli(cli))
