"""`plldb localcloud`: the offline stand-in for AWS, for trying plldb and for its tests."""

from __future__ import annotations

import errno
import os
import shlex
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from plldb.aws import translate_aws_errors, validate_stack_name
from plldb.errors import PlldbError

DEFAULT_PORT = 4566
DEFAULT_GATEWAY_PORT = 4510
HOST = "127.0.0.1"
START_FIX = "Start it with 'plldb localcloud start' and export the variables it prints."
T = TypeVar("T")


@click.group()
def localcloud() -> None:
    """Run an offline local cloud (AWS APIs, Lambda, API Gateway WebSocket) on 127.0.0.1."""


# --- start ---------------------------------------------------------------------------------------------------
def busy_ports(ports: dict[str, int], host: str = HOST) -> list[tuple[str, int]]:
    """The (option, port) pairs whose port something already listens on (0 asks for any free port)."""
    busy = []
    for option, port in ports.items():
        if port == 0:
            continue
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                busy.append((option, port))
            else:
                raise
        finally:
            probe.close()
    return busy


def busy_ports_error(busy: list[tuple[str, int]], host: str = HOST) -> PlldbError:
    described = " and ".join(f"port {port} ({option})" for option, port in busy)
    verb = "is" if len(busy) == 1 else "are"
    return PlldbError(
        f"{described[0].upper()}{described[1:]} on {host} {verb} already in use.",
        "Stop what listens there (another 'plldb localcloud start'?), or choose free ports with "
        "--port and --gateway-port (0 picks any free port).",
    )


PORT = click.IntRange(0, 65535)


@localcloud.command()
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=PORT,
    help="Port of the AWS API endpoint (AWS_ENDPOINT_URL); 0 picks a free one.",
)
@click.option(
    "--gateway-port",
    default=DEFAULT_GATEWAY_PORT,
    show_default=True,
    type=PORT,
    help="Port of the API Gateway WebSocket endpoint (PLLDB_EXECUTE_API_ENDPOINT); 0 picks a free one.",
)
@click.option(
    "--region",
    default="us-east-1",
    show_default=True,
    help="Region the local cloud plays: its ARNs and endpoints name it, and its clients are told to use it "
    "(AWS_REGION).",
)
def start(port: int, gateway_port: int, region: str) -> None:
    """Start the local cloud in the foreground and print the environment to export. Ctrl-C stops it."""
    from plldb.localcloud.cloud import LocalCloud

    busy = busy_ports({"--port": port, "--gateway-port": gateway_port})
    if busy:
        raise busy_ports_error(busy)
    cloud = LocalCloud(port=port, gateway_port=gateway_port, region=region)
    try:
        cloud.start()
    except OSError as exc:
        cloud.stop()
        busy = busy_ports({"--port": port, "--gateway-port": gateway_port})
        if busy:  # taken between the check and the start
            raise busy_ports_error(busy)
        raise PlldbError(
            f"Could not start the local cloud: {exc}.", "Choose other ports with --port/--gateway-port."
        )
    click.echo("# The local cloud is running. In another shell, export:", err=True)
    for name, value in cloud.environment().items():
        click.echo(f"export {name}={shlex.quote(value)}")
    click.echo("# Press Ctrl-C to stop it.", err=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        cloud.stop()
        click.echo("# Local cloud stopped.", err=True)


# --- reaching the local cloud ---------------------------------------------------------------------------------
def endpoint_url(purpose: str, fix: str = START_FIX) -> str:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if not endpoint:
        raise PlldbError(f"AWS_ENDPOINT_URL is not set, so this would {purpose} real AWS.", fix)
    return endpoint


@contextmanager
def local_cloud_errors(endpoint: str) -> Iterator[None]:
    """AWS SDK failures as one line; an endpoint that does not answer is a local cloud that is not running."""
    import botocore.exceptions

    try:
        yield
    except botocore.exceptions.EndpointConnectionError:
        raise PlldbError(f"The local cloud does not answer at {endpoint} (AWS_ENDPOINT_URL).", START_FIX)


def aws_call(endpoint: str, call: Callable[[], T]) -> T:
    """Run AWS calls; every SDK failure becomes one line (the local cloud's own first)."""

    def guarded() -> T:
        with local_cloud_errors(endpoint):
            return call()

    return translate_aws_errors(guarded)()


def check_reachable(session: Any, endpoint: str) -> None:
    """One quick call, so that a local cloud that is not running is reported at once."""
    from botocore.config import Config

    client = session.client("sts", config=Config(retries={"total_max_attempts": 1}, connect_timeout=5))
    aws_call(endpoint, client.get_caller_identity)


# --- deploy --------------------------------------------------------------------------------------------------
@localcloud.command()
@click.option(
    "--template",
    "-t",
    "template",
    default="template.yaml",
    show_default=True,
    type=click.Path(path_type=Path),
)
@click.option("--stack-name", required=True, help="Name of the stack to create or update.")
@click.option("--parameter-overrides", multiple=True, help="Key=Value, repeatable.")
def deploy(template: Path, stack_name: str, parameter_overrides: tuple[str, ...]) -> None:
    """Do what `sam deploy` does, against the endpoint in AWS_ENDPOINT_URL: package local code, deploy the stack."""
    import boto3

    from plldb.localcloud.sam_deploy import deploy as sam_deploy

    validate_stack_name(stack_name)
    if not template.is_file():
        raise PlldbError(f"Template {str(template)!r} was not found.", "Pass --template PATH.")
    endpoint = endpoint_url("deploy to", f"{START_FIX} (Use 'sam deploy' for AWS.)")
    parameters = {}
    for override in parameter_overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise PlldbError(f"Parameter override {override!r} is not Key=Value.", "Write it as Key=Value.")
        parameters[key] = value
    session = boto3.Session()
    check_reachable(session, endpoint)
    outputs = aws_call(
        endpoint,
        lambda: sam_deploy(
            session,
            template,
            stack_name,
            parameters=parameters,
            on_event=lambda line: click.echo(line, err=True),
        ),
    )
    for key, value in sorted(outputs.items()):
        click.echo(f"{key}\t{value}")


# --- invoke --------------------------------------------------------------------------------------------------
STACK_TYPE = "AWS::CloudFormation::Stack"
FUNCTION_TYPE = "AWS::Lambda::Function"
GONE = "DELETE_COMPLETE"


def stack_resources(cloudformation: Any, stack: str) -> dict[str, tuple[str, str]]:
    """Logical id -> (type, physical id) of a stack's resources."""
    rows: dict[str, tuple[str, str]] = {}
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack):
        for row in page["StackResourceSummaries"]:
            rows[row["LogicalResourceId"]] = (row["ResourceType"], row.get("PhysicalResourceId", ""))
    return rows


def function_in_stack(cloudformation: Any, stack: str, logical_path: str) -> str | None:
    """The function name of a logical id (or Child/LogicalId path through nested stacks) in a stack."""
    *parents, logical_id = logical_path.split("/")
    for parent in parents:
        found = stack_resources(cloudformation, stack).get(parent)
        if found is None or found[0] != STACK_TYPE:
            return None
        stack = found[1]
    found = stack_resources(cloudformation, stack).get(logical_id)
    return found[1] if found is not None and found[0] == FUNCTION_TYPE else None


def stack_functions(cloudformation: Any, stack: str) -> list[str]:
    return sorted(
        logical_id
        for logical_id, (kind, _) in stack_resources(cloudformation, stack).items()
        if kind == FUNCTION_TYPE
    )


def deployed_stacks(cloudformation: Any) -> list[str]:
    names = []
    for page in cloudformation.get_paginator("describe_stacks").paginate():
        names += [
            stack["StackName"]
            for stack in page["Stacks"]
            if stack["StackStatus"] != GONE and not stack.get("ParentId")
        ]
    return names


def function_exists(lambda_client: Any, name: str) -> bool:
    try:
        lambda_client.get_function(FunctionName=name)
    except lambda_client.exceptions.ResourceNotFoundException:
        return False
    return True


def resolve_function(session: Any, name: str, stack_name: str | None) -> str:
    """The function a name designates: a function name or ARN, else a logical id of a deployed stack."""
    cloudformation = session.client("cloudformation")
    if stack_name is not None:
        if stack_name not in deployed_stacks(cloudformation):
            raise PlldbError(
                f"Stack {stack_name} is not deployed.", "Deploy it with 'plldb localcloud deploy'."
            )
        found = function_in_stack(cloudformation, stack_name, name)
        if found is None:
            available = ", ".join(stack_functions(cloudformation, stack_name)) or "none"
            raise PlldbError(
                f"Stack {stack_name} has no function {name!r}. Its functions: {available}.",
                "Pass one of them.",
            )
        return found
    if name.startswith("arn:") or function_exists(session.client("lambda"), name):
        return name
    matches = {
        stack: found
        for stack in deployed_stacks(cloudformation)
        if (found := function_in_stack(cloudformation, stack, name))
    }
    if len(matches) == 1:
        return next(iter(matches.values()))
    if matches:
        raise PlldbError(
            f"{name} is a function of several stacks ({', '.join(sorted(matches))}).",
            "Pass --stack-name to choose one.",
        )
    raise PlldbError(
        f"No function is named {name!r}, and no deployed stack has a function with that logical id.",
        "Pass a function name, or the logical id of a function of a stack you deployed.",
    )


@localcloud.command("invoke")
@click.argument("function_name")
@click.option("--payload", default="{}", show_default=True, help="The event, as JSON text.")
@click.option(
    "--stack-name",
    default=None,
    help="The stack whose function FUNCTION_NAME (a logical id) is, when several stacks have one.",
)
def invoke_function(function_name: str, payload: str, stack_name: str | None) -> None:
    """Invoke a deployed function "in the cloud", as `aws lambda invoke` would, and print its answer.

    FUNCTION_NAME is a function's name or ARN, or the logical id of a function of a deployed stack
    (as in the template, Child/LogicalId for a nested stack's), as `plldb invoke` takes it.
    """
    import json

    import boto3

    try:
        json.loads(payload)
    except ValueError as exc:
        raise PlldbError(
            f"--payload is not valid JSON ({exc}).", "Pass a JSON document, e.g. --payload '{}'."
        )
    if stack_name is not None:
        validate_stack_name(stack_name)
    endpoint = endpoint_url("invoke")
    session = boto3.Session()
    check_reachable(session, endpoint)
    name = aws_call(endpoint, lambda: resolve_function(session, function_name, stack_name))
    response = aws_call(
        endpoint, lambda: session.client("lambda").invoke(FunctionName=name, Payload=payload.encode("utf-8"))
    )
    click.echo(response["Payload"].read().decode("utf-8"))
    if response.get("FunctionError"):
        raise click.exceptions.Exit(1)
