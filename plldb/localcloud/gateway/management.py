"""The management API: ``POST``/``GET``/``DELETE /@connections/{connectionId}`` of a stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from plldb.localcloud.gateway.events import Connection, iso8601, json_response, new_id
from plldb.localcloud.gateway.framing import CLOSE_OK

if TYPE_CHECKING:
    from plldb.localcloud.gateway.server import WebSocketGateway


class ManagementApi:
    """boto3's ``apigatewaymanagementapi`` answered for the connections of one gateway."""

    def __init__(self, gateway: WebSocketGateway) -> None:
        self._gateway = gateway

    def routes(self, app: web.Application) -> None:
        app.router.add_route("POST", "/{api_id}/{stage}/@connections/{connection_id}", self.handle_post)
        app.router.add_route("GET", "/{api_id}/{stage}/@connections/{connection_id}", self.handle_get)
        app.router.add_route("DELETE", "/{api_id}/{stage}/@connections/{connection_id}", self.handle_delete)

    def target(self, request: web.Request) -> Connection | web.Response:
        """The open connection a management request names, or the error response AWS would give."""
        authorization = request.headers.get("Authorization", "")
        if not (authorization.startswith("AWS4-HMAC-SHA256 ") and "Signature=" in authorization):
            return json_response(403, {"message": "Missing Authentication Token"}, "ForbiddenException")
        api_id, stage = request.match_info["api_id"], request.match_info["stage"]
        if self._gateway.api_and_stage(api_id, stage) is None:
            return json_response(403, {"message": "Forbidden"}, "ForbiddenException")
        with self._gateway.lock:
            conn = self._gateway.connections.get(request.match_info["connection_id"])
        if conn is None or conn.closing or conn.api_id != api_id or conn.stage != stage:
            return json_response(410, None, "GoneException")
        return conn

    async def handle_post(self, request: web.Request) -> web.Response:
        target = self.target(request)
        if isinstance(target, web.Response):
            return target
        data = await request.read()
        if len(data) > self._gateway.limits.message_bytes:
            return json_response(413, {"message": "Message too long"}, "PayloadTooLargeException")
        try:
            message: str | bytes = data.decode("utf-8")
        except UnicodeDecodeError:
            message = data
        if not await self._gateway.send(target, message):
            return json_response(410, None, "GoneException")
        return web.Response(status=200, headers={"x-amzn-RequestId": new_id()})

    async def handle_get(self, request: web.Request) -> web.Response:
        target = self.target(request)
        if isinstance(target, web.Response):
            return target
        body = {
            "connectedAt": iso8601(target.connected_at_ms / 1000),
            "identity": {"sourceIp": target.source_ip, "userAgent": target.user_agent or ""},
            "lastActiveAt": iso8601(target.last_active_epoch),
        }
        return json_response(200, body)

    async def handle_delete(self, request: web.Request) -> web.Response:
        target = self.target(request)
        if isinstance(target, web.Response):
            return target
        self._gateway.close(target, CLOSE_OK, "")
        return web.Response(status=204, headers={"x-amzn-RequestId": new_id()})
