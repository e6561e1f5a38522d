"""HelloFunction: greets the caller. The event can ask it to fail or to sleep, for tests and the demo."""

import os
import time

import shared_util


def lambda_handler(event, context):
    """Return a greeting with the event echoed back.

    {"fail": true} raises ValueError("asked to fail"); {"sleep": seconds} sleeps first.
    """
    if event.get("fail"):
        raise ValueError("asked to fail")
    if "sleep" in event:
        time.sleep(float(event["sleep"]))
    name = event.get("name", "world")
    return {
        "function": "hello",
        "greeting": os.environ["GREETING"],
        "message": shared_util.format_message(
            os.environ["GREETING"], name, os.environ.get("HELLO_SUFFIX", "")
        ),
        "input": event,
    }
