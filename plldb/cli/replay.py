"""`plldb recordings` and `plldb replay`: the invocations `plldb attach` recorded, listed and run again.

A replay runs offline, on this machine, through the same worker, context and result encoding as
attach and `plldb invoke` (the template found as invoke finds it, the function's Python and
packages, --python, --cdk-out, --debugpy, --pycharm), with the recorded event, context and request
id. The handler's own AWS calls use your credentials, or with --no-aws fail at once. It prints the
result and whether it equals the recorded one: exit status 0 when it does, 1 with a diff when not.
`--to-test` turns a recording into a pytest regression test instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from plldb.cli.common import CDK_OUT_OPTION, PYTHON_OPTION, TEMPLATE_OPTION, echo_err
from plldb.cli.debugger_options import DebuggerChoice, debugger_options
from plldb.errors import PlldbError

# The variables a --no-aws replay replaces: whatever could give the handler credentials or a region's
# endpoint. The rest of the developer's environment (virtualenvs, PATH...) stays.
NO_AWS_REMOVED_PREFIXES = ("AWS_",)
NO_AWS_KEPT = frozenset({"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE"})


def _project_dir(template_path: Path | None, cdk_out: Path | None, stack_name: str | None) -> Path:
    """The project folder, as `plldb invoke` finds the template; a CDK app's folder whatever its stack."""
    from plldb.cli.invoke import INVOKE_TEMPLATE_SECTIONS
    from plldb.local.samconfig import load_samconfig
    from plldb.local.template import (
        CDK_MANIFEST,
        DEFAULT_CDK_OUT,
        DEFAULT_TEMPLATE_NAMES,
        cdk_project_dir,
        cdk_stacks,
        locate_template,
    )

    samconfig_template = None
    if template_path is None and cdk_out is None:
        samconfig_template = load_samconfig(Path.cwd(), sections=INVOKE_TEMPLATE_SECTIONS).template
        no_template = not any((Path.cwd() / name).is_file() for name in DEFAULT_TEMPLATE_NAMES)
        if (
            samconfig_template is None
            and no_template
            and (Path.cwd() / DEFAULT_CDK_OUT / CDK_MANIFEST).is_file()
        ):
            cdk_out = Path.cwd() / DEFAULT_CDK_OUT
    if cdk_out is not None and template_path is None and stack_name is None:
        # Every stack of a CDK app records into the app's folder: no stack needs choosing here.
        assembly = cdk_out.absolute()
        stacks = cdk_stacks(assembly)
        if stacks:
            return cdk_project_dir(stacks[0].template.parent) or assembly.parent
    return locate_template(
        template=template_path, cdk_out=cdk_out, stack_name=stack_name, samconfig_template=samconfig_template
    ).project_dir


def _store(template_path: Path | None, cdk_out: Path | None, stack_name: str | None) -> Any:
    from plldb.local.recordings import RecordingStore, recordings_folder

    return RecordingStore(recordings_folder(_project_dir(template_path, cdk_out, stack_name)))


@click.command("recordings")
@click.option(
    "--function", "-f", "function", metavar="F", help="Only the recordings of F (logical id, pattern)."
)
@click.option("--json", "json_output", is_flag=True, help="A JSON array, newest first.")
@TEMPLATE_OPTION
@CDK_OUT_OPTION
@click.option(
    "--stack-name", "-s", default=None, help="Only the recordings of this stack (and its CDK stack)."
)
def recordings(
    *,
    function: str | None,
    json_output: bool,
    template_path: Path | None,
    cdk_out: Path | None,
    stack_name: str | None,
) -> None:
    """List the invocations plldb attach recorded in this project, newest first."""
    store = _store(template_path, cdk_out, stack_name)
    problems: list[str] = []
    found = store.recordings(problems)
    for problem in problems:
        echo_err(f"Warning: {problem}")
    shown = [
        recording
        for recording in found
        if (function is None or recording.matches_function(function))
        and (stack_name is None or recording.stack == stack_name)
    ]
    if json_output:
        click.echo(json.dumps([recording.summary() for recording in shown], indent=2, ensure_ascii=False))
        return
    if not shown:
        if found:
            click.echo(f"No recording matches in {store.folder} ({len(found)} recordings in all).")
        else:
            click.echo(
                f"No recordings in {store.folder}. plldb attach records every invocation it runs here."
            )
        return
    _print_table(shown)


def _print_table(shown: list[Any]) -> None:
    from plldb.local.recordings import format_size

    rows = [("ID", "FUNCTION", "TIME", "RESULT", "SIZE", "DURATION")]
    for recording in shown:
        local_time = _format_time(recording.recorded_at)
        result = "ok" if recording.ok else f"error ({(recording.error or {}).get('errorType')})"
        rows.append(
            (
                recording.id,
                recording.logical_id,
                local_time,
                result,
                format_size(recording.size),
                f"{recording.duration_ms:.0f} ms",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@click.command("replay")
@click.argument("recording_id", metavar="[ID]", required=False)
@click.option("--last", is_flag=True, help="The newest recording.")
@click.option(
    "--function", "-f", "function", metavar="F", help="The newest recording of F (logical id, pattern)."
)
@click.option(
    "--to-test",
    "to_test",
    type=click.Path(path_type=Path),
    metavar="FOLDER",
    default=None,
    help="Write a pytest regression test of the recording into FOLDER instead of running it.",
)
@TEMPLATE_OPTION
@CDK_OUT_OPTION
@click.option(
    "--stack-name", "-s", default=None, help="With a CDK assembly: the stack (default: the recording's)."
)
@PYTHON_OPTION
@click.option(
    "--no-aws",
    "no_aws",
    is_flag=True,
    help="The handler's AWS calls fail at once (no credentials, no endpoint).",
)
@debugger_options(write_vscode=True)
def replay(
    *,
    recording_id: str | None,
    last: bool,
    function: str | None,
    to_test: Path | None,
    template_path: Path | None,
    cdk_out: Path | None,
    stack_name: str | None,
    python: Path | None,
    no_aws: bool,
    debugger_choice: DebuggerChoice,
) -> None:
    """Run a recorded invocation again here, and say whether the result is the recorded one.

    \b
    plldb replay --last                      the newest recording
    plldb replay --function HelloFunction    the newest of a function
    plldb replay ID --to-test tests/         a pytest test from a recording
    """
    from plldb.local.recordings import select

    debugger = debugger_choice.config()
    if to_test is not None and (debugger is not None or no_aws or python is not None):
        raise PlldbError(
            "--to-test writes a test and runs nothing: --debugpy, --pycharm, --no-aws and --python do not apply.",
            "Run the written test under your debugger instead.",
        )
    store = _store(template_path, cdk_out, stack_name)
    problems: list[str] = []
    found = store.recordings(problems)
    for problem in problems:
        echo_err(f"Warning: {problem}")
    recording = select(found, selector=recording_id, last=last, function=function, folder=store.folder)
    local_function, notices = _local_function(recording, template_path, cdk_out, stack_name)
    if to_test is not None:
        _write_test(recording, local_function, to_test)
        return
    for notice in notices:
        echo_err(f"Warning: {notice}")
    click.get_current_context().exit(
        _run(
            recording,
            local_function,
            debugger=debugger,
            write_vscode=debugger_choice.write_vscode,
            python=python,
            no_aws=no_aws,
        )
    )


def _local_function(
    recording: Any, template_path: Path | None, cdk_out: Path | None, stack_name: str | None
) -> tuple[Any, list[str]]:
    """The recording's function in the local template (found as `plldb invoke` finds it), and notices."""
    from plldb.cli.invoke import INVOKE_TEMPLATE_SECTIONS
    from plldb.local.samconfig import load_samconfig
    from plldb.local.template import locate_template

    samconfig_template = None
    if template_path is None and cdk_out is None:
        samconfig_template = load_samconfig(Path.cwd(), sections=INVOKE_TEMPLATE_SECTIONS).template
    project = locate_template(
        template=template_path,
        cdk_out=cdk_out,
        stack_name=stack_name or recording.stack,
        samconfig_template=samconfig_template,
    )
    functions = project.scan()
    path = functions.resolve(recording.logical_id)
    function = functions.local.get(path) if path is not None else None
    if function is None:
        if path is not None and path in functions.unavailable:
            raise PlldbError(f"{recording.logical_id} cannot run locally ({functions.unavailable[path]}).")
        available = ", ".join(functions.names()) or "none"
        raise PlldbError(
            f"Recording {recording.id} is of {recording.logical_id}, which is not in {project.template} "
            f"(its functions: {available}).",
            "Pass the stack's template with --template (or --cdk-out and --stack-name).",
        )
    notices = list(functions.notices)
    if function.code_notice:
        notices.append(f"{function.logical_id} {function.code_notice}.")
    return function, notices


def _write_test(recording: Any, function: Any, folder: Path) -> None:
    from plldb.local.regression_test import write_regression_test

    written = write_regression_test(
        recording,
        code_dir=function.code_dir,
        handler=function.handler,
        layer_dirs=function.layer_dirs,
        template_variables=function.environment,
        folder=folder,
    )
    beside = ", ".join(str(path) for path in (written.event_file, written.result_file) if path is not None)
    click.echo(f"Wrote {written.test_file} (with {beside}). Run it with: pytest {written.test_file}")


def _replay_environment(recording: Any, function: Any) -> tuple[dict[str, str], frozenset[str]]:
    """The variables the replay gets: the recorded values (attach --record-env), else the template's."""
    values = recording.environment_values
    if values is not None:
        from plldb.local.worker import lambda_runtime_variable

        return dict(values), frozenset(name for name in values if not lambda_runtime_variable(name))
    declared = frozenset(function.environment) | function.environment_names
    return dict(function.environment), declared


def _replay_context(recording: Any) -> dict[str, Any]:
    """The protocol context of the recorded invocation, its deadline as far ahead as it was then."""
    context = recording.context
    function = recording.function
    budget = context.get("deadlineBudgetMs")
    if not isinstance(budget, int):
        from plldb.cli.invoke import DEFAULT_TIMEOUT_SECONDS

        budget = DEFAULT_TIMEOUT_SECONDS * 1000
    return {
        "functionName": recording.function_name or recording.logical_id.rsplit("/", 1)[-1],
        "functionVersion": function.get("version") or "$LATEST",
        "invokedFunctionArn": context.get("invokedFunctionArn"),
        "memoryLimitInMB": function.get("memoryMB"),
        "deadlineMs": int(time.time() * 1000) + budget,
        "logGroupName": context.get("logGroupName"),
        "logStreamName": context.get("logStreamName"),
        "traceId": context.get("traceId"),
        "clientContext": context.get("clientContext"),
        "cognitoIdentity": context.get("cognitoIdentity"),
        "tenantId": context.get("tenantId"),
    }


@contextlib.contextmanager
def _closed_port() -> Iterator[int]:
    """A local port bound by this process but not listening: a connection to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        yield int(placeholder.getsockname()[1])


def no_aws_environment(port: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The developer's environment for a --no-aws replay: no credentials anywhere the AWS SDK looks
    (variables, shared files, instance metadata), and every endpoint a refused local port."""
    environ = dict(os.environ if environ is None else environ)
    kept = {
        name: value
        for name, value in environ.items()
        if not name.startswith(NO_AWS_REMOVED_PREFIXES) or name in NO_AWS_KEPT
    }
    kept.update(
        {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return kept


def _start_debugpy(debugger: Any, recording: Any, write_vscode: bool) -> None:
    """debugpy listens (with attach's warning off this machine and its launch.json entry); then waits
    for the client if asked, as attach does."""
    from dataclasses import replace

    from plldb.local.debuggers import (
        find_workspace,
        is_loopback,
        start_debugpy,
        vscode_launch_configuration,
        write_vscode_launch,
    )

    host, port = start_debugpy(replace(debugger, wait_for_client=False), announce=echo_err)
    if not is_loopback(host):
        echo_err(
            f"Warning: debugpy listens on {host}:{port} without authentication: anyone who can reach that "
            "port can run any code as you (--debugpy-allow-remote)."
        )
    if write_vscode:
        stack_name = recording.stack or recording.logical_id.split("/", 1)[0]
        path = write_vscode_launch(
            find_workspace(Path.cwd()), vscode_launch_configuration(host, port, stack_name)
        )
        echo_err(f"Added the attach entry to {path}.")
    if debugger.wait_for_client:
        start_debugpy(debugger, announce=echo_err)


def _run(
    recording: Any, function: Any, *, debugger: Any, write_vscode: bool, python: Path | None, no_aws: bool
) -> int:
    from plldb import protocol
    from plldb.local.invocation import Invocation
    from plldb.local.recordings import comparable, difference
    from plldb.local.worker import WorkerPool, lambda_runtime_variable, plan_runtimes

    environment, configured = _replay_environment(recording, function)
    if recording.environment_values is None:
        missing = [
            name
            for name in recording.environment_names
            if name not in environment and not lambda_runtime_variable(name)
        ]
        if missing:
            echo_err(
                "Warning: the function has these variables in AWS, which replay without a value (the recording "
                f"has their names only; 'plldb attach --record-env' keeps values): {', '.join(missing)}."
            )
    plan = plan_runtimes([function], python=python)
    warning = plan.warning()
    if warning:
        echo_err(f"Warning: {warning}")

    def show_output(function_id: str, request_id: str, stream: str, line: str) -> None:
        click.echo(line, err=True)

    invocation = Invocation(
        request_id=recording.request_id,
        event_json=recording.event_json,
        context=_replay_context(recording),
        environment=environment,
        credentials=None,
        configured_variables=configured,
    )
    with contextlib.ExitStack() as stack:
        environ = None
        if no_aws:
            port = stack.enter_context(_closed_port())
            environ = no_aws_environment(port)
            echo_err(
                "--no-aws: the handler has no AWS credentials and its AWS endpoint is a closed local port "
                f"(127.0.0.1:{port}); its AWS calls fail at once."
            )
        if debugger is not None and debugger.kind == "debugpy":
            _start_debugpy(debugger, recording, write_vscode)
        pool = stack.enter_context(
            WorkerPool(
                output=show_output,
                debugger=debugger,
                local_credentials=True,
                warn=lambda message: echo_err(f"Warning: {message}"),
                runtimes=plan,
                python=python,
                environ=environ,
            )
        )
        result = pool.run(function, invocation)
    ok = result.status_code == protocol.RESPONSE_CODE_OK
    click.echo(result.payload if ok else json.dumps(result.error))
    recorded = comparable(recording.ok, recording.result_json, recording.error)
    replayed = comparable(ok, result.payload, result.error)
    diff = difference(recorded, replayed)
    when = _format_time(recording.recorded_at)
    if not diff:
        echo_err(f"Same result as recording {recording.id} ({recording.logical_id}, {when}).")
        return 0
    echo_err(f"The result differs from recording {recording.id} ({recording.logical_id}, {when}):")
    for line in diff:
        echo_err(line)
    return 1


def _format_time(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
