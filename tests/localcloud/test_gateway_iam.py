"""``AuthorizationType: AWS_IAM`` on a WebSocket API's ``$connect``: SigV4 required, the signer's identity
in the ``$connect`` event, through real WebSocket clients and moto's own IAM and STS state."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.localcloud.gateway_support import (
    ACCOUNT,
    REGION,
    USER_AGENT,
    Api,
    FakeLambda,
    invocation_uri,
)


@pytest.fixture
def iam_api(apigateway: Any) -> Api:
    """A WebSocket API whose $connect route is IAM-authorized, with $connect, $default and $disconnect."""
    api_id = apigateway.create_api(
        Name="debugger", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action"
    )["ApiId"]
    api = Api(api_id, "dev", "")
    for route_key in ("$connect", "$default", "$disconnect"):
        integration_id = apigateway.create_integration(
            ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=invocation_uri(api.arn(route_key))
        )["IntegrationId"]
        extra = {"AuthorizationType": "AWS_IAM"} if route_key == "$connect" else {}
        apigateway.create_route(
            ApiId=api_id, RouteKey=route_key, Target=f"integrations/{integration_id}", **extra
        )
    apigateway.create_stage(ApiId=api_id, StageName=api.stage)
    return api


def moto_client(apigateway: Any, service: str, **credentials: Any) -> Any:
    options = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.client(service, endpoint_url=apigateway.meta.endpoint_url, region_name=REGION, **options)


def developer_credentials(apigateway: Any, user_name: str) -> Credentials:
    """Long-term credentials of an IAM user created in moto."""
    iam = moto_client(apigateway, "iam")
    iam.create_user(UserName=user_name)
    key = iam.create_access_key(UserName=user_name)["AccessKey"]
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def assumed_role_credentials(apigateway: Any, role_name: str, session: str) -> tuple[Credentials, dict]:
    iam = moto_client(apigateway, "iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"}],
    }
    role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    assumed = moto_client(apigateway, "sts").assume_role(RoleArn=role["Arn"], RoleSessionName=session)
    keys = assumed["Credentials"]
    return Credentials(keys["AccessKeyId"], keys["SecretAccessKey"], keys["SessionToken"]), assumed


def public_url(api: Api) -> str:
    return f"https://{api.api_id}.execute-api.{REGION}.amazonaws.com/{api.stage}"


def signed_headers(api: Api, credentials: Credentials) -> dict[str, str]:
    """The headers SigV4 adds to the upgrade request, as a signing client sends them."""
    request = AWSRequest(method="GET", url=public_url(api))
    SigV4Auth(credentials, "execute-api", REGION).add_auth(request)
    return {name: value for name, value in request.headers.items() if name.lower() != "host"}


def presigned_query(api: Api, credentials: Credentials) -> str:
    request = AWSRequest(method="GET", url=public_url(api))
    SigV4QueryAuth(credentials, "execute-api", REGION, expires=300).add_auth(request)
    return urlsplit(request.url).query


def open_iam_client(gateway: Any, api: Api, query: str = "", headers: dict[str, str] | None = None) -> Any:
    url = gateway.websocket_url(api.api_id, api.stage) + (f"?{query}" if query else "")
    return connect(
        url, open_timeout=5, close_timeout=2, user_agent_header=USER_AGENT, additional_headers=headers or {}
    )


def test_unsigned_connect_is_refused_before_any_integration(fake_lambda, start_gateway, iam_api):
    gateway = start_gateway()
    with pytest.raises(InvalidStatus) as refused:
        open_iam_client(gateway, iam_api)
    response = refused.value.response
    assert response.status_code == 403
    assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert json.loads(response.body) == {"message": "Missing Authentication Token"}
    assert fake_lambda.calls == []
    assert gateway.connection_ids() == []


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (
            {
                "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20260101/us-east-1/execute-api/aws4_request"
            },
            "Authorization header requires 'Signature' parameter. "
            "Authorization header requires 'SignedHeaders' parameter. "
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        ),
        (
            {"Authorization": "Bearer token"},
            "Authorization header requires 'AWS4-HMAC-SHA256' as its algorithm.",
        ),
    ],
)
def test_incomplete_signature_is_refused(fake_lambda, start_gateway, iam_api, headers, message):
    gateway = start_gateway()
    with pytest.raises(InvalidStatus) as refused:
        open_iam_client(gateway, iam_api, headers=headers)
    response = refused.value.response
    assert response.status_code == 403
    assert response.headers["x-amzn-ErrorType"] == "IncompleteSignatureException"
    assert json.loads(response.body) == {"message": message}
    assert fake_lambda.calls == []


def test_header_signature_puts_the_iam_users_identity_in_the_connect_event_only(
    fake_lambda: FakeLambda, start_gateway, iam_api, apigateway
):
    credentials = developer_credentials(apigateway, "alice")
    user = moto_client(apigateway, "iam").get_user(UserName="alice")["User"]
    gateway = start_gateway()
    with open_iam_client(gateway, iam_api, headers=signed_headers(iam_api, credentials)) as client:
        (connected,) = fake_lambda.wait_for_events(iam_api.arn("$connect"), 1)
        client.send(json.dumps({"action": "hello"}))
        (message,) = fake_lambda.wait_for_events(iam_api.arn("$default"), 1)
    (disconnected,) = fake_lambda.wait_for_events(iam_api.arn("$disconnect"), 1)
    assert connected["requestContext"]["identity"] == {
        "accountId": ACCOUNT,
        "accessKey": credentials.access_key,
        "caller": user["UserId"],
        "user": user["UserId"],
        "userArn": f"arn:aws:iam::{ACCOUNT}:user/alice",
        "sourceIp": "127.0.0.1",
        "userAgent": USER_AGENT,
    }
    assert "authorizer" not in connected["requestContext"]
    assert connected["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
    later = {"sourceIp": "127.0.0.1", "userAgent": USER_AGENT}
    assert message["requestContext"]["identity"] == later
    assert disconnected["requestContext"]["identity"] == later


def test_presigned_url_of_an_assumed_role_gives_its_session_identity(
    fake_lambda: FakeLambda, start_gateway, iam_api, apigateway
):
    credentials, assumed = assumed_role_credentials(apigateway, "developer", "alice-laptop")
    gateway = start_gateway()
    with open_iam_client(gateway, iam_api, query=presigned_query(iam_api, credentials)):
        (connected,) = fake_lambda.wait_for_events(iam_api.arn("$connect"), 1)
    identity = connected["requestContext"]["identity"]
    role_id = assumed["AssumedRoleUser"]["AssumedRoleId"]
    assert role_id.endswith(":alice-laptop")
    assert identity == {
        "accountId": ACCOUNT,
        "accessKey": credentials.access_key,
        "caller": role_id,
        "user": role_id,
        "userArn": f"arn:aws:sts::{ACCOUNT}:assumed-role/developer/alice-laptop",
        "sourceIp": "127.0.0.1",
        "userAgent": USER_AGENT,
    }
    query = connected["queryStringParameters"]
    assert query["X-Amz-Security-Token"] == credentials.token
    assert query["X-Amz-Credential"].startswith(credentials.access_key + "/")


def test_key_moto_never_issued_is_its_default_principal(fake_lambda, start_gateway, iam_api):
    gateway = start_gateway()
    unknown = Credentials("AKIAUNKNOWNKEY000000", "secret")
    with open_iam_client(gateway, iam_api, headers=signed_headers(iam_api, unknown)):
        (connected,) = fake_lambda.wait_for_events(iam_api.arn("$connect"), 1)
    identity = connected["requestContext"]["identity"]
    assert (identity["accountId"], identity["userArn"], identity["caller"]) == (
        ACCOUNT,
        f"arn:aws:sts::{ACCOUNT}:user/moto",
        "AKIAIOSFODNN7EXAMPLE",
    )
