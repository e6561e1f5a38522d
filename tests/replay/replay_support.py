"""What the replay tests share: the fixture app, recordings made by the recorder attach uses, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plldb import protocol
from plldb.local.invocation import Invocation, Outcome
from plldb.local.recordings import Limits, Recorder, Recording, RecordingStore, recordings_folder

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ORDERS_APP = FIXTURES / "orders_app"
FUNCTION_NAME = "orders-OrderFunction-A1B2C3"
FUNCTION_ARN = f"arn:aws:lambda:eu-west-1:123456789012:function:{FUNCTION_NAME}"
BUDGET_MS = 30_000
RECORDED_AT = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def copy_orders_app(destination: Path) -> Path:
    shutil.copytree(ORDERS_APP, destination, ignore=shutil.ignore_patterns("__pycache__", ".plldb"))
    return destination


@dataclass
class Recorded:
    """One invocation as attach would have run it: what the recorder is given."""

    event: dict[str, Any]
    request_id: str
    payload: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    output: list[tuple[str, str]] = field(default_factory=list)
    environment: dict[str, str] = field(
        default_factory=lambda: {"GREETING": "Hello", "AWS_REGION": "eu-west-1"}
    )
    client_context: str | None = None
    cognito_identity: str | None = None
    credentials: dict[str, str] | None = None
    at: float = RECORDED_AT
    duration_ms: float = 12.5


def record(
    project: Path,
    recorded: Recorded,
    *,
    record_env: bool = False,
    stack: str = "orders",
    limits: Limits | None = None,
    logical_id: str = "OrderFunction",
) -> Recording:
    """Record ``recorded`` into the project's folder with the same Recorder `plldb attach` uses."""
    store = RecordingStore(recordings_folder(project), limits)
    recorder = Recorder(store, stack_name=stack, record_env=record_env, clock=lambda: recorded.at, environ={})
    invocation = Invocation(
        request_id=recorded.request_id,
        function_name=FUNCTION_NAME,
        handler="app.handler",
        event_json=json.dumps(recorded.event),
        context={
            "functionName": FUNCTION_NAME,
            "functionVersion": "$LATEST",
            "invokedFunctionArn": FUNCTION_ARN,
            "memoryLimitInMB": "512",
            "logGroupName": f"/aws/lambda/{FUNCTION_NAME}",
            "logStreamName": "2026/01/01/[$LATEST]0123456789abcdef",
            "deadlineMs": int(recorded.at * 1000) + BUDGET_MS,
            "traceId": None,
            "clientContext": recorded.client_context,
            "cognitoIdentity": recorded.cognito_identity,
            "tenantId": None,
        },
        environment=recorded.environment,
        credentials=recorded.credentials,
    )
    if recorded.error is not None:
        outcome = Outcome(protocol.RESPONSE_CODE_ERROR, None, recorded.error, recorded.duration_ms)
    else:
        outcome = Outcome(protocol.RESPONSE_CODE_OK, json.dumps(recorded.payload), None, recorded.duration_ms)
    output = recorder.capture(lambda *line: None)
    with recorder.recording(logical_id, recorded.request_id) as recording:
        for stream, line in recorded.output:
            output(logical_id, recorded.request_id, stream, line)
        recording.done(invocation, outcome, frozenset({"GREETING", "TABLE_NAME"}))
    recorder.close()
    (written,) = [r for r in store.recordings() if r.request_id == recorded.request_id]
    return written


def developer_environment(**overrides: str) -> dict[str, str]:
    """This process's environment as a developer's shell: no virtualenv active, no AWS settings."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name != "VIRTUAL_ENV"
        and not name.startswith("AWS_")
        and name != protocol.EXECUTE_API_ENDPOINT_VARIABLE
    }
    environment.update(overrides)
    return environment


def plldb(cwd: Path, *arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plldb", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env if env is not None else developer_environment(),
        timeout=120,
    )


def run_pytest(test_file: Path) -> subprocess.CompletedProcess[str]:
    """The generated test under pytest, as the project would run it (its own folder as rootdir)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(test_file)],
        cwd=test_file.parent,
        capture_output=True,
        text=True,
        env=developer_environment(),
        timeout=120,
    )
