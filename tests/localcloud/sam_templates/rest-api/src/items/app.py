"""Items API: lists, creates and reads items in the table named by TABLE_NAME."""

import json
import os

import boto3


def handler(event, context):
    """Route by HTTP method and path parameters (API Gateway proxy integration)."""
    table = boto3.resource("dynamodb").Table(os.environ["TABLE_NAME"])
    if event["httpMethod"] == "POST":
        item = json.loads(event["body"])
        table.put_item(Item=item)
        return {"statusCode": 201, "body": json.dumps(item)}
    item_id = (event.get("pathParameters") or {}).get("itemId")
    if item_id:
        found = table.get_item(Key={"itemId": item_id}).get("Item")
        return {"statusCode": 200 if found else 404, "body": json.dumps(found)}
    return {"statusCode": 200, "body": json.dumps(table.scan()["Items"])}
