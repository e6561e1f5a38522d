"""Record and replay end to end on the local cloud: `plldb attach` records invocations made in the cloud,
`plldb recordings` lists them, `plldb replay` runs them again (under a real DAP client too), and one
becomes a pytest regression test.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plldb import protocol
from plldb.bootstrap.deploy import setup
from plldb.local.recordings import REDACTED, recordings_folder
from plldb.localcloud.sam_deploy import deploy
from tests.attach.test_attach_e2e import EXAMPLE, AttachProcess
from tests.cloud_state import function_state, wait_for
from tests.dap import attach_to_debugpy, follow_subprocess
from tests.replay.replay_support import run_pytest

pytestmark = pytest.mark.slow

DAP_TIMEOUT = 60
MAX_COUNT = 4  # five invocations: the first one rotates out
# The raw payload of the last invocation, spaced and formatted as no JSON encoder would write it.
LAST_PAYLOAD = b'{ "name":"last",  "amount": 1.50, "tags": [ ] }'


@dataclass
class Call:
    function: str
    payload: bytes
    client_context: dict[str, Any] | None = None
    request_id: str = ""
    error: str | None = None
    answer: Any = None


@dataclass
class Attached:
    """A copy of examples/hello-sam, deployed, attached, invoked five times in the cloud, detached."""

    directory: Path
    stack_name: str
    hello: str
    goodbye: str
    calls: list[Call]
    events: list[dict[str, Any]]
    environment: dict[str, str]

    def call(self, index: int) -> Call:
        return self.calls[index]


def add_prints(source: Path) -> None:
    """The handler prints a line, and the role's credentials (as a careless handler might)."""
    text = source.read_text()
    edited = text.replace(
        '    name = event.get("name", "world")\n',
        '    name = event.get("name", "world")\n'
        '    print("hi", name)\n'
        '    print("role", *(os.environ.get(n) for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")))\n',
    )
    assert edited != text
    source.write_text(edited)


@pytest.fixture(scope="module")
def attached(local_cloud: Any, tmp_path_factory: pytest.TempPathFactory) -> Attached:
    session = local_cloud.session()
    setup(session, poll_seconds=0.2)
    directory = tmp_path_factory.mktemp("replay") / "hello-sam"
    shutil.copytree(EXAMPLE, directory, ignore=shutil.ignore_patterns(".aws-sam", "__pycache__", ".plldb"))
    add_prints(directory / "hello" / "app.py")
    stack_name = f"hello-{uuid.uuid4().hex[:8]}"
    outputs = deploy(session, directory / "template.yaml", stack_name)
    hello, goodbye = outputs["HelloFunctionName"], outputs["GoodbyeFunctionName"]

    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_")
        and name != protocol.EXECUTE_API_ENDPOINT_VARIABLE
        and name != "VIRTUAL_ENV"
    }
    environment.update(local_cloud.environment())
    no_config = tmp_path_factory.mktemp("no-aws-config")
    environment["AWS_CONFIG_FILE"] = str(no_config / "config")
    environment["AWS_SHARED_CREDENTIALS_FILE"] = str(no_config / "credentials")
    environment["NO_COLOR"] = "1"
    environment["TZ"] = "UTC"

    calls = [
        Call(hello, b'{"name": "rotated away"}'),
        Call(hello, b'{"name": "replay"}', client_context={"custom": {"tenant": "acme"}}),
        Call(hello, b'{"fail": true}'),
        Call(goodbye, b'{"name": "you"}'),
        Call(hello, LAST_PAYLOAD),
    ]
    attach = AttachProcess(
        directory, {**environment, "PLLDB_RECORDINGS_MAX_COUNT": str(MAX_COUNT)}, "--stack-name", stack_name
    )
    try:
        attach.wait_for("ready")
        client = local_cloud.client("lambda")
        for number, call in enumerate(calls, 1):
            extra = {}
            if call.client_context is not None:
                extra["ClientContext"] = base64.b64encode(json.dumps(call.client_context).encode()).decode()
            response = client.invoke(FunctionName=call.function, Payload=call.payload, **extra)
            call.error = response.get("FunctionError")
            call.answer = json.loads(response["Payload"].read())
            call.request_id = attach.wait_for("invocation_finished", count=number)[-1]["requestId"]
        # Recordings are written while attach runs (once each answer has left), not only when it stops.
        last = re.sub(r"[^A-Za-z0-9]", "", str(calls[-1].request_id))[:8]
        wait_for(
            lambda: next(recordings_folder(directory).glob(f"*-{last}.json"), None),
            "the last invocation's recording, written while attached",
        )
        assert attach.stop(signal.SIGINT) == 0
    finally:
        attach.close()
    return Attached(directory, stack_name, hello, goodbye, calls, list(attach.events), environment)


def plldb(attached: Attached, *arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plldb", *arguments],
        cwd=cwd or attached.directory,
        env=attached.environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def listed(attached: Attached, cwd: Path | None = None) -> list[dict[str, Any]]:
    completed = plldb(attached, "recordings", "--json", cwd=cwd)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def recording_of(attached: Attached, index: int) -> dict[str, Any]:
    (entry,) = [e for e in listed(attached) if e["requestId"] == attached.call(index).request_id]
    return json.loads(Path(entry["path"]).read_text())


def test_recordings_lists_the_invocations_newest_first_within_the_cap(attached):
    entries = listed(attached)
    assert [
        (e["requestId"], e["function"], e["functionName"], e["result"], e["errorType"]) for e in entries
    ] == [
        (attached.call(4).request_id, "HelloFunction", attached.hello, "ok", None),
        (attached.call(3).request_id, "GoodbyeFunction", attached.goodbye, "ok", None),
        (attached.call(2).request_id, "HelloFunction", attached.hello, "error", "ValueError"),
        (attached.call(1).request_id, "HelloFunction", attached.hello, "ok", None),
    ]
    assert {e["stack"] for e in entries} == {attached.stack_name}
    recording_event = next(e for e in attached.events if e["event"] == "recording")
    assert recording_event["folder"] == str(recordings_folder(attached.directory))
    completed = plldb(attached, "recordings", "--function", "Goodbye*")
    lines = completed.stdout.splitlines()
    assert lines[0].split() == ["ID", "FUNCTION", "TIME", "RESULT", "SIZE", "DURATION"]
    assert len(lines) == 2
    assert lines[1].split()[:2] == [entries[1]["id"], "GoodbyeFunction"]


def test_a_recording_holds_the_event_as_received_its_context_result_and_output(attached):
    last = recording_of(attached, 4)
    assert last["event"] == LAST_PAYLOAD.decode()
    assert last["function"] == {
        "logicalId": "HelloFunction",
        "name": attached.hello,
        "handler": "app.lambda_handler",
        "version": "$LATEST",
        "memoryMB": 256,
    }
    assert json.loads(last["outcome"]["result"]) == attached.call(4).answer
    assert last["output"][0] == {"stream": "stdout", "line": "hi last"}
    context = last["context"]
    assert context["requestId"] == attached.call(4).request_id
    assert context["invokedFunctionArn"].endswith(f":function:{attached.hello}")
    # Attached, the function's timeout is --function-timeout (900 s): the handler saw a budget under it.
    assert 0 < context["deadlineBudgetMs"] <= 900_000
    assert (context["clientContext"], context["cognitoIdentity"]) == (None, None)
    with_context = recording_of(attached, 1)
    assert json.loads(with_context["context"]["clientContext"]) == {"custom": {"tenant": "acme"}}
    failed = recording_of(attached, 2)
    assert failed["outcome"]["status"] == "error"
    assert (failed["outcome"]["error"]["errorType"], failed["outcome"]["error"]["errorMessage"]) == (
        "ValueError",
        "asked to fail",
    )
    # Names only by default: the function's own variables and Lambda's, never plldb's or credentials.
    assert "values" not in last["environment"]
    names = last["environment"]["names"]
    assert {"GREETING", "HELLO_SUFFIX", "AWS_REGION", "AWS_LAMBDA_FUNCTION_NAME"} <= set(names)
    assert [
        n for n in names if n.startswith(("PLLDB_", "DEBUGGER_", "AWS_ACCESS", "AWS_SECRET", "AWS_SESSION"))
    ] == []


def test_recordings_are_private_ignored_by_git_and_hold_no_credentials(attached, tmp_path):
    folder = recordings_folder(attached.directory)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert (folder / ".gitignore").read_text() == "*\n"
    files = sorted(folder.iterdir())
    assert len(files) == MAX_COUNT + 1  # and the .gitignore
    assert {stat.S_IMODE(path.stat().st_mode) for path in files} == {0o600}

    # The role's credentials the handler printed (the console shows what the handler prints).
    printed = [e["line"] for e in attached.events if e["event"] == "output" and e["line"].startswith("role ")]
    assert len(printed) == 3  # invocation 0 rotated out with its own
    credentials = {value for line in printed for value in line.split()[1:]}
    assert len(credentials) >= 3 and all(len(value) >= 16 for value in credentials)
    for path in files:
        text = path.read_text()
        for value in credentials:
            assert value not in text, f"{path.name} holds a credential"
    last = recording_of(attached, 4)
    assert last["output"][1] == {"stream": "stdout", "line": f"role {REDACTED} {REDACTED} {REDACTED}"}

    # As git sees the project (its repository kept apart, so the project folder is not changed).
    git = {**attached.environment, "GIT_DIR": str(tmp_path / "git"), "GIT_WORK_TREE": str(attached.directory)}
    subprocess.run(["git", "init", "-q"], env=git, cwd=tmp_path, check=True)
    shown = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        env=git,
        cwd=attached.directory,
        capture_output=True,
        text=True,
        check=True,
    )
    untracked = [line[3:] for line in shown.stdout.splitlines()]
    assert "template.yaml" in untracked
    assert [path for path in untracked if ".plldb" in path] == []


def test_replay_last_gives_the_same_result_as_in_the_cloud(attached):
    completed = plldb(attached, "replay", "--last")
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == attached.call(4).answer
    last_id = listed(attached)[0]["id"]
    assert re.search(
        rf"^Same result as recording {last_id} \(HelloFunction, ", completed.stderr, re.MULTILINE
    )

    completed = plldb(attached, "replay", attached.call(2).request_id)
    assert completed.returncode == 0, completed.stderr
    error = json.loads(completed.stdout)
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", "asked to fail")


def test_replay_stops_at_a_breakpoint_under_a_real_debugger(attached, tmp_path):
    handler_file = attached.directory / "hello" / "app.py"
    breakpoint_line = next(
        number for number, line in enumerate(handler_file.read_text().splitlines(), 1) if "return {" in line
    )
    recording_id = recording_of(attached, 1)["id"]
    stdout_file = tmp_path / "stdout.json"
    # stdout to a file: debugpy's adapter process inherits the pipes and outlives plldb while a client
    # is connected.
    with stdout_file.open("w") as stdout:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plldb",
                "replay",
                recording_id,
                "--debugpy",
                "--debugpy-port",
                "0",
                "--wait-for-client",
                "--write-vscode",
            ],
            cwd=attached.directory,
            env=attached.environment,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
    clients = []
    stderr_lines: list[str] = []
    reader = threading.Thread(target=lambda: None)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        while line.startswith("Warning: "):
            line = process.stderr.readline()
        match = re.fullmatch(
            r"debugpy is listening on 127\.0\.0\.1:(\d+) \(VS Code: 'Python Debugger: Remote Attach'\)\.\n",
            line,
        )
        assert match, line
        port = int(match.group(1))
        launch = attached.directory / ".vscode" / "launch.json"
        assert process.stderr.readline() == f"Added the attach entry to {launch}.\n"
        assert json.loads(launch.read_text()) == {
            "version": "0.2.0",
            "configurations": [
                {
                    "name": f"plldb: {attached.stack_name}",
                    "type": "debugpy",
                    "request": "attach",
                    "connect": {"host": "127.0.0.1", "port": port},
                    "justMyCode": False,
                }
            ],
        }
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
        assert variables["name"]["value"] == "'replay'"
        frames = child.request("stackTrace", {"threadId": stopped["threadId"], "startFrame": 0, "levels": 1})
        answer = child.request(
            "evaluate",
            {
                "expression": "(context.aws_request_id, context.client_context.custom)",
                "frameId": frames["stackFrames"][0]["id"],
                "context": "repl",
            },
        )
        assert answer["result"] == repr((attached.call(1).request_id, {"tenant": "acme"}))
        child.request("continue", {"threadId": stopped["threadId"]})
        assert process.wait(DAP_TIMEOUT) == 0
    finally:
        for client in clients:
            client.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(DAP_TIMEOUT)
    assert json.loads(stdout_file.read_text()) == attached.call(1).answer
    assert any(line.startswith(f"Same result as recording {recording_id} ") for line in stderr_lines)


def test_a_recording_becomes_a_regression_test(attached, tmp_path):
    project = tmp_path / "hello-sam"
    shutil.copytree(attached.directory, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "tests").mkdir()
    recording_id = recording_of(attached, 1)["id"]
    completed = plldb(attached, "replay", recording_id, "--to-test", "tests", cwd=project)
    assert completed.returncode == 0, completed.stderr
    (test_file,) = (project / "tests").glob("test_*.py")
    passed = run_pytest(test_file)
    assert passed.returncode == 0, passed.stdout

    handler = project / "hello" / "app.py"
    handler.write_text(handler.read_text().replace('"function": "hello"', '"function": "hello, changed"'))
    failed = run_pytest(test_file)
    assert failed.returncode == 1
    assert "E         {'function': 'hello, changed'} != {'function': 'hello'}" in failed.stdout.splitlines()

    completed = plldb(attached, "replay", recording_id, cwd=project)
    assert completed.returncode == 1
    assert completed.stderr.splitlines()[-11:] == [
        f"The result differs from recording {recording_id} (HelloFunction, {recording_time(recording_id)}):",
        "--- recorded",
        "+++ replayed",
        "@@ -1,6 +1,6 @@",
        " {",
        '   "result": {',
        '-    "function": "hello",',
        '+    "function": "hello, changed",',
        '     "greeting": "Hello",',
        '     "input": {',
        '       "name": "replay"',
    ]


def recording_time(recording_id: str) -> str:
    """How replay shows a recording's time (in the UTC the tests run with), from its id."""
    stamp = recording_id.split("-")[0]
    return f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}"


def copy_project(attached: Attached, destination: Path) -> Path:
    """Another checkout of the same project, without recordings: attach records into its own folder."""
    shutil.copytree(attached.directory, destination, ignore=shutil.ignore_patterns("__pycache__", ".plldb"))
    return destination


def attach_ready(attached: Attached, directory: Path, *options: str) -> AttachProcess:
    """`plldb attach` of HelloFunction with ``options`` in ``directory``, ready for invocations."""
    attach = AttachProcess(
        directory,
        attached.environment,
        "--stack-name",
        attached.stack_name,
        "-f",
        "HelloFunction",
        *options,
    )
    try:
        attach.wait_for("ready")
    except BaseException:
        attach.close()
        raise
    return attach


def test_record_env_keeps_the_values_and_replays_with_them(attached, local_cloud, tmp_path):
    project = copy_project(attached, tmp_path / "hello-sam")
    attach = attach_ready(attached, project, "--record-env")
    try:
        response = local_cloud.client("lambda").invoke(
            FunctionName=attached.hello, Payload=b'{"name": "env"}'
        )
        answer = json.loads(response["Payload"].read())
        attach.wait_for("invocation_finished")
        assert attach.stop(signal.SIGINT) == 0
    finally:
        attach.close()
    (entry,) = listed(attached, cwd=project)
    document = json.loads(Path(entry["path"]).read_text())
    values = document["environment"]["values"]
    assert (values["GREETING"], values["HELLO_SUFFIX"]) == ("Hello", "!")
    assert sorted(values) == document["environment"]["names"]
    assert [
        n for n in values if n.startswith(("PLLDB_", "DEBUGGER_", "AWS_ACCESS", "AWS_SECRET", "AWS_SESSION"))
    ] == []
    printed = next(
        e["line"] for e in attach.events if e["event"] == "output" and e["line"].startswith("role ")
    )
    text = Path(entry["path"]).read_text()
    assert [value for value in printed.split()[1:] if value in text] == []
    completed = plldb(attached, "replay", "--last", cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == answer


def test_no_record_writes_nothing_and_bad_settings_change_nothing(attached, local_cloud, tmp_path):
    project = copy_project(attached, tmp_path / "hello-sam")
    attach = attach_ready(attached, project, "--no-record")
    try:
        response = local_cloud.client("lambda").invoke(
            FunctionName=attached.hello, Payload=b'{"name": "quiet"}'
        )
        assert response.get("FunctionError") is None
        attach.wait_for("invocation_finished")
        assert attach.stop(signal.SIGINT) == 0
    finally:
        attach.close()
    assert attach.named("recording") == []
    assert not (project / ".plldb").exists()

    before = function_state(local_cloud, attached.hello)
    for options, environment, message in [
        (
            ("--no-record", "--record-env"),
            {},
            "Error: --record-env and --no-record cannot be used together. Pass only one of them.",
        ),
        (
            (),
            {"PLLDB_RECORDINGS_MAX_MB": "0"},
            "Error: PLLDB_RECORDINGS_MAX_MB must be a number of megabytes "
            "greater than 0, not '0'. Set it to 200 for example, or unset it.",
        ),
    ]:
        completed = subprocess.run(
            [sys.executable, "-m", "plldb", "attach", "--stack-name", attached.stack_name, *options],
            cwd=project,
            env={**attached.environment, **environment},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 1
        assert completed.stderr.splitlines()[-1] == message
        assert not (project / ".plldb").exists()
        assert function_state(local_cloud, attached.hello) == before
