"""Fixtures of the attack tests: a helper stack of their own, the hello-sam example deployed per test, a
victim who debugs it with the real `plldb attach`, and an attacker: another IAM user of the account with
an access key of their own (so the helper stack records a different owner)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plldb.bootstrap.deploy import setup
from plldb.bootstrap.helper_stack import HelperStack, load_helper_stack
from plldb.local.instrument import restore_stack
from tests.attach.test_attach_e2e import (  # noqa: F401  (fixtures)
    DeployedExample,
    attach_environment,
    deploy_example,
    start_attach,
)
from tests.cloud_state import stack_id_of
from tests.security.raw_client import Attacker, developer


@pytest.fixture(scope="module")
def helper(local_cloud: Any) -> HelperStack:
    """The account's helper stack; its sweep runs only when a test fires it."""
    session = local_cloud.session()
    name = f"plldb-sec-{uuid.uuid4().hex[:6]}"
    setup(session, name, parameters={"SweepSchedule": "rate(1 day)"}, poll_seconds=0.2)
    return load_helper_stack(session, name)


@pytest.fixture
def example(local_cloud: Any, helper: HelperStack, tmp_path: Path) -> Iterator[DeployedExample]:
    """The victim's stack (examples/hello-sam, a copy of its own); restored afterwards whatever happened."""
    deployed = deploy_example(local_cloud, tmp_path / "hello-sam")
    yield deployed
    restore_stack(
        local_cloud.session(), helper, stack_id_of(local_cloud, deployed.stack_name), report=lambda _m: None
    )


@pytest.fixture
def attacker(local_cloud: Any, attach_environment: dict[str, str]) -> Attacker:  # noqa: F811
    session, arn = developer(local_cloud, f"mallory-{uuid.uuid4().hex[:6]}")
    credentials = session.get_credentials()
    assert credentials is not None
    environment = {
        **attach_environment,
        "AWS_ACCESS_KEY_ID": credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
    }
    return Attacker(session, arn, environment)
