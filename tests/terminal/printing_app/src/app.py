"""Prints what the event asks, then answers with what it did.

{"tag": T, "lines": N} prints N lines "T line i/N" (i from 1). With "hold": PATH it first prints
"T holding" and waits until PATH exists, so a test can act while the invocation is running.
"""

import os
import time


def handler(event, context):
    tag = event.get("tag", "")
    hold = event.get("hold")
    if hold:
        print(f"{tag} holding", flush=True)
        while not os.path.exists(hold):
            time.sleep(0.01)
    lines = int(event.get("lines", 0))
    for index in range(1, lines + 1):
        print(f"{tag} line {index}/{lines}")
    return {"tag": tag, "lines": lines, "requestId": context.aws_request_id}
