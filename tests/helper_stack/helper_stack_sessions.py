"""A developer's plldb as the helper stack's routes see it, and what tests of the routes build on."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from helper_stack_events import ALICE, Caller, connect_event, message_event, new_connection_id

from plldb import protocol
from plldb.bootstrap.cloudformation.handlers import routes
from plldb.instrumentation import functions
from plldb.instrumentation.decisions import Target

OK = {"statusCode": 200}
FORBIDDEN = {"statusCode": 403}


class Client:
    """One developer's plldb as the routes see it: a session id, its key and reconnect chain, a connection."""

    def __init__(self, helper: Any, caller: Caller = ALICE) -> None:
        self.helper = helper
        self.caller = caller
        self.session_id = str(uuid.uuid4())
        self.connection_id = new_connection_id()
        self.key = protocol.new_secret()
        self.seed = protocol.new_secret()
        self.reconnects = 0

    @property
    def anchor(self) -> str:
        return protocol.reconnect_token(self.seed, protocol.RECONNECT_CHAIN_LENGTH)

    def next_token(self) -> str:
        return protocol.reconnect_token(self.seed, protocol.RECONNECT_CHAIN_LENGTH - self.reconnects - 1)

    def connect(self, caller: Caller | None = None) -> dict[str, Any]:
        query = {"sessionId": self.session_id}
        return routes.on_connect(
            connect_event(self.connection_id, query, caller or self.caller), self.helper.routes
        )

    def reconnect(self, caller: Caller | None = None, token: str | None = None) -> dict[str, Any]:
        """A new connection of the same session, with the next token of the chain (or ``token``)."""
        connection_id = new_connection_id()
        query = {"sessionId": self.session_id, "reconnectToken": token or self.next_token()}
        result = routes.on_connect(
            connect_event(connection_id, query, caller or self.caller), self.helper.routes
        )
        if result == OK:
            self.connection_id = connection_id
            self.reconnects += 1
        return result

    def send(self, body: Any, connection_id: str | None = None, binary: bool = False) -> list[dict[str, Any]]:
        """One message to $default; what the routes posted back to that connection."""
        connection_id = connection_id or self.connection_id
        text = body if isinstance(body, (str, bytes)) else json.dumps(body)
        before = len(self.helper.management.messages(connection_id))
        assert routes.on_message(message_event(connection_id, text, binary), self.helper.routes) == OK
        return self.helper.management.messages(connection_id)[before:]

    def open(self, stack: str) -> dict[str, Any]:
        (reply,) = self.send(protocol.open_message(stack, self.key, self.anchor))
        return reply

    def verified(self, reply: dict[str, Any]) -> dict[str, Any]:
        """The reply without its mac, which must verify with this session's key."""
        assert protocol.verify(reply, self.key), reply
        return {k: v for k, v in reply.items() if k != "mac"}

    def session(self) -> dict[str, Any]:
        item = self.helper.session_item(self.session_id)
        assert item is not None
        return item


def stack_with_functions(app: Any, count: int = 1) -> tuple[str, str, dict[str, str]]:
    """(StackId, name, logical path -> function name) of a new application stack."""
    role = app.new_role()
    stack_id = app.create_stack({f"Fn{i}": app.function_resource(role) for i in range(count)})
    return stack_id, stack_id.split("/")[1], app.stack_functions(stack_id)


def opened(helper: Any, stack_name: str, caller: Caller = ALICE) -> Client:
    client = Client(helper, caller)
    assert client.connect() == OK
    assert client.verified(client.open(stack_name))["type"] == protocol.MSG_OPENED
    return client


def invocation(helper: Any, session_id: str, **attributes: Any) -> tuple[str, str]:
    """An invocation item as the layer writes it under its own identity; (caller, delivery id)."""
    caller = "AROA3XFRBF535PLBIFPI4:app-fn-" + uuid.uuid4().hex[:8]
    delivery_id = protocol.new_delivery_id()
    item = {
        protocol.A_CALLER: caller,
        protocol.A_DELIVERY_ID: delivery_id,
        protocol.A_SESSION_ID: session_id,
        protocol.A_REQUEST_ID: str(uuid.uuid4()),
        protocol.A_FUNCTION_NAME: caller.split(":")[1],
        protocol.A_PAYLOAD_SHA256: protocol.sha256_hex(b"payload"),
        protocol.A_TTL: int(time.time()) + protocol.INVOCATION_ITEM_TTL_SECONDS,
    }
    item.update(attributes)
    helper.put("PLLDBInvocations", item)
    return caller, delivery_id


def concurrently(*actions: Callable[[], Any]) -> list[Any]:
    """Run the actions on their own threads, released together by a barrier; their results in order."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)
    errors: list[BaseException] = []

    def run(index: int, action: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results[index] = action()
        except BaseException as exc:  # reported by the test, not lost on a thread
            barrier.abort()
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


class AttachedStack:
    """A developer attached to a stack: an opened session, the stack's functions instrumented for it."""

    def __init__(
        self,
        helper: Any,
        app: Any,
        caller: Caller = ALICE,
        prepare: Callable[[Any, dict[str, str]], None] | None = None,
        count: int = 2,
        nested: bool = True,
    ) -> None:
        """Functions Fn0.. (and Api/Handler in a nested stack); ``prepare`` changes the deployed
        functions (a deploy) before anything is instrumented."""
        self.helper, self.app = helper, app
        self.role = app.new_role()
        self.stack_id = app.create_stack(
            {f"Fn{i}": app.function_resource(self.role) for i in range(count)},
            nested={"Api": {"Handler": app.function_resource(self.role)}} if nested else None,
        )
        self.stack_name = self.stack_id.split("/")[1]
        self.functions = app.stack_functions(self.stack_id)
        if prepare is not None:
            prepare(app, self.functions)
        self.before = {path: app.snapshot(name) for path, name in self.functions.items()}
        self.client = opened(helper, self.stack_name, caller)
        self.clients = functions.Clients(
            lambda_client=app.lambda_client,
            iam=app.iam,
            region="us-east-1",
            layer_version_arn=helper.layer_version_arn,
            policy_arn=helper.policy_arn,
        )
        for path, name in self.functions.items():
            result = functions.instrument(self.clients, functions.FunctionRef(name, path), self.target())
            assert result.ok, result

    def target(self) -> Target:
        return Target(
            session_id=self.client.session_id,
            dispatcher_arn=self.helper.dispatcher_arn,
            invocations_table=self.helper.tables["PLLDBInvocations"],
            payload_bucket=self.helper.bucket,
            layer_version_arn=self.helper.layer_version_arn,
            timeout=60,
        )

    def snapshots(self) -> dict[str, Any]:
        return {path: self.app.snapshot(name) for path, name in self.functions.items()}

    def instrumented_for(self) -> dict[str, str | None]:
        """The session each function (its $LATEST) carries."""
        return {
            path: self.app.variables(name).get(protocol.ENV_SESSION_ID)
            for path, name in self.functions.items()
        }

    def invokes(self, connection_id: str | None = None) -> list[dict[str, Any]]:
        messages = self.helper.management.messages(connection_id or self.client.connection_id)
        return [m for m in messages if m["type"] == protocol.MSG_INVOKE]
