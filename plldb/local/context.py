"""The ``context`` object a handler receives, as the AWS Python runtime builds it.

It mirrors awslambdaric's LambdaContext attribute for attribute (including ``memory_limit_in_mb``
being a string, as the runtime reads it from the environment), so code that inspects the context
behaves locally as it does in Lambda. Values come from the invocation's protocol ``context`` object,
the real deadline included, so ``get_remaining_time_in_millis()`` counts down to the cloud's deadline.
This module runs inside worker processes: standard library only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

W3C_FIELDS = ("traceparent", "tracestate", "baggage")


class ContextUnmarshalError(ValueError):
    """The client context or Cognito identity is not valid JSON (Runtime.LambdaContextUnmarshalError)."""


class CognitoIdentity:
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]

    def __init__(self, identity: Mapping[str, Any] | None = None) -> None:
        identity = identity or {}
        self.cognito_identity_id = identity.get("cognitoIdentityId")
        self.cognito_identity_pool_id = identity.get("cognitoIdentityPoolId")

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(["
            f"cognito_identity_id={self.cognito_identity_id},"
            f"cognito_identity_pool_id={self.cognito_identity_pool_id}"
            "])"
        )


class Client:
    __slots__ = ["app_package_name", "app_title", "app_version_code", "app_version_name", "installation_id"]

    def __init__(self, client: Mapping[str, Any]) -> None:
        self.installation_id = client.get("installation_id")
        self.app_title = client.get("app_title")
        self.app_version_name = client.get("app_version_name")
        self.app_version_code = client.get("app_version_code")
        self.app_package_name = client.get("app_package_name")

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(["
            f"installation_id={self.installation_id},"
            f"app_title={self.app_title},"
            f"app_version_name={self.app_version_name},"
            f"app_version_code={self.app_version_code},"
            f"app_package_name={self.app_package_name}"
            "])"
        )


class ClientContext:
    __slots__ = ["client", "custom", "env"]

    def __init__(self, client_context: Mapping[str, Any]) -> None:
        client = client_context.get("client")
        self.client = Client(client) if isinstance(client, Mapping) else client
        self.custom = client_context.get("custom")
        self.env = client_context.get("env")

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}([custom={self.custom},env={self.env},client={self.client}])"


def _parse_json_field(value: Any, name: str) -> Any:
    """The layer may forward the Runtime API headers as JSON text or already parsed."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ContextUnmarshalError(f"Unable to parse {name} JSON: {exc}")
    return value


class LambdaContext:
    """What awslambdaric passes as ``context``; built from the protocol's invoke ``context`` object."""

    def __init__(
        self,
        request_id: str,
        context: Mapping[str, Any],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        client_context = _parse_json_field(context.get("clientContext"), "Client Context")
        cognito_identity = _parse_json_field(context.get("cognitoIdentity"), "Cognito Identity")

        self.aws_request_id = request_id
        self.log_group_name = context.get("logGroupName") or environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = context.get("logStreamName") or environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = context.get("functionName") or environ.get("AWS_LAMBDA_FUNCTION_NAME")
        memory = context.get("memoryLimitInMB")
        self.memory_limit_in_mb = (
            str(memory) if memory is not None else environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        )
        self.function_version = context.get("functionVersion") or environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = context.get("invokedFunctionArn")
        self.tenant_id = context.get("tenantId")
        self._w3c_fields = self._extract_w3c(client_context)
        self.client_context = ClientContext(client_context) if isinstance(client_context, Mapping) else None
        self.identity = CognitoIdentity(cognito_identity if isinstance(cognito_identity, Mapping) else None)
        self._epoch_deadline_time_in_ms = int(context.get("deadlineMs") or 0)

    @staticmethod
    def _extract_w3c(client_context: Any) -> dict[str, str]:
        """The runtime moves ``w3c`` out of the client context into ``w3c()``; so do we."""
        if not isinstance(client_context, dict) or "w3c" not in client_context:
            return {}
        raw = client_context.pop("w3c")
        if not isinstance(raw, dict):
            return {}
        return {key: raw[key] for key in W3C_FIELDS if isinstance(raw.get(key), str)}

    def get_remaining_time_in_millis(self) -> int:
        remaining = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return remaining if remaining > 0 else 0

    def w3c(self) -> dict[str, str]:
        return dict(self._w3c_fields)

    def log(self, msg: Any) -> None:
        """Write to the function's log as the runtime does: no newline added."""
        for handler in logging.getLogger().handlers:
            sink = getattr(handler, "log_sink", None)
            if sink is not None:
                sink.log(str(msg))
                return
        sys.stdout.write(str(msg))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(["
            f"aws_request_id={self.aws_request_id},"
            f"log_group_name={self.log_group_name},"
            f"log_stream_name={self.log_stream_name},"
            f"function_name={self.function_name},"
            f"memory_limit_in_mb={self.memory_limit_in_mb},"
            f"function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn},"
            f"client_context={self.client_context},"
            f"identity={self.identity},"
            f"tenant_id={self.tenant_id}"
            "])"
        )
