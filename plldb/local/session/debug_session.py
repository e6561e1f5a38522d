"""The debug session: the developer's end of the WebSocket between the deployed functions and local code.

It connects (signed with the developer's credentials), opens the session on its stack, has the
command instrument the functions, runs each delivery of an invocation once however often it is
posted, answers inline or through an upload as the quotas require, keeps the connection alive across
drops and API Gateway's two-hour limit, and on Ctrl-C has the command restore the functions before it
closes the session. It trusts only messages authenticated with the session's key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from plldb import protocol
from plldb.local.invocation import Invocation, Outcome, local_failure
from plldb.local.session.connection import Signer, session_url
from plldb.local.session.deliveries import Decision, Deliveries, Delivery, Phase, key_of
from plldb.local.session.payloads import (
    EventUnavailableError,
    download_event,
    inline_event,
    inline_response,
    response_text,
    response_too_large,
    split_fragments,
    upload,
)
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

SESSION_REJECTED_STATUSES = (401, 403)
CONNECT_ERRORS = (OSError, InvalidHandshake, InvalidURI, TimeoutError, PermissionError)


class SessionRefused(Exception):
    """The helper stack refused a request of this session (its `error` message)."""

    def __init__(self, message: Mapping[str, Any]) -> None:
        super().__init__(str(message.get("message", "")))
        self.code = str(message.get("code", ""))
        self.message = str(message.get("message", ""))
        self.details = dict(message)


@dataclass(eq=False)
class _Connection:
    websocket: ClientConnection
    opened_at: float
    number: int


class DebugSession:
    """One attached session; ``run()`` returns when it is detached or cannot continue."""

    def __init__(
        self,
        *,
        websocket_url: str,
        signer: Signer,
        session_id: str,
        session_key: str,
        reconnect_seed: str,
        stack: str,
        runner: InvocationRunner,
        lifecycle: Lifecycle,
        observer: SessionObserver | None = None,
        settings: ConnectionSettings | None = None,
        take_over: bool = False,
        shared: bool = False,
        finished: Callable[[str], None] | None = None,
    ) -> None:
        """``finished`` is called, on the event loop, with the request id of each invocation run here
        once the session is done with it (its answer sent, or given up; or only observed): the
        command's own work per invocation (its recording) goes there, off the answer's path."""
        self._url = websocket_url
        self._signer = signer
        self._session_id = session_id
        self._key = session_key
        self._seed = reconnect_seed
        self._stack = stack
        self._runner = runner
        self._lifecycle = lifecycle
        self._observer = observer or SessionObserver()
        self._settings = settings or ConnectionSettings()
        self._take_over = take_over
        self._shared = shared  # a session with a match: it may share its stack with other such sessions
        self._finished = finished or (lambda _request_id: None)
        self._deliveries = Deliveries()
        self._opened: Opened | None = None
        self._current: _Connection | None = None
        self._connections: set[_Connection] = set()
        self._connection_count = 0
        self._reconnects = 0
        self._pong_waiters: list[asyncio.Future[None]] = []
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._uploads: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        # Requests still waiting for their reply, sent again on a new connection (a drop loses them).
        self._unanswered: dict[Any, Mapping[str, Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._interrupts = 0
        self._detaching = False
        self._failure: str | None = None  # why the session ends with exit 1 once detached, if it does
        self.stop_requested = threading.Event()  # the lifecycle's instrumentation stops early when set
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[SessionOutcome] | None = None
        self._interrupted: asyncio.Event | None = None
        self._reconnect_lock: asyncio.Lock | None = None
        self._run_pool: ThreadPoolExecutor | None = None
        self._io_pool: ThreadPoolExecutor | None = None

    # -- public ------------------------------------------------------------------------------------------
    @property
    def reconnect_count(self) -> int:
        return self._reconnects

    @property
    def opened(self) -> Opened | None:
        return self._opened

    async def run(self) -> SessionOutcome:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._done = loop.create_future()
        self._interrupted = asyncio.Event()
        self._reconnect_lock = asyncio.Lock()
        self._run_pool = ThreadPoolExecutor(self._settings.max_concurrency, thread_name_prefix="plldb-invoke")
        self._io_pool = ThreadPoolExecutor(8, thread_name_prefix="plldb-io")
        try:
            if self._take_over and self._lifecycle.take_over is not None:
                await loop.run_in_executor(self._io_pool, self._lifecycle.take_over)
            try:
                connection = await self._open(session_url(self._url, self._session_id))
            except InvalidStatus as exc:
                return SessionOutcome(1, self._rejected_message(exc.response.status_code, first=True))
            except CONNECT_ERRORS as exc:
                return SessionOutcome(1, self._unreachable_message(exc))
            self._adopt(connection)
            self._observer.on_connected()
            self._spawn(self._keepalive())
            self._spawn(self._resend_unconfirmed())
            self._spawn(self._lifecycle_task())
            return await self._done
        finally:
            await self._shutdown()

    def interrupt(self) -> None:
        """Ctrl-C or SIGTERM: the first detaches cleanly, the second leaves at once."""
        if self._done is None or self._done.done():
            return
        self._interrupts += 1
        self.stop_requested.set()
        if self._interrupts == 1:
            assert self._interrupted is not None
            self._interrupted.set()
        else:
            self._finish(
                130,
                "Left without waiting for the restore. The helper stack restores the functions "
                f"{protocol.DISCONNECT_GRACE_SECONDS} s after the connection closes; to restore them now run "
                f"'plldb detach --stack-name {self._stack_name}'.",
            )

    @property
    def _stack_name(self) -> str:
        return self._opened.stack_name if self._opened else self._stack

    # -- the session's phases ----------------------------------------------------------------------------
    async def _lifecycle_task(self) -> None:
        assert self._loop is not None and self._interrupted is not None
        try:
            if self._take_over:
                await self._request(protocol.release_message(self._stack), protocol.MSG_RELEASED)
            reply = await self._request(
                protocol.open_message(
                    self._stack,
                    self._key,
                    protocol.reconnect_token(self._seed, protocol.RECONNECT_CHAIN_LENGTH),
                    shared=self._shared,
                ),
                protocol.MSG_OPENED,
            )
        except SessionRefused as exc:
            self._finish(1, self._refusal_text(exc))
            return
        except TimeoutError:
            self._finish(
                1, "The helper stack did not answer in time. Check its logs, then run 'plldb attach' again."
            )
            return
        self._opened = Opened(
            session_id=str(reply["sessionId"]),
            stack_id=str(reply["stackId"]),
            stack_name=str(reply["stackName"]),
            owner=str(reply["owner"]),
        )
        if not self._interrupted.is_set():
            try:
                await self._loop.run_in_executor(self._io_pool, self._lifecycle.instrument, self._opened)
            except Exception as exc:
                self._observer.on_warning(f"Instrumenting failed: {type(exc).__name__}: {exc}")
                # Whatever it changed is restored by the detach; the command still failed.
                self._failure = (
                    f"Instrumenting failed ({type(exc).__name__}: {exc}); plldb restored every function it "
                    "had changed. Run 'plldb attach' again."
                )
                self._interrupted.set()
        await self._interrupted.wait()
        await self._detach()

    async def _detach(self) -> None:
        assert self._loop is not None
        self._detaching = True
        self._observer.on_detaching()
        failures = await self._loop.run_in_executor(self._io_pool, self._lifecycle.restore)
        if failures:
            self._finish(
                1,
                "Some functions were not restored ("
                + ", ".join(failures)
                + f"). The helper stack restores them {protocol.DISCONNECT_GRACE_SECONDS} s after this process "
                f"exits; to restore them now run 'plldb detach --stack-name {self._stack_name}'.",
            )
            return
        try:
            await self._request({"type": protocol.MSG_CLOSE}, protocol.MSG_CLOSED)
        except (SessionRefused, TimeoutError) as exc:
            self._observer.on_warning(
                f"The session was not closed cleanly ({exc}); the helper stack closes it."
            )
        self._finish(1 if self._failure else 0, self._failure)

    def _refusal_text(self, exc: SessionRefused) -> str:
        if exc.code == protocol.ERR_STACK_LOCKED:
            return (
                f"{exc.message} Ask them to detach, or run again with --take-over: plldb then restores the "
                "stack's functions with your credentials and ends their session."
            )
        if exc.code == protocol.ERR_RELEASE_REFUSED:
            return f"The other session could not be ended: {exc.message}"
        return f"The helper stack refused the session: {exc.message}"

    async def _request(self, message: Mapping[str, Any], reply_type: str) -> dict[str, Any]:
        """Send ``message`` and wait for its reply (``reply_type``); an `error` raises SessionRefused."""
        assert self._loop is not None
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._replies[reply_type] = future
        self._unanswered[reply_type] = message
        try:
            await self._send(message)
            reply = await asyncio.wait_for(asyncio.shield(future), self._settings.reply_timeout_seconds)
        finally:
            self._replies.pop(reply_type, None)
            self._unanswered.pop(reply_type, None)
        if reply.get("type") == protocol.MSG_ERROR:
            raise SessionRefused(reply)
        return reply

    # -- connections --------------------------------------------------------------------------------------
    async def _open(self, url: str) -> _Connection:
        assert self._loop is not None
        # Signing may refresh the credentials (a network call): never on the event loop, which keeps
        # serving the session meanwhile; credentials that cannot be had now fail this attempt only.
        try:
            headers = await self._loop.run_in_executor(self._io_pool, self._signer, url)
        except BotoCoreError as exc:
            raise PermissionError(f"could not sign the connection: {exc}")
        websocket = await connect(
            url,
            additional_headers=headers,
            compression=None,
            open_timeout=self._settings.open_timeout_seconds,
            # Liveness is the application's ping/pong: API Gateway does not document answering ping frames.
            ping_interval=None,
            close_timeout=5,
            max_size=2 * protocol.WEBSOCKET_MESSAGE_LIMIT,
            user_agent_header="plldb",
        )
        self._connection_count += 1
        return _Connection(websocket=websocket, opened_at=time.monotonic(), number=self._connection_count)

    def _adopt(self, connection: _Connection) -> None:
        """Make ``connection`` the one we send on; read it until it closes."""
        self._current = connection
        self._connections.add(connection)
        self._spawn(self._read(connection))
        self._spawn(self._rotate_when_old(connection))

    async def _read(self, connection: _Connection) -> None:
        try:
            async for raw in connection.websocket:
                self._handle(raw)
        except ConnectionClosed:
            pass
        finally:
            self._connections.discard(connection)
        if connection is self._current and self._done is not None and not self._done.done():
            close = connection.websocket.close_code
            reason = "the connection closed" if close is None else f"the connection closed (code {close})"
            self._observer.on_connection_lost(reason)
            await self._recover(connection)

    async def _recover(self, lost: _Connection) -> None:
        assert self._reconnect_lock is not None
        async with self._reconnect_lock:
            if lost is not self._current:
                return  # a rotation already replaced it
            self._current = None
            if self._opened is None:
                self._finish(
                    1, "The connection was lost before the session was opened. Run 'plldb attach' again."
                )
                return
            connection = await self._reconnect()
            if connection is None:
                return
            self._adopt(connection)
            self._observer.on_reconnected(rotated=False)
            await self._after_reconnect()

    async def _rotate_when_old(self, connection: _Connection) -> None:
        """Before API Gateway's 2-hour limit: open the next connection, then close this one."""
        assert self._reconnect_lock is not None
        age = time.monotonic() - connection.opened_at
        await asyncio.sleep(max(0.0, self._settings.max_connection_age_seconds - age))
        async with self._reconnect_lock:
            if (
                connection is not self._current
                or self._done is None
                or self._done.done()
                or self._opened is None
            ):
                return
            replacement = await self._reconnect()
            if replacement is None:
                return
            self._adopt(replacement)
            self._observer.on_reconnected(rotated=True)
        await asyncio.sleep(self._settings.drain_seconds)  # answers may still be in flight on the old one
        await connection.websocket.close()

    async def _reconnect(self) -> _Connection | None:
        """The next connection of the chain, with backoff; None (and the session finished) when impossible."""
        assert self._done is not None
        started = time.monotonic()
        skipped_ahead = False
        attempt = 0
        delays = self._settings.reconnect_delays
        while not self._done.done():
            if attempt:
                await asyncio.sleep(delays[min(attempt, len(delays) - 1)])
            attempt += 1
            index = self._reconnects + 1
            if index > protocol.RECONNECT_CHAIN_LENGTH:
                self._finish(
                    1,
                    f"This session has used all {protocol.RECONNECT_CHAIN_LENGTH} reconnects. "
                    f"Run 'plldb detach --stack-name {self._stack_name}', then attach again.",
                )
                return None
            token = protocol.reconnect_token(self._seed, protocol.RECONNECT_CHAIN_LENGTH - index)
            try:
                connection = await self._open(session_url(self._url, self._session_id, token))
                self._reconnects = index
                return connection
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in SESSION_REJECTED_STATUSES:
                    if not skipped_ahead:
                        # The token may have been consumed by an attempt that failed after it was accepted.
                        skipped_ahead = True
                        self._reconnects = index
                        attempt = 0
                        continue
                    self._finish(1, self._rejected_message(status, first=False))
                    return None
                reason = f"HTTP {status}"
            except CONNECT_ERRORS as exc:
                reason = describe(exc)
            self._observer.on_reconnect_failed(attempt, reason)
            if time.monotonic() - started > self._settings.reconnect_give_up_seconds:
                self._finish(
                    1,
                    f"Could not reconnect for {int(self._settings.reconnect_give_up_seconds)} s ({reason}). "
                    "The helper stack restores the functions; check with "
                    f"'plldb detach --stack-name {self._stack_name}'.",
                )
                return None
        return None

    async def _after_reconnect(self) -> None:
        """Nothing is lost across a reconnect: re-acknowledge, re-send unconfirmed answers and the
        requests (an upload URL, the close) whose reply the old connection may have lost."""
        for delivery in self._deliveries.all():
            if delivery.phase == Phase.RUNNING and delivery.acked:
                await self._send(delivery.ack)
            elif delivery.phase == Phase.ANSWERED and delivery.response is not None:
                await self._send_response(delivery)
        for message in list(self._unanswered.values()):
            await self._send(message)

    def _unreachable_message(self, exc: BaseException) -> str:
        where = urlsplit(self._url)._replace(query="", fragment="").geturl()
        text = f"Could not connect to the debugger WebSocket API at {where}: {describe(exc)}."
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and not os.environ.get(protocol.EXECUTE_API_ENDPOINT_VARIABLE):
            # AWS_ENDPOINT_URL redirects boto3 only; the WebSocket has its own documented override.
            text += (
                f" AWS_ENDPOINT_URL sends AWS calls to {endpoint}, but not this connection: set "
                f"{protocol.EXECUTE_API_ENDPOINT_VARIABLE} to the endpoint that serves the WebSocket API."
            )
        return text

    def _rejected_message(self, status: int, first: bool) -> str:
        if first:
            return (
                f"The debugger WebSocket API refused the connection (HTTP {status}): your AWS credentials "
                "need execute-api:Invoke on the helper stack's $connect route (docs/security.md lists what "
                "plldb needs), or the session id was used before. Run 'plldb attach' again."
            )
        if self._detaching:
            return (
                f"The connection was lost while detaching and the session is now closed (HTTP {status}). "
                f"Run 'plldb detach --stack-name {self._stack_name}' to make sure every function is restored."
            )
        return (
            f"Could not reconnect: the session was closed (HTTP {status}), most likely because the "
            f"connection was down for more than {protocol.DISCONNECT_GRACE_SECONDS} s and the functions "
            "were restored, or another developer took over. Run 'plldb attach' again."
        )

    # -- sending ------------------------------------------------------------------------------------------
    async def _send(self, message: Mapping[str, Any], connection: _Connection | None = None) -> bool:
        """Send on ``connection`` (default: the current one), fragmented above the frame quota."""
        target = connection or self._current
        if target is None:
            return False
        fragments = split_fragments(protocol.encode(message))
        try:
            await target.websocket.send(fragments[0] if len(fragments) == 1 else fragments)
        except ConnectionClosed:
            return False
        return True

    async def _send_response(self, delivery: Delivery) -> None:
        assert delivery.response is not None
        self._deliveries.sent(delivery)
        await self._send(delivery.response)

    # -- receiving ----------------------------------------------------------------------------------------
    def _handle(self, raw: str | bytes) -> None:
        """One message from the cloud; nothing it contains can end the session unless authenticated."""
        try:
            message = protocol.decode(raw, protocol.SERVER_MESSAGE_TYPES)
        except protocol.ProtocolError as exc:
            self._observer.on_warning(f"Ignored a message from the server: {exc.message}")
            return
        kind = message["type"]
        if not protocol.verify(message, self._key):
            # Before the session is open, the helper stack answers `release` (and refusals) unsigned.
            unsigned_reply = self._opened is None and kind in (protocol.MSG_RELEASED, protocol.MSG_ERROR)
            if not unsigned_reply:
                self._observer.on_warning(
                    f"Ignored a {kind!r} message that is not authenticated for this session"
                )
                return
        try:
            self._dispatch(kind, message)
        except Exception as exc:  # a malformed but authenticated message must not end the session either
            self._observer.on_warning(f"Ignored a {kind!r} message that could not be handled: {exc}")

    def _dispatch(self, kind: str, message: dict[str, Any]) -> None:
        if kind == protocol.MSG_INVOKE:
            self._on_invoke(message)
        elif kind == protocol.MSG_STORED:
            delivery = self._deliveries.stored(key_of(message))
            if delivery is not None:
                self._observer.on_invocation_stored(delivery.request_id)
        elif kind == protocol.MSG_UPLOAD_URL:
            self._resolve_upload(message)
        elif kind == protocol.MSG_ERROR:
            self._on_error(message)
        elif kind == protocol.MSG_PONG:
            for waiter in self._pong_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._pong_waiters.clear()
        elif kind == protocol.MSG_CLOSED:
            self._on_closed(message)
        else:
            future = self._replies.get(kind)
            if future is not None and not future.done():
                future.set_result(message)

    def _on_invoke(self, message: dict[str, Any]) -> None:
        if self._opened is None:
            self._observer.on_warning("Ignored an invocation that arrived before the session was open")
            return
        decision, delivery = self._deliveries.receive(message)
        if decision == Decision.RUN:
            observed = message.get("observed")
            self._spawn(
                self._execute(message, delivery) if observed is None else self._observe(message, delivery)
            )
            return
        self._observer.on_duplicate_invoke(delivery.request_id)
        if "observed" in message:
            return  # an observed invocation is never answered: nothing to repeat
        if decision == Decision.REPEAT_ACK:
            self._spawn(self._send(delivery.ack))
        elif decision == Decision.REPEAT_ANSWER:
            self._spawn(self._send_response(delivery))

    async def _observe(self, message: dict[str, Any], delivery: Delivery) -> None:
        """Observe mode: the cloud has answered already; the local run is shown next to its outcome,
        and nothing is sent back (no caller waits, so a breakpoint holds nobody)."""
        try:
            invocation, outcome = await self._run_locally(message, delivery)
            self._deliveries.refused(delivery)  # finished: a repeated post is ignored
            self._observer.on_invocation_observed(invocation, outcome, message["observed"])
        finally:
            self._finished(delivery.request_id)

    async def _execute(self, message: dict[str, Any], delivery: Delivery) -> None:
        ack = self._spawn(self._acknowledge_later(delivery))
        try:
            invocation, outcome = await self._run_locally(message, delivery)
            response, outcome = await self._response(delivery, outcome)
            ack.cancel()
            self._deliveries.answered(delivery, response)
            self._observer.on_invocation_answered(invocation, outcome)
            await self._send_response(delivery)
        finally:
            self._finished(delivery.request_id)

    async def _run_locally(self, message: dict[str, Any], delivery: Delivery) -> tuple[Invocation, Outcome]:
        assert self._loop is not None
        started = time.monotonic()
        function = message.get("function") or {}
        invocation = Invocation(
            request_id=delivery.request_id,
            function_name=delivery.function_name,
            handler=str(message.get("handler", "")),
            event_json="",
            context=message["context"],
            environment={str(k): str(v) for k, v in message["environment"].items()},
            credentials=message.get("credentials"),
            caller=delivery.caller,
            delivery_id=delivery.delivery_id,
            version=str(function.get("version") or "$LATEST"),
        )
        try:
            event_json = inline_event(message)
            if event_json is None:
                event_json = await self._loop.run_in_executor(self._io_pool, download_event, message)
            invocation = replace(invocation, event_json=event_json)
            delivery.invocation = invocation
            self._observer.on_invocation_started(invocation)
            outcome = await self._loop.run_in_executor(self._run_pool, self._runner, invocation)
        except EventUnavailableError as exc:
            outcome = local_failure("PlldbEventUnavailable", f"plldb could not read the event: {exc}")
        except Exception as exc:
            outcome = local_failure(
                "PlldbLocalError",
                f"plldb could not run the function locally: {type(exc).__name__}: {exc}",
                traceback.format_exception(exc),
            )
        if not outcome.duration_ms:
            outcome = Outcome(
                outcome.status_code, outcome.payload, outcome.error, (time.monotonic() - started) * 1000
            )
        return invocation, outcome

    async def _acknowledge_later(self, delivery: Delivery) -> None:
        """A quick answer needs no ack: the ack only tells the layer a slow one is coming."""
        await asyncio.sleep(self._settings.ack_delay_seconds)
        if delivery.phase == Phase.RUNNING:
            delivery.acked = True
            await self._send(delivery.ack)

    async def _response(
        self, delivery: Delivery, outcome: Outcome
    ) -> tuple[protocol.ResponseMessage, Outcome]:
        """The `response` message for ``outcome``, uploading a result too large for a message first."""
        message = inline_response(delivery.caller, delivery.delivery_id, outcome)
        if message is not None:
            return message, outcome
        data = response_text(outcome).encode("utf-8")
        if len(data) > protocol.MAX_PAYLOAD_BYTES:
            outcome = response_too_large(len(data))
            message = inline_response(delivery.caller, delivery.delivery_id, outcome)
            assert message is not None
            return message, outcome
        try:
            reply = await self._upload_url(delivery, len(data))
            assert self._loop is not None
            await self._loop.run_in_executor(self._io_pool, upload, str(reply["url"]), data)
        except (SessionRefused, TimeoutError, OSError) as exc:
            outcome = local_failure("PlldbResponseUnavailable", f"plldb could not send the result: {exc}")
            message = inline_response(delivery.caller, delivery.delivery_id, outcome)
            assert message is not None
            return message, outcome
        object_message = protocol.result_object_message(
            delivery.caller, delivery.delivery_id, protocol.sha256_hex(data), len(data)
        )
        return object_message, outcome

    async def _upload_url(self, delivery: Delivery, size: int) -> dict[str, Any]:
        assert self._loop is not None
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._uploads[delivery.key] = future
        message = protocol.upload_message(delivery.caller, delivery.delivery_id, size)
        self._unanswered[delivery.key] = message
        try:
            await self._send(message)
            reply = await asyncio.wait_for(future, self._settings.reply_timeout_seconds)
        finally:
            self._uploads.pop(delivery.key, None)
            self._unanswered.pop(delivery.key, None)
        if reply.get("type") == protocol.MSG_ERROR:
            raise SessionRefused(reply)
        return reply

    def _resolve_upload(self, message: dict[str, Any]) -> bool:
        future = self._uploads.get(key_of(message) or ("", ""))
        if future is None or future.done():
            return False
        future.set_result(message)
        return True

    def _on_error(self, message: dict[str, Any]) -> None:
        code = message["code"]
        if self._resolve_upload(message):
            return
        delivery = self._deliveries.get(key_of(message))
        if delivery is not None:
            if delivery.phase == Phase.RUNNING:
                # The acknowledgement was refused: the function stopped waiting for this delivery.
                self._observer.on_warning(f"Request {short_id(delivery.request_id)}: {message['message']}")
            elif delivery.phase == Phase.ANSWERED and code == protocol.ERR_ALREADY_ANSWERED:
                if (
                    self._deliveries.stored(delivery.key) is not None
                ):  # an earlier send of this answer was stored
                    self._observer.on_invocation_stored(delivery.request_id)
            elif delivery.phase == Phase.ANSWERED:
                # RequestClosed (the layer gave up on this delivery) or UnknownRequest: it reached no one.
                self._deliveries.refused(delivery)
                self._observer.on_invocation_refused(delivery.request_id, code, message["message"])
            return
        pending = [future for future in self._replies.values() if not future.done()]
        if pending and "caller" not in message:
            pending[0].set_result(message)
            return
        if code == protocol.ERR_NO_SESSION and not self._detaching:
            self._finish(
                1, f"The server closed this session: {message['message']}. Run 'plldb attach' again."
            )
            return
        self._observer.on_warning(f"The server refused a message: {code}: {message['message']}")

    def _on_closed(self, message: dict[str, Any]) -> None:
        future = self._replies.get(protocol.MSG_CLOSED)
        if self._detaching and future is not None and not future.done():
            future.set_result(message)
            return
        by = str(message.get("by") or "") or None
        reason = str(message.get("message") or message.get("reason") or "")
        self._observer.on_session_ended(by, reason)
        text = f"The session was ended elsewhere: {reason}"
        if by and by not in reason:  # always say who ended it, when the helper stack knows
            text += f" (by {by})"
        self._finish(1, text)

    # -- background duties --------------------------------------------------------------------------------
    async def _keepalive(self) -> None:
        """An application `ping` inside the idle timeout; no `pong` in time means the connection is dead."""
        assert self._loop is not None
        while True:
            await asyncio.sleep(self._settings.keepalive_seconds)
            connection = self._current
            if connection is None:
                continue
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._pong_waiters.append(waiter)
            if not await self._send({"type": protocol.MSG_PING}, connection):
                continue
            try:
                await asyncio.wait_for(waiter, self._settings.pong_timeout_seconds)
            except TimeoutError:
                if connection is self._current:
                    self._observer.on_warning("No answer to the keep-alive ping; reconnecting.")
                    self._spawn(connection.websocket.close())

    async def _resend_unconfirmed(self) -> None:
        """Answers whose `stored` never came are sent again (a repeat is harmless: AlreadyAnswered)."""
        interval = self._settings.response_confirm_seconds
        while True:
            await asyncio.sleep(interval / 2)
            again, given_up = self._deliveries.due_resends(interval)
            for delivery in given_up:
                self._observer.on_invocation_refused(
                    delivery.request_id,
                    "Unconfirmed",
                    f"the server did not confirm the answer after {delivery.sends} sends",
                )
            for delivery in again:
                if self._current is not None and delivery.response is not None:
                    await self._send_response(delivery)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self._done is not None and not self._done.done():
            self._finish(1, f"Internal error in the session: {type(error).__name__}: {error}")

    def _finish(self, exit_code: int, message: str | None) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(SessionOutcome(exit_code, message))

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        self.stop_requested.set()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        for connection in list(self._connections) + ([self._current] if self._current else []):
            with contextlib.suppress(Exception):
                await connection.websocket.close()
        self._current = None
        await asyncio.gather(*[t for t in self._tasks if t is not current], return_exceptions=True)
        for pool in (self._run_pool, self._io_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
