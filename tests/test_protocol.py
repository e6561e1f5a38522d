"""The shared wire protocol: validation, payload chunks, reconnect tokens and the execute-api override."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plldb import protocol as p

REQUEST_ID = "8476a536-e9f4-11e8-9739-2dfe598c3fcd"
DELIVERY_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def test_a_valid_inline_response_decodes_unchanged() -> None:
    message = {
        "type": "response",
        "requestId": REQUEST_ID,
        "deliveryId": DELIVERY_ID,
        "statusCode": 200,
        "payload": '{"ok": true}',
    }
    assert p.decode(p.encode(message)) == message


def test_a_valid_error_response_decodes_unchanged() -> None:
    error = {"errorMessage": "boom", "errorType": "ValueError", "stackTrace": ['  File "app.py", line 3\n']}
    message = {
        "type": "response",
        "requestId": REQUEST_ID,
        "deliveryId": DELIVERY_ID,
        "statusCode": 500,
        "error": error,
    }
    assert p.decode(p.encode(message)) == message


def test_the_builders_name_the_request_and_its_delivery() -> None:
    assert p.ack_message(REQUEST_ID, DELIVERY_ID) == {
        "type": "ack",
        "requestId": REQUEST_ID,
        "deliveryId": DELIVERY_ID,
    }
    assert p.stored_message(REQUEST_ID, DELIVERY_ID) == {
        "type": "stored",
        "requestId": REQUEST_ID,
        "deliveryId": DELIVERY_ID,
    }
    assert p.error_message(p.ERR_REQUEST_CLOSED, "too late", REQUEST_ID, DELIVERY_ID) == {
        "type": "error",
        "code": "RequestClosed",
        "message": "too late",
        "requestId": REQUEST_ID,
        "deliveryId": DELIVERY_ID,
    }
    for message in (p.ack_message(REQUEST_ID, DELIVERY_ID), p.stored_message(REQUEST_ID, DELIVERY_ID)):
        assert p.decode(p.encode(message)) == message


def test_delivery_ids_are_fresh_128_bit_hex() -> None:
    ids = {p.new_delivery_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in ids)


def test_server_replies_may_omit_the_delivery_id() -> None:
    assert p.decode('{"type": "stored", "requestId": "r"}') == {"type": "stored", "requestId": "r"}
    error = '{"type": "error", "code": "AlreadyAnswered", "message": "m", "requestId": "r"}'
    assert p.decode(error)["code"] == p.ERR_ALREADY_ANSWERED


@pytest.mark.parametrize(
    ("text", "code", "reason"),
    [
        ("not json", p.ERR_MALFORMED, "message is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        ("[1, 2]", p.ERR_MALFORMED, "message must be a JSON object"),
        ('{"requestId": "x"}', p.ERR_MALFORMED, "message has no string 'type'"),
        ('{"type": "teleport"}', p.ERR_UNKNOWN_TYPE, "unknown message type 'teleport'"),
        ('{"type": "ack"}', p.ERR_MALFORMED, "'ack' message needs 'requestId' of type str"),
        (
            '{"type": "ack", "requestId": "r"}',
            p.ERR_MALFORMED,
            "'ack' message needs 'deliveryId' of type str",
        ),
        (
            '{"type": "response", "requestId": "r", "statusCode": 200, "payload": "1"}',
            p.ERR_MALFORMED,
            "'response' message needs 'deliveryId' of type str",
        ),
        (
            '{"type": "invoke", "requestId": "r", "context": {}, "environment": {}}',
            p.ERR_MALFORMED,
            "'invoke' message needs 'deliveryId' of type str",
        ),
        (
            '{"type": "ack", "requestId": "r", "deliveryId": ""}',
            p.ERR_MALFORMED,
            "'deliveryId' must be a string of 1 to 64 characters",
        ),
        (
            '{"type": "stored", "requestId": "r", "deliveryId": 7}',
            p.ERR_MALFORMED,
            "'deliveryId' must be a string of 1 to 64 characters",
        ),
        (
            '{"type": "ack", "requestId": "r", "deliveryId": "' + "d" * 65 + '"}',
            p.ERR_MALFORMED,
            "'deliveryId' must be a string of 1 to 64 characters",
        ),
        (
            '{"type": "response", "requestId": "r", "deliveryId": "d", "statusCode": true, "payload": "1"}',
            p.ERR_MALFORMED,
            "'response' message needs 'statusCode' of type int",
        ),
        (
            '{"type": "response", "requestId": "r", "deliveryId": "d", "statusCode": 302, "payload": "1"}',
            p.ERR_MALFORMED,
            "response statusCode must be 200 or 500",
        ),
        (
            '{"type": "response", "requestId": "r", "deliveryId": "d", "statusCode": 200}',
            p.ERR_MALFORMED,
            "a 200 response needs exactly one of 'payload' or 'payloadChunks'",
        ),
        (
            '{"type": "response", "requestId": "r", "deliveryId": "d", "statusCode": 500}',
            p.ERR_MALFORMED,
            "a 500 response needs an 'error' object",
        ),
        (
            '{"type": "response", "requestId": "r", "deliveryId": "d", "statusCode": 200, "payloadChunks": 0,'
            ' "payloadSha256": "x"}',
            p.ERR_MALFORMED,
            "'payloadChunks' must be an integer from 1 to 22",
        ),
    ],
)
def test_malformed_messages_are_refused_with_a_precise_reason(text: str, code: str, reason: str) -> None:
    with pytest.raises(p.ProtocolError) as caught:
        p.decode(text)
    assert (caught.value.code, caught.value.message) == (code, reason)


def test_a_message_over_the_websocket_limit_is_refused() -> None:
    text = p.encode({"type": "ping", "padding": "x" * p.WEBSOCKET_MESSAGE_LIMIT})
    with pytest.raises(p.ProtocolError) as caught:
        p.decode(text)
    assert caught.value.code == p.ERR_TOO_LARGE


def test_server_message_types_are_refused_where_only_client_types_are_allowed() -> None:
    with pytest.raises(p.ProtocolError) as caught:
        p.decode('{"type": "pong"}', allowed_types=p.CLIENT_MESSAGE_TYPES)
    assert caught.value.code == p.ERR_UNKNOWN_TYPE


@given(st.binary(max_size=3 * p.CHUNK_SIZE + 17))
def test_split_payload_reassembles_exactly_into_chunks_that_fit_an_item(data: bytes) -> None:
    chunks = p.split_payload(data)
    assert b"".join(chunks) == data
    assert all(len(c) <= p.CHUNK_SIZE for c in chunks)
    assert len(chunks) == max(1, -(-len(data) // p.CHUNK_SIZE))


def test_the_largest_lambda_payload_fits_in_the_allowed_chunk_count() -> None:
    assert len(p.split_payload(b"x" * p.MAX_PAYLOAD_BYTES)) <= p.max_chunks()


def test_chunk_keys_never_collide_with_request_ids() -> None:
    assert p.chunk_request_id(REQUEST_ID, p.CHUNK_KIND_EVENT, 3) == f"{REQUEST_ID}#event#3"
    assert (
        p.chunk_request_id(REQUEST_ID, p.CHUNK_KIND_RESPONSE, 0, DELIVERY_ID)
        == f"{REQUEST_ID}#response#{DELIVERY_ID}#0"
    )


@given(
    first=st.text(alphabet="0123456789abcdef", min_size=1, max_size=64),
    second=st.text(alphabet="0123456789abcdef", min_size=1, max_size=64),
    index=st.integers(min_value=0, max_value=21),
)
def test_response_chunks_of_two_deliveries_never_share_a_key(first: str, second: str, index: int) -> None:
    keys = {
        p.chunk_request_id(REQUEST_ID, p.CHUNK_KIND_RESPONSE, i, delivery)
        for delivery in (first, second)
        for i in (index, index + 1)
    }
    assert len(keys) == (2 if first == second else 4)


@given(st.dictionaries(st.text(min_size=1), st.text()))
def test_credentials_never_survive_without_credentials(environment: dict[str, str]) -> None:
    environment = {
        **environment,
        "AWS_ACCESS_KEY_ID": "AKIA",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_SESSION_TOKEN": "t",
    }
    cleaned = p.without_credentials(environment)
    assert set(cleaned).isdisjoint(p.CREDENTIAL_VARIABLES)
    assert cleaned == {k: v for k, v in environment.items() if k not in p.CREDENTIAL_VARIABLES}


def test_each_reconnect_token_works_once_and_in_order() -> None:
    seed = "f" * 64
    anchor = p.reconnect_token(seed, 5)
    first = p.reconnect_token(seed, 4)
    second = p.reconnect_token(seed, 3)
    assert p.reconnect_token_matches(first, anchor)
    assert not p.reconnect_token_matches(second, anchor)  # skipping ahead is refused
    assert p.reconnect_token_matches(second, first)  # the anchor moves to the token just used
    assert not p.reconnect_token_matches(first, first)  # a used token is refused
    assert not p.reconnect_token_matches(anchor, anchor)
    assert not p.reconnect_token_matches("not-hex", anchor)


@pytest.mark.parametrize(
    ("url", "endpoint", "expected"),
    [
        (
            "wss://abc123.execute-api.eu-west-1.amazonaws.com/live",
            "",
            "wss://abc123.execute-api.eu-west-1.amazonaws.com/live",
        ),
        (
            "wss://abc123.execute-api.eu-west-1.amazonaws.com/live",
            "http://127.0.0.1:4510",
            "ws://127.0.0.1:4510/abc123/live",
        ),
        (
            "https://abc123.execute-api.us-east-1.amazonaws.com/live",
            "http://127.0.0.1:4510/",
            "http://127.0.0.1:4510/abc123/live",
        ),
        (
            "https://abc123.execute-api.us-east-1.amazonaws.com/live",
            "https://gw.local:443",
            "https://gw.local:443/abc123/live",
        ),
        ("https://example.com/live", "http://127.0.0.1:4510", "https://example.com/live"),
    ],
)
def test_execute_api_urls_are_redirected_only_when_the_override_is_set(
    url: str, endpoint: str, expected: str
) -> None:
    assert p.execute_api_url(url, {p.EXECUTE_API_ENDPOINT_VARIABLE: endpoint}) == expected


def test_encode_is_compact_and_keeps_unicode() -> None:
    assert p.encode({"type": "ping", "note": "é"}) == '{"type":"ping","note":"é"}'
    assert json.loads(p.encode({"a": 1})) == {"a": 1}
