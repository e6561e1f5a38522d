"""What the WebSocket gateway's tests share: a recording Lambda double, APIs built in moto, constants."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
USER_AGENT = "plldb-tests/1.0"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": REGION}


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def invocation_uri(arn: str) -> str:
    return f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{arn}/invocations"


def allow_policy(event: dict, context: dict | None = None, resource: str | None = None) -> dict:
    return {
        "principalId": "developer",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Action": "execute-api:Invoke",
                    "Effect": "Allow",
                    "Resource": resource or event["methodArn"],
                }
            ],
        },
        "context": context or {},
    }


class SteppedClock:
    """The gateway's clock of its idle and lifetime limits, moved only by the test."""

    def __init__(self) -> None:
        self._now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class FakeLambda:
    """Records every invocation and answers with the handler registered for the function ARN."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.handlers: dict[str, Callable[[dict], Any]] = {}
        self._changed = threading.Condition()

    def __call__(self, arn: str, event: dict) -> Any:
        with self._changed:
            self.calls.append((arn, copy.deepcopy(event)))
            self._changed.notify_all()
        handler = self.handlers.get(arn)
        return handler(event) if handler else {"statusCode": 200}

    def events(self, arn: str) -> list[dict]:
        with self._changed:
            return [event for called, event in self.calls if called == arn]

    def wait_for_events(self, arn: str, count: int, timeout: float = 5.0) -> list[dict]:
        with self._changed:
            arrived = self._changed.wait_for(
                lambda: sum(1 for called, _ in self.calls if called == arn) >= count, timeout
            )
        assert arrived, f"{arn} was invoked {len(self.events(arn))} times, expected {count}"
        return self.events(arn)


@dataclass
class Api:
    api_id: str
    stage: str
    authorizer_arn: str

    def arn(self, route_key: str) -> str:
        return function_arn(f"{self.api_id}-{route_key.strip('$')}")
