"""Fixtures of the fault tests: one helper stack and one deployed faults app for the whole directory.

The helper stack uses a short DisconnectGraceSeconds so that restores after a lost client are quick to
observe; attach runs as a real subprocess (AttachProcess and the attach_environment/start_attach
fixtures come from tests/attach) and every invocation is a boto3 ``lambda.invoke``.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plldb.bootstrap.deploy import setup
from plldb.bootstrap.helper_stack import HelperStack, load_helper_stack
from plldb.local.instrument import restore_stack
from plldb.localcloud.sam_deploy import deploy
from tests.attach.test_attach_e2e import attach_environment, start_attach  # noqa: F401  (fixtures)
from tests.faults.faults_support import GRACE_SECONDS, FaultsApp

FAULTS_APP = Path(__file__).resolve().parent / "faults_app"


@pytest.fixture(scope="session")
def faults_helper(local_cloud: Any) -> HelperStack:
    """A helper stack of the fault tests' own, so its parameters never disturb other tests."""
    session = local_cloud.session()
    name = f"plldb-faults-{uuid.uuid4().hex[:6]}"
    setup(session, name, parameters={"DisconnectGraceSeconds": str(GRACE_SECONDS)}, poll_seconds=0.2)
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
    """The faults app; whatever a failing test left instrumented is restored before the next test."""
    yield faults_app
    stack_id = local_cloud.client("cloudformation").describe_stacks(StackName=faults_app.stack_name)[
        "Stacks"
    ][0]["StackId"]
    restore_stack(local_cloud.session(), faults_helper, stack_id, report=lambda _message: None)
