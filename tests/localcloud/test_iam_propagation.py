"""IAM's eventual consistency on demand (``cloud.iam_propagation.deny_next``): the next calls of a principal
to an action fail with that service's AccessDenied error, through boto3 and from inside a real function."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
REGION = "us-east-1"

WRITER = """
import os
import boto3
from botocore.exceptions import ClientError

def handle(event, context):
    try:
        boto3.client("dynamodb").put_item(TableName=os.environ["TABLE"], Item={"id": {"S": event["id"]}})
    except ClientError as error:
        return {"error": error.response["Error"]}
    return {"written": event["id"]}
"""


@pytest.fixture
def propagation(local_cloud: Any) -> Iterator[Any]:
    yield local_cloud.iam_propagation
    local_cloud.iam_propagation.clear()


def client(local_cloud: Any, service: str, credentials: dict[str, str] | None = None) -> Any:
    session = (
        boto3.Session(region_name=REGION, **(credentials or {})) if credentials else local_cloud.session()
    )
    return session.client(
        service, endpoint_url=local_cloud.endpoint_url, config=Config(retries={"max_attempts": 0})
    )


@pytest.fixture
def table(local_cloud: Any) -> str:
    name = f"items-{uuid.uuid4().hex[:8]}"
    client(local_cloud, "dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def failure(call: Any) -> tuple[int, dict]:
    with pytest.raises(ClientError) as failed:
        call()
    return failed.value.response["ResponseMetadata"]["HTTPStatusCode"], failed.value.response["Error"]


def test_the_next_n_calls_of_an_access_key_to_an_action_are_denied(local_cloud, propagation, table):
    dynamodb = client(local_cloud, "dynamodb")
    access_key = local_cloud.environment()["AWS_ACCESS_KEY_ID"]
    caller = client(local_cloud, "sts").get_caller_identity()["Arn"]
    propagation.deny_next(access_key, "dynamodb:PutItem", count=2)
    message = (
        f"User: {caller} is not authorized to perform: dynamodb:PutItem on resource: "
        f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table} because no identity-based policy allows "
        "the dynamodb:PutItem action"
    )
    put = lambda: dynamodb.put_item(TableName=table, Item={"id": {"S": "a"}})  # noqa: E731
    assert (
        dynamodb.get_item(TableName=table, Key={"id": {"S": "a"}}).get("Item") is None
    )  # other actions pass
    for _ in range(2):
        assert failure(put) == (400, {"Code": "AccessDeniedException", "Message": message})
    put()
    assert dynamodb.get_item(TableName=table, Key={"id": {"S": "a"}})["Item"] == {"id": {"S": "a"}}
    assert propagation.pending() == 0
    assert [(d.caller_arn, d.action) for d in propagation.denials[-2:]] == [(caller, "dynamodb:PutItem")] * 2


def test_an_iam_users_invoke_is_denied_as_lambda_denies_it(local_cloud, propagation):
    iam = client(local_cloud, "iam")
    user = iam.create_user(UserName=f"dev-{uuid.uuid4().hex[:6]}")["User"]
    key = iam.create_access_key(UserName=user["UserName"])["AccessKey"]
    credentials = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
    propagation.deny_next(user["Arn"], "lambda:InvokeFunction")
    status, error = failure(
        lambda: client(local_cloud, "lambda", credentials).invoke(FunctionName="anything")
    )
    assert (status, error) == (
        403,
        {
            "Code": "AccessDeniedException",
            "Message": f"User: {user['Arn']} is not authorized to perform: lambda:InvokeFunction on resource: "
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:anything because no identity-based policy allows "
            "the lambda:InvokeFunction action",
        },
    )
    # The denial is used up: the next call reaches Lambda (which knows no such function).
    status, error = failure(
        lambda: client(local_cloud, "lambda", credentials).invoke(FunctionName="anything")
    )
    assert (status, error["Code"]) == (404, "ResourceNotFoundException")


def test_query_services_answer_access_denied(local_cloud, propagation):
    access_key = local_cloud.environment()["AWS_ACCESS_KEY_ID"]
    propagation.deny_next(access_key, "sts:GetCallerIdentity")
    status, error = failure(lambda: client(local_cloud, "sts").get_caller_identity())
    assert status == 403
    assert error["Code"] == "AccessDenied"
    assert error["Message"].endswith(
        "is not authorized to perform: sts:GetCallerIdentity because no identity-based policy allows the "
        "sts:GetCallerIdentity action"
    )


def test_a_role_arn_covers_its_sessions_such_as_a_functions(local_cloud, propagation, table):
    iam = client(local_cloud, "iam")
    role_name = f"writer-{uuid.uuid4().hex[:6]}"
    role = iam.create_role(RoleName=role_name, Path="/service/", AssumeRolePolicyDocument="{}")["Role"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("writer.py", WRITER)
    name = f"writer-{uuid.uuid4().hex[:6]}"
    lambda_client = client(local_cloud, "lambda")
    lambda_client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role["Arn"],
        Handler="writer.handle",
        Code={"ZipFile": archive.getvalue()},
        Environment={"Variables": {"TABLE": table}},
        Timeout=30,
    )
    propagation.deny_next(role["Arn"], "dynamodb:PutItem")

    def run(item: str) -> dict:
        response = lambda_client.invoke(FunctionName=name, Payload=json.dumps({"id": item}).encode())
        return json.loads(response["Payload"].read())

    denied = run("first")
    assert denied["error"]["Code"] == "AccessDeniedException"
    assert denied["error"]["Message"].startswith(
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/{name} is not authorized to perform: dynamodb:PutItem"
    )
    assert run("second") == {"written": "second"}


@pytest.mark.parametrize(("action", "count"), [("PutItem", 1), ("dynamodb:PutItem", 0)])
def test_deny_next_refuses_what_it_cannot_mean(propagation, action, count):
    with pytest.raises(ValueError) as refused:
        propagation.deny_next("AKIAEXAMPLE", action, count=count)
    assert (
        str(refused.value) == "deny_next needs a count of at least 1 and an action written service:Operation"
    )
    assert propagation.pending() == 0
