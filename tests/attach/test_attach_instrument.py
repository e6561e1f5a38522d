"""The developer's plldb instrumenting and restoring a stack's functions (plldb/local/instrument.py), against
a moto server: real Lambda and IAM calls over HTTP, with the developer's (test) credentials.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from attach_support import ACCOUNT_ID, REGION, MotoServer
from botocore.config import Config

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack
from plldb.instrumentation.functions import Clients, FunctionRef
from plldb.local.instrument import StackInstrumentation, developer_clients, restore_stack
from plldb.local.session import Opened, SessionObserver

SESSION_ID = "0f3b7a1e-1111-4222-8333-444455556666"
FIELDS = ("Environment", "Layers", "Timeout", "Handler", "Runtime", "Role")


def code_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


@dataclass
class Account:
    """The helper stack's pieces and the debugged functions, created in moto for one test."""

    session: boto3.Session
    helper: HelperStack
    role_name: str
    role_arn: str
    suffix: str

    @property
    def lambda_client(self) -> Any:
        return self.session.client("lambda")

    @property
    def iam(self) -> Any:
        return self.session.client("iam")

    def function(self, name: str, **options: Any) -> FunctionRef:
        physical = f"{name}-{self.suffix}"
        arguments: dict[str, Any] = {
            "FunctionName": physical,
            "Runtime": "python3.12",
            "Role": self.role_arn,
            "Handler": "app.handler",
            "Code": {"ZipFile": code_zip()},
            "Timeout": 7,
        }
        arguments.update(options)
        self.lambda_client.create_function(**arguments)
        return FunctionRef(physical, f"Api/{name}")

    def configuration(self, function: FunctionRef, qualifier: str | None = None) -> dict[str, Any]:
        arguments = {"FunctionName": function.name, **({"Qualifier": qualifier} if qualifier else {})}
        config = self.lambda_client.get_function_configuration(**arguments)
        return {name: config.get(name) for name in FIELDS}

    def role_tags(self) -> dict[str, str]:
        return {tag["Key"]: tag["Value"] for tag in self.iam.list_role_tags(RoleName=self.role_name)["Tags"]}

    def role_policies(self) -> list[str]:
        attached = self.iam.list_attached_role_policies(RoleName=self.role_name)["AttachedPolicies"]
        return [policy["PolicyArn"] for policy in attached]

    def instrumentation(
        self, functions: list[FunctionRef], observer: SessionObserver
    ) -> StackInstrumentation:
        return StackInstrumentation(
            clients=developer_clients(self.session, self.helper),
            helper=self.helper,
            functions=functions,
            observer=observer,
            fallback=protocol.FALLBACK_ERROR,
            timeout=900,
        )


@pytest.fixture
def account(moto_env: MotoServer) -> Iterator[Account]:
    session = boto3.Session(region_name=REGION)  # the developer's: AWS_ENDPOINT_URL points at moto
    suffix = uuid.uuid4().hex[:8]
    iam, lam = session.client("iam"), session.client("lambda")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = iam.create_role(RoleName=f"hello-role-{suffix}", AssumeRolePolicyDocument=json.dumps(trust))[
        "Role"
    ]
    statement = {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}
    policy = iam.create_policy(
        PolicyName=f"InstrumentedFunctionPolicy-{suffix}",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
    )["Policy"]
    layer = lam.publish_layer_version(
        LayerName=f"plldb-debugger-{suffix}",
        Content={"ZipFile": code_zip()},
        CompatibleRuntimes=["python3.12"],
    )
    helper = HelperStack(
        stack_name="plldb",
        stack_id=f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/plldb/{uuid.uuid4()}",
        region=REGION,
        status="CREATE_COMPLETE",
        websocket_url=f"wss://abc123.execute-api.{REGION}.amazonaws.com/plldb",
        connect_route_arn=f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:abc123/plldb/$connect",
        layer_version_arn=layer["LayerVersionArn"],
        dispatcher_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:plldb-dispatcher",
        invocations_table_name="PLLDBInvocations",
        payload_bucket_name="plldb-payloads",
        instrumented_function_policy_arn=policy["Arn"],
        manager_function_name="plldb-manager",
        template_version="2.1",
    )
    yield Account(session, helper, role["RoleName"], role["Arn"], suffix)


class Progress(SessionObserver):
    """The progress events, in the order the observer received them (from the instrumentation's threads)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def on_progress(self, message: Any) -> None:
        with self.lock:
            self.events.append(dict(message))

    def on_instrumented(self, message: Any) -> None:
        with self.lock:
            self.events.append(dict(message))

    def on_warning(self, text: str) -> None:
        with self.lock:
            self.events.append({"warning": text})


OPENED = Opened(SESSION_ID, f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/hello/1", "hello", "dev")


def instrumented_variables(account: Account, original: dict[str, str], timeout: int = 7) -> dict[str, str]:
    return {
        **original,
        "AWS_LAMBDA_EXEC_WRAPPER": protocol.LAYER_WRAPPER_PATH,
        "DEBUGGER_SESSION_ID": SESSION_ID,
        "PLLDB_DISPATCHER_FUNCTION": account.helper.dispatcher_function_arn,
        "PLLDB_INVOCATIONS_TABLE": "PLLDBInvocations",
        "PLLDB_PAYLOAD_BUCKET": "plldb-payloads",
        "PLLDB_FALLBACK": "error",
        "PLLDB_ORIGINAL_TIMEOUT": str(timeout),
    }


def test_instrument_reports_progress_in_order_and_restore_puts_every_function_back_exactly(
    account: Account,
) -> None:
    with_env = account.function("WithEnv", Environment={"Variables": {"TABLE": "orders", "MODE": "debug"}})
    bare = account.function("Bare")
    wrapped = account.function(
        "Wrapped", Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/opt/own/wrapper"}}, Timeout=30
    )
    node = account.function("Node", Runtime="nodejs20.x", Handler="index.handler")
    missing = FunctionRef(f"Missing-{account.suffix}", "Api/Missing")
    functions = [with_env, bare, wrapped, node, missing]
    before = {f.name: account.configuration(f) for f in functions if f is not missing}
    progress = Progress()
    instrumentation = account.instrumentation(functions, progress)

    instrumentation.instrument(OPENED)

    first, *per_function, done = progress.events
    assert first == {
        "phase": "instrument",
        "status": "started",
        "message": "Instrumenting 5 functions of stack hello",
        "total": 5,
    }
    assert sorted((e["logicalId"], e["status"], e["message"]) for e in per_function) == [
        ("Api/Bare", "ok", "instrumented (timeout 900 s)"),
        ("Api/Missing", "failed", "function not found"),
        ("Api/Node", "skipped", "runtime nodejs20.x is not Python"),
        ("Api/WithEnv", "ok", "instrumented (timeout 900 s)"),
        ("Api/Wrapped", "ok", "instrumented (timeout 900 s)"),
    ]
    assert {e["phase"] for e in per_function} == {"instrument"}
    assert done == {
        "phase": "instrument",
        "status": "done",
        "message": "3 instrumented, 1 skipped, 1 failed",
        "functions": [
            {"functionName": f.name, "logicalId": f.path, "status": status, "message": message}
            for f, status, message in [
                (bare, "ok", "instrumented (timeout 900 s)"),
                (missing, "failed", "function not found"),
                (node, "skipped", "runtime nodejs20.x is not Python"),
                (with_env, "ok", "instrumented (timeout 900 s)"),
                (wrapped, "ok", "instrumented (timeout 900 s)"),
            ]
        ],
    }
    layer = [{"Arn": account.helper.layer_version_arn, "CodeSize": len(code_zip())}]
    assert account.configuration(with_env)["Environment"] == {
        "Variables": instrumented_variables(account, {"TABLE": "orders", "MODE": "debug"})
    }
    assert (account.configuration(with_env)["Layers"], account.configuration(with_env)["Timeout"]) == (
        layer,
        900,
    )
    assert account.configuration(bare)["Environment"] == {
        "Variables": {**instrumented_variables(account, {}), "PLLDB_ORIGINAL_ENVIRONMENT": "absent"}
    }
    assert account.configuration(wrapped)["Environment"] == {
        "Variables": {
            **instrumented_variables(account, {}, timeout=30),
            "PLLDB_ORIGINAL_EXEC_WRAPPER": "/opt/own/wrapper",
        }
    }
    assert account.configuration(node) == before[node.name]
    assert account.role_tags() == {
        protocol.role_tag_key(REGION, f.name): SESSION_ID for f in (with_env, bare, wrapped)
    }
    assert account.role_policies() == [account.helper.instrumented_function_policy_arn]
    # The local run may take the function's own variables, as read with the developer's credentials.
    assert instrumentation.variable_names(with_env.name) == frozenset({"TABLE", "MODE"})
    assert instrumentation.variable_names(bare.name) == frozenset()
    assert instrumentation.variable_names(node.name) == frozenset()

    progress.events.clear()
    assert instrumentation.restore() == []
    first, *per_function, done = progress.events
    assert first == {"phase": "restore", "status": "started", "message": "Restoring 3 functions"}
    assert sorted((e["logicalId"], e["status"], e["message"]) for e in per_function) == [
        ("Api/Bare", "ok", "restored"),
        ("Api/WithEnv", "ok", "restored"),
        ("Api/Wrapped", "ok", "restored"),
    ]
    assert done == {
        "phase": "restore",
        "status": "done",
        "message": "3 restored, 0 failed",
        "functions": [
            {"functionName": f.name, "logicalId": f.path, "status": "ok", "message": "restored"}
            for f in (bare, with_env, wrapped)
        ],
    }
    assert {f.name: account.configuration(f) for f in functions if f is not missing} == before
    assert account.role_tags() == {}
    assert account.role_policies() == []


def test_a_stop_requested_midway_leaves_the_functions_not_yet_started_untouched(account: Account) -> None:
    functions = [account.function(f"Fn{index:02d}") for index in range(20)]
    before = {f.name: account.configuration(f) for f in functions}

    class StopAtFirst(Progress):
        def on_progress(self, message: Any) -> None:
            super().on_progress(message)
            if message["status"] != "started":
                instrumentation.stop.set()  # Ctrl-C while the first function is reported

    progress = StopAtFirst()
    instrumentation = account.instrumentation(functions, progress)
    instrumentation.instrument(OPENED)

    reported = {e["function"] for e in progress.events if e["status"] == "ok"}
    untouched = {f.name for f in functions} - reported
    # 16 functions are handled at a time: whichever started after the stop was not touched at all.
    assert len(untouched) >= len(functions) - 16
    assert [e["functionName"] for e in progress.events[-1]["functions"]] == sorted(
        reported, key=lambda name: f"Api/{name.split('-')[0]}"
    )
    for function in functions:
        if function.name in untouched:
            assert account.configuration(function) == before[function.name]
        else:
            assert account.configuration(function) != before[function.name]
    assert set(account.role_tags()) == {protocol.role_tag_key(REGION, name) for name in reported}

    assert instrumentation.restore() == []
    assert {f.name: account.configuration(f) for f in functions} == before
    assert account.role_tags() == {}


def test_restore_returns_the_functions_it_could_not_put_back_and_restores_the_others(
    account: Account,
) -> None:
    lam = account.lambda_client
    own_layer = lam.publish_layer_version(LayerName=f"own-{account.suffix}", Content={"ZipFile": code_zip()})
    layered = account.function("Layered", Layers=[own_layer["LayerVersionArn"]])
    plain = account.function("Plain")
    before = account.configuration(plain)
    progress = Progress()
    instrumentation = account.instrumentation([layered, plain], progress)
    instrumentation.instrument(OPENED)
    # Someone deletes the function's own layer version meanwhile: Lambda refuses to configure it again.
    lam.delete_layer_version(LayerName=f"own-{account.suffix}", VersionNumber=own_layer["Version"])
    progress.events.clear()

    failures = instrumentation.restore()

    reason = (
        f"InvalidParameterValueException: Layer version {own_layer['LayerVersionArn']} does not exist; one of "
        "the function's own layer versions was deleted since it was deployed, so Lambda refuses to update it: "
        "redeploy the function (that removes plldb's instrumentation too)"
    )
    assert failures == [f"Api/Layered: {reason}"]
    assert sorted((e["logicalId"], e["status"], e["message"]) for e in progress.events[1:-1]) == [
        ("Api/Layered", "failed", reason),
        ("Api/Plain", "ok", "restored"),
    ]
    assert progress.events[-1]["message"] == "1 restored, 1 failed"
    assert account.configuration(plain) == before
    # Its role keeps the function's tag (and so the policy) until a restore succeeds.
    assert set(account.role_tags()) == {protocol.role_tag_key(REGION, layered.name)}
    assert account.role_policies() == [account.helper.instrumented_function_policy_arn]


def unreachable_clients(account: Account) -> Clients:
    """Clients of a machine whose network went away: every call fails to connect (no retries)."""
    session = boto3.Session(region_name=REGION)
    config = Config(retries={"max_attempts": 1}, connect_timeout=5)
    return Clients(
        lambda_client=session.client("lambda", endpoint_url="http://127.0.0.1:9", config=config),
        iam=session.client("iam", endpoint_url="http://127.0.0.1:9", config=config),
        region=REGION,
        layer_version_arn=account.helper.layer_version_arn,
        policy_arn=account.helper.instrumented_function_policy_arn,
    )


UNREACHABLE = (
    'Could not connect to the endpoint URL: "http://127.0.0.1:9/2015-03-31/functions/{}/configuration"'
)


def test_a_network_failure_while_restoring_is_each_functions_failure_never_an_exception(
    account: Account,
) -> None:
    first, second = account.function("First"), account.function("Second")
    instrumentation = account.instrumentation([first, second], Progress())
    instrumentation.instrument(OPENED)
    instrumentation.clients = unreachable_clients(account)  # the network goes away before the restore

    failures = instrumentation.restore()

    assert failures == [
        f"Api/First: {UNREACHABLE.format(first.name)}",
        f"Api/Second: {UNREACHABLE.format(second.name)}",
    ]


def test_a_network_failure_while_instrumenting_is_the_functions_failure_never_an_exception(
    account: Account,
) -> None:
    function = account.function("Lonely")
    before = account.configuration(function)
    progress = Progress()
    instrumentation = account.instrumentation([function], progress)
    instrumentation.clients = unreachable_clients(account)

    instrumentation.instrument(OPENED)

    text = UNREACHABLE.format(function.name)  # nothing was changed, so there is nothing to put back
    listing = 'Could not connect to the endpoint URL: "http://127.0.0.1:9/2015-03-31/event-source-mappings"'
    assert [(e.get("status"), e.get("message") or e.get("warning")) for e in progress.events] == [
        (
            None,
            f"Could not list the event source mappings ({listing}); plldb cannot say which queues and "
            "streams a breakpoint holds up.",
        ),
        ("started", "Instrumenting 1 function of stack hello"),
        ("failed", text),
        ("done", "0 instrumented, 0 skipped, 1 failed"),
    ]
    assert instrumentation.instrumented == []
    assert account.configuration(function) == before


def test_restore_stack_removes_every_sessions_traces_from_the_stacks_functions(account: Account) -> None:
    """`plldb detach` and --take-over: whichever session instrumented them, the stack's functions come back."""
    cloudformation = account.session.client("cloudformation")
    code = "def handler(event, context):\n    return event\n"
    template = {
        "Resources": {
            name: {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Runtime": "python3.12",
                    "Handler": "index.handler",
                    "Role": account.role_arn,
                    "Code": {"ZipFile": code},
                    "Timeout": 9,
                    **({"Environment": {"Variables": {"TABLE": "orders"}}} if name == "Hello" else {}),
                },
            }
            for name in ("Hello", "World")
        }
    }
    stack_id = cloudformation.create_stack(
        StackName=f"hello-{account.suffix}", TemplateBody=json.dumps(template)
    )["StackId"]
    resources = cloudformation.describe_stack_resources(StackName=stack_id)["StackResources"]
    refs = {
        r["LogicalResourceId"]: FunctionRef(r["PhysicalResourceId"], r["LogicalResourceId"])
        for r in resources
    }
    before = {name: account.configuration(ref) for name, ref in refs.items()}
    # Two sessions left their instrumentation: a dead one on Hello, the current holder's on World.
    for name, session_id in (("Hello", "11111111-1111-4111-8111-111111111111"), ("World", SESSION_ID)):
        instrumentation = account.instrumentation([refs[name]], Progress())
        instrumentation.instrument(Opened(session_id, stack_id, "hello", "dev"))
    assert account.configuration(refs["Hello"]) != before["Hello"]
    reported: list[dict[str, Any]] = []

    results = restore_stack(account.session, account.helper, stack_id, reported.append)

    assert [(r.function.path, r.status, r.message) for r in results] == [
        ("Hello", "ok", "restored"),
        ("World", "ok", "restored"),
    ]
    assert sorted((e["logicalId"], e["status"]) for e in reported) == [("Hello", "ok"), ("World", "ok")]
    assert {name: account.configuration(ref) for name, ref in refs.items()} == before
    assert account.role_tags() == {}
    assert account.role_policies() == []
