"""The fallback passthrough: the function's own handler run in the cloud exactly as Lambda's Python runtime
would run it (its import path, its module kept warm, its results and errors)."""

from __future__ import annotations

import logging
import os
import site
import sys
from collections.abc import Mapping
from typing import Any

from plldb import lambda_python, protocol
from plldb.bootstrap.cloudformation.layer.answers import Answer
from plldb.bootstrap.cloudformation.layer.function_access import own_work
from plldb.bootstrap.cloudformation.layer.runtime_client import Invocation

LAYER_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
)
# Frames of these files are the runtime's, never shown in a handler's stack trace.
_OWN_FILES = (os.path.abspath(__file__), *lambda_python.RUNTIME_FILES)


def lambda_python_path(environ: Mapping[str, str]) -> list[str]:
    """The import path Lambda's Python runtime gives a handler: the function's code, then its layers.

    Layers are unpacked where this layer is (``/opt`` on Lambda); the runtime itself adds these
    entries, since Lambda does not set PYTHONPATH.
    """
    version = "python{}.{}".format(*sys.version_info[:2])
    task_root = environ.get("LAMBDA_TASK_ROOT") or "/var/task"
    packaged = os.path.basename(LAYER_ROOT) == protocol.LAYER_DIRECTORY
    opt = os.path.dirname(LAYER_ROOT) if packaged else "/opt"
    return [
        task_root,
        os.path.join(opt, "python", "lib", version, "site-packages"),
        os.path.join(opt, "python"),
    ]


class CloudHandler:
    """Runs the function's real handler here, exactly as the Python runtime would (module kept warm)."""

    def __init__(self, handler_name: str, environ: Mapping[str, str] | None = None) -> None:
        self._handler_name = handler_name
        self._environ = os.environ if environ is None else environ
        self._handler: Any = None

    def _load(self) -> Any:
        """Import the handler with Lambda's path: the code, then the layers, and the folders their .pth
        files name (the runtime processes those of the code as well as those of the layers)."""
        paths = lambda_python_path(self._environ)
        for entry in reversed(paths):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        for entry in paths:
            if os.path.isdir(entry):
                site.addsitedir(entry)
        return lambda_python.load_handler(self._handler_name)

    def run(self, invocation: Invocation) -> Answer:
        with own_work(False):  # the handler's import and run are the function's own, logs included
            return self._run(invocation)

    def _run(self, invocation: Invocation) -> Answer:
        if self._handler is None:
            try:
                self._handler = self._load()
            except Exception as exc:
                # The runtime would fail its init with this error; the next invocation tries again,
                # as Lambda would start a new environment.
                if isinstance(exc, lambda_python.FaultException):
                    error = lambda_python.make_error(exc.msg, exc.exception_type, exc.trace)
                else:
                    trace = lambda_python.user_stack_trace(exc.__traceback__, _OWN_FILES)
                    error = lambda_python.make_error(str(exc), type(exc).__name__, trace)
                logging.warning(lambda_python.UNHANDLED_EXCEPTION_WARNING)
                return Answer.failure(error)
        try:
            context = lambda_python.create_lambda_context(
                invocation.request_id,
                invocation.client_context,
                invocation.cognito_identity,
                invocation.deadline_ms,
                invocation.invoked_function_arn,
                invocation.tenant_id,
            )
            event = lambda_python.unmarshal_event(invocation.body, invocation.content_type)
            response = self._handler(event, context)
            body, content_type = lambda_python.marshal_response(response)
        except Exception as exc:
            return Answer.failure(lambda_python.error_from_exception(exc, invocation.request_id, _OWN_FILES))
        return Answer.result(body, content_type)
