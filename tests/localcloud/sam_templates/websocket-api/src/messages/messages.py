"""$default: echo every message back to its sender."""

import os

import boto3


def handler(event, context):
    client = boto3.client("apigatewaymanagementapi", endpoint_url=os.environ["MANAGEMENT_URL"])
    client.post_to_connection(
        ConnectionId=event["requestContext"]["connectionId"], Data=event.get("body") or ""
    )
    return {"statusCode": 200}
