"""Code that runs inside Lambda may use only the standard library and boto3, on Python 3.10 to 3.13.

That is the layer, the helper stack's handlers and what they share: plldb/protocol.py,
plldb/lambda_common.py, plldb/lambda_python/ (the runtime's behaviour, which the layer reproduces) and
plldb/instrumentation/ (the manager restores functions with it).
"""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plldb import protocol
from plldb.bootstrap import packaging

ROOT = Path(__file__).resolve().parent.parent
LAMBDA_SIDE_FILES = sorted(
    [
        ROOT / "plldb" / "__init__.py",
        ROOT / "plldb" / "protocol.py",
        ROOT / "plldb" / "lambda_common.py",
        ROOT / "plldb" / "bootstrap" / "__init__.py",
        *(ROOT / "plldb" / "bootstrap" / "cloudformation").rglob("*.py"),
        *(ROOT / "plldb" / "instrumentation").rglob("*.py"),
        *(ROOT / "plldb" / "lambda_python").rglob("*.py"),
    ]
)
LAMBDA_SIDE_MODULES = {
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in LAMBDA_SIDE_FILES
}
THIRD_PARTY_ALLOWED = {"boto3", "botocore", "jmespath"}  # jmespath: a dependency of botocore
LAMBDA_PYTHONS = ["python3.10", "python3.11", "python3.12", "python3.13"]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            for alias in node.names:
                # `from plldb import protocol` imports the module plldb.protocol; `from json import dumps` a name.
                candidate = f"{name}.{alias.name}"
                modules.add(candidate if _is_project_module(candidate) else name)
    return modules


def _is_project_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _allowed(module: str) -> bool:
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top in THIRD_PARTY_ALLOWED or top == "__future__":
        return True
    if top == "plldb":
        return module in LAMBDA_SIDE_MODULES
    return False


def _lambda_python(name: str) -> str | None:
    """The interpreter for a Lambda Python version: on PATH, or installed by pyenv."""
    candidates = [
        shutil.which(name),
        *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{name[6:]}*/bin/{name}"))),
    ]
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.parametrize("path", LAMBDA_SIDE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_lambda_side_module_imports_only_stdlib_boto3_and_lambda_side_modules(path: Path) -> None:
    forbidden = sorted(m for m in _imported_modules(path) if not _allowed(m))
    assert forbidden == [], f"{path.relative_to(ROOT)} imports {forbidden}"


@pytest.mark.parametrize("path", LAMBDA_SIDE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_lambda_side_module_parses_as_python_3_10(path: Path) -> None:
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 10))


@pytest.mark.parametrize("python", LAMBDA_PYTHONS)
def test_lambda_side_code_compiles_and_its_stdlib_modules_import_on_each_lambda_python(
    python: str, tmp_path: Path
) -> None:
    executable = _lambda_python(python)
    if executable is None:
        pytest.skip(f"{python} is not installed on this machine")
    files = [str(p) for p in LAMBDA_SIDE_FILES]
    script = (
        "import sys, py_compile\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "for f in sys.argv[1:]:\n"
        f"    py_compile.compile(f, cfile={str(tmp_path / 'c.pyc')!r}, doraise=True)\n"
        "import plldb.protocol, plldb.lambda_common, plldb.instrumentation.decisions\n"
        "print(plldb.protocol.PROTOCOL_VERSION)\n"
    )
    result = subprocess.run([executable, "-c", script, *files], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(protocol.PROTOCOL_VERSION)


def test_every_file_packaged_into_lambda_is_checked_here() -> None:
    assert set(packaging.LAMBDA_SOURCE_FILES) <= set(LAMBDA_SIDE_FILES)
    assert {
        ROOT / "plldb" / "lambda_common.py",
        ROOT / "plldb" / "instrumentation" / "decisions.py",
        ROOT / "plldb" / "instrumentation" / "functions.py",
        ROOT / "plldb" / "instrumentation" / "lambda_updates.py",
        ROOT / "plldb" / "instrumentation" / "stacks.py",
        ROOT / "plldb" / "lambda_python" / "marshalling.py",
    } <= set(LAMBDA_SIDE_FILES)


def test_the_checker_rejects_a_third_party_import(tmp_path: Path) -> None:
    assert not _allowed("requests")
    assert not _allowed("plldb.local.worker")
    assert not _allowed("plldb.cli")
    assert not _allowed("plldb.local.instrument")
    assert _allowed("plldb.instrumentation.decisions")
    assert _allowed("plldb.lambda_common")
    assert _allowed("plldb.protocol")
    assert _allowed("json")
    assert _allowed("botocore.exceptions")
