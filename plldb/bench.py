"""`make bench`: what the debugger layer adds to an invocation, against the floor of the same hops.

Everything runs on the local cloud in this process: `plldb bootstrap setup` logic deploys the helper
stack, a benchmark debugger attaches over the WebSocket (the manager instruments a one-function
stack) and answers every invocation at once. Each round then measures, interleaved so machine load
hits all three alike:

* **plain** — ``lambda.invoke`` of an identical function without plldb;
* **layer** — ``lambda.invoke`` of the instrumented function; the layer's overhead is its latency
  minus the median plain latency;
* **floor** — the hops the layer cannot avoid, done directly by this process as the debugger role:
  one ``PutItem`` of the same correlation item, one ``post_to_connection`` of the same message, the
  debugger's reply through ``$default`` (which stores it with one conditional ``UpdateItem``), and one
  ``GetItem`` once ``$default`` reports it stored.

The debugger sends only its ``response`` (no ``ack``), in both the layer and the floor rounds, so the
comparison isolates the layer. The floor learns that the answer is stored from the ``stored`` message,
one management-API post more than the layer needs: the floor is, if anything, slightly generous.
DynamoDB reads are counted per request at the local DynamoDB (moto), attributed by credentials to the
layer's assumed debugger role. Results go to bench/results/layer_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import secrets
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from plldb import protocol

TARGET_RATIO = 1.5  # the layer's p50 overhead may be at most this multiple of the floor's p50
DEFAULT_INVOCATIONS = 200
WARM_UP_ROUNDS = 15
READ_ACTIONS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan"})
FUNCTION_CODE = "def handler(event, context):\n    return {'ok': True}\n"
ANSWER = '{"ok": true}'
MESSAGE_TIMEOUT_SECONDS = 60.0
TRUST_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (fraction 0.5 is the median)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values_ms, 0.50), 2),
        "p95": round(percentile(values_ms, 0.95), 2),
        "p99": round(percentile(values_ms, 0.99), 2),
        "mean": round(sum(values_ms) / len(values_ms), 2),
    }


class ReadCounter:
    """Counts DynamoDB requests at the local DynamoDB, per access key and action."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def installed(self) -> Iterator[ReadCounter]:
        from moto.dynamodb.responses import DynamoHandler

        original = DynamoHandler.call_action
        counter = self

        def counting(handler: Any) -> Any:
            action = str(handler.headers.get("X-Amz-Target", "")).rpartition(".")[2]
            with counter._lock:
                counter.counts[(handler.get_access_key(), action)] += 1
            return original(handler)

        DynamoHandler.call_action = counting  # type: ignore[method-assign]
        try:
            yield self
        finally:
            DynamoHandler.call_action = original  # type: ignore[method-assign]

    def reads_by(self, access_keys: set[str]) -> int:
        with self._lock:
            return sum(
                n for (key, action), n in self.counts.items() if key in access_keys and action in READ_ACTIONS
            )


@dataclass
class BenchDebugger:
    """The developer's side, reduced to answering: every invoke gets its response at once."""

    url: str
    invokes: list[dict[str, Any]] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)
    _stored: dict[str, threading.Event] = field(default_factory=dict)
    _socket: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _instrumented: threading.Event = field(default_factory=threading.Event)

    def connect(self) -> BenchDebugger:
        from websockets.sync.client import connect

        self._socket = connect(self.url, open_timeout=MESSAGE_TIMEOUT_SECONDS, max_size=None)
        threading.Thread(target=self._read, name="bench-debugger", daemon=True).start()
        if not self._instrumented.wait(MESSAGE_TIMEOUT_SECONDS):
            raise RuntimeError(f"the manager did not finish instrumenting: {self.progress}")
        return self

    def expect_stored(self, request_id: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._stored[request_id] = event
        return event

    def _read(self) -> None:
        for raw in self._socket:
            message = json.loads(raw)
            kind = message.get("type")
            if kind == protocol.MSG_INVOKE:
                if len(self.invokes) < 5:
                    self.invokes.append(message)
                reply = {
                    "type": protocol.MSG_RESPONSE,
                    "requestId": message["requestId"],
                    "statusCode": protocol.RESPONSE_CODE_OK,
                    "payload": ANSWER,
                }
                self._socket.send(protocol.encode(reply))
            elif kind == protocol.MSG_STORED:
                with self._lock:
                    event = self._stored.pop(message["requestId"], None)
                if event is not None:
                    event.set()
            elif kind == protocol.MSG_PROGRESS:
                self.progress.append(message)
                if message.get("phase") == "instrument" and message.get("status") == "done":
                    self._instrumented.set()


class InvocationFailed(RuntimeError):
    """An invocation returned a function error; the benchmark reports it rather than timing it."""


class LayerBench:
    def __init__(self, session: boto3.Session, invocations: int, log: Callable[[str], None]) -> None:
        self.session = session
        self.invocations = invocations
        self.log = log
        self.lambda_client = session.client("lambda")
        self.suffix = uuid.uuid4().hex[:6]
        self.reads = ReadCounter()

    # --- set-up ---------------------------------------------------------------------------------------
    def set_up(self) -> None:
        from plldb.bootstrap import deploy
        from plldb.bootstrap.helper_stack import load_helper_stack

        self.log("Deploying the helper stack")
        name = f"plldb-bench-{self.suffix}"
        deploy.setup(self.session, name, parameters={"DisconnectGraceSeconds": "1"}, poll_seconds=0.2)
        self.helper = load_helper_stack(self.session, name)
        role_arn = self.session.client("iam").create_role(
            RoleName=f"bench-{self.suffix}", AssumeRolePolicyDocument=TRUST_POLICY
        )["Role"]["Arn"]

        self.log("Deploying the application stack and a plain twin of its function")
        self.app_stack = f"bench-app-{self.suffix}"
        function = {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Runtime": "python3.12",
                "Handler": "index.handler",
                "Role": role_arn,
                "Timeout": 30,
                "Code": {"ZipFile": FUNCTION_CODE},
            },
        }
        cloudformation = self.session.client("cloudformation")
        cloudformation.create_stack(
            StackName=self.app_stack, TemplateBody=json.dumps({"Resources": {"Bench": function}})
        )
        deploy.wait_for_stack(cloudformation, self.app_stack, "CREATE", lambda message: None, 0.2)
        self.function_name = cloudformation.describe_stack_resource(
            StackName=self.app_stack, LogicalResourceId="Bench"
        )["StackResourceDetail"]["PhysicalResourceId"]
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as bundle:
            bundle.writestr("index.py", FUNCTION_CODE)
        self.plain_function = f"bench-plain-{self.suffix}"
        self.lambda_client.create_function(
            FunctionName=self.plain_function,
            Runtime="python3.12",
            Handler="index.handler",
            Role=role_arn,
            Timeout=30,
            Code={"ZipFile": archive.getvalue()},
        )

        self.log("Attaching the benchmark debugger")
        credentials = self.session.client("sts").assume_role(
            RoleArn=self.helper.debugger_role_arn, RoleSessionName="plldb-bench"
        )["Credentials"]
        as_debugger = boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=self.session.region_name,
        )
        self.dynamodb = as_debugger.client("dynamodb")
        self.management = as_debugger.client(
            "apigatewaymanagementapi", endpoint_url=protocol.execute_api_url(self.helper.management_url)
        )
        self.session_id = str(uuid.uuid4())
        now = int(time.time())
        self.dynamodb.put_item(
            TableName=self.helper.sessions_table_name,
            Item={
                protocol.A_SESSION_ID: {"S": self.session_id},
                protocol.A_STATUS: {"S": protocol.STATUS_PENDING},
                protocol.A_STACK_NAME: {"S": self.app_stack},
                protocol.A_TTL: {"N": str(now + protocol.SESSION_TTL_SECONDS)},
                protocol.A_CREATED_AT: {"N": str(now)},
                protocol.A_OWNER: {"S": "plldb bench"},
                protocol.A_FUNCTION_TIMEOUT: {"N": "60"},
                protocol.A_FALLBACK: {"S": protocol.FALLBACK_ERROR},
                protocol.A_RECONNECT_ANCHOR: {
                    "S": protocol.reconnect_token(secrets.token_hex(32), protocol.RECONNECT_CHAIN_LENGTH)
                },
            },
            ConditionExpression="attribute_not_exists(SessionId)",
        )
        self.debugger = BenchDebugger(
            protocol.execute_api_url(self.helper.websocket_url) + "?sessionId=" + self.session_id
        ).connect()
        self.connection_id = self.dynamodb.get_item(
            TableName=self.helper.sessions_table_name,
            Key={protocol.A_SESSION_ID: {"S": self.session_id}},
            ConsistentRead=True,
        )["Item"][protocol.A_CONNECTION_ID]["S"]

    # --- the three measurements ------------------------------------------------------------------------
    def _invoke(self, function_name: str) -> float:
        started = time.perf_counter()
        response = self.lambda_client.invoke(FunctionName=function_name, Payload=b'{"order": 1}')
        body = response["Payload"].read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.get("FunctionError"):
            raise InvocationFailed(f"{function_name} failed: {body[:300].decode('utf-8', 'replace')}")
        return elapsed

    def _floor(self) -> float:
        template = self.debugger.invokes[-1]
        request_id = "bench-floor-" + uuid.uuid4().hex
        message = dict(template, requestId=request_id)
        stored_request = {key: value for key, value in message.items() if key != "credentials"}
        item = {
            protocol.A_REQUEST_ID: {"S": request_id},
            protocol.A_SESSION_ID: {"S": self.session_id},
            protocol.A_CONNECTION_ID: {"S": self.connection_id},
            protocol.A_REQUEST: {"S": protocol.encode(stored_request)},
            protocol.A_ENVIRONMENT: {"M": {k: {"S": v} for k, v in message["environment"].items()}},
            protocol.A_FUNCTION_NAME: {"S": self.function_name},
            protocol.A_TTL: {"N": str(int(time.time()) + protocol.DEBUGGER_ITEM_TTL_SECONDS)},
        }
        stored = self.debugger.expect_stored(request_id)
        started = time.perf_counter()
        self.dynamodb.put_item(TableName=self.helper.debugger_table_name, Item=item)
        self.management.post_to_connection(
            ConnectionId=self.connection_id, Data=protocol.encode(message).encode("utf-8")
        )
        if not stored.wait(MESSAGE_TIMEOUT_SECONDS):
            raise RuntimeError("the floor's answer was never stored")
        answer = self.dynamodb.get_item(
            TableName=self.helper.debugger_table_name,
            Key={protocol.A_REQUEST_ID: {"S": request_id}},
            ConsistentRead=True,
            ProjectionExpression="#code, #response",
            ExpressionAttributeNames={"#code": protocol.A_RESPONSE_CODE, "#response": protocol.A_RESPONSE},
        )["Item"]
        elapsed = (time.perf_counter() - started) * 1000
        if answer[protocol.A_RESPONSE] != {"S": ANSWER}:
            raise RuntimeError(f"the floor read {answer}")
        return elapsed

    def _layer_access_keys(self) -> set[str]:
        from moto.sts.models import sts_backends

        session_name = f"plldb-{self.function_name}"
        return {
            role.access_key_id
            for backend in sts_backends.values()
            for partition in backend.values()
            for role in partition.assumed_roles
            if role.session_name == session_name
        }

    def run(self) -> dict[str, Any]:
        with self.reads.installed():
            self.log(f"Warming up ({WARM_UP_ROUNDS} rounds)")
            for _ in range(WARM_UP_ROUNDS):
                self._invoke(self.plain_function)
                self._invoke(self.function_name)
                self._floor()
            layer_keys = self._layer_access_keys()
            reads_before = self.reads.reads_by(layer_keys)
            plain: list[float] = []
            layer: list[float] = []
            floor: list[float] = []
            failures: list[str] = []
            self.log(f"Measuring {self.invocations} rounds")
            for _ in range(self.invocations):
                plain.append(self._invoke(self.plain_function))
                try:
                    layer.append(self._invoke(self.function_name))
                except InvocationFailed as exc:
                    failures.append(str(exc))
                floor.append(self._floor())
            layer_reads = self.reads.reads_by(layer_keys) - reads_before
        if not layer:
            raise InvocationFailed(f"every invocation through the layer failed, e.g. {failures[0]}")
        baseline = percentile(plain, 0.5)
        overhead = [max(0.0, value - baseline) for value in layer]
        ratio = percentile(overhead, 0.5) / percentile(floor, 0.5)
        return {
            "invocations": self.invocations,
            "plain_invoke_ms": summary(plain),
            "layer_invoke_ms": summary(layer),
            "layer_overhead_ms": summary(overhead),
            "floor_ms": summary(floor),
            "overhead_to_floor_p50_ratio": round(ratio, 3),
            "target_ratio": TARGET_RATIO,
            "target_met": ratio <= TARGET_RATIO and not failures,
            "layer_failures": len(failures),
            "layer_failure_examples": failures[:3],
            "layer_dynamodb_reads_per_invocation": round(layer_reads / self.invocations, 2),
            "floor_dynamodb_reads_per_invocation": 1,
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "load_average": [round(v, 2) for v in os.getloadavg()],
            },
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def markdown(report: dict[str, Any]) -> str:
    rows = [
        ("plain invoke (no plldb)", report["plain_invoke_ms"]),
        ("invoke through the layer", report["layer_invoke_ms"]),
        ("**layer overhead** (layer minus plain p50)", report["layer_overhead_ms"]),
        ("**floor** (put, post, reply via $default, read)", report["floor_ms"]),
    ]
    lines = [
        "# Debugger layer overhead",
        "",
        f"{report['invocations']} rounds on the local cloud, {report['measured_at']} "
        f"(Python {report['machine']['python']}, {report['machine']['cpus']} CPUs, "
        f"load {report['machine']['load_average']}).",
        "",
        "| ms | p50 | p95 | p99 | mean |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {name} | {s['p50']} | {s['p95']} | {s['p99']} | {s['mean']} |" for name, s in rows]
    verdict = "met" if report["target_met"] else "NOT met"
    lines += [
        "",
        f"Overhead p50 / floor p50 = **{report['overhead_to_floor_p50_ratio']}** "
        f"(target ≤ {report['target_ratio']}: {verdict}).",
        "",
        f"DynamoDB reads per invocation: layer {report['layer_dynamodb_reads_per_invocation']}, "
        f"floor {report['floor_dynamodb_reads_per_invocation']}.",
        "",
        "How it is measured: see the docstring of `plldb/bench.py`.",
        "",
    ]
    if report["layer_failures"]:
        lines[-3:-3] = [
            "",
            f"**{report['layer_failures']} invocation(s) through the layer failed** (not timed), e.g.:",
            "",
            *(f"- `{example}`" for example in report["layer_failure_examples"]),
        ]
    return "\n".join(lines)


def write_results(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "layer_overhead.json"
    markdown_path = directory / "layer_overhead.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown_path.write_text(markdown(report), encoding="utf-8")
    return json_path, markdown_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plldb.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=DEFAULT_INVOCATIONS, help="measured rounds")
    parser.add_argument("--output-dir", type=Path, default=Path("bench") / "results")
    args = parser.parse_args(argv)
    if args.invocations < 1:
        parser.error("--invocations must be at least 1")

    from plldb.localcloud.cloud import LocalCloud

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with (
        tempfile.TemporaryDirectory(prefix="plldb-bench-") as work_dir,
        LocalCloud(work_dir=Path(work_dir)) as cloud,
    ):
        saved = {
            name: os.environ.get(name) for name in [*cloud.environment(), "AWS_PROFILE", "AWS_SESSION_TOKEN"]
        }
        os.environ.update(cloud.environment())
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        bench = LayerBench(cloud.session(), args.invocations, log)
        try:
            bench.set_up()
            report = bench.run()
        finally:
            # The debugger stays connected: stopping the cloud closes it without running $disconnect.
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    json_path, markdown_path = write_results(report, args.output_dir)
    print(markdown(report))
    log(f"Wrote {json_path} and {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
