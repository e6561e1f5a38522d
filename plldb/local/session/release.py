"""Ending another session of a stack, from a short connection of its own (`plldb detach`, --take-over).

The helper stack ends that session only once no function of the stack carries its instrumentation
any more, which the caller has just made true with its own credentials; it then tells that session's
developer who ended it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from websockets.asyncio.client import connect

from plldb import protocol
from plldb.local.session.connection import Signer, session_url

REPLY_TIMEOUT_SECONDS = 60.0


async def release_stack(websocket_url: str, signer: Signer, stack: str) -> dict[str, Any]:
    """The helper stack's `released` or `error` reply to releasing ``stack``."""
    url = session_url(websocket_url, str(uuid.uuid4()))
    async with connect(url, additional_headers=signer(url), ping_interval=None, open_timeout=15) as websocket:
        await websocket.send(protocol.encode(protocol.release_message(stack)))
        async with asyncio.timeout(REPLY_TIMEOUT_SECONDS):
            async for raw in websocket:
                try:
                    message = protocol.decode(raw, protocol.SERVER_MESSAGE_TYPES)
                except protocol.ProtocolError:
                    continue
                if message["type"] in (protocol.MSG_RELEASED, protocol.MSG_ERROR):
                    return message
    raise TimeoutError("the helper stack did not answer the release")
