"""How an execution environment's Python runtime starts: Lambda's own bootstrap, emulated.

Lambda starts a Python function's runtime with ``/var/runtime/bootstrap``: without an
``AWS_LAMBDA_EXEC_WRAPPER`` it executes ``/var/lang/bin/pythonX.Y /var/runtime/bootstrap.py``; with one,
it refuses a wrapper that does not exist ("<wrapper>: does not exist", exit status 127) or is not
executable ("<wrapper>: is not an executable", exit status 126), and otherwise executes the wrapper with
that same command line as its arguments. ``PYTHONPATH`` is not set in the environment Lambda gives
the process. ``bootstrap.py`` builds ``sys.path`` itself before awslambdaric imports the handler:
``LAMBDA_TASK_ROOT`` first, then (only when the function's configuration sets no ``PYTHONPATH``)
``/opt/python/lib/pythonX.Y/site-packages``, ``/opt/python`` and the interpreter's site-packages; it
processes ``.pth`` files of the task root (and of both ``/opt`` directories) with ``site.addsitedir``;
it sets ``PYTHONPATH`` to ``LAMBDA_RUNTIME_DIR`` for the processes a handler starts, when the
function set none; then it runs awslambdaric's main with the task root and the handler. (The managed
runtime's bootstrap scripts, as shipped in the Python base images of the AWS Lambda runtime images.)

The local cloud does the same with each environment's own directories: its ``/var/runtime`` is a
directory holding a ``bootstrap.py`` written by :func:`runtime_directory` (with the paths of that
environment's ``/opt`` and of its runtime's Python version, since every environment runs on the local
cloud's interpreter) and awslambdaric; ``/var/lang/bin/pythonX.Y`` is the local cloud's interpreter.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import sysconfig
import threading
from pathlib import Path

import awslambdaric

# Lambda's runtime bootstrap, for this environment (only the paths differ from /var/runtime/bootstrap.py).
_BOOTSTRAP = '''"""The local cloud's /var/runtime/bootstrap.py: builds sys.path as Lambda's Python runtime does."""

import os
import site
import sys

OPT = {opt!r}  # this execution environment's /opt
VERSION = {version!r}  # the function's runtime's Python version
INTERPRETER_SITE_PACKAGES = {interpreter_site_packages!r}  # /var/lang/lib/pythonX.Y/site-packages


def main():
    task_root = os.environ["LAMBDA_TASK_ROOT"]
    configured = "PYTHONPATH" in os.environ
    opt_site_packages = os.path.join(OPT, "python", "lib", "python" + VERSION, "site-packages")
    opt_python = os.path.join(OPT, "python")
    if not configured:
        for directory in (INTERPRETER_SITE_PACKAGES, opt_python, opt_site_packages):
            sys.path.insert(0, directory)
    sys.path.insert(0, task_root)
    site.addsitedir(task_root)
    if not configured:
        site.addsitedir(opt_site_packages)
        site.addsitedir(opt_python)
        os.environ["PYTHONPATH"] = os.environ["LAMBDA_RUNTIME_DIR"]
    import awslambdaric.__main__

    awslambdaric.__main__.main([task_root, os.environ["_HANDLER"]])


if __name__ == "__main__":
    main()
'''


def python_version(runtime: str) -> str:
    """``3.12`` for ``python3.12``; the local interpreter's version for anything else."""
    if runtime.startswith("python3."):
        return runtime.removeprefix("python")
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def runtime_directory(root: Path, opt_dir: Path, runtime: str) -> Path:
    """The ``/var/runtime`` of environments with this ``/opt`` and runtime: ``bootstrap.py`` and the
    runtime interface client, written once and shared (environments of one function configuration see
    the same ``LAMBDA_RUNTIME_DIR``, as every environment sees ``/var/runtime`` on AWS)."""
    text = _BOOTSTRAP.format(
        opt=str(opt_dir),
        version=python_version(runtime),
        interpreter_site_packages=sysconfig.get_paths()["purelib"],
    )
    directory = root / hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]
    if (directory / "bootstrap.py").is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    client = directory / "awslambdaric"
    if not client.exists():
        try:
            client.symlink_to(Path(awslambdaric.__file__).resolve().parent, target_is_directory=True)
        except FileExistsError:
            pass  # another environment made it at the same moment
    staging = directory / f".bootstrap-{os.getpid()}-{threading.get_ident()}.py"
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, directory / "bootstrap.py")  # complete or absent, never half-written
    return directory


def runtime_command(runtime_dir: Path) -> list[str]:
    """``/var/lang/bin/pythonX.Y /var/runtime/bootstrap.py``, with the local cloud's interpreter."""
    return [sys.executable, str(runtime_dir / "bootstrap.py")]


def launch_command(runtime_dir: Path, wrapper: str, translated_wrapper: str) -> list[str]:
    """What /var/runtime/bootstrap executes: the runtime, or the wrapper with the runtime's command line,
    or (for a wrapper that is missing or not executable) the shell's refusal with Lambda's message."""
    command = runtime_command(runtime_dir)
    if not wrapper:
        return command
    if not os.path.isfile(translated_wrapper):
        return ["/bin/sh", "-c", f"echo {shlex.quote(wrapper + ': does not exist')}; exit 127"]
    if not os.access(translated_wrapper, os.X_OK):
        return ["/bin/sh", "-c", f"echo {shlex.quote(wrapper + ': is not an executable')}; exit 126"]
    return [translated_wrapper, *command]
