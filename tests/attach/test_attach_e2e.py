"""`plldb attach` end to end on the local cloud: the helper stack bootstrapped, examples/hello-sam
deployed, attach run as a subprocess, invocations made with boto3 ``lambda.invoke``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plldb import protocol
from plldb.bootstrap.deploy import setup
from plldb.bootstrap.helper_stack import HelperStack, load_helper_stack
from plldb.localcloud.sam_deploy import deploy
from tests.cloud_state import (
    configuration,
    function_state,
    is_instrumented,
    session_connection,
    sessions_of,
    table_items,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a liveness guard, never a bound

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-sam"
READY_TIMEOUT = 60.0
WORKING_IN = "Working in account 123456789012, region us-east-1 (region from your AWS configuration)."
MISSING_STACK_ID = (
    "arn:aws:cloudformation:us-east-1:123456789012:stack/no-such-stack/"
    + "0" * 8
    + "-0000-4000-8000-"
    + "0" * 12
)


@dataclass
class DeployedExample:
    directory: Path
    stack_name: str
    hello: str
    goodbye: str


@pytest.fixture(scope="module")
def helper(local_cloud: Any) -> HelperStack:
    session = local_cloud.session()
    setup(session, poll_seconds=0.2)
    return load_helper_stack(session)


def deploy_example(local_cloud: Any, directory: Path) -> DeployedExample:
    """A copy of examples/hello-sam in ``directory``, deployed as its own stack."""
    shutil.copytree(EXAMPLE, directory, ignore=shutil.ignore_patterns(".aws-sam", "__pycache__"))
    stack_name = f"hello-{uuid.uuid4().hex[:8]}"
    outputs = deploy(local_cloud.session(), directory / "template.yaml", stack_name)
    return DeployedExample(
        directory, stack_name, outputs["HelloFunctionName"], outputs["GoodbyeFunctionName"]
    )


@pytest.fixture
def example(local_cloud: Any, helper: HelperStack, tmp_path: Path) -> DeployedExample:
    """A stack of the test's own: it may edit the source, attach and detach."""
    return deploy_example(local_cloud, tmp_path / "hello-sam")


@pytest.fixture(scope="module")
def untouched_example(
    local_cloud: Any, helper: HelperStack, tmp_path_factory: pytest.TempPathFactory
) -> DeployedExample:
    """A stack shared by the tests that must leave it exactly as deployed."""
    return deploy_example(local_cloud, tmp_path_factory.mktemp("untouched") / "hello-sam")


class AttachProcess:
    """`python -m plldb attach --json ...` in a project folder; its events are read as they come."""

    def __init__(self, cwd: Path, environment: dict[str, str], *args: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.stderr_lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "plldb", "attach", "--json", *args],
            cwd=cwd,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._readers = [
            threading.Thread(target=self._read_events, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_events(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    def named(
        self, event: str, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]:
        """The events of that name so far (those ``where`` accepts), in the order attach wrote them."""
        return [
            record
            for record in list(self.events)
            if record["event"] == event and (where is None or where(record))
        ]

    def wait_for(
        self,
        event: str,
        timeout: float = READY_TIMEOUT,
        count: int = 1,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.named(event, where)) < count:
            if self.process.poll() is not None:
                for reader in self._readers:  # they end once they have read everything it wrote
                    reader.join(10)
                if len(self.named(event, where)) >= count:
                    break
                raise AssertionError(
                    f"attach exited ({self.process.returncode}) before {event!r}: {self.stderr_lines}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {event!r} within {timeout} s; stderr: {self.stderr_lines}")
            time.sleep(0.05)
        return self.named(event, where)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def attach_environment(local_cloud: Any, tmp_path: Path) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_") and name != protocol.EXECUTE_API_ENDPOINT_VARIABLE
    }
    environment.update(local_cloud.environment())
    environment["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    environment["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-credentials")
    environment["NO_COLOR"] = "1"
    return environment


@pytest.fixture
def start_attach(attach_environment: dict[str, str]) -> Iterator[Callable[..., AttachProcess]]:
    started: list[AttachProcess] = []

    def start(cwd: Path, *args: str) -> AttachProcess:
        process = AttachProcess(cwd, attach_environment, *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def invoke(local_cloud: Any, function: str, event: dict[str, Any]) -> tuple[str | None, Any]:
    response = local_cloud.client("lambda").invoke(FunctionName=function, Payload=json.dumps(event).encode())
    return response.get("FunctionError"), json.loads(response["Payload"].read())


def test_invocations_run_local_code_and_ctrl_c_restores_exactly(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
) -> None:
    before = {name: function_state(local_cloud, name) for name in (example.hello, example.goodbye)}
    attach = start_attach(example.directory, "--stack-name", example.stack_name)
    ready = attach.wait_for("ready")[0]
    assert sorted(ready["functions"]) == sorted([example.hello, example.goodbye])
    mapping = attach.named("mapping")[0]
    assert {(f["logicalId"], f["source"]) for f in mapping["functions"]} == {
        ("HelloFunction", "hello/app.py:lambda_handler"),
        ("GoodbyeFunction", "goodbye/app.py:lambda_handler"),
    }

    error, answer = invoke(local_cloud, example.hello, {"name": "local"})
    assert error is None
    assert answer == {
        "function": "hello",
        "greeting": "Hello",
        "message": answer["message"],
        "input": {"name": "local"},
    }
    assert "local" in answer["message"]

    # Prove the answer comes from the local file: edit it, the cloud's answer changes.
    source = example.directory / "hello" / "app.py"
    edited = source.read_text().replace('"function": "hello"', '"function": "hello, edited locally"')
    edited = edited.replace(
        '    name = event.get("name", "world")\n',
        '    name = event.get("name", "world")\n    print("hi", name)\n',
    )
    assert 'print("hi", name)' in edited
    source.write_text(edited)
    error, answer = invoke(local_cloud, example.hello, {"name": "again"})
    assert (error, answer["function"]) == (None, "hello, edited locally")
    # The handler's output reaches the terminal, tagged with the function and the request id.
    printed = attach.wait_for("output")[0]
    request_id = attach.named("invocation_finished")[-1]["requestId"]
    assert {key: printed[key] for key in ("function", "logicalId", "requestId", "stream", "line")} == {
        "function": example.hello,
        "logicalId": "HelloFunction",
        "requestId": request_id,
        "stream": "stdout",
        "line": "hi again",
    }

    # Two functions whose handlers are both app.lambda_handler each run their own module.
    error, answer = invoke(local_cloud, example.goodbye, {"name": "you"})
    assert (error, answer["function"], answer["input"]) == (None, "goodbye", {"name": "you"})

    error, answer = invoke(local_cloud, example.hello, {"fail": True})
    assert error == "Unhandled"
    assert (answer["errorType"], answer["errorMessage"]) == ("ValueError", "asked to fail")

    assert attach.stop(signal.SIGINT) == 0
    assert attach.named("detached")
    assert {name: function_state(local_cloud, name) for name in before} == before


NOT_ACKNOWLEDGED = (
    "plldb is not attached to this function's stack: the debugger did not acknowledge the invocation within "
    f"{protocol.ACK_TIMEOUT_SECONDS:g} s. "
)


def hello_answer(name: str) -> dict[str, Any]:
    return {"function": "hello", "greeting": "Hello", "message": f"Hello, {name}!", "input": {"name": name}}


def test_twenty_concurrent_invocations_are_all_answered_once(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
) -> None:
    attach = start_attach(example.directory, "--stack-name", example.stack_name, "-f", "HelloFunction")
    attach.wait_for("ready")

    def burst(prefix: str) -> list[tuple[str | None, Any]]:
        with ThreadPoolExecutor(20) as pool:
            return list(
                pool.map(lambda i: invoke(local_cloud, example.hello, {"name": f"{prefix}-{i}"}), range(20))
            )

    # Setup: twenty execution environments of the function, of the dispatcher and of the routes, and
    # twenty local workers, started by a first burst. Each cold start is a real process, and twenty of
    # them at once on a loaded two-core machine can keep a `response` (or an `ack`) in a starting routes
    # environment past the layer's ack timeout; on Lambda they start on their own hardware. A warm-up
    # call either gets its answer or, exactly, the layer's documented answer for a missing ack.
    for (error, answer), i in zip(burst("warm-up"), range(20), strict=True):
        if error is None:
            assert answer == hello_answer(f"warm-up-{i}")
        else:
            assert (error, answer["errorType"]) == ("Unhandled", "PlldbNotAttached")
            assert answer["errorMessage"].startswith(NOT_ACKNOWLEDGED)
    warm_up = {e["requestId"] for e in attach.wait_for("invocation_finished", count=20)}
    assert len(warm_up) == 20  # every warm-up call ran locally once, answered in time or not

    answers = burst("caller")
    assert answers == [(None, hello_answer(f"caller-{i}")) for i in range(20)]
    finished = attach.wait_for("invocation_finished", count=40)
    request_ids = {event["requestId"] for event in finished} - warm_up
    assert len(request_ids) == 20
    assert len(finished) == 40
    assert len(attach.named("invocation_started")) == 40
    assert not is_instrumented(local_cloud, helper, example.goodbye)
    assert attach.stop() == 0


def test_kill_9_is_restored_by_disconnect_and_a_pending_invocation_gets_not_attached(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
) -> None:
    before = function_state(local_cloud, example.hello)
    attach = start_attach(example.directory, "--stack-name", example.stack_name, "-f", "HelloFunction")
    attach.wait_for("ready")
    assert is_instrumented(local_cloud, helper, example.hello)
    attach.process.kill()
    attach.process.wait(10)

    error, answer = invoke(local_cloud, example.hello, {"name": "nobody home"})
    assert error == "Unhandled"
    assert answer["errorType"] == "PlldbNotAttached"
    assert answer["errorMessage"].startswith("plldb is not attached to this function's stack: ")

    wait_for(
        lambda: function_state(local_cloud, example.hello) == before,  # the role's tag and policy too
        "the restore by $disconnect",
        timeout=protocol.DISCONNECT_GRACE_SECONDS + 60,
    )
    # Restored by the helper stack for a connection that went away, not by a detach.
    assert [s[protocol.A_CLOSED_REASON] for s in sessions_of(local_cloud, helper, example.stack_name)] == [
        protocol.CLOSED_ABANDONED
    ]
    error, answer = invoke(local_cloud, example.hello, {"name": "cloud"})
    assert (error, answer["function"], answer["input"]) == (None, "hello", {"name": "cloud"})


def test_dropped_connection_reconnects_and_nothing_is_lost_or_duplicated(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
) -> None:
    attach = start_attach(example.directory, "--stack-name", example.stack_name, "-f", "HelloFunction")
    attach.wait_for("ready")
    error, answer = invoke(local_cloud, example.hello, {"name": "first"})
    assert error is None, answer
    first_connection = session_connection(local_cloud, helper, example.stack_name)
    assert first_connection in local_cloud.gateway.connection_ids()

    local_cloud.gateway.cut(first_connection)
    attach.wait_for("reconnected", timeout=30)
    second_connection = session_connection(local_cloud, helper, example.stack_name)
    assert second_connection not in (None, first_connection)

    answers = [invoke(local_cloud, example.hello, {"name": f"after-{i}"}) for i in range(3)]
    assert [(error, answer["input"]["name"]) for error, answer in answers] == [
        (None, "after-0"),
        (None, "after-1"),
        (None, "after-2"),
    ]
    started = [event["requestId"] for event in attach.named("invocation_started")]
    assert len(started) == len(set(started)) == 4
    assert len(attach.named("ready")) == 1  # not instrumented again
    assert attach.stop(signal.SIGTERM) == 0  # SIGTERM detaches like Ctrl-C
    assert not is_instrumented(local_cloud, helper, example.hello)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["--helper-stack", "not-bootstrapped"],
            "Error: The plldb helper stack 'not-bootstrapped' was not found in us-east-1. "
            "Run 'plldb bootstrap setup' first.",
        ),
        (
            ["--stack-name", "no-such-stack"],
            "Error: Stack 'no-such-stack' was not found in region us-east-1. "
            "Check --stack-name and --region (or stack_name and region in samconfig.toml).",
        ),
        (
            ["--stack-name", MISSING_STACK_ID],
            f"Error: Stack {MISSING_STACK_ID!r} was not found in region us-east-1. "
            "Check --stack-name and --region (or stack_name and region in samconfig.toml).",
        ),
        (
            ["--template", "missing.yaml"],
            "Error: Template missing.yaml was not found. Pass --template with the path of your SAM template.",
        ),
        (
            ["-f", "NoSuchFunction"],
            "Error: No function of stack {stack!r} matches NoSuchFunction. "
            "Its functions are: GoodbyeFunction, HelloFunction.",
        ),
    ],
)
def test_mistakes_are_one_line_with_the_fix_and_change_nothing(
    local_cloud: Any,
    helper: HelperStack,
    untouched_example: DeployedExample,
    attach_environment: dict[str, str],
    arguments: list[str],
    expected: str,
) -> None:
    before = configuration(local_cloud, untouched_example.hello)
    sessions_before = session_count(local_cloud, helper)
    if "--stack-name" not in arguments:
        arguments = ["--stack-name", untouched_example.stack_name, *arguments]
    result = subprocess.run(
        [sys.executable, "-m", "plldb", "attach", *arguments],
        cwd=untouched_example.directory,
        env=attach_environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr.splitlines(), result.stdout) == (
        1,
        [expected.format(stack=untouched_example.stack_name)],
        "",
    )
    assert configuration(local_cloud, untouched_example.hello) == before
    assert session_count(local_cloud, helper) == sessions_before


def test_missing_credentials_are_one_line_with_the_fix(
    local_cloud: Any,
    helper: HelperStack,
    untouched_example: DeployedExample,
    attach_environment: dict[str, str],
) -> None:
    environment = {
        name: value
        for name, value in attach_environment.items()
        if name not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    environment["AWS_EC2_METADATA_DISABLED"] = "true"
    result = subprocess.run(
        [sys.executable, "-m", "plldb", "attach", "--stack-name", untouched_example.stack_name],
        cwd=untouched_example.directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr.splitlines()) == (
        1,
        ["Error: No AWS credentials were found. Run 'aws configure', 'aws sso login', or pass --profile."],
    )


def test_stack_without_functions_is_one_line_with_the_fix(
    local_cloud: Any, helper: HelperStack, attach_environment: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "template.yaml").write_text("Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n")
    stack_name = f"topic-{uuid.uuid4().hex[:8]}"
    deploy(local_cloud.session(), tmp_path / "template.yaml", stack_name)
    result = subprocess.run(
        [sys.executable, "-m", "plldb", "attach", "--stack-name", stack_name],
        cwd=tmp_path,
        env=attach_environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr.splitlines()) == (
        1,
        [
            f"Error: Stack {stack_name!r} has no Lambda functions (AWS::Lambda::Function) to debug. "
            "Attach to a stack deployed from a SAM template with AWS::Serverless::Function resources."
        ],
    )


def session_count(local_cloud: Any, helper: HelperStack) -> int:
    return len(table_items(local_cloud, helper, "PLLDBSessions"))


def test_detach_command_restores_a_stack_whose_session_was_lost(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
    attach_environment: dict[str, str],
) -> None:
    before = function_state(local_cloud, example.hello)
    attach = start_attach(example.directory, "--stack-name", example.stack_name, "-f", "HelloFunction")
    attach.wait_for("ready")
    attach.process.kill()
    attach.process.wait(10)
    result = subprocess.run(
        [sys.executable, "-m", "plldb", "detach", "--stack-name", example.stack_name],
        cwd="/",
        env=attach_environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        WORKING_IN,
        f"Restoring the functions of {example.stack_name}...",
        f"  GoodbyeFunction ({example.goodbye}): already in its deployed configuration",
        f"  HelloFunction ({example.hello}): restored",
        "Ended the session that was debugging it.",
        f"Stack {example.stack_name} is restored.",
    ]
    assert function_state(local_cloud, example.hello) == before
    assert [s[protocol.A_CLOSED_REASON] for s in sessions_of(local_cloud, helper, example.stack_name)] == [
        protocol.CLOSED_RELEASED
    ]

    # Again, naming the stack by its StackId: nothing left to restore, and the stack is named as people know it.
    stack_id = local_cloud.client("cloudformation").describe_stacks(StackName=example.stack_name)["Stacks"][
        0
    ]["StackId"]
    again = subprocess.run(
        [sys.executable, "-m", "plldb", "detach", "--stack-name", stack_id],
        cwd="/",
        env=attach_environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout.splitlines() == [
        WORKING_IN,
        f"Restoring the functions of {example.stack_name}...",
        f"  GoodbyeFunction ({example.goodbye}): already in its deployed configuration",
        f"  HelloFunction ({example.hello}): already in its deployed configuration",
        f"Stack {example.stack_name} is restored.",
    ]
    assert function_state(local_cloud, example.hello) == before


def test_a_state_machine_runs_its_lambda_tasks_from_local_source_through_attach(
    local_cloud: Any,
    helper: HelperStack,
    tmp_path: Path,
    start_attach: Callable[..., AttachProcess],
) -> None:
    """The shop app's real entry point: a Step Functions execution whose two Lambda tasks run here, the
    first on Python 3.13 with the project's .venv, the second edited locally, then an exact restore."""
    from tests.local.fixtures.apps import lambda_python, make_shop_app

    python = lambda_python("3.13")
    if python is None or lambda_python("3.12") is None:
        pytest.skip("python3.12 and python3.13 are needed and not both installed on this machine")
    app = make_shop_app(tmp_path / "shop", python)
    stack_name = f"shop-{uuid.uuid4().hex[:8]}"
    outputs = deploy(local_cloud.session(), app / "template.yaml", stack_name)
    resources = local_cloud.client("cloudformation").list_stack_resources(StackName=stack_name)
    functions = {
        resource["LogicalResourceId"]: resource["PhysicalResourceId"]
        for resource in resources["StackResourceSummaries"]
        if resource["ResourceType"] == "AWS::Lambda::Function"
    }
    assert sorted(functions) == ["FulfilFunction", "NightlyFunction", "PriceFunction"]
    before = {name: function_state(local_cloud, name) for name in functions.values()}
    fulfil = app / "fulfil" / "app.py"
    fulfil.write_text(fulfil.read_text().replace('"shipped": True', '"shipped": "from this machine"'))

    attach = start_attach(app, "--stack-name", stack_name)
    assert sorted(attach.wait_for("ready")[0]["functions"]) == sorted(functions.values())

    def of(logical_id: str) -> Callable[[dict[str, Any]], bool]:
        # The app's nightly schedule is a real rule: a run spanning 02:00 UTC also sees NightlyFunction.
        return lambda event: event["logicalId"] == logical_id

    stepfunctions = local_cloud.client("stepfunctions")
    order = (app / "events" / "order.json").read_text()
    execution = stepfunctions.start_execution(stateMachineArn=outputs["StateMachineArn"], input=order)
    assert local_cloud.stepfunctions.wait_for_execution(execution["executionArn"])
    described = stepfunctions.describe_execution(executionArn=execution["executionArn"])
    assert (described["status"], json.loads(described["output"])) == (
        "SUCCEEDED",
        {"order": "o-17", "total": 1125, "shipped": "from this machine"},
    )
    history = stepfunctions.get_execution_history(executionArn=execution["executionArn"])["events"]
    priced = [
        json.loads(event["lambdaFunctionSucceededEventDetails"]["output"])
        for event in history
        if event["type"] == "LambdaFunctionSucceeded"
    ][0]
    # The Price task ran on its Runtime's Python with tinyprice from the project's .venv.
    assert (priced["python"], Path(priced["tinyprice"]).is_relative_to(app / ".venv")) == ("3.13", True)
    assert len(attach.wait_for("invocation_finished", where=of("PriceFunction"))) == 1
    assert len(attach.wait_for("invocation_finished", where=of("FulfilFunction"))) == 1

    # A task that raises here fails the execution with the local error, as a raise in Lambda would.
    failing = stepfunctions.start_execution(
        stateMachineArn=outputs["StateMachineArn"], input='{"order": "o-18"}'
    )
    assert local_cloud.stepfunctions.wait_for_execution(failing["executionArn"])
    described = stepfunctions.describe_execution(executionArn=failing["executionArn"])
    assert (described["status"], described.get("error")) == ("FAILED", "KeyError")

    # The queue's event source mapping delivers a batch to the same function, its output shown here.
    order_line = json.dumps({"order": "o-19", "lines": [{"sku": "tea", "quantity": 1, "unit_cents": 350}]})
    local_cloud.client("sqs").send_message(QueueUrl=outputs["OrdersQueueUrl"], MessageBody=order_line)
    printed = attach.wait_for("output", where=lambda event: event["line"].startswith("priced "))
    assert [(event["logicalId"], event["line"]) for event in printed] == [
        ("PriceFunction", "priced o-19: 350 EUR")
    ]

    assert attach.stop(signal.SIGINT) == 0
    assert {name: function_state(local_cloud, name) for name in before} == before
