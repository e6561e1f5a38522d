"""The handler's environment variables, from an allowlist: no forged or stale variable steers the worker.

An invocation's variables come from the cloud (the deployed function's configuration, as the layer
reports it). Only Lambda's defined runtime variables and the function's own configured variables are
taken from it, never a name that would change how the interpreter, the dynamic loader, the network or
the AWS SDK behave on the developer's machine; of the developer's own variables only what running here
needs. docs/local-side.md explains the rules; tests/local/test_worker_environment.py proves them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from plldb import protocol
from plldb.local import debuggers
from plldb.local.debuggers import DebuggerConfig
from plldb.local.invocation import Invocation
from plldb.local.template import LocalFunction
from plldb.local.worker.runtime_plan import version_tag

# Lambda's "Defined runtime environment variables" (Lambda Developer Guide, "Working with Lambda
# environment variables"): the reserved ones a runtime sets, the unreserved TZ, X-Ray's and the
# advanced logging controls' variables. Their values come from the invocation. The credentials
# (AWS_ACCESS_KEY_ID, ...) come separately; AWS_LAMBDA_RUNTIME_API describes the cloud's runtime.
LAMBDA_RUNTIME_VARIABLES = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_LOG_FORMAT",
        "AWS_LAMBDA_LOG_LEVEL",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
        "TZ",
    }
)
LAMBDA_RUNTIME_PREFIXES = ("AWS_XRAY_",)
# Never taken from an invocation, whatever it says: they would change how the interpreter, the
# dynamic loader, the network or the AWS SDK behave on the developer's machine.
NEVER_FROM_INVOCATION = frozenset(
    {
        "AWS_CA_BUNDLE",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_LAMBDA_RUNTIME_API",
        # How the process trusts TLS, loads code or finds credentials: only ever the developer's own.
        "GCONV_PATH",
        "BASH_ENV",
        "ENV",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SSLKEYLOGFILE",
        "AWS_DATA_PATH",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        *protocol.CREDENTIAL_VARIABLES,
        *protocol.INSTRUMENTATION_VARIABLES,
    }
)
NEVER_FROM_INVOCATION_PREFIXES = (
    "LD_",
    "DYLD_",
    "PYTHON",
    "AWS_ENDPOINT_URL",
    "AWS_CONTAINER_",
    "AWS_EC2_METADATA_",
    "_LAMBDA_",
    "OPENSSL_",
    "SSL_CERT_",
)
NEVER_FROM_INVOCATION_SUFFIXES = ("_PROXY",)
# What running here needs from the developer's own environment; never from an invocation either.
LOCAL_VARIABLES = frozenset({"PATH", "HOME", "LANG", "TERM", "TMPDIR"})
LOCAL_PREFIXES = ("LC_",)
# The developer's AWS endpoint and CA settings, needed to reach AWS from here.
LOCAL_AWS_ACCESS_VARIABLES = frozenset({"AWS_CA_BUNDLE"})
LOCAL_AWS_ACCESS_PREFIXES = ("AWS_ENDPOINT_URL",)
# With --local-credentials, what the AWS SDK's credential chain reads from the developer's environment.
LOCAL_CREDENTIAL_VARIABLES = frozenset(
    {
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_EC2_METADATA_DISABLED",
    }
)
# Variables that may differ between invocations without making a new execution environment.
PER_INVOCATION_VARIABLES = (*protocol.CREDENTIAL_VARIABLES, "_X_AMZN_TRACE_ID", "AWS_LAMBDA_LOG_STREAM_NAME")


def never_from_invocation(name: str) -> bool:
    """Whether an invocation may never set this variable in the handler's environment."""
    upper = name.upper()
    return (
        name in NEVER_FROM_INVOCATION
        or name in LOCAL_VARIABLES
        or upper.startswith(NEVER_FROM_INVOCATION_PREFIXES)
        or upper.startswith(LOCAL_PREFIXES)
        or upper.endswith(NEVER_FROM_INVOCATION_SUFFIXES)
    )


def lambda_runtime_variable(name: str) -> bool:
    return name in LAMBDA_RUNTIME_VARIABLES or name.startswith(LAMBDA_RUNTIME_PREFIXES)


def local_variables(parent: Mapping[str, str], local_credentials: bool) -> dict[str, str]:
    """What the handler gets from the developer's environment: what running here needs."""
    kept = {}
    for name, value in parent.items():
        if (
            name in LOCAL_VARIABLES
            or name.startswith(LOCAL_PREFIXES)
            or name in LOCAL_AWS_ACCESS_VARIABLES
            or name.startswith(LOCAL_AWS_ACCESS_PREFIXES)
            or (local_credentials and name in LOCAL_CREDENTIAL_VARIABLES)
        ):
            kept[name] = value
    return kept


def configured_variable_names(function: LocalFunction, invocation: Invocation) -> frozenset[str]:
    """The function's own variables: as the caller says, else as its template declares them."""
    if invocation.configured_variables is not None:
        return frozenset(invocation.configured_variables)
    return frozenset(function.environment) | function.environment_names


def worker_environment(
    function: LocalFunction,
    invocation: Invocation,
    local_credentials: bool = False,
    debugger: DebuggerConfig | None = None,
    parent_environ: Mapping[str, str] | None = None,
    *,
    runtime: str | None = None,
) -> tuple[dict[str, str], dict[str, str | None]]:
    """The handler's environment: (variables fixed for the worker's life, variables set per invocation).

    Built from an allowlist: (a) Lambda's defined runtime variables and (b) the function's own
    configured variables, both with their values from the invocation, except names that no
    invocation may set (``never_from_invocation``); then what plldb computes for this machine
    (``_HANDLER``, ``LAMBDA_TASK_ROOT`` and the names and sizes from the context); then the
    developer's PATH, HOME, locale, TERM, TMPDIR and AWS endpoint/CA settings, and with
    ``local_credentials`` their AWS credential settings. The execution role's credentials are set
    per invocation (unless ``local_credentials``).
    """
    parent = dict(os.environ if parent_environ is None else parent_environ)
    configured = configured_variable_names(function, invocation)
    deployed = {
        name: value
        for name, value in invocation.environment.items()
        if isinstance(name, str)
        and isinstance(value, str)
        and (lambda_runtime_variable(name) or name in configured)
        and not never_from_invocation(name)
    }
    environment = dict(deployed)
    context = invocation.context
    function_name = str(
        context.get("functionName")
        or deployed.get("AWS_LAMBDA_FUNCTION_NAME")
        or function.logical_id.split("/")[-1]
    )
    region = (
        deployed.get("AWS_REGION")
        or _arn_region(context.get("invokedFunctionArn"))
        or parent.get("AWS_REGION")
        or parent.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    memory = context.get("memoryLimitInMB") or function.memory_size or 128
    runtime = function.runtime or runtime or version_tag(sys.version_info[:2])
    environment.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": str(context.get("functionVersion") or "$LATEST"),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": str(context.get("logGroupName") or f"/aws/lambda/{function_name}"),
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": deployed.get("AWS_DEFAULT_REGION", region),
            "_HANDLER": function.handler,
            "LAMBDA_TASK_ROOT": str(function.code_dir),
            "AWS_EXECUTION_ENV": deployed.get("AWS_EXECUTION_ENV") or f"AWS_Lambda_{runtime}",
        }
    )
    environment.update(local_variables(parent, local_credentials))
    environment.update(debuggers.worker_environment(debugger))
    per_invocation: dict[str, str | None] = {
        "AWS_LAMBDA_LOG_STREAM_NAME": context.get("logStreamName")
        or deployed.get("AWS_LAMBDA_LOG_STREAM_NAME"),
        "_X_AMZN_TRACE_ID": context.get("traceId") or None,
    }
    if not local_credentials:
        credentials = invocation.credentials or {}
        per_invocation["AWS_ACCESS_KEY_ID"] = credentials.get("accessKeyId")
        per_invocation["AWS_SECRET_ACCESS_KEY"] = credentials.get("secretAccessKey")
        per_invocation["AWS_SESSION_TOKEN"] = credentials.get("sessionToken")
    for name in PER_INVOCATION_VARIABLES:
        if name in per_invocation:
            environment.pop(name, None)
    return environment, per_invocation


def _arn_region(arn: Any) -> str | None:
    parts = arn.split(":") if isinstance(arn, str) else []
    return parts[3] if len(parts) > 4 and parts[0] == "arn" and parts[3] else None
