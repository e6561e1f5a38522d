"""Lambda's rules for changing a function: one update at a time, revisions, and updates that fail.

The updates run against moto; the conditions moto never produces (another update in progress, a failed
or slow update) are Lambda's documented answers injected at the client, and time is an injected clock.
Lambda API reference, UpdateFunctionConfiguration: ResourceConflictException (409) while another update
runs, PreconditionFailedException (412) for a RevisionId that is not the latest; Lambda Developer Guide,
"Lambda function states": LastUpdateStatus InProgress, Successful or Failed with LastUpdateStatusReason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from plldb.instrumentation import lambda_updates
from plldb.instrumentation.lambda_updates import ChangedMeanwhile, UpdateFailed, settled, update_until_applied


class Clock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(lambda_updates, "time", clock)
    return clock


@contextlib.contextmanager
def answers(client: Any, operation: str, codes: list[str]) -> Iterator[list[str]]:
    """The next calls of ``operation`` are answered with these Lambda errors, then reach moto again."""
    pending = list(codes)
    statuses = {"ResourceConflictException": 409, "PreconditionFailedException": 412, "ServiceException": 500}

    def answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if not pending:
            return None
        code = pending.pop(0)
        status = statuses[code]
        error = {"Code": code, "Message": f"injected {code}"}
        return AWSResponse("https://lambda.invalid", status, {}, None), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": status},
        }

    client.meta.events.register(f"before-call.lambda.{operation}", answer)
    try:
        yield pending
    finally:
        client.meta.events.unregister(f"before-call.lambda.{operation}", answer)


@contextlib.contextmanager
def reported(client: Any, operation: str, states: list[Mapping[str, Any]]) -> Iterator[None]:
    """The next answers of ``operation`` report these update states (then Lambda's own again)."""
    pending = list(states)

    def report(parsed: dict[str, Any], **_: Any) -> None:
        if pending:
            parsed.update(pending.pop(0))

    client.meta.events.register(f"after-call.lambda.{operation}", report)
    try:
        yield
    finally:
        client.meta.events.unregister(f"after-call.lambda.{operation}", report)


@contextlib.contextmanager
def counted(client: Any) -> Iterator[list[str]]:
    calls: list[str] = []

    def count(model: Any, **_: Any) -> None:
        calls.append(model.name)

    client.meta.events.register("before-call.lambda", count)
    try:
        yield calls
    finally:
        client.meta.events.unregister("before-call.lambda", count)


@pytest.fixture
def function(plldb, app) -> str:
    return app.create_function(role=app.new_role(), variables={"GREETING": "hi"}, timeout=10)


def timeout_of(value: int) -> Any:
    return lambda current: {"Timeout": value}


def test_a_settled_configuration_just_read_costs_one_write_and_no_other_read(plldb, app, function, clock):
    client = plldb.clients.lambda_client
    known = lambda_updates.get_configuration(client, function)
    with counted(client) as calls:
        updated = update_until_applied(client, function, timeout_of(20), known=known, sleep=clock.sleep)

    assert calls == ["UpdateFunctionConfiguration"]
    assert updated["Timeout"] == app.configuration(function)["Timeout"] == 20
    assert clock.sleeps == []


def test_another_update_in_progress_is_waited_for_and_retried(plldb, app, function, clock):
    client = plldb.clients.lambda_client
    with answers(client, "UpdateFunctionConfiguration", ["ResourceConflictException"] * 2) as left:
        update_until_applied(client, function, timeout_of(21), sleep=clock.sleep)

    assert left == []
    assert clock.sleeps == [0.2, 0.4]
    assert app.configuration(function)["Timeout"] == 21


def test_a_function_that_stays_busy_is_reported_after_the_last_retry(plldb, app, function, clock):
    client = plldb.clients.lambda_client
    with answers(client, "UpdateFunctionConfiguration", ["ResourceConflictException"] * 10):
        with pytest.raises(ClientError) as busy:
            update_until_applied(client, function, timeout_of(22), sleep=clock.sleep)

    assert busy.value.response["Error"]["Code"] == "ResourceConflictException"
    assert clock.sleeps == [0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0, 3.0, 3.0]
    assert app.configuration(function)["Timeout"] == 10


def test_other_errors_are_not_retried(plldb, app, function, clock):
    client = plldb.clients.lambda_client
    with answers(client, "UpdateFunctionConfiguration", ["ServiceException"]):
        with pytest.raises(ClientError) as failed:
            update_until_applied(client, function, timeout_of(23), sleep=clock.sleep)
    assert failed.value.response["Error"]["Code"] == "ServiceException"
    assert clock.sleeps == []


def test_an_update_naming_a_stale_revision_is_retried_on_what_changed_and_may_leave_it_alone(
    plldb, app, function, clock
):
    """Lambda refuses an update whose RevisionId is not the function's latest (a deploy landed)."""
    client = plldb.clients.lambda_client
    known = lambda_updates.get_configuration(client, function)
    app.lambda_client.update_function_configuration(FunctionName=function, Description="deployed")
    seen: list[str] = []

    def changes(current: Mapping[str, Any]) -> dict[str, Any]:
        seen.append(str(current.get("Description") or ""))
        if current.get("Description") == "deployed":
            raise ChangedMeanwhile("redeployed")
        return {"Timeout": 24}

    with pytest.raises(ChangedMeanwhile):
        update_until_applied(client, function, changes, known=known, sleep=clock.sleep)

    assert seen == ["", "deployed"]
    assert app.configuration(function)["Timeout"] == 10


def test_an_update_that_lambda_reports_failed_is_reported_with_its_reason(plldb, app, function, clock):
    client = plldb.clients.lambda_client
    known = lambda_updates.get_configuration(client, function)
    with (
        reported(client, "UpdateFunctionConfiguration", [{"LastUpdateStatus": "InProgress"}]),
        reported(
            client,
            "GetFunctionConfiguration",
            [
                {"LastUpdateStatus": "InProgress"},
                {"LastUpdateStatus": "Failed", "LastUpdateStatusReason": "Layer version arn:x is not found"},
            ],
        ),
    ):
        with pytest.raises(UpdateFailed) as failed:
            update_until_applied(client, function, timeout_of(25), known=known, sleep=clock.sleep)

    assert str(failed.value) == f"the last update of {function} failed: Layer version arn:x is not found"
    assert clock.sleeps == [0.1]


def test_an_update_in_progress_is_waited_for_until_lambda_says_it_is_done(plldb, app, function, clock):
    client = plldb.clients.lambda_client
    states = [{"LastUpdateStatus": "InProgress"}, {"State": "Pending", "LastUpdateStatus": "Successful"}]
    with reported(client, "GetFunctionConfiguration", states):
        updated = update_until_applied(client, function, timeout_of(26), sleep=clock.sleep)
    assert clock.sleeps == [0.1, 0.2]
    assert updated["Timeout"] == 26


def test_an_update_still_running_after_two_minutes_is_reported(plldb, app, function, clock):
    client = plldb.clients.lambda_client
    with reported(client, "GetFunctionConfiguration", [{"LastUpdateStatus": "InProgress"}] * 200):
        with pytest.raises(UpdateFailed) as slow:
            lambda_updates.wait_until_updated(client, function, sleep=clock.sleep)
    assert str(slow.value) == f"{function} is still updating after 120 s"
    assert sum(clock.sleeps) > lambda_updates.UPDATE_WAIT_SECONDS
    assert max(clock.sleeps) == 2.0


@pytest.mark.parametrize(
    ("configuration", "is_settled"),
    [
        ({"State": "Active", "LastUpdateStatus": "Successful"}, True),
        ({"State": "Active"}, True),
        ({}, True),
        ({"State": "Active", "LastUpdateStatus": "InProgress"}, False),
        ({"State": "Pending", "LastUpdateStatus": "Successful"}, False),
        ({"State": "Active", "LastUpdateStatus": "Failed"}, False),
    ],
)
def test_only_a_settled_configuration_skips_the_wait(configuration, is_settled):
    assert settled(configuration) is is_settled
