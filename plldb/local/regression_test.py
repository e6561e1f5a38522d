"""A recording as a regression test (`plldb replay ID --to-test FOLDER`).

The test written is plain pytest that needs no plldb: it loads the recorded event from a JSON file
beside it, imports the handler as Lambda does (its code folder, then its layers, first on sys.path),
sets the variables Lambda would set for that invocation from the recording and the template (never
the recorded values, which may be secrets: the file is meant to be committed), and asserts the
recorded result or the recorded error's type and message.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plldb.errors import PlldbError
from plldb.local.recordings import Recording, as_int
from plldb.local.worker import lambda_runtime_variable, never_from_invocation

_TEST_TEMPLATE = '''\
"""{docstring}
"""

import importlib
import json
import sys
import time
{decimal_import}from pathlib import Path
from types import SimpleNamespace

import pytest

HERE = Path(__file__).resolve().parent
EVENT_FILE = HERE / {event_file}
{expected_constants}
CODE_DIR = (HERE / {code_dir}).resolve()
# The function's layers, in the order Lambda searches them.
LAYER_DIRS = [{layer_dirs}]
HANDLER = {handler}
# The function's variables as the template gives them, and what Lambda sets for the invocation.
ENVIRONMENT = {environment}
{unset_note}REQUEST_ID = {request_id}
CONTEXT = {context}
DEADLINE_BUDGET_MS = {budget}


def _layer_paths(layer_dir):
    """What a layer puts on sys.path, as Lambda unpacks it under /opt."""
    python_dir = layer_dir / "python"
    if not python_dir.is_dir():
        return [layer_dir]
    version = f"python{{sys.version_info[0]}}.{{sys.version_info[1]}}"
    site_packages = python_dir / "lib" / version / "site-packages"
    return [site_packages, python_dir] if site_packages.is_dir() else [python_dir]


def _header(value):
    return json.loads(value) if isinstance(value, str) else value


class LambdaContext:
    """The recorded invocation's context, with the attributes of the Lambda Python runtime's."""

    def __init__(self):
        client_context = _header(CONTEXT["clientContext"])
        identity = _header(CONTEXT["cognitoIdentity"]) or {{}}
        self.aws_request_id = REQUEST_ID
        self.function_name = ENVIRONMENT["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = ENVIRONMENT["AWS_LAMBDA_FUNCTION_VERSION"]
        self.memory_limit_in_mb = ENVIRONMENT["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.log_group_name = ENVIRONMENT["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = ENVIRONMENT.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.invoked_function_arn = CONTEXT["invokedFunctionArn"]
        self.tenant_id = CONTEXT["tenantId"]
        self.identity = SimpleNamespace(
            cognito_identity_id=identity.get("cognitoIdentityId"),
            cognito_identity_pool_id=identity.get("cognitoIdentityPoolId"),
        )
        self.client_context = None
        if client_context is not None:
            client = client_context.get("client")
            self.client_context = SimpleNamespace(
                custom=client_context.get("custom"),
                env=client_context.get("env"),
                client=None if client is None else SimpleNamespace(
                    installation_id=client.get("installation_id"),
                    app_title=client.get("app_title"),
                    app_version_name=client.get("app_version_name"),
                    app_version_code=client.get("app_version_code"),
                    app_package_name=client.get("app_package_name"),
                ),
            )
        self._deadline_ms = int(time.time() * 1000) + (DEADLINE_BUDGET_MS or 0)

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def log(self, message):
        sys.stdout.write(str(message))


@pytest.fixture
def handler(monkeypatch):
    """The handler, imported afresh; sys.path and sys.modules are put back afterwards."""
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(CODE_DIR))
    module_name, _, function_name = HANDLER.rpartition(".")
    module_name = module_name.replace("/", ".")
    top = module_name.split(".")[0]
    saved_path = list(sys.path)
    saved_modules = dict(sys.modules)
    for name in [name for name in sys.modules if name == top or name.startswith(top + ".")]:
        del sys.modules[name]
    sys.path[:0] = [str(CODE_DIR)] + [str(path) for layer in LAYER_DIRS for path in _layer_paths(layer)]
    importlib.invalidate_caches()
    try:
        yield getattr(importlib.import_module(module_name), function_name)
    finally:
        sys.path[:] = saved_path
        for name in [name for name in sys.modules if name not in saved_modules]:
            del sys.modules[name]
        sys.modules.update(saved_modules)


{assertion}
'''

_OK_CONSTANTS = "RESULT_FILE = HERE / {result_file}"
_ERROR_CONSTANTS = "ERROR_TYPE = {error_type}\nERROR_MESSAGE = {error_message}"

_OK_ASSERTION = '''\
def _plain(value):
    """The result as the Lambda runtime's encoder sees it: exact Decimals, bytes as text, named tuples
    as objects."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "_asdict"):
        return _plain(value._asdict())
    if isinstance(value, dict):
        return {{key: _plain(item) for key, item in value.items()}}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def test_{name}(handler):
    event = json.loads(EVENT_FILE.read_text(encoding="utf-8"))
    result = handler(event, LambdaContext())
    assert json.loads(json.dumps(_plain(result))) == json.loads(RESULT_FILE.read_text(encoding="utf-8"))
'''

_ERROR_ASSERTION = """\
def test_{name}(handler):
    event = json.loads(EVENT_FILE.read_text(encoding="utf-8"))
    context = LambdaContext()
    with pytest.raises(Exception) as raised:
        handler(event, context)
    assert type(raised.value).__name__ == ERROR_TYPE
    assert str(raised.value) == ERROR_MESSAGE
"""


@dataclass(frozen=True)
class GeneratedTest:
    test_file: Path
    event_file: Path
    result_file: Path | None


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower() or "function"


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).absolute(), start)).as_posix()


def _region(arn: Any) -> str | None:
    parts = arn.split(":") if isinstance(arn, str) else []
    return parts[3] if len(parts) > 4 and parts[0] == "arn" and parts[3] else None


def regression_test_environment(
    recording: Recording, template_variables: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """(the variables the generated test sets, the function's variables it cannot give a value).

    The template's values only: recorded values (attach --record-env) may be secrets, and the test
    is a file meant to be committed.
    """
    context = recording.context
    function = recording.function
    region = _region(context.get("invokedFunctionArn")) or "us-east-1"
    name = recording.function_name or recording.logical_id.rsplit("/", 1)[-1]
    environment = {str(k): str(v) for k, v in template_variables.items() if not never_from_invocation(str(k))}
    environment.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_VERSION": str(function.get("version") or "$LATEST"),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.get("memoryMB") or 128),
            "AWS_LAMBDA_LOG_GROUP_NAME": str(context.get("logGroupName") or f"/aws/lambda/{name}"),
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "_HANDLER": str(function.get("handler") or ""),
        }
    )
    if context.get("logStreamName"):
        environment["AWS_LAMBDA_LOG_STREAM_NAME"] = str(context["logStreamName"])
    unset = sorted(
        name
        for name in recording.environment_names
        if name not in environment and not lambda_runtime_variable(name)
    )
    return environment, unset


def write_regression_test(
    recording: Recording,
    *,
    code_dir: Path,
    handler: str,
    layer_dirs: Sequence[Path],
    template_variables: Mapping[str, str],
    folder: Path,
) -> GeneratedTest:
    """Write a pytest file (and the event and expected result beside it) into ``folder``.

    Raises PlldbError, writing nothing, when the folder is missing, a file would be overwritten, or
    the recording failed in the runtime rather than in the handler (nothing a test can call).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PlldbError(
            f"The folder {folder} does not exist.", "Create it, or pass an existing folder to --to-test."
        )
    error = recording.error
    if not recording.ok and error is not None and str(error.get("errorType", "")).startswith("Runtime."):
        raise PlldbError(
            f"Recording {recording.id} failed in the Lambda runtime ({error.get('errorType')}: "
            f"{error.get('errorMessage')}), not in the handler: a test cannot call it.",
            "Choose a recording whose handler returned or raised.",
        )
    name = f"replay_{_slug(recording.logical_id)}_{_slug(recording.id)}"
    test_file = folder / f"test_{name}.py"
    event_file = folder / f"test_{name}.event.json"
    result_file = folder / f"test_{name}.result.json" if recording.ok else None
    for path in (test_file, event_file, result_file):
        if path is not None and path.exists():
            raise PlldbError(
                f"{path} already exists.", "Remove it first, or pass another folder to --to-test."
            )
    start = folder.absolute()
    environment, unset = regression_test_environment(recording, template_variables)
    context = recording.context
    unset_note = (
        "# The function has these variables in AWS, without a value in the template; set them if the\n"
        f"# handler needs them: {', '.join(unset)}.\n"
        if unset
        else ""
    )
    if recording.ok:
        constants = _OK_CONSTANTS.format(result_file=_literal(result_file.name if result_file else ""))
        assertion = _OK_ASSERTION.format(name=name)
        expectation = f"returns the recorded result ({result_file.name if result_file else ''})"
    else:
        error = error or {}
        constants = _ERROR_CONSTANTS.format(
            error_type=_literal(str(error.get("errorType"))),
            error_message=_literal(str(error.get("errorMessage"))),
        )
        assertion = _ERROR_ASSERTION.format(name=name)
        expectation = f"raises the recorded {error.get('errorType')} with its message"
    stack = f", stack {recording.stack}" if recording.stack else ""
    docstring = "\n\n".join(
        textwrap.fill(paragraph, width=100)
        for paragraph in (
            f"Regression test written by `plldb replay {recording.id} --to-test`.",
            f"Invocation {recording.request_id} of {recording.logical_id} ({recording.function_name}{stack}), "
            f"recorded {recording.document['recordedAt']}. The event is {event_file.name}, exactly as the "
            "function received it. The test imports the handler as Lambda does (its code folder, then its "
            f"layers, first on sys.path) and asserts that it {expectation}.",
        )
    )
    source = _TEST_TEMPLATE.format(
        docstring=docstring.replace("\\", "\\\\").replace('"""', '\\"\\"\\"'),
        event_file=_literal(event_file.name),
        expected_constants=constants,
        code_dir=_literal(_relative(code_dir, start)),
        layer_dirs=", ".join(
            f"(HERE / {_literal(_relative(layer, start))}).resolve()" for layer in reversed(layer_dirs)
        ),
        handler=_literal(handler),
        environment=_python_literal(environment),
        unset_note=unset_note,
        request_id=_literal(recording.request_id),
        context=_python_literal(
            {
                key: context.get(key)
                for key in ("invokedFunctionArn", "clientContext", "cognitoIdentity", "tenantId")
            }
        ),
        budget=_literal(as_int(context.get("deadlineBudgetMs"))),
        assertion=assertion,
        decimal_import="from decimal import Decimal\n" if recording.ok else "",
    )
    event_file.write_text(recording.event_json, encoding="utf-8")
    if result_file is not None:
        result_file.write_text(recording.result_json or "null", encoding="utf-8")
    test_file.write_text(source, encoding="utf-8")
    return GeneratedTest(test_file, event_file, result_file)


def _literal(value: Any) -> str:
    """Python source for a JSON value; strings in double quotes, as JSON writes them (valid Python)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(str(key))}: {_literal(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    return repr(value)


def _python_literal(value: dict[str, Any]) -> str:
    """A dict as Python source, one key per line."""
    if not value:
        return "{}"
    return "{\n" + "".join(f"    {_literal(key)}: {_literal(item)},\n" for key, item in value.items()) + "}"
