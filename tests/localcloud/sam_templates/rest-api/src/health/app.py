"""Health check: reports the stage it runs in."""

import json
import os


def handler(event, context):
    return {"statusCode": 200, "body": json.dumps({"ok": True, "stage": os.environ["STAGE"]})}
