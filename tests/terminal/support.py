"""What the terminal tests share: the deployed printing app, invocations, and reading the screen."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
