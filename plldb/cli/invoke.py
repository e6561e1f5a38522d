"""`plldb invoke`: run one function of the local SAM template on this machine, no AWS needed.

It uses the same worker, context and result encoding as `plldb attach`, so what works here works
attached: the template (or CDK cloud assembly) is found as `plldb attach` finds it, and the function
runs on its Runtime's Python with its project's packages. The result JSON goes to stdout, the
function's logs to stderr; the exit status is 1 when the function failed (its error JSON is printed
instead of a result). The handler's own AWS calls use the developer's credentials: ``--profile`` and
``--region`` choose them as they do for ``sam local invoke``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from plldb.cli.common import CDK_OUT_OPTION, PYTHON_OPTION, TEMPLATE_OPTION, aws_options, echo_err
from plldb.cli.debugger_options import DebuggerChoice, debugger_options
from plldb.errors import PlldbError

DEFAULT_TIMEOUT_SECONDS = 3  # SAM's default Timeout
DEFAULT_MEMORY_MB = 128
LOCAL_ACCOUNT_ID = "123456789012"
# samconfig sections whose template_file `plldb invoke` uses, later ones winning (sam local invoke's last).
INVOKE_TEMPLATE_SECTIONS = ("global", "deploy", "sync", "build", "local_invoke")
# Credentials in the shell's variables, which botocore would prefer to a --profile: its environment
# and web-identity providers come before the shared config files in its chain.
ENVIRONMENT_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


def read_event(source: str | None) -> str:
    """The event as JSON text, exactly as given (validated, not re-encoded)."""
    if source is None:
        return "{}"
    if source == "-":
        text = sys.stdin.read()
        where = "stdin"
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise PlldbError(f"Cannot read the event file {source}: {exc.strerror or exc}.")
        where = source
    try:
        json.loads(text)
    except ValueError as exc:
        raise PlldbError(f"The event in {where} is not valid JSON: {exc}.")
    return text


def read_env_vars(path: Path | None, logical_id: str, aliases: tuple[str, ...] = ()) -> dict[str, str]:
    """Variables from a `sam local invoke --env-vars` style file: "Parameters" for all, then the function's.

    The function's section may be named by its logical id, its nested path or (CDK) its construct id.
    """
    if path is None:
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlldbError(f"Cannot read the environment file {path}: {exc}.")
    if not isinstance(document, dict):
        raise PlldbError(f"{path} must contain a JSON object of {{LogicalId: {{NAME: value}}}}.")
    variables: dict[str, str] = {}
    for section in ("Parameters", logical_id.split("/")[-1], *aliases, logical_id):
        values = document.get(section)
        if isinstance(values, dict):
            for name, value in values.items():
                variables[str(name)] = _as_text(value)
    return variables


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return "" if value is None else str(value)


def local_context(function_name: str, timeout: int, memory: int, region: str | None = None) -> dict[str, Any]:
    """The protocol context of a local invocation: SAM local's conventions, the current region."""
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return {
        "functionName": function_name,
        "functionVersion": "$LATEST",
        "invokedFunctionArn": f"arn:aws:lambda:{region}:{LOCAL_ACCOUNT_ID}:function:{function_name}",
        "memoryLimitInMB": memory,
        "deadlineMs": int(time.time() * 1000) + timeout * 1000,
        "logGroupName": f"/aws/lambda/{function_name}",
        "logStreamName": time.strftime("%Y/%m/%d", time.gmtime()) + "/[$LATEST]" + uuid.uuid4().hex,
        "traceId": None,
        "clientContext": None,
        "cognitoIdentity": None,
    }


def handler_environ(profile: str | None, region: str | None) -> tuple[dict[str, str] | None, str | None]:
    """The developer's environment the handler takes its AWS settings from, with ``--profile`` and
    ``--region`` applied, and the invocation's region (None, None: this process's own, unchanged).

    As on the AWS CLI, an option given on the command line wins over the environment: with
    ``--profile`` the credential variables of the shell are not passed on, or they would be used
    instead of the profile; its region applies unless --region or the shell's AWS_REGION (or
    AWS_DEFAULT_REGION) names one.
    """
    if profile is None and region is None:
        return None, None
    from plldb.aws import available_profiles, profile_region, validate_region

    if region is not None:
        validate_region(region)
    result = dict(os.environ)
    if profile is not None:
        if profile not in available_profiles():
            raise PlldbError(
                f"AWS profile {profile!r} (--profile) was not found.",
                "Check ~/.aws/config, or run 'aws configure --profile NAME'.",
            )
        for name in ENVIRONMENT_CREDENTIALS:
            result.pop(name, None)
        result["AWS_PROFILE"] = profile
        if region is None:
            region = result.get("AWS_REGION") or result.get("AWS_DEFAULT_REGION") or profile_region(profile)
    if region is not None:
        result["AWS_REGION"] = result["AWS_DEFAULT_REGION"] = region
    return result, region


@click.command("invoke")
@click.argument("logical_id")
@TEMPLATE_OPTION
@CDK_OUT_OPTION
@click.option("--stack-name", "-s", default=None, help="With a CDK assembly of several stacks: the stack.")
@PYTHON_OPTION
@click.option(
    "--event", "-e", "event_source", default=None, help="Event JSON file, or - for stdin (default: {})."
)
@click.option(
    "--env-vars",
    "-n",
    "env_vars_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help='JSON file of variables as for sam local invoke: {"Parameters": {...}, "LogicalId": {...}}.',
)
@aws_options
@debugger_options()
def invoke(
    *,
    logical_id: str,
    template_path: Path | None,
    cdk_out: Path | None,
    stack_name: str | None,
    python: Path | None,
    event_source: str | None,
    env_vars_path: Path | None,
    profile: str | None,
    region: str | None,
    debugger_choice: DebuggerChoice,
) -> None:
    """Run function LOGICAL_ID of the local template once, with an event, on this machine.

    The function runs on its Runtime's Python with its project's packages, your own AWS credentials
    (--profile, --region) and the template's environment variables.
    """
    from plldb import protocol
    from plldb.local.invocation import Invocation
    from plldb.local.worker import WorkerPool, plan_runtimes

    debugger = debugger_choice.config()
    environ, region = handler_environ(profile, region)
    functions, function = _find_function(logical_id, template_path, cdk_out, stack_name)
    event_json = read_event(event_source)
    declared = frozenset(function.environment) | function.environment_names
    aliases = tuple(alias for alias, target in functions.aliases.items() if target == function.logical_id)
    overrides = read_env_vars(env_vars_path, function.logical_id, aliases)
    environment = dict(function.environment)
    environment.update({name: value for name, value in overrides.items() if name in declared})
    plan = plan_runtimes([function], python=python)
    warnings = [*functions.notices]
    if function.code_notice:
        warnings.append(f"{function.logical_id} {function.code_notice}.")
    ignored = sorted(set(overrides) - declared)
    if ignored:
        warnings.append(
            f"{env_vars_path} sets {', '.join(ignored)}, which the template does not declare for "
            f"{function.logical_id}; like sam local invoke, plldb ignores them. Declare them under the "
            "function's Environment.Variables to set them."
        )
    runtime_warning = plan.warning()
    if runtime_warning:
        warnings.append(runtime_warning)
    for warning in warnings:
        echo_err(f"Warning: {warning}")
    _start_debugpy(debugger)

    def show_output(function_id: str, request_id: str, stream: str, line: str) -> None:
        click.echo(line, err=True)

    invocation = Invocation(
        request_id=str(uuid.uuid4()),
        event_json=event_json,
        context=local_context(
            logical_id.split("/")[-1],
            function.timeout or DEFAULT_TIMEOUT_SECONDS,
            function.memory_size or DEFAULT_MEMORY_MB,
            region,
        ),
        environment=environment,
        credentials=None,
        configured_variables=declared,
    )
    with WorkerPool(
        output=show_output,
        debugger=debugger,
        local_credentials=True,
        warn=lambda message: echo_err(f"Warning: {message}"),
        runtimes=plan,
        python=python,
        environ=environ,
    ) as pool:
        result = pool.run(function, invocation)
    if result.status_code == protocol.RESPONSE_CODE_OK:
        click.echo(result.payload)
        return
    click.echo(json.dumps(result.error))
    # A function error is a result, not a plldb failure: exit status 1 without an "Error:" line.
    sys.exit(1)


def _find_function(
    logical_id: str, template_path: Path | None, cdk_out: Path | None, stack_name: str | None
) -> tuple[Any, Any]:
    """The project's functions and the one to run, found as attach finds them (samconfig first)."""
    from plldb.local.samconfig import load_samconfig
    from plldb.local.template import locate_template

    samconfig_template = None
    if template_path is None and cdk_out is None:
        samconfig_template = load_samconfig(Path.cwd(), sections=INVOKE_TEMPLATE_SECTIONS).template
    project = locate_template(
        template=template_path, cdk_out=cdk_out, stack_name=stack_name, samconfig_template=samconfig_template
    )
    functions = project.scan()
    path = functions.resolve(logical_id)
    function = functions.local.get(path) if path is not None else None
    if function is None:
        if path is not None and path in functions.unavailable:
            raise PlldbError(f"{logical_id} cannot run locally ({functions.unavailable[path]}).")
        available = ", ".join(functions.names()) or "none"
        raise PlldbError(f"No function {logical_id!r} in {project.template}. Available: {available}.")
    return functions, function


def _start_debugpy(debugger: Any) -> None:
    """Start debugpy in this process for the worker to follow, warning when others can reach it."""
    from plldb.local.debuggers import exposure_warning, start_debugpy

    if debugger is None or debugger.kind != "debugpy":
        return
    host, port = start_debugpy(replace(debugger, wait_for_client=False), announce=echo_err)
    warning = exposure_warning(host, port)
    if warning:
        echo_err(f"Warning: {warning}")
    start_debugpy(debugger, announce=echo_err)
