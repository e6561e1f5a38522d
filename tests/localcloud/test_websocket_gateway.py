"""The API Gateway WebSocket emulator, driven through real WebSocket and HTTP clients.

APIs are created with boto3 against an in-process moto server; Lambda is a recording test double
(``FakeLambda``) that answers per function ARN, so each test scripts exactly what its functions do.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import re
import struct
import threading
import time
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from plldb.localcloud.websocket_gateway import (
    LambdaFunctionError,
    WebSocketGateway,
    WebSocketLimits,
    _FrameLimitGate,
    _policy_allows,
    _select_route_key,
)
from tests.cloud_state import wait_for
from tests.localcloud.gateway_support import (
    ACCOUNT,
    CREDENTIALS,
    REGION,
    USER_AGENT,
    Api,
    FakeLambda,
    SteppedClock,
    allow_policy,
)

WAIT = 30.0  # how long a reply may take before the test is declared hung (never a bound on speed)
ID_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{15}=$")

CONTEXT_KEYS = {
    "routeKey",
    "eventType",
    "extendedRequestId",
    "requestTime",
    "messageDirection",
    "stage",
    "connectedAt",
    "requestTimeEpoch",
    "identity",
    "requestId",
    "domainName",
    "connectionId",
    "apiId",
}


def open_client(
    gateway: WebSocketGateway, api: Api, query: str = "token=secret", **options: Any
) -> ClientConnection:
    url = gateway.websocket_url(api.api_id, api.stage) + (f"?{query}" if query else "")
    return connect(url, open_timeout=5, close_timeout=2, user_agent_header=USER_AGENT, **options)


def allow_everyone(fake_lambda: FakeLambda, api: Api, context: dict | None = None) -> None:
    fake_lambda.handlers[api.authorizer_arn] = lambda event: allow_policy(event, context)


def management(gateway: WebSocketGateway, api: Api) -> Any:
    return boto3.client(
        "apigatewaymanagementapi", endpoint_url=gateway.management_url(api.api_id, api.stage), **CREDENTIALS
    )


def connection_id_of(fake_lambda: FakeLambda, api: Api, index: int = 0) -> str:
    return fake_lambda.wait_for_events(api.arn("$connect"), index + 1)[index]["requestContext"][
        "connectionId"
    ]


def expect_close(client: ClientConnection, timeout: float = 5.0) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed):
        client.recv(timeout=timeout)
    assert client.close_code is not None
    return client.close_code, client.close_reason or ""


# --- $connect: authorizer and integration ---------------------------------------------------------------
def test_authorizer_gets_api_gateways_request_event(fake_lambda, create_api, start_gateway):
    api = create_api(stage_variables={"Table": "PLLDBSessions"})
    allow_everyone(fake_lambda, api)
    gateway = start_gateway()
    with open_client(
        gateway, api, "token=secret&token=second&mode=debug", additional_headers={"X-Trace": "t1"}
    ):
        (event,) = fake_lambda.wait_for_events(api.authorizer_arn, 1)
    assert set(event) == {
        "type",
        "methodArn",
        "headers",
        "multiValueHeaders",
        "queryStringParameters",
        "multiValueQueryStringParameters",
        "stageVariables",
        "requestContext",
    }
    assert event["type"] == "REQUEST"
    assert event["methodArn"] == f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{api.api_id}/dev/$connect"
    assert event["queryStringParameters"] == {"token": "second", "mode": "debug"}
    assert event["multiValueQueryStringParameters"] == {"token": ["secret", "second"], "mode": ["debug"]}
    assert event["stageVariables"] == {"Table": "PLLDBSessions"}
    headers = event["headers"]
    assert headers["Host"] == f"{api.api_id}.execute-api.{REGION}.amazonaws.com"
    assert headers["X-Trace"] == "t1"
    assert headers["Upgrade"] == "websocket"
    assert headers["User-Agent"] == USER_AGENT
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert (headers["X-Forwarded-Port"], headers["X-Forwarded-Proto"]) == ("443", "https")
    assert event["multiValueHeaders"]["X-Trace"] == ["t1"]
    context = event["requestContext"]
    assert set(context) == CONTEXT_KEYS
    assert (context["routeKey"], context["eventType"], context["messageDirection"]) == (
        "$connect",
        "CONNECT",
        "IN",
    )
    assert (context["stage"], context["apiId"]) == ("dev", api.api_id)
    assert context["domainName"] == f"{api.api_id}.execute-api.{REGION}.amazonaws.com"
    assert context["identity"] == {"sourceIp": "127.0.0.1", "userAgent": USER_AGENT}
    assert ID_PATTERN.match(context["connectionId"]) and ID_PATTERN.match(context["requestId"])
    assert re.match(r"^\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000$", context["requestTime"])
    assert abs(context["requestTimeEpoch"] - time.time() * 1000) < 10_000


def test_connect_event_carries_the_authorizer_context(fake_lambda, create_api, start_gateway):
    api = create_api()
    allow_everyone(fake_lambda, api, {"sessionId": "s-1", "attempt": 2, "trusted": True})
    gateway = start_gateway()
    with open_client(gateway, api):
        (event,) = fake_lambda.wait_for_events(api.arn("$connect"), 1)
    assert set(event) == {
        "headers",
        "multiValueHeaders",
        "queryStringParameters",
        "multiValueQueryStringParameters",
        "requestContext",
        "isBase64Encoded",
    }
    assert "Upgrade" not in event["headers"] and "Connection" not in event["headers"]
    assert event["queryStringParameters"] == {"token": "secret"}
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert set(context) == CONTEXT_KEYS | {"authorizer"}
    authorizer = context["authorizer"]
    assert set(authorizer) == {"sessionId", "attempt", "trusted", "principalId", "integrationLatency"}
    assert (authorizer["sessionId"], authorizer["attempt"], authorizer["trusted"]) == ("s-1", 2, True)
    assert authorizer["principalId"] == "developer"
    assert isinstance(authorizer["integrationLatency"], int)


def test_missing_identity_source_is_401_without_calling_the_authorizer(
    fake_lambda, create_api, start_gateway
):
    api = create_api()
    allow_everyone(fake_lambda, api)
    gateway = start_gateway()
    with pytest.raises(InvalidStatus) as rejected:
        open_client(gateway, api, query="other=1")
    assert rejected.value.response.status_code == 401
    assert fake_lambda.calls == []
    assert gateway.connection_ids() == []


def test_header_identity_source_is_matched_case_insensitively(fake_lambda, create_api, start_gateway):
    api = create_api(identity_source=["route.request.header.X-Session-Token"])
    allow_everyone(fake_lambda, api)
    gateway = start_gateway()
    with pytest.raises(InvalidStatus) as rejected:
        open_client(gateway, api, query="")
    assert rejected.value.response.status_code == 401
    with open_client(gateway, api, query="", additional_headers={"x-session-token": "abc"}):
        (event,) = fake_lambda.wait_for_events(api.authorizer_arn, 1)
    assert event["headers"]["x-session-token"] == "abc"


def _raise_unauthorized(event: dict) -> dict:
    raise LambdaFunctionError(event["methodArn"], {"errorMessage": "Unauthorized", "errorType": "Exception"})


class _PayloadError(RuntimeError):
    """An invocation error that carries Lambda's raw error payload, as the local cloud's glue raises."""

    def __init__(self, payload: bytes) -> None:
        super().__init__("function failed")
        self.payload = payload


def _raise_unauthorized_payload(event: dict) -> dict:
    raise _PayloadError(b'{"errorMessage": "Unauthorized", "errorType": "Exception", "stackTrace": []}')


def _raise_bug(event: dict) -> dict:
    raise LambdaFunctionError(event["methodArn"], {"errorMessage": "boom", "errorType": "KeyError"})


@pytest.mark.parametrize(
    ("authorizer", "status"),
    [
        pytest.param(
            lambda event: {**allow_policy(event), "policyDocument": {"Statement": []}}, 403, id="no-allow"
        ),
        pytest.param(
            lambda event: {
                **allow_policy(event),
                "policyDocument": {
                    "Statement": [
                        {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "*"},
                        {"Action": "execute-api:*", "Effect": "Deny", "Resource": event["methodArn"]},
                    ]
                },
            },
            403,
            id="explicit-deny-wins",
        ),
        pytest.param(
            lambda event: allow_policy(event, resource=event["methodArn"].rsplit("/", 1)[0] + "/*/*"),
            403,
            id="resource-does-not-match-connect",
        ),
        pytest.param(_raise_unauthorized, 401, id="unauthorized-error"),
        pytest.param(_raise_unauthorized_payload, 401, id="unauthorized-error-payload"),
        pytest.param(_raise_bug, 500, id="function-error"),
        pytest.param(lambda event: {"principalId": "x"}, 500, id="no-policy"),
        pytest.param(lambda event: allow_policy(event, {"nested": {"a": 1}}), 500, id="nested-context"),
    ],
)
def test_authorizer_refusals(fake_lambda, create_api, start_gateway, authorizer, status):
    api = create_api()
    fake_lambda.handlers[api.authorizer_arn] = authorizer
    gateway = start_gateway()
    with pytest.raises(InvalidStatus) as rejected:
        open_client(gateway, api)
    assert rejected.value.response.status_code == status
    assert fake_lambda.events(api.arn("$connect")) == []
    assert gateway.connection_ids() == []


def test_wildcard_allow_resource_admits(fake_lambda, create_api, start_gateway):
    api = create_api()
    fake_lambda.handlers[api.authorizer_arn] = lambda event: allow_policy(
        event, resource=f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{api.api_id}/*"
    )
    gateway = start_gateway()
    with open_client(gateway, api):
        assert len(gateway.connection_ids()) == 1


@pytest.mark.parametrize(
    ("result", "status"),
    [({"statusCode": 401}, 401), ({"statusCode": 500, "body": "no"}, 500), ({"statusCode": "200"}, 502)],
)
def test_connect_integration_status_decides(fake_lambda, create_api, start_gateway, result, status):
    api = create_api(authorized=False)
    answers = iter([result])
    fake_lambda.handlers[api.arn("$connect")] = lambda event: next(answers, {"statusCode": 200})
    gateway = start_gateway()
    with pytest.raises(InvalidStatus) as rejected:
        open_client(gateway, api)
    assert rejected.value.response.status_code == status
    assert gateway.connection_ids() == []
    # A connection accepted after the rejected one closes: its $disconnect is the only one there is.
    with open_client(gateway, api):
        accepted = connection_id_of(fake_lambda, api, index=1)
    fake_lambda.wait_for_events(api.arn("$disconnect"), 1)
    assert [e["requestContext"]["connectionId"] for e in fake_lambda.events(api.arn("$disconnect"))] == [
        accepted
    ]


def test_connect_integration_error_is_502(fake_lambda, create_api, start_gateway):
    api = create_api(authorized=False)
    fake_lambda.handlers[api.arn("$connect")] = _raise_bug
    gateway = start_gateway()
    with pytest.raises(InvalidStatus) as rejected:
        open_client(gateway, api)
    assert rejected.value.response.status_code == 502


def test_connect_integration_chooses_the_subprotocol(fake_lambda, create_api, start_gateway):
    api = create_api(authorized=False)
    fake_lambda.handlers[api.arn("$connect")] = lambda event: {
        "statusCode": 200,
        "headers": {"Sec-WebSocket-Protocol": "plldb.v1"},
    }
    gateway = start_gateway()
    with open_client(gateway, api, subprotocols=["other", "plldb.v1"]) as client:
        assert client.subprotocol == "plldb.v1"


@pytest.mark.parametrize("path_kind", ["unknown-api", "unknown-stage"])
def test_unknown_api_or_stage_is_403(create_api, start_gateway, path_kind):
    api = create_api(authorized=False)
    gateway = start_gateway()
    target = Api("nosuchapi", "dev", "") if path_kind == "unknown-api" else Api(api.api_id, "prod", "")
    with pytest.raises(InvalidStatus) as rejected:
        open_client(gateway, target)
    assert rejected.value.response.status_code == 403


# --- messages and routes -----------------------------------------------------------------------------------
def test_messages_reach_default_with_the_authorizer_context(fake_lambda, create_api, start_gateway):
    api = create_api()
    allow_everyone(fake_lambda, api, {"sessionId": "s-9"})
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        client.send("not json")
        client.send(b"\x00\xff")
        client.send(json.dumps({"action": "unknown-route"}))
        events = fake_lambda.wait_for_events(api.arn("$default"), 3)
    by_body = {event["body"]: event for event in events}  # handed over concurrently: any order
    text = by_body["not json"]
    binary = by_body[base64.b64encode(b"\x00\xff").decode()]
    unrouted = by_body[json.dumps({"action": "unknown-route"})]
    assert set(text) == {"requestContext", "body", "isBase64Encoded"}
    assert (text["body"], text["isBase64Encoded"]) == ("not json", False)
    assert (binary["body"], binary["isBase64Encoded"]) == (base64.b64encode(b"\x00\xff").decode(), True)
    assert json.loads(unrouted["body"]) == {"action": "unknown-route"}
    context = text["requestContext"]
    assert set(context) == CONTEXT_KEYS | {"messageId", "authorizer"}
    assert (context["routeKey"], context["eventType"]) == ("$default", "MESSAGE")
    assert context["authorizer"]["sessionId"] == "s-9"
    assert context["authorizer"]["principalId"] == "developer"
    assert context["connectionId"] == connection_id_of(fake_lambda, api)
    assert ID_PATTERN.match(context["messageId"])
    assert len({event["requestContext"]["messageId"] for event in events}) == 3


def test_route_selection_expression_picks_custom_routes(fake_lambda, create_api, start_gateway):
    api = create_api(routes=("$default", "ping", "$disconnect"), authorized=False)
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        client.send(json.dumps({"action": "ping"}))
        client.send(json.dumps({"action": "$disconnect"}))
        client.send(json.dumps({"action": 5}))
        (ping,) = fake_lambda.wait_for_events(api.arn("ping"), 1)
        defaults = fake_lambda.wait_for_events(api.arn("$default"), 2)
    fake_lambda.wait_for_events(api.arn("$disconnect"), 1)
    assert ping["requestContext"]["routeKey"] == "ping"
    assert sorted(event["body"] for event in defaults) == [
        json.dumps({"action": "$disconnect"}),
        json.dumps({"action": 5}),
    ]
    assert fake_lambda.events(api.arn("$disconnect"))[0]["requestContext"]["eventType"] == "DISCONNECT"


def test_no_matching_route_and_no_default_answers_forbidden(fake_lambda, create_api, start_gateway):
    api = create_api(routes=("ping",), authorized=False)
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        client.send(json.dumps({"action": "other"}))
        answer = client.recv(timeout=5, decode=True)
        connection_id = gateway.connection_ids()[0]
    match = re.fullmatch(
        r'\{"message": "Forbidden", "connectionId":"([^"]+)", "requestId":"([^"]+)"\}', answer
    )
    assert match is not None, answer
    assert match.group(1) == connection_id
    assert ID_PATTERN.match(match.group(2))


def test_failing_integration_answers_internal_server_error(fake_lambda, create_api, start_gateway):
    api = create_api(authorized=False)
    fake_lambda.handlers[api.arn("$default")] = _raise_bug
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        client.send("hello")
        answer = json.loads(client.recv(timeout=5))
    assert answer["message"] == "Internal server error"
    assert set(answer) == {"message", "connectionId", "requestId"}


def test_integration_timeout_answers_endpoint_request_timed_out(fake_lambda, create_api, start_gateway):
    api = create_api(authorized=False)
    release = threading.Event()
    fake_lambda.handlers[api.arn("$default")] = lambda event: release.wait(5) and {"body": "late"}
    gateway = start_gateway(WebSocketLimits(integration_timeout_seconds=0.3))
    try:
        with open_client(gateway, api) as client:
            client.send("slow")
            assert json.loads(client.recv(timeout=5))["message"] == "Endpoint request timed out"
    finally:
        release.set()


def test_only_routes_with_a_route_response_answer(fake_lambda, create_api, start_gateway):
    api = create_api(routes=("$default", "echo"), two_way=("$default",), authorized=False)
    fake_lambda.handlers[api.arn("echo")] = lambda event: {"statusCode": 200, "body": "from echo"}
    fake_lambda.handlers[api.arn("$default")] = lambda event: {"statusCode": 200, "body": "from default"}
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        client.send(json.dumps({"action": "echo"}))  # one-way: invoked first, answers nothing
        client.send("anything")
        assert client.recv(timeout=5) == "from default"
    assert len(fake_lambda.events(api.arn("echo"))) == 1


def test_route_response_body_may_be_binary(fake_lambda, create_api, start_gateway):
    api = create_api(two_way=("$default",), authorized=False)
    fake_lambda.handlers[api.arn("$default")] = lambda event: {
        "statusCode": 200,
        "body": base64.b64encode(b"\x01\x02").decode(),
        "isBase64Encoded": True,
    }
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        client.send("x")
        assert client.recv(timeout=5) == b"\x01\x02"


def test_two_messages_of_one_connection_run_their_integrations_at_the_same_time(
    fake_lambda, create_api, start_gateway
):
    """API Gateway invokes each message's integration independently: neither waits for the other."""
    api = create_api(two_way=("$default",), authorized=False)
    both_running = threading.Barrier(2, timeout=30)  # broken if the second starts after the first ends

    def meet(event: dict) -> dict:
        both_running.wait()
        return {"statusCode": 200, "body": "done " + event["body"]}

    fake_lambda.handlers[api.arn("$default")] = meet
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        client.send("a")
        client.send("b")
        answers = {client.recv(timeout=60), client.recv(timeout=60)}
    assert answers == {"done a", "done b"}


def test_a_slow_message_does_not_hold_the_next_one_of_its_connection(fake_lambda, create_api, start_gateway):
    api = create_api(two_way=("$default",), authorized=False)
    release = threading.Event()

    def answer(event: dict) -> dict:
        if event["body"] == "slow":
            release.wait(5)
        return {"statusCode": 200, "body": "answered " + event["body"]}

    fake_lambda.handlers[api.arn("$default")] = answer
    gateway = start_gateway()
    try:
        with open_client(gateway, api) as client:
            client.send("slow")
            fake_lambda.wait_for_events(api.arn("$default"), 1)
            client.send("fast")
            assert client.recv(timeout=5) == "answered fast"
            release.set()
            assert client.recv(timeout=5) == "answered slow"
    finally:
        release.set()


def test_integrations_of_a_connections_messages_run_in_a_bounded_pool(
    fake_lambda, create_api, start_gateway, caplog
):
    """Beyond the pool's size a message waits for a free slot (its integration timeout not yet running)."""
    api = create_api(two_way=("$default",), authorized=False)
    order: list[str] = []
    releases = {body: threading.Event() for body in ("1", "2", "3")}

    def held(event: dict) -> dict:
        order.append(f"start {event['body']}")
        releases[event["body"]].wait(WAIT)
        order.append(f"end {event['body']}")
        return {"statusCode": 200, "body": event["body"]}

    fake_lambda.handlers[api.arn("$default")] = held
    gateway = start_gateway(
        # An integration timeout far beyond any wait here: only the pool decides when a message runs.
        WebSocketLimits(integration_timeout_seconds=4 * WAIT, messages_in_flight_per_connection=2)
    )
    caplog.set_level(logging.DEBUG, logger="plldb.localcloud.gateway.server")
    waiting = "a message of connection {} waits for a free integration slot"
    try:
        with open_client(gateway, api) as client:
            for body in ("1", "2", "3"):
                client.send(body)
            connection_id = fake_lambda.wait_for_events(api.arn("$default"), 2)[0]["requestContext"][
                "connectionId"
            ]
            wait_for(lambda: waiting.format(connection_id) in caplog.messages, "the third message to wait")
            assert [event["body"] for event in fake_lambda.events(api.arn("$default"))] == ["1", "2"]
            releases["1"].set()
            assert client.recv(timeout=WAIT) == "1"
            fake_lambda.wait_for_events(api.arn("$default"), 3)
            releases["2"].set()
            releases["3"].set()
            assert {client.recv(timeout=WAIT) for _ in range(2)} == {"2", "3"}
    finally:
        for release in releases.values():
            release.set()
    assert order.index("start 3") > order.index("end 1")


def test_a_slow_lambda_does_not_hold_other_connections(fake_lambda, create_api, start_gateway):
    api = create_api(authorized=False)
    release = threading.Event()
    fake_lambda.handlers[api.arn("$default")] = lambda event: (
        (release.wait(5) if event["body"] == "blocked" else None) or {"statusCode": 200}
    )
    gateway = start_gateway()
    try:
        with open_client(gateway, api) as blocked, open_client(gateway, api) as free:
            blocked.send("blocked")
            fake_lambda.wait_for_events(api.arn("$default"), 1)
            free.send("free")
            events = fake_lambda.wait_for_events(api.arn("$default"), 2)
            assert [event["body"] for event in events] == ["blocked", "free"]
    finally:
        release.set()


# --- $disconnect -----------------------------------------------------------------------------------------
def test_client_close_runs_disconnect_with_code_and_reason(fake_lambda, create_api, start_gateway):
    api = create_api(stage_variables={"Mode": "debug"})
    allow_everyone(fake_lambda, api, {"sessionId": "s-2"})
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        connection_id = connection_id_of(fake_lambda, api)
        client.close(code=1000, reason="detach")
    (event,) = fake_lambda.wait_for_events(api.arn("$disconnect"), 1)
    domain = f"{api.api_id}.execute-api.{REGION}.amazonaws.com"
    assert set(event) == {
        "headers",
        "multiValueHeaders",
        "stageVariables",
        "requestContext",
        "isBase64Encoded",
    }
    assert event["headers"] == {"Host": domain, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
    assert event["multiValueHeaders"]["Host"] == [domain]
    assert event["stageVariables"] == {"Mode": "debug"}
    context = event["requestContext"]
    assert set(context) == CONTEXT_KEYS | {"disconnectStatusCode", "disconnectReason", "authorizer"}
    assert (context["routeKey"], context["eventType"]) == ("$disconnect", "DISCONNECT")
    assert (context["disconnectStatusCode"], context["disconnectReason"]) == (1000, "detach")
    assert context["connectionId"] == connection_id
    assert context["authorizer"]["sessionId"] == "s-2"
    assert gateway.connection_ids() == []


def test_close_frame_without_status_is_reported_as_1005(fake_lambda, create_api, start_gateway):
    api = create_api(authorized=False)
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        client.close(code=None)  # type: ignore[arg-type]  # an empty close frame
    (event,) = fake_lambda.wait_for_events(api.arn("$disconnect"), 1)
    context = event["requestContext"]
    assert (context["disconnectStatusCode"], context["disconnectReason"]) == (
        1005,
        "Client-side close frame status not set",
    )


def test_disconnect_runs_after_the_connections_messages_in_flight_have_finished(
    fake_lambda, create_api, start_gateway
):
    api = create_api(authorized=False)
    finished: list[str] = []
    release = threading.Event()

    def held(event: dict) -> dict:
        release.wait(WAIT)
        finished.append(event["body"])
        return {"statusCode": 200}

    fake_lambda.handlers[api.arn("$default")] = held
    fake_lambda.handlers[api.arn("$disconnect")] = lambda event: finished.append("$disconnect") or {}
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        connection_id = connection_id_of(fake_lambda, api)
        client.send("a")
        client.send("b")
        fake_lambda.wait_for_events(api.arn("$default"), 2)
    # The connection is gone while both messages are still in their integrations.
    wait_for(lambda: connection_id not in gateway.connection_ids(), "the gateway to forget the connection")
    release.set()
    fake_lambda.wait_for_events(api.arn("$disconnect"), 1)
    assert sorted(finished[:2]) == ["a", "b"]
    assert finished[2:] == ["$disconnect"]


# --- the management API -------------------------------------------------------------------------------------
def test_post_to_connection_reaches_the_client(fake_lambda, create_api, start_gateway):
    api = create_api(authorized=False)
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        manager = management(gateway, api)
        connection_id = connection_id_of(fake_lambda, api)
        manager.post_to_connection(ConnectionId=connection_id, Data=b'{"type":"invoke"}')
        manager.post_to_connection(ConnectionId=connection_id, Data="héllo".encode())
        manager.post_to_connection(ConnectionId=connection_id, Data=b"\xff\xfe")
        assert client.recv(timeout=5) == '{"type":"invoke"}'
        assert client.recv(timeout=5) == "héllo"
        assert client.recv(timeout=5) == b"\xff\xfe"


def test_post_up_to_128_kb_passes_and_above_is_payload_too_large(fake_lambda, create_api, start_gateway):
    api = create_api(authorized=False)
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        manager = management(gateway, api)
        connection_id = connection_id_of(fake_lambda, api)
        manager.post_to_connection(ConnectionId=connection_id, Data=b"a" * (128 * 1024))
        assert client.recv(timeout=5) == "a" * (128 * 1024)
        with pytest.raises(manager.exceptions.PayloadTooLargeException) as too_large:
            manager.post_to_connection(ConnectionId=connection_id, Data=b"a" * (128 * 1024 + 1))
        assert too_large.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
        assert too_large.value.response["Error"]["Message"] == "Message too long"


def test_get_connection_describes_it(fake_lambda, create_api, start_gateway):
    api = create_api(authorized=False)
    gateway = start_gateway()
    before = time.time()
    with open_client(gateway, api) as client:
        manager = management(gateway, api)
        connection_id = connection_id_of(fake_lambda, api)
        first = manager.get_connection(ConnectionId=connection_id)
        time.sleep(0.05)
        client.send("activity")
        fake_lambda.wait_for_events(api.arn("$default"), 1)
        second = manager.get_connection(ConnectionId=connection_id)
    assert first["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": USER_AGENT}
    assert before - 1 <= first["ConnectedAt"].timestamp() <= time.time()
    assert second["ConnectedAt"] == first["ConnectedAt"]
    assert second["LastActiveAt"] > first["LastActiveAt"]


def test_delete_connection_closes_it_and_runs_disconnect(fake_lambda, create_api, start_gateway):
    api = create_api(authorized=False)
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        manager = management(gateway, api)
        connection_id = connection_id_of(fake_lambda, api)
        response = manager.delete_connection(ConnectionId=connection_id)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
        assert expect_close(client) == (1000, "")
    (event,) = fake_lambda.wait_for_events(api.arn("$disconnect"), 1)
    assert event["requestContext"]["disconnectStatusCode"] == 1000
    with pytest.raises(manager.exceptions.GoneException) as gone:
        manager.post_to_connection(ConnectionId=connection_id, Data=b"late")
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410


@pytest.mark.parametrize("operation", ["post_to_connection", "get_connection", "delete_connection"])
def test_unknown_connection_is_gone(create_api, start_gateway, operation):
    api = create_api(authorized=False)
    gateway = start_gateway()
    manager = management(gateway, api)
    arguments: dict[str, Any] = {"ConnectionId": "AAAAAAAAAAAAAAA="}
    if operation == "post_to_connection":
        arguments["Data"] = b"x"
    with pytest.raises(manager.exceptions.GoneException):
        getattr(manager, operation)(**arguments)


def test_connection_of_another_stage_is_gone(fake_lambda, apigateway, create_api, start_gateway):
    api = create_api(authorized=False)
    apigateway.create_stage(ApiId=api.api_id, StageName="prod")
    gateway = start_gateway()
    with open_client(gateway, api):
        connection_id = connection_id_of(fake_lambda, api)
        manager = management(gateway, Api(api.api_id, "prod", ""))
        with pytest.raises(manager.exceptions.GoneException):
            manager.post_to_connection(ConnectionId=connection_id, Data=b"x")


def test_unsigned_management_request_is_forbidden(fake_lambda, create_api, start_gateway):
    api = create_api(authorized=False)
    gateway = start_gateway()
    with open_client(gateway, api):
        connection_id = connection_id_of(fake_lambda, api)
        unsigned = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
        unsigned.request("POST", f"/{api.api_id}/dev/@connections/{connection_id}", body=b"x")
        response = unsigned.getresponse()
        body = json.loads(response.read())
        unsigned.close()
    assert response.status == 403
    assert response.getheader("x-amzn-ErrorType") == "ForbiddenException"
    assert body == {"message": "Missing Authentication Token"}


# --- quotas ---------------------------------------------------------------------------------------------------
SMALL = WebSocketLimits(message_bytes=4096, frame_bytes=1024)


def test_message_within_quotas_may_be_fragmented(fake_lambda, create_api, start_gateway):
    api = create_api(authorized=False)
    gateway = start_gateway(SMALL)
    with open_client(gateway, api) as client:
        client.send("x" * 1024)
        client.send(["a" * 1024, "b" * 1024, "c" * 1024, "d" * 1024])  # four frames, exactly 4096 bytes
        events = fake_lambda.wait_for_events(api.arn("$default"), 2)
        assert gateway.connection_ids() != []
    assert events[0]["body"] == "x" * 1024
    assert events[1]["body"] == "a" * 1024 + "b" * 1024 + "c" * 1024 + "d" * 1024


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("y" * 1025, id="one-frame-above-the-frame-quota"),
        pytest.param(["a" * 1024] * 4 + ["b"], id="fragments-above-the-message-quota"),
    ],
)
def test_quota_breach_closes_with_1009(fake_lambda, create_api, start_gateway, message):
    api = create_api(authorized=False)
    gateway = start_gateway(SMALL)
    with open_client(gateway, api) as client:
        client.send("before")
        with contextlib.suppress(ConnectionClosed):  # the gateway may close before the last frame is sent
            client.send(message)
        assert expect_close(client) == (1009, "Message too big")
    (event,) = fake_lambda.wait_for_events(api.arn("$disconnect"), 1)
    context = event["requestContext"]
    assert (context["disconnectStatusCode"], context["disconnectReason"]) == (1009, "Message too big")
    assert [event["body"] for event in fake_lambda.events(api.arn("$default"))] == ["before"]


def test_idle_connection_closes_and_only_data_messages_count(fake_lambda, create_api, start_gateway):
    clock = SteppedClock()
    api = create_api(authorized=False)
    gateway = start_gateway(WebSocketLimits(idle_timeout_seconds=10.0), clock=clock)
    with open_client(gateway, api, ping_interval=None) as client:
        manager = management(gateway, api)
        connection_id = connection_id_of(fake_lambda, api)
        for _ in range(4):  # server-to-client posts are activity: 36 s without a client message
            clock.advance(9.0)
            gateway.check_timers()
            assert connection_id in gateway.connection_ids()
            manager.post_to_connection(ConnectionId=connection_id, Data=b"keep")
            assert client.recv(timeout=WAIT) == "keep"
        clock.advance(9.0)
        assert client.ping().wait(WAIT)  # answered, but a control frame is not activity
        gateway.check_timers()
        assert connection_id in gateway.connection_ids()
        clock.advance(1.0)  # 10 s since the last data message
        gateway.check_timers()
        assert expect_close(client) == (1001, "Going away")
    (event,) = fake_lambda.wait_for_events(api.arn("$disconnect"), 1)
    context = event["requestContext"]
    assert (context["disconnectStatusCode"], context["disconnectReason"]) == (1001, "Going away")


def test_connection_lifetime_is_capped(fake_lambda, create_api, start_gateway):
    clock = SteppedClock()
    api = create_api(authorized=False)
    gateway = start_gateway(WebSocketLimits(max_connection_seconds=7200.0), clock=clock)
    with open_client(gateway, api) as client:
        connection_id = connection_id_of(fake_lambda, api)
        clock.advance(7199.0)
        client.send("busy")  # activity keeps it from idling, not from its maximum duration
        fake_lambda.wait_for_events(api.arn("$default"), 1)
        gateway.check_timers()
        assert connection_id in gateway.connection_ids()
        clock.advance(1.0)
        gateway.check_timers()
        assert expect_close(client) == (1001, "Going away")


# --- failures -------------------------------------------------------------------------------------------------
def test_cut_drops_the_connection_without_a_close_frame(fake_lambda, create_api, start_gateway):
    api = create_api(authorized=False)
    gateway = start_gateway()
    with open_client(gateway, api) as client, open_client(gateway, api) as bystander:
        connection_id = connection_id_of(fake_lambda, api)
        gateway.cut(connection_id)
        assert expect_close(client)[0] == 1006
        assert client.close_reason in ("", None)
        (event,) = fake_lambda.wait_for_events(api.arn("$disconnect"), 1)
        context = event["requestContext"]
        assert context["connectionId"] == connection_id
        assert (context["disconnectStatusCode"], context["disconnectReason"]) == (
            1006,
            "Connection closed abnormally",
        )
        assert connection_id not in gateway.connection_ids()
        assert len(gateway.connection_ids()) == 1
        with pytest.raises(management(gateway, api).exceptions.GoneException):
            management(gateway, api).post_to_connection(ConnectionId=connection_id, Data=b"x")
        bystander.send("still here")
        fake_lambda.wait_for_events(api.arn("$default"), 1)
    with pytest.raises(KeyError):
        gateway.cut(connection_id)


def test_restart_drops_everyone_and_serves_again_on_the_same_port(fake_lambda, create_api, start_gateway):
    api = create_api(two_way=("$default",), authorized=False)
    fake_lambda.handlers[api.arn("$default")] = lambda event: {"statusCode": 200, "body": "pong"}
    gateway = start_gateway()
    port = gateway.port
    with open_client(gateway, api) as first, open_client(gateway, api) as second:
        connection_ids = {connection_id_of(fake_lambda, api, 0), connection_id_of(fake_lambda, api, 1)}
        gateway.restart()
        assert expect_close(first)[0] == 1006
        assert expect_close(second)[0] == 1006
    events = fake_lambda.wait_for_events(api.arn("$disconnect"), 2)
    assert {event["requestContext"]["connectionId"] for event in events} == connection_ids
    assert gateway.port == port
    with open_client(gateway, api) as again:
        again.send("ping")
        assert again.recv(timeout=5) == "pong"


# --- pure pieces, over their whole input space -----------------------------------------------------------
def _frame(opcode: int, fin: bool, payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    length = len(payload)
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return header + mask + masked


class _RecordingParser:
    def __init__(self) -> None:
        self.received = bytearray()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.received += data
        return False, b""

    def feed_eof(self) -> None:
        pass


@st.composite
def _messages(draw: Any) -> list[list[int]]:
    """Messages as lists of fragment sizes, each fragment's size drawn around the test quotas."""
    return draw(st.lists(st.lists(st.integers(0, 300), min_size=1, max_size=4), min_size=1, max_size=5))


@settings(max_examples=200, deadline=None)
@given(messages=_messages(), cuts=st.lists(st.integers(0, 5000), max_size=8), ping_after=st.integers(0, 5))
def test_frame_gate_passes_exactly_the_frames_before_a_breach(messages, cuts, ping_after):
    frame_limit, message_limit = 200, 500
    stream = bytearray()
    expected_end: int | None = None
    for message_index, sizes in enumerate(messages):
        total = 0
        for index, size in enumerate(sizes):
            opcode = 0x1 if index == 0 else 0x0
            frame_start = len(stream)
            stream += _frame(opcode, index == len(sizes) - 1, b"p" * size)
            total += size
            if expected_end is None and (size > frame_limit or total > message_limit):
                expected_end = frame_start
            if message_index == ping_after and index == 0 and len(sizes) > 1:
                stream += _frame(0x9, True, b"ping")  # control frames may sit between fragments
    breaches: list[bool] = []
    parser = _RecordingParser()
    gate = _FrameLimitGate(parser, frame_limit, message_limit, lambda: breaches.append(True))
    edges = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    for start, end in zip(edges, edges[1:], strict=False):
        gate.feed_data(bytes(stream[start:end]))
    if expected_end is None:
        assert breaches == []
        assert bytes(parser.received) == bytes(stream)
    else:
        assert breaches == [True]
        assert bytes(parser.received) == bytes(stream[: len(parser.received)])
        assert len(parser.received) <= expected_end


@given(action=st.text(min_size=1), extra=st.dictionaries(st.text(), st.integers()))
def test_route_selection_reads_the_action_of_json_objects(action, extra):
    body = json.dumps({**{key: value for key, value in extra.items() if key != "action"}, "action": action})
    assert _select_route_key("$request.body.action", body) == action
    assert _select_route_key("${request.body.action}", body) == action


@given(body=st.text())
def test_route_selection_falls_back_for_anything_without_an_action(body):
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("action"), str | int | float | bool):
        return
    assert _select_route_key("$request.body.action", body) is None


def test_route_selection_follows_nested_paths():
    assert _select_route_key("$request.body.meta.kind", '{"meta": {"kind": "ack"}}') == "ack"
    assert _select_route_key("$request.body.meta.kind", '{"meta": "ack"}') is None
    assert _select_route_key("$request.method $request.path", '{"action": "x"}') is None


ARN = "arn:aws:execute-api:us-east-1:123456789012:abcdef/dev/$connect"


@given(prefix_length=st.integers(0, len(ARN)), position=st.integers(0, len(ARN) - 1))
def test_policy_wildcards(prefix_length, position):
    def allows(resource: str) -> bool:
        statement = {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": resource}
        return _policy_allows({"Statement": [statement]}, ARN)

    assert allows(ARN[:prefix_length] + "*")
    assert allows(ARN[:position] + "?" + ARN[position + 1 :])
    assert not allows(ARN[:position] + "#" + ARN[position + 1 :])
    assert not allows(ARN[:position] + ARN[position + 1 :])


def test_policy_statement_forms():
    allow = {"Action": ["execute-api:invoke"], "Effect": "Allow", "Resource": [ARN]}
    assert _policy_allows({"Statement": allow}, ARN)
    assert not _policy_allows({"Statement": [{**allow, "Action": "s3:GetObject"}]}, ARN)
    assert not _policy_allows({"Statement": [allow, {**allow, "Effect": "Deny", "Resource": "*"}]}, ARN)
    assert not _policy_allows({"Statement": "nonsense"}, ARN)
