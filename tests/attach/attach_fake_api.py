"""A fake helper stack that speaks protocol v2 to the session client, as the real routes and dispatcher do.

It plays, on real sockets, what the developer's plldb talks to:

- the WebSocket API's ``$connect`` with AWS_IAM authorization: the upgrade must carry a SigV4 signature
  (service execute-api) that verifies with a principal's secret, else 403, as API Gateway refuses a
  failed authorization; a first connection creates a PENDING session owned by that principal (a session
  id connects once), a reconnection moves an ACTIVE session when the same principal presents the next
  token of the session's chain (``handlers/routes.py`` ``on_connect``);
- ``$default`` as ``routes.on_message``: ``open`` (stack resolved, helper stack refused, lock taken
  or StackLocked), ``release``, ``ack``, ``upload``, ``response``, ``ping`` and ``close``, each refusal an
  ``error`` that changes nothing; replies signed with the session's key once it has one;
- the dispatcher's signed ``invoke`` posts (``dispatcher.invoke_message``), for invocation items the
  test creates as the layer would;
- S3's presigned URLs of payload objects: a tiny HTTP server that serves event objects and stores the
  bodies PUT to upload URLs.

A test can cut connections, silence pongs and ``stored`` confirmations, drop WebSocket ping frames,
refuse PUTs, post anything (signed with any key, unsigned, binary, hostile) and read every frame's size.
Everything it records wakes ``Changes.until`` waiters, so tests wait for events, never for time.
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import itertools
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from plldb import protocol
from plldb.local.session import Signer, sigv4_signer

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
STACK_NAME = "hello-stack"
STACK_ID = (
    f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{STACK_NAME}/5e1c0a30-0000-4000-8000-00000000abcd"
)
HELPER_STACK_NAME = "plldb"
HELPER_STACK_ID = (
    f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/plldb/5e1c0a30-0000-4000-8000-00000000beef"
)
ROLE_ID = "AROAEXAMPLEHELLOROLE1"  # the unique id of the debugged function's execution role
PAYLOAD_BUCKET = "plldb-payloads"
FIXED_EPOCH = 1_700_000_000  # the fake's clock: CreatedAt of sessions and locks


@dataclass(frozen=True)
class Principal:
    """An IAM identity: its access key signs the upgrade, API Gateway reports its ARN to the routes."""

    access_key: str
    secret_key: str
    arn: str

    def boto_session(self) -> boto3.Session:
        return boto3.Session(
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key, region_name=REGION
        )

    def signer(self) -> Signer:
        return sigv4_signer(self.boto_session(), REGION)


DEVELOPER = Principal("AKIAEXAMPLEDEVELOPER", "developer-secret-key", f"arn:aws:iam::{ACCOUNT_ID}:user/dev")
ALICE = Principal("AKIAEXAMPLEALICE0000", "alice-secret-key", f"arn:aws:iam::{ACCOUNT_ID}:user/alice")
BOB = Principal("AKIAEXAMPLEBOB000000", "bob-secret-key", f"arn:aws:iam::{ACCOUNT_ID}:user/bob")
STRANGER = Principal("AKIAEXAMPLESTRANGER0", "stranger-secret-key", f"arn:aws:iam::{ACCOUNT_ID}:user/x")
PRINCIPALS = (DEVELOPER, ALICE, BOB)  # the identities IAM knows (STRANGER's key is unknown to it)

SIGN = object()  # post(): sign with the session's key (the default)


def when(epoch: int) -> str:
    """The time as the routes write it into StackLocked."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def caller_of(function_name: str, role_id: str = ROLE_ID) -> str:
    """The aws:userid of a function's execution role session: what the layer writes its items under."""
    return f"{role_id}:{function_name}"


# --- waiting for events ---------------------------------------------------------------------------------
class Changes:
    """Wakes the test's waiters whenever something recorded changes, from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[None]] = []

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake()
        else:
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop closed meanwhile: nobody waits any more
                pass

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; it is checked again at every recorded change."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        while not predicate():
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            await waiter


class Timeline:
    """What happened, in order, on every side of the test (the fake, the lifecycle, the observer)."""

    def __init__(self, changes: Changes | None = None) -> None:
        self.changes = changes or Changes()
        self._lock = threading.Lock()
        self.events: list[tuple[str, Any]] = []

    def add(self, kind: str, value: Any = None) -> None:
        with self._lock:
            self.events.append((kind, value))
        self.changes.notify()

    def values(self, kind: str) -> list[Any]:
        with self._lock:
            return [value for name, value in self.events if name == kind]

    def kinds(self, *kinds: str) -> list[str]:
        """The order in which events of these kinds happened."""
        with self._lock:
            return [name for name, _ in self.events if not kinds or name in kinds]

    async def until(self, predicate: Callable[[], bool]) -> None:
        await self.changes.until(predicate)


# --- SigV4, as API Gateway checks it -------------------------------------------------------------------------
def verified_principal(host: str, path: str, headers: Mapping[str, str]) -> Principal | None:
    """The principal whose secret produced the upgrade's SigV4 signature, or None (API Gateway: 403).

    The signature covers the method, the path, the query string (session id, reconnect token) and the
    signed headers, so a request whose URL changed after signing does not verify.
    """
    authorization = headers.get("Authorization") or ""
    prefix = "AWS4-HMAC-SHA256 "
    if not authorization.startswith(prefix):
        return None
    fields = dict(
        part.strip().split("=", 1) for part in authorization[len(prefix) :].split(",") if "=" in part
    )
    scope = fields.get("Credential", "").split("/")
    if len(scope) != 5 or scope[2:] != [REGION, "execute-api", "aws4_request"]:
        return None
    principal = next((p for p in PRINCIPALS if p.access_key == scope[0]), None)
    amz_date = headers.get("X-Amz-Date") or ""
    if principal is None or not amz_date.startswith(scope[1]):
        return None
    signed = fields.get("SignedHeaders", "").split(";")
    copied = {name: headers[name] for name in headers if name.lower() in signed and name.lower() != "host"}
    request = AWSRequest(method="GET", url=f"http://{host}{path}", headers=copied)
    request.context["timestamp"] = amz_date
    auth = SigV4Auth(Credentials(principal.access_key, principal.secret_key), "execute-api", REGION)
    if auth.signed_headers(auth.headers_to_sign(request)).split(";") != signed:
        return None
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    return principal if fields.get("Signature") == expected else None


# --- payload objects behind presigned URLs ------------------------------------------------------------------
class PayloadObjects:
    """S3 as the presigned URLs of the payload bucket reach it: GET of event objects, PUT of results."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.objects: dict[str, bytes] = {}
        self.puts: list[str] = []
        self.refuse_puts = False
        self._grants: dict[str, tuple[str, str]] = {}  # token -> (method, key)
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        objects = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                key, data = objects._granted("GET", self.path), None
                if key is not None:
                    with objects._lock:
                        data = objects.objects.get(key)
                objects.timeline.add("get" if data is not None else "get refused", key)
                if data is None:
                    self._answer(403, b"<Error><Code>AccessDenied</Code></Error>")
                else:
                    self._answer(200, data)

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                key = objects._granted("PUT", self.path)
                if key is None or objects.refuse_puts:
                    objects.timeline.add("put refused", key)
                    self._answer(403, b"<Error><Code>AccessDenied</Code></Error>")
                    return
                with objects._lock:
                    objects.objects[key] = body
                    objects.puts.append(key)
                objects.timeline.add("put", key)
                self._answer(200, b"")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def presign(self, method: str, key: str) -> str:
        """A URL that allows ``method`` on ``key`` only, like generate_presigned_url."""
        assert self._server is not None
        token = uuid.uuid4().hex
        with self._lock:
            self._grants[token] = (method, key)
        port = self._server.server_address[1]
        return (
            f"http://127.0.0.1:{port}/{PAYLOAD_BUCKET}/{quote(key, safe='/~')}"
            f"?X-Amz-Expires={protocol.PAYLOAD_URL_SECONDS}&X-Amz-Signature={token}"
        )

    def put_object(self, key: str, data: bytes) -> None:
        with self._lock:
            self.objects[key] = data

    def get_object(self, key: str) -> bytes | None:
        with self._lock:
            return self.objects.get(key)

    def _granted(self, method: str, path: str) -> str | None:
        parts = urlsplit(path)
        token = (parse_qs(parts.query).get("X-Amz-Signature") or [""])[0]
        key = unquote(parts.path).removeprefix(f"/{PAYLOAD_BUCKET}/")
        with self._lock:
            return key if self._grants.get(token) == (method, key) else None


# --- the WebSocket side -----------------------------------------------------------------------------------
class RecordingConnection(ServerConnection):
    """Records the payload size of every data frame it receives, and the ping frames (it may drop them)."""

    frame_sizes: list[int]
    ping_frames: int
    drop_pings: bool
    connection_id: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frame_sizes = []
        self.ping_frames = 0
        self.drop_pings = False
        self.connection_id = None
        original = self.protocol.recv_frame

        def recv_frame(frame: Frame) -> None:
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self.frame_sizes.append(len(frame.data))
            if frame.opcode is Opcode.PING:
                self.ping_frames += 1
                if self.drop_pings:
                    return  # a gateway that does not answer ping frames
            original(frame)

        self.protocol.recv_frame = recv_frame  # type: ignore[method-assign]


@dataclass
class Upgrade:
    """One upgrade request as $connect saw it."""

    query: dict[str, str]
    authorization: str | None
    principal: str | None  # the ARN API Gateway authenticated, if the signature verified
    status: int  # 101 accepted, 403 refused by $connect, or the gateway's own failure
    reason: str
    connection_id: str | None


@dataclass
class Received:
    connection_id: str
    message: dict[str, Any] | None  # None: refused by decode()
    size: int


@dataclass
class FakeSession:
    """A PLLDBSessions item."""

    session_id: str
    owner: str
    connection_id: str
    status: str = protocol.STATUS_PENDING
    created_at: int = FIXED_EPOCH
    key: str | None = None
    anchor: str | None = None
    stack_id: str | None = None
    stack_name: str | None = None
    closed_reason: str | None = None
    closed_by: str | None = None
    disconnected: bool = False


@dataclass
class Invocation:
    """A PLLDBInvocations item, as the layer wrote it and the routes update it."""

    caller: str
    delivery_id: str
    session_id: str
    request_id: str
    invoke: dict[str, Any]  # the dispatcher's message, unsigned
    acks: int = 0
    response_code: int | None = None
    response: dict[str, Any] | None = None
    reason: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.caller, self.delivery_id)


@dataclass
class FakeHelperStack:
    """The helper stack's side of every session. Use it in the test's event loop with ``async with``."""

    timeline: Timeline = field(default_factory=Timeline)
    stacks: dict[str, str] = field(
        default_factory=lambda: {STACK_NAME: STACK_ID, HELPER_STACK_NAME: HELPER_STACK_ID}
    )
    confirm_responses: bool = True  # False: the routes store responses but their `stored` never arrives
    lose_responses: bool = False  # True: responses never reach the routes (nothing stored, no reply)
    ignore_ping_frames: bool = False  # True: WebSocket ping frames get no pong frame
    mute_pings: set[str] = field(default_factory=set)  # connections whose `ping` gets no `pong`
    carrying: list[str] = field(default_factory=list)  # functions still carrying a holder's session
    upgrade_gate: asyncio.Event | None = None  # when set: $connect waits for it (the upgrade is pending)
    cut_on: str | None = None  # the next message of this type is lost with its connection (cut, once)
    failing_upgrades: list[int] = field(default_factory=list)  # statuses of the next upgrades (5xx, 429)
    lose_next_reconnect: bool = False  # the next reconnect is accepted ($connect ran), then the upgrade fails
    upgrades: list[Upgrade] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    connections: dict[str, RecordingConnection] = field(default_factory=dict)
    sessions: dict[str, FakeSession] = field(default_factory=dict)
    locks: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # stack id -> session, owner, since
    items: dict[tuple[str, str], Invocation] = field(default_factory=dict)
    payloads: PayloadObjects = field(init=False)  # the payload bucket, behind presigned URLs
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # run when the test ends
    _connection_sessions: dict[str, str] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _server: Server | None = None

    def __post_init__(self) -> None:
        self.payloads = PayloadObjects(self.timeline)

    async def __aenter__(self) -> FakeHelperStack:
        self.timeline.changes.bind(asyncio.get_running_loop())
        self.payloads.start()
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._connect,
            create_connection=RecordingConnection,
            compression=None,
            max_size=protocol.WEBSOCKET_MESSAGE_LIMIT,
            ping_interval=None,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        for cleanup in self.cleanups:
            await cleanup()
        self._server.close()
        await self._server.wait_closed()
        self.payloads.stop()

    @property
    def url(self) -> str:
        """The WebSocket URL as the client reaches it (the execute-api override already applied)."""
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/abc123/plldb"

    async def until(self, predicate: Callable[[], bool]) -> None:
        await self.timeline.until(predicate)

    # -- $connect ---------------------------------------------------------------------------------------
    async def _connect(self, connection: ServerConnection, request: Request) -> Response | None:
        assert isinstance(connection, RecordingConnection)
        if self.upgrade_gate is not None:
            self.timeline.add("upgrade pending")
            await self.upgrade_gate.wait()
        query = {key: values[0] for key, values in parse_qs(urlsplit(request.path).query).items()}
        headers = {name: value for name, value in request.headers.raw_items()}
        if self.failing_upgrades:  # the gateway itself fails before $connect runs
            status = self.failing_upgrades.pop(0)
            self._record_upgrade(Upgrade(query, headers.get("Authorization"), None, status, "gateway", None))
            return connection.respond(status, '{"message": "Internal server error"}\n')
        principal = verified_principal(request.headers.get("Host", ""), request.path, headers)
        session_id, token = query.get("sessionId"), query.get("reconnectToken")
        if principal is None:
            reason = "the request is not signed by a known principal (execute-api:Invoke)"
        elif not session_id or not protocol.SESSION_ID_PATTERN.match(session_id):
            reason = "missing or malformed session id"
        elif token is None:
            reason = self._create_session(session_id, principal.arn)
        else:
            reason = self._reconnect(session_id, token, principal.arn)
        upgrade = Upgrade(
            query=query,
            authorization=headers.get("Authorization"),
            principal=principal.arn if principal else None,
            status=403 if reason else 101,
            reason=reason,
            connection_id=None,
        )
        if not reason and token is not None and self.lose_next_reconnect:
            # $connect accepted the token (the anchor moved), then the upgrade failed on its way back.
            self.lose_next_reconnect = False
            upgrade.status, upgrade.reason = 502, "accepted, then lost"
            self._record_upgrade(upgrade)
            return connection.respond(502, '{"message": "Internal server error"}\n')
        if not reason:
            assert session_id is not None
            connection_id = f"conn-{next(self._ids)}"
            upgrade.connection_id = connection_id
            connection.connection_id = connection_id
            connection.drop_pings = self.ignore_ping_frames
            self.connections[connection_id] = connection
            self._connection_sessions[connection_id] = session_id
            self.sessions[session_id].connection_id = connection_id
            self.sessions[session_id].disconnected = False
        self._record_upgrade(upgrade)
        return connection.respond(403, '{"message": "Forbidden"}\n') if reason else None

    def _record_upgrade(self, upgrade: Upgrade) -> None:
        self.upgrades.append(upgrade)
        self.timeline.add("upgrade", upgrade)

    def _create_session(self, session_id: str, owner: str) -> str:
        if session_id in self.sessions:
            return "the session id was used before (a session id connects once)"
        self.sessions[session_id] = FakeSession(session_id=session_id, owner=owner, connection_id="")
        return ""

    def _reconnect(self, session_id: str, token: str, owner: str) -> str:
        session = self.sessions.get(session_id)
        if session is None:
            return "no such session"
        if session.status != protocol.STATUS_ACTIVE:
            return f"the session is {session.status}, not ACTIVE"
        if protocol.principal_of(session.owner) != protocol.principal_of(owner):
            return "the session belongs to another principal"
        if not protocol.reconnect_token_matches(token, session.anchor):
            return "the reconnect token does not match the session"
        session.anchor = token
        return ""

    # -- $default ---------------------------------------------------------------------------------------
    async def _handle(self, connection: ServerConnection) -> None:
        assert isinstance(connection, RecordingConnection) and connection.connection_id is not None
        connection_id = connection.connection_id
        self.timeline.add("connected", connection_id)
        try:
            async for raw in connection:
                await self._on_message(connection_id, raw)
        except ConnectionClosed:
            pass
        finally:
            self._on_disconnect(connection_id)

    def _on_disconnect(self, connection_id: str) -> None:
        session = self.sessions.get(self._connection_sessions.get(connection_id, ""))
        if session is not None and session.connection_id == connection_id:
            if session.status == protocol.STATUS_PENDING:
                self._close_session(session, protocol.CLOSED_ABANDONED, "")
            else:
                session.disconnected = True
        self.timeline.add("disconnected", connection_id)

    async def _on_message(self, connection_id: str, raw: str | bytes) -> None:
        session = self.sessions.get(self._connection_sessions.get(connection_id, ""))
        key = session.key if session else None
        size = len(raw.encode("utf-8") if isinstance(raw, str) else raw)
        try:
            message = protocol.decode(raw, protocol.CLIENT_MESSAGE_TYPES)
        except protocol.ProtocolError as exc:
            self._record(Received(connection_id, None, size))
            await self._send(connection_id, protocol.error_message(exc.code, exc.message), key)
            return
        self._record(Received(connection_id, message, size))
        if self.cut_on == message["type"]:
            self.cut_on = None
            self.cut(connection_id)  # the network fails before the routes see the message
            return
        if session is None:
            text = "this connection has no plldb session; run 'plldb attach' again"
            await self._refuse(connection_id, key, protocol.ERR_NO_SESSION, text, message)
            return
        kind = message["type"]
        if kind == protocol.MSG_OPEN:
            await self._open(connection_id, session, message)
        elif kind == protocol.MSG_RELEASE:
            await self._release(connection_id, session, message)
        elif kind == protocol.MSG_ACK:
            item = await self._answerable(connection_id, session, message)
            if item is not None:
                item.acks += 1
        elif kind == protocol.MSG_UPLOAD:
            await self._upload(connection_id, session, message)
        elif kind == protocol.MSG_RESPONSE and not self.lose_responses:
            await self._response(connection_id, session, message)
        elif kind == protocol.MSG_PING:
            if connection_id not in self.mute_pings:
                await self._send(connection_id, {"type": protocol.MSG_PONG}, key)
        elif kind == protocol.MSG_CLOSE:
            self._close_session(session, protocol.CLOSED_DETACHED, session.owner)
            await self._send(
                connection_id, protocol.closed_message(protocol.CLOSED_DETACHED, session.owner), key
            )

    def _record(self, received: Received) -> None:
        self.received.append(received)
        self.timeline.add("received", received.message["type"] if received.message else None)

    async def _send(self, connection_id: str, message: Mapping[str, Any], key: str | None) -> None:
        connection = self.connections.get(connection_id)
        if connection is None:
            return
        outgoing = protocol.sign(message, key) if key else dict(message)
        try:
            await connection.send(protocol.encode(outgoing))
        except ConnectionClosed:
            pass

    async def _refuse(
        self,
        connection_id: str,
        key: str | None,
        code: str,
        text: str,
        message: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        caller = message.get("caller") if message else None
        delivery_id = message.get("deliveryId") if message else None
        reply = protocol.error_message(code, text, caller, delivery_id)
        reply.update(extra)
        await self._send(connection_id, reply, key)

    def _resolve(self, reference: str) -> tuple[str, str] | None:
        """(StackId, name) of a stack name or StackId, as stacks.resolve_stack does."""
        for name, stack_id in self.stacks.items():
            if reference in (name, stack_id):
                return stack_id, name
        return None

    async def _open(self, connection_id: str, session: FakeSession, message: Mapping[str, Any]) -> None:
        key = str(message["sessionKey"])  # from now on the replies are authenticated
        if session.status != protocol.STATUS_PENDING:
            text = "this session is already open or closed; run 'plldb attach' again"
            await self._refuse(connection_id, key, protocol.ERR_WRONG_STATE, text)
            return
        stack = self._resolve(str(message["stack"]))
        if stack is None:
            text = "Stack {!r} does not exist in {}.".format(str(message["stack"])[:200], REGION)
            await self._refuse(connection_id, key, protocol.ERR_STACK_NOT_FOUND, text)
            return
        stack_id, name = stack
        if stack_id == HELPER_STACK_ID:
            text = f"Stack {name!r} is the plldb helper stack itself; it cannot be debugged with plldb."
            await self._refuse(connection_id, key, protocol.ERR_HELPER_STACK, text)
            return
        holder = self._lock_holder(stack_id)
        if holder is not None and holder.session_id != session.session_id:
            _, owner, since = self.locks[stack_id]
            text = f"Stack {name!r} is already being debugged by {owner} (since {when(since)})."
            await self._refuse(
                connection_id,
                key,
                protocol.ERR_STACK_LOCKED,
                text,
                owner=owner,
                since=since,
                stackName=name,
            )
            return
        self.locks[stack_id] = (session.session_id, session.owner, FIXED_EPOCH)
        session.status = protocol.STATUS_ACTIVE
        session.key = key
        session.anchor = str(message["reconnectAnchor"])
        session.stack_id, session.stack_name = stack_id, name
        await self._send(
            connection_id, protocol.opened_message(session.session_id, stack_id, name, session.owner), key
        )
        self.timeline.add("opened", session.session_id)

    def _lock_holder(self, stack_id: str) -> FakeSession | None:
        """The live session that holds the stack; a holder that is gone is abandoned and loses the lock."""
        lock = self.locks.get(stack_id)
        if lock is None:
            return None
        holder = self.sessions.get(lock[0])
        live = holder is not None and holder.status == protocol.STATUS_ACTIVE
        if holder is not None and live and self._connection_alive(holder.connection_id):
            return holder
        if holder is not None and holder.status != protocol.STATUS_CLOSED:
            self._close_session(holder, protocol.CLOSED_ABANDONED, "")
        del self.locks[stack_id]
        return None

    def _connection_alive(self, connection_id: str) -> bool:
        """GetConnection: False once API Gateway knows the connection is gone."""
        connection = self.connections.get(connection_id)
        return connection is not None and connection.close_code is None

    async def _release(self, connection_id: str, session: FakeSession, message: Mapping[str, Any]) -> None:
        key = session.key
        if session.status != protocol.STATUS_PENDING:
            text = "release is sent before open, from a new connection"
            await self._refuse(connection_id, key, protocol.ERR_WRONG_STATE, text)
            return
        stack = self._resolve(str(message["stack"]))
        if stack is None:
            text = "Stack {!r} does not exist in {}.".format(str(message["stack"])[:200], REGION)
            await self._refuse(connection_id, key, protocol.ERR_STACK_NOT_FOUND, text)
            return
        stack_id, name = stack
        lock = self.locks.get(stack_id)
        holder = self.sessions.get(lock[0]) if lock else None
        if holder is None or holder.status == protocol.STATUS_CLOSED:
            self.locks.pop(stack_id, None)
            await self._send(connection_id, protocol.released_message(stack_id, 0), key)
            return
        releaser = session.owner
        if protocol.principal_of(releaser) != protocol.principal_of(holder.owner) and self.carrying:
            still = self.carrying
            text = (
                "{} still carr{} the instrumentation of the session of {}; plldb ends that session only once "
                "its functions are restored (which needs permission to change them).".format(
                    ", ".join(still), "ies" if len(still) == 1 else "y", holder.owner
                )
            )
            await self._refuse(connection_id, key, protocol.ERR_RELEASE_REFUSED, text)
            return
        text = f"stack {name} was restored and released by {releaser}"
        self._close_session(holder, protocol.CLOSED_RELEASED, releaser)
        self.locks.pop(stack_id, None)
        await self._send(
            holder.connection_id,
            protocol.closed_message(protocol.CLOSED_RELEASED, releaser, text),
            holder.key,
        )
        await self._send(connection_id, protocol.released_message(stack_id, 1), key)

    async def _answerable(
        self, connection_id: str, session: FakeSession, message: Mapping[str, Any]
    ) -> Invocation | None:
        """The invocation the message may change (this session's, unanswered), else the routes' refusal."""
        item = self.items.get((message["caller"], message["deliveryId"]))
        if item is not None and item.session_id == session.session_id and item.response_code is None:
            return item
        code, text = refusal(item, session.session_id)
        await self._refuse(connection_id, session.key, code, text, message)
        return None

    async def _upload(self, connection_id: str, session: FakeSession, message: Mapping[str, Any]) -> None:
        if await self._answerable(connection_id, session, message) is None:
            return
        caller, delivery_id = message["caller"], message["deliveryId"]
        url = self.payloads.presign("PUT", protocol.response_object_key(caller, delivery_id))
        await self._send(connection_id, protocol.upload_url_message(caller, delivery_id, url), session.key)

    async def _response(self, connection_id: str, session: FakeSession, message: Mapping[str, Any]) -> None:
        if message.get("payloadObject"):
            data = self.payloads.get_object(
                protocol.response_object_key(message["caller"], message["deliveryId"])
            )
            size = None if data is None else len(data)
            if size != message["payloadSize"]:
                text = "the result object is {}, not {} bytes as announced".format(
                    "missing" if size is None else f"{size} bytes", message["payloadSize"]
                )
                await self._refuse(connection_id, session.key, protocol.ERR_PAYLOAD_MISSING, text, message)
                return
        item = await self._answerable(connection_id, session, message)
        if item is None:
            return
        item.response_code = int(message["statusCode"])
        item.response = dict(message)
        self.timeline.add("stored", item.key)
        if self.confirm_responses:
            stored = protocol.stored_message(message["caller"], message["deliveryId"])
            await self._send(connection_id, stored, session.key)

    def _close_session(self, session: FakeSession, reason: str, by: str) -> None:
        if session.status == protocol.STATUS_CLOSED:
            return
        session.status = protocol.STATUS_CLOSED
        session.closed_reason, session.closed_by = reason, by or "-"
        if session.stack_id and self.locks.get(session.stack_id, ("",))[0] == session.session_id:
            del self.locks[session.stack_id]
        self.timeline.add("session closed", (session.session_id, reason))

    # -- what a test does ---------------------------------------------------------------------------------
    def opened_session(self) -> FakeSession:
        """The session most recently opened (the one a test posts invocations to by default)."""
        opened = [s for s in self.sessions.values() if s.stack_id is not None]
        assert opened, "no session was opened"
        return opened[-1]

    async def deliver(
        self,
        request_id: str,
        *,
        event: str | None = '{"name": "world"}',
        event_object: bytes | None = None,
        event_sha256: str | None = None,
        function: str = "hello-fn",
        delivery_id: str | None = None,
        session_id: str | None = None,
        connection_id: str | None = None,
        key: Any = SIGN,
        given_up: tuple[int, str | None] | None = None,
        **extra: Any,
    ) -> tuple[str, str]:
        """The layer's item for one delivery, then the dispatcher's signed `invoke`; returns its key.

        ``event_object`` goes as an event object behind a presigned GET, with its digest (or
        ``event_sha256``), as the dispatcher sends events too large for a message. ``given_up``: the
        layer closed the item (503 or 504, with a reason) before the invoke reached the developer.
        """
        session = self.sessions[session_id] if session_id else self.opened_session()
        caller = caller_of(function)
        delivery_id = delivery_id or protocol.new_delivery_id()
        message: dict[str, Any] = {
            "type": protocol.MSG_INVOKE,
            "v": protocol.PROTOCOL_VERSION,
            "caller": caller,
            "deliveryId": delivery_id,
            "requestId": request_id,
            "function": {"name": function, "version": "$LATEST", "logicalPath": "HelloFunction"},
            "handler": "app.lambda_handler",
            "context": {
                "functionName": function,
                "functionVersion": "$LATEST",
                "invokedFunctionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function}",
                "memoryLimitInMB": "128",
                "deadlineMs": 1_700_000_900_000,
            },
            "environment": {"GREETING": "hello", "AWS_REGION": REGION},
            "credentials": {"accessKeyId": "ASIAFUNCTION", "secretAccessKey": "s", "sessionToken": "t"},
        }
        if event_object is not None:
            object_key = protocol.event_object_key(caller, delivery_id)
            self.payloads.put_object(object_key, event_object)
            message["eventUrl"] = self.payloads.presign("GET", object_key)
            message["eventSha256"] = event_sha256 or protocol.sha256_hex(event_object)
            message["eventSize"] = len(event_object)
        elif event is not None:
            message["event"] = event
        message.update(extra)
        item = Invocation(caller, delivery_id, session.session_id, request_id, message)
        if given_up is not None:
            item.response_code, item.reason = given_up
        self.items.setdefault(item.key, item)
        await self.post(
            message, connection_id=connection_id or session.connection_id, key=key, session=session
        )
        return item.key

    async def repost(self, key: tuple[str, str], connection_id: str | None = None) -> None:
        """The dispatcher posting the same delivery again (to the session's new connection)."""
        item = self.items[key]
        session = self.sessions[item.session_id]
        await self.post(item.invoke, connection_id=connection_id or session.connection_id, session=session)

    async def post(
        self,
        message: Mapping[str, Any],
        *,
        connection_id: str | None = None,
        key: Any = SIGN,
        session: FakeSession | None = None,
    ) -> None:
        """post_to_connection of ``message``: signed with the session's key, another ``key``, or None."""
        session = session or self.opened_session()
        signing_key = session.key if key is SIGN else key
        outgoing = protocol.sign(message, signing_key) if signing_key else dict(message)
        await self.post_raw(protocol.encode(outgoing), connection_id or session.connection_id)

    async def post_raw(self, data: str | bytes, connection_id: str) -> None:
        """Any text (or binary) frame, as it is."""
        await self.connections[connection_id].send(data)

    def close_session(self, session_id: str, reason: str = protocol.CLOSED_ABANDONED) -> None:
        """The manager or the sweep closed the session (a reconnect is then refused)."""
        self._close_session(self.sessions[session_id], reason, "")

    def cut(self, connection_id: str) -> None:
        """Drop the TCP connection with no close frame, as a network failure would."""
        self.connections[connection_id].transport.abort()

    def messages(self, kind: str, connection_id: str | None = None) -> list[dict[str, Any]]:
        return [
            received.message
            for received in self.received
            if received.message is not None
            and received.message["type"] == kind
            and (connection_id is None or received.connection_id == connection_id)
        ]

    def messages_about(self, kind: str, key: tuple[str, str]) -> list[dict[str, Any]]:
        return [m for m in self.messages(kind) if (m.get("caller"), m.get("deliveryId")) == key]

    def received_kinds(self, connection_id: str | None = None) -> list[str | None]:
        return [
            r.message["type"] if r.message else None
            for r in self.received
            if connection_id is None or r.connection_id == connection_id
        ]

    def accepted_upgrades(self) -> list[Upgrade]:
        return [upgrade for upgrade in self.upgrades if upgrade.status == 101]


def refusal(item: Invocation | None, session_id: str) -> tuple[str, str]:
    """Why an ack, upload or response cannot change ``item`` (routes._refusal)."""
    if item is None or item.session_id != session_id:
        return protocol.ERR_UNKNOWN_REQUEST, "no such invocation is waiting in this session"
    if item.response_code == protocol.RESPONSE_CODE_TIMEOUT:
        return (
            protocol.ERR_REQUEST_CLOSED,
            "the function stopped waiting at its deadline; this answer came too late",
        )
    if item.response_code == protocol.RESPONSE_CODE_UNAVAILABLE:
        reason = item.reason or "no debugger acknowledged the invocation in time"
        return protocol.ERR_REQUEST_CLOSED, f"the function stopped waiting: {reason}"
    if item.response_code is not None:
        return protocol.ERR_ALREADY_ANSWERED, "this invocation already has an answer"
    return protocol.ERR_UNKNOWN_REQUEST, "no such invocation is waiting in this session"
