"""`plldb attach` and `plldb detach`: the commands a developer lives in while debugging a stack.

attach validates everything first (helper stack, stack, template, credentials, debugger), so a
mistake costs one clear line and changes nothing; only then does it create the session, connect,
and serve invocations until Ctrl-C, which restores every function before exiting.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from plldb import protocol
from plldb.cli.common import aws_options
from plldb.cli.debugger_options import DebuggerChoice, debugger_options
from plldb.cli.settings import samconfig_options
from plldb.errors import PlldbError

DEFAULT_TEMPLATE = Path("template.yaml")
DEFAULT_HELPER_STACK = "plldb"
MAX_FUNCTION_TIMEOUT = 900
INTERRUPTED_EXIT_CODE = 130  # a second Ctrl-C: left without waiting for the restore
NOT_INSTRUMENTED_ERROR = "PlldbNotInstrumented"  # an invocation of a function this session did not instrument

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
    template: Path | None  # --template, or samconfig's template_file
    cdk_out: Path | None
    python: Path | None
    settings: Any  # plldb.cli.settings.Settings: where each value came from
    function_patterns: tuple[str, ...]
    function_timeout: int
    fallback: str
    take_over: bool
    include_provisioned: bool
    profile: str | None
    region: str | None
    helper_stack: str
    local_credentials: bool
    write_vscode: bool
    keepalive_seconds: float | None
    max_connection_age: float | None
    record: bool = True  # keep each invocation in .plldb/recordings (plldb.local.recordings)
    record_env: bool = False  # with the values of the function's variables, not only their names
    options: Any = None  # plldb.local.session_options.SessionOptions: --observe, --match, --sample


def _resolve_target(
    *,
    stack_name: str | None,
    template: Path | None,
    profile: str | None,
    region: str | None,
    config_file: Path | None,
    config_env: str,
) -> Any:
    """Options first, then the SAM configuration file, then the defaults; the stack name is required."""
    from plldb.aws import validate_stack_name
    from plldb.cli.settings import resolve

    settings = resolve(
        stack_name=stack_name,
        template=template,
        profile=profile,
        region=region,
        config_file=config_file,
        config_env=config_env,
    )
    if not settings.stack_name:
        raise PlldbError(
            "No stack name was given.", "Pass --stack-name, or run where samconfig.toml sets stack_name."
        )
    # A StackId names a stack as CloudFormation does everywhere (and for good: never a newer namesake).
    if not protocol.STACK_ID_PATTERN.match(settings.stack_name):
        validate_stack_name(settings.stack_name)
    return settings


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
    "--cdk-out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A CDK app's cloud assembly (default: cdk.out when there is no SAM template).",
)
@click.option(
    "--python",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The interpreter (and its packages) to run every function with (default: found per function).",
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
@click.option(
    "--take-over",
    is_flag=True,
    help="End another developer's session on this stack first (restores its functions with your credentials).",
)
@click.option(
    "--include-provisioned",
    is_flag=True,
    help="Also redirect aliases with provisioned concurrency (Lambda re-provisions them: minutes, billed).",
)
@click.option(
    "--observe",
    is_flag=True,
    help="The deployed code keeps answering; each invocation also runs here (breakpoints hold nobody) "
    "and its outcome is shown next to the cloud's.",
)
@click.option(
    "--match",
    metavar="EXPR",
    default=None,
    help="Only invocations whose event this JMESPath expression selects come here; the rest run the "
    "deployed code. Several developers with a --match can share a stack.",
)
@click.option(
    "--match-token",
    is_flag=True,
    help="Like --match, with a random token: only requests with the header attach prints come here.",
)
@click.option(
    "--sample",
    type=float,
    default=None,
    metavar="F",
    help="With --observe or --match: only this fraction of the invocations (0.1: one in ten).",
)
@aws_options
@samconfig_options
@HELPER_STACK_OPTION
@JSON_OPTION
@click.option("--quiet", "-q", is_flag=True, help="Only the handlers' output, warnings and errors.")
@click.option(
    "--local-credentials",
    is_flag=True,
    help="Run handlers with your own AWS credentials instead of the function's role.",
)
@debugger_options(write_vscode=True)
@click.option(
    "--no-record", is_flag=True, help="Do not record invocations in .plldb/recordings (plldb replay)."
)
@click.option(
    "--record-env",
    is_flag=True,
    help="Record the values of the function's variables too (never credentials).",
)
# Hidden, for tests: by default the session's own ConnectionSettings apply.
@click.option("--keepalive-seconds", type=float, default=None, hidden=True)
@click.option("--max-connection-age", "max_connection_age", type=float, default=None, hidden=True)
@click.pass_context
def attach(
    ctx: click.Context,
    *,
    stack_name: str | None,
    template: Path | None,
    cdk_out: Path | None,
    python: Path | None,
    function_patterns: tuple[str, ...],
    function_timeout: int,
    fallback: str,
    take_over: bool,
    include_provisioned: bool,
    profile: str | None,
    region: str | None,
    config_file: Path | None,
    config_env: str,
    helper_stack: str,
    json_output: bool,
    quiet: bool,
    local_credentials: bool,
    debugger_choice: DebuggerChoice,
    no_record: bool,
    record_env: bool,
    keepalive_seconds: float | None,
    max_connection_age: float | None,
    observe: bool,
    match: str | None,
    match_token: bool,
    sample: float | None,
) -> None:
    """Run every invocation of a deployed stack's Python functions here, from local source."""
    from plldb.aws import translate_aws_errors
    from plldb.local.console import Console, choose_mode
    from plldb.local.session_options import session_options

    options = session_options(observe=observe, sample=sample, match=match, match_token=match_token)

    debugger = debugger_choice.config()
    write_vscode = debugger_choice.write_vscode
    settings = _resolve_target(
        stack_name=stack_name,
        template=template,
        profile=profile,
        region=region,
        config_file=config_file,
        config_env=config_env,
    )
    request = AttachRequest(
        stack_name=settings.stack_name,
        template=settings.template,
        cdk_out=cdk_out,
        python=python,
        settings=settings,
        function_patterns=function_patterns,
        function_timeout=function_timeout,
        fallback=fallback,
        take_over=take_over,
        include_provisioned=include_provisioned,
        profile=settings.profile,
        region=settings.region,
        helper_stack=helper_stack,
        local_credentials=local_credentials,
        write_vscode=write_vscode,
        keepalive_seconds=keepalive_seconds,
        max_connection_age=max_connection_age,
        record=not no_record,
        record_env=record_env,
        options=options,
    )
    console = Console(choose_mode(json_output), quiet=quiet)
    ctx.exit(translate_aws_errors(_attach)(console, debugger, request))


# The attach sequence in the order the developer sees it happen; each step is a call of its own.
def _attach(console: Any, debugger: Any, request: AttachRequest) -> int:  # noqa: PLR0915
    import uuid

    from plldb.aws import make_session
    from plldb.bootstrap.helper_stack import load_helper_stack
    from plldb.cli.settings import where
    from plldb.instrumentation.functions import FunctionRef
    from plldb.local.instrument import StackInstrumentation, developer_clients
    from plldb.local.session import (
        DebugSession,
        Lifecycle,
        connect_url,
        sigv4_signer,
    )
    from plldb.local.template import locate_template
    from plldb.local.worker import WorkerPool, plan_runtimes

    # Everything that can be wrong is checked before anything changes.
    session = make_session(request.profile, request.region)
    helper = load_helper_stack(session, request.helper_stack)
    stack = _resolve_stack(session, helper, request.stack_name)
    given = request.settings.sources.get("template") == "--template"
    project = locate_template(
        template=request.template if given else None,
        cdk_out=request.cdk_out,
        stack_name=stack.name,  # --stack-name may be its StackId
        samconfig_template=None if given or request.cdk_out is not None else request.template,
    )
    stack_map = _map_selected_functions(
        console, session, stack.name, project.template, request.function_patterns
    )
    console.info(f"Working in {where(session, request.settings)}.", event="where", region=session.region_name)
    selected = [f for f in stack_map.selected(request.function_patterns) if f.local is not None]
    for notice in getattr(stack_map, "notices", ()):
        console.warning(notice)
    for function in stack_map.selected(request.function_patterns):
        if getattr(function, "notice", None):
            console.warning(f"{function.logical_path}: {function.notice}")
        if function.local is None:
            console.warning(
                f"{function.logical_path} is not instrumented (its invocations keep running the deployed "
                f"code): {function.missing_reason}."
            )
    runtimes = plan_runtimes([f.local for f in selected if f.local is not None], python=request.python)
    if runtimes.warning():
        console.warning(runtimes.warning())
    recorder = _open_recorder(console, request, project.project_dir)
    if debugger is not None:
        _start_debugger(console, debugger, stack_map, request.function_patterns, request.write_vscode)
    instrumentation = StackInstrumentation(
        clients=developer_clients(session, helper),
        helper=helper,
        functions=[FunctionRef(f.physical_name, f.logical_path) for f in selected],
        observer=console,
        fallback=request.fallback,
        timeout=request.function_timeout,
        include_provisioned=request.include_provisioned,
        account_id=helper.stack_id.split(":")[4],
        partition=helper.stack_id.split(":")[1],
        options=request.options,
    )
    if request.options is not None:
        from plldb.local.session_options import announce

        announce(console, request.options)

    def take_over() -> None:
        console.info(
            f"Restoring the functions of {stack.name} with your credentials to end the other session "
            "(--take-over)...",
            event="take_over",
        )
        _report_restore(console, _restore_stack_functions(session, helper, stack.stack_id))

    pool = WorkerPool(
        output=recorder.capture(console.handler_output),
        debugger=debugger,
        local_credentials=request.local_credentials,
        warn=console.warning,
        runtimes=runtimes,
        python=request.python,
    )
    try:
        debug_session = DebugSession(
            websocket_url=connect_url(helper.websocket_url),
            signer=sigv4_signer(session, helper.region),
            session_id=str(uuid.uuid4()),
            session_key=protocol.new_secret(),
            reconnect_seed=protocol.new_secret(),
            stack=stack.stack_id,
            runner=_runner(stack_map, pool, instrumentation, recorder, _debugger_hold(console, debugger)),
            lifecycle=Lifecycle(
                instrument=instrumentation.instrument,
                restore=instrumentation.restore,
                take_over=take_over,
            ),
            observer=console,
            settings=_connection_settings(request),
            take_over=request.take_over,
            shared=request.options is not None and request.options.shared,
            finished=recorder.finished,
        )
        instrumentation.stop = debug_session.stop_requested
        console.info(
            f"Connecting to the helper stack {helper.stack_name} ({helper.region}) for stack {stack.name}...",
            event="connecting",
            stack=stack.name,
            stackId=stack.stack_id,
            region=helper.region,
        )
        try:
            outcome = asyncio.run(_run_until_detached(debug_session, console))
        finally:
            console.stop()
    finally:
        pool.close()
        recorder.close(wait=False)
    if outcome.exit_code == 0:
        console.info("Detached: every function is restored.", event="detached")
        return 0
    if outcome.exit_code == INTERRUPTED_EXIT_CODE:
        _leave_at_once(console, instrumentation, outcome.message or "")
    if outcome.message:
        console.error(_error_line(console, outcome.exit_code, outcome.message))
    return int(outcome.exit_code)


def _leave_at_once(console: Any, instrumentation: Any, message: str) -> None:
    """The second Ctrl-C: say how the functions get restored and end the process now. The restore still
    running in its thread must neither write after this line nor hold the exit (the interpreter would
    wait for it at exit); the helper stack restores what it leaves behind, as the message says."""
    from plldb.local.session import SessionObserver

    instrumentation.observer = SessionObserver()
    console.error(message)
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(INTERRUPTED_EXIT_CODE)


def _error_line(console: Any, exit_code: int, message: str) -> str:
    """A session that failed says so as every plldb command does ("Error: ..."). Leaving on a second
    Ctrl-C (130) is the developer's choice, not an error; a JSON event's type already says it all."""
    from plldb.local.console import MODE_JSON

    if console.mode == MODE_JSON or exit_code == INTERRUPTED_EXIT_CODE:
        return message
    return f"Error: {message}"


def _resolve_stack(session: Any, helper: Any, stack_name: str) -> Any:
    """The debugged stack by its StackId: it must exist, and it must not be the helper stack."""
    from plldb.instrumentation import stacks

    stack = stacks.resolve_stack(session.client("cloudformation"), stack_name)
    if stack is None:
        raise PlldbError(
            f"Stack {stack_name!r} was not found in region {session.region_name}.",
            "Check --stack-name and --region (or stack_name and region in samconfig.toml).",
        )
    if stack.stack_id == helper.stack_id:
        raise PlldbError(
            f"Stack {stack_name!r} is the plldb helper stack itself; it cannot be debugged with plldb.",
            "Pass the stack of your application with --stack-name.",
        )
    return stack


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
        exposure_warning,
        find_workspace,
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
    warning = exposure_warning(host, port)
    if warning:
        console.warning(warning)
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
        console.info(
            f"Until a debugger attaches to {host}:{port}, invocations wait for it here (--wait-for-client), "
            "each until its deadline.",
            event="wait_for_client",
            host=host,
            port=port,
        )


async def _run_until_detached(debug_session: Any, console: Any) -> Any:
    """Run the session with Ctrl-C and SIGTERM wired to its detach (a second one leaves at once), and
    detach as well when the reader of a piped stdout leaves (`plldb attach | head -1`)."""
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, debug_session.interrupt)
    watched = _watch_for_a_gone_reader(loop, console, debug_session.interrupt)
    try:
        return await debug_session.run()
    finally:
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            with suppress(Exception):
                loop.remove_signal_handler(signal_number)
        if watched is not None:
            with suppress(Exception):
                loop.remove_reader(watched)


def _watch_for_a_gone_reader(
    loop: asyncio.AbstractEventLoop, console: Any, detach: Callable[[], None]
) -> int | None:
    """When stdout is a pipe, its closing read end wakes the loop (the write end then reports an error
    condition, which every selector reports whatever was asked): detach once, and send what is still
    written to stdout to the null device, so no write and no exit-time flush fails. Returns the fd
    watched, or None (a terminal or a file has no reader to lose)."""
    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return None
    except (OSError, ValueError, AttributeError):
        return None

    def reader_gone() -> None:
        loop.remove_reader(fd)
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
        console.warning("The reader of plldb's output went away (its pipe closed): detaching.")
        detach()

    try:
        loop.add_reader(fd, reader_gone)
    except (OSError, ValueError, NotImplementedError):
        return None
    return fd


def _debugger_hold(console: Any, debugger: Any) -> Callable[[Any], Any] | None:
    """With --wait-for-client: hold an invocation until VS Code attaches; None when no hold applies.

    The hold returns None once a debugger is there, or the invocation's error when its deadline (less
    the layer's margin and a second for the answer to travel) passed first.
    """
    from plldb.local.debuggers import DEBUGPY, debugger_attached, wait_for_debugger
    from plldb.local.invocation import local_failure

    if debugger is None or debugger.kind != DEBUGPY or not debugger.wait_for_client:
        return None
    margin_seconds = protocol.DEADLINE_MARGIN_MS / 1000 + 1

    def hold(invocation: Any) -> Any:
        if debugger_attached():
            return None
        console.info(
            f"{console.label(invocation.function_name)} {invocation.request_id[:8]} waits for a debugger "
            f"at {debugger.host}:{debugger.port}...",
            event="waiting_for_debugger",
            **console.function_names(invocation.function_name),
            requestId=invocation.request_id,
        )
        deadline = float(invocation.context.get("deadlineMs") or 0) / 1000 - margin_seconds
        if wait_for_debugger(deadline):
            return None
        return local_failure(
            "PlldbNoDebugger",
            f"No debugger attached to debugpy at {debugger.host}:{debugger.port} before this invocation's "
            "deadline (--wait-for-client). Attach VS Code with the configuration attach printed, or attach "
            "without --wait-for-client.",
        )

    return hold


def _open_recorder(console: Any, request: AttachRequest, project_dir: Path) -> Any:
    """The recorder of each invocation's event, context, outcome and output (plldb replay)."""
    from plldb.local.recordings import open_recorder

    recorder = open_recorder(
        project_dir,
        enabled=request.record,
        record_env=request.record_env,
        stack_name=request.stack_name,
        warn=console.warning,
    )
    if recorder.folder is not None:
        console.info(
            f"Recording each invocation in {recorder.folder} ('plldb recordings', 'plldb replay'; "
            "--no-record turns it off).",
            event="recording",
            folder=str(recorder.folder),
        )
    return recorder


def _runner(
    stack_map: Any, pool: Any, instrumentation: Any, recorder: Any, hold: Callable[[Any], Any] | None = None
) -> Callable[[Any], Any]:
    """Run one invocation in the worker of its function, with the function's own variables only."""
    from dataclasses import replace

    from plldb.local.invocation import Invocation, Outcome, local_failure

    selected = frozenset(function.name for function in instrumentation.functions)

    def run(invocation: Invocation) -> Outcome:
        if invocation.function_name not in selected:
            # Only someone allowed to change a function can point it at this session; it still does not
            # get to run its invocations on this machine unless the developer chose to debug it.
            return local_failure(
                NOT_INSTRUMENTED_ERROR,
                f"plldb refused to run {invocation.function_name} on the developer's machine: this debugging "
                "session did not instrument it.",
            )
        deployed = stack_map.by_physical_name(invocation.function_name)
        if deployed is None or deployed.local is None:
            reason = deployed.missing_reason if deployed is not None else "it is not part of the stack"
            return local_failure(
                "PlldbNoLocalSource",
                f"plldb has no local source for {invocation.function_name}: {reason}.",
            )
        held = hold(invocation) if hold is not None else None
        if held is not None:
            return held  # type: ignore[no-any-return]
        # The allowlist: the names the function configures, as read with the developer's rights.
        configured = instrumentation.variable_names(invocation.function_name)
        with recorder.recording(deployed.local.logical_id, invocation.request_id) as recording:
            outcome: Outcome = pool.run(deployed.local, replace(invocation, configured_variables=configured))
            recording.done(invocation, outcome, configured)
        return outcome

    return run


def _restore_stack_functions(session: Any, helper: Any, stack_id: str) -> list[Any]:
    """Remove every trace of plldb from the stack's functions, with the developer's credentials."""
    from plldb.local.instrument import restore_stack

    return restore_stack(session, helper, stack_id, report=lambda _message: None)


def _release(session: Any, helper: Any, stack_id: str) -> dict[str, Any]:
    """Have the helper stack end the stack's other session (its functions were just restored)."""
    from plldb.local.session import connect_url, sigv4_signer
    from plldb.local.session.release import release_stack

    return asyncio.run(
        release_stack(connect_url(helper.websocket_url), sigv4_signer(session, helper.region), stack_id)
    )


def _report_restore(console: Any, results: list[Any]) -> bool:
    """Print the per-function restore result; True when no function failed."""
    for result in results:
        label = f"{result.function.path} ({result.function.name})"
        if result.status == "failed":
            console.warning(f"  {label}: not restored: {result.message}")
        else:
            console.info(
                f"  {label}: {result.message}",
                event="restore",
                function=result.function.name,
                logicalId=result.function.path,
                status=result.status,
                message=result.message,
            )
    if not results:
        console.info("The stack has no Lambda functions; nothing to restore.", event="restore")
    return all(result.status != "failed" for result in results)


@click.command("detach")
@click.option("--stack-name", "-s", default=None, help="The stack to restore (default: from samconfig.toml).")
@aws_options
@samconfig_options
@HELPER_STACK_OPTION
@JSON_OPTION
@click.pass_context
def detach(
    ctx: click.Context,
    *,
    stack_name: str | None,
    profile: str | None,
    region: str | None,
    config_file: Path | None,
    config_env: str,
    helper_stack: str,
    json_output: bool,
) -> None:
    """Restore a stack's functions when its session was lost (works from any machine)."""
    from plldb.aws import make_session, translate_aws_errors
    from plldb.bootstrap.helper_stack import load_helper_stack
    from plldb.cli.settings import where
    from plldb.local.console import Console, choose_mode

    settings = _resolve_target(
        stack_name=stack_name,
        template=None,
        profile=profile,
        region=region,
        config_file=config_file,
        config_env=config_env,
    )
    stack_name, profile, region = settings.stack_name, settings.profile, settings.region
    console = Console(choose_mode(json_output))

    @translate_aws_errors
    def restore() -> tuple[str, bool]:
        """(the stack's name, whether every function was restored and the session ended)."""
        session = make_session(profile, region)
        helper = load_helper_stack(session, helper_stack)
        stack = _resolve_stack(session, helper, stack_name)  # the option may be its StackId
        console.info(f"Working in {where(session, settings)}.", event="where", region=session.region_name)
        console.info(f"Restoring the functions of {stack.name}...", event="restoring", stack=stack.name)
        restored = _report_restore(console, _restore_stack_functions(session, helper, stack.stack_id))
        if not restored:
            return stack.name, False
        reply = _release(session, helper, stack.stack_id)
        if reply.get("type") == protocol.MSG_ERROR:
            raise PlldbError(
                f"The functions are restored, but the session was not ended: {reply.get('message')}"
            )
        if int(reply.get("closed") or 0):
            console.info("Ended the session that was debugging it.", event="released")
        return stack.name, True

    name, restored = restore()
    if not restored:
        raise PlldbError(
            f"Some functions of {name} were not restored.", "See the lines above and run the command again."
        )
    console.info(f"Stack {name} is restored.", event="restored", stack=name)
    ctx.exit(0)


def _connection_settings(request: AttachRequest) -> Any:
    """The session's defaults, with the timings a test asked for (hidden options) in their place."""
    from plldb.local.session import ConnectionSettings

    settings = ConnectionSettings()
    if request.keepalive_seconds is not None:
        settings = replace(settings, keepalive_seconds=request.keepalive_seconds)
    if request.max_connection_age is not None:
        settings = replace(settings, max_connection_age_seconds=request.max_connection_age)
    return settings
