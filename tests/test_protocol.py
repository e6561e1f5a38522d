"""The shared wire protocol, version 2: validation of every message type, message authentication,
hostile input, the reconnect token chain, identities and the execute-api override."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plldb import protocol as p

CALLER = "AROA3XFRBF535PLBIFPI4:orders-create"
DELIVERY_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
KEY = "5e" * 32
ANCHOR = "a1" * 32
DIGEST = p.sha256_hex(b"result")
SESSION_ID = "9ada04b8-639d-476f-af6a-40c89714b812"
STACK_ID = "arn:aws:cloudformation:eu-west-1:123456789012:stack/orders/1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"


def _invoke(**changes: object) -> dict[str, object]:
    message: dict[str, object] = {
        "type": "invoke",
        "v": p.PROTOCOL_VERSION,
        "caller": CALLER,
        "deliveryId": DELIVERY_ID,
        "requestId": "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
        "function": {"name": "orders-create", "version": "$LATEST", "logicalPath": "Api/CreateFunction"},
        "handler": "app.handler",
        "context": {"functionName": "orders-create", "deadlineMs": 1735689600000},
        "event": '{"order": 17}',
        "environment": {"ORDERS_TABLE": "orders"},
        "credentials": {"accessKeyId": "ASIA", "secretAccessKey": "s", "sessionToken": "t"},
    }
    message.update(changes)
    return {k: v for k, v in message.items() if v is not None}


# --- Every message type: what the builders make decodes unchanged ---------------------------------------
CLIENT_MESSAGES = [
    p.open_message("orders", KEY, ANCHOR),
    p.open_message(STACK_ID, KEY, ANCHOR),
    p.release_message("orders"),
    p.ack_message(CALLER, DELIVERY_ID),
    p.upload_message(CALLER, DELIVERY_ID, p.MAX_PAYLOAD_BYTES),
    p.result_message(CALLER, DELIVERY_ID, '{"ok": true}'),
    p.result_object_message(CALLER, DELIVERY_ID, DIGEST, 0),
    p.failure_message(
        CALLER, DELIVERY_ID, {"errorMessage": "boom", "errorType": "ValueError", "stackTrace": []}
    ),
    {"type": "ping"},
    {"type": "close"},
]
SERVER_MESSAGES = [
    p.opened_message(SESSION_ID, STACK_ID, "orders", "arn:aws:iam::123456789012:user/alice"),
    p.released_message(STACK_ID, 1),
    _invoke(),
    _invoke(event=None, eventUrl="https://bucket.s3.amazonaws.com/events/x", eventSha256=DIGEST, eventSize=9),
    p.upload_url_message(
        CALLER, DELIVERY_ID, "https://bucket.s3.amazonaws.com/responses/x?X-Amz-Signature=1"
    ),
    p.stored_message(CALLER, DELIVERY_ID),
    p.error_message(p.ERR_ALREADY_ANSWERED, "this invocation already has an answer", CALLER, DELIVERY_ID),
    p.error_message(p.ERR_STACK_NOT_FOUND, "Stack 'x' does not exist in eu-west-1."),
    {"type": "pong"},
    p.closed_message(p.CLOSED_RELEASED, "arn:aws:iam::123456789012:user/bob", "ended by bob"),
    p.closed_message(p.CLOSED_DETACHED),
]


@pytest.mark.parametrize("message", CLIENT_MESSAGES, ids=lambda m: m["type"])
def test_every_client_message_decodes_unchanged_where_client_messages_are_taken(message) -> None:
    assert p.decode(p.encode(message), p.CLIENT_MESSAGE_TYPES) == message


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=lambda m: m["type"])
def test_every_server_message_decodes_unchanged_and_is_not_taken_as_a_client_message(message) -> None:
    assert p.decode(p.encode(message)) == message
    with pytest.raises(p.ProtocolError) as refused:
        p.decode(p.encode(message), p.CLIENT_MESSAGE_TYPES)
    assert (refused.value.code, refused.value.message) == (
        p.ERR_UNKNOWN_TYPE,
        f"unknown message type {message['type']!r}",
    )


def test_the_builders_spell_out_every_field() -> None:
    assert p.open_message("orders", KEY, ANCHOR) == {
        "type": "open",
        "stack": "orders",
        "sessionKey": KEY,
        "reconnectAnchor": ANCHOR,
    }
    assert p.result_object_message(CALLER, DELIVERY_ID, DIGEST, 12) == {
        "type": "response",
        "caller": CALLER,
        "deliveryId": DELIVERY_ID,
        "statusCode": 200,
        "payloadObject": True,
        "payloadSha256": DIGEST,
        "payloadSize": 12,
    }
    assert p.error_message(p.ERR_NO_SESSION, "none") == {
        "type": "error",
        "code": "NoSession",
        "message": "none",
    }
    assert p.closed_message(p.CLOSED_EXPIRED) == {"type": "closed", "reason": "expired"}
    assert p.reference(CALLER, DELIVERY_ID) == {"caller": CALLER, "deliveryId": DELIVERY_ID}


def test_the_message_type_lists_are_disjoint_and_complete() -> None:
    assert set(p.CLIENT_MESSAGE_TYPES).isdisjoint(p.SERVER_MESSAGE_TYPES)
    assert {m["type"] for m in CLIENT_MESSAGES} == set(p.CLIENT_MESSAGE_TYPES)
    assert {m["type"] for m in SERVER_MESSAGES} == set(p.SERVER_MESSAGE_TYPES)


def _text(**fields: object) -> str:
    return json.dumps(fields)


R = {"caller": CALLER, "deliveryId": DELIVERY_ID}


@pytest.mark.parametrize(
    ("text", "code", "reason"),
    [
        ("not json", p.ERR_MALFORMED, "message is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        ("[1, 2]", p.ERR_MALFORMED, "message must be a JSON object"),
        ('"open"', p.ERR_MALFORMED, "message must be a JSON object"),
        ('{"caller": "x"}', p.ERR_MALFORMED, "message has no string 'type'"),
        ('{"type": 7}', p.ERR_MALFORMED, "message has no string 'type'"),
        ('{"type": "teleport"}', p.ERR_UNKNOWN_TYPE, "unknown message type 'teleport'"),
        (_text(type="x" * 500), p.ERR_UNKNOWN_TYPE, "unknown message type " + repr("x" * 64)),
        # open
        (_text(type="open"), p.ERR_MALFORMED, "'open' message needs 'stack' of type str"),
        (
            _text(type="open", stack="s", sessionKey=KEY),
            p.ERR_MALFORMED,
            "'open' message needs 'reconnectAnchor' of type str",
        ),
        (
            _text(type="open", stack="", sessionKey=KEY, reconnectAnchor=ANCHOR),
            p.ERR_MALFORMED,
            "'stack' must name a stack",
        ),
        (
            _text(type="open", stack="s" * 1025, sessionKey=KEY, reconnectAnchor=ANCHOR),
            p.ERR_MALFORMED,
            "'stack' must name a stack",
        ),
        (
            _text(type="open", stack="s", sessionKey=KEY.upper(), reconnectAnchor=ANCHOR),
            p.ERR_MALFORMED,
            "'sessionKey' must be 64 lowercase hex digits",
        ),
        (
            _text(type="open", stack="s", sessionKey=KEY, reconnectAnchor=ANCHOR[:-1]),
            p.ERR_MALFORMED,
            "'reconnectAnchor' must be 64 lowercase hex digits",
        ),
        # release
        (_text(type="release", stack=7), p.ERR_MALFORMED, "'release' message needs 'stack' of type str"),
        (_text(type="release", stack="s" * 1025), p.ERR_MALFORMED, "'stack' must name a stack"),
        # references (ack, upload, response and every message that names an invocation)
        (_text(type="ack", caller=CALLER), p.ERR_MALFORMED, "'ack' message needs 'deliveryId' of type str"),
        (
            _text(type="ack", caller="AKIAIOSFODNN7EXAMPLE:fn", deliveryId=DELIVERY_ID),
            p.ERR_MALFORMED,
            "'caller' must be a Lambda function's aws:userid",
        ),
        (
            _text(type="ack", caller="AROAX:fn/../other", deliveryId=DELIVERY_ID),
            p.ERR_MALFORMED,
            "'caller' must be a Lambda function's aws:userid",
        ),
        (
            _text(type="ack", caller=CALLER, deliveryId=DELIVERY_ID.upper()),
            p.ERR_MALFORMED,
            "'deliveryId' must be 32 lowercase hex digits",
        ),
        (
            _text(type="ping", caller="x"),
            p.ERR_MALFORMED,
            "'caller' must be a Lambda function's aws:userid",
        ),
        # upload
        (_text(type="upload", **R, size=0), p.ERR_MALFORMED, "'size' must be from 1 to 6291456 bytes"),
        (
            _text(type="upload", **R, size=p.MAX_PAYLOAD_BYTES + 1),
            p.ERR_MALFORMED,
            "'size' must be from 1 to 6291456 bytes",
        ),
        (_text(type="upload", **R, size=True), p.ERR_MALFORMED, "'upload' message needs 'size' of type int"),
        # response
        (
            _text(type="response", **R, statusCode=True, payload="1"),
            p.ERR_MALFORMED,
            "'response' message needs 'statusCode' of type int",
        ),
        (
            _text(type="response", **R, statusCode=302, payload="1"),
            p.ERR_MALFORMED,
            "response statusCode must be 200 or 500",
        ),
        (
            _text(type="response", **R, statusCode=200),
            p.ERR_MALFORMED,
            "a 200 response needs exactly one of 'payload' or 'payloadObject'",
        ),
        (
            _text(type="response", **R, statusCode=200, payload="1", payloadObject=True),
            p.ERR_MALFORMED,
            "a 200 response needs exactly one of 'payload' or 'payloadObject'",
        ),
        (
            _text(type="response", **R, statusCode=200, payload=7),
            p.ERR_MALFORMED,
            "'payload' must be the handler's result as JSON text",
        ),
        (
            _text(type="response", **R, statusCode=200, payloadObject=1, payloadSize=1, payloadSha256=DIGEST),
            p.ERR_MALFORMED,
            "'payloadObject' must be true",
        ),
        (
            _text(
                type="response", **R, statusCode=200, payloadObject=True, payloadSize=-1, payloadSha256=DIGEST
            ),
            p.ERR_MALFORMED,
            "'payloadSize' must be from 0 to 6291456",
        ),
        (
            _text(type="response", **R, statusCode=200, payloadObject=True, payloadSize=1),
            p.ERR_MALFORMED,
            "'payloadSha256' must be a hex SHA-256 digest",
        ),
        (
            _text(type="response", **R, statusCode=500),
            p.ERR_MALFORMED,
            "a 500 response needs an 'error' object",
        ),
        (
            _text(type="response", **R, statusCode=500, error={"errorMessage": 1, "errorType": "E"}),
            p.ERR_MALFORMED,
            "'error' needs string 'errorMessage' and 'errorType'",
        ),
        # server messages
        (
            p.encode(_invoke(requestId="")),
            p.ERR_MALFORMED,
            "'requestId' is too long",
        ),
        (
            p.encode(_invoke(requestId="r" * (p.MAX_REQUEST_ID_LENGTH + 1))),
            p.ERR_MALFORMED,
            "'requestId' is too long",
        ),
        (
            p.encode(_invoke(eventUrl="https://u")),
            p.ERR_MALFORMED,
            "an invoke needs exactly one of 'event' or 'eventUrl'",
        ),
        (
            p.encode(_invoke(event=None, eventUrl="https://u")),
            p.ERR_MALFORMED,
            "an 'eventUrl' needs its 'eventSha256'",
        ),
        (
            p.encode(_invoke(environment={"A": 1})),
            p.ERR_MALFORMED,
            "'environment' must map names to strings",
        ),
        (
            p.encode(_invoke(context="{}")),
            p.ERR_MALFORMED,
            "'invoke' message needs 'context' of type dict",
        ),
        (_text(type="closed"), p.ERR_MALFORMED, "'closed' message needs 'reason' of type str"),
        (
            _text(type="released", stackId=STACK_ID, closed=True),
            p.ERR_MALFORMED,
            "'released' message needs 'closed' of type int",
        ),
        (
            _text(type="opened", sessionId=SESSION_ID, stackId=STACK_ID, stackName="s"),
            p.ERR_MALFORMED,
            "'opened' message needs 'owner' of type str",
        ),
    ],
)
def test_malformed_messages_are_refused_with_a_precise_reason(text: str, code: str, reason: str) -> None:
    with pytest.raises(p.ProtocolError) as caught:
        p.decode(text)
    assert (caught.value.code, caught.value.message) == (code, reason)


# --- Hostile input: only ProtocolError, whatever arrives --------------------------------------------------
def _nested(depth: int) -> str:
    return '{"type": "ping", "x": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize(
    ("data", "code", "reason"),
    [
        ("[" * 30_000 + "]" * 30_000, p.ERR_MALFORMED, "message nests deeper than 8 levels"),
        (_nested(30_000), p.ERR_MALFORMED, "message nests deeper than 8 levels"),
        ('{"a":' * 20_000 + "1" + "}" * 20_000, p.ERR_MALFORMED, "message nests deeper than 8 levels"),
        (_nested(8), p.ERR_MALFORMED, "message nests deeper than 8 levels"),
        (b"\xff\xfe{}", p.ERR_MALFORMED, "message is not UTF-8 text"),
        (b"", p.ERR_MALFORMED, "message is empty"),
        ("", p.ERR_MALFORMED, "message is empty"),
        (None, p.ERR_MALFORMED, "message is empty"),
        (7, p.ERR_MALFORMED, "message is empty"),
        ({"type": "ping"}, p.ERR_MALFORMED, "message is empty"),
        (
            '{"type": "ping", "n": ' + "1" * 5000 + "}",
            p.ERR_MALFORMED,
            "message is not valid JSON: Exceeds the limit (4300 digits) for integer string conversion: value "
            "has 5000 digits; use sys.set_int_max_str_digits() to increase the limit",
        ),
        (
            p.encode({"type": "ping", "padding": "x" * p.WEBSOCKET_MESSAGE_LIMIT}),
            p.ERR_TOO_LARGE,
            "message exceeds 131072 bytes",
        ),
        (b"x" * (p.WEBSOCKET_MESSAGE_LIMIT + 1), p.ERR_TOO_LARGE, "message exceeds 131072 bytes"),
        # a lone surrogate counts as bytes it would take, never crashes the size check
        (
            '{"type": "ping", "s": "\\ud800' + "\ud800" * 50_000 + '"}',
            p.ERR_TOO_LARGE,
            "message exceeds 131072 bytes",
        ),
    ],
    ids=[
        "60KB-of-arrays",
        "60KB-nested-in-a-message",
        "40KB-of-objects",
        "one-level-too-deep",
        "not-utf8",
        "empty-bytes",
        "empty-text",
        "none",
        "an-int",
        "a-dict",
        "huge-integer",
        "too-large-text",
        "too-large-bytes",
        "surrogates",
    ],
)
def test_hostile_input_is_a_protocol_error_and_nothing_else(data, code: str, reason: str) -> None:
    with pytest.raises(p.ProtocolError) as caught:
        p.decode(data)
    assert (caught.value.code, caught.value.message) == (code, reason)


def test_the_deepest_message_allowed_still_decodes() -> None:
    assert p.decode(_nested(7)) == json.loads(_nested(7))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=30,
)
messages_of_known_types = st.fixed_dictionaries(
    {"type": st.sampled_from(p.CLIENT_MESSAGE_TYPES + p.SERVER_MESSAGE_TYPES)},
    optional={
        name: json_values | st.just(value)
        for name, value in {
            "caller": CALLER,
            "deliveryId": DELIVERY_ID,
            "stack": "orders",
            "sessionKey": KEY,
            "reconnectAnchor": ANCHOR,
            "statusCode": 200,
            "payload": "1",
            "payloadObject": True,
            "payloadSha256": DIGEST,
            "payloadSize": 3,
            "size": 3,
            "error": {"errorMessage": "m", "errorType": "E"},
            "requestId": "r",
            "function": {},
            "context": {},
            "environment": {},
            "event": "{}",
            "eventUrl": "u",
            "eventSha256": DIGEST,
        }.items()
    },
)


@settings(deadline=None)  # no wall-clock bound on an example: the machine may be busy
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300),
        json_values.map(json.dumps),
        messages_of_known_types.map(json.dumps),
        st.integers(min_value=1, max_value=200).map(_nested),
    )
)
def test_decode_returns_a_message_or_raises_a_protocol_error_for_any_input(data) -> None:
    try:
        message = p.decode(data)
    except p.ProtocolError as exc:
        assert exc.code in (p.ERR_MALFORMED, p.ERR_UNKNOWN_TYPE, p.ERR_TOO_LARGE)
        assert exc.message
        return
    assert isinstance(message, dict)
    assert message["type"] in p.CLIENT_MESSAGE_TYPES + p.SERVER_MESSAGE_TYPES


# --- Message authentication ---------------------------------------------------------------------------
def test_a_signed_message_verifies_with_its_key_only() -> None:
    message = _invoke()
    signed = p.sign(message, KEY)
    assert "mac" not in message, "sign returns a copy"
    assert set(signed) == {*message, "mac"}
    assert len(signed["mac"]) == 64
    assert p.verify(signed, KEY)
    assert p.verify(json.loads(p.encode(signed)), KEY), "what travels verifies"
    assert not p.verify(signed, "00" * 32)
    assert not p.verify(message, KEY), "no mac, no trust"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.update(environment={**m["environment"], "LD_PRELOAD": "/tmp/evil.so"}),
        lambda m: m.update(handler="evil.handler"),
        lambda m: m.update(event='{"order": 18}'),
        lambda m: m.update(credentials=None),
        lambda m: m.pop("credentials"),
        lambda m: m.update(extra="added"),
        lambda m: m.update(mac=m["mac"].upper()),
        lambda m: m.update(mac=m["mac"][:-1]),
        lambda m: m.update(mac=7),
        lambda m: m.update(mac=None),
    ],
    ids=[
        "environment",
        "handler",
        "event",
        "credentials",
        "removed-field",
        "added-field",
        "mac-case",
        "mac-short",
        "mac-int",
        "mac-none",
    ],
)
def test_any_change_to_a_signed_message_fails_verification(tamper) -> None:
    signed = p.sign(_invoke(), KEY)
    tamper(signed)
    assert not p.verify(signed, KEY)


def test_the_mac_does_not_depend_on_key_order_and_a_re_signed_message_gets_a_fresh_mac() -> None:
    message = _invoke()
    reordered = dict(reversed(list(message.items())))
    assert p.sign(message, KEY)["mac"] == p.sign(reordered, KEY)["mac"]
    assert p.sign(p.sign(message, "00" * 32), KEY) == p.sign(message, KEY)


@pytest.mark.parametrize("key", ["", "zz" * 32, None, 7])
def test_a_bad_key_never_verifies_and_never_raises(key) -> None:
    assert not p.verify(p.sign({"type": "pong"}, KEY), key)


def test_unicode_and_lone_surrogates_sign_and_verify() -> None:
    message = {"type": "pong", "note": "été \ud800"}
    assert p.verify(p.sign(message, KEY), KEY)


def test_the_payload_digest_binds_every_field_but_not_their_order() -> None:
    payload = {"requestId": "r", "environment": {"A": "1"}, "credentials": {"accessKeyId": "ASIA"}}
    assert p.payload_digest(payload) == p.payload_digest(dict(reversed(list(payload.items()))))
    assert p.payload_digest(payload) != p.payload_digest({**payload, "environment": {"A": "2"}})
    assert p.payload_digest(payload) == p.sha256_hex(
        json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    )


# --- Secrets and ids -------------------------------------------------------------------------------------
def test_delivery_ids_and_secrets_are_fresh_random_hex() -> None:
    ids = {p.new_delivery_id() for _ in range(1000)}
    secrets = {p.new_secret() for _ in range(1000)}
    assert len(ids) == len(secrets) == 1000
    assert all(p.DELIVERY_ID_PATTERN.match(value) for value in ids)
    assert all(p.HEX256_PATTERN.match(value) for value in secrets)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("9ada04b8-639d-476f-af6a-40c89714b812", True),
        ("9ADA04B8-639D-476F-AF6A-40C89714B812", False),
        ("9ada04b8-639d-176f-af6a-40c89714b812", False),  # not a version 4 uuid
        ("9ada04b8639d476faf6a40c89714b812", False),
        ("9ada04b8-639d-476f-af6a-40c89714b812\n", False),
        ("", False),
    ],
)
def test_session_ids_are_lowercase_uuid4(value: str, valid: bool) -> None:
    assert bool(p.SESSION_ID_PATTERN.match(value)) is valid


# --- Reconnect token chain -----------------------------------------------------------------------------
def test_each_reconnect_token_works_once_and_in_order() -> None:
    seed = p.new_secret()
    anchor = p.reconnect_token(seed, 5)
    first = p.reconnect_token(seed, 4)
    second = p.reconnect_token(seed, 3)
    assert p.reconnect_token(seed, 0) == seed
    assert p.reconnect_token_matches(first, anchor)
    assert not p.reconnect_token_matches(second, anchor)  # skipping ahead is refused
    assert p.reconnect_token_matches(second, first)  # the anchor moves to the token just used
    assert not p.reconnect_token_matches(first, first)  # a used token is refused
    assert not p.reconnect_token_matches(anchor, anchor)


@pytest.mark.parametrize(
    ("token", "anchor"),
    [("not-hex", "x"), (None, "x"), (7, "x"), ("A" * 64, p.reconnect_token("A" * 64, 1)), ("a" * 64, None)],
)
def test_a_malformed_token_or_anchor_never_matches_and_never_raises(token, anchor) -> None:
    assert not p.reconnect_token_matches(token, anchor)


# --- Identities, stacks, keys -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arn", "principal"),
    [
        (
            "arn:aws:sts::123456789012:assumed-role/Developer/alice@example.com",
            "arn:aws:sts::123456789012:assumed-role/Developer",
        ),
        (
            "arn:aws-us-gov:sts::123456789012:assumed-role/Developer/botocore-session-1",
            "arn:aws-us-gov:sts::123456789012:assumed-role/Developer",
        ),
        ("arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/alice"),
        ("arn:aws:iam::123456789012:root", "arn:aws:iam::123456789012:root"),
        (
            "arn:aws:sts::123456789012:assumed-role/Developer/",
            "arn:aws:sts::123456789012:assumed-role/Developer/",
        ),
        ("", ""),
    ],
)
def test_principal_of_drops_only_an_assumed_role_session_name(arn: str, principal: str) -> None:
    assert p.principal_of(arn) == principal


def test_two_sessions_of_one_role_are_one_principal_and_two_roles_are_two() -> None:
    alice = "arn:aws:sts::123456789012:assumed-role/Developer/alice"
    alice_later = "arn:aws:sts::123456789012:assumed-role/Developer/alice-refreshed"
    admin = "arn:aws:sts::123456789012:assumed-role/Admin/alice"
    assert p.principal_of(alice) == p.principal_of(alice_later)
    assert p.principal_of(alice) != p.principal_of(admin)
    assert p.principal_of(None) == ""  # type: ignore[arg-type]


def test_caller_parts_split_the_role_id_from_the_function_name() -> None:
    assert p.caller_parts(CALLER) == ("AROA3XFRBF535PLBIFPI4", "orders-create")
    assert p.CALLER_PATTERN.match(CALLER)
    assert not p.CALLER_PATTERN.match("AIDA3XFRBF535PLBIFPI4:orders-create")  # an IAM user, not a role
    assert not p.CALLER_PATTERN.match("AROA3XFRBF535PLBIFPI4:" + "f" * 65)


@pytest.mark.parametrize(
    ("reference", "valid"),
    [
        ("orders", True),
        ("Orders-Prod-2", True),
        (STACK_ID, True),
        ("arn:aws-cn:cloudformation:cn-north-1:123456789012:stack/orders/1a2b", True),
        ("2orders", False),
        ("orders_prod", False),
        ("o" * 129, False),
        ("arn:aws:cloudformation:eu-west-1:123456789012:stack/orders", False),
        ("arn:aws:lambda:eu-west-1:123456789012:function:orders", False),
        ("orders\n", False),
        ("", False),
    ],
)
def test_only_stack_names_and_stack_ids_are_stack_references(reference: str, valid: bool) -> None:
    assert p.is_stack_reference(reference) is valid


def test_payload_object_keys_and_role_tags_are_under_the_callers_own_identity() -> None:
    assert p.event_object_key(CALLER, DELIVERY_ID) == f"events/{CALLER}/{DELIVERY_ID}"
    assert p.response_object_key(CALLER, DELIVERY_ID) == f"responses/{CALLER}/{DELIVERY_ID}"
    assert p.role_tag_key("eu-west-1", "orders-create") == "plldb:fn:eu-west-1:orders-create"


@settings(deadline=None)  # no wall-clock bound on an example: the machine may be busy
@given(st.dictionaries(st.text(min_size=1), st.text()))
def test_credentials_and_runtime_internals_never_survive_without_credentials(environment) -> None:
    environment = {
        **environment,
        **{name: "secret" for name in p.CREDENTIAL_VARIABLES},
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "_LAMBDA_TELEMETRY_LOG_FD": "3",
    }
    cleaned = p.without_credentials(environment)
    hidden = {*p.CREDENTIAL_VARIABLES, *p.ENVIRONMENT_INTERNAL_VARIABLES}
    assert cleaned == {k: v for k, v in environment.items() if k not in hidden}


def test_instrumentation_variables_name_everything_plldb_puts_on_a_function() -> None:
    assert set(p.INSTRUMENTATION_VARIABLES) == {
        "AWS_LAMBDA_EXEC_WRAPPER",
        "DEBUGGER_SESSION_ID",
        "PLLDB_DISPATCHER_FUNCTION",
        "PLLDB_INVOCATIONS_TABLE",
        "PLLDB_PAYLOAD_BUCKET",
        "PLLDB_FALLBACK",
        "PLLDB_ORIGINAL_EXEC_WRAPPER",
        "PLLDB_ORIGINAL_TIMEOUT",
        "PLLDB_ORIGINAL_ENVIRONMENT",
        "PLLDB_ALIASES",
        "PLLDB_SESSIONS",
    }
    assert set(p.INSTRUMENTATION_VARIABLES).isdisjoint(p.CREDENTIAL_VARIABLES)


# --- The execute-api endpoint override ----------------------------------------------------------------
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
        (
            "wss://abc123.execute-api.cn-north-1.amazonaws.com.cn/live",
            "https://gw.local",
            "wss://gw.local/abc123/live",
        ),
        (
            "https://abc123.execute-api.us-east-1.amazonaws.com",
            "http://127.0.0.1:4510",
            "http://127.0.0.1:4510/abc123",
        ),
        ("https://example.com/live", "http://127.0.0.1:4510", "https://example.com/live"),
        (
            "https://abc123.execute-api.us-east-1.amazonaws.com.evil.example/live",
            "http://127.0.0.1:4510",
            "https://abc123.execute-api.us-east-1.amazonaws.com.evil.example/live",
        ),
    ],
)
def test_execute_api_urls_are_redirected_only_when_the_override_is_set(
    url: str, endpoint: str, expected: str
) -> None:
    assert p.execute_api_url(url, {p.EXECUTE_API_ENDPOINT_VARIABLE: endpoint}) == expected


def test_execute_api_url_reads_the_process_environment_by_default(monkeypatch) -> None:
    monkeypatch.setenv(p.EXECUTE_API_ENDPOINT_VARIABLE, "http://127.0.0.1:9")
    assert p.execute_api_url("wss://a1.execute-api.eu-west-1.amazonaws.com/s") == "ws://127.0.0.1:9/a1/s"
    monkeypatch.delenv(p.EXECUTE_API_ENDPOINT_VARIABLE)
    assert p.execute_api_url("wss://a1.execute-api.eu-west-1.amazonaws.com/s") == (
        "wss://a1.execute-api.eu-west-1.amazonaws.com/s"
    )


def test_encode_is_compact_keeps_unicode_and_message_size_counts_bytes() -> None:
    assert p.encode({"type": "ping", "note": "é"}) == '{"type":"ping","note":"é"}'
    assert p.message_size({"type": "ping", "note": "é"}) == len('{"type":"ping","note":"é"}'.encode())
