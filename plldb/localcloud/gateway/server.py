"""The WebSocket gateway: the client endpoint of every WEBSOCKET API in moto, its connections' lifecycle.

* API Gateway invokes the integration of each message independently: it gives no ordering guarantee
  between a connection's messages and does not wait for one message's integration before the next (AWS
  re:Post answers say so; ordered processing takes an SQS FIFO queue behind the route). This emulator
  hands each message to its route in arrival order without waiting for earlier ones to finish:
  messages of one connection and of different connections run concurrently, at most
  ``WebSocketLimits.messages_in_flight_per_connection`` per connection (a later one waits for a free
  slot before its integration timeout starts).
* ``$disconnect`` runs after the connection's in-flight messages have finished (each is bounded by the
  integration timeout). AWS documents no order here, only that ``$disconnect`` is best-effort and comes
  after the connection closed; the emulator picks the order in which a route never sees messages of a
  connection whose ``$disconnect`` it has already handled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.http_websocket import WebSocketError
from moto.apigatewayv2.models import apigatewayv2_backends

from plldb.localcloud.constants import ACCOUNT_ID
from plldb.localcloud.gateway.authorizer import Rejected, authorize
from plldb.localcloud.gateway.events import (
    HANDSHAKE_HEADERS,
    Connection,
    Target,
    connect_event,
    disconnect_event,
    find_route,
    gateway_message,
    json_response,
    message_event,
    new_id,
    route_target,
    select_route_key,
)
from plldb.localcloud.gateway.faults import GatewayFaults
from plldb.localcloud.gateway.framing import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_NO_STATUS,
    CLOSE_TOO_BIG,
    DEFAULT_LIMITS,
    REASON_ABNORMAL,
    REASON_GOING_AWAY,
    REASON_NO_STATUS,
    REASON_TOO_BIG,
    LimitedWebSocketResponse,
    WebSocketLimits,
)
from plldb.localcloud.gateway.iam import caller_identity, request_signature
from plldb.localcloud.gateway.management import ManagementApi

logger = logging.getLogger(__name__)

_INVOCATION_THREADS = 64  # Lambda calls block for their whole duration; many may wait at once
_SHUTDOWN_SECONDS = 2.0


class WebSocketGateway:
    """API Gateway's WebSocket data plane for the APIs in moto's in-process apigatewayv2 backend.

    ``invoke_lambda(function_arn, event)`` invokes a function synchronously and returns its parsed JSON
    result; it raises (preferably :class:`LambdaFunctionError`) when the function fails. It is called on
    the gateway's thread pool, never on its event loop.
    """

    def __init__(  # noqa: PLR0917 - the agreed interface takes these positionally too
        self,
        invoke_lambda: Callable[[str, dict], Any],
        host: str = "127.0.0.1",
        port: int = 0,
        limits: WebSocketLimits = DEFAULT_LIMITS,
        account_id: str = ACCOUNT_ID,
        region: str = "us-east-1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._invoke_lambda = invoke_lambda
        # The clock of the idle and lifetime limits: a test injects one it moves, then check_timers().
        self.clock = clock
        self._host = host
        self._port = port
        self.limits = limits
        self._account_id = account_id
        self._region = region
        self.connections: dict[str, Connection] = {}
        self.lock = threading.Lock()
        self._executor = ThreadPoolExecutor(_INVOCATION_THREADS, thread_name_prefix="websocket-gateway")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self.faults = GatewayFaults()  # faults on demand, for tests

    # --- lifecycle ---------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    def start(self) -> None:
        """Serve on a thread of its own; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("the WebSocket gateway is already running")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="websocket-gateway", daemon=True)
        self._thread.start()
        try:
            self._call(self._serve())
        except BaseException:
            self._halt_loop()
            raise

    def stop(self) -> None:
        """Close every connection with 1001 and stop serving.

        The local cloud is going away, not one connection, so no ``$disconnect`` integration runs: the
        Lambda functions it would call are being shut down too.
        """
        if self._loop is None or self._thread is None:
            return
        self._stopping = True
        try:
            self._call(self._shutdown())
        finally:
            self._halt_loop()
            self._executor.shutdown(wait=False, cancel_futures=True)

    def restart(self) -> None:
        """Drop every connection abruptly and serve again on the same port, as after an outage."""
        self._call(self._restart())

    def cut(self, connection_id: str) -> None:
        """Drop one connection as a network failure would: no close frame, then ``$disconnect``."""
        self._call(self._cut(connection_id))

    def connection_ids(self) -> list[str]:
        """Ids of the connections that are open now."""
        with self.lock:
            return [cid for cid, conn in self.connections.items() if not conn.closing]

    def websocket_url(self, api_id: str, stage: str) -> str:
        return f"ws://{self._host}:{self._port}/{api_id}/{stage}"

    def management_url(self, api_id: str, stage: str) -> str:
        return f"http://{self._host}:{self._port}/{api_id}/{stage}"

    def _call(self, coroutine: Any) -> Any:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the WebSocket gateway is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _halt_loop(self) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = None
        self._thread = None

    def _application(self) -> web.Application:
        # The management API's own 128 KB check answers PayloadTooLargeException, so aiohttp's body
        # limit must sit well above it.
        app = web.Application(client_max_size=max(16 * 1024 * 1024, 2 * self.limits.message_bytes))
        app.router.add_route("GET", "/{api_id}/{stage}", self._handle_upgrade)
        ManagementApi(self).routes(app)
        return app

    async def _serve(self) -> None:
        runner = web.AppRunner(self._application(), access_log=None, shutdown_timeout=_SHUTDOWN_SECONDS)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = site.port

    async def _shutdown(self) -> None:
        with self.lock:
            connections = list(self.connections.values())
        for conn in connections:
            self.close(conn, CLOSE_GOING_AWAY, REASON_GOING_AWAY)
        closing = [conn.close_task for conn in connections if conn.close_task is not None]
        if closing:
            await asyncio.wait(closing, timeout=_SHUTDOWN_SECONDS)
        tasks = [conn.dispatcher for conn in connections if conn.dispatcher is not None]
        tasks += [task for conn in connections for task in conn.in_flight]
        for task in tasks:
            task.cancel()  # a Lambda call still running keeps its thread, not the loop
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _restart(self) -> None:
        with self.lock:
            connections = list(self.connections.values())
        for conn in connections:
            self._drop(conn)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._serve()

    async def _cut(self, connection_id: str) -> None:
        with self.lock:
            conn = self.connections.get(connection_id)
        if conn is None or conn.closing:
            raise KeyError(f"no open connection {connection_id!r}")
        self._drop(conn)

    def _drop(self, conn: Connection) -> None:
        """Abort a connection's transport (at once, or as soon as its handshake is written)."""
        if not conn.closing:
            conn.closing = True
            conn.close_code, conn.close_reason = CLOSE_ABNORMAL, REASON_ABNORMAL
        conn.dropped = True
        if conn.ws is not None:
            conn.ws.abort()

    def close(self, conn: Connection, code: int, reason: str) -> None:
        """Close a connection from the gateway's side with a close frame (idempotent)."""
        if conn.closing:
            return
        conn.closing = True
        conn.close_code, conn.close_reason = code, reason
        conn.close_task = asyncio.ensure_future(self._send_close(conn, code, reason))

    @staticmethod
    async def _send_close(conn: Connection, code: int, reason: str) -> None:
        await conn.handshake_done.wait()
        ws = conn.ws
        if ws is not None and ws.prepared and not ws.closed:
            await ws.close(code=code, message=reason.encode("utf-8"))

    # --- moto's model --------------------------------------------------------------------------------------
    def api_and_stage(self, api_id: str, stage_name: str) -> tuple[Any, Any] | None:
        backend = apigatewayv2_backends[self._account_id][self._region]
        api = backend.apis.get(api_id)
        if api is None or api.protocol_type != "WEBSOCKET":
            return None
        stage = api.stages.get(stage_name)
        return None if stage is None else (api, stage)

    def _domain_name(self, api_id: str) -> str:
        return f"{api_id}.execute-api.{self._region}.amazonaws.com"

    # --- invoking Lambda -------------------------------------------------------------------------------------
    async def _invoke(self, target: Target, event: dict[str, Any], timeout: float | None) -> Any:
        """Run one integration on the thread pool; MOCK integrations answer nothing."""
        if target.integration_type == "MOCK":
            return None
        if target.integration_type != "AWS_PROXY" or not target.function_arn:
            raise RuntimeError(f"unsupported integration type {target.integration_type!r}")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._invoke_lambda, target.function_arn, event)
        if timeout is None:
            return await future
        return await asyncio.wait_for(future, timeout)

    # --- $connect ---------------------------------------------------------------------------------------------
    async def _handle_upgrade(self, request: web.Request) -> web.StreamResponse:
        found = self.api_and_stage(request.match_info["api_id"], request.match_info["stage"])
        if found is None:
            return json_response(403, {"message": "Forbidden"})
        api, stage = found
        probe = web.WebSocketResponse()
        if not probe.can_prepare(request).ok:
            return json_response(426, {"message": "Upgrade Required"})
        conn = Connection(
            api_id=api.api_id,
            stage=stage.name,
            domain_name=self._domain_name(api.api_id),
            stage_variables=stage.stage_variables or {},
            source_ip=request.remote or "127.0.0.1",
            user_agent=request.headers.get("User-Agent"),
            message_slots=self.limits.messages_in_flight_per_connection,
            clock=self.clock,
        )
        try:
            handshake_headers = await self._run_connect(request, api, conn)
        except Rejected as rejection:
            response = json_response(rejection.status, {"message": rejection.message})
            response.headers.update(rejection.headers)
            return response
        subprotocol = handshake_headers.pop("Sec-WebSocket-Protocol", None)
        ws = LimitedWebSocketResponse(
            self.limits,
            lambda: self.close(conn, CLOSE_TOO_BIG, REASON_TOO_BIG),
            protocols=(subprotocol,) if subprotocol else (),
            compress=False,
            autoping=False,  # _receive answers pings itself (unless told to ignore them)
            max_msg_size=self.limits.message_bytes + 1,  # the gate enforces the quota itself
        )
        ws.headers.update(handshake_headers)
        conn.ws = ws
        # Registered before the 101 leaves, so a post racing the client's first look at the socket is
        # delivered (it waits for the handshake) instead of answered with GoneException.
        self._open(conn)
        try:
            await ws.prepare(request)
            opened = True
        except (ConnectionError, RuntimeError):
            # The client left while $connect ran: the connection existed for API Gateway, so it ends
            # the usual way, with $disconnect.
            opened = False
            conn.closing = True
        conn.handshake_done.set()
        if conn.dropped:
            ws.abort()
        conn.touch()
        try:
            if opened:
                await self._receive(conn, ws)
        finally:
            self._finish(conn)
        return ws

    # API Gateway's $connect order (authorizer, then integration) with each outcome it documents.
    async def _run_connect(self, request: web.Request, api: Any, conn: Connection) -> dict[str, str]:  # noqa: PLR0912
        """Authorizer then integration of ``$connect``; the headers its integration adds to the 101."""
        route = find_route(api, "$connect")
        if route is None:
            return {}
        authorization_type = (route.authorization_type or "").upper()
        if authorization_type == "AWS_IAM":
            signature = request_signature(request.headers, request.query)
            conn.iam_identity = caller_identity(signature, self._account_id, self._region)
        elif authorization_type == "CUSTOM" and route.authorizer_id:
            conn.authorizer = await self._authorize(request, api, route.authorizer_id, conn)
        target = route_target(api, route)
        if target is None:
            return {}
        event = connect_event(request, conn)
        try:
            result = await self._invoke(target, event, self.limits.integration_timeout_seconds)
        except TimeoutError:
            raise Rejected(504, "Endpoint request timed out")
        except Exception as exc:
            logger.warning("$connect integration of %s failed: %s", conn.api_id, exc)
            raise Rejected(502, "Internal server error")
        if not isinstance(result, dict):
            return {}
        status = result.get("statusCode", 200)
        if not isinstance(status, int) or isinstance(status, bool):
            raise Rejected(502, "Internal server error")
        if not 200 <= status < 300:
            raise Rejected(status, "Forbidden" if status == 403 else "Connection refused")
        headers = result.get("headers")
        if not isinstance(headers, dict):
            return {}
        handshake: dict[str, str] = {}
        for name, value in headers.items():
            if name.lower() == "sec-websocket-protocol":
                handshake["Sec-WebSocket-Protocol"] = str(value)
            elif name.lower() not in HANDSHAKE_HEADERS:
                handshake[name] = str(value)
        return handshake

    async def _authorize(
        self, request: web.Request, api: Any, authorizer_id: str, conn: Connection
    ) -> dict[str, Any]:
        return await authorize(
            self._invoke,
            request,
            api,
            authorizer_id,
            conn,
            region=self._region,
            account_id=self._account_id,
            timeout=self.limits.integration_timeout_seconds,
        )

    # --- an open connection ---------------------------------------------------------------------------------
    def _open(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        with self.lock:
            self.connections[conn.connection_id] = conn
        conn.dispatcher = loop.create_task(self._dispatch(conn))
        conn.idle_timer = loop.call_later(self.limits.idle_timeout_seconds, self._check_idle, conn)
        conn.lifetime_timer = loop.call_later(self.limits.max_connection_seconds, self._check_lifetime, conn)

    def _check_idle(self, conn: Connection) -> None:
        """Close an idle connection, or look again when it would next become idle."""
        if conn.closing:
            return
        idle_for = self.clock() - conn.last_active_monotonic
        remaining = self.limits.idle_timeout_seconds - idle_for
        if remaining <= 0:
            self.close(conn, CLOSE_GOING_AWAY, REASON_GOING_AWAY)
            return
        conn.idle_timer = asyncio.get_running_loop().call_later(remaining, self._check_idle, conn)

    def _check_lifetime(self, conn: Connection) -> None:
        """Close a connection at the end of its maximum duration, or look again then."""
        if conn.closing:
            return
        remaining = self.limits.max_connection_seconds - (self.clock() - conn.opened_monotonic)
        if remaining <= 0:
            self.close(conn, CLOSE_GOING_AWAY, REASON_GOING_AWAY)
            return
        conn.lifetime_timer = asyncio.get_running_loop().call_later(remaining, self._check_lifetime, conn)

    def check_timers(self) -> None:
        """Run every connection's idle and lifetime checks now, as their timers would; returns once they
        have decided. A test that injected the clock moves it and then calls this, instead of waiting."""

        async def check() -> None:
            with self.lock:
                connections = list(self.connections.values())
            for conn in connections:
                for timer in (conn.idle_timer, conn.lifetime_timer):
                    if timer is not None:
                        timer.cancel()
                self._check_idle(conn)
                self._check_lifetime(conn)

        self._call(check())

    async def _receive(self, conn: Connection, ws: LimitedWebSocketResponse) -> None:
        while True:
            message = await ws.receive()
            if message.type is WSMsgType.TEXT or message.type is WSMsgType.BINARY:
                conn.touch()
                conn.inbox.put_nowait(("message", message.data))
            elif message.type is WSMsgType.PING:
                if not self.faults.ping_ignored(conn.connection_id):
                    await ws.pong(message.data)
            elif message.type is WSMsgType.PONG:
                continue
            elif message.type is WSMsgType.CLOSE:
                if not conn.closing:
                    conn.closing = True
                    code = int(message.data or 0)
                    conn.close_code = code or CLOSE_NO_STATUS
                    conn.close_reason = (message.extra or "") if code else REASON_NO_STATUS
                return
            else:  # CLOSING (we are closing), CLOSED or ERROR (the transport or the protocol failed)
                if not conn.closing:
                    conn.closing = True
                    error = message.data
                    if isinstance(error, WebSocketError):
                        conn.close_code, conn.close_reason = int(error.code), str(error)
                    else:
                        conn.close_code, conn.close_reason = CLOSE_ABNORMAL, REASON_ABNORMAL
                return

    def _finish(self, conn: Connection) -> None:
        """Forget a connection that ended; its pending messages and then ``$disconnect`` still run."""
        if conn.finished:
            return
        conn.finished = True
        conn.closing = True
        with self.lock:
            self.connections.pop(conn.connection_id, None)
        for timer in (conn.idle_timer, conn.lifetime_timer):
            if timer is not None:
                timer.cancel()
        if not self._stopping:
            conn.inbox.put_nowait(("disconnect", (conn.close_code, conn.close_reason)))
        conn.inbox.put_nowait(("end", None))

    async def _dispatch(self, conn: Connection) -> None:
        """Hand each of a connection's messages to its route as it arrives; ``$disconnect`` after them all."""
        while True:
            kind, payload = await conn.inbox.get()
            if kind == "message":
                task = asyncio.ensure_future(self._deliver_concurrently(conn, payload))
                conn.in_flight.add(task)
                task.add_done_callback(conn.in_flight.discard)
            elif kind == "disconnect":
                if conn.in_flight:
                    await asyncio.wait(set(conn.in_flight))
                if self.faults.disconnect_dropped(conn.connection_id):
                    continue
                try:
                    await self._disconnect(conn, *payload)
                except Exception:
                    logger.exception("$disconnect of connection %s failed", conn.connection_id)
            else:
                return

    async def _deliver_concurrently(self, conn: Connection, data: str | bytes) -> None:
        """One message's route, in one of its connection's slots, independent of its other messages."""
        if conn.message_slots.locked():
            logger.debug("a message of connection %s waits for a free integration slot", conn.connection_id)
        async with conn.message_slots:
            try:
                await self._deliver(conn, data)
            except Exception:
                logger.exception("route invocation for connection %s failed", conn.connection_id)

    async def _deliver(self, conn: Connection, data: str | bytes) -> None:
        found = self.api_and_stage(conn.api_id, conn.stage)
        if found is None:
            return
        api, _ = found
        request_id = new_id()
        route_key = select_route_key(api.route_selection_expression, data if isinstance(data, str) else None)
        route = find_route(api, route_key) if route_key and not route_key.startswith("$") else None
        if route is None:
            route = find_route(api, "$default")
        if route is None:
            await self.send(conn, gateway_message("Forbidden", conn.connection_id, request_id))
            return
        target = route_target(api, route)
        if target is None:
            await self.send(conn, gateway_message("Internal server error", conn.connection_id, request_id))
            return
        event = message_event(conn, route.route_key, request_id, data)
        try:
            result = await self._invoke(target, event, self.limits.integration_timeout_seconds)
        except TimeoutError:
            await self.send(
                conn, gateway_message("Endpoint request timed out", conn.connection_id, request_id)
            )
            return
        except Exception as exc:
            logger.warning("route %s of %s failed: %s", route.route_key, conn.api_id, exc)
            await self.send(conn, gateway_message("Internal server error", conn.connection_id, request_id))
            return
        if route.route_responses and isinstance(result, dict) and isinstance(result.get("body"), str):
            if result.get("isBase64Encoded"):
                try:
                    await self.send(conn, base64.b64decode(result["body"]))
                except binascii.Error:
                    logger.warning("route %s returned a body that is not base64", route.route_key)
            else:
                await self.send(conn, result["body"])

    async def _disconnect(self, conn: Connection, code: int, reason: str) -> None:
        found = self.api_and_stage(conn.api_id, conn.stage)
        if found is None:
            return
        api, _ = found
        route = find_route(api, "$disconnect")
        target = route_target(api, route) if route is not None else None
        if target is None:
            return
        event = disconnect_event(conn, code, reason)
        try:
            await self._invoke(target, event, None)
        except Exception as exc:
            logger.warning("$disconnect of %s failed: %s", conn.api_id, exc)

    async def send(self, conn: Connection, data: str | bytes) -> bool:
        """Send one message to a client; False when the connection is already gone."""
        if not conn.handshake_done.is_set():
            await conn.handshake_done.wait()
        ws = conn.ws
        if conn.closing or ws is None or ws.closed:
            return False
        try:
            if isinstance(data, str):
                await ws.send_str(data)
            else:
                await ws.send_bytes(data)
        except (ConnectionError, RuntimeError):
            return False
        conn.touch()
        return True
