"""The fault tests' handlers: each misbehaves on request, so the tests can watch plldb survive it."""

import ctypes
import os
import sys
import time

PRINTED_LINES = 10 * 1024
PRINTED_LINE = "x" * 1023  # with its newline 1 KiB: PRINTED_LINES of them make 10 MiB


def handler(event, context):
    """{"mode": ...} picks the fault; without one it echoes the event and its process id."""
    mode = event.get("mode")
    if mode == "raise":
        raise KeyError("no such order")
    if mode == "unserialisable":
        return {"tags": {"a", "b"}}
    if mode == "print":
        for _ in range(PRINTED_LINES):
            sys.stdout.write(PRINTED_LINE + "\n")
        return "printed"
    if mode == "sleep":
        time.sleep(float(event["seconds"]))
    if mode == "sys_exit":
        sys.exit(3)
    if mode == "os_exit":
        os._exit(7)
    if mode == "segfault":
        ctypes.string_at(0)
    return {"echo": event, "pid": os.getpid()}


def echo(event, context):
    """A well-behaved function."""
    return {"echo": event}
