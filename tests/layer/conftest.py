"""Fixtures of the debugger layer's tests: one small cloud per run, environments and debuggers per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from layer_harness import LambdaEnvironment, LayerCloud, ScriptedDebugger, write_function


@pytest.fixture(scope="session")
def layer_cloud() -> Iterator[LayerCloud]:
    cloud = LayerCloud().start()
    try:
        yield cloud
    finally:
        cloud.stop()


@pytest.fixture
def task_root(tmp_path: Path) -> Path:
    return write_function(tmp_path / "task")


@pytest.fixture
def start_environment(layer_cloud: LayerCloud, task_root: Path) -> Iterator[Callable[..., LambdaEnvironment]]:
    """Start execution environments of the test function; all are stopped when the test ends."""
    started: list[LambdaEnvironment] = []

    def start(handler: str = "app.echo", **kwargs: Any) -> LambdaEnvironment:
        environment = LambdaEnvironment(task_root, handler, layer_cloud, **kwargs)
        started.append(environment)
        return environment

    try:
        yield start
    finally:
        for environment in started:
            environment.stop()


@pytest.fixture
def connect_debugger(layer_cloud: LayerCloud) -> Iterator[Callable[..., ScriptedDebugger]]:
    connected: list[ScriptedDebugger] = []

    def start(**kwargs: Any) -> ScriptedDebugger:
        debugger = layer_cloud.debugger(**kwargs).connect()
        connected.append(debugger)
        return debugger

    try:
        yield start
    finally:
        for debugger in connected:
            debugger.close()
