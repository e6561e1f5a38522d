"""Which of a function's cloud variables its local run may take: an allowlist, not a denylist.

A message from the cloud names the variables of the function's environment. Only two kinds reach the
handler here: the variables Lambda itself defines for every Python function ("Defined runtime
environment variables" in the Lambda developer guide) and the function's own configured variables, as
the developer's plldb read them from the function's configuration with the developer's credentials.
Whatever a message says, nothing that changes how a process loads code or reaches the network
(``LD_*``, ``PYTHON*``, proxies, AWS endpoints and CA bundles, AWS profiles and config files, any
credential) is ever taken from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from plldb import protocol

LAMBDA_DEFINED_VARIABLES = frozenset(
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
        "AWS_XRAY_CONTEXT_MISSING",
        "AWS_XRAY_DAEMON_ADDRESS",
        "TZ",
    }
)
NEVER_FROM_A_MESSAGE = re.compile(
    r"^(LD_.*|DYLD_.*|PYTHON.*|.*_PROXY|AWS_ENDPOINT_URL.*|AWS_CA_BUNDLE|AWS_PROFILE|AWS_DEFAULT_PROFILE|"
    r"AWS_CONFIG_FILE|AWS_SHARED_CREDENTIALS_FILE|AWS_CONTAINER_.*|AWS_LAMBDA_RUNTIME_API|"
    r"AWS_LAMBDA_EXEC_WRAPPER|LAMBDA_TASK_ROOT|LAMBDA_RUNTIME_DIR|PATH|HOME|SSL_CERT_.*|REQUESTS_CA_BUNDLE|"
    r"CURL_CA_BUNDLE)$",
    re.IGNORECASE,
)


def allowed_environment(environment: Mapping[str, str], own_variables: Iterable[str]) -> dict[str, str]:
    """The variables of ``environment`` a local run may take: Lambda's own and the function's own."""
    allowed = LAMBDA_DEFINED_VARIABLES | frozenset(own_variables)
    hidden = set(protocol.CREDENTIAL_VARIABLES) | set(protocol.INSTRUMENTATION_VARIABLES)
    return {
        name: value
        for name, value in environment.items()
        if name in allowed
        and name not in hidden
        and not NEVER_FROM_A_MESSAGE.match(name)
        and isinstance(value, str)
    }
