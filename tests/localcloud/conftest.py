"""A moto server with plldb's extensions, for the local cloud's own tests (no Lambda runtime, no gateway)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from plldb.localcloud import moto_extensions
from plldb.localcloud.websocket_gateway import WebSocketGateway, WebSocketLimits
from tests.localcloud.gateway_support import (
    ACCOUNT,
    CREDENTIALS,
    Api,
    FakeLambda,
    function_arn,
    invocation_uri,
)

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"


@dataclass
class MotoServer:
    endpoint_url: str
    session: boto3.Session

    def client(self, service: str) -> Any:
        return self.session.client(service)  # type: ignore[call-overload]


class EndpointSession(boto3.Session):
    """A boto3 Session whose clients all talk to the given endpoint (as AWS_ENDPOINT_URL would do)."""

    def __init__(self, endpoint_url: str) -> None:
        super().__init__(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
        self._endpoint_url = endpoint_url

    def client(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("endpoint_url", self._endpoint_url)
        return super().client(*args, **kwargs)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    moto_extensions.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    try:
        yield MotoServer(endpoint_url=endpoint_url, session=EndpointSession(endpoint_url))
    finally:
        server.stop()


@pytest.fixture
def session(moto_server: MotoServer) -> boto3.Session:
    return moto_server.session


# --- the WebSocket gateway's tests -------------------------------------------------------------------
@pytest.fixture(scope="module")
def apigateway() -> Iterator[Any]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield boto3.client("apigatewayv2", endpoint_url=f"http://{host}:{port}", **CREDENTIALS)
    server.stop()


@pytest.fixture
def create_api(apigateway: Any) -> Callable[..., Api]:
    """Builds a WebSocket API in moto: one Lambda per route, an optional REQUEST authorizer on $connect."""

    def build(
        routes: tuple[str, ...] = ("$connect", "$disconnect", "$default"),
        identity_source: list[str] | None = None,
        two_way: tuple[str, ...] = (),
        stage_variables: dict[str, str] | None = None,
        authorized: bool = True,
    ) -> Api:
        api_id = apigateway.create_api(
            Name="debugger", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
        )["ApiId"]
        api = Api(api_id, "dev", function_arn(f"{api_id}-authorizer"))
        authorizer_id = None
        if authorized:
            authorizer_id = apigateway.create_authorizer(
                ApiId=api_id,
                AuthorizerType="REQUEST",
                Name="session",
                IdentitySource=identity_source or ["route.request.querystring.token"],
                AuthorizerUri=invocation_uri(api.authorizer_arn),
            )["AuthorizerId"]
        for route_key in routes:
            integration_id = apigateway.create_integration(
                ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=invocation_uri(api.arn(route_key))
            )["IntegrationId"]
            extra: dict[str, Any] = {}
            if route_key == "$connect" and authorizer_id:
                extra = {"AuthorizationType": "CUSTOM", "AuthorizerId": authorizer_id}
            if route_key in two_way:
                extra["RouteResponseSelectionExpression"] = "$default"
            route_id = apigateway.create_route(
                ApiId=api_id, RouteKey=route_key, Target=f"integrations/{integration_id}", **extra
            )["RouteId"]
            if route_key in two_way:
                apigateway.create_route_response(ApiId=api_id, RouteId=route_id, RouteResponseKey="$default")
        apigateway.create_stage(ApiId=api_id, StageName=api.stage, StageVariables=stage_variables or {})
        return api

    return build


@pytest.fixture
def fake_lambda() -> FakeLambda:
    return FakeLambda()


@pytest.fixture
def start_gateway(fake_lambda: FakeLambda) -> Iterator[Callable[..., WebSocketGateway]]:
    started: list[WebSocketGateway] = []

    def start(limits: WebSocketLimits = WebSocketLimits(), clock: Any = time.monotonic) -> WebSocketGateway:
        gateway = WebSocketGateway(fake_lambda, limits=limits, account_id=ACCOUNT, region=REGION, clock=clock)
        gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
