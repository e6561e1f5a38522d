"""`plldb localcloud start|deploy|invoke` as a developer types them: one line for every mistake, no traceback."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from plldb.localcloud import sam_deploy
from plldb.localcloud.cloud import LocalCloud

PLLDB = str(Path(sys.executable).with_name("plldb"))  # the console script pip installed
FUNCTION = "def handler(event, context):\n    return {'function': context.function_name, 'event': event}\n"


def plldb(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PLLDB, *arguments], capture_output=True, text=True, timeout=120, env=env)


def listening_socket() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


def free_fixed_port() -> int:
    """A free port below the ephemeral range, where no bind(0) of another process can land meanwhile."""
    for port in random.sample(range(20000, 32000), 200):
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            probe.close()
        return port
    raise RuntimeError("no free port between 20000 and 32000")


# --- start ---------------------------------------------------------------------------------------------------
def test_start_names_every_busy_port_in_one_line() -> None:
    with listening_socket() as api, listening_socket() as gateway:
        api_port, gateway_port = api.getsockname()[1], gateway.getsockname()[1]
        result = plldb("localcloud", "start", "--port", str(api_port), "--gateway-port", str(gateway_port))

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"Error: Port {api_port} (--port) and port {gateway_port} (--gateway-port) on 127.0.0.1 are already in "
        "use. Stop what listens there (another 'plldb localcloud start'?), or choose free ports with --port and "
        "--gateway-port (0 picks any free port).\n"
    )


def test_start_names_the_one_busy_port() -> None:
    with listening_socket() as gateway:
        gateway_port = gateway.getsockname()[1]
        result = plldb("localcloud", "start", "--port", "0", "--gateway-port", str(gateway_port))

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(
        f"Error: Port {gateway_port} (--gateway-port) on 127.0.0.1 is already in use. Stop what listens there"
    )
    assert result.stderr.count("\n") == 1


def test_start_serves_on_the_fixed_ports_it_is_given() -> None:
    api_port, gateway_port = free_fixed_port(), free_fixed_port()
    process = subprocess.Popen(
        [PLLDB, "localcloud", "start", "--port", str(api_port), "--gateway-port", str(gateway_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        exported = {}
        while "PLLDB_EXECUTE_API_ENDPOINT" not in exported:  # the last variable it prints
            line = process.stdout.readline()
            assert line, process.stderr.read()
            name, _, value = line.removeprefix("export ").rstrip("\n").partition("=")
            exported[name] = value
        identity = boto3.client(
            "sts",
            endpoint_url=exported["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id=exported["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=exported["AWS_SECRET_ACCESS_KEY"],
        ).get_caller_identity()
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=60)
        errors = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert exported["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{api_port}"
    assert exported["PLLDB_EXECUTE_API_ENDPOINT"] == f"http://127.0.0.1:{gateway_port}"
    assert exported["AWS_DISABLE_HOST_PREFIX_INJECTION"] == "true"
    assert identity["Account"] == "123456789012"
    assert status == 0
    assert errors.splitlines()[-1] == "# Local cloud stopped."


def test_start_options_are_described() -> None:
    result = plldb("localcloud", "start", "--help")

    text = " ".join(result.stdout.split())
    assert result.returncode == 0
    assert "--region TEXT Region the local cloud plays: its ARNs and endpoints name it" in text
    assert "--port INTEGER RANGE Port of the AWS API endpoint (AWS_ENDPOINT_URL); 0 picks a free one." in text
    assert "--gateway-port INTEGER RANGE Port of the API Gateway WebSocket endpoint" in text


def test_start_refuses_a_port_out_of_range() -> None:
    result = plldb("localcloud", "start", "--port", "70000")

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "Error: Invalid value for '--port': 70000 is not in the range 0<=x<=65535. "
        "Run 'plldb localcloud start --help' for the usage.\n"
    )


# --- a local cloud that is not there -------------------------------------------------------------------------
@pytest.fixture
def nothing_listening() -> Iterator[dict[str, str]]:
    """The environment of a developer whose local cloud is not running (its port refuses connections)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
        yield {
            **os.environ,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "AKIALOCALCLOUDTEST00",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def test_invoke_against_a_local_cloud_that_is_not_running_says_how_to_start_it(
    nothing_listening: dict[str, str],
) -> None:
    result = plldb("localcloud", "invoke", "HelloFunction", env=nothing_listening)

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"Error: The local cloud does not answer at {nothing_listening['AWS_ENDPOINT_URL']} (AWS_ENDPOINT_URL). "
        "Start it with 'plldb localcloud start' and export the variables it prints.\n"
    )


def test_deploy_against_a_local_cloud_that_is_not_running_says_how_to_start_it(
    nothing_listening: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "template.yaml").write_text("Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n")

    result = plldb(
        "localcloud",
        "deploy",
        "-t",
        str(tmp_path / "template.yaml"),
        "--stack-name",
        "s",
        env=nothing_listening,
    )

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"Error: The local cloud does not answer at {nothing_listening['AWS_ENDPOINT_URL']} (AWS_ENDPOINT_URL). "
        "Start it with 'plldb localcloud start' and export the variables it prints.\n"
    )


def test_invoke_without_the_local_clouds_variables_refuses_to_reach_aws() -> None:
    environment = {name: value for name, value in os.environ.items() if name != "AWS_ENDPOINT_URL"}

    result = plldb("localcloud", "invoke", "HelloFunction", env=environment)

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "Error: AWS_ENDPOINT_URL is not set, so this would invoke real AWS. "
        "Start it with 'plldb localcloud start' and export the variables it prints.\n"
    )


# --- deploy and invoke on the running local cloud ------------------------------------------------------------
def app(directory: Path, logical_ids: list[str]) -> Path:
    (directory / "src").mkdir(parents=True, exist_ok=True)
    (directory / "src" / "app.py").write_text(FUNCTION)
    functions = "".join(
        f"  {logical_id}:\n    Type: AWS::Serverless::Function\n    Properties:\n"
        "      CodeUri: src/\n      Handler: app.handler\n      Runtime: python3.12\n"
        for logical_id in logical_ids
    )
    template = directory / "template.yaml"
    template.write_text(f"Transform: AWS::Serverless-2016-10-31\nResources:\n{functions}")
    return template


@pytest.fixture(scope="module")
def two_stacks(local_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """cli-one has CliGreeter and CliLoner, cli-two has CliGreeter: function name of each, by stack/logical id."""
    session = local_cloud.session()
    sam_deploy.deploy(session, app(tmp_path_factory.mktemp("one"), ["CliGreeter", "CliLoner"]), "cli-one")
    sam_deploy.deploy(session, app(tmp_path_factory.mktemp("two"), ["CliGreeter"]), "cli-two")
    cloudformation = session.client("cloudformation")
    return {
        f"{stack}/{row['LogicalResourceId']}": row["PhysicalResourceId"]
        for stack in ("cli-one", "cli-two")
        for row in cloudformation.list_stack_resources(StackName=stack)["StackResourceSummaries"]
        if row["ResourceType"] == "AWS::Lambda::Function"
    }


def test_invoke_takes_the_logical_id_of_a_deployed_function(two_stacks: dict[str, str]) -> None:
    result = plldb("localcloud", "invoke", "CliLoner", "--payload", '{"name": "you"}')

    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout) == {"function": two_stacks["cli-one/CliLoner"], "event": {"name": "you"}}


def test_invoke_still_takes_a_function_name(two_stacks: dict[str, str]) -> None:
    result = plldb("localcloud", "invoke", two_stacks["cli-two/CliGreeter"])

    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout) == {"function": two_stacks["cli-two/CliGreeter"], "event": {}}


def test_a_logical_id_of_several_stacks_needs_the_stack_name(two_stacks: dict[str, str]) -> None:
    ambiguous = plldb("localcloud", "invoke", "CliGreeter")
    chosen = plldb("localcloud", "invoke", "CliGreeter", "--stack-name", "cli-two")

    assert (ambiguous.returncode, ambiguous.stdout) == (1, "")
    assert ambiguous.stderr == (
        "Error: CliGreeter is a function of several stacks (cli-one, cli-two). Pass --stack-name to choose one.\n"
    )
    assert chosen.returncode == 0
    assert json.loads(chosen.stdout)["function"] == two_stacks["cli-two/CliGreeter"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["CliNobody"],
            "Error: No function is named 'CliNobody', and no deployed stack has a function with that logical id. "
            "Pass a function name, or the logical id of a function of a stack you deployed.",
        ),
        (
            ["CliNobody", "--stack-name", "cli-one"],
            "Error: Stack cli-one has no function 'CliNobody'. Its functions: CliGreeter, CliLoner. "
            "Pass one of them.",
        ),
        (
            ["CliGreeter", "--stack-name", "cli-three"],
            "Error: Stack cli-three is not deployed. Deploy it with 'plldb localcloud deploy'.",
        ),
        (
            ["CliGreeter", "--payload", "{nope"],
            "Error: --payload is not valid JSON (Expecting property name enclosed in double quotes: line 1 "
            "column 2 (char 1)). Pass a JSON document, e.g. --payload '{}'.",
        ),
    ],
)
def test_a_wrong_name_is_one_line_that_names_the_fix(
    two_stacks: dict[str, str], arguments: list[str], expected: str
) -> None:
    result = plldb("localcloud", "invoke", *arguments)

    assert (result.returncode, result.stdout, result.stderr) == (1, "", expected + "\n")


def test_deploy_of_what_the_local_cloud_does_not_emulate_ends_with_one_line(
    local_cloud: LocalCloud, tmp_path: Path
) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Resources:\n"
        "  FileSystem:\n    Type: AWS::EFS::FileSystem\n"
        "  AccessPoint:\n    Type: AWS::EFS::AccessPoint\n    Properties: {FileSystemId: !Ref FileSystem}\n"
        "Outputs:\n  AccessPointArn: {Value: !GetAtt AccessPoint.Arn}\n"
    )

    result = plldb("localcloud", "deploy", "-t", str(template), "--stack-name", "cli-efs")

    assert (result.returncode, result.stdout) == (1, "")
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: Deploying stack cli-efs failed: ValidationError: Resource AccessPoint (AWS::EFS::AccessPoint): the "
        "local cloud does not emulate its attribute Arn (Fn::GetAtt AccessPoint.Arn); docs/localcloud.md lists "
        "what it emulates."
    )
    stacks = local_cloud.client("cloudformation").describe_stacks()["Stacks"]
    assert "cli-efs" not in {stack["StackName"] for stack in stacks}
