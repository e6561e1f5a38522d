"""What a developer waits for with the real `plldb attach`: attach and detach, from the command's start.

For each function count N a SAM project of N echo functions is generated in a temporary folder and
deployed with the local cloud's `sam deploy`. `python -m plldb attach --json` then runs as a
subprocess, exactly as a developer starts it:

* **attach time**: from starting the command to its ``ready`` event (every function instrumented);
  **net attach time**: the same minus the command's start-up, that is starting Python and importing
  what `plldb attach` imports (``STARTUP_MODULES``), timed apart in fresh processes;
* **detach time**: from SIGINT (Ctrl-C) to the command's exit after its ``detached`` event;
* **restore exactness**: everything plldb may touch (each function's configuration, aliases and
  versions, its role's tags and policies) is read before attach and after detach, and must be equal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml

from plldb import protocol
from plldb.bench.processes import JsonLinesProcess
from plldb.bench.stats import percentile

ECHO_CODE = "def handler(event, context):\n    return event\n"
READY_TIMEOUT_SECONDS = 300.0
DETACH_TIMEOUT_SECONDS = 300.0
TARGET_ATTACH_RATIO = 3.0  # attaching the most functions may take at most this multiple of attaching one
# What `plldb attach` imports before its first AWS call: its start-up, net of which attach is timed.
STARTUP_MODULES = (
    "plldb.cli",
    "plldb.cli.attach",
    "plldb.aws",
    "plldb.bootstrap.helper_stack",
    "plldb.cli.settings",
    "plldb.instrumentation.functions",
    "plldb.local.console",
    "plldb.local.instrument",
    "plldb.local.session",
    "plldb.local.template",
    "plldb.local.worker",
)
# The configuration fields a restore must put back exactly (what plldb may change, and more).
CONFIGURATION_FIELDS = (
    "Environment",
    "Layers",
    "Timeout",
    "Handler",
    "Runtime",
    "MemorySize",
    "Role",
    "Description",
    "TracingConfig",
    "Architectures",
    "EphemeralStorage",
)


def write_project(directory: Path, count: int, python: str = "python3.13") -> list[str]:
    """A SAM project of ``count`` echo functions sharing one code folder; returns their logical ids.

    Each function states its own Handler and CodeUri (the original plldb reads them from the function,
    not from Globals); Timeout 10 s, so a failed invocation does not hold the benchmark long.
    """
    (directory / "src").mkdir(parents=True)
    (directory / "src" / "app.py").write_text(ECHO_CODE, encoding="utf-8")
    logical_ids = [f"Echo{index:03d}" for index in range(1, count + 1)]
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Resources": {
            logical_id: {
                "Type": "AWS::Serverless::Function",
                "Properties": {"Runtime": python, "Timeout": 10, "Handler": "app.handler", "CodeUri": "src/"},
            }
            for logical_id in logical_ids
        },
        "Outputs": {f"{logical_id}Name": {"Value": {"Ref": logical_id}} for logical_id in logical_ids},
    }
    (directory / "template.yaml").write_text(yaml.safe_dump(template, sort_keys=False), encoding="utf-8")
    return logical_ids


@dataclass
class DeployedProject:
    count: int
    directory: Path
    stack_name: str
    functions: list[str]


def deploy_project(session: boto3.Session, directory: Path, count: int, stack_name: str) -> DeployedProject:
    from plldb.localcloud.sam_deploy import deploy

    logical_ids = write_project(directory, count)
    outputs = deploy(session, directory / "template.yaml", stack_name)
    return DeployedProject(
        count, directory, stack_name, [outputs[f"{logical_id}Name"] for logical_id in logical_ids]
    )


def snapshot(session: boto3.Session, functions: list[str]) -> dict[str, Any]:
    """Everything plldb may touch on these functions and their roles, as AWS reports it."""
    lambda_client = session.client("lambda")
    iam = session.client("iam")
    state: dict[str, Any] = {}
    roles: set[str] = set()
    for name in functions:
        configuration = lambda_client.get_function_configuration(FunctionName=name)
        roles.add(str(configuration["Role"]).rsplit("/", 1)[-1])
        state[name] = {
            "configuration": {key: configuration.get(key) for key in CONFIGURATION_FIELDS},
            "aliases": sorted(
                (alias["Name"], alias["FunctionVersion"], str(alias.get("RoutingConfig")))
                for alias in lambda_client.list_aliases(FunctionName=name)["Aliases"]
            ),
            "versions": sorted(
                version["Version"]
                for version in lambda_client.list_versions_by_function(FunctionName=name)["Versions"]
            ),
        }
    for role in sorted(roles):
        state[f"role {role}"] = {
            "tags": sorted((tag["Key"], tag["Value"]) for tag in iam.list_role_tags(RoleName=role)["Tags"]),
            "managed_policies": sorted(
                policy["PolicyArn"]
                for policy in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
            ),
            "inline_policies": sorted(iam.list_role_policies(RoleName=role)["PolicyNames"]),
        }
    return state


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What a restore left different, one line per field (empty when it was exact)."""
    found = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, {}), after.get(key, {})
        for field_name in sorted(set(old) | set(new)):
            if field_name == "configuration":
                for name in sorted(set(old.get(field_name, {})) | set(new.get(field_name, {}))):
                    if old[field_name].get(name) != new[field_name].get(name):
                        found.append(
                            f"{key} {name}: {old[field_name].get(name)!r} -> {new[field_name].get(name)!r}"
                        )
            elif old.get(field_name) != new.get(field_name):
                found.append(f"{key} {field_name}: {old.get(field_name)!r} -> {new.get(field_name)!r}")
    return found


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


def startup_seconds(environment: dict[str, str], probes: int) -> dict[str, Any]:
    """Starting Python and importing what `plldb attach` imports, in fresh processes (median of ``probes``)."""
    code = "import " + ", ".join(STARTUP_MODULES)
    runs = []
    for _ in range(probes):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", code], env=environment, check=True)
        runs.append(time.monotonic() - started)
    return {"median": round(percentile(runs, 0.5), 3), "runs": [round(run, 3) for run in runs]}


class AttachCycle:
    """One `plldb attach --json` of a deployed project, from start to ``ready``; then Ctrl-C to exit."""

    def __init__(
        self, session: boto3.Session, project: DeployedProject, environment: dict[str, str], helper: str
    ):
        self.session = session
        self.project = project
        self.process = JsonLinesProcess(
            [
                sys.executable,
                "-m",
                "plldb",
                "attach",
                "--json",
                "--stack-name",
                project.stack_name,
                "--helper-stack",
                helper,
            ],
            environment,
            cwd=project.directory,
            name="plldb attach",
        )
        self.before: dict[str, Any] = {}
        self.attach_seconds = 0.0

    def start(self) -> float:
        self.before = snapshot(self.session, self.project.functions)
        started = self.process.start()
        ready_at, ready = self.process.wait_for("ready", READY_TIMEOUT_SECONDS)
        if sorted(ready.get("functions") or []) != sorted(self.project.functions):
            raise RuntimeError(f"attach instrumented {ready.get('functions')}, not {self.project.functions}")
        self.attach_seconds = ready_at - started
        return self.attach_seconds

    def detach(self) -> dict[str, Any]:
        """Ctrl-C; the detach time and what the restore left different (nothing, when exact)."""
        try:
            sent, code = self.process.interrupt(DETACH_TIMEOUT_SECONDS)
            exited = time.monotonic()
        finally:
            self.process.stop()
        detached = any(event.get("event") == "detached" for _, event in self.process.events)
        if code != 0 or not detached:
            raise RuntimeError(f"attach did not detach cleanly (exit {code}): {self.process.stderr[-5:]}")
        left = differences(self.before, snapshot(self.session, self.project.functions))
        return {"detach_seconds": round(exited - sent, 3), "restore_differences": left}


def attach_cycles(
    session: boto3.Session,
    projects: list[DeployedProject],
    environment: dict[str, str],
    helper: str,
    *,
    repetitions: int,
    startup: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Attach and detach each project ``repetitions`` times; medians, gross and net of start-up."""
    by_count: dict[str, Any] = {}
    for project in projects:
        runs = []
        for _ in range(repetitions):
            cycle = AttachCycle(session, project, environment, helper)
            attach_seconds = cycle.start()
            result = cycle.detach()
            log(
                f"Attach: {project.count} function(s) ready in {attach_seconds:.2f} s, "
                f"restored in {result['detach_seconds']:.2f} s"
            )
            runs.append({"attach_seconds": round(attach_seconds, 3), **result})
        attach_median = percentile([run["attach_seconds"] for run in runs], 0.5)
        by_count[str(project.count)] = {
            "functions": project.count,
            "runs": runs,
            "attach_seconds_median": round(attach_median, 3),
            "attach_net_seconds_median": round(attach_median - startup["median"], 3),
            "detach_seconds_median": round(percentile([run["detach_seconds"] for run in runs], 0.5), 3),
            "restore_exact": all(not run["restore_differences"] for run in runs),
        }
    fewest, most = by_count[str(projects[0].count)], by_count[str(projects[-1].count)]
    gross = most["attach_seconds_median"] / fewest["attach_seconds_median"]
    net = most["attach_net_seconds_median"] / fewest["attach_net_seconds_median"]
    return {
        "startup_seconds": startup,
        "by_function_count": by_count,
        "ratio_most_to_fewest": round(gross, 2),
        "ratio_most_to_fewest_net": round(net, 2),
        "target_ratio": TARGET_ATTACH_RATIO,
        "target_met": gross < TARGET_ATTACH_RATIO,
        "target_met_net": net < TARGET_ATTACH_RATIO,
        "restore_exact": all(entry["restore_exact"] for entry in by_count.values()),
    }
