"""Running invocations locally: one worker process per execution environment, as in Lambda.

Each function gets its own worker processes (``<python> -S -u -m plldb.local.worker_main <LogicalId>``).
A worker stays warm between invocations, so module state persists; concurrent invocations of one
function get separate workers. A worker whose source changed (any file under its code or layer
folders, compared by mtime and size), whose deployed configuration changed, or that crashed, is
replaced before its next invocation; a busy worker always finishes first.

What the handler runs with is the function's, not plldb's:

- **Its Python.** The worker runs on an interpreter matching the function's ``Runtime`` when one is
  found: the project environment's, ``python3.X`` on PATH, pyenv's versions, uv-managed ones (see
  ``plan_runtimes``, which the commands call once at start to say which function runs on what).
  ``-S`` keeps the interpreter's own site-packages (plldb's, when it is plldb's interpreter) out.
- **Its packages.** ``sys.path`` is the code folder, the local layers (as ``/opt/python`` and
  ``/opt/python/lib/pythonX.Y/site-packages``), the project's environment (``--python``, the active
  virtualenv, a ``.venv`` beside the template or at the project root, uv's and Poetry's
  environments), then what the Lambda runtime itself provides after the function's code (the AWS SDK
  for Python: boto3, botocore and the packages they import, from plldb's own installation, as
  ``/var/runtime`` follows ``/var/task`` in Lambda), then the standard library. Nothing else of
  plldb's environment or source tree is visible: plldb's worker module is found through a private
  folder that the worker removes from ``sys.path`` and ``PYTHONPATH`` before the handler is imported.
- **Its environment variables**, from an allowlist (``worker_environment``): Lambda's defined runtime
  variables and the function's own configured variables, with values from the invocation; of the
  developer's variables only what running here needs.

The worker's stdout and stderr are pipes read line by line on threads and handed to ``output`` as
they come (never buffered whole, so a handler printing 10 MB cannot stall or exhaust memory). The
result travels on a separate socket. After each invocation the worker writes a marker line to both
pipes, so ``run()`` returns only once every line of that invocation has been delivered.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import plldb
from plldb import protocol
from plldb.errors import PlldbError
from plldb.local import debuggers
from plldb.local.debuggers import DebuggerConfig
from plldb.local.template import LocalFunction, layer_python_paths
from plldb.local.worker_main import receive_message, send_message, sync_marker

logger = logging.getLogger(__name__)

OutputCallback = Callable[[str, str, str, str], None]  # (logical id, request id, "stdout"/"stderr", line)
WarningCallback = Callable[[str], None]

EXIT_ERROR = "Runtime.ExitError"
IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
LINE_PIECE_BYTES = 64 * 1024  # a longer line is delivered in pieces of this size
OUTPUT_SYNC_TIMEOUT = 30.0  # the markers are already in the pipes when the result arrives
STOP_GRACE_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 30.0
WORKER_MODULE = "plldb.local.worker_main"
MIN_WORKER_PYTHON = (3, 10)  # worker_main and what it imports run on 3.10 and later
SOURCE_SKIPPED_DIRS = frozenset(
    {
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "node_modules",
        ".aws-sam",
        "cdk.out",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".idea",
        ".vscode",
    }
)

# --- The handler's environment variables -----------------------------------------------------------
# Lambda's "Defined runtime environment variables" (Lambda Developer Guide, "Working with Lambda
# environment variables"): the reserved ones a runtime sets, the unreserved TZ, X-Ray's and the
# advanced logging controls' variables. Their values come from the invocation. The credentials
# (AWS_ACCESS_KEY_ID, ...) come separately; AWS_LAMBDA_RUNTIME_API describes the cloud's runtime.
LAMBDA_RUNTIME_VARIABLES = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_LOG_FORMAT",
        "AWS_LAMBDA_LOG_LEVEL",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
        "TZ",
    }
)
LAMBDA_RUNTIME_PREFIXES = ("AWS_XRAY_",)
# Never taken from an invocation, whatever it says: they would change how the interpreter, the
# dynamic loader, the network or the AWS SDK behave on the developer's machine.
NEVER_FROM_INVOCATION = frozenset(
    {
        "AWS_CA_BUNDLE",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_LAMBDA_RUNTIME_API",
        # How the process trusts TLS, loads code or finds credentials: only ever the developer's own.
        "GCONV_PATH",
        "BASH_ENV",
        "ENV",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SSLKEYLOGFILE",
        "AWS_DATA_PATH",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        *protocol.CREDENTIAL_VARIABLES,
        *protocol.INSTRUMENTATION_VARIABLES,
    }
)
NEVER_FROM_INVOCATION_PREFIXES = (
    "LD_",
    "DYLD_",
    "PYTHON",
    "AWS_ENDPOINT_URL",
    "AWS_CONTAINER_",
    "AWS_EC2_METADATA_",
    "_LAMBDA_",
    "OPENSSL_",
    "SSL_CERT_",
)
NEVER_FROM_INVOCATION_SUFFIXES = ("_PROXY",)
# What running here needs from the developer's own environment; never from an invocation either.
LOCAL_VARIABLES = frozenset({"PATH", "HOME", "LANG", "TERM", "TMPDIR"})
LOCAL_PREFIXES = ("LC_",)
# The developer's AWS endpoint and CA settings, needed to reach AWS from here.
LOCAL_AWS_ACCESS_VARIABLES = frozenset({"AWS_CA_BUNDLE"})
LOCAL_AWS_ACCESS_PREFIXES = ("AWS_ENDPOINT_URL",)
# With --local-credentials, what the AWS SDK's credential chain reads from the developer's environment.
LOCAL_CREDENTIAL_VARIABLES = frozenset(
    {
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_EC2_METADATA_DISABLED",
    }
)
# Variables that may differ between invocations without making a new execution environment.
PER_INVOCATION_VARIABLES = (*protocol.CREDENTIAL_VARIABLES, "_X_AMZN_TRACE_ID", "AWS_LAMBDA_LOG_STREAM_NAME")


@dataclass
class Invocation:
    """One invocation to run, as the layer reported it."""

    request_id: str
    event_json: str  # the event as JSON text, exactly as Lambda received it
    context: dict[str, Any]  # the protocol "context" object
    environment: dict[str, str]  # the deployed function's variables (no credentials)
    credentials: dict[str, str] | None  # {"accessKeyId", "secretAccessKey", "sessionToken"} or None
    # Names of the variables the function itself configures (its deployed Environment.Variables);
    # None: those its template declares.
    configured_variables: frozenset[str] | None = None


@dataclass
class InvocationResult:
    status_code: int  # protocol.RESPONSE_CODE_OK or RESPONSE_CODE_ERROR
    payload: str | None  # the result's JSON text when 200
    error: dict[str, Any] | None  # {"errorMessage", "errorType", "stackTrace", ...} when 500
    duration_ms: float


def never_from_invocation(name: str) -> bool:
    """Whether an invocation may never set this variable in the handler's environment."""
    upper = name.upper()
    return (
        name in NEVER_FROM_INVOCATION
        or name in LOCAL_VARIABLES
        or upper.startswith(NEVER_FROM_INVOCATION_PREFIXES)
        or upper.startswith(LOCAL_PREFIXES)
        or upper.endswith(NEVER_FROM_INVOCATION_SUFFIXES)
    )


def lambda_runtime_variable(name: str) -> bool:
    return name in LAMBDA_RUNTIME_VARIABLES or name.startswith(LAMBDA_RUNTIME_PREFIXES)


def local_variables(parent: Mapping[str, str], local_credentials: bool) -> dict[str, str]:
    """What the handler gets from the developer's environment: what running here needs."""
    kept = {}
    for name, value in parent.items():
        if (
            name in LOCAL_VARIABLES
            or name.startswith(LOCAL_PREFIXES)
            or name in LOCAL_AWS_ACCESS_VARIABLES
            or name.startswith(LOCAL_AWS_ACCESS_PREFIXES)
            or (local_credentials and name in LOCAL_CREDENTIAL_VARIABLES)
        ):
            kept[name] = value
    return kept


def configured_variable_names(function: LocalFunction, invocation: Invocation) -> frozenset[str]:
    """The function's own variables: as the caller says, else as its template declares them."""
    if invocation.configured_variables is not None:
        return frozenset(invocation.configured_variables)
    return frozenset(function.environment) | function.environment_names


def worker_environment(
    function: LocalFunction,
    invocation: Invocation,
    local_credentials: bool = False,
    debugger: DebuggerConfig | None = None,
    parent_environ: Mapping[str, str] | None = None,
    *,
    runtime: str | None = None,
) -> tuple[dict[str, str], dict[str, str | None]]:
    """The handler's environment: (variables fixed for the worker's life, variables set per invocation).

    Built from an allowlist: (a) Lambda's defined runtime variables and (b) the function's own
    configured variables, both with their values from the invocation, except names that no
    invocation may set (``never_from_invocation``); then what plldb computes for this machine
    (``_HANDLER``, ``LAMBDA_TASK_ROOT`` and the names and sizes from the context); then the
    developer's PATH, HOME, locale, TERM, TMPDIR and AWS endpoint/CA settings, and with
    ``local_credentials`` their AWS credential settings. The execution role's credentials are set
    per invocation (unless ``local_credentials``).
    """
    parent = dict(os.environ if parent_environ is None else parent_environ)
    configured = configured_variable_names(function, invocation)
    deployed = {
        name: value
        for name, value in invocation.environment.items()
        if isinstance(name, str)
        and isinstance(value, str)
        and (lambda_runtime_variable(name) or name in configured)
        and not never_from_invocation(name)
    }
    environment = dict(deployed)
    context = invocation.context
    function_name = str(
        context.get("functionName")
        or deployed.get("AWS_LAMBDA_FUNCTION_NAME")
        or function.logical_id.split("/")[-1]
    )
    region = (
        deployed.get("AWS_REGION")
        or _arn_region(context.get("invokedFunctionArn"))
        or parent.get("AWS_REGION")
        or parent.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    memory = context.get("memoryLimitInMB") or function.memory_size or 128
    runtime = function.runtime or runtime or _version_tag(sys.version_info[:2])
    environment.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": str(context.get("functionVersion") or "$LATEST"),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": str(context.get("logGroupName") or f"/aws/lambda/{function_name}"),
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": deployed.get("AWS_DEFAULT_REGION", region),
            "_HANDLER": function.handler,
            "LAMBDA_TASK_ROOT": str(function.code_dir),
            "AWS_EXECUTION_ENV": deployed.get("AWS_EXECUTION_ENV") or f"AWS_Lambda_{runtime}",
        }
    )
    environment.update(local_variables(parent, local_credentials))
    environment.update(debuggers.worker_environment(debugger))
    per_invocation: dict[str, str | None] = {
        "AWS_LAMBDA_LOG_STREAM_NAME": context.get("logStreamName")
        or deployed.get("AWS_LAMBDA_LOG_STREAM_NAME"),
        "_X_AMZN_TRACE_ID": context.get("traceId") or None,
    }
    if not local_credentials:
        credentials = invocation.credentials or {}
        per_invocation["AWS_ACCESS_KEY_ID"] = credentials.get("accessKeyId")
        per_invocation["AWS_SECRET_ACCESS_KEY"] = credentials.get("secretAccessKey")
        per_invocation["AWS_SESSION_TOKEN"] = credentials.get("sessionToken")
    for name in PER_INVOCATION_VARIABLES:
        if name in per_invocation:
            environment.pop(name, None)
    return environment, per_invocation


def _arn_region(arn: Any) -> str | None:
    parts = arn.split(":") if isinstance(arn, str) else []
    return parts[3] if len(parts) > 4 and parts[0] == "arn" and parts[3] else None


# --- The project's Python environments -------------------------------------------------------------
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


def _version_tuple(version: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in (version or "").split("."))
    except ValueError:
        return ()


def _version_tag(version: tuple[int, ...] | str) -> str:
    if isinstance(version, str):
        return f"python{version}"
    return f"python{version[0]}.{version[1]}"


def runtime_version(runtime: str | None) -> str | None:
    """ "python3.13" -> "3.13"; None for a runtime that is not a pythonX.Y name."""
    match = re.fullmatch(r"python(\d+\.\d+)", runtime or "")
    return match.group(1) if match else None


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
    if _version_tuple(info.version) < MIN_WORKER_PYTHON:
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
    return sorted(found, key=lambda p: _version_tuple(p.name.rpartition("-py")[2]), reverse=True)


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


# --- The function's Python -------------------------------------------------------------------------
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
    yield from sorted(pyenv, key=lambda p: _version_tuple(p.parent.parent.name), reverse=True)
    uv_dir = environ.get("UV_PYTHON_INSTALL_DIR")
    if not uv_dir:
        uv_dir = str(Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share") / "uv" / "python")
    uv = [
        Path(p)
        for p in glob.glob(str(Path(uv_dir) / f"cpython-{version}.*" / "bin" / f"python{version}"))
        if re.fullmatch(rf"cpython-{re.escape(version)}\.\d+-[^+]*", Path(p).parent.parent.name)
    ]
    yield from sorted(uv, key=lambda p: _version_tuple(p.parent.parent.name.split("-")[1]), reverse=True)


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
        return _version_tag(wanted or self.version)

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
        if info is not None and _version_tuple(info.version) >= MIN_WORKER_PYTHON:
            usable_environment = (environment.interpreter, info.version)
    if python is not None and usable_environment is not None:
        interpreter, version = usable_environment  # the developer's explicit choice runs every function
    elif wanted is None:
        interpreter, version = usable_environment or own
    elif usable_environment is not None and usable_environment[1] == wanted:
        interpreter, version = usable_environment
    else:
        found = find_interpreter(wanted, environ) if _version_tuple(wanted) >= MIN_WORKER_PYTHON else None
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
            missing = sorted(
                {runtime_version(r.runtime) or "" for r in mismatched} - {""}, key=_version_tuple
            )
            supported = [v for v in missing if _version_tuple(v) >= MIN_WORKER_PYTHON]
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


# --- What plldb adds to the worker's path ----------------------------------------------------------
RUNTIME_SDK_DISTRIBUTIONS = ("boto3",)  # what the Lambda Python runtime includes, with what it imports


def _distribution_entries(names: Iterable[str]) -> list[Path]:
    """The top-level files and folders of these installed distributions and of everything they require."""
    from importlib import metadata

    entries: list[Path] = []
    pending = list(names)
    seen: set[str] = set()
    while pending:
        name = pending.pop(0)
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for requirement in distribution.requires or []:
            if "extra ==" in requirement.replace("extra==", "extra =="):
                continue
            match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
            if match:
                pending.append(match.group())
        tops = {
            Path(str(file)).parts[0]
            for file in distribution.files or []
            if Path(str(file)).parts and Path(str(file)).parts[0] not in ("..", "__pycache__")
        }
        for top in sorted(tops):
            path = Path(str(distribution.locate_file(top)))
            if path.exists() and path not in entries:
                entries.append(path)
    return entries


def _link_all(folder: Path, entries: Iterable[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        link = folder / entry.name
        if not link.exists():
            os.symlink(entry, link, target_is_directory=entry.is_dir())
    return folder


def plldb_installation_paths() -> list[Path]:
    """Where plldb and its dependencies are installed: never on a handler's path.

    Under debugpy, the worker's debugger imports its own support module from the parent's
    site-packages (``--preimport``), which leaves that folder on the worker's path.
    """
    import site

    paths = [Path(plldb.__file__).parent.parent, *(Path(p) for p in site.getsitepackages())]
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if isinstance(user_site, str):
        paths.append(Path(user_site))
    return paths


class SupportFolders:
    """Folders holding links to exactly what a worker needs from plldb's installation, nothing more.

    ``boot`` has the ``plldb`` package, for ``-m plldb.local.worker_main`` (the worker removes it from
    its path before importing the handler); ``runtime`` has the AWS SDK the Lambda runtime provides;
    ``debugger`` has the debugger's packages (debugpy, or pydevd-pycharm when installed).
    """

    def __init__(self, debugger: DebuggerConfig | None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="plldb-worker-"))
        try:
            self.boot = _link_all(self.root / "boot", [Path(plldb.__file__).parent])
            self.runtime = _link_all(self.root / "runtime", _distribution_entries(RUNTIME_SDK_DISTRIBUTIONS))
            debugger_entries: list[Path] = []
            if debugger is not None and debugger.kind == debuggers.DEBUGPY:
                debugger_entries = _distribution_entries(["debugpy"])
            elif debugger is not None and debugger.kind == debuggers.PYCHARM:
                debugger_entries = _distribution_entries(["pydevd-pycharm"])
            self.debugger = [_link_all(self.root / "debugger", debugger_entries)] if debugger_entries else []
        except OSError as exc:
            self.close()
            raise PlldbError(f"Could not prepare the workers' folders in {self.root}: {exc}.")

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# --- Hints -----------------------------------------------------------------------------------------
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


def source_fingerprint(function: LocalFunction) -> str:
    """Changes whenever a file under the function's code or layer folders is saved, added or removed."""
    digest = hashlib.sha256()
    for root in [function.code_dir, *function.layer_dirs]:
        digest.update(b"\x01" + os.fsencode(root))
        for directory, subdirectories, files in os.walk(root):
            subdirectories[:] = sorted(name for name in subdirectories if name not in SOURCE_SKIPPED_DIRS)
            for name in sorted(files):
                if name.endswith((".pyc", ".pyo")):
                    continue
                path = os.path.join(directory, name)
                try:
                    status = os.stat(path)
                except OSError:
                    continue
                digest.update(b"%s\x00%d\x00%d\n" % (os.fsencode(path), status.st_mtime_ns, status.st_size))
    return digest.hexdigest()


def exit_error(request_id: str, returncode: int | None) -> dict[str, Any]:
    """Lambda's error when the runtime process ends without answering."""
    if returncode is None or returncode == 0:
        reason = "Runtime exited without providing a reason"
    elif returncode < 0:
        try:
            name = signal.strsignal(-returncode) or f"signal {-returncode}"
        except ValueError:
            name = f"signal {-returncode}"
        reason = f"Runtime exited with error: signal: {name.lower()}"
    else:
        reason = f"Runtime exited with error: exit status {returncode}"
    return {
        "errorMessage": f"RequestId: {request_id} Error: {reason}",
        "errorType": EXIT_ERROR,
        "stackTrace": [],
    }


# --- Output --------------------------------------------------------------------------------------
class LineSplitter:
    """Cuts a byte stream into lines (long ones into pieces) and spots the worker's sync marker.

    ``feed`` returns the complete lines found, without their newline, and None where a marker was.
    A marker may follow text without a newline; that text is delivered as a line of its own.
    """

    def __init__(self, marker: bytes, piece_bytes: int = LINE_PIECE_BYTES) -> None:
        self._marker = marker
        self._piece_bytes = piece_bytes
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes | None]:
        buffer = self._pending + data if self._pending else data
        found: list[bytes | None] = []
        position = 0
        while True:
            newline = buffer.find(b"\n", position)
            if newline < 0:
                break
            line = buffer[position : newline + 1]
            position = newline + 1
            if line.endswith(self._marker):
                head = line[: -len(self._marker)]
                if head:
                    found.append(head)
                found.append(None)
            else:
                found.append(line[:-1])
        rest = buffer[position:]
        if len(rest) > self._piece_bytes:
            keep = len(self._marker) - 1  # could be the start of a marker
            found.append(rest[:-keep])
            rest = rest[-keep:]
        self._pending = rest
        return found

    def finish(self) -> list[bytes]:
        rest, self._pending = self._pending, b""
        return [rest] if rest else []


def _text(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\r") else text


# --- One worker process ----------------------------------------------------------------------------
class WorkerProcess:
    """The parent's handle on one worker: its process, channel and output pumps."""

    def __init__(
        self,
        function: LocalFunction,
        *,
        environment: dict[str, str],
        fingerprint: str,
        output: OutputCallback | None,
        debugger: DebuggerConfig | None,
        runtime: FunctionRuntime,
        support: SupportFolders,
        request_id: str,
    ) -> None:
        self.function = function
        self.environment = environment
        self.fingerprint = fingerprint
        self.request_id = request_id
        self.runtime = runtime
        self.usable = True
        self._output = output
        self._debugger = debugger
        self._support = support
        self._token = secrets.token_hex(16)
        self._marker = sync_marker(self._token)
        self._synced = {"stdout": 0, "stderr": 0}
        self._ended = {"stdout": False, "stderr": False}
        self._output_changed = threading.Condition()
        self._pumps: list[threading.Thread] = []
        self._channel: socket.socket | None = None
        self._lifecycle = threading.Lock()  # a worker being stopped is never started afterwards
        self._stopping = False
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self, channel_fd: int) -> list[str]:
        """What ``ps`` shows: the function's interpreter, plldb.local.worker_main and the logical id.

        ``-S``: the interpreter's own site-packages (plldb's, when it is plldb's interpreter) stay out;
        the worker adds the function's packages itself.
        """
        return [
            str(self.runtime.interpreter),
            "-S",
            "-u",
            *debuggers.worker_interpreter_options(self._debugger),
            "-m",
            WORKER_MODULE,
            self.function.logical_id,
            str(channel_fd),
        ]

    def start(self, per_invocation: Mapping[str, str | None]) -> dict[str, Any] | None:
        """Start the process and run its init phase; the init error object when init failed.

        Raises PlldbError when the worker cannot run at all (debugger set-up). A crash during init
        is reported as Lambda reports it (Runtime.ExitError), not raised.
        """
        environment = dict(self.environment)
        environment.update({name: value for name, value in per_invocation.items() if value is not None})
        # Only for the interpreter to find plldb.local.worker_main; the worker removes it at once.
        environment["PYTHONPATH"] = os.pathsep.join(
            str(p) for p in [self._support.boot, *self._support.debugger]
        )
        ours, theirs = socket.socketpair()
        try:
            with self._lifecycle:
                if self._stopping:
                    ours.close()
                    raise PlldbError("The worker pool is closed.")
                self._channel = ours
                self.process = subprocess.Popen(
                    self.command(theirs.fileno()),
                    cwd=self.function.code_dir,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
        except OSError as exc:
            ours.close()
            raise PlldbError(f"Could not start a worker for {self.function.logical_id}: {exc}.")
        finally:
            theirs.close()
        assert self.process.stdout is not None and self.process.stderr is not None
        for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            pump = threading.Thread(
                target=self._pump,
                args=(name, stream),
                name=f"plldb-output-{self.function.logical_id}-{name}",
                daemon=True,
            )
            pump.start()
            self._pumps.append(pump)
        layer_paths = [
            str(p)
            for layer in reversed(self.function.layer_dirs)
            for p in layer_python_paths(layer, self.runtime.layer_version_tag)
        ]
        start = {
            "type": "start",
            "functionId": self.function.logical_id,
            "handler": self.function.handler,
            "codeDir": str(self.function.code_dir),
            "layerPaths": layer_paths,
            "siteDirs": [str(p) for p in self.runtime.site_dirs],
            "runtimePaths": [str(self._support.runtime)],
            "debuggerPaths": [str(p) for p in self._support.debugger],
            "bootPath": str(self._support.boot),
            "excludedPaths": [str(p) for p in plldb_installation_paths()],
            "syncToken": self._token,
            "debugger": debuggers.worker_settings(self._debugger),
        }
        try:
            send_message(ours, start)
        except OSError:
            reply = None
        else:
            reply = self._receive()
        if reply is None:
            self.usable = False
            error = exit_error(self.request_id, self._wait_for_exit())
            self._wait_for_output_end()
            return error
        if reply.get("type") == "fatal":
            self.usable = False
            self.stop()
            raise PlldbError(
                f"The worker for {self.function.logical_id} could not start: {reply.get('message')}"
            )
        init_error = reply.get("initError")
        if init_error is not None:
            self.usable = False
            self._wait_for_output({"stdout": 1, "stderr": 1})
        return init_error

    def invoke(self, invocation: Invocation, per_invocation: Mapping[str, str | None]) -> InvocationResult:
        assert self._channel is not None
        self.request_id = invocation.request_id
        with self._output_changed:
            expected = {name: count + 1 for name, count in self._synced.items()}
        started = time.monotonic()
        try:
            send_message(
                self._channel,
                {
                    "type": "invoke",
                    "requestId": invocation.request_id,
                    "event": invocation.event_json,
                    "context": invocation.context,
                    "environ": dict(per_invocation),
                },
            )
            reply = self._receive()
        except OSError:
            reply = None
        if reply is None or reply.get("type") != "result":
            self.usable = False
            error = exit_error(invocation.request_id, self._wait_for_exit())
            self._wait_for_output_end()
            return InvocationResult(
                protocol.RESPONSE_CODE_ERROR, None, error, (time.monotonic() - started) * 1000
            )
        self._wait_for_output(expected)
        duration = (time.monotonic() - started) * 1000
        if reply.get("statusCode") == protocol.RESPONSE_CODE_OK:
            return InvocationResult(protocol.RESPONSE_CODE_OK, reply.get("payload"), None, duration)
        return InvocationResult(protocol.RESPONSE_CODE_ERROR, None, reply.get("error"), duration)

    def alive(self) -> bool:
        return self.usable and self.process is not None and self.process.poll() is None

    def close_channel(self) -> None:
        """The worker exits as soon as its channel closes, even in the middle of a handler."""
        with self._lifecycle:
            self._stopping = True
        if self._channel is not None:
            with contextlib.suppress(OSError):
                self._channel.shutdown(socket.SHUT_RDWR)
            self._channel.close()

    def stop(self, deadline: float | None = None) -> None:
        """End the worker and whatever its handlers started (its whole process group)."""
        self.usable = False
        self.close_channel()
        process = self.process
        if process is None:
            return
        if deadline is None:
            deadline = time.monotonic() + STOP_GRACE_SECONDS
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for pump in self._pumps:
            pump.join(timeout=STOP_GRACE_SECONDS)

    def _receive(self) -> dict[str, Any] | None:
        assert self._channel is not None
        try:
            return receive_message(self._channel)
        except (OSError, ValueError):
            return None

    def _wait_for_exit(self) -> int | None:
        assert self.process is not None
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.stop()
            return self.process.returncode

    def _wait_for_output(self, expected: Mapping[str, int]) -> None:
        deadline = time.monotonic() + OUTPUT_SYNC_TIMEOUT
        with self._output_changed:
            while not all(
                self._synced[name] >= count or self._ended[name] for name, count in expected.items()
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning("Output of %s did not catch up with its result.", self.function.logical_id)
                    return
                self._output_changed.wait(remaining)

    def _wait_for_output_end(self, timeout: float = STOP_GRACE_SECONDS) -> None:
        """After a crash: the pipes close with the process (unless its children still hold them)."""
        deadline = time.monotonic() + timeout
        with self._output_changed:
            while not all(self._ended.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._output_changed.wait(remaining)

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        splitter = LineSplitter(self._marker)
        try:
            fd = stream.fileno()
            while True:
                try:
                    data = os.read(fd, LINE_PIECE_BYTES)
                except OSError:
                    break
                if not data:
                    break
                for item in splitter.feed(data):
                    if item is None:
                        with self._output_changed:
                            self._synced[name] += 1
                            self._output_changed.notify_all()
                    else:
                        self._deliver(name, item)
            for rest in splitter.finish():
                self._deliver(name, rest)
        finally:
            stream.close()
            with self._output_changed:
                self._ended[name] = True
                self._output_changed.notify_all()

    def _deliver(self, name: str, line: bytes) -> None:
        if self._output is None:
            return
        try:
            self._output(self.function.logical_id, self.request_id, name, _text(line))
        except Exception:
            logger.exception("The output callback failed.")


# --- The pool --------------------------------------------------------------------------------------
class WorkerPool:
    """Warm workers per function; ``run`` takes an idle one or starts a new one. Thread-safe."""

    def __init__(
        self,
        *,
        output: OutputCallback | None = None,
        debugger: DebuggerConfig | None = None,
        local_credentials: bool = False,
        extra_sys_path: list[Path] | None = None,
        warn: WarningCallback | None = None,
        runtimes: RuntimePlan | None = None,
        python: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``runtimes``: each function's interpreter and packages, as ``plan_runtimes`` chose them at
        start (functions it does not cover are planned at their first invocation, with ``python``).
        ``extra_sys_path``: site-packages folders after the code and layers, instead of the project's
        environment. ``environ``: the developer's environment (default: this process's, read at each
        invocation). ``warn`` receives one-line warnings."""
        self._output = output
        self._debugger = debugger
        self._local_credentials = local_credentials
        self._extra_sys_path = extra_sys_path
        self._warn = warn or logger.warning
        self._runtimes = runtimes
        self._python = python
        self._environ = environ
        self._lock = threading.Lock()
        self._idle: dict[str, list[WorkerProcess]] = {}
        self._workers: set[WorkerProcess] = set()
        self._planned: dict[str, FunctionRuntime] = {}
        self._plan_lock = threading.Lock()
        self._closed = False
        debuggers.prepare_parent(debugger)
        self._support = SupportFolders(debugger)

    def run(self, function: LocalFunction, invocation: Invocation) -> InvocationResult:
        """Run one invocation to its end and return its result (blocking)."""
        runtime = self.runtime(function)
        environment, per_invocation = worker_environment(
            function,
            invocation,
            self._local_credentials,
            self._debugger,
            self._environ,
            runtime=_version_tag(runtime.version),
        )
        fingerprint = source_fingerprint(function)
        worker = self._take_idle(function, environment, fingerprint)
        if worker is None:
            worker = WorkerProcess(
                function,
                environment=environment,
                fingerprint=fingerprint,
                output=self._output,
                debugger=self._debugger,
                runtime=runtime,
                support=self._support,
                request_id=invocation.request_id,
            )
            with self._lock:
                if self._closed:
                    raise PlldbError("The worker pool is closed.")
                self._workers.add(worker)
            started = time.monotonic()
            try:
                init_error = worker.start(per_invocation)
            except BaseException:
                self._discard(worker)
                raise
            if init_error is not None:
                self._discard(worker)
                self._hint(function, runtime, init_error)
                duration = (time.monotonic() - started) * 1000
                return InvocationResult(protocol.RESPONSE_CODE_ERROR, None, init_error, duration)
        try:
            result = worker.invoke(invocation, per_invocation)
        finally:
            self._release(worker)
        if result.error is not None:
            self._hint(function, runtime, result.error)
        return result

    def runtime(self, function: LocalFunction) -> FunctionRuntime:
        """The function's interpreter and packages: as planned at start, else planned now.

        Planning runs once per function, however many of its invocations arrive together.
        """
        if self._extra_sys_path is None and self._runtimes is not None:
            planned = self._runtimes.get(function)
            if planned is not None:
                return planned
        with self._plan_lock:
            known = self._planned.get(function.logical_id)
            if known is not None and known.function == function:
                return known
            planned = plan_function(
                function, python=self._python, environ=self._environ, site_dirs=self._extra_sys_path
            )
            self._planned[function.logical_id] = planned
        warning = RuntimePlan({function.logical_id: planned}).warning()
        if warning and (known is None or known.interpreter != planned.interpreter):
            self._warn(warning)
        return planned

    def pids(self, logical_id: str | None = None) -> list[int]:
        """Process ids of the live workers (of one function), for "Attach to Process" and tests."""
        with self._lock:
            workers = list(self._workers)
        return sorted(
            w.pid
            for w in workers
            if w.pid and w.alive() and (logical_id is None or w.function.logical_id == logical_id)
        )

    def close(self) -> None:
        """Stop every worker, busy or not; their running invocations end with Runtime.ExitError."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
            self._idle.clear()
        for worker in workers:
            worker.close_channel()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in workers:
            worker.stop(deadline)
        self._support.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _hint(self, function: LocalFunction, runtime: FunctionRuntime, error: Mapping[str, Any]) -> None:
        hint = missing_module_hint(function, runtime, error)
        if hint is not None:
            self._warn(hint)

    def _take_idle(
        self, function: LocalFunction, environment: dict[str, str], fingerprint: str
    ) -> WorkerProcess | None:
        """The most recently used matching idle worker; idle workers with old code or settings are retired."""
        stale = []
        current = []
        with self._lock:
            if self._closed:
                raise PlldbError("The worker pool is closed.")
            for worker in self._idle.get(function.logical_id, []):
                if (
                    worker.alive()
                    and worker.fingerprint == fingerprint
                    and worker.function == function
                    and worker.environment == environment
                ):
                    current.append(worker)
                else:
                    stale.append(worker)
                    self._workers.discard(worker)
            chosen = current.pop() if current else None
            self._idle[function.logical_id] = current
        for worker in stale:
            worker.stop()
        return chosen

    def _release(self, worker: WorkerProcess) -> None:
        with self._lock:
            if not self._closed and worker.alive():
                self._idle.setdefault(worker.function.logical_id, []).append(worker)
                return
            self._workers.discard(worker)
        worker.stop()

    def _discard(self, worker: WorkerProcess) -> None:
        with self._lock:
            self._workers.discard(worker)
        worker.stop()
