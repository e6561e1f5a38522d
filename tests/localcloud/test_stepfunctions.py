"""Step Functions executions run the deployed state machine, with Lambda tasks in real environments.

The applications are deployed with `sam deploy`'s stand-in and driven through their real entry point,
StartExecution (or StartSyncExecution), as a developer would debug them. Wait states and Retry
intervals wait on a ManualClock the tests advance, so no test waits for time to pass.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from plldb.localcloud import sam_deploy
from plldb.localcloud.cloud import LocalCloud
from plldb.localcloud.moto_extensions.stepfunctions_executions import ManualClock, SystemClock

TEMPLATES = Path(__file__).resolve().parent / "sam_templates"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TOP_LEVEL_STATES = (
    "Defaults",
    "Validate",
    "Large?",
    "Review",
    "Fulfil",
    "Notify",
    "Summary",
    "Done",
    "Rejected",
)


@pytest.fixture(scope="module")
def orders(local_cloud: LocalCloud) -> dict[str, str]:
    return sam_deploy.deploy(
        local_cloud.session(), TEMPLATES / "order-workflow" / "template.yaml", "orders-sfn"
    )


@pytest.fixture
def clock(local_cloud: LocalCloud) -> Iterator[ManualClock]:
    manual = ManualClock()
    local_cloud.stepfunctions.clock = manual
    try:
        yield manual
    finally:
        local_cloud.stepfunctions.clock = SystemClock()


def order(order_id: str, items: list[tuple[str, int]], fail_times: int = 0) -> str:
    lines = [{"sku": sku, "qty": qty} for sku, qty in items]
    return json.dumps({"order": {"id": order_id, "items": lines, "failTimes": fail_times}})


def run(local_cloud: LocalCloud, machine_arn: str, execution_input: str, **extra: Any) -> dict[str, Any]:
    """Start an execution, wait until it has ended, and describe it."""
    stepfunctions = local_cloud.client("stepfunctions")
    arn = stepfunctions.start_execution(stateMachineArn=machine_arn, input=execution_input, **extra)[
        "executionArn"
    ]
    local_cloud.stepfunctions.wait_for_execution(arn)
    return dict(stepfunctions.describe_execution(executionArn=arn))


def history(local_cloud: LocalCloud, execution_arn: str) -> list[dict[str, Any]]:
    return list(
        local_cloud.client("stepfunctions").get_execution_history(executionArn=execution_arn)["events"]
    )


def entered(events: list[dict[str, Any]]) -> list[str]:
    """The top-level states the execution entered, in order (branch and iteration states run concurrently)."""
    names = [
        event["stateEnteredEventDetails"]["name"] for event in events if "stateEnteredEventDetails" in event
    ]
    return [name for name in names if name in TOP_LEVEL_STATES]


def log_messages(local_cloud: LocalCloud, function_name: str) -> list[str]:
    events = local_cloud.client("logs").filter_log_events(logGroupName=f"/aws/lambda/{function_name}")[
        "events"
    ]
    return [event["message"] for event in events]


def test_an_order_runs_every_state_with_lambda_tasks_in_real_environments(
    local_cloud: LocalCloud, orders: dict[str, str], clock: ManualClock
) -> None:
    execution = run(local_cloud, orders["OrdersStateMachineArn"], order("o-1", [("pen", 2), ("ink", 1)]))
    events = history(local_cloud, execution["executionArn"])

    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"]) == {
        "orderId": "o-1",
        "currency": "EUR",
        "total": 13,
        "lines": [{"sku": "pen", "qty": 2, "amount": 6}, {"sku": "ink", "qty": 1, "amount": 7}],
        "reservation": {"reserved": True, "attempts": 1},
        "notification": {"message": "order o-1: 2 lines", "statusCode": 200},
    }
    assert entered(events) == ["Defaults", "Validate", "Large?", "Fulfil", "Notify", "Summary", "Done"]
    assert (events[0]["type"], events[-1]["type"]) == ("ExecutionStarted", "ExecutionSucceeded")
    lambda_tasks = Counter(
        event["lambdaFunctionScheduledEventDetails"]["resource"].rsplit(":", 1)[1]
        for event in events
        if event["type"] == "LambdaFunctionScheduled"
    )
    assert lambda_tasks == {
        orders["ValidateFunctionName"]: 1,
        orders["PriceFunctionName"]: 2,
        orders["ReserveFunctionName"]: 1,
    }
    (invoke,) = [event for event in events if event["type"] == "TaskSucceeded"]
    assert invoke["taskSucceededEventDetails"]["resourceType"] == "lambda"
    assert json.loads(invoke["taskSucceededEventDetails"]["output"])["StatusCode"] == 200
    # The validate task ran in its function's execution environment, which logged it.
    assert "validating o-1" in log_messages(local_cloud, orders["ValidateFunctionName"])
    assert clock.slept == []


def test_a_large_order_waits_for_review_on_the_clock(
    local_cloud: LocalCloud, orders: dict[str, str], clock: ManualClock
) -> None:
    stepfunctions = local_cloud.client("stepfunctions")
    arn = stepfunctions.start_execution(
        stateMachineArn=orders["OrdersStateMachineArn"], input=order("o-2", [("desk", 1)])
    )["executionArn"]

    clock.wait_for_pending(3600)
    waiting = stepfunctions.describe_execution(executionArn=arn)["status"]
    last = history(local_cloud, arn)[-1]
    clock.advance(3600)
    local_cloud.stepfunctions.wait_for_execution(arn)
    execution = stepfunctions.describe_execution(executionArn=arn)

    assert waiting == "RUNNING"
    assert (last["type"], last["stateEnteredEventDetails"]["name"]) == ("WaitStateEntered", "Review")
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["total"] == 120
    assert entered(history(local_cloud, arn)) == [
        "Defaults",
        "Validate",
        "Large?",
        "Review",
        "Fulfil",
        "Notify",
        "Summary",
        "Done",
    ]
    assert clock.slept == [3600]


def test_a_stopped_execution_ends_its_wait(
    local_cloud: LocalCloud, orders: dict[str, str], clock: ManualClock
) -> None:
    stepfunctions = local_cloud.client("stepfunctions")
    arn = stepfunctions.start_execution(
        stateMachineArn=orders["OrdersStateMachineArn"], input=order("o-3", [("desk", 2)])
    )["executionArn"]
    clock.wait_for_pending(3600)

    stepfunctions.stop_execution(executionArn=arn, error="Cancelled", cause="The customer cancelled")
    local_cloud.stepfunctions.wait_for_execution(arn)

    assert stepfunctions.describe_execution(executionArn=arn)["status"] == "ABORTED"
    assert history(local_cloud, arn)[-1]["type"] == "ExecutionAborted"
    assert clock.pending() == []


def test_a_failing_task_is_retried_after_its_intervals_with_backoff(
    local_cloud: LocalCloud, orders: dict[str, str], clock: ManualClock
) -> None:
    stepfunctions = local_cloud.client("stepfunctions")
    arn = stepfunctions.start_execution(
        stateMachineArn=orders["OrdersStateMachineArn"], input=order("o-4", [("pen", 1)], fail_times=2)
    )["executionArn"]

    clock.wait_for_pending(30)  # IntervalSeconds
    clock.advance(30)
    clock.wait_for_pending(60)  # IntervalSeconds x BackoffRate
    clock.advance(60)
    local_cloud.stepfunctions.wait_for_execution(arn)
    execution = stepfunctions.describe_execution(executionArn=arn)
    events = history(local_cloud, arn)

    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["reservation"] == {"reserved": True, "attempts": 3}
    failures = [
        event["lambdaFunctionFailedEventDetails"]
        for event in events
        if event["type"] == "LambdaFunctionFailed"
    ]
    assert [failure["error"] for failure in failures] == ["StockUnavailable", "StockUnavailable"]
    assert [json.loads(failure["cause"])["errorMessage"] for failure in failures] == [
        "attempt 1 for o-4",
        "attempt 2 for o-4",
    ]
    assert clock.slept == [30, 60]


def test_retries_exhausted_fail_the_execution_with_the_tasks_error(
    local_cloud: LocalCloud, orders: dict[str, str], clock: ManualClock
) -> None:
    stepfunctions = local_cloud.client("stepfunctions")
    arn = stepfunctions.start_execution(
        stateMachineArn=orders["OrdersStateMachineArn"], input=order("o-5", [("pen", 1)], fail_times=9)
    )["executionArn"]

    for interval in (30, 60, 120):  # MaxAttempts 3: three retries, then the error stands
        clock.wait_for_pending(interval)
        clock.advance(interval)
    local_cloud.stepfunctions.wait_for_execution(arn)
    execution = stepfunctions.describe_execution(executionArn=arn)

    assert execution["status"] == "FAILED"
    assert execution["error"] == "StockUnavailable"
    assert json.loads(execution["cause"])["errorMessage"] == "attempt 4 for o-5"
    assert clock.slept == [30, 60, 120]


def test_an_order_without_items_is_caught_and_fails_with_the_fail_states_error(
    local_cloud: LocalCloud, orders: dict[str, str], clock: ManualClock
) -> None:
    execution = run(local_cloud, orders["OrdersStateMachineArn"], order("o-6", []))
    events = history(local_cloud, execution["executionArn"])

    assert (execution["status"], execution["error"], execution["cause"]) == (
        "FAILED",
        "OrderRejected",
        "The order has no items",
    )
    assert entered(events) == ["Defaults", "Validate", "Rejected"]
    (failed,) = [event for event in events if event["type"] == "LambdaFunctionFailed"]
    assert failed["lambdaFunctionFailedEventDetails"]["error"] == "InvalidOrder"
    (fail_state,) = [event for event in events if event["type"] == "FailStateEntered"]
    caught = json.loads(fail_state["stateEnteredEventDetails"]["input"])["rejection"]
    assert caught["Error"] == "InvalidOrder"
    assert json.loads(caught["Cause"])["errorMessage"] == "order o-6 has no items"


def test_an_express_machine_runs_synchronously(local_cloud: LocalCloud, orders: dict[str, str]) -> None:
    stepfunctions = local_cloud.client("stepfunctions")
    quote = json.dumps({"id": "q-1", "items": [{"sku": "ink", "qty": 3}]})

    succeeded = stepfunctions.start_sync_execution(
        stateMachineArn=orders["QuoteStateMachineArn"], input=quote
    )
    failed = stepfunctions.start_sync_execution(
        stateMachineArn=orders["QuoteStateMachineArn"],
        input=json.dumps({"id": "q-2", "items": []}),
        name="q-2",
    )
    with pytest.raises(ClientError) as standard:
        stepfunctions.start_sync_execution(stateMachineArn=orders["OrdersStateMachineArn"], input="{}")

    assert (succeeded["status"], json.loads(succeeded["output"])) == (
        "SUCCEEDED",
        {"valid": True, "items": 1, "total": 21},
    )
    assert UUID.match(succeeded["name"])
    assert (failed["status"], failed["error"], failed["cause"], failed["name"]) == (
        "FAILED",
        "InvalidQuote",
        "The order cannot be quoted",
        "q-2",
    )
    assert failed["executionArn"].startswith(
        orders["QuoteStateMachineArn"].replace(":stateMachine:", ":express:")
    )
    assert standard.value.response["Error"]["Code"] == "StateMachineTypeNotSupported"


def test_an_execution_is_named_with_a_uuid_unless_named(
    local_cloud: LocalCloud, orders: dict[str, str]
) -> None:
    stepfunctions = local_cloud.client("stepfunctions")
    machine = orders["OrdersStateMachineArn"]
    unnamed = run(local_cloud, machine, order("n-1", [("pen", 1)]))
    named = run(local_cloud, machine, order("n-2", [("pen", 1)]), name="n-2")
    with pytest.raises(ClientError) as invalid:
        stepfunctions.start_execution(stateMachineArn=machine, input="{}", name="no spaces allowed")

    assert UUID.match(unnamed["name"])
    assert unnamed["executionArn"].endswith(":" + unnamed["name"])
    assert named["name"] == "n-2"
    assert invalid.value.response["Error"]["Code"] == "InvalidName"


def test_the_scheduled_workflow_runs_its_worker_then_its_reporter(local_cloud: LocalCloud) -> None:
    values = sam_deploy.deploy(
        local_cloud.session(),
        TEMPLATES / "scheduled-workflow" / "template.yaml",
        "workflow-sfn",
        parameters={"ScheduleExpression": "rate(1 hour)"},
    )

    execution = run(local_cloud, values["StateMachineArn"], json.dumps({"night": "2030-01-01"}))
    events = history(local_cloud, execution["executionArn"])

    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"]) == {"reported": True}
    assert [
        json.loads(event["lambdaFunctionSucceededEventDetails"]["output"])
        for event in events
        if event["type"] == "LambdaFunctionSucceeded"
    ] == [{"processed": 0}, {"reported": True}]


def test_a_wait_until_a_timestamp_waits_by_the_clock(local_cloud: LocalCloud, clock: ManualClock) -> None:
    """Wait's Timestamp and TimestampPath are UTC instants; the wait lasts until the clock reaches them."""
    role = local_cloud.client("iam").create_role(RoleName="sfn-timestamps", AssumeRolePolicyDocument="{}")
    definition = {
        "StartAt": "UntilTwo",
        "States": {
            "UntilTwo": {"Type": "Wait", "Timestamp": "2030-01-01T02:00:00Z", "Next": "UntilGiven"},
            "UntilGiven": {"Type": "Wait", "TimestampPath": "$.until", "End": True},
        },
    }
    stepfunctions = local_cloud.client("stepfunctions")
    machine = stepfunctions.create_state_machine(
        name="timestamps", definition=json.dumps(definition), roleArn=role["Role"]["Arn"]
    )["stateMachineArn"]
    arn = stepfunctions.start_execution(stateMachineArn=machine, input='{"until": "2030-01-01T02:30:00Z"}')[
        "executionArn"
    ]

    clock.wait_for_pending(7200)  # the clock starts at 2030-01-01T00:00:00Z
    clock.advance(7200)
    clock.wait_for_pending(1800)
    clock.advance(1800)
    local_cloud.stepfunctions.wait_for_execution(arn)

    assert stepfunctions.describe_execution(executionArn=arn)["status"] == "SUCCEEDED"
    assert clock.slept == [7200, 1800]
