"""What a developer waits for with the real `plldb attach`: attach and detach times, payload round trips.

For each function count N a SAM project of N no-op (echo) functions is generated in a temporary
folder and deployed with the local cloud's `sam deploy`. `python -m plldb attach --json` then runs as
a subprocess, exactly as a developer starts it:

* **attach time** — from starting the command to its ``ready`` event (every function instrumented);
* **detach time** — from SIGINT (Ctrl-C) to the command's exit after its ``detached`` event, with
  every function's configuration checked to be exactly as before.

While the one-function project is attached, invocations are answered by the real local worker:
no-op rounds interleaved with a plain (never instrumented) echo function give the end-to-end
overhead with a real worker, and events of 1 KB to 5 MB (echoed back, so the same size returns) give
the payload round trips.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml

from plldb import protocol
from plldb.bench.overhead import CLIENT_CONFIG, run_function_role, zipped
from plldb.bench.stats import percentile, summary

ECHO_CODE = "def handler(event, context):\n    return event\n"
READY_TIMEOUT_SECONDS = 300.0
DETACH_TIMEOUT_SECONDS = 300.0
TARGET_ATTACH_RATIO = 3.0  # attaching the most functions may take at most this multiple of attaching one
# What plldb changes on attach and must put back exactly on detach.
RESTORED_FIELDS = ("Environment", "Layers", "Timeout", "Handler", "Runtime", "MemorySize", "Role")
PAYLOAD_SIZES = {"1 KB": 1024, "100 KB": 100 * 1024, "1 MB": 1024 * 1024, "5 MB": 5 * 1024 * 1024}


@dataclass
class AttachPlan:
    function_counts: list[int]
    repetitions: int  # attach/detach cycles per function count
    worker_rounds: int  # no-op rounds answered by the real worker
    worker_warm_up_rounds: int  # first starts: both Lambda environments, the route handler, the worker
    payload_sizes: dict[str, int]
    payload_repetitions: int


def event_of_size(size: int) -> bytes:
    """A JSON object whose text is exactly ``size`` bytes."""
    shell = b'{"data":""}'
    return b'{"data":"' + b"x" * (size - len(shell)) + b'"}'


def write_project(directory: Path, count: int) -> list[str]:
    """A SAM project of ``count`` echo functions sharing one code folder; returns their logical ids."""
    (directory / "src").mkdir(parents=True)
    (directory / "src" / "app.py").write_text(ECHO_CODE, encoding="utf-8")
    logical_ids = [f"Echo{index:03d}" for index in range(1, count + 1)]
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Globals": {
            "Function": {"Runtime": "python3.13", "Timeout": 10, "Handler": "app.handler", "CodeUri": "src/"}
        },
        "Resources": {logical_id: {"Type": "AWS::Serverless::Function"} for logical_id in logical_ids},
        "Outputs": {f"{logical_id}Name": {"Value": {"Ref": logical_id}} for logical_id in logical_ids},
    }
    (directory / "template.yaml").write_text(yaml.safe_dump(template, sort_keys=False), encoding="utf-8")
    return logical_ids


@dataclass
class AttachProcess:
    """`python -m plldb attach --json` in a project folder; its events are timed as they arrive."""

    cwd: Path
    environment: dict[str, str]
    arguments: list[str]
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def start(self) -> float:
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "plldb", "attach", "--json", *self.arguments],
            cwd=self.cwd,
            env=self.environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._readers = [
            threading.Thread(target=self._read_events, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        return started

    def _read_events(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.append((time.monotonic(), json.loads(line)))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line.rstrip("\n"))

    def wait_for(self, name: str, timeout: float) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            for arrived, event in list(self.events):
                if event["event"] == name:
                    return arrived, event
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the readers drain before giving up
                if any(event["event"] == name for _, event in self.events):
                    continue
                raise RuntimeError(
                    f"attach exited ({self.process.returncode}) before {name!r}: {self.stderr}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {name!r} from attach within {timeout} s: {self.stderr}")
            time.sleep(0.01)

    def interrupt(self) -> tuple[float, int]:
        """Ctrl-C; returns when the command has exited, with the time of the signal and the exit code."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(DETACH_TIMEOUT_SECONDS)
        for reader in self._readers:
            reader.join(10)
        return sent, code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@dataclass
class DeployedProject:
    count: int
    directory: Path
    stack_name: str
    functions: list[str]


class AttachBench:
    def __init__(
        self,
        session: boto3.Session,
        environment: dict[str, str],
        helper_stack: str,
        plan: AttachPlan,
        log: Callable[[str], None],
    ) -> None:
        self.session = session
        self.environment = environment
        self.helper_stack = helper_stack
        self.plan = plan
        self.log = log
        self.lambda_client = session.client("lambda", config=CLIENT_CONFIG)

    def run(self, work_dir: Path) -> dict[str, Any]:
        from plldb.localcloud.sam_deploy import deploy

        suffix = uuid.uuid4().hex[:6]
        self.plain_echo = f"bench-plain-echo-{suffix}"
        self.lambda_client.create_function(
            FunctionName=self.plain_echo,
            Runtime="python3.13",
            Handler="app.handler",
            Role=run_function_role(self.session, f"bench-echo-{suffix}"),
            Timeout=30,
            Code={"ZipFile": zipped({"app.py": ECHO_CODE})},
        )
        projects = []
        for count in self.plan.function_counts:
            directory = work_dir / f"echo-{count}"
            logical_ids = write_project(directory, count)
            stack_name = f"bench-echo-{count}-{suffix}"
            started = time.monotonic()
            outputs = deploy(self.session, directory / "template.yaml", stack_name)
            self.log(f"Attach: deployed {count} function(s) in {time.monotonic() - started:.1f} s")
            functions = [outputs[f"{logical_id}Name"] for logical_id in logical_ids]
            projects.append(DeployedProject(count, directory, stack_name, functions))
        cycles: dict[str, Any] = {}
        worker: dict[str, Any] = {}
        payloads: dict[str, Any] = {}
        for project in projects:
            runs = []
            for repetition in range(self.plan.repetitions):
                while_attached = None
                if project.count == min(self.plan.function_counts) and repetition == 0:

                    def while_attached(project: DeployedProject = project) -> None:
                        worker.update(self._worker_overhead(project.functions[0]))
                        payloads.update(self._payloads(project.functions[0]))

                runs.append(self._cycle(project, while_attached))
            cycles[str(project.count)] = {
                "functions": project.count,
                "runs": runs,
                "attach_seconds_median": round(percentile([run["attach_seconds"] for run in runs], 0.5), 2),
                "detach_seconds_median": round(percentile([run["detach_seconds"] for run in runs], 0.5), 2),
            }
        fewest, most = str(min(self.plan.function_counts)), str(max(self.plan.function_counts))
        ratio = cycles[most]["attach_seconds_median"] / cycles[fewest]["attach_seconds_median"]
        return {
            "attach_detach": {
                "by_function_count": cycles,
                "attach_ratio_most_to_fewest": round(ratio, 2),
                "target_ratio": TARGET_ATTACH_RATIO,
                "target_met": ratio < TARGET_ATTACH_RATIO,
            },
            "real_worker_overhead": worker,
            "payload_round_trip": payloads,
        }

    def _configurations(self, functions: list[str]) -> dict[str, dict[str, Any]]:
        configurations = {}
        for name in functions:
            configuration = self.lambda_client.get_function_configuration(FunctionName=name)
            configurations[name] = {key: configuration.get(key) for key in RESTORED_FIELDS}
        return configurations

    def _cycle(self, project: DeployedProject, while_attached: Callable[[], None] | None) -> dict[str, Any]:
        before = self._configurations(project.functions)
        attach = AttachProcess(
            project.directory,
            self.environment,
            ["--stack-name", project.stack_name, "--helper-stack", self.helper_stack],
        )
        started = attach.start()
        try:
            ready_at, ready = attach.wait_for("ready", READY_TIMEOUT_SECONDS)
            if sorted(ready["functions"]) != sorted(project.functions):
                raise RuntimeError(f"attach instrumented {ready['functions']}, not {project.functions}")
            attach_seconds = ready_at - started
            self.log(f"Attach: {project.count} function(s) ready in {attach_seconds:.2f} s")
            if while_attached is not None:
                while_attached()
            sent, code = attach.interrupt()
        finally:
            attach.kill()
        exited = time.monotonic()
        if code != 0 or not any(event["event"] == "detached" for _, event in attach.events):
            raise RuntimeError(f"attach did not detach cleanly (exit {code}): {attach.stderr[-5:]}")
        if self._configurations(project.functions) != before:
            raise RuntimeError(f"the functions of {project.stack_name} were not restored exactly")
        detach_seconds = exited - sent
        self.log(f"Attach: {project.count} function(s) restored in {detach_seconds:.2f} s")
        return {"attach_seconds": round(attach_seconds, 3), "detach_seconds": round(detach_seconds, 3)}

    def _invoke(self, function_name: str, event: bytes) -> float:
        started = time.perf_counter()
        response = self.lambda_client.invoke(FunctionName=function_name, Payload=event)
        body = response["Payload"].read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.get("FunctionError") or json.loads(body) != json.loads(event):
            raise RuntimeError(f"{function_name} did not echo its event: {body[:300]!r}")
        return elapsed

    def _worker_overhead(self, function_name: str) -> dict[str, Any]:
        rounds = self.plan.worker_rounds
        self.log(f"Attach: {rounds} no-op rounds answered by the real plldb attach worker")
        event = b'{"order": 1}'
        for _ in range(self.plan.worker_warm_up_rounds):
            self._invoke(self.plain_echo, event)
            self._invoke(function_name, event)
        plain, attached = [], []
        for _ in range(rounds):
            plain.append(self._invoke(self.plain_echo, event))
            attached.append(self._invoke(function_name, event))
        baseline = percentile(plain, 0.5)
        return {
            "method": (
                "real `plldb attach --json` worker (ack, then the handler in a local worker process, then the "
                "response); overhead = latency minus the plain echo function's p50"
            ),
            "rounds": rounds,
            "plain_invoke_ms": summary(plain),
            "attached_invoke_ms": summary(attached),
            "overhead_ms": summary([max(0.0, value - baseline) for value in attached]),
        }

    def _payloads(self, function_name: str) -> dict[str, Any]:
        results = {}
        for label, size in self.plan.payload_sizes.items():
            self.log(f"Attach: payload round trip of {label}")
            event = event_of_size(size)
            plain = [self._invoke(self.plain_echo, event) for _ in range(self.plan.payload_repetitions)]
            attached = [self._invoke(function_name, event) for _ in range(self.plan.payload_repetitions)]
            inline = size <= protocol.INLINE_MESSAGE_LIMIT
            results[label] = {
                "bytes": size,
                "event_travels": "inline in the invoke message" if inline else "as DynamoDB chunk items",
                "plain_invoke_ms": summary(plain),
                "attached_invoke_ms": summary(attached),
                "added_ms_p50": round(percentile(attached, 0.5) - percentile(plain, 0.5), 1),
            }
        return results


def attach_environment(cloud_environment: dict[str, str], work_dir: Path) -> dict[str, str]:
    """The attach command's environment: the local cloud's, and nothing from the developer's AWS setup."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_") and name != protocol.EXECUTE_API_ENDPOINT_VARIABLE
    }
    environment.update(cloud_environment)
    environment["AWS_CONFIG_FILE"] = str(work_dir / "no-aws-config")
    environment["AWS_SHARED_CREDENTIALS_FILE"] = str(work_dir / "no-aws-credentials")
    environment["NO_COLOR"] = "1"
    return environment
