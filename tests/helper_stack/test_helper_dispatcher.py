"""The dispatcher: an instrumented function's invocation reaches the developer debugging it, and no one else.

The layer's side is played as the layer does it: the function's code writes its invocation item under its
own identity, then hands the dispatcher the key and the payload. Its calls are checked against
InstrumentedFunctionPolicy for that identity (the local cloud enforces no IAM).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
import uuid
from typing import Any

import pytest
from helper_stack_events import ALICE
from helper_stack_sessions import OK, AttachedStack, Client, concurrently, opened
from security_iam import CallRecorder, Names, denied_calls, lambda_function_principal

from plldb import protocol
from plldb.bootstrap.cloudformation.handlers import dispatcher
from plldb.instrumentation import functions

EVENT = '{"order": 17}'
LAYERS: list[Layer] = []  # every layer a test played, whose calls must be allowed for its identity
CREDENTIALS = {"accessKeyId": "ASIAFUNCTIONROLE0001", "secretAccessKey": "secret", "sessionToken": "token"}


class Layer:
    """The layer inside one function: its identity (role id:function name) and its own AWS calls."""

    def __init__(self, helper: Any, app: Any, function: str, role_id: str | None = None) -> None:
        self.helper = helper
        self.function = function
        config = app.configuration(function)
        self.role_id = role_id or app.role_id(config["Role"])
        self.caller = f"{self.role_id}:{function}"
        self.recorder = CallRecorder()
        self.dynamodb = self.recorder.attach(helper.session.client("dynamodb"))
        self.s3 = self.recorder.attach(helper.session.client("s3"))
        self.sessions: dict[str, str] = {}  # delivery id -> the session its item names
        self.claims_session = True  # as the layer does; False: a layer of before `sessionId` existed
        LAYERS.append(self)

    def payload(self, *, version: str = "$LATEST", event: str | None = EVENT, **extra: Any) -> dict[str, Any]:
        """What the layer hands the dispatcher (credentials included; they are never stored)."""
        payload: dict[str, Any] = {
            "requestId": str(uuid.uuid4()),
            "function": {"version": version},
            "handler": "index.handler",
            "context": {
                "functionName": self.function,
                "functionVersion": version,
                "invokedFunctionArn": f"arn:aws:lambda:us-east-1:123456789012:function:{self.function}",
                "memoryLimitInMB": "128",
                "deadlineMs": int(time.time() * 1000) + 60_000,
                "traceId": "Root=1-5f84c7a9-8a4c6e2b5d3e1f0a9b8c7d6e",
                "clientContext": None,
                "cognitoIdentity": None,
            },
            "environment": {
                "ORDERS_TABLE": "orders",
                "AWS_REGION": "us-east-1",
                "AWS_LAMBDA_FUNCTION_NAME": self.function,
                **{name: "leaked" for name in protocol.CREDENTIAL_VARIABLES},
                "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
            },
            "credentials": CREDENTIALS,
        }
        if event is not None:
            payload["event"] = event
        payload.update(extra)
        return payload

    def record(self, session_id: str, payload: dict[str, Any], delivery_id: str | None = None) -> str:
        """The invocation item, under this function's own identity; its digest binds the payload."""
        delivery_id = delivery_id or protocol.new_delivery_id()
        self.dynamodb.put_item(
            TableName=self.helper.tables["PLLDBInvocations"],
            Item={
                protocol.A_CALLER: {"S": self.caller},
                protocol.A_DELIVERY_ID: {"S": delivery_id},
                protocol.A_SESSION_ID: {"S": session_id},
                protocol.A_REQUEST_ID: {"S": payload["requestId"]},
                protocol.A_FUNCTION_NAME: {"S": self.function},
                protocol.A_PAYLOAD_SHA256: {"S": protocol.payload_digest(payload)},
                protocol.A_TTL: {"N": str(int(time.time()) + protocol.INVOCATION_ITEM_TTL_SECONDS)},
            },
            ConditionExpression="attribute_not_exists(#caller)",
            ExpressionAttributeNames={"#caller": protocol.A_CALLER},
        )
        self.sessions[delivery_id] = session_id
        return delivery_id

    def deliver(
        self, delivery_id: str, payload: Any, caller: str | None = None, action: str = "deliver"
    ) -> dict[str, Any]:
        event = {"action": action, "caller": caller or self.caller, "deliveryId": delivery_id}
        if self.claims_session and delivery_id in self.sessions:
            event["sessionId"] = self.sessions[delivery_id]
        if payload is not None:
            event["payload"] = payload
        return dispatcher.handle(event, self.helper.dispatcher)

    def item(self, delivery_id: str) -> dict[str, Any] | None:
        return self.helper.invocation_item(self.caller, delivery_id)

    def refused_calls(self) -> list[str]:
        principal = lambda_function_principal(
            [self.helper.deployment.managed_policy("InstrumentedFunctionPolicy")],
            self.role_id,
            f"arn:aws:lambda:us-east-1:123456789012:function:{self.function}",
        )
        names = Names(self.helper.names.region, self.helper.names.account, self.helper.names.hash_keys)
        return denied_calls(self.recorder.take(), principal, names, self.helper.deployment.bucket_policies())


class Attached(AttachedStack):
    claims_session = True

    def layer(self, path: str = "Fn0") -> Layer:
        layer = Layer(self.helper, self.app, self.functions[path])
        layer.claims_session = self.claims_session
        return layer


@pytest.fixture
def attached(helper, app, request) -> Attached:
    """A session with the stack's functions; ``indirect`` False plays a layer that names no session."""
    stack = Attached(helper, app)
    stack.claims_session = getattr(request, "param", True)
    return stack


# Both ways a layer hands over a delivery: naming its session (one read fewer) and, as layers deployed
# before that did, without it; the dispatcher keeps the same checks and reasons on both.
BOTH_PATHS = pytest.mark.parametrize("attached", [True, False], indirect=True, ids=["claimed", "legacy"])


@pytest.fixture(autouse=True)
def the_layers_calls_are_allowed_by_the_instrumented_function_policy() -> Any:
    LAYERS.clear()
    yield
    assert [line for layer in LAYERS for line in layer.refused_calls()] == []


@BOTH_PATHS
# --- Delivery ------------------------------------------------------------------------------------------------
def test_an_invocation_reaches_its_developer_signed_without_any_credential_variable(helper, attached):
    layer = attached.layer()
    payload = layer.payload()
    delivery = layer.record(attached.client.session_id, payload)

    assert layer.deliver(delivery, payload) == {"status": "posted"}

    (message,) = attached.invokes()
    assert attached.client.verified(message) == {
        "type": "invoke",
        "v": protocol.PROTOCOL_VERSION,
        "caller": layer.caller,
        "deliveryId": delivery,
        "requestId": payload["requestId"],
        "function": {"name": layer.function, "version": "$LATEST", "logicalPath": "Fn0"},
        "handler": "index.handler",
        "context": payload["context"],
        "event": EVENT,
        "environment": {
            "ORDERS_TABLE": "orders",
            "AWS_REGION": "us-east-1",
            "AWS_LAMBDA_FUNCTION_NAME": layer.function,
        },
        "credentials": CREDENTIALS,
    }
    assert protocol.decode(protocol.encode(message)) == message, "the client takes it as it is"
    assert protocol.A_POSTED_AT in layer.item(delivery)


def test_a_function_of_a_nested_stack_is_a_function_of_the_session(helper, attached):
    layer = attached.layer("Api/Handler")
    payload = layer.payload()
    delivery = layer.record(attached.client.session_id, payload)

    assert layer.deliver(delivery, payload) == {"status": "posted"}
    assert attached.invokes()[-1]["function"]["logicalPath"] == "Api/Handler"


@BOTH_PATHS
def test_a_delivery_is_posted_once_even_when_handed_over_twice_at_once(helper, attached, monkeypatch, caplog):
    """Both read the unposted item before either marks it: only the mark's condition stops the second.
    Both are answered "posted" (a retried invoke whose first answer was lost must not fail the call)."""
    layer = attached.layer()
    payload = layer.payload()
    delivery = layer.record(attached.client.session_id, payload)
    both_read = threading.Barrier(2)
    get_item = helper.dispatcher.dynamodb.get_item

    def read_then_wait(**arguments: Any) -> Any:
        item = get_item(**arguments)
        if arguments["TableName"] == helper.tables["PLLDBInvocations"]:
            both_read.wait()
        return item

    monkeypatch.setattr(helper.dispatcher.dynamodb, "get_item", read_then_wait)

    with caplog.at_level(logging.INFO, logger="plldb.dispatcher"):
        verdicts = concurrently(
            lambda: layer.deliver(delivery, payload), lambda: layer.deliver(delivery, payload)
        )
    monkeypatch.undo()

    assert verdicts == [{"status": "posted"}, {"status": "posted"}]
    assert len(attached.invokes()) == 1
    assert [r.getMessage() for r in caplog.records if "again" in r.getMessage()] == [
        "delivery handed over again; posted once"
    ]
    assert layer.deliver(delivery, payload) == {"status": "posted"}
    assert len(attached.invokes()) == 1


def test_an_event_too_large_for_a_message_goes_as_a_presigned_url_to_the_callers_own_object(helper, attached):
    layer = attached.layer()
    event = json.dumps({"blob": "x" * 200_000}).encode()
    payload = layer.payload(
        event=None, eventObject=True, eventSha256=protocol.sha256_hex(event), eventSize=len(event)
    )
    delivery = protocol.new_delivery_id()
    layer.s3.put_object(
        Bucket=helper.bucket, Key=protocol.event_object_key(layer.caller, delivery), Body=event
    )
    layer.record(attached.client.session_id, payload, delivery)

    assert layer.deliver(delivery, payload) == {"status": "posted"}

    message = attached.client.verified(attached.invokes()[-1])
    assert "event" not in message
    assert (message["eventSha256"], message["eventSize"]) == (protocol.sha256_hex(event), len(event))
    with urllib.request.urlopen(message["eventUrl"]) as response:
        assert response.read() == event


def test_an_alias_invocation_is_checked_against_the_version_it_runs(helper, attached, app):
    layer = attached.layer()
    version = app.lambda_client.publish_version(FunctionName=layer.function)["Version"]
    payload = layer.payload(version=version)
    delivery = layer.record(attached.client.session_id, payload)

    assert layer.deliver(delivery, payload) == {"status": "posted"}
    assert attached.invokes()[-1]["function"]["version"] == version

    other = attached.layer("Fn1")
    plain = app.lambda_client.publish_version(FunctionName=other.function)["Version"]
    functions.restore(
        attached.clients, functions.FunctionRef(other.function, "Fn1"), attached.client.session_id
    )
    restored = app.lambda_client.publish_version(FunctionName=other.function)["Version"]
    for version_run, carries in ((plain, True), (restored, False)):
        payload = other.payload(version=version_run)
        delivery = other.record(attached.client.session_id, payload)
        verdict = other.deliver(delivery, payload)
        assert verdict["status"] == ("posted" if carries else "refused"), (version_run, verdict)


@BOTH_PATHS
# --- Refusals: not a legitimate request ----------------------------------------------------------------------
def test_a_delivery_without_the_callers_own_item_is_refused(helper, attached):
    layer, other = attached.layer("Fn0"), attached.layer("Fn1")
    payload = other.payload()
    delivery = other.record(attached.client.session_id, payload)

    assert layer.deliver(delivery, payload) == {
        "status": "refused",
        "reason": "no invocation item was written for this delivery",
    }
    assert (
        layer.deliver(protocol.new_delivery_id(), payload)["reason"]
        == "no invocation item was written for this delivery"
    )
    assert attached.invokes() == []
    assert protocol.A_POSTED_AT not in other.item(delivery)


@BOTH_PATHS
@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: p["environment"].update(LD_PRELOAD="/tmp/evil.so"),
        lambda p: p.update(handler="evil.handler"),
        lambda p: p.update(event='{"order": 18}'),
        lambda p: p.update(credentials={"accessKeyId": "ASIAATTACKER"}),
        lambda p: p["function"].update(version="1"),
    ],
    ids=["environment", "handler", "event", "credentials", "version"],
)
def test_a_payload_that_does_not_match_the_item_is_refused_and_nothing_is_posted(helper, attached, tamper):
    layer = attached.layer()
    payload = layer.payload()
    delivery = layer.record(attached.client.session_id, payload)
    tampered = json.loads(json.dumps(payload))
    tamper(tampered)

    assert layer.deliver(delivery, tampered) == {
        "status": "refused",
        "reason": "the payload does not match the invocation item",
    }
    assert attached.invokes() == []
    assert protocol.A_POSTED_AT not in layer.item(delivery)
    assert layer.deliver(delivery, payload) == {"status": "posted"}, "the genuine payload still goes"


@BOTH_PATHS
def test_a_caller_whose_function_is_not_instrumented_for_the_session_is_refused(helper, attached):
    layer = attached.layer("Fn1")
    functions.restore(
        attached.clients, functions.FunctionRef(layer.function, "Fn1"), attached.client.session_id
    )
    payload = layer.payload()
    delivery = layer.record(attached.client.session_id, payload)

    assert layer.deliver(delivery, payload) == {
        "status": "refused",
        "reason": f"function {layer.function} is not instrumented for this session",
    }
    assert attached.invokes() == []


@BOTH_PATHS
def test_a_caller_that_names_another_session_than_its_function_carries_is_refused(helper, attached, stack):
    """A function instrumented for Alice's session cannot send its invocations to Bob's."""
    bob = opened(helper, stack[1])
    layer = attached.layer()
    payload = layer.payload()
    delivery = layer.record(bob.session_id, payload)

    assert (
        layer.deliver(delivery, payload)["reason"]
        == f"function {layer.function} is not instrumented for this session"
    )
    assert [m for m in helper.management.messages(bob.connection_id) if m["type"] == "invoke"] == []


@BOTH_PATHS
def test_a_caller_whose_role_is_not_the_functions_execution_role_is_refused(helper, attached):
    """Another role's session named like the function (or any principal writing under that name)."""
    impostor = Layer(helper, attached.app, attached.functions["Fn0"], role_id="AROAIMPOSTORROLEID001")
    payload = impostor.payload()
    delivery = impostor.record(attached.client.session_id, payload)

    assert impostor.deliver(delivery, payload) == {
        "status": "refused",
        "reason": f"the caller is not the execution role of function {impostor.function}",
    }
    assert attached.invokes() == []


def test_a_function_outside_the_sessions_stack_is_refused_even_if_it_carries_the_session(
    helper, attached, app
):
    outsider = app.create_function(role=app.new_role())
    result = functions.instrument(
        attached.clients, functions.FunctionRef(outsider, "Outsider"), attached.target()
    )
    assert result.ok
    layer = Layer(helper, app, outsider)
    payload = layer.payload()
    delivery = layer.record(attached.client.session_id, payload)

    assert layer.deliver(delivery, payload) == {
        "status": "refused",
        "reason": f"function {outsider} is not part of the session's stack",
    }
    assert attached.invokes() == []


def test_a_caller_whose_function_does_not_exist_is_refused(helper, attached):
    ghost = Layer(helper, attached.app, attached.functions["Fn0"])
    ghost.function, ghost.caller = "deleted-fn", f"{ghost.role_id}:deleted-fn"
    payload = ghost.payload()
    delivery = ghost.record(attached.client.session_id, payload)
    assert (
        ghost.deliver(delivery, payload)["reason"] == "function deleted-fn (version $LATEST) does not exist"
    )


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            {"action": "deliver", "caller": "AKIAEXAMPLE:fn", "deliveryId": "0f" * 16},
            "the caller is not a Lambda function's identity",
        ),
        (
            {"action": "deliver", "caller": "AROAX:fn\n", "deliveryId": "0f" * 16},
            "the caller is not a Lambda function's identity",
        ),
        (
            {"action": "deliver", "caller": "AROAX:fn", "deliveryId": "0F" * 16},
            "the delivery id is malformed",
        ),
        (
            {"action": "deliver", "caller": 7, "deliveryId": None},
            "the caller is not a Lambda function's identity",
        ),
        ({}, "the caller is not a Lambda function's identity"),
    ],
)
def test_malformed_requests_are_refused_before_any_read(helper, event, reason):
    assert dispatcher.handle(event, helper.dispatcher) == {"status": "refused", "reason": reason}


def test_unknown_actions_and_payloads_that_are_not_objects_are_refused(helper, attached):
    layer = attached.layer()
    payload = layer.payload()
    delivery = layer.record(attached.client.session_id, payload)
    assert layer.deliver(delivery, payload, action="explode") == {
        "status": "refused",
        "reason": "unknown action 'explode'",
    }
    for wrong in (None, "text", [payload]):
        assert layer.deliver(delivery, wrong)["reason"] == "the payload does not match the invocation item"
    assert attached.invokes() == []


# --- Absent: nobody can take it, the layer applies the function's fallback -----------------------------------
@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("closed", "its debugging session has ended"),
        ("expired", "its debugging session has expired"),
        ("missing", "its debugging session no longer exists"),
        ("pending", "no debugger has opened its debugging session"),
    ],
)
def test_an_invocation_for_a_session_nobody_can_take_is_absent_with_the_reason(
    helper, attached, state, reason
):
    session_id = attached.client.session_id
    if state == "closed":
        helper.update_session(session_id, **{protocol.A_STATUS: protocol.STATUS_CLOSED})
    elif state == "expired":
        helper.update_session(session_id, **{protocol.A_TTL: int(time.time()) - 1})
    elif state == "pending":
        helper.update_session(session_id, **{protocol.A_STATUS: protocol.STATUS_PENDING})
    else:
        session_id = str(uuid.uuid4())
    layer = attached.layer()
    payload = layer.payload()
    delivery = layer.record(session_id, payload)

    assert layer.deliver(delivery, payload) == {"status": "absent", "reason": reason}
    assert layer.deliver(delivery, None, action="status") == {"status": "absent", "reason": reason}
    assert attached.invokes() == []
    assert protocol.A_POSTED_AT not in layer.item(delivery)
    assert helper.handed_to_manager() == []


def test_the_status_of_a_live_session_is_live(helper, attached):
    layer = attached.layer()
    payload = layer.payload()
    delivery = layer.record(attached.client.session_id, payload)
    assert layer.deliver(delivery, None, action="status") == {"status": "live"}


def test_a_gone_connection_makes_the_invocation_absent_and_starts_the_sessions_restore_clock(
    helper, attached
):
    helper.management.go(attached.client.connection_id)
    layer = attached.layer()
    payload = layer.payload()
    delivery = layer.record(attached.client.session_id, payload)
    helper.handed_to_manager()
    before = time.time()

    assert layer.deliver(delivery, payload) == {
        "status": "absent",
        "reason": "the debugger's WebSocket connection is gone",
    }

    ((asker, handed),) = helper.handed_to_manager()
    not_before = handed.pop("notBefore")
    assert asker == "DispatcherFunction"
    assert handed == {
        "action": "restore_if_abandoned",
        "sessionId": attached.client.session_id,
        "connectionId": attached.client.connection_id,
    }
    grace = helper.dispatcher.disconnect_grace_seconds
    assert before + grace <= not_before <= time.time() + grace


def test_a_session_that_reconnected_gets_the_invocation_on_its_new_connection(helper, attached, monkeypatch):
    """The debugger reconnects between the dispatcher's read of the session and its post."""
    old = attached.client.connection_id
    read = helper.dispatcher.get_session
    moved: list[str] = []

    def read_then_reconnect(session_id: str) -> Any:
        session = read(session_id)
        if not moved:
            assert attached.client.reconnect() == OK
            helper.management.go(old)
            moved.append(attached.client.connection_id)
        return session

    monkeypatch.setattr(helper.dispatcher, "get_session", read_then_reconnect)
    layer = attached.layer()
    payload = layer.payload()
    delivery = layer.record(attached.client.session_id, payload)

    assert layer.deliver(delivery, payload) == {"status": "posted"}

    assert attached.invokes(old) == []
    (message,) = attached.invokes(moved[0])
    assert attached.client.verified(message)["deliveryId"] == delivery
    assert helper.handed_to_manager() == []


def test_a_reconnected_session_is_posted_to_at_its_current_connection(helper, attached):
    old = attached.client.connection_id
    assert attached.client.reconnect() == OK
    layer = attached.layer()
    payload = layer.payload()
    delivery = layer.record(attached.client.session_id, payload)

    assert layer.deliver(delivery, payload) == {"status": "posted"}
    assert attached.invokes(old) == []
    assert len(attached.invokes()) == 1


def test_another_developers_session_never_receives_the_invocation(helper, attached, stack):
    bob = Client(helper)
    assert bob.connect() == OK
    layer = attached.layer()
    payload = layer.payload()
    delivery = layer.record(attached.client.session_id, payload)
    assert layer.deliver(delivery, payload) == {"status": "posted"}
    assert helper.management.messages(bob.connection_id) == []
    assert attached.client.session()[protocol.A_OWNER] == ALICE.user_arn
