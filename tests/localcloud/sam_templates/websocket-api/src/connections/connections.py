"""$connect and $disconnect: keep the connections table current."""

import os
import time

import boto3


def handler(event, context):
    table = boto3.resource("dynamodb").Table(os.environ["TABLE_NAME"])
    connection_id = event["requestContext"]["connectionId"]
    if event["requestContext"]["eventType"] == "CONNECT":
        table.put_item(
            Item={"ConnectionId": connection_id, "RoomName": "lobby", "ExpiresAt": int(time.time()) + 3600}
        )
    else:
        table.delete_item(Key={"ConnectionId": connection_id})
    return {"statusCode": 200}
