"""What the fault tests share: the deployed faults app, snapshots of everything attach may change,
the developers who attach, and the processes they watch."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack
from tests.cloud_state import (
    function_state,
    helper_resource,
    live_sessions,
    locks,
    manager_records,
    new_records,
    sessions_of,
    stack_id_of,
    wait_for,
)

GRACE_SECONDS = 3  # DisconnectGraceSeconds of the helper stack: long enough for a reconnect, short to wait
# The fault tests' helper stack sweeps only when a test fires its rule (with an injected time), so no
# sweep of the scheduler's own timer ever runs in the middle of a test.
SWEEP_SCHEDULE = "rate(1 day)"
SWEEP_DONE = "sweep done"
SWEEP_PERIOD = timedelta(minutes=1)  # the template's default SweepSchedule, rate(1 minute)
FAULTS_PARAMETERS = {"DisconnectGraceSeconds": str(GRACE_SECONDS), "SweepSchedule": SWEEP_SCHEDULE}

# FaultsCrowded already has five layers: plldb must refuse it and leave it alone.
INSTRUMENTABLE = ("FaultsEcho", "FaultsMissingFunction", "FaultsMissingModule", "FaultsModes")
CROWDED = "FaultsCrowded"
CROWDED_REFUSAL = (
    "it already has 5 layers and Lambda allows 5, so the plldb layer cannot be added; "
    "remove a layer or leave this function out with --function"
)


@dataclass(frozen=True)
class FaultsApp:
    directory: Path
    stack_name: str
    functions: dict[str, str]  # logical id -> deployed function name

    def name(self, logical_id: str) -> str:
        return self.functions[logical_id]

    def names(self, logical_ids: tuple[str, ...] | None = None) -> list[str]:
        return sorted(self.functions[i] for i in (logical_ids or tuple(self.functions)))


@dataclass(frozen=True)
class Developer:
    """A person with AWS credentials of their own: the variables their plldb runs with, and who AWS says they are."""

    environment: dict[str, str]
    arn: str


def snapshot(local_cloud: Any, app: FaultsApp) -> dict[str, dict[str, Any]]:
    """Everything plldb may change for each function: configuration, aliases, versions, its role."""
    return {name: function_state(local_cloud, name) for name in app.names()}


def session_items(local_cloud: Any, helper: HelperStack, stack_name: str) -> list[dict[str, Any]]:
    """Every session opened on the stack, oldest first."""
    return sessions_of(local_cloud, helper, stack_name)


def fully_restored(
    local_cloud: Any, helper: HelperStack, app: FaultsApp, before: dict[str, dict[str, Any]]
) -> bool:
    """Functions (and their roles) exactly as before, no live session and no lock left behind."""
    return (
        snapshot(local_cloud, app) == before
        and not live_sessions(local_cloud, helper, app.stack_name)
        and stack_id_of(local_cloud, app.stack_name) not in locks(local_cloud, helper)
    )


def child_pids(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (the local workers of an attach process)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.add(int(entry.name))
    return children


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def run_plldb(environment: dict[str, str], cwd: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """One plldb command, as a developer runs it."""
    return subprocess.run(
        [sys.executable, "-m", "plldb", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def owner_of(local_cloud: Any) -> str:
    """The Owner the helper stack records for the default developer: the ARN API Gateway authenticated."""
    return str(local_cloud.client("sts").get_caller_identity()["Arn"])


def second_developer(local_cloud: Any, environment: dict[str, str]) -> Developer:
    """Another IAM user of the account, with an access key of their own (so the owner differs)."""
    iam = local_cloud.client("iam")
    name = f"bob-{uuid.uuid4().hex[:6]}"
    arn = iam.create_user(UserName=name)["User"]["Arn"]
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Developer(
        environment={
            **environment,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        },
        arn=arn,
    )


def utc_text(epoch: Any) -> str:
    """An epoch time as plldb shows it to people."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(epoch)))


def debugger_timeout_message(timeout_seconds: int) -> str:
    """The layer's PlldbDebuggerTimeout text (docs/protocol.md, "Give up, clearly")."""
    return (
        f"The debugger did not answer in time: the function's timeout (about {timeout_seconds} s) was about "
        f"to end, so plldb stopped waiting {protocol.DEADLINE_MARGIN_MS} ms before it. To stay longer at a "
        "breakpoint, attach with a longer timeout: `plldb attach --function-timeout 900`."
    )


def killed_without_disconnect(
    local_cloud: Any, helper: HelperStack, app: FaultsApp, attach: Any
) -> dict[str, Any]:
    """kill -9 the attach process while the gateway drops its connection's $disconnect; its session."""
    (session,) = live_sessions(local_cloud, helper, app.stack_name)
    connection_id = str(session[protocol.A_CONNECTION_ID])
    local_cloud.gateway.faults.drop_disconnects(connection_id)
    attach.process.kill()
    attach.process.wait(10)
    assert local_cloud.gateway.faults.wait_for_dropped_disconnect(connection_id, timeout=60)
    return session


class Sweeps:
    """The helper stack's sweep rule, fired by the test at injected times one period apart."""

    def __init__(self, local_cloud: Any, helper: HelperStack) -> None:
        self.local_cloud = local_cloud
        self.helper = helper
        self.rule = helper_resource(local_cloud, helper, "SweepRule")
        self.moment = datetime.now(UTC).replace(microsecond=0)
        self.fired = 0

    def fire(self) -> dict[str, Any]:
        """The next occurrence of the schedule; the manager's record of that sweep once it is done."""
        done_before = manager_records(self.local_cloud, self.helper, SWEEP_DONE)
        self.moment += SWEEP_PERIOD
        firings = self.local_cloud.scheduler.fire(self.rule, now=self.moment)
        assert [(f.rule_name, f.time, f.error) for f in firings] == [(self.rule, self.moment, None)]
        self.fired += 1
        records = wait_for(
            lambda: new_records(done_before, manager_records(self.local_cloud, self.helper, SWEEP_DONE)),
            f"the manager's record of sweep {self.fired}",
        )
        assert len(records) == 1
        return records[0]
