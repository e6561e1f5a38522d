"""``AuthorizationType: AWS_IAM`` on ``$connect``: who signed the upgrade request.

API Gateway requires IAM-authorized requests to be signed with Signature Version 4, either in the
``Authorization`` header (with ``X-Amz-Date``, and ``X-Amz-Security-Token`` for temporary credentials) or
in the query string (``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``, ``X-Amz-SignedHeaders``,
``X-Amz-Signature``). A request without a signature is refused with 403 "Missing Authentication Token",
one with an incomplete signature with 403 IncompleteSignatureException, as API Gateway's IAM
authentication answers them.

The signature itself is not verified and no policy is evaluated (moto's own APIs do not either): the
caller is whoever the access key id in the credential scope belongs to in moto's STS and IAM state (an
IAM user, an assumed role, or moto's default principal for a key moto never issued).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from moto.sts.models import sts_backends
from moto.utilities.utils import get_partition

from plldb.localcloud.gateway.authorizer import Rejected

ALGORITHM = "AWS4-HMAC-SHA256"
MISSING_TOKEN = "Missing Authentication Token"


@dataclass(frozen=True)
class Signature:
    """The parts of a SigV4 signature the gateway reads (the signature value itself is not checked)."""

    access_key_id: str
    credential_scope: str  # DATE/REGION/SERVICE/aws4_request
    security_token: str | None


def _refusal(message: str, error_type: str) -> Rejected:
    return Rejected(403, message, {"x-amzn-ErrorType": error_type})


def _header_parameters(authorization: str) -> dict[str, str]:
    """``Credential=..., SignedHeaders=..., Signature=...`` after the algorithm, as a map."""
    parameters: dict[str, str] = {}
    for part in authorization[len(ALGORITHM) :].split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            parameters[name] = value
    return parameters


def request_signature(headers: Mapping[str, str], query: Mapping[str, str]) -> Signature:
    """The request's SigV4 signature, or the refusal API Gateway answers when it has none or half of one."""
    authorization = headers.get("Authorization")
    if authorization is not None:
        if not authorization.startswith(ALGORITHM + " "):
            raise _refusal(
                f"Authorization header requires '{ALGORITHM}' as its algorithm.",
                "IncompleteSignatureException",
            )
        parameters = _header_parameters(authorization)
        missing = [
            f"Authorization header requires '{name}' parameter."
            for name in ("Credential", "Signature", "SignedHeaders")
            if not parameters.get(name)
        ]
        if not (headers.get("X-Amz-Date") or headers.get("Date")):
            missing.append(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
            )
        if missing:
            raise _refusal(" ".join(missing), "IncompleteSignatureException")
        credential = parameters["Credential"]
        token = headers.get("X-Amz-Security-Token")
    elif "X-Amz-Credential" in query or "X-Amz-Signature" in query or "X-Amz-Algorithm" in query:
        missing = [
            f"AWS query-string parameters must include '{name}'."
            for name in (
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Signature",
                "X-Amz-SignedHeaders",
                "X-Amz-Date",
            )
            if not query.get(name)
        ]
        if missing:
            raise _refusal(
                " ".join(missing) + " Re-examine the query-string parameters.", "IncompleteSignatureException"
            )
        credential = query["X-Amz-Credential"]
        token = query.get("X-Amz-Security-Token")
    else:
        raise _refusal(MISSING_TOKEN, "MissingAuthenticationTokenException")
    access_key_id, _, scope = credential.partition("/")
    if not access_key_id or scope.count("/") != 3:
        raise _refusal(
            f"Credential should be scoped to a valid region, service and aws4_request: '{credential}'.",
            "IncompleteSignatureException",
        )
    return Signature(access_key_id, scope, token)


def caller_identity(signature: Signature, account_id: str, region: str) -> dict[str, str]:
    """The ``requestContext.identity`` fields API Gateway adds for an IAM-authorized caller.

    From API Gateway's WebSocket context variables ($context.identity.accountId, .caller, .user,
    .userArn, and the access key of the signature); fields without a value (Cognito, API key, principal
    organisation) are left out, as API Gateway leaves out null identity fields in WebSocket events.
    """
    user_id, arn, caller_account = sts_backends[account_id][get_partition(region)].get_caller_identity(
        signature.access_key_id, region
    )
    return {
        "accountId": caller_account,
        "accessKey": signature.access_key_id,
        "caller": user_id,
        "user": user_id,
        "userArn": arn,
    }
