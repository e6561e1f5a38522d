"""Shared helpers of the attach tests: a moto server handle and the helper stack's two tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3

from plldb import protocol

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"


@dataclass
class MotoServer:
    endpoint_url: str

    def session(self) -> boto3.Session:
        return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)

    def client(self, service: str) -> Any:
        return self.session().client(service, endpoint_url=self.endpoint_url)  # type: ignore[call-overload]

    def resource(self, service: str) -> Any:
        return self.session().resource(service, endpoint_url=self.endpoint_url)  # type: ignore[call-overload]


def create_debugger_table(server: MotoServer, name: str) -> Any:
    client = server.client("dynamodb")
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": protocol.A_REQUEST_ID, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": protocol.A_REQUEST_ID, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return server.resource("dynamodb").Table(name)


def create_sessions_table(server: MotoServer, name: str) -> Any:
    client = server.client("dynamodb")
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": protocol.A_SESSION_ID, "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": protocol.A_SESSION_ID, "AttributeType": "S"},
            {"AttributeName": protocol.A_STACK_NAME, "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": protocol.STACK_INDEX,
                "KeySchema": [{"AttributeName": protocol.A_STACK_NAME, "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return server.resource("dynamodb").Table(name)
