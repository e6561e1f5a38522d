"""plldb's whole life cycle as a developer meets it, on two targets with one body: the local cloud
(always, in `make test`) and the AWS account of the current credentials (`make test-aws`).

bootstrap, deploy an app, attach with debugpy, invocations answered from local source, a breakpoint hit
through a DAP client, kill -9 and the helper stack's restore, attach again and detach, destroy. On AWS
every stack and bucket it creates has a unique name and is deleted at the end, whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from plldb import protocol
from plldb.bootstrap import deploy as helper_deploy
from plldb.bootstrap.helper_stack import load_helper_stack
from plldb.localcloud import sam_deploy
from tests.attach.test_attach_e2e import AttachProcess
from tests.cloud_state import function_state
from tests.dap import attach_to_debugpy, follow_subprocess

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-sam"
AWS_FLAG = "PLLDB_TEST_AWS"
GRACE_SECONDS = 2
DAP_TIMEOUT = 120.0


@dataclass
class Target:
    """Where the scenario runs: a boto3 session, the environment a developer's shell would have."""

    name: str
    session: boto3.Session
    environment: dict[str, str]
    cleanups: list[Any] = field(default_factory=list)

    def client(self, service: str) -> Any:
        return self.session.client(service)


def _developer_environment(extra: dict[str, str], home: Path) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_") and name != protocol.EXECUTE_API_ENDPOINT_VARIABLE
    }
    environment.update(extra)
    environment["NO_COLOR"] = "1"
    environment.setdefault("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    environment.setdefault("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-aws-credentials"))
    return environment


def _aws_target(home: Path) -> Target:
    if os.environ.get(AWS_FLAG) != "1":
        pytest.skip(f"runs against a real AWS account only with {AWS_FLAG}=1 and credentials: make test-aws")
    session = boto3.Session()
    try:
        session.client("sts").get_caller_identity()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        pytest.skip(f"{AWS_FLAG}=1 but no usable AWS credentials ({exc}); see docs/testing.md")
    credentials = session.get_credentials().get_frozen_credentials()
    extra = {
        "AWS_REGION": str(session.region_name),
        "AWS_DEFAULT_REGION": str(session.region_name),
        "AWS_ACCESS_KEY_ID": credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
    }
    if credentials.token:
        extra["AWS_SESSION_TOKEN"] = credentials.token
    return Target("aws", session, _developer_environment(extra, home))


@pytest.fixture(params=["localcloud", "aws"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "aws":
        chosen = _aws_target(tmp_path)
    else:
        cloud = request.getfixturevalue("local_cloud")
        chosen = Target("localcloud", cloud.session(), _developer_environment(cloud.environment(), tmp_path))
    try:
        yield chosen
    finally:
        for cleanup in reversed(chosen.cleanups):
            try:
                cleanup()
            except Exception as exc:  # every cleanup runs; a failed one is reported, not hidden
                print(f"cleanup failed on {chosen.name}: {type(exc).__name__}: {exc}", file=sys.stderr)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _invoke(target: Target, function: str, event: dict[str, Any]) -> tuple[str | None, Any]:
    response = target.client("lambda").invoke(FunctionName=function, Payload=json.dumps(event).encode())
    return response.get("FunctionError"), json.loads(response["Payload"].read())


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {timeout} s")
        time.sleep(0.5)


@pytest.mark.timeout(1800)
def test_the_whole_life_cycle(target: Target, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    helper_name = f"plldb-test-{suffix}"
    app_name = f"plldb-test-app-{suffix}"
    bucket = f"plldb-test-artifacts-{suffix}-{target.client('sts').get_caller_identity()['Account']}"

    # The helper stack and an app of the scenario's own, always removed at the end.
    target.cleanups.append(lambda: helper_deploy.destroy(target.session, helper_name, force=True))
    helper_deploy.setup(
        target.session, helper_name, parameters={"DisconnectGraceSeconds": str(GRACE_SECONDS)}
    )
    assert load_helper_stack(target.session, helper_name).stack_name == helper_name
    project = tmp_path / "hello-sam"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".aws-sam", "__pycache__"))
    target.cleanups.append(lambda: helper_deploy.delete_bucket(target.client("s3"), bucket, lambda _m: None))
    target.cleanups.append(lambda: sam_deploy.delete_stack(target.session, app_name))
    outputs = sam_deploy.deploy(target.session, project / "template.yaml", app_name, bucket=bucket)
    hello = outputs["HelloFunctionName"]
    before = function_state_of(target, hello)

    # Attach with debugpy; invocations made in the cloud run the local source.
    port = _free_port()
    attach = AttachProcess(
        project,
        target.environment,
        "--stack-name",
        app_name,
        "--helper-stack",
        helper_name,
        "-f",
        "HelloFunction",
        "--debugpy",
        "--debugpy-port",
        str(port),
    )
    target.cleanups.append(attach.close)
    attach.wait_for("ready", timeout=300)
    source = project / "hello" / "app.py"
    source.write_text(
        source.read_text().replace('"function": "hello"', '"function": "hello from this machine"')
    )
    started = time.monotonic()
    error, answer = _invoke(target, hello, {"name": "scenario"})
    latency_ms = (time.monotonic() - started) * 1000
    assert (error, answer["function"], answer["input"]) == (
        None,
        "hello from this machine",
        {"name": "scenario"},
    )
    print(f"\n[{target.name}] one invocation answered from this machine in {latency_ms:.0f} ms")

    # A breakpoint in the handler, hit by an invocation made in the cloud, through a real DAP client.
    line = next(i for i, text in enumerate(source.read_text().splitlines(), 1) if "name = event.get" in text)
    parent = attach_to_debugpy("127.0.0.1", port, DAP_TIMEOUT)
    # The function's worker already runs (the first invocation started it): debugpy offers it at once.
    child = follow_subprocess(parent, "127.0.0.1", port, {str(source): [line]}, DAP_TIMEOUT)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_invoke, target, hello, {"name": "at a breakpoint"})
        stopped = child.wait_for_event("stopped", timeout=DAP_TIMEOUT)
        variables = child.variables_of_top_frame(stopped["threadId"])
        assert (
            child.children(variables["event"]["variablesReference"])["'name'"]["value"] == "'at a breakpoint'"
        )
        child.request("continue", {"threadId": stopped["threadId"]})
        error, answer = pending.result(DAP_TIMEOUT)
    child.close()
    parent.close()
    assert (error, answer["input"]) == (None, {"name": "at a breakpoint"})

    # kill -9: the helper stack restores the function by itself.
    attach.process.kill()
    attach.process.wait(30)
    _wait(
        lambda: function_state_of(target, hello) == before, GRACE_SECONDS + 180, "the helper stack's restore"
    )

    # Attach again, and detach with Ctrl-C: exactly as deployed.
    again = AttachProcess(
        project, target.environment, "--stack-name", app_name, "--helper-stack", helper_name
    )
    target.cleanups.append(again.close)
    again.wait_for("ready", timeout=300)
    assert _invoke(target, hello, {"name": "again"})[0] is None
    assert again.stop(signal.SIGINT, timeout=300) == 0
    assert function_state_of(target, hello) == before


def function_state_of(target: Target, function: str) -> dict[str, Any]:
    """tests.cloud_state.function_state for any target (it only needs a client factory)."""
    return function_state(_ClientFactory(target.session), function)


@dataclass
class _ClientFactory:
    session: boto3.Session

    def client(self, service: str) -> Any:
        return self.session.client(service)
