"""A hand-driven client of the helper stack's WebSocket API, for tests that act as a developer (or an
attacker) message by message instead of through `plldb attach`.

It connects exactly as plldb does (the session URL, signed with SigV4 by the credentials it is given,
through the product's own signer) or not at all signed, sends raw frames, and reads the helper stack's
replies, checking their authentication with the session key it chose when it has one.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import boto3
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack
from plldb.local.session import connect_url, session_url, sigv4_signer
from plldb.local.session.payloads import split_fragments

REPLY_TIMEOUT = 60.0


class Refused(Exception):
    """The gateway answered the upgrade with an HTTP status instead of 101."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


def developer(local_cloud: Any, name: str | None = None) -> tuple[boto3.Session, str]:
    """A new IAM user of the account with an access key of their own: (their session, their ARN)."""
    iam = local_cloud.client("iam")
    user = name or f"dev-{uuid.uuid4().hex[:6]}"
    arn = str(iam.create_user(UserName=user)["User"]["Arn"])
    key = iam.create_access_key(UserName=user)["AccessKey"]
    session = boto3.Session(
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        region_name=local_cloud.region,
    )
    return session, arn


@dataclass(frozen=True)
class Attacker:
    """Another IAM user of the account, with an access key of their own."""

    session: boto3.Session
    arn: str
    environment: dict[str, str]  # the variables to run plldb as them


@dataclass
class RawSession:
    """One session id and what its developer keeps secret: the message key and the reconnect seed."""

    helper: HelperStack
    credentials: boto3.Session | None  # None: the upgrade request is not signed at all
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    key: str = field(default_factory=protocol.new_secret)
    seed: str = field(default_factory=protocol.new_secret)
    reconnects: int = 0

    @property
    def anchor(self) -> str:
        return protocol.reconnect_token(self.seed, protocol.RECONNECT_CHAIN_LENGTH)

    def token(self, reconnect: int) -> str:
        """The token of the ``reconnect``-th reconnect (1 for the first)."""
        return protocol.reconnect_token(self.seed, protocol.RECONNECT_CHAIN_LENGTH - reconnect)

    def url(self, token: str | None = None, session_id: str | None = None) -> str:
        return session_url(connect_url(self.helper.websocket_url), session_id or self.session_id, token)

    async def connect(self, token: str | None = None, url: str | None = None) -> Connection:
        """Open a connection (raises Refused with the HTTP status when the gateway refuses)."""
        target = url or self.url(token)
        headers = sigv4_signer(self.credentials, self.helper.region)(target) if self.credentials else {}
        try:
            websocket = await connect(
                target,
                additional_headers=headers,
                open_timeout=REPLY_TIMEOUT,
                ping_interval=None,
                max_size=2 * protocol.WEBSOCKET_MESSAGE_LIMIT,
                compression=None,
            )
        except InvalidStatus as exc:
            raise Refused(exc.response.status_code, exc.response.body or b"") from None
        return Connection(self, websocket)

    async def status_of(self, token: str | None = None, url: str | None = None) -> int:
        """101 when the connection opens (it is closed again at once), else the HTTP status."""
        try:
            connection = await self.connect(token, url)
        except Refused as refused:
            return refused.status
        await connection.close()
        return 101


@dataclass
class Connection:
    session: RawSession
    websocket: ClientConnection
    received: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        """One message; text above API Gateway's 32 KB frame quota goes in fragments, as plldb sends it."""
        if isinstance(message, bytes):
            await self.websocket.send(message)
            return
        text = message if isinstance(message, str) else json.dumps(message)
        fragments = split_fragments(text)
        await self.websocket.send(fragments[0] if len(fragments) == 1 else fragments)

    async def receive(self, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.websocket.recv(), timeout)
        message = json.loads(raw)
        self.received.append(message)
        return dict(message)

    async def request(self, message: dict[str, Any] | str | bytes) -> dict[str, Any]:
        await self.send(message)
        return await self.receive()

    async def open(self, stack: str) -> dict[str, Any]:
        """`open` the session on ``stack``: the reply (signed `opened`, or `error`)."""
        return await self.request(protocol.open_message(stack, self.session.key, self.session.anchor))

    def authentic(self, message: dict[str, Any]) -> bool:
        return protocol.verify(message, self.session.key)

    async def closed_code(self, timeout: float = REPLY_TIMEOUT) -> int | None:
        """Wait for the server to close the connection; its close code."""
        try:
            while True:
                await self.receive(timeout)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None

    async def close(self) -> None:
        await self.websocket.close()


def unsigned(message: dict[str, Any]) -> dict[str, Any]:
    """A received message without its authentication, to compare it with what was expected."""
    return {key: value for key, value in message.items() if key != "mac"}
