"""Opening the debugger's WebSocket: the URL of a session and its SigV4 signature.

The helper stack's ``$connect`` route uses AWS_IAM authorization, so the upgrade request is signed
with the developer's own credentials (service ``execute-api``), exactly as API Gateway requires; it
then hands the route the developer's identity. The signature covers the query string (session id,
reconnect token), so neither can be changed in transit.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from plldb import protocol

SIGNED_HEADERS = ("authorization", "x-amz-date", "x-amz-security-token")

Signer = Callable[[str], dict[str, str]]


def session_url(websocket_url: str, session_id: str, reconnect_token: str | None = None) -> str:
    """The WebSocket URL with the session id (and, on reconnect, the token) in its query string."""
    parts = urlsplit(websocket_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.append(("sessionId", session_id))
    if reconnect_token is not None:
        query.append(("reconnectToken", reconnect_token))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def sigv4_signer(session: boto3.Session, region: str) -> Signer:
    """Headers that sign a WebSocket upgrade to ``url`` with the session's current credentials.

    Credentials are read at each connection, so a long debugging session reconnects with refreshed ones.
    """

    def sign(url: str) -> dict[str, str]:
        credentials = session.get_credentials()
        if credentials is None:
            raise PermissionError("no AWS credentials to sign the connection with")
        parts = urlsplit(url)
        scheme = "https" if parts.scheme in ("wss", "https") else "http"
        request = AWSRequest(method="GET", url=urlunsplit((scheme, *parts[1:])))
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
        return {name: value for name, value in request.headers.items() if name.lower() in SIGNED_HEADERS}

    return sign


def connect_url(helper_websocket_url: str) -> str:
    """The helper stack's WebSocket URL as this machine reaches it (the execute-api override applies)."""
    return protocol.execute_api_url(helper_websocket_url)
