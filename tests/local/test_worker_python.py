"""The function's Python and packages: its Runtime's interpreter, its project's environment, nothing of plldb's.

Real interpreters run here: pyenv's Python 3.10, 3.12 and 3.13 on this machine (a test needing one
that is absent is skipped with the reason). Environments are made by ``python -m venv`` and packages
installed by pip from a wheel built at test time (no network).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from plldb.errors import PlldbError
from plldb.local.invocation import Invocation
from plldb.local.template import LocalFunction
from plldb.local.worker import WorkerPool, plan_runtimes
from plldb.local.worker.python_environments import (
    PythonEnvironment,
    environment_from_python_option,
    find_project_environment,
    poetry_environment_name,
)
from plldb.local.worker.runtime_plan import FunctionRuntime, find_interpreter, plan_function
from tests.local.fixtures.apps import SHOP_APP, build_wheel, lambda_python, make_venv

ROOT = Path(__file__).resolve().parents[2]
OWN = f"{sys.version_info[0]}.{sys.version_info[1]}"


def requires(version: str) -> str:
    python = lambda_python(version)
    if python is None:
        pytest.skip(f"python{version} is not installed on this machine")
    return python


def invocation() -> Invocation:
    context = {"functionName": "fn", "deadlineMs": int(time.time() * 1000) + 30_000}
    return Invocation(str(uuid.uuid4()), "{}", context, {}, None)


def function(code_dir: Path, runtime: str | None, source: str, project: Path | None = None) -> LocalFunction:
    code_dir.mkdir(parents=True, exist_ok=True)
    (code_dir / "app.py").write_text(textwrap.dedent(source))
    return LocalFunction(
        "Fn", code_dir, "app.handler", runtime, {}, [], 3, 128, template_dir=project or code_dir
    )


def fake_venv(prefix: Path, version: str, **config: str) -> Path:
    """A folder shaped like a virtualenv (no interpreter): enough for finding where packages are."""
    (prefix / "lib" / f"python{version}" / "site-packages").mkdir(parents=True)
    lines = ["home = /usr/bin", "include-system-site-packages = false", f"version = {version}.4"]
    lines += [f"{name} = {value}" for name, value in config.items()]
    (prefix / "pyvenv.cfg").write_text("\n".join(lines) + "\n")
    return prefix


@pytest.fixture(scope="module")
def tinyprice_wheel(tmp_path_factory) -> Path:
    return build_wheel(SHOP_APP / "packages" / "tinyprice", tmp_path_factory.mktemp("wheels"))


def run(function: LocalFunction, **pool_options) -> dict:
    warnings: list[str] = []
    with WorkerPool(warn=warnings.append, **pool_options) as pool:
        result = pool.run(function, invocation())
    return {"result": result, "warnings": warnings}


# --- The worker's own code runs on every Lambda Python -----------------------------------------------
def _plldb_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 10))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").exists()
            )
    return modules


def test_the_worker_and_all_it_imports_use_only_the_standard_library_and_python_3_10_syntax():
    pending = ["plldb.local.worker_main"]
    seen: set[str] = set()
    outside: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / module.replace(".", "/") / "__init__.py"
        for imported in _plldb_imports(path):  # parses with Python 3.10's grammar
            if imported.split(".")[0] == "plldb":
                pending.append(imported)
                parts = imported.split(".")
                pending.extend(".".join(parts[:n]) for n in range(1, len(parts)))
            elif imported.split(".")[0] not in sys.stdlib_module_names and imported != "__future__":
                outside.add(imported)
    # Only the debuggers' own packages, which the worker gets from its debugger folder when one is used.
    assert outside == {"debugpy", "pydevd_pycharm"}
    assert "plldb.local.debuggers" in seen  # imported inside a function, for PyCharm
    assert "plldb.local.worker" not in seen


@pytest.mark.parametrize("version", ["3.10", "3.12", "3.13"])
def test_a_function_runs_on_its_runtimes_python_with_nothing_of_plldbs(tmp_path, version):
    python = requires(version)
    handler = function(
        tmp_path / "fn",
        f"python{version}",
        """
        import importlib.util
        import os
        import sys

        import boto3


        def handler(event, context):
            return {
                "version": "%d.%d" % sys.version_info[:2],
                "executable": sys.executable,
                "path": sys.path,
                "boto3": boto3.__file__,
                "importable": {name: importlib.util.find_spec(name) is not None for name in ("plldb", "click", "yaml")},
                "exit": callable(exit) and callable(help),
                "pythonpath": os.environ.get("PYTHONPATH"),
            }
        """,
    )
    outcome = run(handler, environ={**os.environ, "VIRTUAL_ENV": ""})
    assert outcome["warnings"] == []
    answer = json.loads(outcome["result"].payload)
    assert (answer["version"], Path(answer["executable"]).resolve()) == (version, Path(python).resolve())
    assert answer["importable"] == {"plldb": False, "click": False, "yaml": False}
    assert (answer["exit"], answer["pythonpath"]) == (True, None)
    runtime_dir = str(Path(answer["boto3"]).parent.parent)
    assert answer["path"][:2] == [str(handler.code_dir), runtime_dir]
    assert Path(runtime_dir).name == "runtime"
    prefix = str(Path(python).parent.parent)
    assert all(entry.startswith(prefix) for entry in answer["path"][2:]), answer["path"]
    assert not any(entry.startswith((str(ROOT), sys.prefix)) for entry in answer["path"])


# --- The project's environment -----------------------------------------------------------------------
def test_a_venv_made_for_313_runs_its_313_functions_with_its_own_interpreter(tmp_path, tinyprice_wheel):
    python = requires("3.13")
    project = tmp_path / "shop"
    venv = make_venv(project / ".venv", python, [tinyprice_wheel])
    handler = function(
        project / "price",
        "python3.13",
        """
        import sys

        import tinyprice


        def handler(event, context):
            return {"executable": sys.executable, "tinyprice": tinyprice.__file__, "path": sys.path}
        """,
        project,
    )
    planned = plan_runtimes([handler], environ={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"]})
    assert planned.warning() is None
    assert planned.lines() == [
        f"Fn: python3.13 on Python 3.13 ({venv / 'bin' / 'python'}), packages from {venv} "
        "(the .venv beside the template)"
    ]
    outcome = run(handler, runtimes=planned)
    answer = json.loads(outcome["result"].payload)
    site_packages = venv / "lib" / "python3.13" / "site-packages"
    assert answer["executable"] == str(venv / "bin" / "python")
    assert answer["tinyprice"] == str(site_packages / "tinyprice" / "__init__.py")
    assert answer["path"][:2] == [str(handler.code_dir), str(site_packages)]


def test_a_312_function_beside_a_313_venv_runs_on_312_with_one_warning(tmp_path, tinyprice_wheel):
    python312 = requires("3.12")
    python313 = requires("3.13")
    project = tmp_path / "shop"
    venv = make_venv(project / ".venv", python313, [tinyprice_wheel])
    old = function(project / "nightly", "python3.12", "def handler(event, context):\n    return 1\n", project)
    planned = plan_runtimes([old], environ={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"]})
    chosen = planned.functions["Fn"]
    assert chosen.interpreter.resolve() == Path(python312).resolve()
    assert chosen == FunctionRuntime(
        logical_id="Fn",
        runtime="python3.12",
        interpreter=chosen.interpreter,
        version="3.12",
        environment=PythonEnvironment(
            prefix=venv,
            origin="the .venv beside the template",
            version="3.13",
            interpreter=venv / "bin" / "python",
            site_dirs=(venv / "lib" / "python3.13" / "site-packages",),
        ),
        site_dirs=(venv / "lib" / "python3.13" / "site-packages",),
        matched=True,
        notes=(
            f"its packages in {venv} are for Python 3.13, so those with compiled code may not import on Python 3.12",
        ),
    )
    assert planned.warning() == (
        f"Fn runs on Python 3.12: its packages in {venv} are for Python 3.13, so those with compiled code "
        "may not import on Python 3.12."
    )


def test_without_a_matching_python_the_function_runs_on_the_environments_and_one_warning_says_so(tmp_path):
    python313 = requires("3.13")
    project = tmp_path / "app"
    venv = make_venv(project / ".venv", python313)
    handlers = [
        LocalFunction(name, project, "app.handler", runtime, {}, [], 3, 128, template_dir=project)
        for name, runtime in (("Old", "python3.9"), ("Future", "python3.99"), ("Current", "python3.13"))
    ]
    planned = plan_runtimes(handlers, environ={"PATH": "", "HOME": str(tmp_path)})
    assert planned.warning() == (
        "No Python matching the Runtime was found for 2 functions, run here on another version, where "
        "behaviour that differs between the versions may show: "
        f"Old (python3.9) on Python 3.13 ({venv / 'bin' / 'python'}); "
        f"Future (python3.99) on Python 3.13 ({venv / 'bin' / 'python'}). "
        "Install Python 3.99 ('pyenv install 3.99' or 'uv python install 3.99'), or pass --python."
    )


def test_the_project_environment_is_found_in_order(tmp_path):
    root = tmp_path / "repo"
    template_dir = root / "services" / "orders"
    template_dir.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.poetry]\nname = "Orders"\nversion = "1.0"\n')
    active = fake_venv(tmp_path / "active", "3.12")
    beside = fake_venv(template_dir / ".venv", "3.13")
    uv_env = fake_venv(root / "envs" / "uv", "3.13", uv="0.5.1")
    at_root = fake_venv(root / ".venv", "3.12")
    poetry_base = tmp_path / "poetry-envs"
    name = poetry_environment_name("Orders", root)
    poetry_312 = fake_venv(poetry_base / f"{name}-py3.12", "3.12")
    poetry_313 = fake_venv(poetry_base / f"{name}-py3.13", "3.13")
    environ = {
        "VIRTUAL_ENV": str(active),
        "UV_PROJECT_ENVIRONMENT": "envs/uv",
        "POETRY_VIRTUALENVS_PATH": str(poetry_base),
    }

    def found(**changes):
        environment = find_project_environment(template_dir, environ={**environ, **changes}, version="3.12")
        return environment and (environment.prefix, environment.origin, environment.version, environment.uv)

    assert found() == (active, "the active virtualenv", "3.12", False)
    del environ["VIRTUAL_ENV"]
    assert found() == (beside, "the .venv beside the template", "3.13", False)
    subprocess.run(["rm", "-r", str(beside)], check=True)
    assert found() == (uv_env, "the project's uv environment", "3.13", True)
    del environ["UV_PROJECT_ENVIRONMENT"]
    assert found() == (at_root, "the .venv at the project root", "3.12", False)
    subprocess.run(["rm", "-r", str(at_root)], check=True)
    assert found() == (poetry_312, "the project's Poetry environment", "3.12", False)
    subprocess.run(["rm", "-r", str(poetry_312)], check=True)
    assert found() == (poetry_313, "the project's Poetry environment", "3.13", False)
    subprocess.run(["rm", "-r", str(poetry_313)], check=True)
    assert found() is None
    # plldb's own environment serves only when the project has no other.
    assert found(VIRTUAL_ENV=sys.prefix)[:2] == (Path(sys.prefix), "the active virtualenv")
    fake_venv(root / ".venv", "3.12")
    assert found(VIRTUAL_ENV=sys.prefix)[:2] == (root / ".venv", "the .venv at the project root")


def test_poetrys_environment_name_is_poetrys():
    """Checked against Poetry itself: `poetry env use` made orders-service-40UR29jU-py3.12 for this project."""
    assert poetry_environment_name("Orders-Service", Path("/tmp/poetry-check/Orders Service")) == (
        "orders-service-40UR29jU"
    )
    assert poetry_environment_name('a b$c`d!e*f@g"h\\i', Path("/x")).startswith("a_b_c_d_e_f_g_h_i-")


def test_interpreters_are_found_on_path_in_pyenvs_versions_and_among_uvs(tmp_path):
    python312 = requires("3.12")
    python313 = requires("3.13")
    pyenv = tmp_path / "pyenv"
    for version in ("3.12.0", "3.12.1", "3.12-dev"):
        (pyenv / "versions" / version / "bin").mkdir(parents=True)
        (pyenv / "versions" / version / "bin" / "python3.12").symlink_to(python312)
    uv = tmp_path / "uv-python"
    for folder in ("cpython-3.13.0-linux-x86_64-gnu", "cpython-3.13.1+freethreaded-linux-x86_64-gnu"):
        (uv / folder / "bin").mkdir(parents=True)
        (uv / folder / "bin" / "python3.13").symlink_to(python313)
    environ = {"PATH": "", "HOME": str(tmp_path), "PYENV_ROOT": str(pyenv), "UV_PYTHON_INSTALL_DIR": str(uv)}
    assert find_interpreter("3.12", environ) == pyenv / "versions" / "3.12.1" / "bin" / "python3.12"
    assert find_interpreter("3.13", environ) == uv / "cpython-3.13.0-linux-x86_64-gnu" / "bin" / "python3.13"
    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "python3.12").symlink_to(python312)
    assert find_interpreter("3.12", {**environ, "PATH": str(on_path)}) == on_path / "python3.12"
    assert find_interpreter("3.11" if OWN != "3.11" else "3.10", {"PATH": "", "HOME": str(tmp_path)}) is None
    assert find_interpreter(OWN, {"PATH": "", "HOME": str(tmp_path)}) == Path(sys.executable)


# --- --python ----------------------------------------------------------------------------------------
def test_python_option_takes_a_venv_its_interpreter_or_a_plain_interpreter(tmp_path, tinyprice_wheel):
    python312 = requires("3.12")
    venv = make_venv(tmp_path / "env", python312, [tinyprice_wheel])
    expected = PythonEnvironment(
        prefix=venv,
        origin="--python",
        version="3.12",
        interpreter=venv / "bin" / "python",
        site_dirs=(venv / "lib" / "python3.12" / "site-packages",),
    )
    assert environment_from_python_option(venv, os.environ) == expected
    assert environment_from_python_option(venv / "bin" / "python", os.environ) == expected
    plain = environment_from_python_option(Path(python312), os.environ)
    assert (plain.prefix, plain.version, plain.interpreter, plain.site_dirs) == (
        Path(python312).parent.parent,
        "3.12",
        Path(python312),
        (Path(python312).parent.parent / "lib" / "python3.12" / "site-packages",),
    )
    handler = function(
        tmp_path / "fn", "python3.13", "import tinyprice\n\ndef handler(e, c):\n    return 1\n"
    )
    planned = plan_function(handler, python=venv, environ=os.environ)
    assert (planned.interpreter, planned.version, planned.matched) == (venv / "bin" / "python", "3.12", False)


def test_python_option_mistakes_are_one_line_with_the_fix(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    text.chmod(0o755)
    (tmp_path / "empty").mkdir()
    fix = "Pass the path of a Python interpreter or of a virtualenv folder."
    cases = {
        tmp_path / "nope": f"--python {tmp_path / 'nope'}: there is no such file or folder. {fix}",
        text: f"--python {text}: {text} does not run as a Python interpreter here. {fix}",
        tmp_path / "empty": f"--python {tmp_path / 'empty'} is a folder without bin/python. {fix}",
    }
    for path, message in cases.items():
        with pytest.raises(PlldbError) as error:
            environment_from_python_option(path, os.environ)
        assert error.value.one_line() == message


# --- Missing packages ---------------------------------------------------------------------------------
NEEDS_TINYPRICE = """
    import tinyprice


    def handler(event, context):
        return tinyprice.total([])
"""


def test_a_missing_dependency_fails_as_in_lambda_and_says_how_to_install_it(tmp_path):
    python313 = requires("3.13")
    project = tmp_path / "shop"
    venv = make_venv(project / ".venv", python313)
    handler = function(project / "price", "python3.13", NEEDS_TINYPRICE, project)
    (handler.code_dir / "requirements.txt").write_text("tinyprice==1.0.0\n")
    outcome = run(handler, environ={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"]})
    error = outcome["result"].error
    assert (error["errorType"], error["errorMessage"]) == (
        "Runtime.ImportModuleError",
        "Unable to import module 'app': No module named 'tinyprice'",
    )
    assert outcome["warnings"] == [
        f"Fn: 'tinyprice' is not installed in {venv} (the .venv beside the template), the environment plldb "
        f"uses for it; {handler.code_dir / 'requirements.txt'} lists the function's dependencies. Install them "
        f"with: {venv / 'bin' / 'python'} -m pip install -r {handler.code_dir / 'requirements.txt'}"
    ]


def test_without_any_environment_the_hint_says_how_to_make_one(tmp_path):
    handler = function(tmp_path / "fn", None, NEEDS_TINYPRICE, tmp_path)
    outcome = run(handler, environ={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert outcome["result"].error["errorType"] == "Runtime.ImportModuleError"
    assert outcome["warnings"] == [
        "Fn: 'tinyprice' is not installed: plldb found no environment for the project (no active virtualenv, "
        "no .venv beside the template or at the project root, no uv or Poetry environment); there is no "
        f"requirements.txt next to its code in {handler.code_dir}. Create one with: python{OWN} -m venv "
        f"{tmp_path / '.venv'} && {tmp_path / '.venv' / 'bin' / 'python'} -m pip install PACKAGE"
    ]


def test_a_missing_handler_module_or_a_late_import_error(tmp_path):
    missing = LocalFunction("Fn", tmp_path, "nowhere.handler", None, {}, [], 3, 128, template_dir=tmp_path)
    outcome = run(missing, extra_sys_path=[])
    assert (
        outcome["result"].error["errorMessage"]
        == "Unable to import module 'nowhere': No module named 'nowhere'"
    )
    assert outcome["warnings"] == []  # Lambda's message says it all
    uv_env = fake_venv(tmp_path / ".venv", OWN, uv="0.5.1")
    late = function(tmp_path / "late", None, "def handler(e, c):\n    import yaml\n", tmp_path)
    outcome = run(late, environ={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert (outcome["result"].error["errorType"], outcome["result"].error["errorMessage"]) == (
        "ModuleNotFoundError",
        "No module named 'yaml'",
    )
    assert outcome["warnings"] == [
        f"Fn: 'yaml' is not installed in {uv_env} (the .venv beside the template), the environment plldb uses "
        f"for it; there is no requirements.txt next to its code in {late.code_dir}. Install the package that "
        f"provides it with: uv pip install --python {uv_env / 'bin' / 'python'} PACKAGE"
    ]


def test_the_projects_own_sdk_wins_over_the_one_lambda_provides(tmp_path):
    venv = fake_venv(tmp_path / ".venv", OWN)
    (venv / "lib" / f"python{OWN}" / "site-packages" / "boto3.py").write_text("WHO = 'project'\n")
    handler = function(
        tmp_path / "fn",
        None,
        "import boto3, botocore\n\ndef handler(e, c):\n    return [getattr(boto3, 'WHO', 'runtime'), botocore.__file__]\n",
        tmp_path,
    )
    outcome = run(handler, environ={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    who, botocore_file = json.loads(outcome["result"].payload)
    assert who == "project"
    assert Path(botocore_file).parent.parent.name == "runtime"
