"""The fixture apps run with `plldb invoke` as a developer runs them: each function from its code, on its
Python, with its project's packages; a `sam build` output mapped back to the source; `--python`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plldb.local.template import scan_template
from tests.local.fixtures.apps import build_wheel, lambda_python, make_shop_app, make_venv


def developer_environment() -> dict[str, str]:
    """This process's environment, as a developer's shell without an activated virtualenv."""
    return {name: value for name, value in os.environ.items() if name != "VIRTUAL_ENV"}


def plldb_invoke(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plldb", "invoke", *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=developer_environment(),
        timeout=120,
    )


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    python = lambda_python("3.13")
    if python is None or lambda_python("3.12") is None:
        pytest.skip("python3.12 and python3.13 are needed and not both installed on this machine")
    return make_shop_app(tmp_path_factory.mktemp("apps") / "shop", python)


def test_the_shop_template_maps_every_function_to_its_code(shop):
    scanned = scan_template(shop / "template.yaml")
    assert scanned.unavailable == {}
    assert {name: (f.code_dir, f.runtime) for name, f in scanned.local.items()} == {
        "PriceFunction": (shop / "price", "python3.13"),
        "NightlyFunction": (shop, "python3.12"),
        "FulfilFunction": (shop / "fulfil", "python3.12"),
    }
    assert scanned.local["NightlyFunction"].environment_names == frozenset({"SHOP_NAME", "QUEUE_URL"})


def test_a_function_with_dependencies_runs_on_313_with_the_projects_venv(shop):
    completed = plldb_invoke("PriceFunction", "--event", "events/order.json", cwd=shop)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {
        "order": "o-17",
        "total": 1125,
        "currency": "EUR",
        "python": "3.13",
        "tinyprice": str(
            shop / ".venv" / "lib" / "python3.13" / "site-packages" / "tinyprice" / "__init__.py"
        ),
    }
    assert completed.stderr == ""


def test_an_sqs_batch_reaches_the_function_and_its_logs_the_terminal(shop):
    completed = plldb_invoke("PriceFunction", "-e", "events/sqs.json", cwd=shop)
    assert (completed.returncode, json.loads(completed.stdout)) == (0, {"batchItemFailures": []})
    assert completed.stderr.splitlines() == ["priced o-18: 1050 EUR"]


def test_a_function_without_code_uri_runs_from_the_template_folder_on_312(shop):
    completed = plldb_invoke("NightlyFunction", "-e", "events/eventbridge.json", cwd=shop)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {
        "source": "shop.orders",
        "detail-type": "OrderPlaced",
        "shop": "corner-shop",
        "python": "3.12",
        "task_root": str(shop),
        "file": str(shop / "nightly.py"),
    }
    venv = shop / ".venv"
    assert completed.stderr.splitlines() == [
        f"Warning: NightlyFunction runs on Python 3.12: its packages in {venv} are for Python 3.13, so those "
        "with compiled code may not import on Python 3.12."
    ]


def test_a_missing_dependency_is_lambdas_import_error_and_one_line_on_how_to_install_it(shop, tmp_path):
    bare = tmp_path / "shop"
    shutil.copytree(shop, bare, ignore=shutil.ignore_patterns(".venv"))
    completed = plldb_invoke("PriceFunction", "-e", "events/order.json", cwd=bare)
    assert completed.returncode == 1
    error = json.loads(completed.stdout)
    assert (error["errorType"], error["errorMessage"]) == (
        "Runtime.ImportModuleError",
        "Unable to import module 'app': No module named 'tinyprice'",
    )
    requirements = bare / "price" / "requirements.txt"
    assert completed.stderr.splitlines() == [
        "[ERROR] Runtime.ImportModuleError: Unable to import module 'app': No module named 'tinyprice'",
        "Traceback (most recent call last):",
        "Warning: PriceFunction: 'tinyprice' is not installed: plldb found no environment for the project (no "
        "active virtualenv, no .venv beside the template or at the project root, no uv or Poetry environment); "
        f"{requirements} lists the function's dependencies. Create one with: python3.13 -m venv {bare / '.venv'} "
        f"&& {bare / '.venv' / 'bin' / 'python'} -m pip install -r {requirements}",
    ]


def test_python_option_runs_the_function_with_that_environment(shop, tmp_path):
    python312 = lambda_python("3.12")
    assert python312 is not None
    wheel = build_wheel(shop / "packages" / "tinyprice", tmp_path / "wheels")
    other = make_venv(tmp_path / "other-env", python312, [wheel])
    completed = plldb_invoke("PriceFunction", "-e", "events/order.json", "--python", str(other), cwd=shop)
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout)
    assert (answer["python"], answer["tinyprice"]) == (
        "3.12",
        str(other / "lib" / "python3.12" / "site-packages" / "tinyprice" / "__init__.py"),
    )
    assert completed.stderr.splitlines() == [
        "Warning: No Python matching the Runtime was found for 1 function, run here on another version, where "
        "behaviour that differs between the versions may show: PriceFunction (python3.13) on Python 3.12 "
        f"({other / 'bin' / 'python'}). Install Python 3.13 ('pyenv install 3.13' or 'uv python install 3.13'), "
        "or pass --python."
    ]
    wrong = plldb_invoke("PriceFunction", "--python", str(tmp_path / "nope"), cwd=shop)
    assert (wrong.returncode, wrong.stdout, wrong.stderr) == (
        1,
        "",
        f"Error: --python {tmp_path / 'nope'}: there is no such file or folder. "
        "Pass the path of a Python interpreter or of a virtualenv folder.\n",
    )


def test_sam_builds_output_runs_the_source(shop, tmp_path):
    """`-t .aws-sam/build/template.yaml` (as `sam local` defaults to) still runs the source, not the copy."""
    built = tmp_path / "shop"
    shutil.copytree(shop, built, symlinks=True)
    build = built / ".aws-sam" / "build"
    (build / "FulfilFunction").mkdir(parents=True)
    (build / "FulfilFunction" / "app.py").write_text(
        "def handler(event, context):\n    return 'stale build copy'\n"
    )
    (build / "template.yaml").write_text(
        "Transform: AWS::Serverless-2016-10-31\nResources:\n  FulfilFunction:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {CodeUri: FulfilFunction, Handler: app.handler, Runtime: python3.12}\n"
    )
    event = '{"order": "o-1", "total": 5}'
    (built / "event.json").write_text(event)
    completed = plldb_invoke(
        "FulfilFunction", "-t", ".aws-sam/build/template.yaml", "-e", "event.json", cwd=built
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"order": "o-1", "total": 5, "shipped": True}
