"""Side by side with the original plldb 0.1.3 (PyPI), on the same local cloud, in the same run.

The original needs Python 3.13: it runs from a virtual environment of its own, made with this
machine's ``python3.13`` (pyenv's, or ``--original-python``) and kept outside the repository
(``default_venv()``); its code is never part of this repository. It is installed with pip as any
user installs it (``plldb==0.1.3``, its dependencies pinned by this repository's constraints.txt so
both use the same boto3 and websockets), bootstrapped with its own ``plldb bootstrap setup``, and
attached with its own ``plldb attach --stack-name``, to a project of the same echo function.

It was written for AWS only; these shims, and nothing else, let it run on the local cloud. None
changes what it does on the hot path; each stands in for something AWS provides:

1. **execute-api hosts** do not resolve offline. Its CLI reads the helper stack's outputs
   ``wss://{api}.execute-api.{region}.amazonaws.com/prod`` and ``https://{rest}.execute-api...``; a
   ``sitecustomize`` module on the CLI's ``PYTHONPATH`` rewrites them as ``protocol.execute_api_url``
   does for this plldb (``SITECUSTOMIZE``). Its instrumentation function's ``WEBSOCKET_ENDPOINT``
   variable (copied into each instrumented function) is set to the local gateway's URL of the same
   API, once, after its bootstrap.
2. **API Gateway REST APIs** have a control plane in the local cloud, not a data plane: its
   ``POST /sessions`` (a Lambda proxy integration) is served by ``RestApiShim``, which invokes its
   ``plldb-restapi`` function with the proxy event as API Gateway does. (The method's AWS_IAM
   authorization is not checked.)
3. **/opt**: the local cloud unpacks each environment's layers in a folder of its own, and translates
   ``AWS_LAMBDA_EXEC_WRAPPER=/opt/bin/bootstrap`` to it, but not the path inside the script, which
   runs ``python3 /opt/bin/lambda_runtime.py``. A second version of its layer is published whose
   ``bin/bootstrap`` runs the ``lambda_runtime.py`` next to itself (its instrumentation picks the
   latest version); the runtime itself is byte for byte the original's.
"""

from __future__ import annotations

import glob
import http.server
import io
import json
import os
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plldb import protocol

ORIGINAL_VERSION = "0.1.3"
PINNED = (f"plldb=={ORIGINAL_VERSION}", "pdb-attach==3.0.1")  # the rest: this repository's constraints.txt
READY_TEXT = "Completed instrumentation for stack"
READY_TIMEOUT_SECONDS = 180.0
RESTORE_TIMEOUT_SECONDS = 60.0
LAYER_NAME = "PLLDBDebuggerRuntime"
INSTRUMENTATION_FUNCTION = "plldb-debugger-instrumentation"
REST_FUNCTION = "plldb-restapi"
REST_URL_VARIABLE = "PLLDB_BENCH_REST_API_URL"
SHIMMED_BOOTSTRAP = '#!/bin/bash\nexec python3 "$(dirname "$0")/lambda_runtime.py" "$@"\n'

SITECUSTOMIZE = '''"""plldb benchmark shim for the original plldb 0.1.3 on the local cloud: execute-api URLs.

Its CLI reads wss://{api}.execute-api.{region}.amazonaws.com/{stage}, whose host does not resolve
offline; it is rewritten to the local gateway as PLLDB_EXECUTE_API_ENDPOINT says, and the REST API to
the benchmark's stand-in for its data plane.
"""
import os
import re


def _local(url):
    override = os.environ.get("PLLDB_EXECUTE_API_ENDPOINT", "").rstrip("/")
    found = re.match(r"^(wss|https)://([a-z0-9]+)\\.execute-api\\.[a-z0-9-]+\\.amazonaws\\.com/(.+)$", url)
    if not override or not found:
        return url
    scheme = override.split("://", 1)[0]
    if found.group(1) == "wss":
        scheme = "wss" if scheme == "https" else "ws"
    return f"{scheme}://{override.split('://', 1)[1]}/{found.group(2)}/{found.group(3)}"


try:
    from plldb import stack_discovery as _discovery

    _get_api_endpoints = _discovery.StackDiscovery.get_api_endpoints

    def _endpoints(self, stack_name):
        endpoints = _get_api_endpoints(self, stack_name)
        return {
            "websocket_url": _local(endpoints["websocket_url"]),
            "rest_api_url": os.environ.get("PLLDB_BENCH_REST_API_URL") or _local(endpoints["rest_api_url"]),
        }

    _discovery.StackDiscovery.get_api_endpoints = _endpoints
except ImportError:
    pass
'''


@dataclass
class OriginalPlan:
    sequential_rounds: int = 50
    concurrency: int = 10
    concurrent_rounds: int = 100
    throughput_invocations: int = 50
    payload_sizes: dict[str, int] = field(default_factory=dict)
    payload_repetitions: int = 2


@dataclass
class OriginalOptions:
    enabled: bool = True
    python: str | None = None
    venv: Path | None = None


class Unavailable(RuntimeError):
    """The original cannot be run here (no Python 3.13, or its package cannot be installed)."""


def default_venv() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "plldb-bench" / f"plldb-{ORIGINAL_VERSION}"


def find_python(explicit: str | None) -> str:
    """A Python 3.13: --original-python, else pyenv's, else python3.13 on PATH."""
    if explicit:
        return explicit
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates = sorted(glob.glob(os.path.join(root, "versions", "3.13*", "bin", "python3.13")), reverse=True)
    found = candidates[0] if candidates else shutil.which("python3.13")
    if not found:
        raise Unavailable("no Python 3.13 (install one with pyenv, or pass --original-python)")
    return found


def ensure_venv(options: OriginalOptions, log: Callable[[str], None]) -> Path:
    """The original's virtual environment, created and installed on first use; its `plldb` command."""
    venv = options.venv or default_venv()
    command = venv / "bin" / "plldb"
    marker = venv / ".plldb-bench-installed"
    if command.exists() and marker.exists():
        return command
    python = find_python(options.python)
    log(f"Original: creating its environment in {venv} with {python}")
    shutil.rmtree(venv, ignore_errors=True)
    constraints = Path(__file__).resolve().parents[2] / "constraints.txt"
    steps = [
        [python, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", str(constraints), *PINNED],
    ]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise Unavailable(
                f"{' '.join(step[:4])} failed: {(result.stderr or result.stdout).strip()[-300:]}"
            )
    marker.write_text(ORIGINAL_VERSION + "\n", encoding="utf-8")
    return command


class RestApiShim:
    """The data plane of the original's REST API: ``POST .../sessions`` invokes its Lambda proxy integration."""

    def __init__(self, session: Any) -> None:
        self.lambda_client = session.client("lambda")
        shim = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
                status, answer = shim.invoke(self.path, dict(self.headers), body)
                data = answer.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/prod"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, path: str, headers: dict[str, str], body: str) -> tuple[int, str]:
        resource = "/" + path.rstrip("/").rsplit("/", 1)[-1]
        event = {
            "resource": resource,
            "path": resource,
            "httpMethod": "POST",
            "headers": headers,
            "body": body,
            "isBase64Encoded": False,
            "requestContext": {"resourcePath": resource, "httpMethod": "POST", "stage": "prod"},
        }
        response = self.lambda_client.invoke(
            FunctionName=REST_FUNCTION, Payload=json.dumps(event).encode("utf-8")
        )
        result = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError") or not isinstance(result, dict):
            return 502, json.dumps({"message": "Internal server error"})
        return int(result.get("statusCode") or 200), str(result.get("body") or "")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def shimmed_layer(runtime: bytes) -> bytes:
    """The original's layer with shim 3: an executable ``bin/bootstrap`` that finds its runtime beside it."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        executable = zipfile.ZipInfo("bin/bootstrap")
        executable.external_attr = 0o100755 << 16
        bundle.writestr(executable, SHIMMED_BOOTSTRAP)
        bundle.writestr("bin/lambda_runtime.py", runtime)
    return archive.getvalue()


def apply_cloud_shims(session: Any, command: Path) -> None:
    """Shims 1 (the instrumentation function's WEBSOCKET_ENDPOINT) and 3 (the layer's bootstrap)."""
    lambda_client = session.client("lambda")
    configuration = lambda_client.get_function_configuration(FunctionName=INSTRUMENTATION_FUNCTION)
    variables = dict(configuration["Environment"]["Variables"])
    variables["WEBSOCKET_ENDPOINT"] = protocol.execute_api_url(variables["WEBSOCKET_ENDPOINT"])
    lambda_client.update_function_configuration(
        FunctionName=INSTRUMENTATION_FUNCTION, Environment={"Variables": variables}
    )
    site_packages = Path(
        subprocess.run(
            [
                str(command.parent / "python"),
                "-I",
                "-c",
                "import plldb, os; print(os.path.dirname(plldb.__file__))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    runtime = (site_packages / "cloudformation" / "layer" / "lambda_runtime.py").read_bytes()
    lambda_client.publish_layer_version(
        LayerName=LAYER_NAME,
        Description="plldb 0.1.3's layer; bin/bootstrap runs the lambda_runtime.py beside it (benchmark shim)",
        Content={"ZipFile": shimmed_layer(runtime)},
        CompatibleRuntimes=["python3.13", "python3.12", "python3.11", "python3.10"],
    )


class OriginalAttach:
    """`plldb attach --stack-name S` of the original, from start to its "Completed instrumentation" message."""

    def __init__(self, command: Path, project: Any, environment: dict[str, str]) -> None:
        from plldb.bench.processes import JsonLinesProcess

        self.process = JsonLinesProcess(
            [str(command), "attach", "--stack-name", project.stack_name],
            environment,
            cwd=project.directory,
            name="plldb 0.1.3 attach",
            merge_stderr=True,
        )

    def start(self) -> float:
        started = self.process.start()
        ready_at, _ = self.process.wait_for(
            lambda event: READY_TEXT in str(event.get("text", "")), READY_TIMEOUT_SECONDS
        )
        return ready_at - started

    @property
    def alive(self) -> bool:
        return self.process.process is not None and self.process.process.poll() is None

    def detach(self, session: Any, project: Any, before: dict[str, Any]) -> dict[str, Any]:
        """Ctrl-C, then wait for its helper stack to restore the functions (it does so after $disconnect)."""
        from plldb.bench.attach_bench import differences, snapshot

        sent = time.monotonic()
        code = None
        if self.alive:
            _, code = self.process.interrupt(READY_TIMEOUT_SECONDS)
        self.process.stop()
        restored_at = None
        while time.monotonic() - sent < RESTORE_TIMEOUT_SECONDS:
            configurations = snapshot(session, project.functions)
            if not any(
                LAYER_NAME in str(entry.get("configuration", {}).get("Layers"))
                for entry in configurations.values()
            ):
                restored_at = time.monotonic()
                break
            time.sleep(0.1)
        left = differences(before, snapshot(session, project.functions))
        return {
            "exit_code": code,
            "restore_seconds": None if restored_at is None else round(restored_at - sent, 3),
            "restore_differences": left,
        }


def works_after_detach(session: Any, function: str) -> tuple[bool, str]:
    """Whether the function still answers after the original detached, and what it answered."""
    response = session.client("lambda").invoke(FunctionName=function, Payload=b'{"ok": true}')
    body = response["Payload"].read().decode("utf-8", "replace")
    return not response.get("FunctionError"), body[:300]


def compare(
    session: Any,
    *,
    environment: dict[str, str],
    runner: Any,
    plain: str,
    work_dir: Path,
    plan: OriginalPlan,
    options: OriginalOptions,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The original's figures, measured as this plldb's are (the same driver, functions and cloud)."""
    from plldb.bench import credentials
    from plldb.bench.attach_bench import deploy_project, snapshot
    from plldb.bench.latency import latency_work, level_summary, throughput_work

    if not options.enabled:
        return {"skipped": "--no-original"}
    try:
        command = ensure_venv(options, log)
    except Unavailable as exc:
        log(f"Original: not measured: {exc}")
        return {"skipped": str(exc)}
    log("Original: plldb bootstrap setup")
    started = time.monotonic()
    result = subprocess.run(
        [str(command), "bootstrap", "setup"], env=environment, capture_output=True, text=True
    )
    if result.returncode != 0:
        return {"skipped": f"its bootstrap failed: {(result.stderr or result.stdout)[-300:]}"}
    bootstrap_seconds = time.monotonic() - started
    apply_cloud_shims(session, command)
    rest = RestApiShim(session)
    shim = work_dir / "shim"
    shim.mkdir(parents=True)
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    shimmed = dict(environment, PYTHONPATH=str(shim), **{REST_URL_VARIABLE: rest.url})
    try:
        project = deploy_project(session, work_dir / "echo-1", 1, f"bench-original-echo-{os.getpid()}")
        target = project.functions[0]
        report: dict[str, Any] = {
            "version": ORIGINAL_VERSION,
            "bootstrap_seconds": round(bootstrap_seconds, 2),
        }
        before = snapshot(session, project.functions)
        attach = OriginalAttach(command, project, shimmed)
        report["attach_seconds"] = round(attach.start(), 3)
        log(f"Original: attached in {report['attach_seconds']} s; {plan.sequential_rounds} sequential rounds")
        try:
            sequential = runner.run(
                latency_work(1, plan.sequential_rounds, warm_up=1, plain=plain, target=target, floor=None)
            )
            report["sequential"] = level_summary(1, sequential, judge_ratio=False)
            log(f"Original: concurrency {plan.concurrency}")
            concurrent = runner.run(
                latency_work(
                    plan.concurrency,
                    plan.concurrent_rounds,
                    warm_up=1,
                    plain=plain,
                    target=target,
                    floor=None,
                )
            )
            report["concurrent"] = level_summary(plan.concurrency, concurrent, judge_ratio=False)
            throughput = runner.run(throughput_work(plan.concurrency, plan.throughput_invocations, target))
            report["concurrent"]["throughput_per_second"] = {
                "attached": round(throughput["per_second"], 1),
                "failures": len(throughput["failures"]),
            }
        finally:
            report["detach"] = attach.detach(session, project, before)
        report["works_after_detach"], report["answer_after_detach"] = works_after_detach(session, target)
        log("Original: payload round trips, smallest first (a failure may end its session)")
        report["payload_round_trip"] = _payloads(
            session, command, project, environment=shimmed, runner=runner, plain=plain, plan=plan
        )
        report["credentials_at_rest"] = credentials.scan(
            session, *credentials.stack_storage(session, "plldb")
        )
    finally:
        rest.close()
    return report


def _payloads(
    session: Any,
    command: Path,
    project: Any,
    *,
    environment: dict[str, str],
    runner: Any,
    plain: str,
    plan: OriginalPlan,
) -> dict[str, Any]:
    """Sizes in increasing order in a fresh attach; once its session has ended, larger sizes are not tried."""
    from plldb.bench.attach_bench import snapshot
    from plldb.bench.realpath import payload_summary, payload_work

    before = snapshot(session, project.functions)
    attach = OriginalAttach(command, project, environment)
    attach.start()
    results: dict[str, Any] = {}
    try:
        for label, size in plan.payload_sizes.items():
            if not attach.alive:
                results[label] = {
                    "bytes": size,
                    "works": False,
                    "failures": ["not tried: its session had ended"],
                }
                continue
            work = payload_work(plain, project.functions[0], {label: size}, plan.payload_repetitions)
            results.update(payload_summary(runner.run(work)))
            if not attach.alive:
                results[label]["failures"].append(
                    "its attach exited: " + " | ".join(attach.process.stderr[-2:])
                )
    finally:
        attach.detach(session, project, before)
    return results


def _latency(level: dict[str, Any] | None) -> str:
    if not level:
        return "not measured"
    stats = level["target_invoke_ms"]
    failed = f", {level['failures']} failed" if level.get("failures") else ""
    return f"{stats['p50']:g} / {stats['p95']:g} ms{failed}"


def _works(payloads: dict[str, Any]) -> str:
    working = [label for label, row in payloads.items() if row["works"]]
    failing = [label for label, row in payloads.items() if not row["works"]]
    text = ", ".join(working) or "none"
    return text + (f" (not: {', '.join(failing)})" if failing else "")


def side_by_side(report: dict[str, Any]) -> list[dict[str, str]]:
    """The comparison table: the same figures of the original and of this plldb, from one run."""
    old = report["original"]
    real = report["real_path"]
    levels = real["by_concurrency"]
    concurrency = str(old["concurrent"]["concurrency"])
    current_concurrent = levels.get(concurrency)
    attach = report["attach"]
    first = attach["by_function_count"][min(attach["by_function_count"], key=int)]
    old_detach = old["detach"]
    return [
        {
            "what": "invocation latency p50 / p95, sequential",
            "original": _latency(old["sequential"]),
            "current": _latency(levels.get("1")),
        },
        {
            "what": f"invocation latency p50 / p95, {concurrency} at a time",
            "original": _latency(old["concurrent"]),
            "current": _latency(current_concurrent),
        },
        {
            "what": f"invocations a second, {concurrency} at a time",
            "original": f"{old['concurrent']['throughput_per_second']['attached']:g}",
            "current": (
                f"{current_concurrent['throughput_per_second']['attached']:g}"
                if current_concurrent
                else "not measured"
            ),
        },
        {
            "what": "event sizes that work (echoed back)",
            "original": _works(old["payload_round_trip"]),
            "current": _works(real["payload_round_trip"]),
        },
        {
            "what": "functions exactly as before after detach",
            "original": "yes"
            if not old_detach["restore_differences"]
            else f"no: {len(old_detach['restore_differences'])} difference(s), e.g. "
            + old_detach["restore_differences"][0][:160],
            "current": "yes" if attach["restore_exact"] and not real["restore_differences"] else "**no**",
        },
        {
            "what": "the function answers after detach",
            "original": "yes" if old["works_after_detach"] else f"no: {old['answer_after_detach'][:120]}",
            "current": "yes" if real.get("works_after_detach") else "**no**",
        },
        {
            "what": "restore after Ctrl-C",
            "original": f"{old_detach['restore_seconds']} s (by its helper stack, after $disconnect)"
            if old_detach["restore_seconds"] is not None
            else f"not within {RESTORE_TIMEOUT_SECONDS:g} s",
            "current": f"{first['detach_seconds_median']} s (by plldb, before it exits)",
        },
        {
            "what": "stored items holding execution-role credentials",
            "original": str(old["credentials_at_rest"]["stored_with_credentials"]),
            "current": str(report["credentials_at_rest"]["stored_with_credentials"]),
        },
        {
            "what": "attach of one function, from process start",
            "original": f"{old['attach_seconds']} s",
            "current": f"{first['attach_seconds_median']} s",
        },
    ]
