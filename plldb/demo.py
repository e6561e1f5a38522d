"""`plldb demo`: plldb's whole job, end to end, on the offline local cloud.

It runs the same commands a user types (as subprocesses, with the local cloud's environment) and
checks the one promise that matters most: after detach every function is exactly as before.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from plldb.errors import PlldbError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hello-sam"
STACK_NAME = "hello-sam"
# What plldb changes on attach and must put back on detach.
RESTORED_FIELDS = ("Environment", "Layers", "Timeout", "Handler", "Runtime", "MemorySize", "Role")


def _say(text: str = "", *, bold: bool = False) -> None:
    click.secho(text, bold=bold and not os.environ.get("NO_COLOR"))


def _indent(line: str) -> str:
    return "    " + line


def _plldb(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "plldb", *arguments]


def _run_step(command: list[str], env: dict[str, str], cwd: Path, *, progress: bool = True) -> None:
    """Run one command, its output shown indented in the order it came; without ``progress`` its
    step-by-step lines (stderr) are shown only if it fails."""
    _say(f"  $ plldb {' '.join(command[3:])}")
    process = subprocess.run(
        command,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if progress else subprocess.PIPE,
        text=True,
        timeout=300,
        check=False,
    )
    shown = process.stdout + ("" if progress or process.returncode == 0 else process.stderr)
    for line in shown.splitlines():
        _say(_indent(line))
    if process.returncode != 0:
        raise PlldbError(
            f"'plldb {command[3]}' failed with exit code {process.returncode}.", "See its output above."
        )


class _Attached:
    """`plldb attach` running in the background, its output shown indented."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path) -> None:
        _say(f"  $ plldb {' '.join(command[3:])}")
        self.ready = threading.Event()
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            command,
            env={**env, "NO_COLOR": "1", "COLUMNS": "120"},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            _say(_indent(line))
            if line.startswith("Ready:"):
                self.ready.set()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise PlldbError("'plldb attach' did not become ready.", "See its output above.")

    def detach(self, timeout: float) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise PlldbError("'plldb attach' did not detach in time.", "See its output above.")
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _function_configurations(lambda_client: Any, cloudformation: Any) -> dict[str, dict[str, Any]]:
    resources = cloudformation.list_stack_resources(StackName=STACK_NAME)["StackResourceSummaries"]
    names = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in resources
        if r["ResourceType"] == "AWS::Lambda::Function"
    }
    configurations = {}
    for logical_id, name in sorted(names.items()):
        configuration = lambda_client.get_function_configuration(FunctionName=name)
        configurations[logical_id] = {field: configuration.get(field) for field in RESTORED_FIELDS}
        configurations[logical_id]["FunctionName"] = name
    return configurations


def _invoke(lambda_client: Any, name: str, event: dict[str, Any]) -> tuple[str, float]:
    started = time.perf_counter()
    response = lambda_client.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    elapsed = (time.perf_counter() - started) * 1000
    payload = response["Payload"].read().decode()
    if response.get("FunctionError"):
        payload = f"[{response['FunctionError']} error] {payload}"
    return payload, elapsed


# A script that reads top to bottom as the steps it prints.
def run_demo(interactive: bool = False, port: int = 4566, gateway_port: int = 4510) -> None:  # noqa: PLR0915
    from plldb.cli.localcloud import busy_ports, busy_ports_error
    from plldb.localcloud.cloud import LocalCloud

    started = time.monotonic()
    _say("plldb demo: the whole flow on an offline local cloud (no AWS account involved)", bold=True)
    _say()
    _say("[1/6] Starting the local cloud (AWS APIs, Lambda, API Gateway WebSocket on 127.0.0.1)", bold=True)
    ports = (
        {"--port": port, "--gateway-port": gateway_port}
        if interactive
        else {"--port": 0, "--gateway-port": 0}
    )
    busy = busy_ports(ports)
    if busy:
        raise busy_ports_error(busy)
    work = Path(tempfile.mkdtemp(prefix="plldb-demo-"))
    cloud = LocalCloud(work_dir=work / "cloud", port=ports["--port"], gateway_port=ports["--gateway-port"])
    try:
        cloud.start()
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise PlldbError(
            f"Could not start the local cloud: {exc}.", "Choose other ports with --port and --gateway-port."
        )
    env = {**os.environ, **cloud.environment()}
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    project = work / "hello-sam"
    attached: _Attached | None = None
    try:
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".aws-sam"))
        _say("  ready; clients reach it through AWS_ENDPOINT_URL and PLLDB_EXECUTE_API_ENDPOINT")
        _say()
        _say("[2/6] Deploying plldb's helper stack", bold=True)
        _run_step(_plldb("bootstrap", "setup"), env, project, progress=False)
        _say()
        _say(
            "[3/6] Deploying the example SAM app 'hello-sam' to the cloud (what `sam deploy` does)", bold=True
        )
        _run_step(
            _plldb("localcloud", "deploy", "--template", "template.yaml", "--stack-name", STACK_NAME),
            env,
            project,
            progress=False,
        )
        session = cloud.session()
        lambda_client = session.client("lambda", endpoint_url=cloud.endpoint_url)
        cloudformation = session.client("cloudformation", endpoint_url=cloud.endpoint_url)
        before = _function_configurations(lambda_client, cloudformation)
        _say()
        if interactive:
            _interactive(cloud, project, env, before)
            return
        _say("[4/6] Attaching: the cloud's invocations will now run here, from the local source", bold=True)
        attached = _Attached(_plldb("attach", "--stack-name", STACK_NAME), env, project)
        attached.wait_ready(timeout=90)
        _say()
        _say(
            "[5/6] Invoking the functions in the cloud (boto3 lambda.invoke, as any AWS caller would)",
            bold=True,
        )
        names = {logical_id: configuration["FunctionName"] for logical_id, configuration in before.items()}
        calls: list[tuple[str, dict[str, Any]]] = [
            ("HelloFunction", {"name": "newcomer"}),
            ("GoodbyeFunction", {"name": "newcomer"}),
            ("HelloFunction", {"fail": True}),
        ]
        for logical_id, event in calls:
            payload, elapsed = _invoke(lambda_client, names[logical_id], event)
            _say(f"  {logical_id} {json.dumps(event)} -> {payload}  ({elapsed:.0f} ms)")
        _edit_local_source(project / "hello" / "app.py")
        payload, elapsed = _invoke(lambda_client, names["HelloFunction"], {"name": "newcomer"})
        _say(f'  HelloFunction {{"name": "newcomer"}} -> {payload}  ({elapsed:.0f} ms)')
        if "(edited locally)" not in payload:
            raise PlldbError(
                "The cloud's answer did not come from the edited local source.", "See the output above."
            )
        _say("  the answer changed with the local file, without any deploy: the code ran here")
        _say()
        _say("[6/6] Detaching (Ctrl-C) and checking every function is exactly as before", bold=True)
        code = attached.detach(timeout=90)
        attached = None
        after = _function_configurations(lambda_client, cloudformation)
        _compare(before, after)
        if code != 0:
            raise PlldbError(f"'plldb attach' exited with code {code} on detach.", "See its output above.")
        _say()
        _say(f"Demo finished in {time.monotonic() - started:.0f} s. Next: README.md, then docs/.", bold=True)
    finally:
        if attached is not None:
            attached.kill()
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)


def _edit_local_source(path: Path) -> None:
    text = path.read_text()
    edited = text.replace('"message": ', '"message": "(edited locally) " + ', 1)
    if edited == text:
        raise PlldbError(f"Could not edit {path} for the demo.", "Restore examples/hello-sam from git.")
    path.write_text(edited)
    _say(f"  editing the local {path.parent.name}/{path.name} (not redeploying) ...")


def _compare(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> None:
    different = []
    for logical_id, configuration in before.items():
        same = after.get(logical_id) == configuration
        _say(
            f"  {'OK  ' if same else 'DIFF'} {logical_id}: environment, layers, timeout, role as before attach"
        )
        if not same:
            different.append(logical_id)
    if different:
        raise PlldbError(f"Not restored exactly: {', '.join(different)}.", "This is a bug; please report it.")


def _plldb_command() -> str:
    """How to run this plldb from another shell: `plldb` when it is on PATH, else its full path."""
    installed = Path(sys.executable).parent / "plldb"
    found = shutil.which("plldb")
    if found and Path(found).resolve() == installed.resolve():
        return "plldb"
    return str(installed) if installed.exists() else f"{sys.executable} -m plldb"


def _interactive(cloud: Any, project: Path, env: dict[str, str], before: dict[str, dict[str, Any]]) -> None:
    exports = "\n".join(f"    export {name}={value}" for name, value in cloud.environment().items())
    plldb = _plldb_command()
    _say(
        "The local cloud stays up with the helper stack and hello-sam deployed. In another shell:", bold=True
    )
    _say(exports)
    _say(f"    cd {EXAMPLE}")
    _say(f"    {plldb} attach --stack-name {STACK_NAME} --debugpy --write-vscode")
    _say(f"  then open that folder in VS Code, start 'plldb: {STACK_NAME}', set a breakpoint in")
    _say("  hello/app.py, and invoke the function 'in the cloud' from a third shell (same exports):")
    _say(
        f'    {plldb} localcloud invoke HelloFunction --stack-name {STACK_NAME} --payload \'{{"name": "you"}}\''
    )
    _say("Press Ctrl-C here to stop the local cloud.", bold=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
