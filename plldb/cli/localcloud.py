"""`plldb localcloud`: the offline stand-in for AWS, for trying plldb and for its tests."""

from __future__ import annotations

import os
import shlex
import signal
import threading
from pathlib import Path

import click

from plldb.aws import validate_stack_name
from plldb.errors import PlldbError


@click.group()
def localcloud() -> None:
    """Run an offline local cloud (AWS APIs, Lambda, API Gateway WebSocket) on 127.0.0.1."""


@localcloud.command()
@click.option("--port", default=4566, show_default=True, help="Port of the AWS API endpoint.")
@click.option(
    "--gateway-port", default=4510, show_default=True, help="Port of the API Gateway WebSocket endpoint."
)
@click.option("--region", default="us-east-1", show_default=True)
def start(port: int, gateway_port: int, region: str) -> None:
    """Start the local cloud in the foreground and print the environment to export. Ctrl-C stops it."""
    from plldb.localcloud.cloud import LocalCloud

    cloud = LocalCloud(port=port, gateway_port=gateway_port, region=region)
    try:
        cloud.start()
    except OSError as exc:
        raise PlldbError(
            f"Could not start the local cloud: {exc}.", "Choose free ports with --port/--gateway-port."
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
    if not os.environ.get("AWS_ENDPOINT_URL"):
        raise PlldbError(
            "AWS_ENDPOINT_URL is not set, so this would deploy to real AWS.",
            "Export the variables printed by 'plldb localcloud start', or use 'sam deploy' for AWS.",
        )
    parameters = {}
    for override in parameter_overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise PlldbError(f"Parameter override {override!r} is not Key=Value.", "Write it as Key=Value.")
        parameters[key] = value
    outputs = sam_deploy(
        boto3.Session(),
        template,
        stack_name,
        parameters=parameters,
        on_event=lambda line: click.echo(line, err=True),
    )
    for key, value in sorted(outputs.items()):
        click.echo(f"{key}\t{value}")


@localcloud.command("invoke")
@click.argument("function_name")
@click.option("--payload", default="{}", show_default=True, help="The event, as JSON text.")
def invoke_function(function_name: str, payload: str) -> None:
    """Invoke a deployed function "in the cloud", as `aws lambda invoke` would, and print its answer."""
    import json

    import boto3

    try:
        json.loads(payload)
    except ValueError as exc:
        raise PlldbError(
            f"--payload is not valid JSON ({exc}).", "Pass a JSON document, e.g. --payload '{}'."
        )
    if not os.environ.get("AWS_ENDPOINT_URL"):
        raise PlldbError(
            "AWS_ENDPOINT_URL is not set, so this would invoke real AWS.",
            "Export the variables printed by 'plldb localcloud start'.",
        )
    response = boto3.client("lambda").invoke(FunctionName=function_name, Payload=payload.encode("utf-8"))
    click.echo(response["Payload"].read().decode("utf-8"))
    if response.get("FunctionError"):
        raise click.exceptions.Exit(1)
