"""Fixtures of the fault tests: one helper stack and one deployed faults app for the whole directory.

The helper stack uses a short DisconnectGraceSeconds so that restores after a lost client are quick to
observe, and a sweep schedule that never falls due during a run, so that the only sweeps are those a
test fires through the local cloud's scheduler with an injected time. attach runs as a real
subprocess (AttachProcess and the attach_environment/start_attach fixtures come from tests/attach)
and every invocation is a boto3 ``lambda.invoke``.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plldb import protocol
from plldb.bootstrap.deploy import setup
from plldb.bootstrap.helper_stack import HelperStack, load_helper_stack
from plldb.local.instrument import restore_stack
from plldb.local.session import connect_url, sigv4_signer
from plldb.local.session.release import release_stack
from plldb.localcloud.sam_deploy import deploy
from tests.attach.test_attach_e2e import attach_environment, start_attach  # noqa: F401  (fixtures)
from tests.cloud_state import stack_id_of
from tests.faults.faults_support import FAULTS_PARAMETERS, FaultsApp

FAULTS_APP = Path(__file__).resolve().parent / "faults_app"


@pytest.fixture(scope="session")
def faults_helper(local_cloud: Any) -> HelperStack:
    """A helper stack of the fault tests' own, so its parameters never disturb other tests."""
    session = local_cloud.session()
    name = f"plldb-faults-{uuid.uuid4().hex[:6]}"
    setup(session, name, parameters=FAULTS_PARAMETERS, poll_seconds=0.2)
    return load_helper_stack(session, name)


@pytest.fixture(scope="session")
def faults_app(
    local_cloud: Any, faults_helper: HelperStack, tmp_path_factory: pytest.TempPathFactory
) -> FaultsApp:
    """tests/faults/faults_app copied and deployed once; every test leaves it as deployed."""
    directory = tmp_path_factory.mktemp("faults") / "faults-app"
    shutil.copytree(FAULTS_APP, directory, ignore=shutil.ignore_patterns("__pycache__"))
    stack_name = f"faults-{uuid.uuid4().hex[:8]}"
    outputs = deploy(local_cloud.session(), directory / "template.yaml", stack_name)
    return FaultsApp(
        directory=directory,
        stack_name=stack_name,
        functions={
            logical_id: outputs[f"{logical_id}Name"]
            for logical_id in (
                "FaultsModes",
                "FaultsEcho",
                "FaultsMissingModule",
                "FaultsMissingFunction",
                "FaultsCrowded",
            )
        },
    )


@pytest.fixture
def restored_app(local_cloud: Any, faults_helper: HelperStack, faults_app: FaultsApp) -> Iterator[FaultsApp]:
    """The faults app; whatever a failing test left instrumented or locked is undone before the next test,
    as `plldb detach` would do it."""
    yield faults_app
    session = local_cloud.session()
    stack_id = stack_id_of(local_cloud, faults_app.stack_name)
    restore_stack(session, faults_helper, stack_id, report=lambda _message: None)
    asyncio.run(
        release_stack(
            connect_url(faults_helper.websocket_url), sigv4_signer(session, faults_helper.region), stack_id
        )
    )
    # A role plldb left tagged (a failing test's leftovers) is cleaned as an administrator would, so one
    # test's leak fails that test only.
    iam = local_cloud.client("iam")
    for name in faults_app.names():
        role = role_name(local_cloud, name)
        tags = [t["Key"] for t in iam.list_role_tags(RoleName=role)["Tags"]]
        leaked = [key for key in tags if key.startswith(protocol.ROLE_TAG_PREFIX)]
        if leaked:
            iam.untag_role(RoleName=role, TagKeys=leaked)
        attached = [
            p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        ]
        if faults_helper.instrumented_function_policy_arn in attached:
            iam.detach_role_policy(RoleName=role, PolicyArn=faults_helper.instrumented_function_policy_arn)


def role_name(local_cloud: Any, function_name: str) -> str:
    """The name of a function's execution role."""
    role_arn = local_cloud.client("lambda").get_function_configuration(FunctionName=function_name)["Role"]
    return str(role_arn).rsplit("/", 1)[-1]
