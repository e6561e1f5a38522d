"""Run the whole benchmark on a local cloud of its own and write bench/results/benchmark.{json,md}."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from plldb.bench.attach_bench import PAYLOAD_SIZES, AttachBench, AttachPlan, attach_environment
from plldb.bench.dynamodb_counter import DynamoRequestCounter
from plldb.bench.overhead import OverheadBench, OverheadPlan
from plldb.bench.report import machine_facts, markdown, timestamp, write_results

HELPER_STACK = "plldb-bench"

FULL = (
    OverheadPlan(
        concurrency_rounds={1: 200, 10: 200, 50: 250},
        warm_up_rounds_per_thread=3,
        throughput_invocations=100,
        counted_invocations=50,
        hold_seconds=10.0,
    ),
    AttachPlan(
        function_counts=[1, 10, 50],
        repetitions=3,
        worker_rounds=100,
        worker_warm_up_rounds=3,
        payload_sizes=PAYLOAD_SIZES,
        payload_repetitions=5,
    ),
)
QUICK = (
    OverheadPlan(
        concurrency_rounds={1: 3, 2: 4},
        warm_up_rounds_per_thread=1,
        throughput_invocations=4,
        counted_invocations=2,
        hold_seconds=1.0,
    ),
    AttachPlan(
        function_counts=[1, 2],
        repetitions=1,
        worker_rounds=2,
        worker_warm_up_rounds=1,
        payload_sizes={"1 KB": PAYLOAD_SIZES["1 KB"], "100 KB": PAYLOAD_SIZES["100 KB"]},
        payload_repetitions=1,
    ),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(quick: bool) -> dict[str, Any]:
    from plldb.bootstrap import deploy
    from plldb.bootstrap.helper_stack import load_helper_stack
    from plldb.localcloud.cloud import LocalCloud

    overhead_plan, attach_plan = QUICK if quick else FULL
    started = time.monotonic()
    counter = DynamoRequestCounter()
    with (
        tempfile.TemporaryDirectory(prefix="plldb-bench-") as work_dir,
        LocalCloud(work_dir=Path(work_dir) / "cloud") as cloud,
        counter.installed(),
    ):
        saved = {
            name: os.environ.get(name) for name in [*cloud.environment(), "AWS_PROFILE", "AWS_SESSION_TOKEN"]
        }
        os.environ.update(cloud.environment())
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        try:
            session = cloud.session()
            log("Deploying the helper stack")
            deploy.setup(session, HELPER_STACK, parameters={"DisconnectGraceSeconds": "1"}, poll_seconds=0.2)
            helper = load_helper_stack(session, HELPER_STACK)
            overhead = OverheadBench(session, helper, counter, overhead_plan, log)
            overhead.set_up()
            try:
                overhead_report = overhead.run()
            finally:
                overhead.close()
            environment = attach_environment(cloud.environment(), Path(work_dir))
            attach_report = AttachBench(session, environment, HELPER_STACK, attach_plan, log).run(
                Path(work_dir) / "projects"
            )
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return {
        "mode": "quick" if quick else "full",
        "measured_at": timestamp(),
        "duration_seconds": round(time.monotonic() - started, 1),
        "machine": machine_facts(),
        "overhead": overhead_report,
        "attach": attach_report,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plldb.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny round counts: checks that it runs")
    parser.add_argument("--output-dir", type=Path, default=Path("bench") / "results")
    args = parser.parse_args(argv)
    report = run(args.quick)
    json_path, markdown_path = write_results(report, args.output_dir)
    print(markdown(report))
    log(f"Wrote {json_path} and {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
