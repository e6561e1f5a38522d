"""The layer on every Python that Lambda offers it to (3.10 to 3.13), as far as this machine has them.

Lambda runs the layer under the function's own runtime, whichever it is: its modules must import there,
and its pure parts must decide the same on each. Each interpreter runs the same script and must print
what this one prints (with its own version where the answer names it). botocore comes from this test
environment, where the runtime's own copy would be on Lambda.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from plldb import protocol

ROOT = Path(__file__).resolve().parents[2]
LAMBDA_PYTHONS = ["python3.10", "python3.11", "python3.12", "python3.13"]
DISPATCHER = "arn:aws:lambda:eu-west-1:123456789012:function:plldb-DispatcherFunction-1A2B3C"
VALID = {
    "AWS_REGION": "eu-west-1",
    "AWS_LAMBDA_FUNCTION_NAME": "orders-create",
    "_HANDLER": "app.handler",
    protocol.ENV_SESSION_ID: "9ada04b8-639d-476f-af6a-40c89714b812",
    protocol.ENV_DISPATCHER: DISPATCHER,
    protocol.ENV_INVOCATIONS_TABLE: "plldb-PLLDBInvocations-X1",
    protocol.ENV_PAYLOAD_BUCKET: "plldb-payloadbucket-x1",
}
CASES = {
    "settings": [
        VALID,
        dict(VALID, PLLDB_FALLBACK="passthrough", AWS_LAMBDA_FUNCTION_VERSION="7"),
        dict(VALID, DEBUGGER_SESSION_ID="9ada04b8-session", PLLDB_INVOCATIONS_TABLE=""),
        dict(
            VALID, PLLDB_DISPATCHER_FUNCTION=DISPATCHER + ":live", PLLDB_PAYLOAD_BUCKET="b/c", AWS_REGION=""
        ),
        {},
    ],
    "paths": [{}, {"LAMBDA_TASK_ROOT": "/var/task/app"}],
    "restore": [
        dict(
            VALID,
            ORDERS_TABLE="orders",
            AWS_LAMBDA_EXEC_WRAPPER=protocol.LAYER_WRAPPER_PATH,
            PLLDB_ORIGINAL_EXEC_WRAPPER="/opt/otel-instrument",
            PLLDB_ORIGINAL_TIMEOUT="3",
            PLLDB_ALIASES="{}",
        ),
        dict(VALID, AWS_LAMBDA_EXEC_WRAPPER=protocol.LAYER_WRAPPER_PATH, PLLDB_ORIGINAL_ENVIRONMENT="absent"),
    ],
    "json": [{"b": [1, 2.5, 1e16, "é\u2028", None, True]}, [0.1, -0.0, 123456789012345678]],
}
SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from plldb import lambda_python  # noqa: F401
from plldb.bootstrap.cloudformation.layer import lambda_runtime, runtime_client  # noqa: F401
from plldb.bootstrap.cloudformation.layer import passthrough, settings as layer_settings

cases = json.load(sys.stdin)
settings = [layer_settings.Settings(environ) for environ in cases["settings"]]
restored = []
for environ in cases["restore"]:
    environ = dict(environ)
    layer_settings.restore_function_environment(environ)
    restored.append(environ)
print(json.dumps({
    "version": "python%d.%d" % sys.version_info[:2],
    "settings": [
        [s.problems, s.fallback, s.session_id, s.region, s.function_name, s.function_version, s.handler]
        for s in settings
    ],
    "paths": [passthrough.lambda_python_path(environ) for environ in cases["paths"]],
    "restored": restored,
    "json": [lambda_python.to_json(value) for value in cases["json"]],
}))
"""


def _interpreter(name: str) -> str | None:
    """The interpreter for a Lambda Python version: on PATH, or installed by pyenv."""
    candidates = [
        shutil.which(name),
        *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{name[6:]}*/bin/{name}"))),
    ]
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def _run(interpreter: str) -> dict[str, Any]:
    completed = subprocess.run(
        [
            interpreter,
            "-I",
            "-c",
            "import sys; sys.path.append(sys.argv[2]); exec(sys.argv[3])",
            str(ROOT),
            sysconfig.get_paths()["purelib"],
            SCRIPT,
        ],
        input=json.dumps(CASES),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    version = result.pop("version")
    return json.loads(json.dumps(result).replace(version, "pythonX.Y"))


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """What this test environment's interpreter answers."""
    return _run(sys.executable)


def test_the_reference_answers_are_the_documented_ones(reference: dict[str, Any]) -> None:
    assert reference["settings"][0] == [
        [],
        "error",
        VALID["DEBUGGER_SESSION_ID"],
        "eu-west-1",
        "orders-create",
        "$LATEST",
        "app.handler",
    ]
    assert reference["settings"][1][1] == "passthrough" and reference["settings"][1][5] == "7"
    assert reference["settings"][2][0] == [
        "PLLDB_INVOCATIONS_TABLE not set",
        "DEBUGGER_SESSION_ID is not a session id",
    ]
    assert reference["settings"][3][0] == [
        "PLLDB_DISPATCHER_FUNCTION is not a Lambda function ARN",
        "PLLDB_PAYLOAD_BUCKET is not a table or bucket name",
        "AWS_REGION is not set",
    ]
    assert reference["settings"][4][0] == [
        "DEBUGGER_SESSION_ID, PLLDB_DISPATCHER_FUNCTION, PLLDB_INVOCATIONS_TABLE, PLLDB_PAYLOAD_BUCKET not set",
        "AWS_REGION is not set",
    ]
    assert reference["paths"] == [
        ["/var/task", "/opt/python/lib/pythonX.Y/site-packages", "/opt/python"],
        ["/var/task/app", "/opt/python/lib/pythonX.Y/site-packages", "/opt/python"],
    ]
    assert reference["restored"][0] == {
        "AWS_REGION": "eu-west-1",
        "AWS_LAMBDA_FUNCTION_NAME": "orders-create",
        "_HANDLER": "app.handler",
        "ORDERS_TABLE": "orders",
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/otel-instrument",
    }
    assert "AWS_LAMBDA_EXEC_WRAPPER" not in reference["restored"][1]


@pytest.mark.parametrize("python", LAMBDA_PYTHONS)
def test_the_layer_imports_and_decides_the_same_on_each_lambda_python(
    python: str, reference: dict[str, Any]
) -> None:
    interpreter = _interpreter(python)
    if interpreter is None:
        pytest.skip(f"{python} is not installed on this machine (neither on PATH nor under ~/.pyenv)")
    assert _run(interpreter) == reference
