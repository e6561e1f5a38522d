"""Fixtures of the terminal tests: a helper stack and the printing app deployed once, and `plldb attach`
started in a pseudo-terminal against them.

Everything goes through the command line and real invocations (boto3 ``lambda.invoke`` on the local
cloud), so these tests hold whatever the internals of attach become.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from plldb import protocol
from plldb.bootstrap.deploy import setup
from plldb.bootstrap.helper_stack import HelperStack, load_helper_stack
from plldb.localcloud.sam_deploy import deploy
from tests.terminal.support import GRACE_SECONDS, PrintingApp
from tests.terminal.terminal import Terminal

PRINTING_APP = Path(__file__).resolve().parent / "printing_app"


@pytest.fixture(scope="session")
def terminal_helper(local_cloud: Any) -> HelperStack:
    session = local_cloud.session()
    name = f"plldb-terminal-{uuid.uuid4().hex[:6]}"
    setup(session, name, parameters={"DisconnectGraceSeconds": str(GRACE_SECONDS)}, poll_seconds=0.2)
    return load_helper_stack(session, name)


@pytest.fixture(scope="session")
def deployed_printing_app(
    local_cloud: Any, terminal_helper: HelperStack, tmp_path_factory: pytest.TempPathFactory
) -> PrintingApp:
    directory = tmp_path_factory.mktemp("terminal") / "printing-app"
    shutil.copytree(PRINTING_APP, directory, ignore=shutil.ignore_patterns("__pycache__"))
    stack_name = f"printing-{uuid.uuid4().hex[:8]}"
    outputs = deploy(local_cloud.session(), directory / "template.yaml", stack_name)
    return PrintingApp(directory, stack_name, outputs["PrintFunctionName"])


@pytest.fixture
def printing_app(
    terminal_helper: HelperStack, deployed_printing_app: PrintingApp, attach_environment: dict[str, str]
) -> Iterator[PrintingApp]:
    """The printing app; whatever a failing test left attached is detached before the next test."""
    yield deployed_printing_app
    subprocess.run(
        [sys.executable, "-m", "plldb", "detach", "--stack-name", deployed_printing_app.stack_name]
        + ["--helper-stack", terminal_helper.stack_name],
        cwd=deployed_printing_app.directory,
        env=attach_environment,
        capture_output=True,
        check=True,
    )


@pytest.fixture
def attach_environment(local_cloud: Any, tmp_path: Path) -> dict[str, str]:
    """The developer's environment: the local cloud's endpoints and credentials, no AWS config files."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_")
        and name not in (protocol.EXECUTE_API_ENDPOINT_VARIABLE, "NO_COLOR", "COLUMNS", "LINES")
    }
    environment.update(local_cloud.environment())
    environment["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    environment["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-credentials")
    return environment


@pytest.fixture
def attach_in_terminal(
    terminal_helper: HelperStack, attach_environment: dict[str, str]
) -> Iterator[Callable[..., Terminal]]:
    """Start `plldb attach --stack-name S --helper-stack H ARGS...` in a pseudo-terminal in ``cwd``."""
    started: list[Terminal] = []

    def start(cwd: Path, stack_name: str, *arguments: str, **options: Any) -> Terminal:
        terminal = Terminal(
            [
                "-m",
                "plldb",
                "attach",
                "--stack-name",
                stack_name,
                "--helper-stack",
                terminal_helper.stack_name,
                *arguments,
            ],
            cwd=cwd,
            environment=attach_environment,
            **options,
        )
        started.append(terminal)
        return terminal

    yield start
    for terminal in started:
        terminal.close()
