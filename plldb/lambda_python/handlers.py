"""How the Python runtime finds a handler: ``module.function`` imported, with its Runtime.* errors."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from plldb.lambda_python.errors import (
    BUILT_IN_MODULE_CONFLICT,
    HANDLER_NOT_FOUND,
    IMPORT_MODULE_ERROR,
    MALFORMED_HANDLER_NAME,
    USER_CODE_SYNTAX_ERROR,
    FaultException,
)


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
