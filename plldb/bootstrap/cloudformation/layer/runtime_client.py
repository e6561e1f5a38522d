"""A client of the Lambda Runtime API (AWS_LAMBDA_RUNTIME_API) over one persistent HTTP connection.

Every invocation costs a /next and a /response round trip on the hot path, so the connection is kept
open rather than reopened for each call (awslambdaric's Python fallback opens one per call).
"""

from __future__ import annotations

import http.client
import time
from typing import Any

from plldb.lambda_python import to_json

API_VERSION = "2018-06-01"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
_STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected,
    http.client.CannotSendRequest,
    ConnectionResetError,
    BrokenPipeError,
)


class RuntimeApiError(Exception):
    """The Runtime API refused a call (for example a response larger than Lambda allows)."""

    def __init__(self, path: str, status: int, body: bytes) -> None:
        super().__init__(
            "Lambda Runtime API {} answered {}: {}".format(
                path, status, body[:500].decode("utf-8", "replace")
            )
        )
        self.path = path
        self.status = status
        self.body = body


class Invocation:
    """One invocation as /next hands it over: the event body and the headers that describe it."""

    def __init__(self, body: bytes, headers: Any) -> None:
        self.body = body
        self.received_at_ms = int(time.time() * 1000)
        self.request_id = headers.get("Lambda-Runtime-Aws-Request-Id") or ""
        deadline = headers.get("Lambda-Runtime-Deadline-Ms")
        self.deadline_ms = int(deadline) if deadline else 0
        self.invoked_function_arn: str | None = headers.get("Lambda-Runtime-Invoked-Function-Arn")
        self.trace_id: str | None = headers.get("Lambda-Runtime-Trace-Id")
        self.client_context: str | None = headers.get("Lambda-Runtime-Client-Context")
        self.cognito_identity: str | None = headers.get("Lambda-Runtime-Cognito-Identity")
        self.tenant_id: str | None = headers.get("Lambda-Runtime-Aws-Tenant-Id")
        self.content_type: str | None = headers.get("Content-Type")


class RuntimeApiClient:
    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"AWS_LAMBDA_RUNTIME_API must be host:port, got {address!r}")
        self._host = host
        self._port = int(port)
        self._connection: http.client.HTTPConnection | None = None
        self._used = False

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str | bytes] | None = None,
    ) -> http.client.HTTPResponse:
        """One request; a kept-alive connection the server has since closed is reopened once."""
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self._host, self._port, timeout=None)
                self._used = False
            try:
                self._connection.request(method, path, body=body, headers=headers or {})
                response = self._connection.getresponse()
                response_body = response.read()
            except _STALE_CONNECTION_ERRORS:
                reused = self._used
                self.close()
                if attempt == 2 or not reused:
                    raise
                continue
            self._used = True
            response.body = response_body  # type: ignore[attr-defined]
            if response.will_close:
                self.close()
            return response
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def next_invocation(self) -> Invocation:
        """Block until Lambda has the next invocation for this environment."""
        path = f"/{API_VERSION}/runtime/invocation/next"
        response = self._call("GET", path)
        if response.status != 200:
            raise RuntimeApiError(path, response.status, response.body)  # type: ignore[attr-defined]
        return Invocation(response.body, response.headers)  # type: ignore[attr-defined]

    def post_response(self, request_id: str, body: bytes, content_type: str = "application/json") -> None:
        path = f"/{API_VERSION}/runtime/invocation/{request_id}/response"
        self._expect_accepted(path, body, {"Content-Type": content_type})

    def post_error(self, request_id: str, error: dict[str, Any], error_type: str | None = None) -> None:
        """Report a function error; Lambda hands ``error`` to the invoker with FunctionError Unhandled."""
        path = f"/{API_VERSION}/runtime/invocation/{request_id}/error"
        self._expect_accepted(path, _error_body(error), _error_headers(error, error_type))

    def post_init_error(self, error: dict[str, Any], error_type: str | None = None) -> None:
        path = f"/{API_VERSION}/runtime/init/error"
        self._expect_accepted(path, _error_body(error), _error_headers(error, error_type))

    def _expect_accepted(self, path: str, body: bytes, headers: dict[str, str | bytes]) -> None:
        response = self._call("POST", path, body, headers)
        if response.status != 202:
            raise RuntimeApiError(path, response.status, response.body)  # type: ignore[attr-defined]


def _error_body(error: dict[str, Any]) -> bytes:
    """The error document serialised as awslambdaric serialises it, so invokers see identical bytes."""
    return to_json(error).encode("utf-8")


def _error_headers(error: dict[str, Any], error_type: str | None) -> dict[str, str | bytes]:
    # Bytes, because an exception class name may be any identifier, not only Latin-1.
    name = error_type or str(error.get("errorType") or "Unhandled")
    return {"Content-Type": "application/json", ERROR_TYPE_HEADER: name.encode("utf-8")}
