"""A hint after Lambda's own error when a module the handler imports is not installed where plldb looks.

Lambda's message says which module is missing; only plldb knows which environment it looked in
(``runtime_plan``), so it adds one line saying where and how to install it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from plldb.local.template import LocalFunction
from plldb.local.worker.runtime_plan import FunctionRuntime

IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
REQUIREMENTS_FILE = "requirements.txt"


def missing_module_hint(
    function: LocalFunction, runtime: FunctionRuntime, error: Mapping[str, Any]
) -> str | None:
    """One line after Lambda's import error for a module that is not installed: where and how to install it."""
    if error.get("errorType") not in (IMPORT_MODULE_ERROR, "ModuleNotFoundError"):
        return None
    match = re.search(r"No module named '([^']+)'", str(error.get("errorMessage", "")))
    if match is None:
        return None
    module = match.group(1).split(".")[0]
    if module == function.handler.rpartition(".")[0].split(".")[0]:
        return None  # the handler's own module is missing: Lambda's message says it all
    requirements = next(
        (
            folder / REQUIREMENTS_FILE
            for folder in (function.code_dir, *function.layer_dirs)
            if (folder / REQUIREMENTS_FILE).is_file()
        ),
        None,
    )
    found = (
        f"{requirements} lists the function's dependencies"
        if requirements
        else (f"there is no {REQUIREMENTS_FILE} next to its code in {function.code_dir}")
    )
    layers = (
        f" (its layers {', '.join(function.remote_layers)} are not local: install what they provide too)"
        if function.remote_layers
        else ""
    )
    environment = runtime.environment
    if environment is not None:
        return (
            f"{function.logical_id}: '{module}' is not installed in {environment.prefix} ({environment.origin}), "
            f"the environment plldb uses for it; {found}{layers}. Install "
            f"{'them' if requirements else 'the package that provides it'} with: "
            f"{environment.install_command(requirements)}"
        )
    venv = (function.template_dir or function.code_dir) / ".venv"
    what = f"-r {requirements}" if requirements else "PACKAGE"
    return (
        f"{function.logical_id}: '{module}' is not installed: plldb found no environment for the project "
        f"(no active virtualenv, no .venv beside the template or at the project root, no uv or Poetry "
        f"environment); {found}{layers}. Create one with: python{runtime.version} -m venv {venv} && "
        f"{venv / 'bin' / 'python'} -m pip install {what}"
    )
