"""Events in, results out: JSON exactly as the Python runtime reads and writes it."""

from __future__ import annotations

import decimal
import json
import math
import os
from collections.abc import Callable
from typing import Any

from plldb.lambda_python.errors import MARSHAL_ERROR, UNMARSHAL_ERROR, FaultException

# Runtimes whose awslambdaric writes non-ASCII characters as-is instead of \\u escapes.
_UNESCAPED_UNICODE_RUNTIMES = frozenset(
    {"AWS_Lambda_python3.12", "AWS_Lambda_python3.13", "AWS_Lambda_python3.14", "AWS_Lambda_python3.15"}
)


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
