"""The ``context`` object a handler receives on the developer's machine.

The context itself is the layer's (``lambda_python.LambdaContext``, awslambdaric's class reproduced),
so a handler sees the same object locally and in the cloud. The only local concern is the input: the
layer forwards the Runtime API's invocation headers inside the protocol's ``context`` object, while
the names, version, memory and log names reach the worker as the environment variables the runtime
reads them from (see plldb.local.worker.variables.worker_environment). This module runs inside worker
processes: standard library and plldb's standard-library-only modules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from plldb.lambda_python import LambdaContext, create_lambda_context


def _header_text(value: Any) -> str | None:
    """The header as the Runtime API sends it: JSON text. A value already parsed is encoded again."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def lambda_context(request_id: str, fields: Mapping[str, Any]) -> LambdaContext:
    """The runtime's context for one invocation, from the protocol's invoke ``context`` object.

    Raises ``FaultException`` (Runtime.LambdaContextUnmarshalError) when the client context or the
    Cognito identity is not valid JSON, as the runtime does.
    """
    return create_lambda_context(
        request_id,
        _header_text(fields.get("clientContext")),
        _header_text(fields.get("cognitoIdentity")),
        int(fields.get("deadlineMs") or 0),
        fields.get("invokedFunctionArn"),
        fields.get("tenantId"),
    )
