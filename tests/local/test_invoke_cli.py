"""`plldb invoke`: the command run as a real process, including a debugging session over DAP."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest

from tests.dap import attach_to_debugpy, follow_subprocess
from tests.local.fixtures.apps import copy_app, lambda_python

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATE = FIXTURES / "sam_app" / "template.yaml"
DAP_TIMEOUT = 60


@pytest.fixture
def sam_app(tmp_path) -> Path:
    """A copy of the fixture app outside this repository, whose own .venv would be its project's."""
    return copy_app(FIXTURES / "sam_app", tmp_path / "sam_app")


def developer_environment() -> dict[str, str]:
    """This process's environment, as a developer's shell without an activated virtualenv."""
    return {name: value for name, value in os.environ.items() if name != "VIRTUAL_ENV"}


def plldb_invoke(
    *arguments: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plldb", "invoke", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=developer_environment(),
        timeout=120,
    )


def test_invoke_prints_the_result_and_logs_separately(tmp_path, sam_app):
    event = tmp_path / "event.json"
    event.write_text('{"id": "o-17"}')
    completed = plldb_invoke(
        "CreateOrderFunction", "--template", str(sam_app / "template.yaml"), "--event", str(event)
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {
        "order": "o-17",
        "common": "common",
        "extra": "extra",
        "function": "CreateOrderFunction",
    }
    local = f"{sys.version_info[0]}.{sys.version_info[1]}"
    expected_stderr = (
        []
        if lambda_python("3.12") or local == "3.12"
        else [
            "Warning: No Python matching the Runtime was found for 1 function, run here on another version, "
            "where behaviour that differs between the versions may show: CreateOrderFunction (python3.12) on "
            f"Python {local} ({sys.executable}). Install Python 3.12 ('pyenv install 3.12' or "
            "'uv python install 3.12'), or pass --python."
        ]
    )
    assert completed.stderr.splitlines() == expected_stderr


def test_invoke_reads_the_event_from_stdin_and_nested_functions(tmp_path):
    completed = plldb_invoke(
        "Reports/Archive/ArchiveFunction",
        "--template",
        str(TEMPLATE),
        "--event",
        "-",
        stdin='{"ids": [1, 2, 3]}',
    )
    assert (completed.returncode, completed.stdout) == (0, '{"archived": 3}\n')


def test_invoke_uses_template_in_current_folder_and_env_vars_file(tmp_path):
    code = tmp_path / "src"
    code.mkdir()
    (code / "app.py").write_text(
        "import os\n\n\ndef handler(event, context):\n"
        "    print('log line')\n"
        "    return {name: os.environ.get(name) for name in ('MODE', 'LEVEL', 'EXTRA')}\n"
    )
    (tmp_path / "template.yaml").write_text(
        "Transform: AWS::Serverless-2016-10-31\nResources:\n  Fn:\n    Type: AWS::Serverless::Function\n"
        "    Properties:\n      CodeUri: src\n      Handler: app.handler\n"
        "      Environment:\n        Variables: {MODE: template, LEVEL: info}\n"
    )
    (tmp_path / "env.json").write_text(
        json.dumps({"Parameters": {"LEVEL": "debug"}, "Fn": {"EXTRA": 5, "MODE": "file"}})
    )
    completed = plldb_invoke("Fn", "--env-vars", "env.json", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    # As sam local invoke: the file sets the variables the template declares, and only those.
    assert json.loads(completed.stdout) == {"MODE": "file", "LEVEL": "debug", "EXTRA": None}
    assert completed.stderr.splitlines() == [
        "Warning: env.json sets EXTRA, which the template does not declare for Fn; like sam local invoke, plldb "
        "ignores them. Declare them under the function's Environment.Variables to set them.",
        "log line",
    ]


def test_function_error_exits_1_with_the_error_json(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("def handler(event, context):\n    raise KeyError('sku')\n")
    (tmp_path / "template.yaml").write_text(
        "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {CodeUri: src, Handler: app.handler, Runtime: python3.11}\n"
    )
    completed = plldb_invoke("Fn", cwd=tmp_path)
    assert completed.returncode == 1
    error = json.loads(completed.stdout)
    assert (error["errorType"], error["errorMessage"]) == ("KeyError", "'sku'")
    assert error["stackTrace"] == [
        f"  File \"{tmp_path / 'src' / 'app.py'}\", line 2, in handler\n    raise KeyError('sku')\n"
    ]
    assert "[ERROR] KeyError: 'sku'" in completed.stderr


def test_unknown_logical_id_lists_the_available_ones():
    completed = plldb_invoke("Nope", "--template", str(TEMPLATE))
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert completed.stderr == (
        f"Error: No function 'Nope' in {TEMPLATE}. Available: CreateOrderFunction, GetOrderFunction, "
        "IsolatedFunction, Legacy/LegacyFunction, PlainFunction, Reports/Archive/ArchiveFunction, "
        "Reports/DailyReportFunction.\n"
    )


def test_function_without_local_source_says_why():
    completed = plldb_invoke("NodeFunction", "--template", str(TEMPLATE))
    assert (completed.returncode, completed.stderr) == (
        1,
        "Error: NodeFunction cannot run locally (runtime nodejs20.x is not Python).\n",
    )


def test_invalid_event_is_refused(tmp_path):
    completed = plldb_invoke("GetOrderFunction", "--template", str(TEMPLATE), "--event", "-", stdin="{oops")
    assert completed.returncode == 1
    assert completed.stderr.startswith("Error: The event in stdin is not valid JSON: Expecting property name")


def test_invoke_keeps_debugpy_on_this_machine_unless_told_otherwise():
    """The same guard as attach: debugpy has no authentication, so another host needs the explicit flag."""
    completed = plldb_invoke(
        "PlainFunction", "--template", str(TEMPLATE), "--debugpy", "--debugpy-host", "0.0.0.0"
    )
    assert (completed.returncode, completed.stdout) == (1, "")
    assert completed.stderr == (
        "Error: --debugpy-host 0.0.0.0 would let other machines connect to debugpy, which has no "
        "authentication: anyone who can reach the port could run any code as you. Add "
        "--debugpy-allow-remote if that is what you want; to debug from another machine safely, keep "
        "127.0.0.1 and forward the port over SSH (ssh -L 5678:127.0.0.1:5678).\n"
    )


def test_invoke_and_attach_offer_the_same_debugger_options():
    from plldb.cli.attach import attach
    from plldb.cli.invoke import invoke

    def debugger_options(command):
        names = {"use_debugpy", "debugpy_host", "debugpy_allow_remote", "debugpy_port", "wait_for_client"}
        return {p.name: (p.opts, p.help) for p in command.params if p.name in names | {"pycharm_address"}}

    assert debugger_options(invoke) == debugger_options(attach)
    assert len(debugger_options(invoke)) == 6


def test_debugpy_wait_for_client_then_breakpoint_in_the_worker(tmp_path, sam_app):
    """The worker runs on the function's Runtime (python3.12), another Python than plldb's, under debugpy."""
    event = tmp_path / "event.json"
    event.write_text('{"id": "o-42", "note": "debug me"}')
    handler_file = sam_app / "src" / "create_order" / "app.py"
    breakpoint_line = next(
        number for number, line in enumerate(handler_file.read_text().splitlines(), 1) if "return {" in line
    )
    stdout_file = tmp_path / "stdout.txt"
    with stdout_file.open("w") as stdout:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plldb",
                "invoke",
                "CreateOrderFunction",
                "--template",
                str(sam_app / "template.yaml"),
                "--event",
                str(event),
                "--debugpy",
                "--debugpy-port",
                "0",
                "--wait-for-client",
            ],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=developer_environment(),
        )
    stderr_lines: list[str] = []
    clients = []
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        while first.startswith("Warning: No Python matching the Runtime"):  # without python3.12 here
            first = process.stderr.readline()
        match = re.fullmatch(
            r"debugpy is listening on 127\.0\.0\.1:(\d+) \(VS Code: 'Python Debugger: Remote Attach'\)\.\n",
            first,
        )
        assert match, first
        port = int(match.group(1))
        reader = threading.Thread(target=lambda: stderr_lines.extend(process.stderr), daemon=True)
        reader.start()
        parent = attach_to_debugpy("127.0.0.1", port, DAP_TIMEOUT)
        clients.append(parent)
        child = follow_subprocess(
            parent, "127.0.0.1", port, {str(handler_file): [breakpoint_line]}, DAP_TIMEOUT
        )
        clients.append(child)
        stopped = child.wait_for_event("stopped", timeout=DAP_TIMEOUT)
        variables = child.variables_of_top_frame(stopped["threadId"])
        event_fields = child.children(variables["event"]["variablesReference"])
        assert event_fields["'id'"]["value"] == "'o-42'"
        assert event_fields["'note'"]["value"] == "'debug me'"
        assert "function_name=CreateOrderFunction" in variables["context"]["value"]
        # Even under the debugger, the handler's path has nothing of plldb's but the debugger's own code.
        frames = child.request("stackTrace", {"threadId": stopped["threadId"], "startFrame": 0, "levels": 1})
        answer = child.request(
            "evaluate",
            {
                "expression": "__import__('json').dumps([__import__('sys').version_info[:2], __import__('sys').path])",
                "frameId": frames["stackFrames"][0]["id"],
                "context": "repl",
            },
        )
        version, path = json.loads(ast.literal_eval(answer["result"]))
        plldb_site_packages = sysconfig.get_paths()["purelib"]
        debugger = os.path.join(plldb_site_packages, "debugpy")
        assert [
            entry
            for entry in path
            if not entry.startswith(debugger) and entry.startswith((plldb_site_packages, str(ROOT)))
        ] == []
        assert any(entry.startswith(debugger) for entry in path)  # the debugger's own code, after the rest
        assert path[0] == str(handler_file.parent)
        assert version == ([3, 12] if lambda_python("3.12") else list(sys.version_info[:2]))
        child.request("continue", {"threadId": stopped["threadId"]})
        assert process.wait(DAP_TIMEOUT) == 0
    finally:
        for client in clients:
            client.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert json.loads(stdout_file.read_text())["order"] == "o-42"
    assert any(line.startswith("Waiting for a debugger to attach to 127.0.0.1:") for line in stderr_lines)


def _aws_settings_app(folder: Path) -> Path:
    """A function that returns the AWS settings its process sees."""
    (folder / "src").mkdir()
    (folder / "src" / "app.py").write_text(
        "import os\n\n\ndef handler(event, context):\n"
        "    names = ('AWS_PROFILE', 'AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_ACCESS_KEY_ID', 'AWS_ROLE_ARN')\n"
        "    return {'arn': context.invoked_function_arn, **{n: os.environ.get(n) for n in names}}\n"
    )
    (folder / "template.yaml").write_text(
        "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {CodeUri: src, Handler: app.handler}\n"
    )
    (folder / "config").write_text("[profile dev]\nregion = eu-west-1\n")
    return folder / "config"


def _settings_seen(folder: Path, *options: str) -> dict:
    """What the handler of ``_aws_settings_app`` saw, run by ``plldb invoke Fn`` with ``options``."""
    completed = plldb_invoke("Fn", *options, cwd=folder)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def _settings(region: str, profile: str | None, access_key: str | None) -> dict:
    return {
        "arn": f"arn:aws:lambda:{region}:123456789012:function:Fn",
        "AWS_PROFILE": profile,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_ROLE_ARN": None,
    }


def test_profile_and_region_choose_the_handlers_aws_settings_over_the_shells(tmp_path, monkeypatch):
    """As on the AWS CLI and sam local invoke, --profile and --region win over the shell's variables."""
    config = _aws_settings_app(tmp_path)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASHELLCREDENTIAL0")
    monkeypatch.setenv("AWS_REGION", "us-east-2")
    monkeypatch.setenv("AWS_PROFILE", "nosuch")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    seen = _settings_seen(tmp_path, "--profile", "dev", "--region", "ap-southeast-3")
    assert seen == _settings("ap-southeast-3", "dev", None)
    # The profile's region applies where neither --region nor the shell names one, as on the AWS CLI.
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/ci")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(tmp_path / "token"))
    assert _settings_seen(tmp_path, "--profile", "dev") == _settings("eu-west-1", "dev", None)
    # Without them, the shell's settings are the handler's.
    monkeypatch.delenv("AWS_PROFILE")
    monkeypatch.delenv("AWS_ROLE_ARN")
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE")
    monkeypatch.setenv("AWS_REGION", "us-east-2")
    assert _settings_seen(tmp_path) == _settings("us-east-2", None, "AKIASHELLCREDENTIAL0")


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        (
            "--profile",
            "nosuch",
            "Error: AWS profile 'nosuch' (--profile) was not found. "
            "Check ~/.aws/config, or run 'aws configure --profile NAME'.\n",
        ),
        (
            "--region",
            "mars-1",
            "Error: 'mars-1' is not an AWS region name. Pass --region as the AWS CLI takes it, e.g. us-east-1.\n",
        ),
    ],
)
def test_an_unknown_profile_or_region_is_one_line_naming_the_fix(tmp_path, monkeypatch, option, value, error):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(_aws_settings_app(tmp_path)))
    completed = plldb_invoke("Fn", option, value, cwd=tmp_path)
    assert (completed.returncode, completed.stdout, completed.stderr) == (1, "", error)
