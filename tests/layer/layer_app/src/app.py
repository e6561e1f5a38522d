"""Handlers of the layer tests' application: each shows one thing about how a function runs."""

import logging
import os
import sys
import threading
import time

LOGGER = logging.getLogger("orders")
CALLS = {"count": 0}  # module state: a warm environment keeps counting
_CALLS_LOCK = threading.Lock()


def echo(event, context):
    with _CALLS_LOCK:
        CALLS["count"] += 1
        calls = CALLS["count"]
    return {
        "event": event,
        "calls": calls,
        "function": context.function_name,
        "requestId": context.aws_request_id,
    }


def fail(event, context):
    raise ValueError(f"order {event.get('id')} is invalid")


def environment(event, context):
    return {"environ": dict(os.environ), "path": list(sys.path)}


def large(event, context):
    return {"blob": "r" * event["size"]}


def not_serialisable(event, context):
    return {"when": {1, 2}}


def sleep(event, context):
    time.sleep(event.get("seconds", 0))
    return {"slept": event.get("seconds", 0)}


def own_layer(event, context):
    import ownlib  # from the function's own layer: /opt/python
    import sitelib  # from the function's own layer: /opt/python/lib/pythonX.Y/site-packages
    import vendlib  # from src/vendored/, which src/vendored.pth puts on the path

    return {"ownlib": ownlib.VALUE, "sitelib": sitelib.VALUE, "vendlib": vendlib.VALUE, "event": event}


def chatty(event, context):
    print("printed for order", event.get("order"))
    LOGGER.warning("order %s looks odd", event.get("order"))
    logging.getLogger().error("the root logger speaks too")
    return {"ok": True}
