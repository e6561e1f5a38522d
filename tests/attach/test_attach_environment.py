"""Which of a function's cloud variables its local run may take (plldb/local/environment.py).

The environment an `invoke` message carries is hostile by assumption; so is the function's configuration
(whoever may configure the function is not necessarily the developer). The local process starts with
what passes, on the developer's machine: nothing that loads code, reroutes the network or supplies
credentials may ever pass; Lambda's own variables and the function's own do.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from plldb import protocol
from plldb.local.environment import LAMBDA_DEFINED_VARIABLES, allowed_environment

# Lambda developer guide, "Defined runtime environment variables" (the ones meaningful to a local run).
DOCUMENTED_LAMBDA_VARIABLES = (
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
    "AWS_XRAY_CONTEXT_MISSING",
    "AWS_XRAY_DAEMON_ADDRESS",
    "TZ",
)
# Names that change how a process loads code, reaches the network, or finds credentials (any case).
HOSTILE_PREFIXES = (
    "LD_",
    "DYLD_",
    "PYTHON",
    "OPENSSL_",
    "AWS_ENDPOINT_URL",
    "AWS_CONTAINER_",
    "AWS_EC2_METADATA_",
)
HOSTILE_PREFIXES += ("SSL_CERT_",)
HOSTILE_NAMES = frozenset(
    {
        "AWS_CA_BUNDLE",
        "AWS_CONFIG_FILE",
        "AWS_DATA_PATH",
        "AWS_DEFAULT_PROFILE",
        "AWS_LAMBDA_EXEC_WRAPPER",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "BASH_ENV",
        "CURL_CA_BUNDLE",
        "GCONV_PATH",
        "HOME",
        "LAMBDA_RUNTIME_DIR",
        "LAMBDA_TASK_ROOT",
        "PATH",
        "REQUESTS_CA_BUNDLE",
        "SSLKEYLOGFILE",
    }
)
# Credentials (as botocore reads them: exact names) and plldb's own variables.
CREDENTIALS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_ACCESS_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)
EXACT_HOSTILE = frozenset(CREDENTIALS) | frozenset(protocol.INSTRUMENTATION_VARIABLES)
HOSTILE_EXAMPLES = (
    *sorted(HOSTILE_NAMES),
    *sorted(EXACT_HOSTILE),
    "LD_PRELOAD",
    "LD_AUDIT",
    "LD_LIBRARY_PATH",
    "DYLD_INSERT_LIBRARIES",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONWARNINGS",
    "PYTHONBREAKPOINT",
    "PYTHONINSPECT",
    "OPENSSL_CONF",
    "OPENSSL_MODULES",
    "HTTP_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "NO_PROXY",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


def hostile(name: str) -> bool:
    upper = name.upper()
    return (
        name in EXACT_HOSTILE
        or upper in HOSTILE_NAMES
        or upper.startswith(HOSTILE_PREFIXES)
        or upper.endswith("_PROXY")
    )


def any_case(name: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(name), max_size=len(name))
    return flips.map(lambda lower: "".join(c.lower() if f else c for c, f in zip(name, lower, strict=True)))


names = st.one_of(
    st.sampled_from(HOSTILE_EXAMPLES),
    st.sampled_from(HOSTILE_EXAMPLES).flatmap(any_case),
    st.sampled_from(HOSTILE_PREFIXES).flatmap(
        lambda prefix: st.from_regex(rf"{prefix}[A-Z0-9_]{{0,12}}", fullmatch=True)
    ),
    st.sampled_from(DOCUMENTED_LAMBDA_VARIABLES),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,24}", fullmatch=True),
    st.text(max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(environment=st.dictionaries(names, st.text(max_size=20), max_size=30), own=st.sets(names, max_size=15))
def test_nothing_denied_ever_passes_and_lambdas_own_and_the_functions_own_variables_do(
    environment: dict[str, str], own: set[str]
) -> None:
    allowed = allowed_environment(environment, own)

    assert not [name for name in allowed if hostile(name)]
    assert allowed == {name: environment[name] for name in allowed}  # values untouched, nothing added
    assert set(allowed) == {
        name
        for name in environment
        if (name in LAMBDA_DEFINED_VARIABLES or name in own) and not hostile(name)
    }
    assert set(DOCUMENTED_LAMBDA_VARIABLES) <= LAMBDA_DEFINED_VARIABLES


def test_every_documented_lambda_variable_passes_and_a_function_cannot_reclaim_a_denied_one() -> None:
    environment = {name: f"value of {name}" for name in (*DOCUMENTED_LAMBDA_VARIABLES, *HOSTILE_EXAMPLES)}
    environment.update({"TABLE": "orders", "ENV": "prod", "UNCONFIGURED": "injected by the message"})
    own = {"TABLE", "ENV", *HOSTILE_EXAMPLES}  # a configuration that names every dangerous variable
    assert allowed_environment(environment, own) == {
        **{name: f"value of {name}" for name in DOCUMENTED_LAMBDA_VARIABLES},
        "TABLE": "orders",
        "ENV": "prod",
    }
