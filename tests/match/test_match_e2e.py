"""`plldb attach --match` end to end on the local cloud: two developers (two IAM users) attached to one
stack with different matches, each receiving only the invocations their expression selects, the rest
running the deployed code; the stack lock shared only between sessions with a match; exact restores."""

from __future__ import annotations

import datetime
import json
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack
from tests.attach.test_attach_e2e import AttachProcess, DeployedExample, invoke
from tests.cloud_state import configuration, function_state, live_sessions, table_items, wait_for

TAKE_OVER_HINT = (
    "Ask them to detach, or run again with --take-over: plldb then restores the stack's functions with "
    "your credentials and ends their session."
)


@pytest.fixture
def bob_environment(local_cloud: Any, attach_environment: dict[str, str]) -> dict[str, str]:
    """A second developer: an IAM user of their own, with their own keys."""
    iam = local_cloud.client("iam")
    name = f"bob-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        **attach_environment,
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


def project_copy(example: DeployedExample, name: str) -> Path:
    """The developer's own checkout of the project, whose hello handler says who ran it."""
    directory = example.directory.parent / name
    shutil.copytree(example.directory, directory)
    source = directory / "hello" / "app.py"
    source.write_text(source.read_text().replace('"function": "hello"', f'"function": "hello from {name}"'))
    return directory


def entries(local_cloud: Any, function: str) -> list[dict[str, Any]]:
    variables = configuration(local_cloud, function)["Environment"]["Variables"]
    assert protocol.ENV_SESSION_ID not in variables
    return list(json.loads(variables[protocol.ENV_SESSIONS]))


def when(epoch: Any) -> str:
    return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def run_attach(environment: dict[str, str], cwd: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plldb", "attach", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_two_developers_with_matches_share_a_stack_and_each_gets_only_their_invocations(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
    attach_environment: dict[str, str],
    bob_environment: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    before = function_state(local_cloud, example.hello)
    deployed_carol = invoke(local_cloud, example.hello, {"name": "carol"})
    deployed_alice = invoke(local_cloud, example.hello, {"name": "alice"})
    alice_project, bob_project = project_copy(example, "alice"), project_copy(example, "bob")
    selected = ("--stack-name", example.stack_name, "-f", "HelloFunction")

    # Both join at once: each read-modify-write of PLLDB_SESSIONS names the RevisionId it read, and the
    # one that finds the function changed reads it again, so neither entry is lost.
    alice = start_attach(alice_project, *selected, "--match", "name == 'alice'")
    bob = AttachProcess(bob_project, bob_environment, *selected, "--match", "name == 'bob'")
    request.addfinalizer(bob.close)
    alice.wait_for("ready")
    bob.wait_for("ready")
    sessions = {s[protocol.A_OWNER]: s for s in live_sessions(local_cloud, helper, example.stack_name)}
    assert len(sessions) == 2
    listed = entries(local_cloud, example.hello)
    assert sorted((e["match"], e["observe"], e["sample"]) for e in listed) == [
        ("name == 'alice'", False, 1.0),
        ("name == 'bob'", False, 1.0),
    ]
    assert {e["id"] for e in listed} == {s[protocol.A_SESSION_ID] for s in sessions.values()}
    assert configuration(local_cloud, example.hello)["Timeout"] == 900

    assert invoke(local_cloud, example.hello, {"name": "alice"})[1]["function"] == "hello from alice"
    assert invoke(local_cloud, example.hello, {"name": "bob"})[1]["function"] == "hello from bob"
    assert invoke(local_cloud, example.hello, {"name": "carol"}) == deployed_carol  # unmatched: the cloud
    assert len(alice.named("invocation_finished")) == 1
    assert len(bob.named("invocation_finished")) == 1

    # A plain attach would take every invocation: refused while they share the stack, in one line.
    refused = run_attach(attach_environment, example.directory, *selected)
    owners = sorted(sessions.values(), key=lambda s: int(s[protocol.A_CREATED_AT]))
    assert refused.returncode == 1
    (line,) = refused.stderr.splitlines()
    assert line == (
        f"Error: Stack {example.stack_name!r} is already being debugged by "
        + " and ".join(f"{s[protocol.A_OWNER]} (since {when(s[protocol.A_CREATED_AT])})" for s in owners)
        + ". They share it with --match: attach with --match or --match-token to join them. "
        + TAKE_OVER_HINT
    )

    # The first to leave takes only its entry away; the other keeps working.
    assert alice.stop(signal.SIGINT) == 0
    (left,) = entries(local_cloud, example.hello)
    assert left["match"] == "name == 'bob'"
    assert invoke(local_cloud, example.hello, {"name": "bob"})[1]["function"] == "hello from bob"
    assert invoke(local_cloud, example.hello, {"name": "alice"}) == deployed_alice
    # The last one restores the function exactly: configuration, aliases, versions, role tags and policies.
    assert bob.stop(signal.SIGINT) == 0
    assert function_state(local_cloud, example.hello) == before


def test_a_match_session_is_refused_while_a_plain_one_holds_the_stack(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
    bob_environment: dict[str, str],
) -> None:
    before = function_state(local_cloud, example.hello)
    selected = ("--stack-name", example.stack_name, "-f", "HelloFunction")
    plain = start_attach(example.directory, *selected)
    plain.wait_for("ready")
    during = function_state(local_cloud, example.hello)
    (holder,) = live_sessions(local_cloud, helper, example.stack_name)

    refused = run_attach(bob_environment, example.directory, *selected, "--match-token")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"Error: Stack {example.stack_name!r} is already being debugged by {holder[protocol.A_OWNER]} "
        f"(since {when(holder[protocol.A_CREATED_AT])}). A session with --match shares a stack only with other "
        f"sessions that have a match. {TAKE_OVER_HINT}"
    ]
    assert function_state(local_cloud, example.hello) == during
    assert plain.stop(signal.SIGINT) == 0
    assert function_state(local_cloud, example.hello) == before


def test_a_killed_match_session_is_removed_by_the_helper_stack_and_the_other_stays(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
    bob_environment: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    before = function_state(local_cloud, example.hello)
    selected = ("--stack-name", example.stack_name, "-f", "HelloFunction")
    alice = start_attach(project_copy(example, "alice"), *selected, "--match", "name == 'alice'")
    alice.wait_for("ready")
    bob = AttachProcess(project_copy(example, "bob"), bob_environment, *selected, "--match-token")
    request.addfinalizer(bob.close)
    header = bob.wait_for("session_options")[0]["header"]
    bob.wait_for("ready")
    (token,) = header.values()
    assert list(header) == ["x-plldb-debug"]

    alice.process.kill()
    alice.process.wait(10)
    wait_for(
        lambda: (
            [e["match"] for e in entries(local_cloud, example.hello)]
            == [f"headers.\"x-plldb-debug\" == '{token}'"]
        ),
        "the helper stack's restore of the killed session",
        timeout=protocol.DISCONNECT_GRACE_SECONDS + 60,
    )
    (survivor,) = live_sessions(local_cloud, helper, example.stack_name)
    assert survivor[protocol.A_OWNER].split("/")[-1].startswith("bob-")
    (lock,) = [
        item
        for item in table_items(local_cloud, helper, "PLLDBStackLocks")
        if item[protocol.A_STACK_ID] == survivor[protocol.A_STACK_ID]
    ]
    assert (lock[protocol.A_SHARED], set(lock[protocol.A_HOLDERS])) == (
        True,
        {survivor[protocol.A_SESSION_ID]},
    )
    # The survivor still receives its requests (an API Gateway proxy event carries the header).
    error, answer = invoke(local_cloud, example.hello, {"name": "bob", "headers": {"x-plldb-debug": token}})
    assert (error, answer["function"]) == (None, "hello from bob")
    error, answer = invoke(local_cloud, example.hello, {"name": "alice", "headers": {}})
    assert (error, answer["function"]) == (None, "hello")
    assert bob.stop(signal.SIGINT) == 0
    assert function_state(local_cloud, example.hello) == before
