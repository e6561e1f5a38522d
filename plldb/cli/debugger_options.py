"""The debugger options every command that runs handlers shares (attach, invoke, replay), checked once.

One definition keeps the loopback guard of debugpy (it has no authentication) on every command that
can start it, and the same words in every ``--help``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from plldb.errors import PlldbError

if TYPE_CHECKING:
    from plldb.local.debuggers import DebuggerConfig

F = TypeVar("F", bound=Callable[..., Any])

_OPTION_NAMES = ("use_debugpy", "debugpy_host", "debugpy_allow_remote", "debugpy_port", "wait_for_client")


@dataclass(frozen=True)
class DebuggerChoice:
    """What the command line asked for, before it is checked."""

    use_debugpy: bool = False
    debugpy_host: str = "127.0.0.1"
    debugpy_allow_remote: bool = False
    debugpy_port: int = 5678
    wait_for_client: bool = False
    pycharm_address: str | None = None
    write_vscode: bool = False

    def config(self) -> DebuggerConfig | None:
        """The debugger to run handlers under, or None; a contradictory choice is one line naming the fix."""
        from plldb.local.debuggers import DebuggerConfig, is_loopback, parse_host_port

        if self.use_debugpy and self.pycharm_address:
            raise PlldbError("--debugpy and --pycharm cannot be used together.", "Choose one debugger.")
        if self.wait_for_client and not self.use_debugpy:
            raise PlldbError("--wait-for-client needs --debugpy.", "Add --debugpy.")
        if self.write_vscode and not self.use_debugpy:
            raise PlldbError("--write-vscode needs --debugpy.", "Add --debugpy.")
        if self.debugpy_allow_remote and not self.use_debugpy:
            raise PlldbError("--debugpy-allow-remote needs --debugpy.", "Add --debugpy.")
        if self.use_debugpy and not is_loopback(self.debugpy_host) and not self.debugpy_allow_remote:
            port = self.debugpy_port
            raise PlldbError(
                f"--debugpy-host {self.debugpy_host} would let other machines connect to debugpy, which has "
                "no authentication: anyone who can reach the port could run any code as you.",
                "Add --debugpy-allow-remote if that is what you want; to debug from another machine "
                f"safely, keep 127.0.0.1 and forward the port over SSH (ssh -L {port}:127.0.0.1:{port}).",
            )
        if self.use_debugpy:
            return DebuggerConfig(
                "debugpy",
                host=self.debugpy_host,
                port=self.debugpy_port,
                wait_for_client=self.wait_for_client,
            )
        if self.pycharm_address:
            host, port = parse_host_port(self.pycharm_address)
            return DebuggerConfig("pycharm", host=host, port=port)
        return None


def debugger_options(*, write_vscode: bool = False) -> Callable[[F], F]:
    """Add --debugpy, --debugpy-host/-port/-allow-remote, --wait-for-client, --pycharm (and, for the
    commands that know their stack, --write-vscode) to a command, which receives them as one
    ``debugger_choice`` keyword argument."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in _OPTION_NAMES}
            values["pycharm_address"] = kwargs.pop("pycharm_address")
            if write_vscode:
                values["write_vscode"] = kwargs.pop("write_vscode")
            return func(*args, debugger_choice=DebuggerChoice(**values), **kwargs)

        options = list(_OPTIONS)
        if write_vscode:
            options.insert(5, _WRITE_VSCODE)
        for option in reversed(options):
            command = option(command)
        return command  # type: ignore[return-value]

    return decorate


_OPTIONS = [
    click.option("--debugpy", "use_debugpy", is_flag=True, help="Run handlers under debugpy (VS Code)."),
    click.option(
        "--debugpy-host",
        default="127.0.0.1",
        show_default=True,
        help="The address debugpy listens on for VS Code. Only this machine can connect to the "
        "default; another address needs --debugpy-allow-remote.",
    ),
    click.option(
        "--debugpy-allow-remote",
        is_flag=True,
        help="Allow a --debugpy-host that other machines can reach. debugpy has no authentication: "
        "anyone who can reach the port can run any code as you.",
    ),
    click.option(
        "--debugpy-port",
        type=click.IntRange(0, 65535),
        default=5678,
        show_default=True,
        help="The port debugpy listens on (0: any free port).",
    ),
    click.option(
        "--wait-for-client", is_flag=True, help="With --debugpy: wait for the debugger before running."
    ),
    click.option(
        "--pycharm",
        "pycharm_address",
        metavar="HOST:PORT",
        help="Connect handlers to PyCharm's debug server.",
    ),
]
_WRITE_VSCODE = click.option(
    "--write-vscode", is_flag=True, help="With --debugpy: add the attach entry to .vscode/launch.json."
)
