"""The $connect authorizer against real DynamoDB calls (moto server), with API Gateway's event shape."""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid

import pytest
from helper_stack_events import ACCOUNT_ID, API_ID, REGION, STAGE, authorizer_event, new_connection_id

from plldb import protocol

METHOD_ARN = f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{API_ID}/{STAGE}/$connect"


@pytest.fixture(scope="module")
def authorizer(helper):
    from plldb.bootstrap.cloudformation.handlers import authorizer

    return lambda event: authorizer.authorize(event, helper.resources)


def _effect(result: dict) -> str:
    statement = result["policyDocument"]["Statement"]
    assert statement == [
        {"Action": "execute-api:Invoke", "Effect": statement[0]["Effect"], "Resource": METHOD_ARN}
    ]
    return statement[0]["Effect"]


def test_a_pending_session_is_allowed_once_and_becomes_active_with_the_connection(helper, authorizer):
    session_id = helper.put_session()
    connection_id = new_connection_id()
    before = int(time.time())

    result = authorizer(authorizer_event(connection_id, {"sessionId": session_id}))

    assert _effect(result) == "Allow"
    assert result["principalId"] == "plldb-session-" + session_id[:8]
    assert result["context"] == {"sessionId": session_id, "stackName": "app-stack", "reconnect": "false"}
    item = helper.session_item(session_id)
    assert item[protocol.A_STATUS] == protocol.STATUS_ACTIVE
    assert item[protocol.A_CONNECTION_ID] == connection_id
    assert (
        before + protocol.SESSION_TTL_SECONDS
        <= item[protocol.A_TTL]
        <= int(time.time()) + protocol.SESSION_TTL_SECONDS
    )

    again = authorizer(authorizer_event(new_connection_id(), {"sessionId": session_id}))
    assert _effect(again) == "Deny"
    assert "context" not in again
    assert helper.session_item(session_id)[protocol.A_CONNECTION_ID] == connection_id


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (None, "missing or malformed session id"),
        ({}, "missing or malformed session id"),
        ({"sessionId": ""}, "missing or malformed session id"),
        ({"sessionId": "not-a-uuid"}, "missing or malformed session id"),
        ({"sessionId": str(uuid.uuid4())}, "no such session"),
    ],
    ids=["no-query", "no-session-id", "empty", "malformed", "unknown"],
)
def test_missing_malformed_and_unknown_session_ids_are_denied_and_logged_at_info(
    helper, authorizer, capsys, query, reason
):
    result = authorizer(authorizer_event(new_connection_id(), query))

    assert _effect(result) == "Deny"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    denied = [line for line in lines if line["message"] == "connection denied"]
    assert denied and denied[-1]["level"] == "INFO" and denied[-1]["reason"] == reason


def test_an_expired_pending_session_is_denied_and_left_pending(helper, authorizer, capsys):
    session_id = helper.put_session(TTL=int(time.time()) - 1)

    result = authorizer(authorizer_event(new_connection_id(), {"sessionId": session_id}))

    assert _effect(result) == "Deny"
    item = helper.session_item(session_id)
    assert item[protocol.A_STATUS] == protocol.STATUS_PENDING
    assert protocol.A_CONNECTION_ID not in item
    out = capsys.readouterr().out
    assert "session has expired" in out
    assert session_id not in out, "a session id is a secret: only its prefix may be logged"
    assert session_id[:8] + "..." in out


def test_a_closed_session_is_denied(helper, authorizer, capsys):
    session_id = helper.put_session(Status=protocol.STATUS_CLOSED)

    result = authorizer(authorizer_event(new_connection_id(), {"sessionId": session_id}))

    assert _effect(result) == "Deny"
    assert "session is CLOSED, not PENDING" in capsys.readouterr().out
    assert helper.session_item(session_id)[protocol.A_STATUS] == protocol.STATUS_CLOSED


def test_of_racing_connects_with_one_session_id_exactly_one_wins(helper, authorizer):
    session_id = helper.put_session()
    contenders = [new_connection_id() for _ in range(8)]
    results: dict[str, str] = {}
    barrier = threading.Barrier(len(contenders))

    def connect(connection_id: str) -> None:
        barrier.wait()
        results[connection_id] = _effect(
            authorizer(authorizer_event(connection_id, {"sessionId": session_id}))
        )

    threads = [threading.Thread(target=connect, args=(c,)) for c in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [c for c, effect in results.items() if effect == "Allow"]
    assert len(winners) == 1
    assert sorted(results.values()) == ["Allow"] + ["Deny"] * 7
    assert helper.session_item(session_id)[protocol.A_CONNECTION_ID] == winners[0]


def test_reconnect_tokens_move_an_active_session_and_each_works_once(helper, authorizer):
    seed = secrets.token_hex(32)
    chain = 5
    session_id = helper.put_session(ReconnectAnchor=protocol.reconnect_token(seed, chain))
    first = new_connection_id()
    assert _effect(authorizer(authorizer_event(first, {"sessionId": session_id}))) == "Allow"

    second = new_connection_id()
    token = protocol.reconnect_token(seed, chain - 1)
    result = authorizer(authorizer_event(second, {"sessionId": session_id, "reconnectToken": token}))
    assert _effect(result) == "Allow"
    assert result["context"]["reconnect"] == "true"
    item = helper.session_item(session_id)
    assert item[protocol.A_CONNECTION_ID] == second
    assert item[protocol.A_RECONNECT_ANCHOR] == token
    assert item[protocol.A_STATUS] == protocol.STATUS_ACTIVE

    replay = authorizer(
        authorizer_event(new_connection_id(), {"sessionId": session_id, "reconnectToken": token})
    )
    assert _effect(replay) == "Deny"
    wrong = authorizer(
        authorizer_event(
            new_connection_id(), {"sessionId": session_id, "reconnectToken": secrets.token_hex(32)}
        )
    )
    assert _effect(wrong) == "Deny"
    assert helper.session_item(session_id)[protocol.A_CONNECTION_ID] == second

    third = new_connection_id()
    next_token = protocol.reconnect_token(seed, chain - 2)
    assert (
        _effect(authorizer(authorizer_event(third, {"sessionId": session_id, "reconnectToken": next_token})))
        == "Allow"
    )
    assert helper.session_item(session_id)[protocol.A_CONNECTION_ID] == third


@pytest.mark.parametrize(
    "state",
    [{"Status": protocol.STATUS_CLOSED}, {"Status": protocol.STATUS_PENDING}, {"TTL": 1}],
    ids=["closed", "pending", "expired"],
)
def test_reconnect_is_denied_unless_the_session_is_active_and_unexpired(helper, authorizer, state):
    seed = secrets.token_hex(32)
    attributes = {"Status": protocol.STATUS_ACTIVE, "ConnectionId": new_connection_id(), **state}
    session_id = helper.put_session(ReconnectAnchor=protocol.reconnect_token(seed, 3), **attributes)
    token = protocol.reconnect_token(seed, 2)

    result = authorizer(
        authorizer_event(new_connection_id(), {"sessionId": session_id, "reconnectToken": token})
    )

    assert _effect(result) == "Deny"
    assert helper.session_item(session_id)[protocol.A_RECONNECT_ANCHOR] == protocol.reconnect_token(seed, 3)
