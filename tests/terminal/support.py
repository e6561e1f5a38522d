"""What the terminal tests share: the deployed printing app, invocations, and reading the screen."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plldb import protocol

GRACE_SECONDS = 3  # DisconnectGraceSeconds of the tests' helper stack: a killed attach is restored soon
OUTPUT_LINE = re.compile(r"^\[PrintFunction ([0-9a-f]{8})\] (\S+) line (\d+)/(\d+)$")


@dataclass(frozen=True)
class PrintingApp:
    directory: Path
    stack_name: str
    function: str  # the deployed name of PrintFunction


def invoke(local_cloud: Any, function: str, event: dict[str, Any]) -> tuple[str | None, Any]:
    """One synchronous invocation in the cloud: (FunctionError or None, the decoded payload)."""
    response = local_cloud.client("lambda").invoke(FunctionName=function, Payload=json.dumps(event).encode())
    return response.get("FunctionError"), json.loads(response["Payload"].read())


def printed_lines(lines: list[str]) -> dict[str, list[tuple[str, int, int]]]:
    """The handler lines the terminal shows, by tag: (short request id, i, n) in the order shown."""
    found: dict[str, list[tuple[str, int, int]]] = {}
    for line in lines:
        match = OUTPUT_LINE.match(line)
        if match is not None:
            found.setdefault(match.group(2), []).append(
                (match.group(1), int(match.group(3)), int(match.group(4)))
            )
    return found


NOT_ACKNOWLEDGED = (
    "plldb is not attached to this function's stack: the debugger did not acknowledge the invocation within "
    f"{protocol.ACK_TIMEOUT_SECONDS:g} s. "
)


def warm_up(local_cloud: Any, terminal: Any, function: str, release: Path, concurrency: int) -> int:
    """Setup for tests that count answers at ``concurrency``: that many execution environments of the
    function, dispatcher and routes, and local workers, started by calls held together until all run.

    Each cold start in the local cloud is a real process, and several at once on a loaded two-core
    machine can keep an `ack` (or a quick `response`) in a starting routes environment past the layer's
    ack timeout; on Lambda they start on their own hardware. A warm-up call either gets its answer or,
    exactly, the layer's documented answer for a missing ack. Returns the number of calls made."""
    with ThreadPoolExecutor(concurrency) as pool:
        calls = [
            pool.submit(
                invoke, local_cloud, function, {"tag": f"warm-up{i}", "lines": 0, "hold": str(release)}
            )
            for i in range(concurrency)
        ]
        for i in range(concurrency):
            terminal.wait_for_text(f"warm-up{i} holding")
        release.write_text("go")
        for i, call in enumerate(calls):
            error, answer = call.result()
            if error is None:
                assert answer["tag"] == f"warm-up{i}"
            else:
                assert (error, answer["errorType"]) == ("Unhandled", "PlldbNotAttached")
                assert answer["errorMessage"].startswith(NOT_ACKNOWLEDGED)
    return concurrency
