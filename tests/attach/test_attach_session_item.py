"""Session creation: the debugger role, the PENDING item, refusing (or taking over) a live session."""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

import pytest
from attach_support import MotoServer, create_sessions_table

from plldb import protocol
from plldb.errors import PlldbError
from plldb.local.session import (
    SessionRequest,
    abandon_pending_session,
    create_session,
    describe_time,
    role_session_name,
)

ROLE_ARN = "arn:aws:iam::123456789012:role/plldb-PLLDBDebuggerRole-TEST"


@pytest.fixture
def sessions(moto_env: MotoServer) -> Any:
    return create_sessions_table(moto_env, f"PLLDBSessions-{uuid.uuid4().hex[:8]}")


def live_item(stack: str, status: str = protocol.STATUS_ACTIVE, ttl_offset: int = 600) -> dict[str, Any]:
    now = int(time.time())
    return {
        protocol.A_SESSION_ID: str(uuid.uuid4()),
        protocol.A_STACK_NAME: stack,
        protocol.A_STATUS: status,
        protocol.A_TTL: now + ttl_offset,
        protocol.A_CREATED_AT: 1_700_000_000,
        protocol.A_OWNER: "arn:aws:iam::123456789012:user/alice on alice-laptop",
    }


def test_creates_a_pending_item_under_the_debugger_role(moto_env: MotoServer, sessions: Any) -> None:
    user = moto_env.session()
    caller = user.client("sts").get_caller_identity()["Arn"]
    before = int(time.time())
    created = create_session(
        user,
        ROLE_ARN,
        sessions.name,
        SessionRequest("hello-sam", ("Hello*", "App/*"), function_timeout=300, fallback="passthrough"),
    )
    item = sessions.get_item(Key={protocol.A_SESSION_ID: created.session_id})["Item"]
    assert uuid.UUID(created.session_id).version == 4
    assert before <= int(item[protocol.A_CREATED_AT]) <= int(time.time())
    assert int(item[protocol.A_TTL]) == int(item[protocol.A_CREATED_AT]) + protocol.SESSION_TTL_SECONDS
    assert {
        key: value for key, value in item.items() if key not in (protocol.A_TTL, protocol.A_CREATED_AT)
    } == {
        protocol.A_SESSION_ID: created.session_id,
        protocol.A_STACK_NAME: "hello-sam",
        protocol.A_STATUS: protocol.STATUS_PENDING,
        protocol.A_OWNER: f"{caller} on {socket.gethostname()}",
        protocol.A_FUNCTION_PATTERNS: ["Hello*", "App/*"],
        protocol.A_FUNCTION_TIMEOUT: 300,
        protocol.A_FALLBACK: "passthrough",
        protocol.A_RECONNECT_ANCHOR: protocol.reconnect_token(
            created.reconnect_seed, protocol.RECONNECT_CHAIN_LENGTH
        ),
    }
    assumed = created.debugger_session.client("sts").get_caller_identity()["Arn"]
    assert assumed.startswith("arn:aws:sts::123456789012:assumed-role/plldb-PLLDBDebuggerRole-TEST/plldb-")
    assert created.session_id not in repr(created)
    assert created.reconnect_seed not in repr(created)


def test_refuses_while_another_session_is_live_naming_its_owner(moto_env: MotoServer, sessions: Any) -> None:
    other = live_item("busy-stack")
    sessions.put_item(Item=other)
    count = sessions.scan()["Count"]
    with pytest.raises(PlldbError) as caught:
        create_session(moto_env.session(), ROLE_ARN, sessions.name, SessionRequest("busy-stack"))
    assert caught.value.one_line() == (
        "Stack 'busy-stack' is already being debugged by arn:aws:iam::123456789012:user/alice on alice-laptop "
        f"(since {describe_time(1_700_000_000)}). "
        "Ask them to detach, or run again with --take-over to end their session."
    )
    assert describe_time(1_700_000_000) == "2023-11-14 22:13:20 UTC"
    assert sessions.scan()["Count"] == count  # nothing written


def test_closed_expired_and_other_stacks_sessions_do_not_block(moto_env: MotoServer, sessions: Any) -> None:
    sessions.put_item(Item=live_item("free-stack", status=protocol.STATUS_CLOSED))
    sessions.put_item(Item=live_item("free-stack", status=protocol.STATUS_PENDING, ttl_offset=-5))
    sessions.put_item(Item=live_item("another-stack"))
    created = create_session(moto_env.session(), ROLE_ARN, sessions.name, SessionRequest("free-stack"))
    assert sessions.get_item(Key={protocol.A_SESSION_ID: created.session_id})["Item"][protocol.A_STATUS] == (
        protocol.STATUS_PENDING
    )


def test_take_over_runs_first_then_creates(moto_env: MotoServer, sessions: Any) -> None:
    other = live_item("taken-stack")
    sessions.put_item(Item=other)
    calls: list[int] = []

    def take_over() -> None:
        calls.append(sessions.scan()["Count"])
        sessions.update_item(
            Key={protocol.A_SESSION_ID: other[protocol.A_SESSION_ID]},
            UpdateExpression="SET #s = :closed",
            ExpressionAttributeNames={"#s": protocol.A_STATUS},
            ExpressionAttributeValues={":closed": protocol.STATUS_CLOSED},
        )

    created = create_session(
        moto_env.session(), ROLE_ARN, sessions.name, SessionRequest("taken-stack"), take_over=take_over
    )
    assert calls == [1]  # before our item was written
    assert sessions.scan()["Count"] == 2
    assert sessions.get_item(Key={protocol.A_SESSION_ID: created.session_id})["Item"][protocol.A_STATUS] == (
        protocol.STATUS_PENDING
    )


def test_a_session_that_never_connected_is_closed(moto_env: MotoServer, sessions: Any) -> None:
    created = create_session(moto_env.session(), ROLE_ARN, sessions.name, SessionRequest("quiet-stack"))
    abandon_pending_session(created, sessions.name)
    item = sessions.get_item(Key={protocol.A_SESSION_ID: created.session_id})["Item"]
    assert item[protocol.A_STATUS] == protocol.STATUS_CLOSED
    # An ACTIVE session is never touched by this.
    active = create_session(moto_env.session(), ROLE_ARN, sessions.name, SessionRequest("other-stack"))
    sessions.update_item(
        Key={protocol.A_SESSION_ID: active.session_id},
        UpdateExpression="SET #s = :active",
        ExpressionAttributeNames={"#s": protocol.A_STATUS},
        ExpressionAttributeValues={":active": protocol.STATUS_ACTIVE},
    )
    abandon_pending_session(active, sessions.name)
    item = sessions.get_item(Key={protocol.A_SESSION_ID: active.session_id})["Item"]
    assert item[protocol.A_STATUS] == protocol.STATUS_ACTIVE


@pytest.mark.parametrize(
    ("arn", "expected"),
    [
        ("arn:aws:iam::123456789012:user/alice", "plldb-alice"),
        ("arn:aws:sts::123456789012:assumed-role/Dev/bob@example.com", "plldb-bob@example.com"),
        ("arn:aws:iam::123456789012:user/" + "x" * 80, "plldb-" + "x" * 58),
        ("arn:aws:iam::123456789012:user/weird name!", "plldb-weird-name-"),
    ],
)
def test_role_session_name_names_the_user_within_sts_rules(arn: str, expected: str) -> None:
    assert role_session_name(arn) == expected
