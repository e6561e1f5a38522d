"""Side by side with the original plldb 0.1.3 (PyPI), on the same local cloud, in the same run."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORIGINAL_VERSION = "0.1.3"


@dataclass
class OriginalPlan:
    sequential_rounds: int = 50
    concurrency: int = 10
    concurrent_rounds: int = 100
    throughput_invocations: int = 50
    payload_sizes: dict[str, int] = field(default_factory=dict)
    payload_repetitions: int = 2


@dataclass
class OriginalOptions:
    enabled: bool = True
    python: str | None = None
    venv: Path | None = None


def default_venv() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "plldb-bench" / f"plldb-{ORIGINAL_VERSION}"


def compare(
    session: Any,
    *,
    cloud: Any,
    environment: dict[str, str],
    runner: Any,
    plain: str,
    work_dir: Path,
    plan: OriginalPlan,
    options: OriginalOptions,
    log: Callable[[str], None],
) -> dict[str, Any]:
    if not options.enabled:
        return {"skipped": "--no-original"}
    return {"skipped": "not implemented yet"}
