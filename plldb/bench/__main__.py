"""Run the whole benchmark on a local cloud of its own and write bench/results/benchmark.{json,md}."""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plldb.bench import attach_bench, credentials, original
from plldb.bench.dynamodb_counter import DynamoRequestCounter
from plldb.bench.floor import SESSION_ID, StoredWatcher, deploy_floor
from plldb.bench.latency import TARGET_P99_MS, TARGET_RATIO, TARGET_RATIO_CONCURRENCY, DriverRunner
from plldb.bench.processes import JsonLinesProcess
from plldb.bench.realpath import PAYLOAD_SIZES, RealPath
from plldb.bench.report import commit_facts, machine_facts, markdown, timestamp, write_results
from plldb.bench.scripted import ScriptedBreakdown

HELPER_STACK = "plldb-bench"
TRUST_POLICY = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
    '"Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}'
)


@dataclass
class Plan:
    real_path_rounds: dict[int, int]  # concurrency -> measured rounds
    warm_up_rounds_per_thread: int
    throughput_invocations: int
    scripted_rounds: int
    counted_invocations: int
    hold_seconds: float
    function_counts: list[int]
    repetitions: int
    startup_probes: int
    payload_sizes: dict[str, int]
    payload_repetitions: int
    original: original.OriginalPlan = field(default_factory=original.OriginalPlan)


FULL = Plan(
    real_path_rounds={1: 200, 10: 200, 50: 250},
    warm_up_rounds_per_thread=3,
    throughput_invocations=100,
    scripted_rounds=200,
    counted_invocations=50,
    hold_seconds=10.0,
    function_counts=[1, 10, 50],
    repetitions=3,
    startup_probes=5,
    payload_sizes=PAYLOAD_SIZES,
    payload_repetitions=5,
    original=original.OriginalPlan(
        sequential_rounds=50,
        concurrency=10,
        concurrent_rounds=100,
        throughput_invocations=50,
        payload_sizes=PAYLOAD_SIZES,
        payload_repetitions=2,
    ),
)
QUICK = Plan(
    real_path_rounds={1: 3, 2: 4},
    warm_up_rounds_per_thread=1,
    throughput_invocations=4,
    scripted_rounds=3,
    counted_invocations=2,
    hold_seconds=1.0,
    function_counts=[1, 2],
    repetitions=1,
    startup_probes=1,
    payload_sizes={"1 KB": PAYLOAD_SIZES["1 KB"], "100 KB": PAYLOAD_SIZES["100 KB"]},
    payload_repetitions=1,
    original=original.OriginalPlan(
        sequential_rounds=2,
        concurrency=2,
        concurrent_rounds=4,
        throughput_invocations=4,
        payload_sizes={"1 KB": PAYLOAD_SIZES["1 KB"], "100 KB": PAYLOAD_SIZES["100 KB"]},
        payload_repetitions=1,
    ),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def plain_echo(session: Any, suffix: str) -> str:
    """An echo function plldb never touches, the same code and runtime as the projects' functions."""
    name = f"bench-plain-echo-{suffix}"
    role = session.client("iam").create_role(
        RoleName=f"bench-plain-{suffix}", AssumeRolePolicyDocument=TRUST_POLICY
    )
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("app.py", attach_bench.ECHO_CODE)
    session.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.13",
        Handler="app.handler",
        Role=role["Role"]["Arn"],
        Timeout=10,
        Code={"ZipFile": archive.getvalue()},
    )
    return name


def run(plan: Plan, mode: str, original_options: original.OriginalOptions) -> dict[str, Any]:
    from plldb.bootstrap import deploy
    from plldb.bootstrap.helper_stack import load_helper_stack
    from plldb.localcloud.cloud import LocalCloud

    started = time.monotonic()
    counter = DynamoRequestCounter()
    suffix = uuid.uuid4().hex[:6]
    report: dict[str, Any] = {"mode": mode, "commit": commit_facts(), "measured_at": timestamp()}
    with (
        tempfile.TemporaryDirectory(prefix="plldb-bench-") as work_name,
        LocalCloud(work_dir=Path(work_name) / "cloud") as cloud,
        counter.installed(),
    ):
        work_dir = Path(work_name)
        saved = {
            name: os.environ.get(name) for name in [*cloud.environment(), "AWS_PROFILE", "AWS_SESSION_TOKEN"]
        }
        os.environ.update(cloud.environment())
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        environment = attach_bench.attach_environment(cloud.environment(), work_dir)
        try:
            session = cloud.session()
            log("Deploying the helper stack, the floor stack and the benchmark's projects")
            deploy.setup(session, HELPER_STACK, parameters={"DisconnectGraceSeconds": "1"}, poll_seconds=0.2)
            helper = load_helper_stack(session, HELPER_STACK)
            floor = deploy_floor(session, f"bench-floor-{suffix}")
            watcher = StoredWatcher(floor.invocations_table)
            counter.hooks.append(watcher)
            runner = DriverRunner(environment, watcher)
            plain = plain_echo(session, suffix)
            scripted_project = attach_bench.deploy_project(
                session, work_dir / "scripted", 1, f"bench-scripted-{suffix}"
            )
            projects = [
                attach_bench.deploy_project(
                    session, work_dir / f"echo-{count}", count, f"bench-echo-{count}-{suffix}"
                )
                for count in plan.function_counts
            ]
            with JsonLinesProcess.python_module(
                "plldb.bench.responder", ["floor", floor.websocket_url, SESSION_ID], environment
            ) as floor_responder:
                floor_responder.wait_for("connected", 120)
                scripted, floor_config = ScriptedBreakdown(
                    session, helper, counter, runner, environment=environment, log=log
                ).run(
                    scripted_project,
                    plain,
                    floor,
                    rounds=plan.scripted_rounds,
                    warm_up=plan.warm_up_rounds_per_thread,
                    counted=plan.counted_invocations,
                    hold_seconds=plan.hold_seconds,
                )
                report["scripted"] = scripted
                report["real_path"] = RealPath(
                    session, counter, runner, environment=environment, helper_stack=HELPER_STACK, log=log
                ).run(
                    projects[0],
                    plain,
                    floor_config,
                    concurrency_rounds=plan.real_path_rounds,
                    warm_up=plan.warm_up_rounds_per_thread,
                    throughput_invocations=plan.throughput_invocations,
                    counted=plan.counted_invocations,
                    payload_sizes=plan.payload_sizes,
                    payload_repetitions=plan.payload_repetitions,
                    invocations_table=helper.invocations_table_name,
                )
            log("Attach: start-up of the command")
            startup = attach_bench.startup_seconds(environment, plan.startup_probes)
            report["attach"] = attach_bench.attach_cycles(
                session,
                projects,
                environment,
                HELPER_STACK,
                repetitions=plan.repetitions,
                startup=startup,
                log=log,
            )
            tables, buckets = credentials.stack_storage(session, HELPER_STACK)
            report["credentials_at_rest"] = credentials.scan(session, tables, buckets)
            runner.watcher = None
            report["original"] = original.compare(
                session,
                environment=environment,
                runner=runner,
                plain=plain,
                work_dir=work_dir / "original",
                plan=plan.original,
                options=original_options,
                log=log,
            )
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    if "skipped" not in report["original"]:
        report["original"]["table"] = original.side_by_side(report)
    report["targets"] = {
        "overhead_to_floor_p50_ratio": TARGET_RATIO,
        "ratio_at_concurrency": TARGET_RATIO_CONCURRENCY,
        "overhead_p99_ms": TARGET_P99_MS,
        "attach_ratio_most_to_fewest": attach_bench.TARGET_ATTACH_RATIO,
    }
    report["duration_seconds"] = round(time.monotonic() - started, 1)
    report["machine"] = machine_facts()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plldb.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks that everything runs")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where to write benchmark.json and benchmark.md (default: bench/results, or a temporary "
        "folder for --quick, so a smoke run never replaces the recorded results)",
    )
    parser.add_argument(
        "--no-original",
        action="store_true",
        help="leave out the side-by-side run of the original plldb 0.1.3",
    )
    parser.add_argument(
        "--original-python",
        default=None,
        help="Python 3.13 interpreter for the original plldb's environment (default: found with pyenv)",
    )
    parser.add_argument(
        "--original-venv",
        type=Path,
        default=None,
        help=f"where the original plldb's environment is kept (default: {original.default_venv()})",
    )
    args = parser.parse_args(argv)
    options = original.OriginalOptions(
        enabled=not args.no_original, python=args.original_python, venv=args.original_venv
    )
    report = run(QUICK if args.quick else FULL, "quick" if args.quick else "full", options)
    output = args.output_dir or (
        Path(tempfile.gettempdir()) / "plldb-bench-quick" if args.quick else Path("bench") / "results"
    )
    json_path, markdown_path = write_results(report, output)
    print(markdown(report))
    log(f"Wrote {json_path} and {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
