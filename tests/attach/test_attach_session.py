"""The developer's end of a session (protocol v2): connecting, opening, detaching, taking over, reconnecting.

The real DebugSession runs against a fake helper stack on real sockets (tests/attach/attach_fake_api.py
behaves as the routes and the dispatcher do); its lifecycle (instrument, restore, take_over) is recorded.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading

import pytest
from attach_fake_api import (
    ALICE,
    BOB,
    DEVELOPER,
    HELPER_STACK_NAME,
    STACK_ID,
    STACK_NAME,
    STRANGER,
    FakeHelperStack,
    caller_of,
    when,
)
from attach_support import SEED, Attached, run, settings, start
from botocore.exceptions import TokenRetrievalError

from plldb import protocol
from plldb.local.invocation import Invocation
from plldb.local.session import Opened, SessionOutcome, Signer, sigv4_signer
from plldb.local.session.release import release_stack

N = protocol.RECONNECT_CHAIN_LENGTH
GRACE = protocol.DISCONNECT_GRACE_SECONDS


def token(k: int) -> str:
    """The k-th reconnect token of the sessions' chain."""
    return protocol.reconnect_token(SEED, N - k)


def sequence(attached: Attached, *kinds: str) -> list[tuple[str, object]]:
    """The session's events of these kinds, in order; a fake's `received` event is its message type."""
    return [(kind, value) for kind, value in attached.timeline.events if kind in kinds]


# --- opening, running, detaching -----------------------------------------------------------------------
def test_attach_signs_opens_runs_an_invocation_then_detach_restores_before_closing() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api)
        opened = await attached.until_instrumented()
        assert opened == Opened(attached.session_id, STACK_ID, STACK_NAME, DEVELOPER.arn)
        [upgrade] = api.upgrades
        assert upgrade.query == {"sessionId": attached.session_id}
        assert upgrade.principal == DEVELOPER.arn
        assert re.fullmatch(
            rf"AWS4-HMAC-SHA256 Credential={DEVELOPER.access_key}/\d{{8}}/us-east-1/execute-api/aws4_request, "
            r"SignedHeaders=host;x-amz-date, Signature=[0-9a-f]{64}",
            upgrade.authorization or "",
        )
        assert api.messages("open") == [protocol.open_message(STACK_NAME, attached.key, token(0))]

        key = await api.deliver("req-1")
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-1"])
        assert api.items[key].response == protocol.result_message(
            *key, '{"echo": "{\\"name\\": \\"world\\"}"}'
        )
        # The command's own work (its recording) starts once the answer has left, never before.
        assert attached.timeline.kinds("run", "on_invocation_answered", "finished") == [
            "run",
            "on_invocation_answered",
            "finished",
        ]
        assert attached.timeline.values("finished") == ["req-1"]
        assert await attached.detach() == SessionOutcome(0, None)

        assert sequence(attached, "received", "instrument", "run", "on_detaching", "restore") == [
            ("received", "open"),
            ("instrument", opened),
            ("run", "req-1"),
            ("received", "response"),
            ("on_detaching", None),
            ("restore", None),
            ("received", "close"),
        ]
        session = api.sessions[attached.session_id]
        assert (session.status, session.closed_reason, session.closed_by) == (
            "CLOSED",
            "detached",
            DEVELOPER.arn,
        )
        assert api.locks == {}
        [invocation] = attached.runner.calls
        assert invocation == Invocation(
            request_id="req-1",
            function_name="hello-fn",
            handler="app.lambda_handler",
            event_json='{"name": "world"}',
            context=api.items[key].invoke["context"],
            environment={"GREETING": "hello", "AWS_REGION": "us-east-1"},
            credentials={"accessKeyId": "ASIAFUNCTION", "secretAccessKey": "s", "sessionToken": "t"},
            caller=caller_of("hello-fn"),
            delivery_id=key[1],
            version="$LATEST",
        )

    run(body)


def test_restore_failures_exit_1_naming_them_and_the_session_is_not_closed() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api)
        await attached.until_instrumented()
        attached.lifecycle.restore_failures = [
            "Api/HelloFunction: AccessDeniedException: not authorized to perform lambda:UpdateFunctionConfiguration",
            "WorldFunction: the function is still updating",
        ]
        outcome = await attached.detach()
        assert outcome == SessionOutcome(
            1,
            "Some functions were not restored (Api/HelloFunction: AccessDeniedException: not authorized to "
            "perform lambda:UpdateFunctionConfiguration, WorldFunction: the function is still updating). The "
            f"helper stack restores them {GRACE} s after this process exits; to restore them now run "
            "'plldb detach --stack-name hello-stack'.",
        )
        # Everything the client sent reached the fake before the connection closed: no `close` among it.
        await api.until(lambda: "conn-1" in api.timeline.values("disconnected"))
        assert api.received_kinds() == ["open"]
        session = api.sessions[attached.session_id]
        assert (session.status, session.disconnected) == ("ACTIVE", True)  # the manager restores it

    run(body)


def test_a_second_interrupt_leaves_at_once_and_says_how_to_finish() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api)
        await attached.until_instrumented()
        attached.lifecycle.restore_gate.clear()  # the restore hangs (a throttled account, say)
        attached.session.interrupt()
        await attached.until(lambda: attached.timeline.values("restore") == [None])
        attached.session.interrupt()
        assert await attached.outcome() == SessionOutcome(
            130,
            "Left without waiting for the restore. The helper stack restores the functions "
            f"{GRACE} s after the connection closes; to restore them now run "
            "'plldb detach --stack-name hello-stack'.",
        )
        await api.until(lambda: "conn-1" in api.timeline.values("disconnected"))
        assert api.received_kinds() == ["open"]

    run(body)


def test_an_interrupt_while_opening_restores_nothing_it_did_not_instrument_and_closes() -> None:
    async def body(api: FakeHelperStack) -> None:
        api.upgrade_gate = asyncio.Event()
        attached = start(api)
        await attached.until(lambda: api.timeline.kinds("upgrade pending") == ["upgrade pending"])
        attached.session.interrupt()  # while it connects
        api.upgrade_gate.set()
        assert await attached.outcome() == SessionOutcome(0, None)
        assert api.received_kinds() == ["open", "close"]
        assert attached.timeline.values("instrument") == []
        assert attached.timeline.values("restore") == [None]

    run(body)


def test_instrumenting_that_fails_is_undone_and_the_command_fails() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api)
        attached.lifecycle.instrument_error = RuntimeError("Lambda is unreachable")
        outcome = await attached.outcome()
        assert outcome == SessionOutcome(
            1,
            "Instrumenting failed (RuntimeError: Lambda is unreachable); plldb restored every function "
            "it had changed. Run 'plldb attach' again.",
        )
        [opened] = attached.timeline.values("instrument")
        assert sequence(attached, "instrument", "restore", "received") == [
            ("received", "open"),
            ("instrument", opened),
            ("restore", None),
            ("received", "close"),
        ]
        assert attached.timeline.values("on_warning") == [
            "Instrumenting failed: RuntimeError: Lambda is unreachable"
        ]

    run(body)


# --- refusals ------------------------------------------------------------------------------------------
def test_a_stack_debugged_by_someone_else_names_them_when_and_both_fixes() -> None:
    async def body(api: FakeHelperStack) -> None:
        alice = start(api, principal=ALICE, separate=True)
        await alice.until_instrumented()
        developer = start(api, separate=True)
        assert await developer.outcome() == SessionOutcome(
            1,
            f"Stack 'hello-stack' is already being debugged by {ALICE.arn} (since {when(1_700_000_000)}). "
            "Ask them to detach, or run again with --take-over: plldb then restores the stack's functions "
            "with your credentials and ends their session.",
        )
        assert when(1_700_000_000) == "2023-11-14 22:13:20 UTC"
        assert developer.timeline.kinds("instrument", "restore", "take_over") == []
        assert api.received_kinds("conn-2") == ["open"]
        assert api.sessions[alice.session_id].status == "ACTIVE"
        assert api.locks[STACK_ID][0] == alice.session_id
        assert await alice.detach() == SessionOutcome(0, None)

    run(body)


@pytest.mark.parametrize(
    ("stack", "message"),
    [
        (
            HELPER_STACK_NAME,
            "The helper stack refused the session: Stack 'plldb' is the plldb helper stack itself; it "
            "cannot be debugged with plldb.",
        ),
        (
            "gone-stack",
            "The helper stack refused the session: Stack 'gone-stack' does not exist in us-east-1.",
        ),
    ],
)
def test_a_stack_the_helper_stack_refuses_exits_1_with_its_reason(stack: str, message: str) -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api, stack=stack)
        assert await attached.outcome() == SessionOutcome(1, message)
        assert attached.timeline.kinds("instrument", "restore") == []

    run(body)


def unsigned(url: str) -> dict[str, str]:
    return {}


def signed_without_query(url: str) -> dict[str, str]:
    """A signature of the URL without its query: the session id would not be covered."""
    return sigv4_signer(DEVELOPER.boto_session(), "us-east-1")(url.split("?", 1)[0])


@pytest.mark.parametrize(
    "signer",
    [STRANGER.signer(), unsigned, signed_without_query],
    ids=["unknown-credentials", "unsigned", "signature-of-another-url"],
)
def test_a_refused_first_connection_exits_1_naming_execute_api_invoke_without_retrying(
    signer: Signer,
) -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api, signer=signer)
        assert await attached.outcome() == SessionOutcome(
            1,
            "The debugger WebSocket API refused the connection (HTTP 403): your AWS credentials need "
            "execute-api:Invoke on the helper stack's $connect route (docs/security.md lists what plldb "
            "needs), or the session id was used before. Run 'plldb attach' again.",
        )
        assert [upgrade.status for upgrade in api.upgrades] == [403]
        assert api.sessions == {}
        assert attached.timeline.kinds("instrument", "restore", "on_connected") == []

    run(body)


@pytest.mark.parametrize("override", [None, "http://127.0.0.1:4510"])
def test_an_unreachable_websocket_api_is_named_and_so_is_its_override_when_aws_endpoint_url_is_set(
    monkeypatch: pytest.MonkeyPatch, override: str | None
) -> None:
    """AWS_ENDPOINT_URL alone does not redirect the WebSocket: the message says which variable does."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    if override is None:
        monkeypatch.delenv(protocol.EXECUTE_API_ENDPOINT_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(protocol.EXECUTE_API_ENDPOINT_VARIABLE, override)

    async def body(api: FakeHelperStack) -> None:
        attached = start(api, websocket_url=f"ws://127.0.0.1:{closed_port}/prod")
        hint = (
            " AWS_ENDPOINT_URL sends AWS calls to http://127.0.0.1:4566, but not this connection: set "
            "PLLDB_EXECUTE_API_ENDPOINT to the endpoint that serves the WebSocket API."
        )
        assert await attached.outcome() == SessionOutcome(
            1,
            f"Could not connect to the debugger WebSocket API at ws://127.0.0.1:{closed_port}/prod: "
            f"Connect call failed ('127.0.0.1', {closed_port})." + (hint if override is None else ""),
        )
        assert api.upgrades == []
        assert attached.timeline.kinds("instrument", "restore", "on_connected") == []

    run(body)


def test_a_session_id_connects_once() -> None:
    async def body(api: FakeHelperStack) -> None:
        first = start(api, separate=True)
        await first.until_instrumented()
        again = start(api, session_id=first.session_id, separate=True)
        assert await again.outcome() == SessionOutcome(
            1,
            "The debugger WebSocket API refused the connection (HTTP 403): your AWS credentials need "
            "execute-api:Invoke on the helper stack's $connect route (docs/security.md lists what plldb "
            "needs), or the session id was used before. Run 'plldb attach' again.",
        )
        assert api.upgrades[1].reason == "the session id was used before (a session id connects once)"
        assert [upgrade.status for upgrade in api.upgrades] == [101, 403]
        assert await first.detach() == SessionOutcome(0, None)

    run(body)


# --- taking over ---------------------------------------------------------------------------------------
def test_take_over_restores_before_connecting_releases_before_opening_and_ends_the_other_session() -> None:
    async def body(api: FakeHelperStack) -> None:
        alice = start(api, principal=ALICE, separate=True)
        await alice.until_instrumented()
        bob = start(api, principal=BOB, take_over=True, separate=True)
        opened = await bob.until_instrumented()

        assert bob.timeline.values("take_over") == [1]  # only Alice's connection existed when it ran
        assert api.received_kinds("conn-2") == ["release", "open"]
        assert opened == Opened(bob.session_id, STACK_ID, STACK_NAME, BOB.arn)
        text = f"stack hello-stack was restored and released by {BOB.arn}"
        assert await alice.outcome() == SessionOutcome(1, f"The session was ended elsewhere: {text}")
        assert alice.timeline.values("on_session_ended") == [(BOB.arn, text)]
        assert alice.timeline.kinds("restore") == []  # Bob restored the functions already
        assert alice.timeline.values("on_warning") == []
        assert (api.sessions[alice.session_id].status, api.sessions[alice.session_id].closed_by) == (
            "CLOSED",
            BOB.arn,
        )
        assert api.locks[STACK_ID][0] == bob.session_id
        assert await bob.detach() == SessionOutcome(0, None)

    run(body)


def test_take_over_refused_while_the_other_sessions_functions_still_carry_it() -> None:
    async def body(api: FakeHelperStack) -> None:
        alice = start(api, principal=ALICE, separate=True)
        await alice.until_instrumented()
        api.carrying = ["Api/HelloFunction"]  # Bob could not restore it (no permission on that function)
        bob = start(api, principal=BOB, take_over=True, separate=True)
        assert await bob.outcome() == SessionOutcome(
            1,
            "The other session could not be ended: Api/HelloFunction still carries the instrumentation of "
            f"the session of {ALICE.arn}; plldb ends that session only once its functions are restored "
            "(which needs permission to change them).",
        )
        assert bob.timeline.values("take_over") == [1]
        assert api.received_kinds("conn-2") == ["release"]
        assert bob.timeline.kinds("instrument", "restore") == []
        assert api.sessions[alice.session_id].status == "ACTIVE"
        assert await alice.detach() == SessionOutcome(0, None)

    run(body)


def test_plldb_detach_releases_the_holder_from_a_connection_of_its_own() -> None:
    async def body(api: FakeHelperStack) -> None:
        alice = start(api, principal=ALICE, separate=True)
        await alice.until_instrumented()
        # Bob restored the stack's functions with his credentials, then asks for the release.
        reply = await release_stack(api.url, BOB.signer(), STACK_ID)
        assert reply == protocol.released_message(STACK_ID, 1)
        text = f"stack hello-stack was restored and released by {BOB.arn}"
        assert await alice.outcome() == SessionOutcome(1, f"The session was ended elsewhere: {text}")
        # Nobody holds the stack any more: releasing again closes nothing.
        assert await release_stack(api.url, BOB.signer(), STACK_NAME) == protocol.released_message(
            STACK_ID, 0
        )
        [first, second] = api.upgrades[1:]
        assert (first.principal, second.principal) == (BOB.arn, BOB.arn)
        assert first.query["sessionId"] != second.query["sessionId"]  # a fresh session each time

    run(body)


def test_plldb_detach_gets_the_refusal_when_the_holders_functions_still_carry_it() -> None:
    async def body(api: FakeHelperStack) -> None:
        alice = start(api, principal=ALICE, separate=True)
        await alice.until_instrumented()
        api.carrying = ["Api/HelloFunction", "WorldFunction"]
        reply = await release_stack(api.url, BOB.signer(), STACK_NAME)
        assert reply == protocol.error_message(
            protocol.ERR_RELEASE_REFUSED,
            "Api/HelloFunction, WorldFunction still carry the instrumentation of the session of "
            f"{ALICE.arn}; plldb ends that session only once its functions are restored (which needs "
            "permission to change them).",
        )
        assert api.sessions[alice.session_id].status == "ACTIVE"
        assert await alice.detach() == SessionOutcome(0, None)

    run(body)


def test_a_signed_closed_ends_the_session_and_always_names_who_ended_it() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api)
        await attached.until_instrumented()
        await api.post(protocol.closed_message(protocol.CLOSED_RELEASED, BOB.arn))  # no text of its own
        assert await attached.outcome() == SessionOutcome(
            1, f"The session was ended elsewhere: released (by {BOB.arn})"
        )
        assert attached.timeline.values("on_session_ended") == [(BOB.arn, "released")]
        assert attached.timeline.kinds("restore") == []

    run(body)


# --- messages the session must not trust -------------------------------------------------------------------
def test_unauthenticated_and_hostile_messages_are_ignored_and_the_session_goes_on() -> None:
    async def body(api: FakeHelperStack) -> None:
        api.confirm_responses = False
        attached = start(api)
        await attached.until_instrumented()
        answered = await api.deliver("req-answered")
        await attached.until(lambda: len(api.messages_about("response", answered)) == 1)
        other_key = protocol.new_secret()
        connection = attached.current_connection()

        # Authenticated with another key, or not at all: an invocation, an end, a confirmation.
        await api.deliver("req-forged", key=other_key)
        await api.deliver("req-unsigned", key=None)
        await api.post(protocol.closed_message("released", BOB.arn, "ended by bob"), key=other_key)
        await api.post(protocol.closed_message("released", BOB.arn, "ended by bob"), key=None)
        await api.post(protocol.stored_message(*answered), key=other_key)
        await api.post(protocol.error_message(protocol.ERR_NO_SESSION, "no session"), key=None)
        # Hostile shapes: deep nesting (the old client died of RecursionError), bad UTF-8, too large.
        await api.post_raw('{"type":"invoke","event":' + "[" * 30_000 + "]" * 30_000 + "}", connection)
        await api.post_raw(b'{"type": "closed", "reason": "\xff\xfe"}', connection)
        await api.post_raw(
            '{"type":"closed","reason":"' + "x" * (protocol.WEBSOCKET_MESSAGE_LIMIT + 1) + '"}', connection
        )
        # The session still works, on the same connection: a real invocation runs and is answered.
        real = await api.deliver("req-real")
        await attached.until(lambda: len(api.messages_about("response", real)) == 1)

        assert [call.request_id for call in attached.runner.calls] == ["req-answered", "req-real"]
        assert attached.timeline.values("on_warning") == [
            "Ignored a 'invoke' message that is not authenticated for this session",
            "Ignored a 'invoke' message that is not authenticated for this session",
            "Ignored a 'closed' message that is not authenticated for this session",
            "Ignored a 'closed' message that is not authenticated for this session",
            "Ignored a 'stored' message that is not authenticated for this session",
            "Ignored a 'error' message that is not authenticated for this session",
            f"Ignored a message from the server: message nests deeper than {protocol.MAX_MESSAGE_DEPTH} levels",
            "Ignored a message from the server: message is not UTF-8 text",
            f"Ignored a message from the server: message exceeds {protocol.WEBSOCKET_MESSAGE_LIMIT} bytes",
        ]
        assert attached.timeline.kinds("on_session_ended", "on_connection_lost", "on_invocation_stored") == []
        # The forged confirmation settled nothing: the real one does.
        await api.post(protocol.stored_message(*answered))
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-answered"])
        assert len(api.accepted_upgrades()) == 1
        assert await attached.detach() == SessionOutcome(0, None)

    run(body)


def test_a_message_beyond_what_the_client_reads_costs_one_reconnect_and_nothing_else() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api)
        await attached.until_instrumented()
        # websockets fails the connection (1009) and, as a client, does not wait for the close handshake.
        await api.post_raw("x" * (2 * protocol.WEBSOCKET_MESSAGE_LIMIT + 1), "conn-1")
        await attached.until(lambda: attached.timeline.values("on_reconnected") == [False])
        assert attached.timeline.values("on_connection_lost") == ["the connection closed (code 1006)"]
        key = await api.deliver("req-after")
        await attached.until(lambda: len(api.messages_about("response", key)) == 1)
        assert [u.query.get("reconnectToken") for u in api.accepted_upgrades()] == [None, token(1)]
        assert await attached.detach() == SessionOutcome(0, None)

    run(body)


# --- connections ---------------------------------------------------------------------------------------
def test_a_dropped_connection_reconnects_with_the_token_chain_and_loses_nothing() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api, connection_settings=settings(ack_delay_seconds=0))
        await attached.until_instrumented()
        attached.runner.hold("req-flight")
        key = await api.deliver("req-flight")
        await attached.until(lambda: len(api.messages_about("ack", key)) == 1)
        api.cut("conn-1")
        await attached.until(lambda: attached.timeline.values("on_reconnected") == [False])
        assert api.accepted_upgrades()[1].query == {
            "sessionId": attached.session_id,
            "reconnectToken": token(1),
        }
        assert api.accepted_upgrades()[1].principal == DEVELOPER.arn
        # The running delivery is acknowledged again on the new connection; a re-post does not run it again.
        await attached.until(lambda: len(api.messages_about("ack", key)) == 2)
        await api.repost(key)
        await attached.until(lambda: len(api.messages_about("ack", key)) == 3)
        attached.runner.release("req-flight")
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-flight"])
        # A second drop uses the next token of the chain.
        api.cut("conn-2")
        await attached.until(lambda: attached.timeline.values("on_reconnected") == [False, False])
        assert api.accepted_upgrades()[2].query["reconnectToken"] == token(2)
        after = await api.deliver("req-after")
        await attached.until(lambda: len(api.messages_about("response", after)) == 1)
        assert await attached.detach() == SessionOutcome(0, None)

        assert attached.runner.count("req-flight") == 1
        assert [m["deliveryId"] for m in api.messages_about("response", key)] == [key[1]]
        assert [a for a in api.messages("ack") if (a["caller"], a["deliveryId"]) == key] == [
            protocol.ack_message(*key)
        ] * 3
        assert attached.session.reconnect_count == 2
        assert api.sessions[attached.session_id].anchor == token(2)
        assert len(attached.timeline.values("instrument")) == 1
        assert attached.timeline.values("on_duplicate_invoke") == ["req-flight"]

    run(body)


def test_an_answer_sent_on_a_dropped_connection_is_sent_again_after_reconnecting() -> None:
    async def body(api: FakeHelperStack) -> None:
        api.confirm_responses = False  # stored, but the confirmation is lost with the connection
        attached = start(api)
        await attached.until_instrumented()
        key = await api.deliver("req-lost")
        await attached.until(lambda: len(api.messages_about("response", key)) == 1)
        api.cut("conn-1")
        await attached.until(lambda: len(api.messages_about("response", key)) == 2)
        assert [r.connection_id for r in api.received if r.message and r.message["type"] == "response"] == [
            "conn-1",
            "conn-2",
        ]
        # The routes answer the repeat with AlreadyAnswered: the answer was delivered.
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-lost"])
        assert await attached.detach() == SessionOutcome(0, None)
        assert attached.runner.count("req-lost") == 1

    run(body)


def test_a_close_lost_with_its_connection_is_sent_again_after_reconnecting() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api)
        await attached.until_instrumented()
        api.cut_on = "close"
        assert await attached.detach() == SessionOutcome(0, None)
        assert [(r.connection_id, r.message["type"]) for r in api.received if r.message] == [
            ("conn-1", "open"),
            ("conn-1", "close"),
            ("conn-2", "close"),
        ]
        assert api.sessions[attached.session_id].closed_reason == "detached"
        assert attached.timeline.values("on_warning") == []

    run(body)


def test_a_token_consumed_by_an_upgrade_that_then_failed_is_skipped_once() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api)
        await attached.until_instrumented()
        api.lose_next_reconnect = True
        api.cut("conn-1")
        await attached.until(lambda: attached.timeline.values("on_reconnected") == [False])
        assert [(u.status, u.query.get("reconnectToken")) for u in api.upgrades] == [
            (101, None),
            (502, token(1)),  # $connect accepted token 1, the upgrade failed afterwards
            (403, token(1)),  # token 1 again: used already
            (101, token(2)),  # the next one of the chain
        ]
        assert attached.timeline.values("on_reconnect_failed") == [(1, "HTTP 502")]
        assert attached.session.reconnect_count == 2
        key = await api.deliver("req-after")
        await attached.until(lambda: len(api.messages_about("response", key)) == 1)
        assert await attached.detach() == SessionOutcome(0, None)

    run(body)


def test_signing_a_reconnect_never_stalls_the_session_and_a_signing_failure_is_retried() -> None:
    async def body(api: FakeHelperStack) -> None:
        refreshed = threading.Event()
        sign = DEVELOPER.signer()
        signatures = iter(range(1, 100))

        def signer(url: str) -> dict[str, str]:
            number = next(signatures)
            api.timeline.add("signing", number)
            if number == 2:  # the credentials expired: their refresh fails once
                raise TokenRetrievalError(provider="sso", error_msg="the SSO session has expired")
            if number == 3:
                refreshed.wait()  # refreshing them takes a while (a network call)
            return sign(url)

        attached = start(api, signer=signer, connection_settings=settings(ack_delay_seconds=0))
        try:
            await attached.until_instrumented()
            attached.runner.hold("req-1")
            key = await api.deliver("req-1")
            await attached.until(lambda: api.items[key].acks == 1)
            api.cut("conn-1")
            await attached.until(lambda: api.timeline.values("signing") == [1, 2, 3])
            # While the third signature waits for credentials, the session goes on: the run ends and is
            # answered (the answer waits for the new connection).
            attached.runner.release("req-1")
            await attached.until(
                lambda: attached.timeline.values("on_invocation_answered") == [("req-1", 200)]
            )
        finally:
            refreshed.set()
        await attached.until(lambda: attached.timeline.values("on_invocation_stored") == ["req-1"])
        assert attached.timeline.values("on_reconnect_failed") == [
            (
                1,
                "PermissionError: could not sign the connection: Error when retrieving token from sso: the SSO "
                "session has expired",
            )
        ]
        assert [u.query.get("reconnectToken") for u in api.accepted_upgrades()] == [None, token(1)]
        assert await attached.detach() == SessionOutcome(0, None)

    run(body)


def test_a_gateway_that_keeps_failing_is_given_up_with_a_clear_message() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api, connection_settings=settings(reconnect_give_up_seconds=1))
        await attached.until_instrumented()
        api.failing_upgrades = [502] * 1000
        api.cut("conn-1")
        assert await attached.outcome() == SessionOutcome(
            1,
            "Could not reconnect for 1 s (HTTP 502). The helper stack restores the functions; check with "
            "'plldb detach --stack-name hello-stack'.",
        )
        failures = attached.timeline.values("on_reconnect_failed")
        assert failures == [(attempt, "HTTP 502") for attempt in range(1, len(failures) + 1)]
        # Every attempt presented the same token: a failure before $connect consumes none.
        assert {u.query.get("reconnectToken") for u in api.upgrades[1:]} == {token(1)}

    run(body)


def test_a_reconnect_refused_because_the_session_closed_exits_with_a_clear_message() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api)
        await attached.until_instrumented()
        api.close_session(attached.session_id)  # the manager restored the stack after the grace period
        api.cut("conn-1")
        assert await attached.outcome() == SessionOutcome(
            1,
            "Could not reconnect: the session was closed (HTTP 403), most likely because the connection "
            f"was down for more than {GRACE} s and the functions were restored, or another developer took "
            "over. Run 'plldb attach' again.",
        )
        # The token may have been used by an attempt that failed after it was accepted: one skip ahead.
        assert [u.query["reconnectToken"] for u in api.upgrades[1:]] == [token(1), token(2)]
        assert attached.timeline.kinds("restore") == []

    run(body)


def test_the_connection_is_rotated_before_its_age_limit_and_the_old_one_still_answers() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(
            api, connection_settings=settings(max_connection_age_seconds=0.3, drain_seconds=3600)
        )
        await attached.until_instrumented()
        await attached.until(lambda: attached.timeline.values("on_reconnected")[:1] == [True])
        # A dispatcher that read the session just before the rotation still posts to the old connection.
        old = await api.deliver("req-old", connection_id="conn-1")
        await attached.until(lambda: len(api.messages_about("response", old)) == 1)
        [response] = [r for r in api.received if r.message and r.message["type"] == "response"]
        assert response.connection_id != "conn-1"  # answers go on the current connection
        assert attached.timeline.kinds("on_connection_lost") == []
        assert api.accepted_upgrades()[1].query["reconnectToken"] == token(1)
        assert await attached.detach() == SessionOutcome(0, None)

    run(body)


def test_keepalive_is_the_application_ping_and_a_gateway_ignoring_ping_frames_changes_nothing() -> None:
    async def body(api: FakeHelperStack) -> None:
        attached = start(api, connection_settings=settings(keepalive_seconds=0.02))
        await attached.until_instrumented()
        await attached.until(lambda: len(api.messages("ping", "conn-1")) >= 10)
        assert api.connections["conn-1"].ping_frames == 0
        assert len(api.accepted_upgrades()) == 1
        assert attached.timeline.kinds("on_connection_lost", "on_warning") == []
        assert await attached.detach() == SessionOutcome(0, None)

    run(body, ignore_ping_frames=True)


def test_a_gateway_that_stops_answering_ping_causes_exactly_one_reconnect_using_one_token() -> None:
    async def body(api: FakeHelperStack) -> None:
        api.mute_pings.add("conn-1")
        attached = start(api, connection_settings=settings(keepalive_seconds=0.02, pong_timeout_seconds=1.5))
        await attached.until_instrumented()
        await attached.until(lambda: len(api.messages("ping", "conn-2")) >= 10)
        assert [u.query.get("reconnectToken") for u in api.accepted_upgrades()] == [None, token(1)]
        assert api.sessions[attached.session_id].anchor == token(1)
        assert attached.timeline.values("on_warning") == ["No answer to the keep-alive ping; reconnecting."]
        assert attached.timeline.values("on_reconnected") == [False]
        assert api.connections["conn-2"].ping_frames == 0
        assert await attached.detach() == SessionOutcome(0, None)
        assert attached.session.reconnect_count == 1

    run(body, ignore_ping_frames=True)
