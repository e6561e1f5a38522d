"""Fixtures for the instrumentation tests: a moto server, an application, and the developer's clients.

plldb instruments and restores functions with the developer's own credentials. The local cloud enforces
no IAM, so every call the developer's clients make in these tests is checked against
docs/developer-policy.json (filled in for this helper stack) with tests/security_iam.py: a change of the
instrumentation that needs a permission the documented policy lacks fails the test that made it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto_app import ACCOUNT_ID, REGION, App, code_zip, moto_server
from security_iam import CallRecorder, Names, Principal, denied_calls

from plldb.instrumentation import functions
from plldb.instrumentation.decisions import Target

DEVELOPER_POLICY = Path(__file__).resolve().parents[2] / "docs" / "developer-policy.json"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@dataclass
class Plldb:
    """What the developer's plldb knows of its helper stack, and the developer's own clients."""

    stack_name: str
    layer_version_arn: str
    policy_arn: str
    dispatcher_arn: str
    invocations_table: str
    payload_bucket: str
    recorder: CallRecorder
    clients: functions.Clients
    cloudformation: Any

    def target(self, session_id: str | None = None, **changes: Any) -> Target:
        values: dict[str, Any] = {
            "session_id": session_id or str(uuid.uuid4()),
            "dispatcher_arn": self.dispatcher_arn,
            "invocations_table": self.invocations_table,
            "payload_bucket": self.payload_bucket,
            "layer_version_arn": self.layer_version_arn,
            "timeout": 60,
        }
        values.update(changes)
        return Target(**values)

    def developer(self, app_layers: list[str]) -> Principal:
        """The developer: docs/developer-policy.json, plus the use of their functions' own layers, which
        they deploy (Lambda wants GetLayerVersion on every layer a configuration update names)."""
        text = DEVELOPER_POLICY.read_text(encoding="utf-8")
        for placeholder, value in (
            ("ConnectRouteArn", f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:api0000001/plldb/$connect"),
            ("InstrumentedFunctionPolicyArn", self.policy_arn),
            ("ManagerFunctionName", f"{self.stack_name}-ManagerFunction"),
            ("HELPER_STACK", self.stack_name),
            ("ACCOUNT", ACCOUNT_ID),
            ("REGION", REGION),
        ):
            text = text.replace(placeholder, value)
        own_layers = {
            "Statement": [{"Effect": "Allow", "Action": "lambda:GetLayerVersion", "Resource": app_layers}]
        }
        return Principal("developer", [json.loads(text), own_layers])


@pytest.fixture(scope="module")
def plldb(moto_endpoint: str) -> Plldb:
    session = boto3.Session(region_name=REGION)
    stack_name = f"plldb-{uuid.uuid4().hex[:8]}"
    layer = session.client("lambda").publish_layer_version(
        LayerName=f"{stack_name}-debugger", Content={"ZipFile": code_zip()}
    )["LayerVersionArn"]
    policy = session.client("iam").create_policy(
        PolicyName=f"{stack_name}-instrumented-function",
        Path="/plldb/",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}],
            }
        ),
    )["Policy"]["Arn"]
    recorder = CallRecorder()
    clients = functions.Clients(
        lambda_client=recorder.attach(session.client("lambda")),
        iam=recorder.attach(session.client("iam")),
        region=REGION,
        layer_version_arn=layer,
        policy_arn=policy,
    )
    return Plldb(
        stack_name=stack_name,
        layer_version_arn=layer,
        policy_arn=policy,
        dispatcher_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{stack_name}-DispatcherFunction",
        invocations_table=f"{stack_name}-PLLDBInvocations",
        payload_bucket=f"{stack_name}-payloadbucket",
        recorder=recorder,
        clients=clients,
        cloudformation=recorder.attach(session.client("cloudformation")),
    )


@pytest.fixture(scope="module")
def app(plldb: Plldb) -> App:
    return App()


@pytest.fixture(autouse=True)
def every_call_of_the_developer_is_allowed_by_the_developer_policy(
    request: pytest.FixtureRequest,
) -> Iterator[None]:
    if "plldb" not in request.fixturenames:
        yield
        return
    plldb: Plldb = request.getfixturevalue("plldb")
    app: App = request.getfixturevalue("app")
    plldb.recorder.take()
    yield
    names = Names(REGION, ACCOUNT_ID, {})
    assert denied_calls(plldb.recorder.take(), plldb.developer(app.layers), names) == []
