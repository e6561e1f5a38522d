"""Handlers the execution-environment tests deploy; each test picks one as its function's handler."""

import json
import os
import socket
import time

INVOCATIONS = 0
print("initialising app module")


def echo(event, context):
    return {
        "event": event,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
    }


def fail(event, context):
    raise ValueError(f"boom {event['n']}")


def count(event, context):
    global INVOCATIONS
    INVOCATIONS += 1
    return {"invocations": INVOCATIONS, "pid": os.getpid(), "setting": os.environ.get("SETTING")}


def rendezvous(event, context):
    """Arrive, then wait until `count` invocations have arrived: only concurrent ones all return."""
    with open(os.path.join(event["folder"], context.aws_request_id), "w"):
        pass
    deadline = time.monotonic() + event["within"]
    while len(os.listdir(event["folder"])) < event["count"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(event['folder']))} of {event['count']} arrived")
        time.sleep(0.01)
    return {"pid": os.getpid()}


def sleep(event, context):
    time.sleep(event["seconds"])
    return {"pid": os.getpid(), "slept": event["seconds"]}


def environment(event, context):
    return {"environ": dict(os.environ), "cwd": os.getcwd()}


def whoami(event, context):
    import boto3  # imported here so the other handlers' cold starts stay fast

    identity = boto3.client("sts").get_caller_identity()
    return {"arn": identity["Arn"], "access_key_id": os.environ["AWS_ACCESS_KEY_ID"]}


def layered(event, context):
    import from_layer_python
    import from_layer_site_packages

    return {"python": from_layer_python.VALUE, "site_packages": from_layer_site_packages.VALUE}


def big_response(event, context):
    return "x" * event["size"]


def notify(event, context):
    if "Records" in event:  # delivered by SNS: the port travels in the message
        port = json.loads(event["Records"][0]["Sns"]["Message"])["port"]
    else:
        port = event["port"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(json.dumps({"request_id": context.aws_request_id, "event": event}).encode())
    return "notified"


def crash(event, context):
    print("about to exit")
    os._exit(event["code"])


def chatty(event, context):
    print(f"line for the log tail: {event['marker']}")
    return "ok"


def client_context(event, context):
    return {"custom": context.client_context.custom, "env": context.client_context.env}


def paths(event, context):
    """The module search path the runtime built, and what a handler's own subprocess inherits."""
    import importlib.util
    import sys

    return {
        "sys_path": sys.path,
        "PYTHONPATH": os.environ.get("PYTHONPATH"),
        "finds": {name: importlib.util.find_spec(name) is not None for name in event.get("modules", [])},
        "cwd": os.getcwd(),
    }


def layered_python(event, context):
    import from_layer_python

    return {"python": from_layer_python.VALUE}


def leveled(event, context):
    """One logging record per level, and a print, for the log format and level tests."""
    import logging

    logger = logging.getLogger("app")
    logger.debug("debug record %s", event["marker"])
    logger.info("info record %s", event["marker"])
    logger.warning("warning record %s", event["marker"])
    print(f"printed line {event['marker']}")
    return "ok"
