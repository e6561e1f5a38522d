"""The ``context`` object a handler receives, built as the Python runtime builds it from the Runtime
API's invocation headers."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from plldb.lambda_python.errors import LAMBDA_CONTEXT_UNMARSHAL_ERROR, FaultException


class CognitoIdentity:
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]
    cognito_identity_id: str | None
    cognito_identity_pool_id: str | None

    def __repr__(self) -> str:
        return f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id},cognito_identity_pool_id={self.cognito_identity_pool_id}])"


class Client:
    __slots__ = ["app_package_name", "app_title", "app_version_code", "app_version_name", "installation_id"]
    app_package_name: Any
    app_title: Any
    app_version_code: Any
    app_version_name: Any
    installation_id: Any

    def __repr__(self) -> str:
        return (
            f"Client([installation_id={self.installation_id},app_title={self.app_title},app_version_name={self.app_version_name},app_version_code={self.app_version_code},"
            f"app_package_name={self.app_package_name}])"
        )


class ClientContext:
    __slots__ = ["client", "custom", "env"]
    client: Any
    custom: Any
    env: Any

    def __repr__(self) -> str:
        return f"ClientContext([custom={self.custom},env={self.env},client={self.client}])"


def _object_from_dict(cls: Any, values: dict[str, Any] | None) -> Any:
    if values is None:
        return None
    instance = cls()
    for field in cls.__slots__:
        setattr(instance, field, values.get(field, None))
    return instance


W3C_ALLOWED_FIELDS = ("traceparent", "tracestate", "baggage")


class LambdaContext:
    """The ``context`` argument, with the attributes and methods of awslambdaric's LambdaContext."""

    def __init__(  # noqa: PLR0917 - awslambdaric's signature
        self,
        invoke_id: str,
        client_context: dict[str, Any] | None,
        cognito_identity: dict[str, Any] | None,
        epoch_deadline_time_in_ms: int,
        invoked_function_arn: str | None = None,
        tenant_id: str | None = None,
    ) -> None:
        self.aws_request_id = invoke_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id
        self._w3c_fields = self._extract_w3c(client_context)
        self.client_context = _object_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _object_from_dict(Client, self.client_context.client)
        self.identity = _object_from_dict(CognitoIdentity, {})
        if cognito_identity is not None:
            self.identity.cognito_identity_id = cognito_identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = cognito_identity.get("cognitoIdentityPoolId")
        self._epoch_deadline_time_in_ms = epoch_deadline_time_in_ms

    def get_remaining_time_in_millis(self) -> int:
        delta_ms = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return delta_ms if delta_ms > 0 else 0

    def w3c(self) -> dict[str, str]:
        return dict(self._w3c_fields)

    @staticmethod
    def _extract_w3c(client_context: Any) -> dict[str, str]:
        if not isinstance(client_context, dict) or "w3c" not in client_context:
            return {}
        raw = client_context.pop("w3c")
        if not isinstance(raw, dict):
            return {}
        return {key: raw[key] for key in W3C_ALLOWED_FIELDS if isinstance(raw.get(key), str)}

    def log(self, msg: Any) -> None:
        sys.stdout.write(str(msg))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},log_group_name={self.log_group_name},log_stream_name={self.log_stream_name},function_name={self.function_name},"
            f"memory_limit_in_mb={self.memory_limit_in_mb},function_version={self.function_version},invoked_function_arn={self.invoked_function_arn},client_context={self.client_context},"
            f"identity={self.identity},tenant_id={self.tenant_id}])"
        )


def _parse_json_header(header: str, name: str) -> Any:
    try:
        return json.loads(header)
    except Exception as exc:
        raise FaultException(LAMBDA_CONTEXT_UNMARSHAL_ERROR, f"Unable to parse {name} JSON: {exc}")


def create_lambda_context(  # noqa: PLR0917 - one argument per Runtime API header
    request_id: str,
    client_context_json: str | None,
    cognito_identity_json: str | None,
    deadline_ms: int,
    invoked_function_arn: str | None,
    tenant_id: str | None = None,
) -> LambdaContext:
    """The context awslambdaric builds from the Runtime API's invocation headers."""
    client_context = (
        _parse_json_header(client_context_json, "Client Context") if client_context_json else None
    )
    cognito_identity = (
        _parse_json_header(cognito_identity_json, "Cognito Identity") if cognito_identity_json else None
    )
    return LambdaContext(
        request_id, client_context, cognito_identity, deadline_ms, invoked_function_arn, tenant_id
    )
