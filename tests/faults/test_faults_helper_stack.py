"""The helper stack changing under an active session, and bad input at the command line.

`plldb bootstrap setup` run again with a changed parameter must not break the session; `bootstrap
destroy` must refuse while a developer is attached and, forced, restore before deleting. Every
mistake on the command line is one line with its fix, exit code 1, and changes nothing.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from plldb import protocol
from plldb.bootstrap.deploy import asset_bucket_name, destroy, setup
from plldb.bootstrap.helper_stack import HelperStack, describe_helper_stack, load_helper_stack
from tests.attach.test_attach_e2e import AttachProcess, invoke
from tests.cloud_state import helper_tables, live_sessions
from tests.faults.faults_support import (
    FAULTS_PARAMETERS,
    FaultsApp,
    fully_restored,
    owner_of,
    run_plldb,
    session_items,
    snapshot,
    utc_text,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a liveness guard, never a bound


@pytest.fixture
def own_helper(local_cloud: Any) -> Iterator[HelperStack]:
    """A helper stack for one test that changes or deletes it; removed afterwards if the test did not."""
    session = local_cloud.session()
    name = f"plldb-own-{uuid.uuid4().hex[:6]}"
    setup(session, name, parameters=FAULTS_PARAMETERS, poll_seconds=0.2)
    yield load_helper_stack(session, name)
    if describe_helper_stack(session, name) is not None:
        destroy(session, name, force=True, poll_seconds=0.2)


def attach_modes(
    start_attach: Callable[..., AttachProcess], helper: HelperStack, app: FaultsApp
) -> AttachProcess:
    attach = start_attach(
        app.directory,
        "--stack-name",
        app.stack_name,
        "--helper-stack",
        helper.stack_name,
        "-f",
        "FaultsModes",
    )
    assert attach.wait_for("ready")[0]["functions"] == [app.name("FaultsModes")]
    return attach


def parameters(local_cloud: Any, stack_name: str) -> dict[str, str]:
    stack = describe_helper_stack(local_cloud.session(), stack_name) or {}
    return {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}


def test_setup_with_a_changed_parameter_while_attached_keeps_the_session_working(
    local_cloud: Any,
    own_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
    attach_environment: dict[str, str],
    tmp_path: Path,
) -> None:
    app = restored_app
    before = snapshot(local_cloud, app)
    attach = attach_modes(start_attach, own_helper, app)
    assert invoke(local_cloud, app.name("FaultsModes"), {"n": 1})[1]["echo"] == {"n": 1}

    # The command line deploys the default DisconnectGraceSeconds and SweepSchedule: changed parameters.
    result = run_plldb(
        attach_environment, tmp_path, "bootstrap", "setup", "--helper-stack", own_helper.stack_name
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == f"Helper stack {own_helper.stack_name} in us-east-1 updated."
    assert {key: parameters(local_cloud, own_helper.stack_name)[key] for key in FAULTS_PARAMETERS} == {
        "DisconnectGraceSeconds": "10",
        "SweepSchedule": "rate(1 minute)",
    }
    assert load_helper_stack(local_cloud.session(), own_helper.stack_name) == HelperStack(
        **{**own_helper.__dict__, "status": "UPDATE_COMPLETE"}
    )

    error, answer = invoke(local_cloud, app.name("FaultsModes"), {"n": 2})
    assert (error, answer["echo"]) == (None, {"n": 2})
    assert len(attach.wait_for("invocation_delivered", count=2)) == 2
    assert attach.stop(signal.SIGINT) == 0
    assert fully_restored(local_cloud, own_helper, app, before)


def test_destroy_refuses_while_attached_and_force_restores_first_then_deletes(
    local_cloud: Any,
    own_helper: HelperStack,
    restored_app: FaultsApp,
    start_attach: Callable[..., AttachProcess],
    attach_environment: dict[str, str],
    tmp_path: Path,
) -> None:
    app = restored_app
    before = snapshot(local_cloud, app)
    attach = attach_modes(start_attach, own_helper, app)
    during = snapshot(local_cloud, app)
    stack_before = describe_helper_stack(local_cloud.session(), own_helper.stack_name)
    tables_before = helper_tables(local_cloud, own_helper)
    (session,) = live_sessions(local_cloud, own_helper, app.stack_name)
    # An event too large for a message is in the payload bucket: destroy must empty it.
    payloads = local_cloud.client("s3")
    payloads.put_object(Bucket=own_helper.payload_bucket_name, Key="events/someone/0", Body=b"{}")

    refused = run_plldb(
        attach_environment, tmp_path, "bootstrap", "destroy", "--helper-stack", own_helper.stack_name
    )
    assert (refused.returncode, refused.stderr.splitlines()[-1:], refused.stdout) == (
        1,
        [
            f"Error: 1 plldb session(s) are active: stack {app.stack_name} by {owner_of(local_cloud)} "
            f"since {utc_text(session[protocol.A_CREATED_AT])}. Detach them first, or pass --force to "
            "restore their functions and end them."
        ],
        "",
    )
    assert describe_helper_stack(local_cloud.session(), own_helper.stack_name) == stack_before
    assert helper_tables(local_cloud, own_helper) == tables_before
    assert snapshot(local_cloud, app) == during
    assert attach.process.poll() is None

    forced = run_plldb(
        attach_environment,
        tmp_path,
        "bootstrap",
        "destroy",
        "--helper-stack",
        own_helper.stack_name,
        "--force",
    )
    assert forced.returncode == 0, forced.stderr
    lines = forced.stdout.splitlines()
    bucket = asset_bucket_name("123456789012", "us-east-1")
    assert lines[0] == f"Deleted the helper stack {own_helper.stack_name}."
    assert lines[1].startswith(f"Kept the asset bucket {bucket} (used by ")  # the other tests' helper stacks
    # Every function of the attached stack went through the restore (four were never instrumented).
    assert lines[2:] == ["Restored 5 function(s) first."]
    # The developer is told who ended the session, and their attach ends.
    assert attach.process.wait(60) == 1
    assert attach.named("error")[-1]["message"] == (
        f"The session was ended elsewhere: stack {app.stack_name} was restored and released by {owner_of(local_cloud)}"
    )
    assert describe_helper_stack(local_cloud.session(), own_helper.stack_name) is None
    assert snapshot(local_cloud, app) == before
    buckets = [b["Name"] for b in payloads.list_buckets()["Buckets"]]
    assert own_helper.payload_bucket_name not in buckets
    error, answer = invoke(local_cloud, app.name("FaultsModes"), {"n": 3})
    assert (error, answer["echo"]) == (None, {"n": 3})  # the deployed code, in the cloud


BROKEN_TEMPLATES = {
    "broken.yaml": "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties: [\n",
    "broken.json": '{"Resources": {"Fn": }}',
    "no-resources.yaml": 'AWSTemplateFormatVersion: "2010-09-09"\n',
    "bad-globals.yaml": "Globals: [1]\nResources:\n  Fn:\n    Type: AWS::Serverless::Function\n",
}
NAME_FIX = "Use letters, digits and hyphens, starting with a letter, at most 128 characters."
TEMPLATE_FIX = "Correct the template and run the command again."


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["attach", "--stack-name", "bad_name!"],
            f"'bad_name!' is not a valid CloudFormation stack name. {NAME_FIX}",
        ),
        (
            ["detach", "--stack-name", "9lives"],
            f"'9lives' is not a valid CloudFormation stack name. {NAME_FIX}",
        ),
        (
            ["bootstrap", "setup", "--helper-stack", "a" * 129],
            f"{'a' * 129!r} is not a valid CloudFormation stack name. {NAME_FIX}",
        ),
        (
            ["bootstrap", "destroy", "--helper-stack", "with space"],
            f"'with space' is not a valid CloudFormation stack name. {NAME_FIX}",
        ),
        (
            ["attach", "--helper-stack", "{helper}", "--stack-name", "{app}", "--template", "broken.yaml"],
            f"{{dir}}/broken.yaml, line 5: invalid YAML: expected the node content, but found '<stream end>'. {TEMPLATE_FIX}",
        ),
        (
            ["attach", "--helper-stack", "{helper}", "--stack-name", "{app}", "--template", "broken.json"],
            f"{{dir}}/broken.json, line 1: invalid JSON: Expecting value (column 22). {TEMPLATE_FIX}",
        ),
        (
            [
                "attach",
                "--helper-stack",
                "{helper}",
                "--stack-name",
                "{app}",
                "--template",
                "no-resources.yaml",
            ],
            "{dir}/no-resources.yaml has no Resources section. Point --template at your SAM template.",
        ),
        (
            [
                "attach",
                "--helper-stack",
                "{helper}",
                "--stack-name",
                "{app}",
                "--template",
                "bad-globals.yaml",
            ],
            f"{{dir}}/bad-globals.yaml: 'Globals' section is invalid. It must be a non-empty dictionary. {TEMPLATE_FIX}",
        ),
    ],
)
def test_bad_command_line_input_is_one_line_with_the_fix_and_changes_nothing(
    local_cloud: Any,
    faults_helper: HelperStack,
    faults_app: FaultsApp,
    attach_environment: dict[str, str],
    tmp_path: Path,
    arguments: list[str],
    expected: str,
) -> None:
    for name, text in BROKEN_TEMPLATES.items():
        (tmp_path / name).write_text(text)
    before = everything_plldb_may_change(local_cloud, faults_helper, faults_app)
    arguments = [a.format(helper=faults_helper.stack_name, app=faults_app.stack_name) for a in arguments]

    result = run_plldb(attach_environment, tmp_path, *arguments)

    expected = expected.format(dir=tmp_path)
    assert (result.returncode, result.stderr.splitlines(), result.stdout) == (1, [f"Error: {expected}"], "")
    assert everything_plldb_may_change(local_cloud, faults_helper, faults_app) == before


def everything_plldb_may_change(local_cloud: Any, helper: HelperStack, app: FaultsApp) -> dict[str, Any]:
    """The stacks, the helper stack's session items and the debugged functions' configurations."""
    cloudformation = local_cloud.client("cloudformation")
    stacks = sorted(
        (stack["StackName"], stack["StackStatus"], str(stack.get("LastUpdatedTime")))
        for page in cloudformation.get_paginator("describe_stacks").paginate()
        for stack in page["Stacks"]
    )
    return {
        "stacks": stacks,
        "sessions": session_items(local_cloud, helper, app.stack_name),
        "functions": snapshot(local_cloud, app),
    }
