"""IAM's eventual consistency, on demand: the next N calls of a principal to an action are denied.

"IAM ... achieves high availability by replicating data across multiple servers ... changes that you
make are not always immediately visible. ... we recommend that you do not include such IAM changes in
the critical, high-availability code paths of your application" (IAM user guide, "Changes that I make
are not always immediately visible"). Right after a policy is attached, a principal's calls may still
be refused with AccessDenied for a while. Tests emulate exactly that with
``cloud.iam_propagation.deny_next(principal, "dynamodb:PutItem", count=2)``.

A principal is an access key id, an IAM user or assumed-role session ARN, or a role ARN (which covers
every session of that role, such as a Lambda function's execution role). The caller and the service
are read from the request's SigV4 credential scope (``Credential=AKID/DATE/REGION/SERVICE/...``); the
caller's ARN comes from moto's STS and IAM state. The refusal is the AccessDenied error of that
service's protocol: JSON services (DynamoDB) 400 ``AccessDeniedException``, REST-JSON services
(Lambda) 403 ``AccessDeniedException``, query services (STS, IAM, CloudFormation...) 403
``AccessDenied``, with IAM's "User: ... is not authorized to perform: ..." message. Requests that do
not go through moto's action dispatch (S3) are not covered. Nothing else of IAM is enforced.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from moto.core import responses as core_responses
from moto.sts.models import sts_backends
from moto.utilities.utils import get_partition

from plldb.localcloud.moto_extensions.core import original, patch

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/([^/]+)/aws4_request")
# Operations whose IAM action is not named like the operation.
_IAM_ACTIONS = {("lambda", "Invoke"): "InvokeFunction", ("lambda", "InvokeAsync"): "InvokeAsync"}


@dataclass(frozen=True)
class Denial:
    """One refused call: who, what, and the message it got."""

    caller_arn: str
    action: str
    message: str


@dataclass
class _Rule:
    principal: str
    action: str
    remaining: int


class IamPropagation:
    """The denials to inject, and a record of those injected (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self.denials: list[Denial] = []

    def deny_next(self, principal: str, action: str, count: int = 1) -> None:
        """Refuse the principal's next count calls to action (``service:Operation``, e.g. ``lambda:InvokeFunction``)."""
        if count < 1 or ":" not in action:
            raise ValueError("deny_next needs a count of at least 1 and an action written service:Operation")
        with self._lock:
            self._rules.append(_Rule(principal, action.lower(), count))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def pending(self) -> int:
        """How many denials are still to come."""
        with self._lock:
            return sum(rule.remaining for rule in self._rules)

    def take(self, access_key_id: str, caller_arn: str, action: str) -> bool:
        """Whether this call is refused (using up one denial of the first rule that matches it)."""
        with self._lock:
            for rule in self._rules:
                if rule.action == action.lower() and _matches(rule.principal, access_key_id, caller_arn):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                    return True
        return False

    def record(self, denial: Denial) -> None:
        with self._lock:
            self.denials.append(denial)


def _matches(principal: str, access_key_id: str, caller_arn: str) -> bool:
    if principal in (access_key_id, caller_arn):
        return True
    role = re.match(r"^arn:[^:]+:iam::(\d+):role/(?:.*/)?([^/]+)$", principal)
    session = re.match(r"^arn:[^:]+:sts::(\d+):assumed-role/([^/]+)/", caller_arn)
    return bool(role and session and role.groups() == session.groups())


PROPAGATION = IamPropagation()


def _caller(response: Any) -> tuple[str, str, str] | None:
    """(access key id, region, signing service) of a SigV4-signed request."""
    authorization = response.headers.get("Authorization") or response.headers.get("authorization") or ""
    match = _CREDENTIAL.search(authorization)
    if match is None:
        credential = response.querystring.get("X-Amz-Credential", [""])[0]
        match = _CREDENTIAL.search("Credential=" + credential)
    return match.groups() if match else None  # type: ignore[return-value]


def _resource(response: Any, service: str, region: str, account_id: str) -> str | None:
    partition = get_partition(region)
    body = response.body  # some services' call_action has parsed it already
    if not isinstance(body, dict):
        try:
            body = json.loads(getattr(response, "raw_body", None) or b"{}")
        except (ValueError, TypeError):
            body = {}
    if service == "dynamodb" and isinstance(body, dict) and isinstance(body.get("TableName"), str):
        return f"arn:{partition}:dynamodb:{region}:{account_id}:table/{body['TableName']}"
    function = re.search(r"/functions/([^/]+)", response.path or "")
    if service == "lambda" and function:
        name = function.group(1)
        return (
            name
            if name.startswith("arn:")
            else f"arn:{partition}:lambda:{region}:{account_id}:function:{name}"
        )
    return None


def _refusal(response: Any, service: str, message: str) -> tuple[int, dict[str, str], str]:
    if response.headers.get("X-Amz-Target") or response.headers.get("x-amz-target"):
        body = json.dumps(
            {"__type": "com.amazonaws.dynamodb.v20120810#AccessDeniedException", "message": message}
        )
        if service != "dynamodb":
            body = json.dumps({"__type": "AccessDeniedException", "message": message})
        return 400, {"Content-Type": "application/x-amz-json-1.0"}, body
    if response.querystring.get("Action"):
        body = (
            "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
            f"<Message>{escape(message)}</Message></Error><RequestId>denied</RequestId></ErrorResponse>"
        )
        return 403, {"Content-Type": "text/xml"}, body
    headers = {"Content-Type": "application/json", "x-amzn-ErrorType": "AccessDeniedException"}
    return 403, headers, json.dumps({"Type": "User", "message": message})


def call_action(self: Any) -> Any:
    caller = _caller(self)
    if caller is not None and PROPAGATION._rules:
        access_key_id, region, service = caller
        operation = self._get_action()
        if operation:
            action = f"{service}:{_IAM_ACTIONS.get((service, operation), operation)}"
            _, caller_arn, account_id = sts_backends[self.current_account][
                get_partition(region)
            ].get_caller_identity(access_key_id, region)
            if PROPAGATION.take(access_key_id, caller_arn, action):
                resource = _resource(self, service, region, account_id)
                on = f" on resource: {resource}" if resource else ""
                message = (
                    f"User: {caller_arn} is not authorized to perform: {action}{on} "
                    f"because no identity-based policy allows the {action} action"
                )
                PROPAGATION.record(Denial(caller_arn, action, message))
                return _refusal(self, service, message)
    return original(core_responses.BaseResponse, "call_action")(self)


def install() -> None:
    patch(core_responses.BaseResponse, "call_action", call_action)
