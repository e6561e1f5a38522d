"""`plldb attach` and `plldb detach`: the commands a developer lives in while debugging a stack.

attach validates everything first (helper stack, stack, template, credentials, debugger), so a
mistake costs one clear line and changes nothing; only then does it create the session, connect,
and serve invocations until Ctrl-C, which restores every function before exiting.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from plldb import protocol
from plldb.cli.common import aws_options
from plldb.errors import PlldbError

DEFAULT_TEMPLATE = Path("template.yaml")
DEFAULT_HELPER_STACK = "plldb"
MAX_FUNCTION_TIMEOUT = 900

HELPER_STACK_OPTION = click.option(
    "--helper-stack", default=DEFAULT_HELPER_STACK, show_default=True, help="The helper stack's name."
)
JSON_OPTION = click.option(
    "--json", "json_output", is_flag=True, help="Machine-readable events, one JSON object per line."
)


@dataclass(frozen=True)
class AttachRequest:
    """What `plldb attach` was asked to do, once the options and samconfig.toml are resolved."""

    stack_name: str
    template_path: Path
    function_patterns: tuple[str, ...]
    function_timeout: int
    fallback: str
    take_over: bool
    profile: str | None
    region: str | None
    helper_stack: str
    local_credentials: bool
    write_vscode: bool
    keepalive_seconds: float
    max_connection_age: float


def _resolve_target(
    stack_name: str | None, template: Path | None, profile: str | None, region: str | None
) -> tuple[str, Path, str | None, str | None]:
    """Options first, then samconfig.toml in the current folder, then the defaults."""
    from plldb.aws import validate_stack_name
    from plldb.local.samconfig import load_samconfig

    config = load_samconfig(Path.cwd())
    stack_name = stack_name or config.stack_name
    if not stack_name:
        raise PlldbError(
            "No stack name was given.", "Pass --stack-name, or run where samconfig.toml sets stack_name."
        )
    return (
        validate_stack_name(stack_name),
        template or config.template or DEFAULT_TEMPLATE,
        profile or config.profile,
        region or config.region,
    )


@click.command("attach")
@click.option("--stack-name", "-s", default=None, help="The deployed stack (default: from samconfig.toml).")
@click.option(
    "--template",
    "-t",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The stack's SAM template (default: samconfig.toml's, else template.yaml).",
)
@click.option(
    "--function",
    "-f",
    "function_patterns",
    multiple=True,
    metavar="PATTERN",
    help="Only these functions: fnmatch pattern on the logical id (repeatable).",
)
@click.option(
    "--function-timeout",
    type=click.IntRange(1, MAX_FUNCTION_TIMEOUT),
    default=MAX_FUNCTION_TIMEOUT,
    show_default=True,
    help="Seconds an instrumented function may wait for you (its Lambda timeout while attached).",
)
@click.option(
    "--fallback",
    type=click.Choice(protocol.FALLBACK_MODES),
    default=protocol.FALLBACK_ERROR,
    show_default=True,
    help="When plldb is not attached: fail the invocation, or run the deployed code.",
)
@click.option("--take-over", is_flag=True, help="End another developer's session on this stack first.")
@aws_options
@HELPER_STACK_OPTION
@JSON_OPTION
@click.option("--quiet", "-q", is_flag=True, help="Only the handlers' output, warnings and errors.")
@click.option(
    "--local-credentials",
    is_flag=True,
    help="Run handlers with your own AWS credentials instead of the function's role.",
)
@click.option("--debugpy", "use_debugpy", is_flag=True, help="Run handlers under debugpy (VS Code).")
@click.option(
    "--debugpy-host",
    default="127.0.0.1",
    show_default=True,
    help="The address debugpy listens on for VS Code. Only this machine can connect to the default; "
    "another address needs --debugpy-allow-remote.",
)
@click.option(
    "--debugpy-allow-remote",
    is_flag=True,
    help="Allow a --debugpy-host that other machines can reach. debugpy has no authentication: anyone "
    "who can reach the port can run any code as you.",
)
@click.option(
    "--debugpy-port",
    type=click.IntRange(0, 65535),
    default=5678,
    show_default=True,
    help="The port debugpy listens on (0: any free port).",
)
@click.option("--wait-for-client", is_flag=True, help="With --debugpy: wait for VS Code before attaching.")
@click.option(
    "--write-vscode", is_flag=True, help="With --debugpy: add the attach entry to .vscode/launch.json."
)
@click.option(
    "--pycharm", "pycharm_address", metavar="HOST:PORT", help="Connect handlers to PyCharm's debug server."
)
@click.option("--keepalive-seconds", type=float, default=300.0, hidden=True)
@click.option("--max-connection-age", "max_connection_age", type=float, default=2 * 3600 - 600, hidden=True)
@click.pass_context
def attach(
    ctx: click.Context,
    *,
    stack_name: str | None,
    template: Path | None,
    function_patterns: tuple[str, ...],
    function_timeout: int,
    fallback: str,
    take_over: bool,
    profile: str | None,
    region: str | None,
    helper_stack: str,
    json_output: bool,
    quiet: bool,
    local_credentials: bool,
    use_debugpy: bool,
    debugpy_host: str,
    debugpy_allow_remote: bool,
    debugpy_port: int,
    wait_for_client: bool,
    write_vscode: bool,
    pycharm_address: str | None,
    keepalive_seconds: float,
    max_connection_age: float,
) -> None:
    """Run every invocation of a deployed stack's Python functions here, from local source."""
    from plldb.aws import translate_aws_errors
    from plldb.local.console import Console, choose_mode

    debugger = _debugger_config(
        use_debugpy=use_debugpy,
        host=debugpy_host,
        allow_remote=debugpy_allow_remote,
        port=debugpy_port,
        wait_for_client=wait_for_client,
        write_vscode=write_vscode,
        pycharm_address=pycharm_address,
    )
    stack_name, template_path, profile, region = _resolve_target(stack_name, template, profile, region)
    request = AttachRequest(
        stack_name=stack_name,
        template_path=template_path,
        function_patterns=function_patterns,
        function_timeout=function_timeout,
        fallback=fallback,
        take_over=take_over,
        profile=profile,
        region=region,
        helper_stack=helper_stack,
        local_credentials=local_credentials,
        write_vscode=write_vscode,
        keepalive_seconds=keepalive_seconds,
        max_connection_age=max_connection_age,
    )
    console = Console(choose_mode(json_output), quiet=quiet)
    ctx.exit(translate_aws_errors(_attach)(console, debugger, request))


def _debugger_config(
    *,
    use_debugpy: bool,
    host: str,
    allow_remote: bool,
    port: int,
    wait_for_client: bool,
    write_vscode: bool,
    pycharm_address: str | None,
) -> Any:
    from plldb.local.debuggers import DebuggerConfig, is_loopback, parse_host_port

    if use_debugpy and pycharm_address:
        raise PlldbError("--debugpy and --pycharm cannot be used together.", "Choose one debugger.")
    if (wait_for_client or write_vscode) and not use_debugpy:
        raise PlldbError("--wait-for-client and --write-vscode need --debugpy.", "Add --debugpy.")
    if allow_remote and not use_debugpy:
        raise PlldbError("--debugpy-allow-remote needs --debugpy.", "Add --debugpy.")
    if use_debugpy and not is_loopback(host) and not allow_remote:
        raise PlldbError(
            f"--debugpy-host {host} would let other machines connect to debugpy, which has no "
            "authentication: anyone who can reach the port could run any code as you.",
            "Add --debugpy-allow-remote if that is what you want; to debug from another machine "
            f"safely, keep 127.0.0.1 and forward the port over SSH (ssh -L {port}:127.0.0.1:{port}).",
        )
    if use_debugpy:
        return DebuggerConfig("debugpy", host=host, port=port, wait_for_client=wait_for_client)
    if pycharm_address:
        pycharm_host, pycharm_port = parse_host_port(pycharm_address)
        return DebuggerConfig("pycharm", host=pycharm_host, port=pycharm_port)
    return None


def _attach(console: Any, debugger: Any, request: AttachRequest) -> int:
    from plldb.aws import make_session
    from plldb.bootstrap.helper_stack import load_helper_stack
    from plldb.local.session import (
        ConnectionSettings,
        DebuggerTableChunks,
        DebugSession,
        SessionRequest,
        abandon_pending_session,
        create_session,
        short_id,
    )
    from plldb.local.worker import WorkerPool

    stack_name, function_patterns = request.stack_name, request.function_patterns
    # Everything that can be wrong is checked before anything changes.
    session = make_session(request.profile, request.region)
    helper = load_helper_stack(session, request.helper_stack)
    stack_map = _map_selected_functions(
        console, session, stack_name, request.template_path, function_patterns
    )
    if debugger is not None:
        _start_debugger(console, debugger, stack_map, function_patterns, request.write_vscode)

    def take_over_other_session() -> None:
        console.info(f"Ending the other session on {stack_name} (--take-over)...", event="take_over")
        _restore_stack(console, session, helper, stack_name)

    pool = WorkerPool(
        output=console.handler_output,
        debugger=debugger,
        local_credentials=request.local_credentials,
        warn=console.warning,
    )
    try:
        created = create_session(
            session,
            helper.debugger_role_arn,
            helper.sessions_table_name,
            SessionRequest(
                stack_name=stack_name,
                function_patterns=function_patterns,
                function_timeout=request.function_timeout,
                fallback=request.fallback,
            ),
            take_over=take_over_other_session if request.take_over else None,
        )
        debug_session = DebugSession(
            websocket_url=protocol.execute_api_url(helper.websocket_url),
            session_id=created.session_id,
            reconnect_seed=created.reconnect_seed,
            stack_name=stack_name,
            runner=_runner(stack_map, pool),
            chunks=DebuggerTableChunks(created.debugger_session, helper.debugger_table_name),
            observer=console,
            settings=ConnectionSettings(
                keepalive_seconds=request.keepalive_seconds,
                max_connection_age_seconds=request.max_connection_age,
            ),
        )
        console.info(
            f"Session {short_id(created.session_id)}... created for stack {stack_name}; connecting...",
            event="session_created",
            stack=stack_name,
            session=short_id(created.session_id),
        )
        try:
            outcome = asyncio.run(_run_until_detached(debug_session))
        finally:
            console.stop()
            if not debug_session.ever_connected:
                abandon_pending_session(created, helper.sessions_table_name)
    finally:
        pool.close()
    if outcome.exit_code == 0:
        console.info("Detached: every function is restored.", event="detached")
        return 0
    if outcome.message:
        console.error(outcome.message)
    return int(outcome.exit_code)


def _map_selected_functions(
    console: Any, session: Any, stack_name: str, template_path: Path, function_patterns: tuple[str, ...]
) -> Any:
    """The stack's functions with their local source; the selected ones go to the status view."""
    from plldb.local.console import FunctionRow
    from plldb.local.stack import map_stack

    stack_map = map_stack(session, stack_name, template_path)
    selected = stack_map.selected(function_patterns)
    if not selected:
        names = ", ".join(sorted(function.logical_path for function in stack_map.functions))
        raise PlldbError(
            f"No function of stack {stack_name!r} matches {', '.join(function_patterns)}.",
            f"Its functions are: {names}.",
        )
    console.set_stack(
        stack_name,
        [
            FunctionRow(
                physical_name=function.physical_name,
                label=function.logical_path,
                source=function.source,
                note=function.missing_reason,
            )
            for function in selected
        ],
    )
    return stack_map


def _start_debugger(
    console: Any, debugger: Any, stack_map: Any, function_patterns: tuple[str, ...], write_vscode: bool
) -> None:
    """debugpy listens before the session exists (a busy port changes nothing); say how to attach."""
    from dataclasses import replace

    from plldb.local.debuggers import (
        DEBUGPY,
        find_workspace,
        is_loopback,
        pycharm_timeout,
        start_debugpy,
        vscode_launch_configuration,
        write_vscode_launch,
    )

    if debugger.kind != DEBUGPY:
        console.info(
            f"Handlers connect to PyCharm's debug server at {debugger.host}:{debugger.port}; "
            f"start its 'Python Debug Server' run configuration first (a worker waits for it at most "
            f"{pycharm_timeout():g} s).",
            event="pycharm",
            host=debugger.host,
            port=debugger.port,
        )
        return
    host, port = start_debugpy(replace(debugger, wait_for_client=False))
    if not is_loopback(host):
        console.warning(
            f"debugpy listens on {host}:{port} without authentication: anyone who can reach that port "
            "can run any code as you (--debugpy-allow-remote)."
        )
    configuration = vscode_launch_configuration(host, port, stack_map.stack_name)
    console.info(
        f"debugpy is listening on {host}:{port}. In VS Code, attach with this launch configuration "
        f"(Run and Debug > '{configuration['name']}'):",
        event="debugpy",
        host=host,
        port=port,
        configuration=configuration,
    )
    console.info(json.dumps(configuration, indent=4), event="")
    if write_vscode:
        path = write_vscode_launch(find_workspace(Path.cwd()), configuration)
        console.info(f"Added it to {path}.", event="vscode_written", path=str(path))
    if debugger.wait_for_client:
        start_debugpy(debugger, announce=lambda text: console.info(text, event="waiting_for_debugger"))


async def _run_until_detached(debug_session: Any) -> Any:
    """Run the session with Ctrl-C and SIGTERM wired to its detach (a second one leaves at once)."""
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, debug_session.interrupt)
    try:
        return await debug_session.run()
    finally:
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            with suppress(Exception):
                loop.remove_signal_handler(signal_number)


def _runner(stack_map: Any, pool: Any) -> Callable[[Any], Any]:
    """Run one invocation in the worker of its function; a function without local code gets a clear error."""
    from plldb.local.session import InvocationOutcome, local_failure
    from plldb.local.worker import Invocation

    def run(invocation: Any) -> InvocationOutcome:
        deployed = stack_map.by_physical_name(invocation.function_name)
        if deployed is None or deployed.local is None:
            reason = deployed.missing_reason if deployed is not None else "it is not part of the stack"
            return local_failure(
                "PlldbNoLocalSource",
                f"plldb has no local source for {invocation.function_name}: {reason}.",
            )
        result = pool.run(
            deployed.local,
            Invocation(
                request_id=invocation.request_id,
                event_json=invocation.event_json,
                context=dict(invocation.context),
                environment=dict(invocation.environment),
                credentials=dict(invocation.credentials) if invocation.credentials else None,
            ),
        )
        return InvocationOutcome(
            status_code=result.status_code,
            payload=result.payload,
            error=result.error,
            duration_ms=result.duration_ms,
        )

    return run


def _restore_stack(console: Any, session: Any, helper: Any, stack_name: str) -> bool:
    """Have the manager restore every function of the stack (ending its session); True when none failed."""
    from plldb.bootstrap.helper_stack import invoke_manager

    return _report_restore(
        console, invoke_manager(session, helper, {"action": "restore_stack", "stackName": stack_name})
    )


def _report_restore(console: Any, result: dict[str, Any]) -> bool:
    """Print the manager's per-function restore result; True when no function failed."""
    entries = [entry for entry in result.get("functions") or [] if isinstance(entry, dict)]
    for entry in entries:
        name = str(entry.get("functionName") or "?")
        label = f"{entry['logicalId']} ({name})" if entry.get("logicalId") else name
        status = str(entry.get("status", ""))
        message = str(entry.get("message") or status)
        if status == "failed":
            console.warning(f"  {label}: not restored: {message}")
        else:
            console.info(
                f"  {label}: {message}", event="restore", function=name, status=status, message=message
            )
    if not entries:
        console.info("No function of the stack was instrumented; nothing to restore.", event="restore")
    return all(entry.get("status") != "failed" for entry in entries)


@click.command("detach")
@click.option("--stack-name", "-s", default=None, help="The stack to restore (default: from samconfig.toml).")
@aws_options
@HELPER_STACK_OPTION
@JSON_OPTION
@click.pass_context
def detach(
    ctx: click.Context,
    *,
    stack_name: str | None,
    profile: str | None,
    region: str | None,
    helper_stack: str,
    json_output: bool,
) -> None:
    """Restore a stack's functions when its session was lost (works from any machine)."""
    from plldb.aws import make_session, translate_aws_errors
    from plldb.bootstrap.helper_stack import load_helper_stack
    from plldb.local.console import Console, choose_mode

    stack_name, _template, profile, region = _resolve_target(stack_name, None, profile, region)
    console = Console(choose_mode(json_output))

    @translate_aws_errors
    def restore() -> bool:
        session = make_session(profile, region)
        helper = load_helper_stack(session, helper_stack)
        console.info(f"Restoring the functions of {stack_name}...", event="restoring", stack=stack_name)
        return _restore_stack(console, session, helper, stack_name)

    if not restore():
        raise PlldbError(
            f"Some functions of {stack_name} were not restored.",
            "See the lines above and run the command again.",
        )
    console.info(f"Stack {stack_name} is restored.", event="restored", stack=stack_name)
    ctx.exit(0)
