"""The layer on every Python that Lambda offers (3.10 to 3.13), as far as this machine has them.

The interpreter Lambda passes to the wrapper runs the layer; it finds botocore where the runtime
would (here the test environment's site-packages on PYTHONPATH; awslambdaric is never imported on
the layer's paths).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sysconfig
from collections.abc import Callable

import pytest
from layer_harness import LambdaEnvironment, LayerCloud, Reply, ScriptedDebugger

from plldb import protocol

LAMBDA_PYTHONS = ["python3.10", "python3.11", "python3.12", "python3.13"]


def _interpreter(name: str) -> str | None:
    candidates = [
        shutil.which(name),
        *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{name[6:]}*/bin/{name}"))),
    ]
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.parametrize("python", LAMBDA_PYTHONS)
def test_the_layer_debugs_and_falls_back_on_each_lambda_python(
    python: str,
    layer_cloud: LayerCloud,
    start_environment: Callable[..., LambdaEnvironment],
    connect_debugger: Callable[..., ScriptedDebugger],
) -> None:
    interpreter = _interpreter(python)
    if interpreter is None:
        pytest.skip(f"{python} is not installed on this machine")
    libraries = {"PYTHONPATH": sysconfig.get_paths()["purelib"]}

    debugger = connect_debugger(script=lambda message, event: Reply(payload=json.dumps({"python": python})))
    session_id = layer_cloud.put_session(debugger.connection_id)
    attached = start_environment(
        instrumentation=layer_cloud.instrumentation(session_id, debugger.connection_id),
        extra=libraries,
        python=interpreter,
    )
    closed = layer_cloud.put_session("conn-closed", status=protocol.STATUS_CLOSED, fallback="passthrough")
    passthrough = start_environment(
        "app.fail",
        instrumentation=layer_cloud.instrumentation(closed, "conn-closed"),
        extra=libraries,
        python=interpreter,
    )
    attached.wait_until_ready()
    passthrough.wait_until_ready()

    assert attached.invoke({"order": 1}).json() == {"python": python}
    failed = passthrough.invoke({"id": "A-1"})
    assert failed.error_type == "ValueError"
    error = failed.json()
    assert (error["errorMessage"], error["requestId"]) == ("order A-1 is invalid", failed.request_id)
    assert len(error["stackTrace"]) == 1
    assert error["stackTrace"][0].endswith(
        'in fail\n    raise ValueError("order %s is invalid" % event.get("id"))\n'
    )
