"""Frontend: forwards to the backend function."""

import json
import os

import boto3


def handler(event, context):
    response = boto3.client("lambda").invoke(
        FunctionName=os.environ["BACKEND_FUNCTION"], Payload=json.dumps(event)
    )
    return json.loads(response["Payload"].read())
