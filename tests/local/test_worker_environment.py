"""The handler's environment variables: built from an allowlist, whatever the message or the developer has.

Allowed: Lambda's defined runtime variables and the function's own configured variables, with values
from the invocation; plldb's computed values for this machine; the developer's PATH, HOME, locale,
TERM, TMPDIR and AWS endpoint/CA settings (and credential settings with --local-credentials).
"""

from __future__ import annotations

import json
import os
import textwrap
import time
import uuid
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from plldb.local.invocation import Invocation
from plldb.local.template import LocalFunction
from plldb.local.worker import WorkerPool
from plldb.local.worker.variables import (
    LAMBDA_RUNTIME_VARIABLES,
    LOCAL_CREDENTIAL_VARIABLES,
    never_from_invocation,
    worker_environment,
)

CONTEXT = {
    "functionName": "orders-fn",
    "functionVersion": "7",
    "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:orders-fn:live",
    "memoryLimitInMB": 512,
    "logGroupName": "/aws/lambda/orders-fn",
    "logStreamName": "2026/01/01/[7]abc",
    "traceId": "Root=1-65f0a8b2-0123456789abcdef01234567;Sampled=1",
}
COMPUTED = {
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "_HANDLER",
    "LAMBDA_TASK_ROOT",
    "AWS_EXECUTION_ENV",
}
ROLE = {"accessKeyId": "ASIAROLE", "secretAccessKey": "role-secret", "sessionToken": "role-token"}


def function(tmp_path: Path, names: frozenset[str] = frozenset()) -> LocalFunction:
    return LocalFunction(
        "Orders", tmp_path, "app.handler", "python3.12", {}, [], 3, 128, environment_names=names
    )


def invocation(
    environment: dict[str, str], configured: frozenset[str] | None = None, **context
) -> Invocation:
    return Invocation(
        str(uuid.uuid4()),
        "{}",
        {**CONTEXT, **context},
        environment,
        dict(ROLE),
        configured_variables=configured,
    )


def test_the_allowlist_takes_lambdas_variables_and_the_functions_own_from_the_invocation(tmp_path):
    message = {
        "TABLE": "orders",  # configured by the function
        "TZ": ":UTC",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": "DEBUG",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "AWS_REGION": "eu-west-1",
        "AWS_LAMBDA_MAX_CONCURRENCY": "10",  # neither Lambda's defined variable nor the function's
        "HOSTNAME": "169.254.10.1",
        "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "LANG": "en_US.UTF-8",
        "LD_LIBRARY_PATH": "/var/lang/lib:/lib64:/usr/lib64",
        "PYTHONPATH": "/var/runtime",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/plldb-debugger/wrapper",
        "_AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129",
    }
    developer = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/dev",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "xterm-256color",
        "TMPDIR": "/tmp/dev",
        "AWS_ENDPOINT_URL": "http://localhost:4566",
        "AWS_ENDPOINT_URL_DYNAMODB": "http://localhost:8000",
        "AWS_CA_BUNDLE": "/etc/ssl/corp.pem",
        "AWS_PROFILE": "developer",
        "AWS_ACCESS_KEY_ID": "AKIADEVELOPER",
        "GITHUB_TOKEN": "ghp_secret",
        "SSH_AUTH_SOCK": "/run/user/1000/ssh",
        "VIRTUAL_ENV": "/home/dev/project/.venv",
    }
    fixed, per_invocation = worker_environment(
        function(tmp_path, frozenset({"TABLE"})), invocation(message), parent_environ=developer
    )
    assert fixed == {
        "TABLE": "orders",
        "TZ": ":UTC",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": "DEBUG",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_LAMBDA_FUNCTION_NAME": "orders-fn",
        "AWS_LAMBDA_FUNCTION_VERSION": "7",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/orders-fn",
        "_HANDLER": "app.handler",
        "LAMBDA_TASK_ROOT": str(tmp_path),
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/dev",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "xterm-256color",
        "TMPDIR": "/tmp/dev",
        "AWS_ENDPOINT_URL": "http://localhost:4566",
        "AWS_ENDPOINT_URL_DYNAMODB": "http://localhost:8000",
        "AWS_CA_BUNDLE": "/etc/ssl/corp.pem",
    }
    assert per_invocation == {
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[7]abc",
        "_X_AMZN_TRACE_ID": "Root=1-65f0a8b2-0123456789abcdef01234567;Sampled=1",
        "AWS_ACCESS_KEY_ID": "ASIAROLE",
        "AWS_SECRET_ACCESS_KEY": "role-secret",
        "AWS_SESSION_TOKEN": "role-token",
    }


def test_a_function_configuring_dangerous_names_does_not_get_them_from_the_message(tmp_path):
    dangerous = {
        "LD_PRELOAD": "/tmp/evil.so",
        "PYTHONSTARTUP": "/tmp/evil.py",
        "PYTHONPATH": "/tmp/evil",
        "HTTPS_PROXY": "http://evil:3128",
        "no_proxy": "*",
        "AWS_ENDPOINT_URL_S3": "http://evil",
        "AWS_CA_BUNDLE": "/tmp/evil.pem",
        "AWS_PROFILE": "evil",
        "AWS_CONFIG_FILE": "/tmp/evil-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/tmp/evil-credentials",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://evil/credentials",
        "AWS_LAMBDA_RUNTIME_API": "evil:9001",
        "AWS_ACCESS_KEY_ID": "AKIAEVIL",
        "PATH": "/tmp/evil/bin",
        "HOME": "/tmp/evil",
    }
    fixed, per_invocation = worker_environment(
        function(tmp_path), invocation(dangerous, configured=frozenset(dangerous)), parent_environ={}
    )
    assert not set(fixed) & set(dangerous)
    assert per_invocation["AWS_ACCESS_KEY_ID"] == "ASIAROLE"


def test_local_credentials_keep_the_developers_credential_settings_only(tmp_path):
    developer = {
        "AWS_PROFILE": "developer",
        "AWS_CONFIG_FILE": "/home/dev/.aws/config",
        "AWS_ACCESS_KEY_ID": "AKIADEVELOPER",
        "AWS_SECRET_ACCESS_KEY": "developer-secret",
        "AWS_REGION": "us-west-2",
        "DATABASE_PASSWORD": "hunter2",
    }
    fixed, per_invocation = worker_environment(
        function(tmp_path),
        invocation({}, invokedFunctionArn=None),
        local_credentials=True,
        parent_environ=developer,
    )
    assert {name: fixed[name] for name in fixed if name.startswith("AWS_") and name not in COMPUTED} == {
        "AWS_PROFILE": "developer",
        "AWS_CONFIG_FILE": "/home/dev/.aws/config",
        "AWS_ACCESS_KEY_ID": "AKIADEVELOPER",
        "AWS_SECRET_ACCESS_KEY": "developer-secret",
    }
    assert fixed["AWS_REGION"] == "us-west-2"  # no region in the invocation: the developer's
    assert "DATABASE_PASSWORD" not in fixed
    assert "AWS_ACCESS_KEY_ID" not in per_invocation


def test_without_configured_names_the_templates_declared_variables_are_the_functions(tmp_path):
    declared = LocalFunction(
        "Orders",
        tmp_path,
        "app.handler",
        None,
        {"MODE": "x"},
        [],
        3,
        128,
        environment_names=frozenset({"TABLE"}),
    )
    fixed, _ = worker_environment(
        declared, invocation({"MODE": "live", "TABLE": "t", "OTHER": "o"}), parent_environ={}
    )
    assert (fixed["MODE"], fixed["TABLE"], "OTHER" in fixed) == ("live", "t", False)


# --- Property: random hostile environments -----------------------------------------------------------
HOSTILE = [
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "DYLD_INSERT_LIBRARIES",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "PYTHONINSPECT",
    "HTTPS_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "NO_PROXY",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CA_BUNDLE",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_EXEC_WRAPPER",
    "_LAMBDA_TELEMETRY_LOG_FD",
    "PATH",
    "HOME",
    "LANG",
    "LC_CTYPE",
    "TERM",
    "TMPDIR",
]
ORDINARY = ["TABLE", "STAGE", "GITHUB_TOKEN", "SSH_AUTH_SOCK", "VIRTUAL_ENV", "SECRET", "AWS_REGION", "TZ"]
NAMES = st.one_of(
    st.sampled_from(HOSTILE),
    st.sampled_from(ORDINARY),
    st.sampled_from(sorted(LAMBDA_RUNTIME_VARIABLES)),
    st.from_regex(r"(LD_|PYTHON|AWS_|_)?[A-Za-z][A-Za-z0-9_]{0,8}(_PROXY|_proxy)?", fullmatch=True),
)
DEVELOPER_NEEDS = {"PATH", "HOME", "LANG", "TERM", "TMPDIR", "AWS_CA_BUNDLE"}


def developer_may_set(name: str, local_credentials: bool) -> bool:
    return (
        name in DEVELOPER_NEEDS
        or name.startswith(("LC_", "AWS_ENDPOINT_URL"))
        or (local_credentials and name in LOCAL_CREDENTIAL_VARIABLES)
    )


@settings(max_examples=300, deadline=None)
@given(
    developer=st.dictionaries(NAMES, st.text(max_size=5).map(lambda v: "dev:" + v), max_size=12),
    message=st.dictionaries(NAMES, st.text(max_size=5).map(lambda v: "msg:" + v), max_size=12),
    configured=st.frozensets(NAMES, max_size=8),
    local_credentials=st.booleans(),
)
def test_no_hostile_environment_gets_past_the_allowlist(developer, message, configured, local_credentials):
    code_dir = Path("/work/orders")
    target = LocalFunction("Orders", code_dir, "app.handler", "python3.13", {}, [], 3, 128)
    fixed, per_invocation = worker_environment(
        target,
        invocation(message, configured=configured),
        local_credentials=local_credentials,
        parent_environ=developer,
    )
    handler_sees = {**fixed, **{k: v for k, v in per_invocation.items() if v is not None}}
    for name, value in handler_sees.items():
        if name in COMPUTED | {"AWS_LAMBDA_LOG_STREAM_NAME", "_X_AMZN_TRACE_ID"}:
            continue  # computed by plldb from the context, the local function and the region given
        if value.startswith("msg:"):
            # From the message: only Lambda's variables and the function's own, never a dangerous name.
            assert name in LAMBDA_RUNTIME_VARIABLES or name.startswith("AWS_XRAY_") or name in configured, (
                name
            )
            assert not never_from_invocation(name), name
            assert message[name] == value
        elif value.startswith("dev:"):
            # From the developer: only what running here needs.
            assert developer_may_set(name, local_credentials), name
            assert developer[name] == value
        elif name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            assert (
                not local_credentials
                and value
                == {
                    "AWS_ACCESS_KEY_ID": "ASIAROLE",
                    "AWS_SECRET_ACCESS_KEY": "role-secret",
                    "AWS_SESSION_TOKEN": "role-token",
                }[name]
            )
        else:
            raise AssertionError(f"{name}={value!r} came from neither the message nor the developer")
    for name in handler_sees:
        upper = name.upper()
        if upper.startswith(("LD_", "DYLD_", "PYTHON")) or upper.endswith("_PROXY"):
            raise AssertionError(f"{name} reached the handler")
    assert handler_sees["LAMBDA_TASK_ROOT"] == str(code_dir)
    assert handler_sees["_HANDLER"] == "app.handler"


# --- End to end: what a real worker's handler sees ---------------------------------------------------
ENVIRON = """
    import os


    def handler(event, context):
        return dict(os.environ)
"""


def test_the_handlers_os_environ_is_exactly_the_allowlisted_environment(tmp_path, monkeypatch):
    (tmp_path / "app.py").write_text(textwrap.dedent(ENVIRON))
    target = function(tmp_path, frozenset({"TABLE", "PYTHONWARNINGS"}))
    developer = {
        "PATH": os.environ["PATH"],
        "HOME": "/home/dev",
        "LANG": "C.UTF-8",
        "SECRET": "do-not-leak",
        "PYTHONPATH": "/home/dev/lib",
        "PYTHONSTARTUP": "/home/dev/startup.py",
        "HTTPS_PROXY": "http://proxy:3128",
    }
    message = {"TABLE": "orders", "PYTHONWARNINGS": "error", "LD_PRELOAD": "/tmp/evil.so", "TZ": ":UTC"}
    run = invocation(message, deadlineMs=int(time.time() * 1000) + 30_000)
    with WorkerPool(extra_sys_path=[], environ=developer) as pool:
        result = pool.run(target, run)
    assert result.status_code == 200, result.error
    fixed, per_invocation = worker_environment(target, run, parent_environ=developer)
    assert json.loads(result.payload) == {
        **fixed,
        **{k: v for k, v in per_invocation.items() if v is not None},
    }
    assert json.loads(result.payload)["TABLE"] == "orders"
    assert "PYTHONPATH" not in json.loads(result.payload)  # not even the one plldb used to start the worker
