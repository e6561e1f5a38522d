"""API Gateway WebSocket data plane for the local cloud (implemented in :mod:`plldb.localcloud.gateway`).

This module keeps the gateway's names importable from their first home.
"""

from __future__ import annotations

from plldb.localcloud.gateway.authorizer import LambdaFunctionError
from plldb.localcloud.gateway.authorizer import policy_allows as _policy_allows
from plldb.localcloud.gateway.events import select_route_key as _select_route_key
from plldb.localcloud.gateway.framing import FrameLimitGate as _FrameLimitGate
from plldb.localcloud.gateway.framing import WebSocketLimits
from plldb.localcloud.gateway.server import WebSocketGateway

__all__ = [
    "LambdaFunctionError",
    "WebSocketGateway",
    "WebSocketLimits",
    "_FrameLimitGate",
    "_policy_allows",
    "_select_route_key",
]
