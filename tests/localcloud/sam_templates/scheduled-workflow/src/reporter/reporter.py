"""Reporter: publishes a summary to the notifications topic."""

import json
import os

import boto3


def handle(event, context):
    boto3.client("sns").publish(TopicArn=os.environ["TOPIC_ARN"], Message=json.dumps(event))
    return {"reported": True}
