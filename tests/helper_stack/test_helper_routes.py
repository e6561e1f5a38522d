"""$default and $disconnect handling against real DynamoDB calls, replies through the management API."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from helper_stack_events import disconnect_event, message_event, new_connection_id
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plldb import protocol


@pytest.fixture(scope="module")
def routes(helper):
    from plldb.bootstrap.cloudformation.handlers import websocket

    return websocket


class Debugger:
    """One attached session with its connection, and the authorizer's Allow for it."""

    def __init__(self, helper, connection_id: str | None = None) -> None:
        self.helper = helper
        self.connection_id = connection_id or new_connection_id()
        self.session_id = helper.put_session(Status=protocol.STATUS_ACTIVE, ConnectionId=self.connection_id)
        self.allow = {
            "principalId": "plldb-session-" + self.session_id[:8],
            "context": {"sessionId": self.session_id, "stackName": "app-stack", "reconnect": "false"},
        }

    def send(
        self, routes, body: Any, *, authorized: bool = True, binary: bool = False
    ) -> list[dict[str, Any]]:
        """Deliver one message to $default; returns what the handler posted back to this connection."""
        text = body if isinstance(body, (str, bytes)) else json.dumps(body)
        before = len(self.helper.capture.messages(self.connection_id))
        result = routes.on_message(
            message_event(self.connection_id, text, self.allow if authorized else None, binary=binary),
            self.helper.resources,
        )
        assert result == {"statusCode": 200}
        return self.helper.capture.messages(self.connection_id)[before:]

    def pending_request(self, **extra: Any) -> str:
        """A correlation item as the layer writes it before posting the invocation (round DELIVERY)."""
        request_id = str(uuid.uuid4())
        item = {
            protocol.A_REQUEST_ID: {"S": request_id},
            protocol.A_SESSION_ID: {"S": self.session_id},
            protocol.A_CONNECTION_ID: {"S": self.connection_id},
            protocol.A_DELIVERY_ID: {"S": DELIVERY},
            protocol.A_REQUEST: {"S": json.dumps({"type": "invoke", "requestId": request_id, "event": "{}"})},
            protocol.A_FUNCTION_NAME: {"S": "app-stack-HelloFunction-ABC"},
            protocol.A_TTL: {"N": str(int(time.time()) + 3600)},
        }
        item.update(extra)
        self.helper.dynamodb.put_item(TableName=self.helper.resources.debugger_table, Item=item)
        return request_id


DELIVERY = "a1" * 16  # the round the layer recorded
EARLIER_DELIVERY = "b2" * 16  # a round Lambda has retried since


def response(request_id: str, payload: str = '"answer"', delivery_id: str = DELIVERY) -> dict[str, Any]:
    return {
        "type": "response",
        "requestId": request_id,
        "deliveryId": delivery_id,
        "statusCode": 200,
        "payload": payload,
    }


def ack(request_id: str, delivery_id: str = DELIVERY) -> dict[str, Any]:
    return {"type": "ack", "requestId": request_id, "deliveryId": delivery_id}


def stored(request_id: str) -> dict[str, Any]:
    return {"type": "stored", "requestId": request_id, "deliveryId": DELIVERY}


def refusal(code: str, message: str, request_id: str, delivery_id: str = DELIVERY) -> dict[str, Any]:
    return {
        "type": "error",
        "code": code,
        "message": message,
        "requestId": request_id,
        "deliveryId": delivery_id,
    }


def _table(helper) -> list[dict[str, Any]]:
    items = helper.dynamodb.scan(TableName=helper.resources.debugger_table, ConsistentRead=True)["Items"]
    return sorted(items, key=lambda item: item[protocol.A_REQUEST_ID]["S"])


def test_a_response_is_stored_once_and_acknowledged_with_stored(helper, routes):
    debugger = Debugger(helper)
    request_id = debugger.pending_request()

    replies = debugger.send(routes, response(request_id, '{"ok": true}'))

    assert replies == [stored(request_id)]
    item = helper.debugger_item(request_id)
    assert item[protocol.A_RESPONSE_CODE] == 200
    assert item[protocol.A_RESPONSE] == '{"ok": true}'
    assert protocol.A_ERROR not in item

    second = debugger.send(routes, response(request_id, '"again"'))
    assert second == [
        refusal(protocol.ERR_ALREADY_ANSWERED, "this request already has a response", request_id)
    ]
    assert helper.debugger_item(request_id)[protocol.A_RESPONSE] == '{"ok": true}'


def test_an_error_response_stores_the_error_object_as_json_text(helper, routes):
    debugger = Debugger(helper)
    request_id = debugger.pending_request()
    error = {"errorMessage": "asked to fail", "errorType": "ValueError", "stackTrace": ['  File "app.py"']}

    replies = debugger.send(
        routes,
        {
            "type": "response",
            "requestId": request_id,
            "deliveryId": DELIVERY,
            "statusCode": 500,
            "error": error,
        },
    )

    assert replies == [stored(request_id)]
    item = helper.debugger_item(request_id)
    assert item[protocol.A_RESPONSE_CODE] == 500
    assert json.loads(item[protocol.A_ERROR]) == error
    assert protocol.A_RESPONSE not in item


def test_a_chunked_response_stores_the_chunk_count_and_digest(helper, routes):
    debugger = Debugger(helper)
    request_id = debugger.pending_request()
    digest = protocol.sha256_hex(b"x" * 10)

    replies = debugger.send(
        routes,
        {
            "type": "response",
            "requestId": request_id,
            "deliveryId": DELIVERY,
            "statusCode": 200,
            "payloadChunks": 3,
            "payloadSha256": digest,
        },
    )

    assert replies == [stored(request_id)]
    item = helper.debugger_item(request_id)
    assert (
        item[protocol.A_RESPONSE_CODE],
        item[protocol.A_RESPONSE_CHUNKS],
        item[protocol.A_RESPONSE_SHA256],
    ) == (
        200,
        3,
        digest,
    )


@pytest.mark.parametrize(
    ("given_up", "text"),
    [
        ("504", "the function stopped waiting at its deadline; this answer came too late"),
        ("503", "the function stopped waiting because no debugger acknowledged the invocation in time"),
    ],
)
def test_a_late_ack_or_answer_after_the_layer_gave_up_is_refused_as_request_closed(
    helper, routes, given_up, text
):
    debugger = Debugger(helper)
    request_id = debugger.pending_request(**{protocol.A_RESPONSE_CODE: {"N": given_up}})
    before = _table(helper)

    assert debugger.send(routes, response(request_id, "1")) == [
        refusal(protocol.ERR_REQUEST_CLOSED, text, request_id)
    ]
    assert debugger.send(routes, ack(request_id)) == [refusal(protocol.ERR_REQUEST_CLOSED, text, request_id)]
    assert _table(helper) == before


def test_an_ack_or_answer_for_an_earlier_delivery_is_refused_and_changes_nothing(helper, routes):
    """Lambda retried the request: the item is in a newer round, which only its own answer may fill."""
    debugger = Debugger(helper)
    request_id = debugger.pending_request()
    before = _table(helper)
    stale = (
        "this message is for an earlier delivery of the request; Lambda has delivered it again since, "
        "and only the newest delivery can be answered"
    )

    assert debugger.send(routes, ack(request_id, EARLIER_DELIVERY)) == [
        refusal(protocol.ERR_STALE_DELIVERY, stale, request_id, EARLIER_DELIVERY)
    ]
    assert debugger.send(routes, response(request_id, '"old"', EARLIER_DELIVERY)) == [
        refusal(protocol.ERR_STALE_DELIVERY, stale, request_id, EARLIER_DELIVERY)
    ]
    assert _table(helper) == before

    assert debugger.send(routes, response(request_id, '"new"')) == [stored(request_id)]
    assert helper.debugger_item(request_id)[protocol.A_RESPONSE] == '"new"'
    # An earlier round stays refused once the current one is answered, not mistaken for a duplicate.
    assert debugger.send(routes, response(request_id, '"old"', EARLIER_DELIVERY))[0]["code"] == (
        protocol.ERR_STALE_DELIVERY
    )


def test_forged_foreign_and_chunk_request_ids_are_refused_and_change_nothing(helper, routes):
    owner = Debugger(helper)
    intruder = Debugger(helper)
    foreign = owner.pending_request()
    forged = str(uuid.uuid4())
    chunk_key = protocol.chunk_request_id(foreign, protocol.CHUNK_KIND_RESPONSE, 0)
    before = _table(helper)

    for request_id in (forged, foreign, chunk_key):
        replies = intruder.send(routes, response(request_id, '"forged"'))
        assert replies == [
            refusal(
                protocol.ERR_UNKNOWN_REQUEST,
                f"no request {request_id!r} is waiting in this session",
                request_id,
            )
        ]
        acked = intruder.send(routes, ack(request_id))
        assert [m["code"] for m in acked] == [protocol.ERR_UNKNOWN_REQUEST]

    assert _table(helper) == before
    assert helper.debugger_item(forged) is None


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        ("{not json", protocol.ERR_MALFORMED, "message is not valid JSON"),
        ("[1, 2]", protocol.ERR_MALFORMED, "message must be a JSON object"),
        ('{"requestId": "r"}', protocol.ERR_MALFORMED, "message has no string 'type'"),
        ('{"type": "shout"}', protocol.ERR_UNKNOWN_TYPE, "unknown message type 'shout'"),
        ('{"type": "invoke", "requestId": "r"}', protocol.ERR_UNKNOWN_TYPE, "unknown message type 'invoke'"),
        (
            '{"type": "response", "requestId": "r", "deliveryId": "d"}',
            protocol.ERR_MALFORMED,
            "'response' message needs 'statusCode'",
        ),
        (
            '{"type": "response", "requestId": "r", "statusCode": 200, "payload": "1"}',
            protocol.ERR_MALFORMED,
            "'response' message needs 'deliveryId'",
        ),
        (
            '{"type": "ack", "requestId": "r"}',
            protocol.ERR_MALFORMED,
            "'ack' message needs 'deliveryId'",
        ),
        (
            '{"type": "response", "requestId": "r", "deliveryId": "d", "statusCode": 201, "payload": "1"}',
            protocol.ERR_MALFORMED,
            "response statusCode must be 200 or 500",
        ),
        (
            json.dumps({"type": "response", "requestId": "r", "statusCode": 200, "payload": "x" * 140_000}),
            protocol.ERR_TOO_LARGE,
            f"message exceeds {protocol.WEBSOCKET_MESSAGE_LIMIT} bytes",
        ),
    ],
    ids=[
        "invalid-json",
        "not-object",
        "no-type",
        "unknown-type",
        "server-type",
        "no-status",
        "response-without-delivery",
        "ack-without-delivery",
        "bad-status",
        "oversized",
    ],
)
def test_malformed_unknown_and_oversized_messages_get_an_error_and_change_nothing(
    helper, routes, body, code, text
):
    debugger = Debugger(helper)
    request_id = debugger.pending_request()
    body = body.replace('"r"', json.dumps(request_id))
    before = _table(helper)

    replies = debugger.send(routes, body)

    assert len(replies) == 1
    assert replies[0]["type"] == "error" and replies[0]["code"] == code
    assert replies[0]["message"].startswith(text)
    assert _table(helper) == before


def test_a_binary_frame_that_is_not_utf8_is_refused(helper, routes):
    debugger = Debugger(helper)

    replies = debugger.send(routes, b"\xff\xfe\x00", binary=True)

    assert replies == [
        {"type": "error", "code": protocol.ERR_MALFORMED, "message": "message is not UTF-8 text"}
    ]


@pytest.fixture(scope="module")
def fuzzed_debugger(helper) -> Debugger:
    return Debugger(helper)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_any_invalid_body_gets_one_error_and_changes_nothing(helper, routes, fuzzed_debugger, body):
    try:
        protocol.decode(body, protocol.CLIENT_MESSAGE_TYPES)
        return  # a valid message; other tests cover those
    except protocol.ProtocolError:
        pass
    before = _table(helper)

    replies = fuzzed_debugger.send(routes, body)

    assert [m["type"] for m in replies] == ["error"]
    assert _table(helper) == before


def test_an_ack_records_acked_at_only_while_unanswered(helper, routes):
    debugger = Debugger(helper)
    request_id = debugger.pending_request()
    before_ms = int(time.time() * 1000)

    assert debugger.send(routes, ack(request_id)) == []
    acked = helper.debugger_item(request_id)[protocol.A_ACKED_AT]
    assert before_ms <= acked <= int(time.time() * 1000)

    answered = debugger.pending_request(**{protocol.A_RESPONSE_CODE: {"N": "200"}})
    replies = debugger.send(routes, ack(answered))
    assert replies == [
        refusal(protocol.ERR_ALREADY_ANSWERED, "this request already has a response", answered)
    ]
    assert protocol.A_ACKED_AT not in helper.debugger_item(answered)


def test_ping_answers_pong_and_extends_the_session_only_from_its_current_connection(helper, routes):
    debugger = Debugger(helper)
    soon = int(time.time()) + 5
    helper.dynamodb.update_item(
        TableName=helper.resources.sessions_table,
        Key={protocol.A_SESSION_ID: {"S": debugger.session_id}},
        UpdateExpression="SET #ttl = :ttl",
        ExpressionAttributeNames={"#ttl": protocol.A_TTL},
        ExpressionAttributeValues={":ttl": {"N": str(soon)}},
    )
    stale = Debugger(helper)
    stale.session_id, stale.allow = (
        debugger.session_id,
        debugger.allow,
    )  # an old connection of the same session

    assert stale.send(routes, {"type": "ping"}) == [{"type": "pong"}]
    assert helper.session_item(debugger.session_id)[protocol.A_TTL] == soon

    assert debugger.send(routes, {"type": "ping"}) == [{"type": "pong"}]
    assert (
        helper.session_item(debugger.session_id)[protocol.A_TTL]
        >= int(time.time()) + protocol.SESSION_TTL_SECONDS - 2
    )


def test_without_authorizer_context_the_session_is_found_by_its_connection(helper, routes):
    debugger = Debugger(helper)
    request_id = debugger.pending_request()

    replies = debugger.send(routes, response(request_id, "7"), authorized=False)

    assert replies == [stored(request_id)]
    assert helper.debugger_item(request_id)[protocol.A_RESPONSE] == "7"


def test_a_connection_without_a_session_is_told_so(helper, routes):
    connection_id = new_connection_id()

    routes.on_message(message_event(connection_id, '{"type": "ping"}', None), helper.resources)

    assert helper.capture.messages(connection_id) == [
        {
            "type": "error",
            "code": protocol.ERR_SESSION_CLOSED,
            "message": "this connection has no plldb session; run 'plldb attach' again",
        }
    ]


def test_disconnect_of_a_connection_that_is_no_longer_the_sessions_changes_nothing(helper, routes):
    debugger = Debugger(helper)
    old_connection = new_connection_id()
    before = helper.session_item(debugger.session_id)

    result = routes.on_disconnect(disconnect_event(old_connection, debugger.allow), helper.resources)

    assert result == {"statusCode": 200}
    assert helper.session_item(debugger.session_id) == before


def test_replies_to_a_gone_connection_are_dropped_quietly(helper, routes):
    debugger = Debugger(helper)
    helper.capture.gone.add(debugger.connection_id)
    try:
        assert debugger.send(routes, {"type": "ping"}) == []
    finally:
        helper.capture.gone.discard(debugger.connection_id)
