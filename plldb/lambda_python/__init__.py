"""What the AWS Python runtime (awslambdaric) does around a handler, reproduced with the standard library.

Shared by plldb's layer (which replaces the runtime in the cloud, so everything a function or its
invoker can observe must stay as the runtime makes it) and the local worker (which must run a handler
exactly as Lambda would). awslambdaric itself is importable in neither place (only the standard library
and, in Lambda, boto3), so these modules follow its behaviour, split as it splits it; tests compare the
two side by side (tests/layer/test_layer_compat.py).

- ``errors``: the Runtime.* error types and the error document an invoker receives;
- ``handlers``: importing ``module.function``;
- ``context``: the ``context`` object;
- ``marshalling``: events in and results out, as the runtime's JSON encoder writes them;
- ``logs``: log lines in the text and JSON forms, and an invocation error as the runtime logs it.
"""

from __future__ import annotations

import os

from plldb.lambda_python.context import LambdaContext, create_lambda_context
from plldb.lambda_python.errors import (
    MARSHAL_ERROR,
    UNHANDLED_EXCEPTION_WARNING,
    FaultException,
    error_from_exception,
    make_error,
    user_stack_trace,
)
from plldb.lambda_python.handlers import load_handler
from plldb.lambda_python.logs import ERROR_LOG_IDENT, ERROR_LOG_LINE_TERMINATE, log_error, setup_logging
from plldb.lambda_python.marshalling import marshal_response, to_json, unmarshal_event

# This package's files: their frames are the runtime's, never shown in a handler's stack trace.
RUNTIME_FILES = tuple(
    sorted(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
        for name in os.listdir(os.path.dirname(os.path.abspath(__file__)))
        if name.endswith(".py")
    )
)

__all__ = [
    "ERROR_LOG_IDENT",
    "ERROR_LOG_LINE_TERMINATE",
    "MARSHAL_ERROR",
    "RUNTIME_FILES",
    "UNHANDLED_EXCEPTION_WARNING",
    "FaultException",
    "LambdaContext",
    "create_lambda_context",
    "error_from_exception",
    "load_handler",
    "log_error",
    "make_error",
    "marshal_response",
    "setup_logging",
    "to_json",
    "unmarshal_event",
    "user_stack_trace",
]
