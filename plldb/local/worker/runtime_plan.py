"""The function's Python: which interpreter each function's workers run on, and with which packages.

The interpreter matches the function's ``Runtime`` when this machine has one, so behaviour that
differs between Python versions shows here as in Lambda; the packages come from the project's
environment (``python_environments``). The commands plan every function once at start and print
the plan; the pool plans a function it was not given at its first invocation.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from plldb.local.template import LocalFunction
from plldb.local.worker.python_environments import (
    MIN_WORKER_PYTHON,
    PythonEnvironment,
    find_project_environment,
    probe_interpreter,
    version_tuple,
)


def version_tag(version: tuple[int, ...] | str) -> str:
    """(3, 12) or "3.12" -> "python3.12".

    Public: the handler's AWS_EXECUTION_ENV (``variables``) and the pool name runtimes so.
    """
    if isinstance(version, str):
        return f"python{version}"
    return f"python{version[0]}.{version[1]}"


def runtime_version(runtime: str | None) -> str | None:
    """ "python3.13" -> "3.13"; None for a runtime that is not a pythonX.Y name."""
    match = re.fullmatch(r"python(\d+\.\d+)", runtime or "")
    return match.group(1) if match else None


def interpreter_candidates(version: str, environ: Mapping[str, str]) -> Iterator[Path]:
    """Interpreters that may be Python ``version``: on PATH, pyenv's versions, uv-managed ones."""
    on_path = shutil.which(f"python{version}", path=environ.get("PATH"))
    if on_path:
        yield Path(on_path)
    home = Path(environ.get("HOME") or Path.home())
    pyenv_root = Path(environ.get("PYENV_ROOT") or home / ".pyenv")
    pyenv = [
        Path(p)
        for p in glob.glob(str(pyenv_root / "versions" / f"{version}*" / "bin" / f"python{version}"))
        if re.fullmatch(rf"{re.escape(version)}(\.\d+)?", Path(p).parent.parent.name)
    ]
    yield from sorted(pyenv, key=lambda p: version_tuple(p.parent.parent.name), reverse=True)
    uv_dir = environ.get("UV_PYTHON_INSTALL_DIR")
    if not uv_dir:
        uv_dir = str(Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share") / "uv" / "python")
    uv = [
        Path(p)
        for p in glob.glob(str(Path(uv_dir) / f"cpython-{version}.*" / "bin" / f"python{version}"))
        if re.fullmatch(rf"cpython-{re.escape(version)}\.\d+-[^+]*", Path(p).parent.parent.name)
    ]
    yield from sorted(uv, key=lambda p: version_tuple(p.parent.parent.name.split("-")[1]), reverse=True)


def find_interpreter(version: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """An interpreter of Python ``version`` ("3.12") on this machine, or None."""
    environ = os.environ if environ is None else environ
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return Path(sys.executable)
    for candidate in interpreter_candidates(version, environ):
        info = probe_interpreter(candidate, environ)
        if info is not None and info.version == version:
            return info.executable
    return None


@dataclass(frozen=True)
class FunctionRuntime:
    """What one function's workers run on: the interpreter, and where its packages come from."""

    logical_id: str
    runtime: str | None  # the function's Runtime ("python3.13")
    interpreter: Path
    version: str  # the interpreter's version ("3.12")
    environment: PythonEnvironment | None
    site_dirs: tuple[Path, ...]
    matched: bool  # the interpreter is the Runtime's version (or the function names none)
    notes: tuple[str, ...] = ()
    function: LocalFunction | None = field(default=None, compare=False, repr=False)

    @property
    def layer_version_tag(self) -> str:
        """The pythonX.Y of the layers' python/lib/pythonX.Y/site-packages, as Lambda puts it on sys.path."""
        wanted = runtime_version(self.runtime)
        return version_tag(wanted or self.version)

    def describe(self) -> str:
        """One line: "Fn: python3.13 on /usr/bin/python3.13, packages from /app/.venv (the .venv ...)"."""
        runtime = self.runtime or "no Runtime"
        packages = (
            f"packages from {self.environment.prefix} ({self.environment.origin})"
            if self.environment is not None
            else "no project environment"
        )
        return f"{self.logical_id}: {runtime} on Python {self.version} ({self.interpreter}), {packages}"


def plan_function(
    function: LocalFunction,
    *,
    python: Path | None = None,
    environ: Mapping[str, str] | None = None,
    site_dirs: Iterable[Path] | None = None,
) -> FunctionRuntime:
    """Choose the interpreter and packages of one function (see ``plan_runtimes``).

    ``site_dirs`` replaces the project environment (its folders are used as they are).
    """
    environ = os.environ if environ is None else environ
    wanted = runtime_version(function.runtime)
    environment = None
    if site_dirs is None:
        environment = find_project_environment(
            function.template_dir, python=python, environ=environ, version=wanted
        )
        dirs = environment.site_dirs if environment is not None else ()
    else:
        dirs = tuple(Path(p) for p in site_dirs)
    own = (Path(sys.executable), f"{sys.version_info[0]}.{sys.version_info[1]}")
    usable_environment = None
    if environment is not None and environment.interpreter is not None:
        info = probe_interpreter(environment.interpreter, environ)
        if info is not None and version_tuple(info.version) >= MIN_WORKER_PYTHON:
            usable_environment = (environment.interpreter, info.version)
    if python is not None and usable_environment is not None:
        interpreter, version = usable_environment  # the developer's explicit choice runs every function
    elif wanted is None:
        interpreter, version = usable_environment or own
    elif usable_environment is not None and usable_environment[1] == wanted:
        interpreter, version = usable_environment
    else:
        found = find_interpreter(wanted, environ) if version_tuple(wanted) >= MIN_WORKER_PYTHON else None
        interpreter, version = (found, wanted) if found is not None else (usable_environment or own)
    notes = []
    if environment is not None and environment.version and environment.version != version and dirs:
        notes.append(
            f"its packages in {environment.prefix} are for Python {environment.version}, "
            f"so those with compiled code may not import on Python {version}"
        )
    return FunctionRuntime(
        logical_id=function.logical_id,
        runtime=function.runtime,
        interpreter=interpreter,
        version=version,
        environment=environment,
        site_dirs=tuple(dirs),
        matched=wanted is None or wanted == version,
        notes=tuple(notes),
        function=function,
    )


@dataclass(frozen=True)
class RuntimePlan:
    """Every function's interpreter and packages, chosen once when a command starts."""

    functions: dict[str, FunctionRuntime]

    def get(self, function: LocalFunction) -> FunctionRuntime | None:
        planned = self.functions.get(function.logical_id)
        return planned if planned is not None and planned.function == function else None

    def warning(self) -> str | None:
        """One warning for the start of a command, or None when every function runs as in Lambda."""
        mismatched = [r for r in self.functions.values() if not r.matched]
        noted = [r for r in self.functions.values() if r.notes and r.matched]
        parts = []
        if mismatched:
            listed = "; ".join(
                f"{r.logical_id} ({r.runtime}) on Python {r.version} ({r.interpreter})"
                + "".join(f", and {note}" for note in r.notes)
                for r in mismatched
            )
            missing = sorted({runtime_version(r.runtime) or "" for r in mismatched} - {""}, key=version_tuple)
            supported = [v for v in missing if version_tuple(v) >= MIN_WORKER_PYTHON]
            install = (
                "Install "
                + " and ".join(
                    f"Python {v} ('pyenv install {v}' or 'uv python install {v}')" for v in supported
                )
                + ", or pass --python."
                if supported
                else "plldb runs handlers on Python 3.10 or later: move the functions to a supported Runtime."
            )
            parts.append(
                f"No Python matching the Runtime was found for {len(mismatched)} "
                f"function{'s' if len(mismatched) > 1 else ''}, run here on another version, where behaviour "
                f"that differs between the versions may show: {listed}. {install}"
            )
        if noted:
            parts.append(
                " ".join(f"{r.logical_id} runs on Python {r.version}: {'; '.join(r.notes)}." for r in noted)
            )
        return " ".join(parts) or None

    def lines(self) -> list[str]:
        """One line per function: its Runtime, the interpreter it runs on and where its packages come from."""
        return [self.functions[name].describe() for name in sorted(self.functions)]


def plan_runtimes(
    functions: Iterable[LocalFunction],
    *,
    python: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> RuntimePlan:
    """Choose each function's interpreter and packages once, at the start of a command.

    The interpreter matches the function's Runtime when one is found: the project environment's, then
    ``python3.X`` on PATH, pyenv's versions, uv-managed ones (plldb's own when it is that version).
    Otherwise the function runs on the project environment's interpreter, or plldb's own, and
    ``RuntimePlan.warning()`` says so once. ``python`` (``--python``) is an interpreter or virtualenv
    that runs every function with its packages. Raises PlldbError for a ``python`` that cannot run.
    """
    return RuntimePlan(
        functions={
            function.logical_id: plan_function(function, python=python, environ=environ)
            for function in functions
        }
    )
