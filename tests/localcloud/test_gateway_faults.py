"""Faults the WebSocket gateway injects on demand (``gateway.faults``), through real WebSocket clients:
dropped ``$disconnect`` events, unanswered pings; and the management API's answer for a gone connection."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from websockets.sync.client import connect

from tests.localcloud.gateway_support import CREDENTIALS, USER_AGENT, Api, FakeLambda


def open_client(gateway: Any, api: Api) -> Any:
    return connect(
        gateway.websocket_url(api.api_id, api.stage),
        open_timeout=5,
        close_timeout=2,
        user_agent_header=USER_AGENT,
        ping_interval=None,  # only the pings a test sends
    )


def connection_ids(fake_lambda: FakeLambda, api: Api, count: int) -> list[str]:
    events = fake_lambda.wait_for_events(api.arn("$connect"), count)
    return [event["requestContext"]["connectionId"] for event in events]


def test_dropped_disconnect_never_reaches_its_route(fake_lambda: FakeLambda, create_api, start_gateway):
    api = create_api(authorized=False)
    gateway = start_gateway()
    with open_client(gateway, api) as first:
        (dropped_id,) = connection_ids(fake_lambda, api, 1)
        gateway.faults.drop_disconnects(dropped_id)
        with open_client(gateway, api):
            kept_id = connection_ids(fake_lambda, api, 2)[1]
            first.close()
            assert gateway.faults.wait_for_dropped_disconnect(dropped_id)
        (disconnected,) = fake_lambda.wait_for_events(api.arn("$disconnect"), 1)
    assert disconnected["requestContext"]["connectionId"] == kept_id
    assert gateway.faults.dropped_disconnects == [dropped_id]


def test_dropping_every_disconnect_until_cleared(fake_lambda: FakeLambda, create_api, start_gateway):
    api = create_api(authorized=False)
    gateway = start_gateway()
    gateway.faults.drop_disconnects()
    with open_client(gateway, api):
        (dropped_id,) = connection_ids(fake_lambda, api, 1)
    assert gateway.faults.wait_for_dropped_disconnect(dropped_id)
    gateway.faults.clear()
    with open_client(gateway, api):
        delivered_id = connection_ids(fake_lambda, api, 2)[1]
    (disconnected,) = fake_lambda.wait_for_events(api.arn("$disconnect"), 1)
    assert disconnected["requestContext"]["connectionId"] == delivered_id
    assert gateway.faults.dropped_disconnects == [dropped_id]


def test_ignored_ping_gets_no_pong_while_messages_still_flow(
    fake_lambda: FakeLambda, create_api, start_gateway
):
    api = create_api(authorized=False, two_way=("$default",))
    fake_lambda.handlers[api.arn("$default")] = lambda event: {"statusCode": 200, "body": "echo"}
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        (connection_id,) = connection_ids(fake_lambda, api, 1)
        gateway.faults.ignore_pings(connection_id)
        pong = client.ping(b"are-you-there")
        assert gateway.faults.wait_for_ignored_pings(connection_id)
        # The gateway reads a connection's frames in order: an answer to a later message arrives after
        # any pong it would have sent for the ping.
        client.send(json.dumps({"action": "after-ping"}))
        assert client.recv(timeout=5) == "echo"
        assert not pong.is_set()
        gateway.faults.clear()
        assert client.ping(b"again").wait(timeout=5)
    assert gateway.faults.ignored_pings == [connection_id]


def test_pings_are_answered_by_default(fake_lambda: FakeLambda, create_api, start_gateway):
    api = create_api(authorized=False)
    gateway = start_gateway()
    with open_client(gateway, api) as client:
        assert client.ping(b"hello").wait(timeout=5)
    assert gateway.faults.ignored_pings == []


@pytest.mark.parametrize("closed_by", ["client", "cut"])
def test_get_connection_of_a_gone_connection_is_410(fake_lambda, create_api, start_gateway, closed_by):
    api = create_api(authorized=False)
    gateway = start_gateway()
    manager = boto3.client(
        "apigatewaymanagementapi", endpoint_url=gateway.management_url(api.api_id, api.stage), **CREDENTIALS
    )
    with open_client(gateway, api):
        (connection_id,) = connection_ids(fake_lambda, api, 1)
        assert manager.get_connection(ConnectionId=connection_id)["Identity"]["SourceIp"] == "127.0.0.1"
        if closed_by == "cut":
            gateway.cut(connection_id)
    fake_lambda.wait_for_events(api.arn("$disconnect"), 1)
    with pytest.raises(manager.exceptions.GoneException) as gone:
        manager.get_connection(ConnectionId=connection_id)
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410
    assert gone.value.response["Error"]["Code"] == "GoneException"
