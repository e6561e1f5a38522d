"""The floor: exactly the hops the design cannot avoid, and nothing else, as a stack of its own.

An invocation through plldb must, whatever the code does, (1) write the function's own item, (2) make
one synchronous Lambda invocation of a function that reads that item and the session and posts to the
developer's connection, (3) carry the developer's answer through the WebSocket API's ``$default`` route
into one conditional ``UpdateItem``, and (4) read the item once. The floor stack has those pieces
only: two tables of the same keys as the helper stack's, a **relay** function (``GetItem`` of the item,
``GetItem`` of the session, ``post_to_connection``), an **answer** function on ``$default`` (one
conditional ``UpdateItem``), a ``$connect`` function that records the connection, and no checks,
signatures, logging or caches beyond a module-level client.

The floor's "layer" is the benchmark's driver process (driver.py): it writes the item, invokes the
relay, and reads the item **the moment the answer is stored**, learnt from the local cloud's DynamoDB
handler itself (``StoredWatcher``), so the floor polls perfectly: no read is early, none is late. The
"developer" is responder.py in floor mode, which answers each message as soon as it arrives. Every
choice errs towards a faster floor, so plldb's overhead divided by the floor is at least 1 unless the
measurement is wrong.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3

from plldb import protocol

SESSION_ID = "00000000-0000-4000-8000-000000000000"  # the floor's one session
CALLER = "AROAFLOORBENCHMARK:floor-function"
ANSWER = '{"ok": true}'

_CLIENT_SETUP = """
import json
import os

import boto3
from botocore.config import Config

CONFIG = Config(connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
DYNAMODB = boto3.client("dynamodb", config=CONFIG)
"""

RELAY_CODE = (
    _CLIENT_SETUP
    + """
_override = os.environ.get("PLLDB_EXECUTE_API_ENDPOINT", "").rstrip("/")
_api, _stage, _region = os.environ["API_ID"], os.environ["STAGE"], os.environ["AWS_REGION"]
MANAGEMENT = boto3.client(
    "apigatewaymanagementapi",
    config=CONFIG,
    endpoint_url=(
        f"{_override}/{_api}/{_stage}" if _override
        else f"https://{_api}.execute-api.{_region}.amazonaws.com/{_stage}"
    ),
)


def handler(event, context):
    key = {"Caller": {"S": event["caller"]}, "DeliveryId": {"S": event["deliveryId"]}}
    item = DYNAMODB.get_item(TableName=os.environ["INVOCATIONS"], Key=key, ConsistentRead=True)["Item"]
    session = DYNAMODB.get_item(
        TableName=os.environ["SESSIONS"], Key={"SessionId": item["SessionId"]}, ConsistentRead=True
    )["Item"]
    MANAGEMENT.post_to_connection(
        ConnectionId=session["ConnectionId"]["S"], Data=json.dumps(event["message"]).encode("utf-8")
    )
    return {"status": "posted"}
"""
)

ANSWER_CODE = (
    _CLIENT_SETUP
    + """

def handler(event, context):
    message = json.loads(event["body"])
    try:
        update(message)
    except DYNAMODB.exceptions.ConditionalCheckFailedException:
        pass  # a repeated message (a post retried after a timeout): answered already, as $default says
    return {"statusCode": 200}


def update(message):
    DYNAMODB.update_item(
        TableName=os.environ["INVOCATIONS"],
        Key={"Caller": {"S": message["caller"]}, "DeliveryId": {"S": message["deliveryId"]}},
        UpdateExpression="SET #code = :code, #response = :response",
        ConditionExpression="attribute_exists(#caller) AND #sid = :sid AND attribute_not_exists(#code)",
        ExpressionAttributeNames={
            "#caller": "Caller", "#sid": "SessionId", "#code": "ResponseCode", "#response": "Response"
        },
        ExpressionAttributeValues={
            ":code": {"N": str(message["statusCode"])},
            ":response": {"S": message["payload"]},
            ":sid": {"S": os.environ["SESSION_ID"]},
        },
    )
"""
)

CONNECT_CODE = (
    _CLIENT_SETUP
    + """

def handler(event, context):
    DYNAMODB.put_item(
        TableName=os.environ["SESSIONS"],
        Item={
            "SessionId": {"S": event["queryStringParameters"]["sessionId"]},
            "ConnectionId": {"S": event["requestContext"]["connectionId"]},
        },
    )
    return {"statusCode": 200}
"""
)


def _function(code: str, role: str, variables: dict[str, Any]) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Runtime": "python3.12",
            "Handler": "index.handler",
            "Role": {"Fn::GetAtt": [role, "Arn"]},
            "Timeout": 30,
            "MemorySize": 256,
            "Code": {"ZipFile": code},
            "Environment": {"Variables": variables},
        },
    }


def _integration(function: str) -> dict[str, Any]:
    return {
        "Type": "AWS::ApiGatewayV2::Integration",
        "Properties": {
            "ApiId": {"Ref": "Api"},
            "IntegrationType": "AWS_PROXY",
            "IntegrationUri": {
                "Fn::Sub": "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/"
                f"${{{function}.Arn}}/invocations"
            },
        },
    }


def _route(key: str, integration: str) -> dict[str, Any]:
    return {
        "Type": "AWS::ApiGatewayV2::Route",
        "Properties": {
            "ApiId": {"Ref": "Api"},
            "RouteKey": key,
            "AuthorizationType": "NONE",
            "Target": {"Fn::Sub": f"integrations/${{{integration}}}"},
        },
    }


def _permission(function: str) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Permission",
        "Properties": {
            "Action": "lambda:InvokeFunction",
            "FunctionName": {"Fn::GetAtt": [function, "Arn"]},
            "Principal": "apigateway.amazonaws.com",
            "SourceArn": {
                "Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${Api}/*"
            },
        },
    }


def _table(keys: list[str]) -> dict[str, Any]:
    return {
        "Type": "AWS::DynamoDB::Table",
        "Properties": {
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": key, "AttributeType": "S"} for key in keys],
            "KeySchema": [
                {"AttributeName": key, "KeyType": kind}
                for key, kind in zip(keys, ("HASH", "RANGE"), strict=False)
            ],
        },
    }


def template() -> dict[str, Any]:
    """The floor stack: the unavoidable pieces and nothing else."""
    tables = {"INVOCATIONS": {"Ref": "Invocations"}, "SESSIONS": {"Ref": "Sessions"}}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "plldb benchmark: the floor of the hops an invocation through plldb cannot avoid.",
        "Resources": {
            "Invocations": _table([protocol.A_CALLER, protocol.A_DELIVERY_ID]),
            "Sessions": _table([protocol.A_SESSION_ID]),
            "Role": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "lambda.amazonaws.com"},
                                "Action": "sts:AssumeRole",
                            }
                        ],
                    }
                },
            },
            "Relay": _function(
                RELAY_CODE,
                "Role",
                {**tables, "API_ID": {"Ref": "Api"}, "STAGE": "floor"},
            ),
            "Answer": _function(ANSWER_CODE, "Role", {**tables, "SESSION_ID": SESSION_ID}),
            "Connect": _function(CONNECT_CODE, "Role", tables),
            "Api": {
                "Type": "AWS::ApiGatewayV2::Api",
                "Properties": {
                    "Name": {"Fn::Sub": "${AWS::StackName}"},
                    "ProtocolType": "WEBSOCKET",
                    "RouteSelectionExpression": "$request.body.action",
                },
            },
            "ConnectIntegration": _integration("Connect"),
            "AnswerIntegration": _integration("Answer"),
            "ConnectRoute": _route("$connect", "ConnectIntegration"),
            "DefaultRoute": _route("$default", "AnswerIntegration"),
            "Stage": {
                "Type": "AWS::ApiGatewayV2::Stage",
                "DependsOn": ["ConnectRoute", "DefaultRoute"],
                "Properties": {"ApiId": {"Ref": "Api"}, "StageName": "floor", "AutoDeploy": True},
            },
            "ConnectPermission": _permission("Connect"),
            "AnswerPermission": _permission("Answer"),
        },
        "Outputs": {
            "WebSocketUrl": {
                "Value": {"Fn::Sub": "wss://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${Stage}"}
            },
            "InvocationsTable": {"Value": {"Ref": "Invocations"}},
            "SessionsTable": {"Value": {"Ref": "Sessions"}},
            "RelayFunction": {"Value": {"Ref": "Relay"}},
        },
    }


@dataclass(frozen=True)
class FloorStack:
    websocket_url: str  # as this machine reaches it (the execute-api override applied)
    invocations_table: str
    sessions_table: str
    relay_function: str

    def driver_config(self, message: dict[str, Any]) -> dict[str, Any]:
        """What the driver needs to run floor rounds posting ``message`` (an `invoke` of the same size)."""
        return {
            "table": self.invocations_table,
            "relay": self.relay_function,
            "session_id": SESSION_ID,
            "caller": CALLER,
            "message": message,
            "answer": ANSWER,
        }


def deploy_floor(session: boto3.Session, stack_name: str) -> FloorStack:
    from plldb.bootstrap import deploy

    cloudformation = session.client("cloudformation")
    cloudformation.create_stack(StackName=stack_name, TemplateBody=json.dumps(template()))
    deploy.wait_for_stack(cloudformation, stack_name, "CREATE", lambda message: None, 0.2)
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack["Outputs"]}
    return FloorStack(
        websocket_url=protocol.execute_api_url(outputs["WebSocketUrl"]),
        invocations_table=outputs["InvocationsTable"],
        sessions_table=outputs["SessionsTable"],
        relay_function=outputs["RelayFunction"],
    )


class StoredWatcher:
    """Tells the floor's driver the instant an answer is stored in the floor table.

    Installed as a hook of the local cloud's DynamoDB handler (dynamodb_counter.DynamoTap): after a
    successful ``UpdateItem`` of ``table``, ``sink`` gets the item's key, before the answer function
    even has its HTTP response. The driver reads the item at that moment: the floor never polls.
    """

    def __init__(self, table: str) -> None:
        self.table = table
        self._sink: Callable[[str, str], None] | None = None
        self._lock = threading.Lock()

    def attach(self, sink: Callable[[str, str], None] | None) -> None:
        with self._lock:
            self._sink = sink

    def __call__(self, action: str, request: Mapping[str, Any], status: int) -> None:
        if action != "UpdateItem" or status != 200 or request.get("TableName") != self.table:
            return
        key = request["Key"]
        with self._lock:
            sink = self._sink
        if sink is not None:
            sink(key[protocol.A_CALLER]["S"], key[protocol.A_DELIVERY_ID]["S"])
