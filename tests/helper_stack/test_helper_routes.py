"""The WebSocket routes ($connect, $default, $disconnect) against real DynamoDB, CloudFormation and Lambda
calls (moto), with replies through the management API.

Identity comes from AWS ($connect is AWS_IAM); every refusal is one error and changes nothing; every
change is one conditional write, so of two racing requests exactly one wins.
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
from helper_stack_events import (
    ADMIN_ALICE,
    ALICE,
    ALICE_REFRESHED,
    BOB,
    Caller,
    connect_event,
    disconnect_event,
    message_event,
    new_connection_id,
)
from helper_stack_sessions import (
    FORBIDDEN,
    OK,
    Client,
    concurrently,
    invocation,
    opened,
    stack_with_functions,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plldb import protocol
from plldb.bootstrap.cloudformation.handlers import routes

NOT_WAITING = "no such invocation is waiting in this session"
REFERENCE = {"caller": "AROA3XFRBF535PLBIFPI4:app-fn-x", "deliveryId": "0f" * 16}


# --- $connect ----------------------------------------------------------------------------------------------
def test_a_first_connection_creates_a_pending_session_owned_by_the_signer(helper):
    client = Client(helper)
    before = int(time.time())

    assert client.connect() == OK

    session = client.session()
    after = int(time.time())
    assert before + protocol.PENDING_SESSION_TTL_SECONDS <= session.pop(protocol.A_TTL) <= after + 60
    assert before <= session.pop(protocol.A_CREATED_AT) <= after
    assert session == {
        protocol.A_SESSION_ID: client.session_id,
        protocol.A_STATUS: protocol.STATUS_PENDING,
        protocol.A_OWNER: ALICE.user_arn,
        protocol.A_CONNECTION_ID: client.connection_id,
    }
    connection = helper.item("PLLDBConnections", ConnectionId=client.connection_id)
    assert connection[protocol.A_SESSION_ID] == client.session_id
    assert before + protocol.CONNECTION_ITEM_TTL_SECONDS <= connection[protocol.A_TTL] <= after + 3 * 3600


@pytest.mark.parametrize(
    "query",
    [
        None,
        {},
        {"sessionId": ""},
        {"sessionId": "not-a-uuid"},
        {"sessionId": "9ADA04B8-639D-476F-AF6A-40C89714B812"},
        {"sessionId": "9ada04b8-639d-476f-af6a-40c89714b812\n"},
        {"sessionId": "9ada04b8-639d-176f-af6a-40c89714b812"},
    ],
    ids=[
        "no-query",
        "no-session-id",
        "empty",
        "not-a-uuid",
        "uppercase",
        "trailing-newline",
        "not-version-4",
    ],
)
def test_a_connection_without_a_well_formed_session_id_is_refused_and_writes_nothing(helper, query):
    before = helper.snapshot()
    assert routes.on_connect(connect_event(new_connection_id(), query, ALICE), helper.routes) == FORBIDDEN
    assert helper.snapshot() == before


def test_a_connection_without_an_iam_identity_is_refused_and_writes_nothing(helper):
    client = Client(helper)
    before = helper.snapshot()
    event = connect_event(client.connection_id, {"sessionId": client.session_id}, None)
    assert routes.on_connect(event, helper.routes) == FORBIDDEN
    event["requestContext"]["identity"]["userArn"] = ""
    assert routes.on_connect(event, helper.routes) == FORBIDDEN
    assert helper.snapshot() == before


def test_a_session_id_connects_once_whoever_tries_again(helper):
    client = Client(helper)
    assert client.connect() == OK
    first = client.session()

    again = Client(helper, BOB)
    again.session_id = client.session_id
    assert again.connect() == FORBIDDEN
    client.connection_id = new_connection_id()
    assert client.connect() == FORBIDDEN, "not even its own owner: a session id is used once"

    assert client.session() == first
    assert helper.item("PLLDBConnections", ConnectionId=again.connection_id) is None


def test_of_two_racing_connects_with_one_session_id_exactly_one_wins(helper):
    alice, bob = Client(helper, ALICE), Client(helper, BOB)
    bob.session_id = alice.session_id

    results = concurrently(alice.connect, bob.connect)

    assert sorted(r["statusCode"] for r in results) == [200, 403]
    winner = alice if results[0] == OK else bob
    loser = bob if winner is alice else alice
    session = winner.session()
    assert (session[protocol.A_OWNER], session[protocol.A_CONNECTION_ID]) == (
        winner.caller.user_arn,
        winner.connection_id,
    )
    assert helper.item("PLLDBConnections", ConnectionId=loser.connection_id) is None


# --- Reconnect ----------------------------------------------------------------------------------------------
def test_a_reconnect_moves_the_active_session_to_the_new_connection_and_consumes_the_token(helper, stack):
    client = opened(helper, stack[1])
    old = client.connection_id
    helper.update_session(client.session_id, **{protocol.A_DISCONNECTED_AT: int(time.time())})
    token = client.next_token()
    before = int(time.time())

    assert client.reconnect() == OK

    session = client.session()
    assert session[protocol.A_CONNECTION_ID] == client.connection_id != old
    assert session[protocol.A_RECONNECT_ANCHOR] == token
    assert protocol.A_DISCONNECTED_AT not in session
    assert session[protocol.A_TTL] >= before + protocol.SESSION_TTL_SECONDS
    assert helper.item("PLLDBConnections", ConnectionId=client.connection_id)[protocol.A_SESSION_ID] == (
        client.session_id
    )
    assert client.reconnect(token=token) == FORBIDDEN, "a token works once"
    assert client.reconnect() == OK, "the next one works"


def test_a_reconnect_by_another_role_session_of_the_same_role_is_the_same_principal(helper, stack):
    client = opened(helper, stack[1])
    assert client.reconnect(caller=ALICE_REFRESHED) == OK
    assert client.session()[protocol.A_OWNER] == ALICE.user_arn


@pytest.mark.parametrize("caller", [BOB, ADMIN_ALICE], ids=["another-user", "another-role-same-session-name"])
def test_a_reconnect_by_another_principal_is_refused_even_with_the_right_token(helper, stack, caller):
    client = opened(helper, stack[1])
    before = client.session()
    assert client.reconnect(caller=caller) == FORBIDDEN
    assert client.session() == before


def test_a_reconnect_needs_the_next_token_of_the_chain(helper, stack):
    client = opened(helper, stack[1])
    before = client.session()
    skipped = protocol.reconnect_token(client.seed, protocol.RECONNECT_CHAIN_LENGTH - 2)
    for token in (skipped, client.anchor, protocol.new_secret(), "not-hex", client.seed):
        assert client.reconnect(token=token) == FORBIDDEN, token
    assert client.session() == before


@pytest.mark.parametrize("state", ["pending", "closed", "expired", "missing"])
def test_a_reconnect_needs_an_active_unexpired_session(helper, stack, state):
    client = Client(helper)
    if state == "missing":
        pass
    elif state == "pending":
        assert client.connect() == OK
    else:
        client = opened(helper, stack[1])
        change = (
            {protocol.A_STATUS: protocol.STATUS_CLOSED}
            if state == "closed"
            else {protocol.A_TTL: int(time.time()) - 1}
        )
        helper.update_session(client.session_id, **change)
    before = helper.snapshot()
    token = protocol.reconnect_token(client.seed, protocol.RECONNECT_CHAIN_LENGTH - 1)
    assert client.reconnect(token=token) == FORBIDDEN
    assert helper.snapshot() == before


def test_of_two_racing_reconnects_with_the_same_token_exactly_one_wins(helper, stack, monkeypatch):
    """Both pass every check on what they read before either writes: only the write's condition on the
    anchor can stop the second (drop it and both win)."""
    client = opened(helper, stack[1])
    token = client.next_token()
    read_both = threading.Barrier(2)
    read = helper.routes.get_session

    def read_then_wait(session_id: str) -> Any:
        session = read(session_id)
        read_both.wait()
        return session

    monkeypatch.setattr(helper.routes, "get_session", read_then_wait)
    connections = [new_connection_id(), new_connection_id()]

    def reconnect(connection_id: str) -> dict[str, Any]:
        query = {"sessionId": client.session_id, "reconnectToken": token}
        return routes.on_connect(connect_event(connection_id, query, ALICE), helper.routes)

    results = concurrently(lambda: reconnect(connections[0]), lambda: reconnect(connections[1]))
    monkeypatch.undo()

    assert sorted(r["statusCode"] for r in results) == [200, 403]
    winner = connections[results.index(OK)]
    assert client.session()[protocol.A_CONNECTION_ID] == winner
    assert client.session()[protocol.A_RECONNECT_ANCHOR] == token


# --- $disconnect ------------------------------------------------------------------------------------------
def test_a_dropped_active_session_is_marked_and_handed_to_the_manager_after_the_grace_period(helper, stack):
    client = opened(helper, stack[1])
    helper.handed_to_manager()
    before = time.time()

    assert routes.on_disconnect(disconnect_event(client.connection_id), helper.routes) == OK

    session = client.session()
    assert session[protocol.A_STATUS] == protocol.STATUS_ACTIVE
    assert int(before) <= session[protocol.A_DISCONNECTED_AT] <= time.time()
    ((asker, payload),) = helper.handed_to_manager()
    not_before = payload.pop("notBefore")
    assert asker == "RoutesFunction"
    assert payload == {
        "action": "restore_if_abandoned",
        "sessionId": client.session_id,
        "connectionId": client.connection_id,
    }
    grace = helper.routes.disconnect_grace_seconds
    assert before + grace <= not_before <= time.time() + grace
    assert helper.item("PLLDBConnections", ConnectionId=client.connection_id) is None


def test_the_disconnect_of_a_replaced_connection_changes_nothing(helper, stack):
    client = opened(helper, stack[1])
    old = client.connection_id
    assert client.reconnect() == OK
    helper.handed_to_manager()
    before = client.session()

    assert routes.on_disconnect(disconnect_event(old), helper.routes) == OK

    assert client.session() == before
    assert helper.handed_to_manager() == []


def test_a_reconnect_landing_while_its_old_connections_disconnect_is_handled_is_logged_and_changes_nothing(
    helper, stack, monkeypatch, caplog
):
    """The routes read the session on its old connection; the reconnect lands before their conditional
    update: the update's condition stops it, and that decision is logged as for any replaced connection
    (a decision not to act is observable, as tests of the whole stack wait for it)."""
    client = opened(helper, stack[1])
    old = client.connection_id
    helper.handed_to_manager()
    resources = helper.routes
    real = resources.get_session

    def read_then_reconnect(session_id: str) -> Any:
        session = real(session_id)
        monkeypatch.setattr(resources, "get_session", real)
        assert client.reconnect() == OK
        return session

    monkeypatch.setattr(resources, "get_session", read_then_reconnect)
    with caplog.at_level(logging.INFO, logger="plldb.routes"):
        assert routes.on_disconnect(disconnect_event(old), resources) == OK
    assert [r.getMessage() for r in caplog.records if "disconnect" in r.getMessage()] == [
        "disconnect of a replaced connection"
    ]
    assert client.session()[protocol.A_CONNECTION_ID] == client.connection_id != old
    assert protocol.A_DISCONNECTED_AT not in client.session()
    assert helper.handed_to_manager() == []


def test_a_dropped_pending_session_is_closed(helper):
    client = Client(helper)
    assert client.connect() == OK
    assert routes.on_disconnect(disconnect_event(client.connection_id), helper.routes) == OK
    session = client.session()
    assert (session[protocol.A_STATUS], session[protocol.A_CLOSED_REASON]) == (
        protocol.STATUS_CLOSED,
        protocol.CLOSED_ABANDONED,
    )
    assert helper.handed_to_manager() == []


def test_the_disconnect_of_an_unknown_connection_changes_nothing(helper):
    before = helper.snapshot()
    assert routes.on_disconnect(disconnect_event(new_connection_id()), helper.routes) == OK
    assert helper.snapshot() == before


# --- open ---------------------------------------------------------------------------------------------------
def test_open_binds_the_session_to_the_stack_by_stack_id_takes_the_lock_and_answers_signed(helper, stack):
    stack_id, stack_name, _ = stack
    client = Client(helper)
    assert client.connect() == OK
    before = int(time.time())

    reply = client.open(stack_name)

    assert client.verified(reply) == {
        "type": "opened",
        "sessionId": client.session_id,
        "stackId": stack_id,
        "stackName": stack_name,
        "owner": ALICE.user_arn,
    }
    session = client.session()
    assert session[protocol.A_STATUS] == protocol.STATUS_ACTIVE
    assert (session[protocol.A_STACK_ID], session[protocol.A_STACK_NAME]) == (stack_id, stack_name)
    assert (session[protocol.A_SESSION_KEY], session[protocol.A_RECONNECT_ANCHOR]) == (
        client.key,
        client.anchor,
    )
    assert session[protocol.A_TTL] >= before + protocol.SESSION_TTL_SECONDS
    lock = helper.lock_item(stack_id)
    assert (lock[protocol.A_SESSION_ID], lock[protocol.A_OWNER]) == (client.session_id, ALICE.user_arn)


def test_open_by_stack_id_locks_the_same_stack_as_open_by_name(helper, stack):
    stack_id, stack_name, _ = stack
    opened(helper, stack_name)
    other = Client(helper, BOB)
    assert other.connect() == OK
    assert other.verified(other.open(stack_id))["code"] == protocol.ERR_STACK_LOCKED


@pytest.mark.parametrize("reference", ["no-such-stack", "not_a_stack_name", "arn:aws:s3:::bucket"])
def test_open_of_a_stack_that_does_not_exist_is_refused_and_changes_nothing(helper, reference):
    client = Client(helper)
    assert client.connect() == OK
    before = helper.snapshot()

    reply = client.open(reference)

    assert client.verified(reply) == {
        "type": "error",
        "code": protocol.ERR_STACK_NOT_FOUND,
        "message": f"Stack {reference!r} does not exist in us-east-1.",
    }
    assert helper.snapshot() == before


@pytest.mark.parametrize("by", ["name", "stack-id"])
def test_the_helper_stack_itself_is_refused_by_name_and_by_stack_id(helper, by):
    """By StackId too: a check on the name alone was bypassed by giving the StackId for the name."""
    client = Client(helper)
    assert client.connect() == OK
    before = helper.snapshot()

    reply = client.open(helper.stack_name if by == "name" else helper.stack_id)

    assert client.verified(reply) == {
        "type": "error",
        "code": protocol.ERR_HELPER_STACK,
        "message": f"Stack {helper.stack_name!r} is the plldb helper stack itself; it cannot be debugged with plldb.",
    }
    assert helper.snapshot() == before


def test_a_stack_debugged_by_a_live_session_is_refused_naming_its_owner_and_since_when(helper, stack):
    stack_id, stack_name, _ = stack
    holder = opened(helper, stack_name)
    helper.update_session(holder.session_id, **{protocol.A_CREATED_AT: 1767225600})
    other = Client(helper, BOB)
    assert other.connect() == OK
    checked = len(helper.management.checked)
    before = helper.snapshot()

    reply = other.open(stack_name)

    assert other.verified(reply) == {
        "type": "error",
        "code": protocol.ERR_STACK_LOCKED,
        "message": f"Stack {stack_name!r} is already being debugged by {ALICE.user_arn} (since 2026-01-01 00:00:00 UTC).",
        "owner": ALICE.user_arn,
        "since": 1767225600,
        "stackName": stack_name,
    }
    assert helper.snapshot() == before
    assert helper.management.checked[checked:] == [holder.connection_id], "its connection was asked for"
    assert helper.handed_to_manager() == []


@pytest.mark.parametrize("stale", ["closed", "expired", "connection-gone"])
def test_a_stale_holder_is_closed_handed_to_the_manager_and_its_lock_taken_over(helper, stack, stale):
    stack_id, stack_name, _ = stack
    holder = opened(helper, stack_name)
    if stale == "closed":
        helper.update_session(holder.session_id, **{protocol.A_STATUS: protocol.STATUS_CLOSED})
    elif stale == "expired":
        helper.update_session(holder.session_id, **{protocol.A_TTL: int(time.time()) - 1})
    else:
        helper.management.go(holder.connection_id)
    helper.handed_to_manager()
    other = Client(helper, BOB)
    assert other.connect() == OK

    assert other.verified(other.open(stack_name))["type"] == protocol.MSG_OPENED

    assert helper.lock_item(stack_id)[protocol.A_SESSION_ID] == other.session_id
    assert holder.session()[protocol.A_STATUS] == protocol.STATUS_CLOSED
    if stale != "closed":
        assert holder.session()[protocol.A_CLOSED_REASON] == protocol.CLOSED_ABANDONED
    assert helper.handed_to_manager() == [
        ("RoutesFunction", {"action": "restore_session", "sessionId": holder.session_id})
    ]


def test_of_two_opens_of_one_stack_at_the_same_instant_exactly_one_gets_the_lock(helper, stack):
    stack_id, stack_name, _ = stack
    alice, bob = Client(helper, ALICE), Client(helper, BOB)
    assert alice.connect() == OK
    assert bob.connect() == OK
    helper.handed_to_manager()

    replies = concurrently(lambda: alice.open(stack_name), lambda: bob.open(stack_name))

    kinds = [
        client.verified(reply).get("code", reply["type"]) for client, reply in zip((alice, bob), replies)
    ]
    assert sorted(kinds) == sorted([protocol.MSG_OPENED, protocol.ERR_STACK_LOCKED])
    winner, loser = (alice, bob) if kinds[0] == protocol.MSG_OPENED else (bob, alice)
    assert helper.lock_item(stack_id)[protocol.A_SESSION_ID] == winner.session_id
    assert winner.session()[protocol.A_STATUS] == protocol.STATUS_ACTIVE
    assert loser.session()[protocol.A_STATUS] == protocol.STATUS_PENDING
    assert helper.handed_to_manager() == [], "an opening session is nobody's leftover"


def test_a_session_still_opening_holds_its_lock_against_a_later_open(helper, stack, monkeypatch):
    """Alice has taken the lock and not yet marked her session ACTIVE when Bob's open runs: Bob is refused
    (Alice is neither closed, expired nor gone), and Alice's open completes."""
    stack_id, stack_name, _ = stack
    alice, bob = Client(helper, ALICE), Client(helper, BOB)
    assert alice.connect() == OK
    assert bob.connect() == OK
    helper.handed_to_manager()
    alice_locked, bob_done = threading.Event(), threading.Event()
    update = helper.routes.update_session

    def update_after_bob(session_id: str, *args: Any, **kwargs: Any) -> Any:
        if session_id == alice.session_id and not alice_locked.is_set():
            alice_locked.set()
            bob_done.wait()
        return update(session_id, *args, **kwargs)

    monkeypatch.setattr(helper.routes, "update_session", update_after_bob)
    replies: dict[str, dict[str, Any]] = {}
    opening = threading.Thread(target=lambda: replies.update(alice=alice.open(stack_name)))
    opening.start()
    alice_locked.wait()
    replies["bob"] = bob.open(stack_name)
    bob_done.set()
    opening.join()
    monkeypatch.undo()

    assert alice.verified(replies["alice"])["type"] == protocol.MSG_OPENED
    assert bob.verified(replies["bob"])["code"] == protocol.ERR_STACK_LOCKED
    assert bob.verified(replies["bob"])["owner"] == ALICE.user_arn
    assert helper.lock_item(stack_id)[protocol.A_SESSION_ID] == alice.session_id
    assert alice.session()[protocol.A_STATUS] == protocol.STATUS_ACTIVE
    assert helper.handed_to_manager() == []


def test_open_twice_is_refused_and_changes_nothing(helper, stack):
    client = opened(helper, stack[1])
    before = helper.snapshot()
    reply = client.open(stack[1])
    assert client.verified(reply) == {
        "type": "error",
        "code": protocol.ERR_WRONG_STATE,
        "message": "this session is already open or closed; run 'plldb attach' again",
    }
    assert helper.snapshot() == before


def test_a_pending_session_past_its_ttl_cannot_be_opened(helper, stack):
    client = Client(helper)
    assert client.connect() == OK
    helper.update_session(client.session_id, **{protocol.A_TTL: int(time.time()) - 1})
    before = helper.snapshot()

    reply = client.open(stack[1])

    assert client.verified(reply) == {
        "type": "error",
        "code": protocol.ERR_WRONG_STATE,
        "message": "this session expired before it was opened; run 'plldb attach' again",
    }
    assert helper.snapshot() == before


# --- Signed replies -----------------------------------------------------------------------------------------
def test_every_reply_to_an_opened_session_is_signed_with_its_key_and_before_open_errors_are_not(
    helper, stack
):
    client = Client(helper)
    assert client.connect() == OK
    (unknown,) = client.send(protocol.ack_message(REFERENCE["caller"], protocol.new_delivery_id()))
    assert "mac" not in unknown and unknown["code"] == protocol.ERR_UNKNOWN_REQUEST

    assert client.verified(client.open(stack[1]))["type"] == "opened"
    for body in ({"type": "ping"}, protocol.ack_message(*invocation(helper, str(uuid.uuid4()))), "not json"):
        (reply,) = client.send(body)
        client.verified(reply)
        assert not protocol.verify(reply, protocol.new_secret())


# --- ack, upload, response ----------------------------------------------------------------------------------
@pytest.fixture
def debugger(helper, stack) -> Client:
    return opened(helper, stack[1])


def test_an_ack_records_when_the_debugger_took_the_invocation(helper, debugger):
    caller, delivery = invocation(helper, debugger.session_id)
    before = int(time.time() * 1000)
    assert debugger.send(protocol.ack_message(caller, delivery)) == []
    item = helper.invocation_item(caller, delivery)
    assert before <= item[protocol.A_ACKED_AT] <= time.time() * 1000
    assert protocol.A_RESPONSE_CODE not in item


def test_a_response_is_stored_once_and_confirmed_with_stored(helper, debugger):
    caller, delivery = invocation(helper, debugger.session_id)

    (reply,) = debugger.send(protocol.result_message(caller, delivery, '{"ok": true}'))

    assert debugger.verified(reply) == {"type": "stored", "caller": caller, "deliveryId": delivery}
    item = helper.invocation_item(caller, delivery)
    assert (item[protocol.A_RESPONSE_CODE], item[protocol.A_RESPONSE]) == (200, '{"ok": true}')
    assert protocol.A_ERROR not in item

    for again in (
        protocol.result_message(caller, delivery, '"again"'),
        protocol.ack_message(caller, delivery),
    ):
        (refused,) = debugger.send(again)
        assert debugger.verified(refused) == {
            "type": "error",
            "code": protocol.ERR_ALREADY_ANSWERED,
            "message": "this invocation already has an answer",
            "caller": caller,
            "deliveryId": delivery,
        }
    assert helper.invocation_item(caller, delivery) == item


def test_an_error_response_stores_the_error_object_as_json_text(helper, debugger):
    caller, delivery = invocation(helper, debugger.session_id)
    error = {"errorMessage": "asked to fail", "errorType": "ValueError", "stackTrace": ['  File "app.py"\n']}

    (reply,) = debugger.send(protocol.failure_message(caller, delivery, error))

    assert debugger.verified(reply)["type"] == "stored"
    item = helper.invocation_item(caller, delivery)
    assert item[protocol.A_RESPONSE_CODE] == 500
    assert json.loads(item[protocol.A_ERROR]) == error
    assert protocol.A_RESPONSE not in item


@pytest.mark.parametrize("whose", ["another-session", "no-such-item"])
@pytest.mark.parametrize("kind", ["ack", "response", "upload"])
def test_only_the_senders_own_sessions_invocations_can_be_answered_and_refusals_do_not_tell_why(
    helper, debugger, whose, kind
):
    if whose == "another-session":
        caller, delivery = invocation(helper, str(uuid.uuid4()))
    else:
        caller, delivery = "AROA3XFRBF535PLBIFPI4:app-fn-x", protocol.new_delivery_id()
    message = {
        "ack": protocol.ack_message(caller, delivery),
        "response": protocol.result_message(caller, delivery, '"forged"'),
        "upload": protocol.upload_message(caller, delivery, 10),
    }[kind]
    before = helper.snapshot()

    (reply,) = debugger.send(message)

    assert debugger.verified(reply) == {
        "type": "error",
        "code": protocol.ERR_UNKNOWN_REQUEST,
        "message": NOT_WAITING,
        "caller": caller,
        "deliveryId": delivery,
    }
    assert helper.snapshot() == before


@pytest.mark.parametrize(
    ("code", "reason", "text"),
    [
        (504, None, "the function stopped waiting at its deadline; this answer came too late"),
        (
            503,
            "no debugger acknowledged the invocation within 5 s",
            "the function stopped waiting: no debugger acknowledged the invocation within 5 s",
        ),
        (503, None, "the function stopped waiting: no debugger acknowledged the invocation in time"),
    ],
)
def test_an_answer_after_the_layer_gave_up_is_refused_with_the_layers_reason(
    helper, debugger, code, reason, text
):
    attributes: dict[str, Any] = {protocol.A_RESPONSE_CODE: code}
    if reason:
        attributes[protocol.A_REASON] = reason
    caller, delivery = invocation(helper, debugger.session_id, **attributes)
    before = helper.snapshot()

    for message in (protocol.ack_message(caller, delivery), protocol.result_message(caller, delivery, "1")):
        (reply,) = debugger.send(message)
        assert debugger.verified(reply) == {
            "type": "error",
            "code": protocol.ERR_REQUEST_CLOSED,
            "message": text,
            "caller": caller,
            "deliveryId": delivery,
        }
    assert helper.snapshot() == before


def _put(url: str, data: bytes) -> int:
    """The developer's upload through the presigned URL, as plldb makes it (urllib, its default headers)."""
    request = urllib.request.Request(url, data=data, method="PUT")
    with urllib.request.urlopen(request) as response:
        return int(response.status)


def test_a_large_result_goes_up_through_a_presigned_url_for_that_delivery_and_is_stored_by_reference(
    helper, debugger
):
    caller, delivery = invocation(helper, debugger.session_id)
    result = b'{"big": "' + b"x" * 200_000 + b'"}'

    (reply,) = debugger.send(protocol.upload_message(caller, delivery, len(result)))
    reply = debugger.verified(reply)
    assert (reply["type"], reply["caller"], reply["deliveryId"]) == ("uploadUrl", caller, delivery)
    assert f"/{helper.bucket}/responses/{caller}/{delivery}?" in reply["url"].replace("%3A", ":")
    assert _put(reply["url"], result) == 200
    digest = protocol.sha256_hex(result)

    (stored,) = debugger.send(protocol.result_object_message(caller, delivery, digest, len(result)))

    assert debugger.verified(stored) == {"type": "stored", "caller": caller, "deliveryId": delivery}
    item = helper.invocation_item(caller, delivery)
    assert item[protocol.A_RESPONSE_CODE] == 200
    assert item[protocol.A_RESPONSE_OBJECT] == protocol.response_object_key(caller, delivery)
    assert (item[protocol.A_RESPONSE_SHA256], item[protocol.A_RESPONSE_SIZE]) == (digest, len(result))
    assert protocol.A_RESPONSE not in item


@pytest.mark.parametrize(("uploaded", "text"), [(None, "missing"), (b"12345", "5 bytes")])
def test_a_response_naming_an_object_that_was_not_uploaded_as_announced_is_refused(
    helper, debugger, uploaded, text
):
    caller, delivery = invocation(helper, debugger.session_id)
    if uploaded is not None:
        helper.session.client("s3").put_object(
            Bucket=helper.bucket, Key=protocol.response_object_key(caller, delivery), Body=uploaded
        )
    before = helper.snapshot()

    (reply,) = debugger.send(protocol.result_object_message(caller, delivery, protocol.sha256_hex(b"x"), 6))

    assert debugger.verified(reply) == {
        "type": "error",
        "code": protocol.ERR_PAYLOAD_MISSING,
        "message": f"the result object is {text}, not 6 bytes as announced",
        "caller": caller,
        "deliveryId": delivery,
    }
    assert helper.snapshot() == before


def test_no_upload_url_for_an_answered_invocation(helper, debugger):
    caller, delivery = invocation(helper, debugger.session_id, **{protocol.A_RESPONSE_CODE: 200})
    (reply,) = debugger.send(protocol.upload_message(caller, delivery, 10))
    assert debugger.verified(reply)["code"] == protocol.ERR_ALREADY_ANSWERED


# --- ping and close ------------------------------------------------------------------------------------------
def test_ping_extends_the_session_only_from_its_current_connection(helper, debugger):
    old = debugger.connection_id
    assert debugger.reconnect() == OK
    helper.update_session(debugger.session_id, **{protocol.A_TTL: int(time.time()) + 5})
    before = debugger.session()

    (pong,) = debugger.send({"type": "ping"}, connection_id=old)
    assert debugger.verified(pong) == {"type": "pong"}
    assert debugger.session() == before

    start = int(time.time())
    (pong,) = debugger.send({"type": "ping"})
    assert debugger.verified(pong) == {"type": "pong"}
    assert debugger.session()[protocol.A_TTL] >= start + protocol.SESSION_TTL_SECONDS


def test_close_ends_the_session_and_frees_the_stack(helper, stack):
    stack_id, stack_name, _ = stack
    client = opened(helper, stack_name)

    (reply,) = client.send({"type": "close"})

    assert client.verified(reply) == {"type": "closed", "reason": "detached", "by": ALICE.user_arn}
    session = client.session()
    assert (session[protocol.A_STATUS], session[protocol.A_CLOSED_REASON], session[protocol.A_CLOSED_BY]) == (
        protocol.STATUS_CLOSED,
        protocol.CLOSED_DETACHED,
        ALICE.user_arn,
    )
    assert helper.lock_item(stack_id) is None
    assert helper.handed_to_manager() == []
    opened(helper, stack_name, BOB)


# --- release --------------------------------------------------------------------------------------------------
def _carry(app: Any, function: str, session_id: str | None) -> None:
    """Put (or take away) a session's id on a function, as instrumenting (restoring) it does."""
    variables = app.variables(function)
    if session_id:
        variables[protocol.ENV_SESSION_ID] = session_id
    else:
        variables.pop(protocol.ENV_SESSION_ID, None)
    app.lambda_client.update_function_configuration(
        FunctionName=function, Environment={"Variables": variables}
    )


def _releaser(helper: Any, caller: Caller = BOB) -> Client:
    client = Client(helper, caller)
    assert client.connect() == OK
    return client


def test_a_release_is_refused_while_a_function_still_carries_the_holder_and_changes_nothing(helper, app):
    stack_id, stack_name, functions = stack_with_functions(app, 2)
    holder = opened(helper, stack_name)
    _carry(app, functions["Fn1"], holder.session_id)
    releaser = _releaser(helper)
    before = helper.snapshot()

    (reply,) = releaser.send(protocol.release_message(stack_name))

    assert reply == {
        "type": "error",
        "code": protocol.ERR_RELEASE_REFUSED,
        "message": f"Fn1 still carries the instrumentation of the session of {ALICE.user_arn}; plldb ends that "
        "session only once its functions are restored (which needs permission to change them).",
    }
    assert helper.snapshot() == before
    assert helper.management.messages(holder.connection_id)[-1]["type"] == "opened", (
        "the holder heard nothing"
    )


def test_a_release_is_refused_while_an_alias_sends_traffic_to_a_version_carrying_the_holder(helper, app):
    stack_id, stack_name, functions = stack_with_functions(app, 1)
    function = functions["Fn0"]
    holder = opened(helper, stack_name)
    _carry(app, function, holder.session_id)
    version = app.lambda_client.publish_version(FunctionName=function)["Version"]
    app.lambda_client.create_alias(FunctionName=function, Name="live", FunctionVersion=version)
    _carry(app, function, None)  # $LATEST is restored, the alias's version still carries the session
    releaser = _releaser(helper)

    (reply,) = releaser.send(protocol.release_message(stack_id))

    assert reply["code"] == protocol.ERR_RELEASE_REFUSED
    assert reply["message"].startswith("Fn0:live still carries the instrumentation of the session of")
    assert holder.session()[protocol.A_STATUS] == protocol.STATUS_ACTIVE


def test_a_release_is_accepted_once_restored_and_the_holder_is_told_signed(helper, app):
    stack_id, stack_name, functions = stack_with_functions(app, 2)
    holder = opened(helper, stack_name)
    _carry(app, functions["Fn0"], holder.session_id)
    releaser = _releaser(helper)
    (refused,) = releaser.send(protocol.release_message(stack_name))
    assert refused["code"] == protocol.ERR_RELEASE_REFUSED
    _carry(app, functions["Fn0"], None)  # the releaser restored it with their own rights
    helper.handed_to_manager()

    (reply,) = releaser.send(protocol.release_message(stack_name))

    assert reply == {"type": "released", "stackId": stack_id, "closed": 1}
    session = holder.session()
    assert (session[protocol.A_STATUS], session[protocol.A_CLOSED_REASON], session[protocol.A_CLOSED_BY]) == (
        protocol.STATUS_CLOSED,
        protocol.CLOSED_RELEASED,
        BOB.user_arn,
    )
    assert helper.lock_item(stack_id) is None
    told = helper.management.messages(holder.connection_id)[-1]
    assert holder.verified(told) == {
        "type": "closed",
        "reason": "released",
        "by": BOB.user_arn,
        "message": f"stack {stack_name} was restored and released by {BOB.user_arn}",
    }
    assert helper.handed_to_manager() == [
        ("RoutesFunction", {"action": "restore_session", "sessionId": holder.session_id})
    ]
    assert releaser.session()[protocol.A_STATUS] == protocol.STATUS_PENDING


def test_the_holders_own_principal_may_release_it_without_restoring_first(helper, app):
    stack_id, stack_name, functions = stack_with_functions(app, 1)
    holder = opened(helper, stack_name)
    _carry(app, functions["Fn0"], holder.session_id)
    releaser = _releaser(helper, ALICE_REFRESHED)

    (reply,) = releaser.send(protocol.release_message(stack_name))

    assert reply == {"type": "released", "stackId": stack_id, "closed": 1}
    assert holder.session()[protocol.A_STATUS] == protocol.STATUS_CLOSED
    assert helper.handed_to_manager() == [
        ("RoutesFunction", {"action": "restore_session", "sessionId": holder.session_id})
    ]


def test_a_release_of_a_free_stack_or_of_a_closed_holders_lock_closes_nothing(helper, app):
    stack_id, stack_name, _ = stack_with_functions(app, 1)
    releaser = _releaser(helper)
    assert releaser.send(protocol.release_message(stack_name)) == [
        {"type": "released", "stackId": stack_id, "closed": 0}
    ]
    holder = opened(helper, stack_name)
    helper.update_session(holder.session_id, **{protocol.A_STATUS: protocol.STATUS_CLOSED})
    assert releaser.send(protocol.release_message(stack_name)) == [
        {"type": "released", "stackId": stack_id, "closed": 0}
    ]
    assert helper.lock_item(stack_id) is None


def test_a_release_is_sent_before_open_only(helper, app, debugger):
    stack_id, stack_name, _ = stack_with_functions(app, 1)
    before = helper.snapshot()
    (reply,) = debugger.send(protocol.release_message(stack_name))
    assert debugger.verified(reply)["code"] == protocol.ERR_WRONG_STATE
    assert helper.snapshot() == before


# --- Whatever arrives -----------------------------------------------------------------------------------------
def test_a_connection_without_a_session_is_told_so(helper):
    connection = new_connection_id()
    before = len(helper.management.messages(connection))
    assert routes.on_message(message_event(connection, json.dumps({"type": "ping"})), helper.routes) == OK
    assert helper.management.messages(connection)[before:] == [
        {
            "type": "error",
            "code": protocol.ERR_NO_SESSION,
            "message": "this connection has no plldb session; run 'plldb attach' again",
        }
    ]


HOSTILE_BODIES = {
    "nested-60KB": '{"type": "ping", "x": ' + "[" * 30_000 + "]" * 30_000 + "}",
    "objects-40KB": '{"a":' * 20_000 + "1" + "}" * 20_000,
    "oversized": json.dumps({"type": "ping", "pad": "x" * protocol.WEBSOCKET_MESSAGE_LIMIT}),
    "not-json": "{'type': 'ping'}",
    "empty": "",
    "array": "[]",
    "unknown-type": '{"type": "invoke"}',
    "server-type": '{"type": "opened", "sessionId": "s", "stackId": "s", "stackName": "s", "owner": "o"}',
    "huge-number": '{"type": "ping", "n": ' + "9" * 5000 + "}",
}


@pytest.mark.parametrize("body", list(HOSTILE_BODIES.values()), ids=list(HOSTILE_BODIES))
def test_a_malformed_oversized_or_deeply_nested_body_gets_one_error_and_changes_nothing(
    helper, debugger, body
):
    before = helper.snapshot()
    (reply,) = debugger.send(body)
    assert debugger.verified(reply)["type"] == "error"
    assert debugger.verified(reply)["code"] in (
        protocol.ERR_MALFORMED,
        protocol.ERR_UNKNOWN_TYPE,
        protocol.ERR_TOO_LARGE,
    )
    assert helper.snapshot() == before


def test_a_binary_frame_that_is_not_utf8_is_refused(helper, debugger):
    (reply,) = debugger.send(b"\xff\xfe\x00", binary=True)
    assert debugger.verified(reply) == {
        "type": "error",
        "code": "MalformedMessage",
        "message": "message is not UTF-8 text",
    }
    event = message_event(debugger.connection_id, "not base64 !", binary=False)
    event["isBase64Encoded"] = True
    assert routes.on_message(event, helper.routes) == OK


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"type": st.sampled_from([t for t in protocol.CLIENT_MESSAGE_TYPES if t not in ("close", "ping")])},
        optional={
            "caller": st.just(REFERENCE["caller"]) | json_values,
            "deliveryId": st.just(REFERENCE["deliveryId"]) | json_values,
            "statusCode": st.sampled_from([200, 500, 302]) | json_values,
            "payload": json_values,
            "payloadObject": json_values,
            "size": json_values,
            "error": json_values,
            "stack": st.sampled_from(["no-such-stack", ""]) | json_values,
            "sessionKey": st.just("5e" * 32) | json_values,
            "reconnectAnchor": st.just("a1" * 32) | json_values,
        },
    ).map(json.dumps),
)


def _state_of(helper: Any, client: Client, stack_id: str) -> list[Any]:
    """Everything a message of this session could change."""
    return [
        client.session(),
        helper.item("PLLDBConnections", ConnectionId=client.connection_id),
        helper.lock_item(stack_id),
        helper.invocation_item(REFERENCE["caller"], REFERENCE["deliveryId"]),
    ]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_any_body_that_is_not_a_valid_command_gets_one_error_and_changes_nothing(
    helper, stack, debugger, body
):
    before = _state_of(helper, debugger, stack[0])
    replies = debugger.send(body, binary=isinstance(body, bytes))
    assert [debugger.verified(reply)["type"] for reply in replies] == ["error"]
    assert _state_of(helper, debugger, stack[0]) == before


def test_an_answer_is_stored_even_when_the_reply_cannot_reach_the_gone_connection(helper, debugger):
    caller, delivery = invocation(helper, debugger.session_id)
    helper.management.go(debugger.connection_id)

    assert debugger.send(protocol.result_message(caller, delivery, '"kept"')) == []

    assert helper.invocation_item(caller, delivery)[protocol.A_RESPONSE] == '"kept"'
