"""Backend API of the shop."""

import os


def handler(event, context):
    return {"greeting": os.environ["GREETING"], "input": event}
