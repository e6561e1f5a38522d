"""Fixtures of the debugger layer's tests: one helper stack and one application for the whole run.

The helper stack and the application are deployed once on the session's local cloud (``local_cloud``
in tests/conftest.py); each test opens its own debugging session on the application with a scripted
debugger (``attach``), which restores what it instrumented and closes its session when the test ends.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from plldb import protocol
from plldb.bootstrap.deploy import setup
from plldb.bootstrap.helper_stack import load_helper_stack
from plldb.localcloud.sam_deploy import deploy
from tests.layer.layer_harness import (
    AttachFactory,
    LambdaCalls,
    LayerApp,
    LayerBench,
    Script,
    ScriptedDebugger,
    echo_script,
)

LAYER_APP = Path(__file__).resolve().parent / "layer_app"
HELPER_TABLES = ("PLLDBSessions", "PLLDBConnections", "PLLDBStackLocks", "PLLDBInvocations")
HELPER_FUNCTIONS = ("RoutesFunction", "DispatcherFunction", "ManagerFunction")
PYTHON_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"  # every function runs on this interpreter


@pytest.fixture(scope="session")
def layer_bench(local_cloud: Any, tmp_path_factory: pytest.TempPathFactory) -> LayerBench:
    session = local_cloud.session()
    helper_name = f"plldb-layer-{uuid.uuid4().hex[:6]}"
    # The sweep is EventBridge's business, not the layer's: it must not close a test's session midway; and
    # a dropped connection leaves a minute to reconnect, however slow the machine is meanwhile.
    parameters = {"SweepSchedule": "rate(1 day)", "DisconnectGraceSeconds": "60"}
    setup(session, helper_name, parameters=parameters, poll_seconds=0.2)
    helper = load_helper_stack(session, helper_name)
    resources = session.client("cloudformation").list_stack_resources(StackName=helper_name)
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources["StackResourceSummaries"]}

    directory = tmp_path_factory.mktemp("layer") / "layer-app"
    shutil.copytree(LAYER_APP, directory, ignore=shutil.ignore_patterns("__pycache__"))
    # The runtime's own site-packages folder of the layer is named after its Python version.
    site_packages = directory / "own_layer" / "python" / "lib" / f"python{PYTHON_VERSION}" / "site-packages"
    site_packages.mkdir(parents=True)
    (site_packages / "sitelib.py").write_text(
        'VALUE = "from the function\'s own layer (/opt/python/lib/pythonX.Y/site-packages)"\n',
        encoding="utf-8",
    )
    stack_name = f"layer-app-{uuid.uuid4().hex[:6]}"
    outputs = deploy(
        session,
        directory / "template.yaml",
        stack_name,
        parameters={
            "PythonRuntime": f"python{PYTHON_VERSION}",
            "OwnWrapperPath": str(directory / "own_wrapper"),
        },
    )
    stack_id = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]["StackId"]
    app = LayerApp(
        stack_name=stack_name,
        stack_id=stack_id,
        directory=directory,
        functions={key.removesuffix("Name"): value for key, value in outputs.items() if key.endswith("Name")},
        own_wrapper=directory / "own_wrapper",
    )
    return LayerBench(
        cloud=local_cloud,
        helper=helper,
        app=app,
        tables={name: physical[name] for name in HELPER_TABLES},
        helper_functions={name: physical[name] for name in HELPER_FUNCTIONS},
    )


@pytest.fixture
def debugger_factory(layer_bench: LayerBench) -> Iterator[Callable[..., ScriptedDebugger]]:
    """Scripted debuggers, connected but not opened; each is restored, closed and checked at the end."""
    started: list[ScriptedDebugger] = []

    def start(script: Script = echo_script, connect: bool = True) -> ScriptedDebugger:
        debugger = ScriptedDebugger(layer_bench, layer_bench.cloud.session(), script=script)
        started.append(debugger)
        return debugger.connect() if connect else debugger

    yield start
    for debugger in started:
        debugger.finish()
        debugger.wait_scripts()
    for debugger in started:
        assert debugger.unauthenticated == [], f"unauthenticated messages: {debugger.unauthenticated}"
        assert debugger.script_errors == [], f"the debugger's script failed: {debugger.script_errors}"


@pytest.fixture
def attach(layer_bench: LayerBench, debugger_factory: Callable[..., ScriptedDebugger]) -> AttachFactory:
    """A debugging session on the application, with the named functions instrumented for it."""

    def start(
        *logical_ids: str,
        script: Script = echo_script,
        fallback: str = protocol.FALLBACK_ERROR,
        timeout: int = 60,
    ) -> ScriptedDebugger:
        debugger = debugger_factory(script)
        reply = debugger.open(layer_bench.app.stack_name)
        if reply.get("code") == protocol.ERR_WRONG_STATE and "expired" in reply.get("message", ""):
            # A connected session must open within PENDING_SESSION_TTL_SECONDS; on a machine loaded far
            # beyond its cores the routes can take that long to start. The developer would simply attach
            # again, and so does the test (the layer is what it tests).
            debugger = debugger_factory(script)
            reply = debugger.open(layer_bench.app.stack_name)
        assert reply["type"] == protocol.MSG_OPENED, reply
        debugger.instrument([layer_bench.app.ref(name) for name in logical_ids], fallback, timeout)
        return debugger

    return start


@pytest.fixture
def lambda_calls(local_cloud: Any) -> Iterator[LambdaCalls]:
    """Every invocation the local cloud's Lambda runs during the test."""
    calls = LambdaCalls(local_cloud.lambdas).install()
    yield calls
    calls.uninstall()


@pytest.fixture
def scratch_function(layer_bench: LayerBench) -> Iterator[Callable[..., str]]:
    """Functions of the test's own, outside the application stack (the application's code, Echo's role);
    deleted when the test ends."""
    lambda_client = layer_bench.client("lambda")
    role = lambda_client.get_function_configuration(FunctionName=layer_bench.app.functions["Echo"])["Role"]
    created: list[str] = []

    def create(
        handler: str,
        variables: dict[str, str] | None = None,
        layers: list[str] | None = None,
        timeout: int = 30,
    ) -> str:
        name = f"layer-scratch-{handler.split('.')[-1].replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        lambda_client.create_function(
            FunctionName=name,
            Runtime=f"python{PYTHON_VERSION}",
            Role=role,
            Handler=handler,
            Timeout=timeout,
            MemorySize=256,
            Code={"ZipFile": layer_bench.code_zip()},
            Layers=layers or [],
            Environment={"Variables": {"ORDERS_TABLE": "orders", **(variables or {})}},
        )
        created.append(name)
        return name

    yield create
    for name in created:
        lambda_client.delete_function(FunctionName=name)
