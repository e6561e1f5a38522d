"""What the AWS Python runtime (awslambdaric) does around a handler, reproduced with the standard library.

The layer replaces the runtime, so everything a function or its invoker can observe must stay as the
runtime makes it: the context object, how results are turned into JSON, how exceptions become the
``{errorMessage, errorType, requestId, stackTrace}`` document, and the log lines. awslambdaric itself
is not importable here (only the standard library and boto3 are), so this module follows its
behaviour; tests compare the two side by side.
"""

from __future__ import annotations

import decimal
import importlib
import json
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
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

ERROR_LOG_LINE_TERMINATE = "\r"  # keeps a multi-line error in one CloudWatch event
ERROR_LOG_IDENT = "\u00a0"  # leading spaces of traceback lines become no-break spaces
_LOG_FORMAT_TEXT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
_LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
_JSON_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Runtimes whose awslambdaric writes non-ASCII characters as-is instead of \\u escapes.
_UNESCAPED_UNICODE_RUNTIMES = frozenset(
    {"AWS_Lambda_python3.12", "AWS_Lambda_python3.13", "AWS_Lambda_python3.14", "AWS_Lambda_python3.15"}
)
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


# --- Error documents --------------------------------------------------------------------------------
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


# --- Handler loading --------------------------------------------------------------------------------
def load_handler(handler: str) -> Callable[..., Any]:
    """Import ``module.function`` as awslambdaric does, with its Runtime.* errors and messages."""
    try:
        module_name, function_name = handler.rsplit(".", 1)
    except ValueError as exc:
        raise FaultException(MALFORMED_HANDLER_NAME, f"Bad handler '{handler}': {exc!s}")
    try:
        if module_name.split(".")[0] in sys.builtin_module_names:
            raise FaultException(
                BUILT_IN_MODULE_CONFLICT,
                f"Cannot use built-in module {module_name} as a handler module",
            )
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise FaultException(IMPORT_MODULE_ERROR, f"Unable to import module '{module_name}': {exc!s}")
    except SyntaxError as exc:
        trace = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
        raise FaultException(
            USER_CODE_SYNTAX_ERROR, f"Syntax error in module '{module_name}': {exc!s}", trace
        )
    try:
        return getattr(module, function_name)  # type: ignore[no-any-return]
    except AttributeError:
        raise FaultException(
            HANDLER_NOT_FOUND, f"Handler '{function_name}' missing on module '{module_name}'"
        )


# --- Context ----------------------------------------------------------------------------------------
class CognitoIdentity:
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]
    cognito_identity_id: str | None
    cognito_identity_pool_id: str | None

    def __repr__(self) -> str:
        return f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id},cognito_identity_pool_id={self.cognito_identity_pool_id}])"


class Client:
    __slots__ = ["app_package_name", "app_title", "app_version_code", "app_version_name", "installation_id"]
    app_package_name: Any
    app_title: Any
    app_version_code: Any
    app_version_name: Any
    installation_id: Any

    def __repr__(self) -> str:
        return (
            f"Client([installation_id={self.installation_id},app_title={self.app_title},app_version_name={self.app_version_name},app_version_code={self.app_version_code},"
            f"app_package_name={self.app_package_name}])"
        )


class ClientContext:
    __slots__ = ["client", "custom", "env"]
    client: Any
    custom: Any
    env: Any

    def __repr__(self) -> str:
        return f"ClientContext([custom={self.custom},env={self.env},client={self.client}])"


def _object_from_dict(cls: Any, values: dict[str, Any] | None) -> Any:
    if values is None:
        return None
    instance = cls()
    for field in cls.__slots__:
        setattr(instance, field, values.get(field, None))
    return instance


W3C_ALLOWED_FIELDS = ("traceparent", "tracestate", "baggage")


class LambdaContext:
    """The ``context`` argument, with the attributes and methods of awslambdaric's LambdaContext."""

    def __init__(  # noqa: PLR0917 - awslambdaric's signature
        self,
        invoke_id: str,
        client_context: dict[str, Any] | None,
        cognito_identity: dict[str, Any] | None,
        epoch_deadline_time_in_ms: int,
        invoked_function_arn: str | None = None,
        tenant_id: str | None = None,
    ) -> None:
        self.aws_request_id = invoke_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id
        self._w3c_fields = self._extract_w3c(client_context)
        self.client_context = _object_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _object_from_dict(Client, self.client_context.client)
        self.identity = _object_from_dict(CognitoIdentity, {})
        if cognito_identity is not None:
            self.identity.cognito_identity_id = cognito_identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = cognito_identity.get("cognitoIdentityPoolId")
        self._epoch_deadline_time_in_ms = epoch_deadline_time_in_ms

    def get_remaining_time_in_millis(self) -> int:
        delta_ms = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return delta_ms if delta_ms > 0 else 0

    def w3c(self) -> dict[str, str]:
        return dict(self._w3c_fields)

    @staticmethod
    def _extract_w3c(client_context: Any) -> dict[str, str]:
        if not isinstance(client_context, dict) or "w3c" not in client_context:
            return {}
        raw = client_context.pop("w3c")
        if not isinstance(raw, dict):
            return {}
        return {key: raw[key] for key in W3C_ALLOWED_FIELDS if isinstance(raw.get(key), str)}

    def log(self, msg: Any) -> None:
        sys.stdout.write(str(msg))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},log_group_name={self.log_group_name},log_stream_name={self.log_stream_name},function_name={self.function_name},"
            f"memory_limit_in_mb={self.memory_limit_in_mb},function_version={self.function_version},invoked_function_arn={self.invoked_function_arn},client_context={self.client_context},"
            f"identity={self.identity},tenant_id={self.tenant_id}])"
        )


def _parse_json_header(header: str, name: str) -> Any:
    try:
        return json.loads(header)
    except Exception as exc:
        raise FaultException(LAMBDA_CONTEXT_UNMARSHAL_ERROR, f"Unable to parse {name} JSON: {exc}")


def create_lambda_context(  # noqa: PLR0917 - one argument per Runtime API header
    request_id: str,
    client_context_json: str | None,
    cognito_identity_json: str | None,
    deadline_ms: int,
    invoked_function_arn: str | None,
    tenant_id: str | None = None,
) -> LambdaContext:
    """The context awslambdaric builds from the Runtime API's invocation headers."""
    client_context = (
        _parse_json_header(client_context_json, "Client Context") if client_context_json else None
    )
    cognito_identity = (
        _parse_json_header(cognito_identity_json, "Cognito Identity") if cognito_identity_json else None
    )
    return LambdaContext(
        request_id, client_context, cognito_identity, deadline_ms, invoked_function_arn, tenant_id
    )


# --- Events and results -----------------------------------------------------------------------------
def unmarshal_event(body: bytes, content_type: str | None = "application/json") -> Any:
    """The handler's ``event``: parsed JSON, or the raw body for other content types."""
    if content_type != "application/json":
        return body
    try:
        return json.loads(body)
    except Exception as exc:
        raise FaultException(UNMARSHAL_ERROR, f"Unable to unmarshal input: {exc}")


def marshal_response(response: Any) -> tuple[bytes, str]:
    """The result body and content type, as awslambdaric serialises a handler's return value."""
    if isinstance(response, bytes):
        return response, "application/unknown"
    try:
        text = to_json(response)
    except Exception as exc:
        raise FaultException(MARSHAL_ERROR, f"Unable to marshal response: {exc}")
    return text.encode("utf-8"), "application/json"


def to_json(value: Any, ensure_ascii: bool | None = None) -> str:
    """JSON text identical to awslambdaric's encoder (simplejson with its settings).

    The differences from the standard json module that matter: objects with ``_asdict()`` (named
    tuples) become objects, bytes become strings, Decimals keep their exact digits, NaN and the
    infinities are allowed, and non-ASCII characters are escaped except on Python 3.12+ runtimes.
    """
    if ensure_ascii is None:
        ensure_ascii = os.environ.get("AWS_EXECUTION_ENV") not in _UNESCAPED_UNICODE_RUNTIMES
    encoder = _AwsLambdaJsonEncoder(ensure_ascii)
    return encoder.encode(value)


class _RawJson(str):
    """Already-encoded JSON (a Decimal's digits), written out as-is."""


class _AwsLambdaJsonEncoder:
    def __init__(self, ensure_ascii: bool) -> None:
        self._quote: Callable[[str], str] = (
            json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring  # type: ignore[attr-defined]
        )
        self._markers: dict[int, Any] = {}

    def encode(self, value: Any) -> str:
        if isinstance(value, str):
            return self._quote(value)
        parts: list[str] = []
        self._value(value, parts)
        return "".join(parts)

    def _string(self, value: Any) -> str:
        if isinstance(value, bytes):
            value = str(value, "utf-8")
        elif type(value) is not str:
            value = str.__str__(value)
        return self._quote(value)

    @staticmethod
    def _float(value: float) -> str:
        if math.isnan(value):
            return "NaN"
        if value == math.inf:
            return "Infinity"
        if value == -math.inf:
            return "-Infinity"
        return repr(float(value))

    @staticmethod
    def _as_dict(value: Any) -> tuple[Any] | None:
        method = getattr(value, "_asdict", None)
        if callable(method):
            try:
                return (method(),)
            except TypeError:
                pass
        return None

    def _enter(self, value: Any) -> int:
        marker = id(value)
        if marker in self._markers:
            raise ValueError("Circular reference detected")
        self._markers[marker] = value
        return marker

    def _scalar(self, value: Any) -> str | None:
        if type(value) is _RawJson:
            return str.__str__(value)
        if isinstance(value, (str, bytes)):
            return self._string(value)
        if value is None:
            return "null"
        if value is True:
            return "true"
        if value is False:
            return "false"
        if isinstance(value, int):
            return str(int(value))
        if isinstance(value, float):
            return self._float(value)
        return None

    def _value(self, value: Any, parts: list[str]) -> None:
        """Scalars, then ``_asdict()`` objects, lists and tuples, dicts, then the fallback: simplejson's order."""
        scalar = self._scalar(value)
        if scalar is not None:
            parts.append(scalar)
            return
        as_dict = self._as_dict(value)
        if as_dict is not None:
            self._as_dict_value(value, as_dict[0], parts)
        elif isinstance(value, (list, tuple)):
            self._list(value, parts)
        elif isinstance(value, dict):
            self._dict(value, parts)
        else:
            marker = self._enter(value)
            self._value(self._default(value), parts)
            del self._markers[marker]

    def _as_dict_value(self, owner: Any, mapping: Any, parts: list[str]) -> None:
        if not isinstance(mapping, dict):
            raise TypeError(f"_asdict() must return a dict, not {type(mapping).__name__}")
        marker = self._enter(owner)
        self._dict(mapping, parts)
        del self._markers[marker]

    def _list(self, values: Any, parts: list[str]) -> None:
        if not values:
            parts.append("[]")
            return
        marker = self._enter(values)
        parts.append("[")
        for index, item in enumerate(values):
            if index:
                parts.append(", ")
            self._value(item, parts)
        parts.append("]")
        del self._markers[marker]

    def _key(self, key: Any) -> str:
        if isinstance(key, str):
            return key
        if isinstance(key, bytes):
            return str(key, "utf-8")
        if isinstance(key, float):
            return self._float(key)
        if key is True:
            return "true"
        if key is False:
            return "false"
        if key is None:
            return "null"
        if isinstance(key, int):
            return str(int(key))
        raise TypeError(f"keys must be str, int, float, bool or None, not {key.__class__.__name__}")

    def _dict(self, mapping: dict[Any, Any], parts: list[str]) -> None:
        if not mapping:
            parts.append("{}")
            return
        marker = self._enter(mapping)
        parts.append("{")
        first = True
        for key, item in mapping.items():
            text_key = self._key(key)
            if not first:
                parts.append(", ")
            first = False
            parts.append(self._string(text_key))
            parts.append(": ")
            self._value(item, parts)
        parts.append("}")
        del self._markers[marker]

    @staticmethod
    def _default(value: Any) -> Any:
        """awslambdaric's fallback: Decimals keep their digits; anything else is not serialisable."""
        if isinstance(value, decimal.Decimal):
            if value.is_nan():
                return math.nan
            return _RawJson(str(value))
        raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


# --- Logs -------------------------------------------------------------------------------------------
class Unbuffered:
    """A stream that flushes every write, so log lines reach CloudWatch in order, as in awslambdaric."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.stream, attr)

    def write(self, msg: str) -> Any:
        result = self.stream.write(msg)
        self.stream.flush()
        return result

    def writelines(self, msgs: Any) -> None:
        self.stream.writelines(msgs)
        self.stream.flush()


class _RequestIdFilter(logging.Filter):
    def __init__(self, current_request: Callable[[], tuple[str, str | None]]) -> None:
        super().__init__()
        self._current_request = current_request

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id, record.tenant_id = self._current_request()
        return True


class _StdoutHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record))
        except Exception:
            self.handleError(record)


# LogRecord attributes awslambdaric's JSON lines leave out; every other attribute (a logging call's
# ``extra``, for one) becomes a field of its own.
_RESERVED_FIELDS = frozenset(
    {
        "name",
        "msg",
        "args",
        "levelname",
        "levelno",
        "pathname",
        "filename",
        "module",
        "exc_info",
        "exc_text",
        "stack_info",
        "lineno",
        "funcName",
        "created",
        "msecs",
        "relativeCreated",
        "thread",
        "threadName",
        "processName",
        "process",
        "aws_request_id",
        "tenant_id",
        "_frame_type",
    }
)


class _JsonFormatter(logging.Formatter):
    """awslambdaric's JSON log lines (AWS_LAMBDA_LOG_FORMAT=JSON)."""

    def __init__(self) -> None:
        super().__init__(datefmt=_JSON_DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.levelno = min(50, max(0, record.levelno)) // 10 * 10
        record.levelname = logging.getLevelName(record.levelno)
        exc_info = record.exc_info
        result = {
            "timestamp": self.formatTime(record, self.datefmt),
            "level": record.levelname,
            "message": record.msg
            if isinstance(record.msg, dict) and not record.args
            else record.getMessage(),
            "logger": record.name,
            "stackTrace": traceback.format_tb(exc_info[2]) if exc_info else None,
            "errorType": exc_info[0].__name__ if exc_info and exc_info[0] else None,
            "errorMessage": str(exc_info[1]) if exc_info else None,
            "requestId": getattr(record, "aws_request_id", None),
            "location": f"{record.pathname}:{record.funcName}:{record.lineno}" if exc_info else None,
        }
        if getattr(record, "tenant_id", None) is not None:
            result["tenantId"] = record.tenant_id  # type: ignore[attr-defined]
        result.update(
            (k, v) for k, v in record.__dict__.items() if k not in _RESERVED_FIELDS and k not in result
        )
        return (
            json.dumps({k: v for k, v in result.items() if v is not None}, ensure_ascii=False, default=str)
            + "\n"
        )


def json_log_format() -> bool:
    return (os.environ.get("AWS_LAMBDA_LOG_FORMAT") or "").upper() == "JSON"


def setup_logging(current_request: Callable[[], tuple[str, str | None]]) -> None:
    """Route ``logging`` to stdout in the Lambda form, as awslambdaric does for handlers."""
    sys.stdout = Unbuffered(sys.stdout)  # type: ignore[assignment]
    sys.stderr = Unbuffered(sys.stderr)  # type: ignore[assignment]
    logging.Formatter.converter = time.gmtime
    handler = _StdoutHandler()
    if json_log_format():
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_LOG_FORMAT_TEXT, _LOG_DATE_FORMAT))
    handler.addFilter(_RequestIdFilter(current_request))
    level = {None: "", "TRACE": "DEBUG"}.get(
        os.environ.get("AWS_LAMBDA_LOG_LEVEL"), os.environ.get("AWS_LAMBDA_LOG_LEVEL") or ""
    ).upper()
    root = logging.getLogger()
    if level in logging._nameToLevel:
        root.setLevel(level)
    root.addHandler(handler)


def _replace_line_indentation(line: str) -> str:
    stripped = line.lstrip(" ")
    return ERROR_LOG_IDENT * (len(line) - len(stripped)) + stripped


def log_error(error: dict[str, Any]) -> None:
    """Write an invocation error to the log the way awslambdaric does (one CloudWatch event)."""
    if json_log_format():
        entry = {
            "timestamp": time.strftime(_JSON_DATE_FORMAT, time.gmtime(time.time())),
            "level": "ERROR",
        }
        entry.update(error)
        sys.stdout.write(to_json(entry) + "\n")
        return
    description = "[ERROR]"
    error_type = error.get("errorType")
    if error_type:
        description += " " + error_type
    message = error.get("errorMessage")
    if message:
        if error_type:
            description += ":"
        description += " " + message
    lines = [description]
    stack_trace = error.get("stackTrace")
    if stack_trace is not None:
        lines.append("Traceback (most recent call last):")
        for element in stack_trace:
            if element == "":
                lines.append("")
            else:
                lines.extend(_replace_line_indentation(line) for line in element.splitlines())
    sys.stdout.write(ERROR_LOG_LINE_TERMINATE.join(lines) + "\n")
