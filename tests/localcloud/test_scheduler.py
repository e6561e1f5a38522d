"""EventBridge scheduled rules fire: schedule expressions, the scheduler against moto's own events backend
with an injected clock, and (end to end) a SAM ``Schedule`` event invoking a real function."""

from __future__ import annotations

import http.server
import json
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from plldb.localcloud.sam_deploy import deploy
from plldb.localcloud.scheduler import Firing, Scheduler
from plldb.localcloud.schedules import Cron, Rate, ScheduleExpressionError, parse_schedule

ACCOUNT = "123456789012"
REGION = "us-east-1"
START = datetime(2026, 3, 2, 9, 30, 15, tzinfo=UTC)  # a Monday


# --- expressions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(1 hour)", 3600), ("rate(2 days)", 172800)],
)
def test_rate_expressions(expression, seconds):
    assert parse_schedule(expression) == Rate(seconds)


@pytest.mark.parametrize(
    "expression",
    [
        "rate(1 minutes)",
        "rate(5 minute)",
        "rate(0 minutes)",
        "rate(1 second)",
        "rate(1.5 hours)",
        "rate(1  minute)",
        "cron(0 12 * * * *)",  # both day fields given
        "cron(0 12 ? * ? *)",  # neither
        "cron(0 12 * * ?)",  # five fields
        "cron(60 12 * * ? *)",
        "cron(0 24 * * ? *)",
        "cron(0 12 ? * 8 *)",
        "cron(0 12 ? * MON#6 *)",
        "cron(0 12 * FOO ? *)",
        "every minute",
    ],
)
def test_invalid_expressions_are_refused_as_eventbridge_refuses_them(expression):
    with pytest.raises(ScheduleExpressionError) as refused:
        parse_schedule(expression)
    assert str(refused.value) == "Parameter ScheduleExpression is not valid."


def test_rate_occurrences_are_whole_periods_after_its_start():
    rate = parse_schedule("rate(5 minutes)")
    assert rate.next_after(START, START) == START + timedelta(minutes=5)
    assert rate.next_after(START + timedelta(minutes=5), START) == START + timedelta(minutes=10)
    assert rate.next_after(START + timedelta(minutes=7), START) == START + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("cron(1/10 * * * ? *)", START, datetime(2026, 3, 2, 9, 31, tzinfo=UTC)),
        ("cron(0/15 * * * ? *)", START, datetime(2026, 3, 2, 9, 45, tzinfo=UTC)),
        ("cron(0 12 ? * MON-FRI *)", START, datetime(2026, 3, 2, 12, 0, tzinfo=UTC)),
        ("cron(0 8 ? * SAT,SUN *)", START, datetime(2026, 3, 7, 8, 0, tzinfo=UTC)),
        ("cron(0 10 L * ? *)", START, datetime(2026, 3, 31, 10, 0, tzinfo=UTC)),
        ("cron(0 10 L FEB ? *)", START, datetime(2027, 2, 28, 10, 0, tzinfo=UTC)),
        ("cron(0 9 ? * 6#3 *)", START, datetime(2026, 3, 20, 9, 0, tzinfo=UTC)),  # third Friday
        ("cron(15 10 ? * 6L 2026)", START, datetime(2026, 3, 27, 10, 15, tzinfo=UTC)),  # last Friday
        ("cron(0 8 15W * ? *)", START, datetime(2026, 3, 16, 8, 0, tzinfo=UTC)),  # 15th is a Sunday
        ("cron(0 8 1W * ? *)", datetime(2026, 7, 30, tzinfo=UTC), datetime(2026, 8, 3, 8, 0, tzinfo=UTC)),
        ("cron(0 0 1 1 ? 2030)", START, datetime(2030, 1, 1, 0, 0, tzinfo=UTC)),
        ("cron(30 9 2 3 ? 2026)", START, datetime.max.replace(tzinfo=UTC)),  # only in the past
    ],
)
def test_cron_occurrences(expression, after, expected):
    cron = parse_schedule(expression)
    assert isinstance(cron, Cron)
    assert cron.next_after(after) == expected


# --- the scheduler over moto's events backend, with an injected clock -----------------------------------
class Recorder:
    def __init__(self, failing: set[str] | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.failing = failing or set()

    def __call__(self, arn: str, payload: bytes) -> None:
        if arn in self.failing:
            raise RuntimeError("ResourceNotFoundException: Function not found")
        self.calls.append((arn, json.loads(payload)))

    def for_rule(self, rule_name: str) -> Callable[[str, bytes], None]:
        """Record only what the rule's own targets receive (the test's functions are named for it)."""

        def invoke(arn: str, payload: bytes) -> None:
            if f":function:{rule_name}-" in arn:
                self(arn, payload)

        return invoke


@pytest.fixture
def events(session: boto3.Session) -> Any:
    return session.client("events")


@pytest.fixture
def rule_name(events: Any) -> Iterator[str]:
    """A fresh rule's name; the rule is gone after the test (moto's state is shared by the session)."""
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    yield name
    for rule in events.list_rules(NamePrefix=name)["Rules"]:
        targets = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
        if targets:
            events.remove_targets(Rule=rule["Name"], Ids=[target["Id"] for target in targets])
        events.delete_rule(Name=rule["Name"])


class RuleScheduler:
    """The scheduler, seen through one rule (other tests' rules live in the same moto backend)."""

    def __init__(self, scheduler: Scheduler, rule_name: str) -> None:
        self.scheduler = scheduler
        self.rule_name = rule_name

    def fire_due(self, now: datetime) -> list[Firing]:
        return [firing for firing in self.scheduler.fire_due(now) if firing.rule_name == self.rule_name]

    def fire(self, now: datetime) -> list[Firing]:
        return self.scheduler.fire(self.rule_name, now)

    def next_due(self) -> datetime | None:
        return self.scheduler.next_due(self.rule_name)


def function_arn(name: str, qualifier: str | None = None) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}" + (f":{qualifier}" if qualifier else "")


@pytest.fixture
def fn(rule_name: str) -> Callable[..., str]:
    """ARNs of functions named for the test's rule."""
    return lambda name, qualifier=None: function_arn(f"{rule_name}-{name}", qualifier)


def make_scheduler(recorder: Recorder, rule_name: str) -> RuleScheduler:
    return RuleScheduler(
        Scheduler(
            recorder.for_rule(rule_name),
            ACCOUNT,
            REGION,
            clock=lambda: pytest.fail("the injected time is used"),
        ),
        rule_name,
    )


def test_rate_rule_fires_at_its_rate_never_early_and_late_occurrences_each_once(events, rule_name, fn):
    recorder = Recorder()
    scheduler = make_scheduler(recorder, rule_name)
    rule_arn = events.put_rule(Name=rule_name, ScheduleExpression="rate(1 minute)")["RuleArn"]
    events.put_targets(Rule=rule_name, Targets=[{"Id": "sweep", "Arn": fn("sweeper")}])

    assert scheduler.fire_due(START) == []  # the schedule starts when the rule is first seen
    assert scheduler.next_due() == START + timedelta(minutes=1)
    assert scheduler.fire_due(START + timedelta(seconds=59)) == []
    (first,) = scheduler.fire_due(START + timedelta(seconds=60))
    assert recorder.calls == [(fn("sweeper"), json.loads(first.payload))]
    assert json.loads(first.payload) == {
        "version": "0",
        "id": json.loads(first.payload)["id"],
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": "2026-03-02T09:31:15Z",
        "region": REGION,
        "resources": [rule_arn],
        "detail": {},
    }
    uuid.UUID(json.loads(first.payload)["id"])
    late = scheduler.fire_due(START + timedelta(minutes=3, seconds=30))  # the process was busy
    assert [firing.time for firing in late] == [
        START + timedelta(minutes=2),
        START + timedelta(minutes=3),
    ]
    assert len({call[1]["id"] for call in recorder.calls}) == 3
    assert scheduler.next_due() == START + timedelta(minutes=4)


def test_disabled_and_deleted_rules_never_fire(events, rule_name, fn):
    recorder = Recorder()
    scheduler = make_scheduler(recorder, rule_name)
    events.put_rule(Name=rule_name, ScheduleExpression="rate(1 minute)", State="DISABLED")
    events.put_targets(Rule=rule_name, Targets=[{"Id": "sweep", "Arn": fn("sweeper")}])
    assert scheduler.fire_due(START) == []
    assert scheduler.fire_due(START + timedelta(hours=1)) == []
    assert scheduler.fire(START) == []
    assert scheduler.next_due() is None

    events.enable_rule(Name=rule_name)
    scheduler.fire_due(START + timedelta(hours=2))  # enabled now: its schedule starts here
    assert len(scheduler.fire_due(START + timedelta(hours=2, minutes=1))) == 1
    events.disable_rule(Name=rule_name)
    assert scheduler.fire_due(START + timedelta(hours=3)) == []
    events.enable_rule(Name=rule_name)
    assert scheduler.fire_due(START + timedelta(hours=4)) == []  # starts anew, no backlog
    events.remove_targets(Rule=rule_name, Ids=["sweep"])
    events.delete_rule(Name=rule_name)
    assert scheduler.fire_due(START + timedelta(hours=5)) == []
    assert scheduler.fire(START) == []
    assert len(recorder.calls) == 1


def test_fire_runs_a_rule_once_now_with_each_targets_input(events, rule_name, fn):
    recorder = Recorder(failing={fn("gone")})
    scheduler = make_scheduler(recorder, rule_name)
    events.put_rule(Name=rule_name, ScheduleExpression="cron(0 3 * * ? *)")
    events.put_targets(
        Rule=rule_name,
        Targets=[
            {"Id": "plain", "Arn": fn("sweeper", "live")},
            {"Id": "constant", "Arn": fn("reporter"), "Input": '{"report": "periodic"}'},
            {"Id": "path", "Arn": fn("auditor"), "InputPath": "$.detail-type"},
            {"Id": "gone", "Arn": fn("gone")},
            {"Id": "queue", "Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:jobs"},
        ],
    )
    fired = scheduler.fire(START)
    assert [(firing.target_id, firing.error) for firing in fired] == [
        ("plain", None),
        ("constant", None),
        ("path", None),
        ("gone", "RuntimeError: ResourceNotFoundException: Function not found"),
    ]
    assert [(arn, payload) for arn, payload in recorder.calls[1:]] == [
        (fn("reporter"), {"report": "periodic"}),
        (fn("auditor"), "Scheduled Event"),
    ]
    assert recorder.calls[0][0] == fn("sweeper", "live")
    assert recorder.calls[0][1]["time"] == "2026-03-02T09:30:15Z"
    assert scheduler.next_due() is None  # fire() leaves the schedule alone
    assert [firing.time for firing in scheduler.fire_due(START + timedelta(days=1))] == []
    assert [firing.time for firing in scheduler.fire_due(START + timedelta(days=2))] == [
        datetime(2026, 3, 4, 3, 0, tzinfo=UTC)
    ] * 4


def test_put_rule_refuses_what_eventbridge_refuses(events, rule_name):
    with pytest.raises(ClientError) as refused:
        events.put_rule(Name=rule_name, ScheduleExpression="rate(1 minutes)")
    assert refused.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": "Parameter ScheduleExpression is not valid.",
    }
    assert events.list_rules(NamePrefix=rule_name)["Rules"] == []


# --- end to end: SAM's Schedule event invokes a real function ------------------------------------------
SCHEDULED_APP = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  SinkUrl:
    Type: String
Resources:
  SweepFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: src/
      Handler: sweep.handle
      Runtime: python3.12
      Environment:
        Variables:
          SINK_URL: !Ref SinkUrl
      Events:
        Tick:
          Type: Schedule
          Properties:
            Schedule: rate(1 minute)
"""

SWEEP_HANDLER = """
import json, os, urllib.request

def handle(event, context):
    urllib.request.urlopen(os.environ["SINK_URL"], data=json.dumps(event).encode()).read()
"""


class _Sink(http.server.BaseHTTPRequestHandler):
    received: queue.Queue[dict] = queue.Queue()

    def do_POST(self) -> None:
        self.received.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[tuple[str, queue.Queue[dict]]]:
    """An HTTP endpoint on 127.0.0.1 where the function reports the events it received."""
    _Sink.received = queue.Queue()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", _Sink.received
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_sam_schedule_event_invokes_its_function_with_the_scheduled_event(local_cloud, tmp_path: Path, sink):
    sink_url, received = sink
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "sweep.py").write_text(SWEEP_HANDLER)
    (tmp_path / "template.yaml").write_text(SCHEDULED_APP)
    session = local_cloud.session()
    stack = f"scheduled-{uuid.uuid4().hex[:6]}"
    deploy(session, tmp_path / "template.yaml", stack, parameters={"SinkUrl": sink_url})
    rule_name = session.client(
        "cloudformation", endpoint_url=local_cloud.endpoint_url
    ).describe_stack_resource(StackName=stack, LogicalResourceId="SweepFunctionTick")["StackResourceDetail"][
        "PhysicalResourceId"
    ]
    scheduler = local_cloud.scheduler
    scheduler.fire_due()
    due = scheduler.next_due(rule_name)
    assert due is not None
    (firing,) = [f for f in scheduler.fire_due(due) if f.rule_name == rule_name]
    sent = json.loads(firing.payload)
    assert (sent["detail-type"], sent["time"]) == ("Scheduled Event", due.strftime("%Y-%m-%dT%H:%M:%SZ"))
    # The invocation is asynchronous; the real timer may fire the rule too (at least once delivery).
    while (event := received.get(timeout=60))["id"] != sent["id"]:
        assert event["resources"] == sent["resources"]
    assert event == sent
