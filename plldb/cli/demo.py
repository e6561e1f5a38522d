"""`plldb demo`: see plldb work end to end without an AWS account."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--interactive",
    is_flag=True,
    help="Keep the local cloud up and print the commands to attach with a debugger and invoke yourself.",
)
def demo(interactive: bool) -> None:
    """Run bootstrap, deploy, attach, invocations and detach on an offline local cloud."""
    from plldb.demo import run_demo

    run_demo(interactive=interactive)
