"""`plldb demo`: see plldb work end to end without an AWS account."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--interactive",
    is_flag=True,
    help="Keep the local cloud up and print the commands to attach with a debugger and invoke yourself.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=4566,
    show_default=True,
    help="With --interactive: the local cloud's AWS endpoint port (0 picks a free one).",
)
@click.option(
    "--gateway-port",
    type=click.IntRange(0, 65535),
    default=4510,
    show_default=True,
    help="With --interactive: the local cloud's WebSocket endpoint port (0 picks a free one).",
)
def demo(interactive: bool, port: int, gateway_port: int) -> None:
    """Run bootstrap, deploy, attach, invocations and detach on an offline local cloud."""
    from plldb.demo import run_demo

    run_demo(interactive=interactive, port=port, gateway_port=gateway_port)
