"""What the fault tests share: the deployed faults app, snapshots of everything attach may change,
and the processes they watch."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack
from tests.attach.test_attach_e2e import configuration

GRACE_SECONDS = 3  # DisconnectGraceSeconds of the helper stack: long enough for a reconnect, short to wait

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


def snapshot(local_cloud: Any, app: FaultsApp) -> dict[str, dict[str, Any]]:
    """Every function's configuration without the fields Lambda changes on each update."""
    return {name: configuration(local_cloud, name) for name in app.names()}


def session_items(local_cloud: Any, helper: HelperStack, stack_name: str) -> list[dict[str, Any]]:
    table = local_cloud.session().resource("dynamodb").Table(helper.sessions_table_name)
    items = table.scan(ConsistentRead=True)["Items"]
    return sorted(
        (item for item in items if item.get(protocol.A_STACK_NAME) == stack_name),
        key=lambda item: int(item[protocol.A_CREATED_AT]),
    )


def live_sessions(local_cloud: Any, helper: HelperStack, stack_name: str) -> list[dict[str, Any]]:
    return [
        item
        for item in session_items(local_cloud, helper, stack_name)
        if item[protocol.A_STATUS] != protocol.STATUS_CLOSED
    ]


def stack_records(local_cloud: Any, helper: HelperStack, stack_name: str) -> list[str]:
    """Keys of the helper stack's instrumentation records of ``stack_name`` (saved originals, its lock)."""
    table = local_cloud.session().resource("dynamodb").Table(helper.instrumentation_table_name)
    items = table.scan(ConsistentRead=True)["Items"]
    return sorted(str(item["ResourceArn"]) for item in items if item.get(protocol.A_STACK_NAME) == stack_name)


def fully_restored(
    local_cloud: Any, helper: HelperStack, app: FaultsApp, before: dict[str, dict[str, Any]]
) -> bool:
    """Configurations exactly as before, no live session and no instrumentation record left behind."""
    return (
        snapshot(local_cloud, app) == before
        and not live_sessions(local_cloud, helper, app.stack_name)
        and not stack_records(local_cloud, helper, app.stack_name)
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
        timeout=120,
    )


def owner_of(local_cloud: Any) -> str:
    """The Owner attach records: the caller's ARN and this host."""
    caller = local_cloud.client("sts").get_caller_identity()["Arn"]
    return f"{caller} on {socket.gethostname()}"


def debugger_timeout_message(timeout_seconds: int, stack_name: str) -> str:
    """The layer's PlldbDebuggerTimeout text (docs/protocol.md, "Give up, clearly")."""
    return (
        f"The debugger did not answer in time: the function's timeout (about {timeout_seconds} s) was about "
        f"to end, so plldb stopped waiting {protocol.DEADLINE_MARGIN_MS} ms before it. To stay longer at a "
        "breakpoint, attach with a longer timeout: "
        f"`plldb attach --stack-name {stack_name} --function-timeout 900`."
    )
