"""The developer's end of a debugging session: the connection, its deliveries and its payloads.

- ``values``: what the session exchanges with the command driving it (settings, observers, outcomes);
- ``connection``: the session's URL and the SigV4 signature of its connection;
- ``deliveries``: which deliveries were seen and how far each got (pure bookkeeping);
- ``payloads``: events and results inline or as S3 objects, errors cut to fit;
- ``debug_session``: the asyncio session itself.
"""

from plldb.local.session.connection import Signer, connect_url, session_url, sigv4_signer
from plldb.local.session.debug_session import DebugSession, SessionRefused
from plldb.local.session.values import (
    ConnectionSettings,
    InvocationRunner,
    Lifecycle,
    Opened,
    SessionObserver,
    SessionOutcome,
    describe,
    short_id,
)

__all__ = [
    "ConnectionSettings",
    "DebugSession",
    "InvocationRunner",
    "Lifecycle",
    "Opened",
    "SessionObserver",
    "SessionOutcome",
    "SessionRefused",
    "Signer",
    "connect_url",
    "describe",
    "session_url",
    "short_id",
    "sigv4_signer",
]
