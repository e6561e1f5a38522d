"""The benchmark: its statistics, its floor, its timeline, its verdicts, its shims for the original
plldb, and a quick run of the whole thing end to end. Nothing here depends on the machine's speed:
no test asserts a duration, only what the benchmark computes from given numbers and what a run records.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from plldb import protocol
from plldb.bench import floor, original
from plldb.bench.attach_bench import differences, write_project
from plldb.bench.driver import StoredEvents, event_of_size
from plldb.bench.dynamodb_counter import DynamoRequest, tally
from plldb.bench.latency import level_summary
from plldb.bench.report import commit_facts, markdown
from plldb.bench.stats import percentile, summary
from plldb.bench.timeline import breakdown, invocation_phases

SUMMARY_KEYS = {"p50", "p95", "p99", "mean", "n"}
REPOSITORY = Path(__file__).resolve().parents[1]


# --- statistics and generated inputs ---------------------------------------------------------------------
def test_percentile_interpolates_between_closest_ranks() -> None:
    assert percentile([10.0, 20.0, 30.0, 40.0], 0.5) == 25.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 0.99) == pytest.approx(39.7)
    assert percentile([7.0], 0.95) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200))
def test_summary_percentiles_are_ordered_and_within_the_range(values: list[float]) -> None:
    stats = summary(values)
    assert min(values) - 0.01 <= stats["p50"] <= stats["p95"] <= stats["p99"] <= max(values) + 0.01
    assert stats["n"] == len(values)


@given(st.integers(min_value=11, max_value=300_000))
def test_events_have_exactly_the_requested_size(size: int) -> None:
    event = event_of_size(size)
    assert len(event) == size
    assert set(json.loads(event)) == {"data"}


def test_generated_project_states_handler_and_code_on_each_function(tmp_path: Path) -> None:
    assert write_project(tmp_path, 3) == ["Echo001", "Echo002", "Echo003"]
    template = yaml.safe_load((tmp_path / "template.yaml").read_text())
    assert template["Resources"] == {
        name: {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Runtime": "python3.13",
                "Timeout": 10,
                "Handler": "app.handler",
                "CodeUri": "src/",
            },
        }
        for name in ("Echo001", "Echo002", "Echo003")
    }
    assert "Globals" not in template  # the original plldb reads Handler and CodeUri from the function
    assert (tmp_path / "src" / "app.py").read_text() == "def handler(event, context):\n    return event\n"


# --- DynamoDB requests --------------------------------------------------------------------------------------
def test_tally_divides_reads_and_writes_per_caller_and_leaves_the_sweep_out_of_the_total() -> None:
    requests = [
        DynamoRequest(0.0, "LAYER", "GetItem"),
        DynamoRequest(0.1, "LAYER", "GetItem"),
        DynamoRequest(0.2, "LAYER", "PutItem"),
        DynamoRequest(0.3, "ROUTE", "UpdateItem"),
        DynamoRequest(0.4, "ROUTE", "DescribeTable"),  # neither a read nor a write of items
        DynamoRequest(0.5, "SWEEP", "Scan"),
    ]
    labels = {"LAYER": "layer", "ROUTE": "routes ($default)", "SWEEP": "manager"}
    assert tally(requests, labels.__getitem__, 2) == {
        "layer": {"reads": 1.0, "writes": 0.5},
        "manager": {"reads": 0.5, "writes": 0.0},
        "routes ($default)": {"reads": 0.0, "writes": 0.5},
        "total": {"reads": 1.0, "writes": 1.0},
    }


def _request(
    at: float, done: float, key: str, action: str, delivery: str = "d1", status: int = 200
) -> DynamoRequest:
    return DynamoRequest(at, key, action, done=done, table="T", delivery_id=delivery, status=status)


INVOCATION = [
    _request(1.000, 1.001, "LAYER", "PutItem"),
    _request(1.010, 1.012, "DISPATCHER", "UpdateItem"),
    _request(1.013, 1.014, "LAYER", "GetItem"),  # an early read: nothing stored yet
    _request(1.030, 1.032, "ROUTES", "UpdateItem"),
    _request(1.036, 1.038, "LAYER", "GetItem"),  # the read that sees the answer
]


def test_an_invocations_phases_come_from_the_requests_on_its_item() -> None:
    assert invocation_phases(INVOCATION, [[0.990, 1.045]]) == pytest.approx(
        {
            "before_put": 10.0,
            "put": 1.0,
            "to_dispatcher": 9.0,
            "dispatcher_on_item": 2.0,
            "to_answer": 18.0,
            "answer_update": 2.0,
            "put_to_answer": 29.0,
            "polling_lag": 6.0,
            "after_read": 7.0,
            "layer_reads": 2.0,
        }
    )


def test_the_read_that_saw_the_answer_is_the_layers_last_even_when_it_arrived_first() -> None:
    """Under load a read can arrive while the answer's UpdateItem is still running and be served after it:
    the layer reads no more, so that read is the one that saw the answer."""
    overlapping = [
        *INVOCATION[:3],
        _request(1.030, 1.034, "ROUTES", "UpdateItem"),
        _request(1.031, 1.036, "LAYER", "GetItem"),
    ]
    phases = invocation_phases(overlapping, [[0.990, 1.045]])
    assert phases is not None
    assert (phases["polling_lag"], phases["after_read"], phases["layer_reads"]) == pytest.approx(
        (2.0, 9.0, 2.0)
    )
    # Reads that all ended before the answer began saw nothing: the record is incomplete.
    assert invocation_phases([*INVOCATION[:3], _request(1.030, 1.034, "ROUTES", "UpdateItem")]) is None


def test_an_incomplete_or_unmeasured_invocation_has_no_phases() -> None:
    assert invocation_phases(INVOCATION[:3]) is None  # no answer stored
    assert invocation_phases(INVOCATION[1:]) is None  # the item's PutItem is missing
    refused = [*INVOCATION[:3], _request(1.030, 1.032, "ROUTES", "UpdateItem", status=400), INVOCATION[4]]
    assert invocation_phases(refused) is None  # a failed condition stores nothing
    assert invocation_phases(INVOCATION, [[2.0, 3.0]]) is None  # a warm-up round, not measured


def test_floor_rounds_are_matched_to_their_items_by_delivery_id() -> None:
    other = [_request(r.at + 0.002, r.done + 0.002, r.access_key, r.action, "d2") for r in INVOCATION]
    result = breakdown([*INVOCATION, *other], "T", [[0.990, 1.045, "d1"], [0.999, 1.060, "d2"]])
    assert result["n"] == 2
    assert result["before_put"] == pytest.approx((10.0 + 3.0) / 2)
    assert breakdown(INVOCATION, "another table") == {"n": 0}


# --- the floor ------------------------------------------------------------------------------------------------
def test_the_floor_stack_has_the_unavoidable_pieces_only() -> None:
    resources = floor.template()["Resources"]
    assert {name: resource["Type"] for name, resource in resources.items()} == {
        "Invocations": "AWS::DynamoDB::Table",
        "Sessions": "AWS::DynamoDB::Table",
        "Role": "AWS::IAM::Role",
        "Relay": "AWS::Lambda::Function",
        "Answer": "AWS::Lambda::Function",
        "Connect": "AWS::Lambda::Function",
        "Api": "AWS::ApiGatewayV2::Api",
        "ConnectIntegration": "AWS::ApiGatewayV2::Integration",
        "AnswerIntegration": "AWS::ApiGatewayV2::Integration",
        "ConnectRoute": "AWS::ApiGatewayV2::Route",
        "DefaultRoute": "AWS::ApiGatewayV2::Route",
        "Stage": "AWS::ApiGatewayV2::Stage",
        "ConnectPermission": "AWS::Lambda::Permission",
        "AnswerPermission": "AWS::Lambda::Permission",
    }
    assert resources["Invocations"]["Properties"]["KeySchema"] == [
        {"AttributeName": protocol.A_CALLER, "KeyType": "HASH"},
        {"AttributeName": protocol.A_DELIVERY_ID, "KeyType": "RANGE"},
    ]
    for code in (floor.RELAY_CODE, floor.ANSWER_CODE, floor.CONNECT_CODE):
        compile(code, "index.py", "exec")
    # The relay reads the item, then the session, then posts; the answer makes one conditional update.
    calls = re.findall(r"\b(get_item|put_item|update_item|post_to_connection)\(", floor.RELAY_CODE)
    assert calls == ["get_item", "get_item", "post_to_connection"]
    assert re.findall(r"\b(get_item|put_item|update_item)\(", floor.ANSWER_CODE) == ["update_item"]


def test_the_stored_watcher_reports_only_answers_stored_in_its_table() -> None:
    reported: list[tuple[str, str]] = []
    watcher = floor.StoredWatcher("FloorTable")
    key = {protocol.A_CALLER: {"S": "AROAX:fn"}, protocol.A_DELIVERY_ID: {"S": "ab" * 16}}
    watcher("UpdateItem", {"TableName": "FloorTable", "Key": key}, 200)  # nobody listening yet
    watcher.attach(lambda caller, delivery: reported.append((caller, delivery)))
    watcher("UpdateItem", {"TableName": "FloorTable", "Key": key}, 400)  # a failed condition
    watcher("UpdateItem", {"TableName": "OtherTable", "Key": key}, 200)
    watcher("GetItem", {"TableName": "FloorTable", "Key": key}, 200)
    watcher("UpdateItem", {"TableName": "FloorTable", "Key": key}, 200)
    assert reported == [("AROAX:fn", "ab" * 16)]


def test_the_driver_learns_stored_answers_from_its_input() -> None:
    events = StoredEvents()
    waiting = events.expect("AROAX:fn", "d1")
    events.read(io.StringIO("stored AROAX:fn d1\nnoise\nstored AROAX:fn d2\n"))
    assert waiting.is_set()
    assert events.expect("AROAX:fn", "d2").is_set()
    assert not events.expect("AROAX:fn", "d3").is_set()


# --- verdicts ----------------------------------------------------------------------------------------------------
def _result(plain: list[float], target: list[float], floor_ms: list[float]) -> dict[str, Any]:
    hops = {name: [1.0] for name in ("put", "dispatch", "answer", "read")}
    return {"plain": plain, "target": target, "floor": floor_ms, "floor_hops": hops, "failures": []}


def test_overhead_is_judged_against_the_floor_and_the_p99_target_at_every_concurrency() -> None:
    level = level_summary(
        1, _result([5.0, 5.0, 5.0], [35.0, 41.0, 45.0], [30.0, 30.0, 30.0]), judge_ratio=True
    )
    assert level["overhead_ms"]["p50"] == 36.0
    assert level["overhead_to_floor_p50_ratio"] == 1.2
    assert level["ratio_target_met"] is True  # 1.2 at concurrency 1 is within the target
    assert level["p99_target_met"] is True
    busy = level_summary(10, _result([5.0] * 3, [95.0, 125.0, 155.0], [100.0] * 3), judge_ratio=True)
    assert "ratio_target_met" not in busy  # the ratio target is set at concurrency 1 only
    assert busy["p99_target_met"] is False  # the p99 target holds everywhere: "not met" here
    assert busy["floor_ms"]["p99"] == 100.0  # reported next to it, not instead of it


def test_a_restore_that_left_something_is_named_field_by_field() -> None:
    before = {"fn": {"configuration": {"Timeout": 3, "Layers": None}, "aliases": []}}
    after = {"fn": {"configuration": {"Timeout": 900, "Layers": None}, "aliases": [("live", "2")]}}
    assert differences(before, before) == []
    assert differences(before, after) == ["fn aliases: [] -> [('live', '2')]", "fn Timeout: 3 -> 900"]


def test_the_report_records_the_commit_it_measured() -> None:
    facts = commit_facts()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True)
    assert facts["sha"] == head.stdout.strip()
    assert isinstance(facts["dirty"], bool)


# --- the original plldb's shims ---------------------------------------------------------------------------------
def _sitecustomize(environment: dict[str, str]) -> Any:
    namespace: dict[str, Any] = {}
    # Here `plldb` is this plldb, which has no stack_discovery: the module only defines its rewrite.
    exec(compile(original.SITECUSTOMIZE, "sitecustomize.py", "exec"), namespace)  # noqa: S102

    def local(url: str) -> str:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in environment.items():
                patch.setenv(name, value)
            return str(namespace["_local"](url))

    return local


@given(
    api=st.from_regex(r"[a-z0-9]{10}", fullmatch=True),
    region=st.sampled_from(["us-east-1", "eu-west-3", "ap-southeast-2"]),
    stage=st.sampled_from(["prod", "dev", "floor"]),
    scheme=st.sampled_from(["wss", "https"]),
    override=st.sampled_from(["http://127.0.0.1:4510", "https://127.0.0.1:8443"]),
)
def test_the_originals_urls_are_rewritten_exactly_as_this_plldb_rewrites_its_own(
    api: str, region: str, stage: str, scheme: str, override: str
) -> None:
    url = f"{scheme}://{api}.execute-api.{region}.amazonaws.com/{stage}"
    environment = {protocol.EXECUTE_API_ENDPOINT_VARIABLE: override}
    assert _sitecustomize(environment)(url) == protocol.execute_api_url(url, environment)


def test_without_the_override_the_originals_urls_are_left_alone() -> None:
    url = "wss://abcdefghij.execute-api.us-east-1.amazonaws.com/prod"
    assert _sitecustomize({protocol.EXECUTE_API_ENDPOINT_VARIABLE: ""})(url) == url


def test_the_originals_layer_runs_the_runtime_beside_its_bootstrap() -> None:
    runtime = b"print('the original runtime, unchanged')\n"
    with zipfile.ZipFile(io.BytesIO(original.shimmed_layer(runtime))) as layer:
        assert layer.namelist() == ["bin/bootstrap", "bin/lambda_runtime.py"]
        assert layer.getinfo("bin/bootstrap").external_attr >> 16 == 0o100755
        assert (
            layer.read("bin/bootstrap")
            == b'#!/bin/bash\nexec python3 "$(dirname "$0")/lambda_runtime.py" "$@"\n'
        )
        assert layer.read("bin/lambda_runtime.py") == runtime


class _FakeLambda:
    def __init__(self, answer: bytes, error: str | None = None) -> None:
        self.answer, self.error, self.events = answer, error, []

    def invoke(self, FunctionName: str, Payload: bytes) -> dict[str, Any]:  # noqa: N803 - boto3's names
        self.events.append((FunctionName, json.loads(Payload)))
        response: dict[str, Any] = {"Payload": io.BytesIO(self.answer)}
        if self.error:
            response["FunctionError"] = self.error
        return response


def test_the_rest_api_stand_in_invokes_the_proxy_integration_as_api_gateway_does() -> None:
    fake = _FakeLambda(b'{"statusCode": 201, "body": "{\\"sessionId\\": \\"s\\"}"}')
    shim = original.RestApiShim.__new__(original.RestApiShim)
    shim.lambda_client = fake
    assert shim.invoke("/prod/sessions", {"Content-Type": "application/json"}, '{"stackName": "x"}') == (
        201,
        '{"sessionId": "s"}',
    )
    ((function, event),) = fake.events
    assert function == "plldb-restapi"
    assert {key: event[key] for key in ("httpMethod", "path", "resource", "body", "isBase64Encoded")} == {
        "httpMethod": "POST",
        "path": "/sessions",
        "resource": "/sessions",
        "body": '{"stackName": "x"}',
        "isBase64Encoded": False,
    }
    failing = original.RestApiShim.__new__(original.RestApiShim)
    failing.lambda_client = _FakeLambda(b'{"errorMessage": "boom"}', error="Unhandled")
    assert failing.invoke("/prod/sessions", {}, "{}") == (502, '{"message": "Internal server error"}')


def test_an_explicit_python_is_used_and_a_missing_one_is_one_clear_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert original.find_python("/opt/python3.13") == "/opt/python3.13"
    monkeypatch.setenv("PYENV_ROOT", "/nonexistent")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(
        original.Unavailable, match=r"^no Python 3\.13 \(install one with pyenv, or pass --original-python\)$"
    ):
        original.find_python(None)


# --- a quick run of the whole benchmark ---------------------------------------------------------------------------
@pytest.mark.slow
def test_quick_run_writes_a_complete_report(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "plldb.bench", "--quick", "--no-original", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["mode"] == "quick"
    assert report["commit"]["sha"] == commit_facts()["sha"]
    assert set(report["machine"]) >= {"cpu_model", "cpus", "python", "os", "moto", "load_average_at_end"}

    levels = report["real_path"]["by_concurrency"]
    assert list(levels) == ["1", "2"]
    for concurrency, rounds in (("1", 3), ("2", 4)):
        level = levels[concurrency]
        assert level["failures"] == 0, level["failure_examples"]
        for name in ("plain_invoke_ms", "target_invoke_ms", "overhead_ms", "floor_ms"):
            assert set(level[name]) == SUMMARY_KEYS
            assert level[name]["n"] == rounds
        assert level["p99_target_met"] == (level["overhead_ms"]["p99"] < 100)
        assert level["phases_p50_ms"]["floor"]["n"] == rounds
    assert levels["1"]["ratio_target_met"] == (levels["1"]["overhead_to_floor_p50_ratio"] <= 1.2)
    assert "ratio_target_met" not in levels["2"]
    assert levels["1"]["phases_p50_ms"]["attached"]["n"] == 3

    for path in ("real_path", "scripted"):
        counted = report[path]["dynamodb_per_invocation"]
        assert counted["invocations"] == 2
        assert counted["layer"]["writes"] == 1.0  # its own item, once
        assert counted["layer"]["reads"] >= 1.0
    hold = report["scripted"]["breakpoint_hold"]
    assert hold["per_second"]["layer"]["reads"] > 0
    assert report["scripted"]["by_concurrency"]["1"]["failures"] == 0

    payloads = report["real_path"]["payload_round_trip"]
    assert {label: row["works"] for label, row in payloads.items()} == {"1 KB": True, "100 KB": True}
    assert report["real_path"]["restore_differences"] == []
    assert report["real_path"]["works_after_detach"] is True

    attach = report["attach"]
    assert list(attach["by_function_count"]) == ["1", "2"]
    for cycle in attach["by_function_count"].values():
        assert len(cycle["runs"]) == 1
        assert cycle["restore_exact"] is True
    assert len(attach["startup_seconds"]["runs"]) == 1
    assert report["credentials_at_rest"]["stored_with_credentials"] == 0
    assert report["credentials_at_rest"]["issued_credentials_searched"] > 0
    assert report["original"] == {"skipped": "--no-original"}

    text = (tmp_path / "benchmark.md").read_text()
    assert text == markdown(report) + "\n"
    for heading in (
        "# plldb benchmark",
        "## Overhead per invocation: the real path (`plldb attach` and its worker)",
        "### Concurrency 1 (3 rounds)",
        "### Concurrency 2 (4 rounds)",
        "## Breakdown: the cloud side alone (scripted debugger)",
        "## DynamoDB requests",
        "## Payload round trip (event echoed back by the real worker)",
        "## Attach and detach (`plldb attach --json` as a subprocess)",
        "## Credentials at rest",
        "Not measured: --no-original.",
    ):
        assert heading in text
