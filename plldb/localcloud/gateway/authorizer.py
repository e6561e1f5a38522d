"""Who may open a connection: the ``$connect`` route's REQUEST authorizer (a Lambda function)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from plldb.localcloud.gateway.events import (
    Connection,
    Target,
    epoch_ms,
    lambda_arn,
    new_id,
    query_of,
    request_headers,
)

logger = logging.getLogger(__name__)


class LambdaFunctionError(Exception):
    """What ``invoke_lambda`` may raise when the function itself failed (Lambda's FunctionError).

    ``error`` is the function's error payload (errorMessage, errorType, ...). The gateway needs the
    message to tell an authorizer's deliberate "Unauthorized" (401) from a broken authorizer (500); any
    other exception with a ``payload`` attribute holding that JSON works as well.
    """

    def __init__(self, function_arn: str, error: Mapping[str, Any]) -> None:
        self.function_arn = function_arn
        self.error = dict(error)
        self.error_message = str(self.error.get("errorMessage", ""))
        self.error_type = str(self.error.get("errorType", ""))
        super().__init__(f"{function_arn} failed: {self.error_type}: {self.error_message}")


class Rejected(Exception):
    """The upgrade request is answered with an HTTP error instead of a WebSocket."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def _error_text(exc: BaseException) -> str:
    """The function's errorMessage: from LambdaFunctionError, or any error carrying Lambda's payload."""
    if isinstance(exc, LambdaFunctionError):
        return exc.error_message
    payload = getattr(exc, "payload", None)
    if isinstance(payload, bytes | str):
        try:
            error = json.loads(payload)
        except ValueError:
            error = None
        if isinstance(error, dict) and isinstance(error.get("errorMessage"), str):
            return error["errorMessage"]
    return str(exc)


def _glob_matches(pattern: Any, value: str, ignore_case: bool = False) -> bool:
    """IAM-style wildcard match: ``*`` is any run of characters, ``?`` exactly one."""
    if not isinstance(pattern, str):
        return False
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


def _any_matches(patterns: Any, value: str, ignore_case: bool = False) -> bool:
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list):
        return False
    return any(_glob_matches(pattern, value, ignore_case) for pattern in patterns)


def policy_allows(policy: Mapping[str, Any], method_arn: str) -> bool:
    """Evaluate an authorizer's policyDocument for ``execute-api:Invoke`` on ``method_arn``."""
    statements = policy.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        return False
    allowed = False
    for statement in statements:
        if not isinstance(statement, dict):
            continue
        if not _any_matches(statement.get("Action"), "execute-api:Invoke", ignore_case=True):
            continue
        if not _any_matches(statement.get("Resource"), method_arn):
            continue
        if statement.get("Effect") == "Deny":
            return False  # an explicit deny always wins
        if statement.get("Effect") == "Allow":
            allowed = True
    return allowed


Invoke = Callable[[Target, dict[str, Any], float | None], Awaitable[Any]]


async def authorize(
    invoke: Invoke,
    request: web.Request,
    api: Any,
    authorizer_id: str,
    conn: Connection,
    *,
    region: str,
    account_id: str,
    timeout: float,
) -> dict[str, Any]:
    """Run the REQUEST authorizer; the ``requestContext.authorizer`` its Allow grants."""
    authorizer = api.authorizers.get(authorizer_id)
    if authorizer is None or not authorizer.authorizer_uri:
        raise Rejected(500, "Internal server error")
    if not identity_present(request, authorizer.identity_source, conn):
        raise Rejected(401, "Unauthorized")
    method_arn = f"arn:aws:execute-api:{region}:{account_id}:{conn.api_id}/{conn.stage}/$connect"
    event = authorizer_event(request, conn, method_arn)
    target = Target("AWS_PROXY", lambda_arn(authorizer.authorizer_uri))
    started = time.monotonic()
    try:
        result = await invoke(target, event, timeout)
    except TimeoutError:
        raise Rejected(504, "Endpoint request timed out")
    except Exception as exc:
        if _error_text(exc) == "Unauthorized":
            raise Rejected(401, "Unauthorized")
        logger.warning("authorizer of %s failed: %s", conn.api_id, exc)
        raise Rejected(500, "Internal server error")
    latency_ms = int((time.monotonic() - started) * 1000)
    if not isinstance(result, dict) or not isinstance(result.get("policyDocument"), dict):
        logger.warning("authorizer of %s returned no policyDocument", conn.api_id)
        raise Rejected(500, "Internal server error")
    context = result.get("context") or {}
    if not isinstance(context, dict) or any(isinstance(v, dict | list) for v in context.values()):
        logger.warning("authorizer of %s returned a context that is not flat", conn.api_id)
        raise Rejected(500, "Internal server error")
    if not policy_allows(result["policyDocument"], method_arn):
        raise Rejected(403, "Forbidden")
    granted: dict[str, Any] = dict(context)
    granted["principalId"] = result.get("principalId")
    granted["integrationLatency"] = latency_ms
    return granted


def identity_present(request: web.Request, identity_source: Any, conn: Connection) -> bool:
    """Whether every identity source has a non-empty value (a missing one means 401 at once)."""
    if isinstance(identity_source, str):
        identity_source = [part.strip() for part in identity_source.split(",")]
    for source in identity_source or []:
        value: str | None
        if source.startswith("route.request.header."):
            value = request.headers.get(source[len("route.request.header.") :])
        elif source.startswith("route.request.querystring."):
            value = request.query.get(source[len("route.request.querystring.") :])
        elif source.startswith("stageVariables."):
            value = conn.stage_variables.get(source[len("stageVariables.") :])
        else:
            value = "present"  # context variables always exist
        if not value:
            return False
    return True


def authorizer_event(request: web.Request, conn: Connection, method_arn: str) -> dict[str, Any]:
    headers = request_headers(request, conn, keep_upgrade=True)
    query = query_of(request)
    context = conn.request_context("$connect", "CONNECT", new_id(), epoch_ms())
    context.pop("authorizer", None)
    return {
        "type": "REQUEST",
        "methodArn": method_arn,
        "headers": {name: values[-1] for name, values in headers.items()},
        "multiValueHeaders": headers,
        "queryStringParameters": {name: values[-1] for name, values in query.items()},
        "multiValueQueryStringParameters": query,
        "stageVariables": dict(conn.stage_variables),
        "requestContext": context,
    }
