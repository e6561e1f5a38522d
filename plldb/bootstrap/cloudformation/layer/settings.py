"""The instrumentation variables the developer's plldb put on the function, checked once at start, and
the function's own environment without them (for its handler, and for the developer's machine)."""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping

from plldb import protocol
from plldb.bootstrap.cloudformation.layer import routing

_FUNCTION_ARN = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


class Settings:
    """What the developer's plldb put in the function's environment, checked once at start."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.session_id = environ.get(protocol.ENV_SESSION_ID, "")
        # Sessions with options (observe, match, sample) instead of one session: see routing.py.
        self.sessions = environ.get(protocol.ENV_SESSIONS, "")
        self.routes: list[routing.Route] = []
        self.dispatcher_arn = environ.get(protocol.ENV_DISPATCHER, "")
        self.invocations_table = environ.get(protocol.ENV_INVOCATIONS_TABLE, "")
        self.payload_bucket = environ.get(protocol.ENV_PAYLOAD_BUCKET, "")
        fallback = environ.get(protocol.ENV_FALLBACK, protocol.FALLBACK_ERROR)
        self.fallback = fallback if fallback in protocol.FALLBACK_MODES else protocol.FALLBACK_ERROR
        self.region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or ""
        self.function_name = environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.handler = environ.get("_HANDLER", "")
        self.problems = self._check(environ)

    def _check(self, environ: Mapping[str, str]) -> list[str]:
        problems = []
        if self.sessions:
            if self.session_id:
                problems.append(f"both {protocol.ENV_SESSION_ID} and {protocol.ENV_SESSIONS} are set")
            self.routes, invalid = routing.routes_from_environment(self.sessions)
            problems += invalid
        required = (
            *(() if self.sessions else (protocol.ENV_SESSION_ID,)),
            protocol.ENV_DISPATCHER,
            protocol.ENV_INVOCATIONS_TABLE,
            protocol.ENV_PAYLOAD_BUCKET,
        )
        missing = [name for name in required if not environ.get(name, "").strip()]
        if missing:
            problems.append("{} not set".format(", ".join(missing)))
        # A blank value is reported once, as not set, not also as malformed.
        if self.session_id.strip() and not protocol.SESSION_ID_PATTERN.match(self.session_id):
            problems.append(f"{protocol.ENV_SESSION_ID} is not a session id")
        if self.dispatcher_arn.strip() and not _FUNCTION_ARN.match(self.dispatcher_arn):
            problems.append(f"{protocol.ENV_DISPATCHER} is not a Lambda function ARN")
        for name, value in (
            (protocol.ENV_INVOCATIONS_TABLE, self.invocations_table),
            (protocol.ENV_PAYLOAD_BUCKET, self.payload_bucket),
        ):
            if value.strip() and not _NAME.match(value):
                problems.append(f"{name} is not a table or bucket name")
        if not self.region:
            problems.append("AWS_REGION is not set")
        return problems


def restore_function_environment(environ: MutableMapping[str, str]) -> None:
    """Remove plldb's variables, so code sees the function's own environment.

    Applies to the handler run in the cloud (fallback passthrough) and to the environment sent to the
    local debugger; the function's own exec wrapper, if plldb chained one, is put back in place.
    """
    original_wrapper = environ.get(protocol.ENV_ORIGINAL_EXEC_WRAPPER)
    for name in protocol.INSTRUMENTATION_VARIABLES:
        environ.pop(name, None)
    if original_wrapper:
        environ[protocol.ENV_EXEC_WRAPPER] = original_wrapper
