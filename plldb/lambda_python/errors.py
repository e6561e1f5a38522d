"""How the Python runtime reports a failure: its Runtime.* error types and the error document.

The document (``{errorMessage, errorType, requestId, stackTrace}``) is what an invoker receives as the
payload of a failed invocation; its field order and stack trace follow awslambdaric.
"""

from __future__ import annotations

import traceback
from typing import Any

# Error types awslambdaric reports for problems outside the handler's own code.
MARSHAL_ERROR = "Runtime.MarshalError"
UNMARSHAL_ERROR = "Runtime.UnmarshalError"
USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
LAMBDA_CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"


UNHANDLED_EXCEPTION_WARNING = (
    "LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function code. "
    "However, in rare cases, a Lambda runtime update can cause unexpected function behavior. "
    "For functions using managed runtimes, runtime updates can be triggered by a function change, "
    "or can be applied automatically. To determine if the runtime has been updated, check the runtime "
    "version in the INIT_START log entry. If this error correlates with a change in the runtime version, "
    "you may be able to mitigate this error by temporarily rolling back to the previous runtime version. "
    "For more information, see https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html\r"
)


class FaultException(Exception):
    """A failure outside the handler's code, reported with one of the Runtime.* error types."""

    def __init__(self, exception_type: str, msg: str, trace: list[str] | None = None) -> None:
        super().__init__(msg)
        self.exception_type = exception_type
        self.msg = msg
        self.trace = trace


def make_error(
    error_message: Any, error_type: Any, stack_trace: Any, request_id: str | None = None
) -> dict[str, Any]:
    """The error document in awslambdaric's field order (what the invoker receives as the payload)."""
    return {
        "errorMessage": error_message if error_message else "",
        "errorType": error_type if error_type else "",
        "requestId": request_id if request_id is not None else "",
        "stackTrace": stack_trace if stack_trace else [],
    }


def _is_runtime_frame(filename: str, own_files: tuple[str, ...]) -> bool:
    return "/bootstrap.py" in filename or filename in own_files


def user_stack_trace(tb: Any, own_files: tuple[str, ...] = ()) -> list[str]:
    """The formatted frames from the first user frame on, exactly as awslambdaric formats them.

    awslambdaric drops its own leading frames (files named bootstrap.py); the frames of the module
    that called the handler (``own_files``) are dropped the same way. Frames are formatted from plain
    tuples, so no column carets appear, as in awslambdaric.
    """
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
    for index, frame in enumerate(frames):
        if not _is_runtime_frame(frame[0], own_files):
            frames = frames[index:]
            break
    else:
        frames = [frame for frame in frames if frame[0] not in own_files]
    return traceback.format_list(frames)  # type: ignore[arg-type]


def error_from_exception(
    exc: BaseException, request_id: str | None, own_files: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The error document awslambdaric reports for an exception raised by a handler."""
    if isinstance(exc, FaultException):
        return make_error(exc.msg, exc.exception_type, exc.trace, request_id)
    return make_error(
        str(exc), type(exc).__name__, user_stack_trace(exc.__traceback__, own_files), request_id
    )
