"""The project's Python environments: where a function's packages are installed, and what an interpreter is.

Finds the virtualenv the developer installed the project into (``--python``, the active one, a
``.venv`` beside the template or at the project root, uv's and Poetry's), and asks interpreters
their version and site-packages (``probe_interpreter``), so ``runtime_plan`` can pick each
function's Python. Nothing here starts a worker.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from plldb.errors import PlldbError

PROBE_TIMEOUT_SECONDS = 30.0
MIN_WORKER_PYTHON = (3, 10)  # worker_main and what it imports run on 3.10 and later
PROJECT_MARKERS = ("pyproject.toml", "uv.lock", "poetry.lock", ".git")
ORIGIN_PYTHON_OPTION = "--python"
ORIGIN_ACTIVE = "the active virtualenv"
ORIGIN_BESIDE_TEMPLATE = "the .venv beside the template"
ORIGIN_UV = "the project's uv environment"
ORIGIN_PROJECT_ROOT = "the .venv at the project root"
ORIGIN_POETRY = "the project's Poetry environment"


@dataclass(frozen=True)
class PythonEnvironment:
    """An environment the project's packages are installed in (a virtualenv, or an interpreter's own)."""

    prefix: Path
    origin: str  # how plldb found it: "the .venv beside the template", "--python", ...
    version: str | None  # "3.13"
    interpreter: Path | None  # its python, when it has one
    site_dirs: tuple[Path, ...]
    uv: bool = False  # made by uv, which installs into it with "uv pip" (it has no pip of its own)

    def install_command(self, requirements: Path | None) -> str:
        """The command that installs ``requirements`` (or, without one, a package) into this environment."""
        python = self.interpreter or self.prefix / "bin" / "python"
        what = f"-r {requirements}" if requirements is not None else "PACKAGE"
        if self.uv:
            return f"uv pip install --python {python} {what}"
        return f"{python} -m pip install {what}"


@dataclass(frozen=True)
class InterpreterInfo:
    version: str  # "3.12"
    executable: Path  # what it reports as sys.executable (the real binary behind a pyenv shim)
    prefix: Path
    site_dirs: tuple[Path, ...]


_PROBE_SCRIPT = (
    "import json, site, sys\n"
    "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], 'executable': sys.executable, "
    "'prefix': sys.prefix, 'site': site.getsitepackages() if hasattr(site, 'getsitepackages') else []}))\n"
)
_probe_lock = threading.Lock()
_probe_locks: dict[str, threading.Lock] = {}
_probes: dict[str, InterpreterInfo | None] = {}


def probe_interpreter(path: Path, environ: Mapping[str, str] | None = None) -> InterpreterInfo | None:
    """Ask an interpreter what it is (once per path, however many threads ask); None when it does not run."""
    key = str(path)
    with _probe_lock:
        if key in _probes:
            return _probes[key]
        lock = _probe_locks.setdefault(key, threading.Lock())
    with lock:
        with _probe_lock:
            if key in _probes:
                return _probes[key]
        return _probe(key, environ)


def _probe(key: str, environ: Mapping[str, str] | None) -> InterpreterInfo | None:
    info: InterpreterInfo | None = None
    # Started through env(1): under debugpy, the parent's debugger follows every Python child it
    # starts (its subprocess support recognizes them by the name of the program run), and a probe
    # must not show up in the developer's debugger as a process of the function.
    launcher = shutil.which("env") or ""
    try:
        completed = subprocess.run(
            [*([launcher] if launcher else []), key, "-S", "-E", "-c", _PROBE_SCRIPT],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            env=dict(os.environ if environ is None else environ),
            stdin=subprocess.DEVNULL,
        )
        if completed.returncode == 0:
            answer = json.loads(completed.stdout.strip().splitlines()[-1])
            info = InterpreterInfo(
                version=str(answer["version"]),
                executable=Path(answer["executable"] or key),
                prefix=Path(answer["prefix"]),
                site_dirs=tuple(Path(p) for p in answer["site"] if Path(p).is_dir()),
            )
    except (OSError, ValueError, KeyError, IndexError, subprocess.TimeoutExpired):
        info = None
    with _probe_lock:
        _probes[key] = info
    return info


def version_tuple(version: str | None) -> tuple[int, ...]:
    """ "3.12" -> (3, 12); () for what is not a version. Public: runtime_plan compares versions with it."""
    try:
        return tuple(int(part) for part in (version or "").split("."))
    except ValueError:
        return ()


def _read_pyvenv_cfg(prefix: Path) -> dict[str, str] | None:
    try:
        text = (prefix / "pyvenv.cfg").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    values = {}
    for line in text.splitlines():
        name, separator, value = line.partition("=")
        if separator:
            values[name.strip().lower()] = value.strip()
    return values


def _venv_interpreter(prefix: Path) -> Path | None:
    for candidate in (
        prefix / "bin" / "python",
        prefix / "bin" / "python3",
        prefix / "Scripts" / "python.exe",
    ):
        if candidate.exists():
            return candidate
    return None


def environment_at(prefix: Path, origin: str) -> PythonEnvironment | None:
    """The virtualenv (or other environment with a lib/pythonX.Y/site-packages) at ``prefix``."""
    if not prefix.is_dir():
        return None
    config = _read_pyvenv_cfg(prefix) or {}
    version_text = config.get("version_info") or config.get("version") or ""
    version = ".".join(version_text.split(".")[:2]) if version_text else None
    if version is None:
        found = sorted(p.name[6:] for p in (prefix / "lib").glob("python3.*") if p.is_dir())
        version = found[-1] if len(found) == 1 else None
    site_dirs: list[Path] = []
    for candidate in (
        prefix / "lib" / f"python{version}" / "site-packages",
        prefix / "Lib" / "site-packages",
    ):
        if version is not None and candidate.is_dir():
            site_dirs.append(candidate)
    if config.get("include-system-site-packages", "").lower() == "true" and config.get("home"):
        base_site = Path(config["home"]).parent / "lib" / f"python{version}" / "site-packages"
        if base_site.is_dir():
            site_dirs.append(base_site)
    if not site_dirs and not config:
        return None
    return PythonEnvironment(
        prefix=prefix.absolute(),
        origin=origin,
        version=version,
        interpreter=_venv_interpreter(prefix),
        site_dirs=tuple(site_dirs),
        uv="uv" in config,
    )


def environment_from_python_option(path: Path, environ: Mapping[str, str]) -> PythonEnvironment:
    """``--python PATH``: a virtualenv folder, or an interpreter (of a virtualenv or with its own packages)."""
    fix = "Pass the path of a Python interpreter or of a virtualenv folder."
    if not path.exists():
        raise PlldbError(f"--python {path}: there is no such file or folder.", fix)
    if path.is_dir():
        environment = environment_at(path, ORIGIN_PYTHON_OPTION)
        interpreter = environment.interpreter if environment else _venv_interpreter(path)
        if interpreter is None:
            raise PlldbError(f"--python {path} is a folder without bin/python.", fix)
        if environment is not None and environment.interpreter is not None:
            _check_runs(environment.interpreter, path, environ)
            return environment
        path = interpreter
    venv_prefix = path.absolute().parent.parent
    if (venv_prefix / "pyvenv.cfg").is_file():
        environment = environment_at(venv_prefix, ORIGIN_PYTHON_OPTION)
        if environment is not None:
            _check_runs(path, path, environ)
            return PythonEnvironment(
                prefix=environment.prefix,
                origin=ORIGIN_PYTHON_OPTION,
                version=environment.version,
                interpreter=path.absolute(),
                site_dirs=environment.site_dirs,
                uv=environment.uv,
            )
    info = _check_runs(path, path, environ)
    return PythonEnvironment(
        prefix=info.prefix,
        origin=ORIGIN_PYTHON_OPTION,
        version=info.version,
        interpreter=path.absolute(),
        site_dirs=info.site_dirs,
    )


def _check_runs(interpreter: Path, given: Path, environ: Mapping[str, str]) -> InterpreterInfo:
    info = probe_interpreter(interpreter, environ)
    if info is None:
        raise PlldbError(
            f"--python {given}: {interpreter} does not run as a Python interpreter here.",
            "Pass the path of a Python interpreter or of a virtualenv folder.",
        )
    if version_tuple(info.version) < MIN_WORKER_PYTHON:
        raise PlldbError(
            f"--python {given} is Python {info.version}; plldb runs handlers on Python 3.10 or later.",
            "Pass a Python 3.10 or later interpreter or virtualenv.",
        )
    return info


def project_root(folder: Path | None) -> Path | None:
    """The nearest folder at or above ``folder`` that marks a project (pyproject.toml, uv.lock, .git...)."""
    if folder is None:
        return None
    folder = folder.absolute()
    for candidate in (folder, *folder.parents):
        if any((candidate / marker).exists() for marker in PROJECT_MARKERS):
            return candidate
    return None


def poetry_environment_name(name: str, project_dir: Path) -> str:
    """The name Poetry gives a project's virtualenvs, before "-pyX.Y" (Poetry's EnvManager.generate_env_name).

    The project's name lowercased, each space, tab, line break, ``$`!*@"`` and backslash replaced
    by "_", cut to 42 characters; then a dash and the first 8 characters of the URL-safe base64 of
    the SHA-256 of the project folder's real, case-normalized path.
    """
    import base64

    sanitized = re.sub(r'[ $`!*@"\\\r\n\t]', "_", name.lower())[:42]
    digest = hashlib.sha256(os.path.normcase(os.path.realpath(project_dir)).encode()).digest()
    return f"{sanitized}-{base64.urlsafe_b64encode(digest).decode()[:8]}"


def poetry_environment_candidates(root: Path, environ: Mapping[str, str]) -> list[Path]:
    """Where Poetry keeps the project's virtualenvs outside the project (its default configuration):
    ``{cache-dir}/virtualenvs/{poetry_environment_name}-py{X.Y}``, newest Python first."""
    import tomllib

    try:
        document = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    tool = document.get("tool")
    poetry = tool.get("poetry") if isinstance(tool, dict) else None
    project = document.get("project")
    if not isinstance(poetry, dict) and not (root / "poetry.lock").is_file():
        return []
    name = (poetry or {}).get("name") if isinstance(poetry, dict) else None
    if not isinstance(name, str) and isinstance(project, dict):
        name = project.get("name")
    if not isinstance(name, str) or not name:
        return []
    env_name = poetry_environment_name(name, root)
    if environ.get("POETRY_VIRTUALENVS_PATH"):
        base = Path(environ["POETRY_VIRTUALENVS_PATH"])
    else:
        cache = environ.get("POETRY_CACHE_DIR")
        if not cache:
            home = Path(environ.get("HOME") or Path.home())
            if sys.platform == "darwin":
                cache = str(home / "Library" / "Caches" / "pypoetry")
            else:
                cache = str(Path(environ.get("XDG_CACHE_HOME") or home / ".cache") / "pypoetry")
        base = Path(cache) / "virtualenvs"
    found = [Path(p) for p in glob.glob(str(base / f"{glob.escape(env_name)}-py*")) if Path(p).is_dir()]
    return sorted(found, key=lambda p: version_tuple(p.name.rpartition("-py")[2]), reverse=True)


def find_project_environment(
    project_dir: Path | None,
    *,
    python: Path | None = None,
    environ: Mapping[str, str] | None = None,
    version: str | None = None,
) -> PythonEnvironment | None:
    """The environment the project's packages come from; None when the project has none.

    In order: ``--python``; the active virtualenv (VIRTUAL_ENV); ``.venv`` beside the template (in
    ``project_dir``); at the project root, uv's environment (UV_PROJECT_ENVIRONMENT), ``.venv``, then
    Poetry's (preferring the one for ``version``). plldb's own environment is used only when nothing
    else is found.
    """
    environ = os.environ if environ is None else environ
    if python is not None:
        return environment_from_python_option(Path(python), environ)
    candidates: list[tuple[Path, str]] = []
    if environ.get("VIRTUAL_ENV"):
        candidates.append((Path(environ["VIRTUAL_ENV"]), ORIGIN_ACTIVE))
    if project_dir is not None:
        candidates.append((project_dir / ".venv", ORIGIN_BESIDE_TEMPLATE))
    root = project_root(project_dir)
    if root is not None:
        if environ.get("UV_PROJECT_ENVIRONMENT"):
            uv_environment = Path(environ["UV_PROJECT_ENVIRONMENT"])
            candidates.append(
                (uv_environment if uv_environment.is_absolute() else root / uv_environment, ORIGIN_UV)
            )
        candidates.append((root / ".venv", ORIGIN_PROJECT_ROOT))
        poetry = poetry_environment_candidates(root, environ)
        poetry.sort(key=lambda p: not p.name.endswith(f"-py{version}"))
        candidates.extend((path, ORIGIN_POETRY) for path in poetry)
    own = Path(sys.prefix).resolve()
    fallback = None
    seen: set[Path] = set()
    for prefix, origin in candidates:
        resolved = prefix.resolve() if prefix.exists() else prefix
        if resolved in seen:
            continue
        seen.add(resolved)
        environment = environment_at(prefix, origin)
        if environment is None:
            continue
        if resolved == own:
            fallback = fallback or environment
            continue
        return environment
    return fallback
