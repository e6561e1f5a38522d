"""Greeter: HTTP API payload format 2.0 handler."""

import json

from greeting import compose


def handler(event, context):
    if event.get("requestContext", {}).get("http", {}).get("method") == "POST":
        return {"statusCode": 200, "body": event.get("body") or ""}
    name = (event.get("pathParameters") or {}).get("name", "world")
    return {"statusCode": 200, "body": json.dumps({"message": compose(name)})}
