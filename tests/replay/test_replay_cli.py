"""`plldb recordings` and `plldb replay` as a developer runs them, on recordings made by attach's recorder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plldb.local.recordings import format_size, recordings_folder
from tests.replay.replay_support import (
    FUNCTION_ARN,
    FUNCTION_NAME,
    RECORDED_AT,
    Recorded,
    copy_orders_app,
    developer_environment,
    plldb,
    record,
    run_pytest,
)

ORDER = {"id": "o-17", "items": [{"price": 2.5, "quantity": 2}]}
DEPLOYED = {"GREETING": "Hello", "TABLE_NAME": "orders-Orders-XYZ", "AWS_REGION": "eu-west-1"}
RUNTIME_WARNING = "Warning: No Python matching the Runtime"  # only where python3.12 is missing


def answer(request_id: str, event: dict, **changes: object) -> dict:
    """What OrderFunction returns for ``event`` replayed with the recorded context."""
    result = {
        "order": event["id"],
        "total": 5.0,
        "greeting": "Hello",
        "table": None,
        "function": FUNCTION_NAME,
        "requestId": request_id,
        "memory": "512",
        "arn": FUNCTION_ARN,
        "withinBudget": True,
        "identity": None,
        "custom": None,
    }
    result.update(changes)
    return result


def stderr_lines(completed) -> list[str]:
    return [line for line in completed.stderr.splitlines() if not line.startswith(RUNTIME_WARNING)]


@pytest.fixture
def app(tmp_path) -> Path:
    return copy_orders_app(tmp_path / "orders")


def test_recordings_lists_them_newest_first(app):
    first = record(
        app, Recorded(event=ORDER, request_id="aaaa1111-r", payload={"n": 1}, environment=DEPLOYED)
    )
    failed = record(
        app,
        Recorded(
            event=ORDER,
            request_id="bbbb2222-r",
            error={"errorType": "OrderRejected", "errorMessage": "no", "stackTrace": []},
            at=RECORDED_AT + 61.5,
            duration_ms=1234.4,
        ),
    )
    environment = developer_environment(TZ="UTC")
    completed = plldb(app, "recordings", env=environment)
    assert (completed.returncode, completed.stderr) == (0, "")
    assert completed.stdout.splitlines() == [
        "ID                            FUNCTION       TIME                 RESULT                 SIZE    DURATION",
        f"{failed.id}  OrderFunction  2026-01-01 00:01:01  error (OrderRejected)  "
        f"{format_size(failed.size):6}  1234 ms",
        f"{first.id}  OrderFunction  2026-01-01 00:00:00  ok                     {format_size(first.size):6}  12 ms",
    ]
    completed = plldb(app, "recordings", "--json", env=environment)
    assert completed.returncode == 0
    assert json.loads(completed.stdout) == [
        {
            "id": "20260101T000101500Z-bbbb2222",
            "function": "OrderFunction",
            "functionName": FUNCTION_NAME,
            "stack": "orders",
            "requestId": "bbbb2222-r",
            "recordedAt": "2026-01-01T00:01:01.500Z",
            "result": "error",
            "errorType": "OrderRejected",
            "durationMs": 1234.4,
            "size": failed.size,
            "path": str(failed.path),
        },
        {
            "id": "20260101T000000000Z-aaaa1111",
            "function": "OrderFunction",
            "functionName": FUNCTION_NAME,
            "stack": "orders",
            "requestId": "aaaa1111-r",
            "recordedAt": "2026-01-01T00:00:00.000Z",
            "result": "ok",
            "errorType": None,
            "durationMs": 12.5,
            "size": first.size,
            "path": str(first.path),
        },
    ]
    completed = plldb(app, "recordings", "--function", "Payment*", env=environment)
    assert completed.stdout == f"No recording matches in {recordings_folder(app)} (2 recordings in all).\n"
    completed = plldb(app, "recordings", "--json", "--function", "orders-Order*", env=environment)
    assert [entry["id"] for entry in json.loads(completed.stdout)] == [failed.id, first.id]


def test_recordings_says_where_it_looked_when_there_are_none(app):
    completed = plldb(app, "recordings")
    assert (completed.returncode, completed.stderr) == (0, "")
    assert completed.stdout == (
        f"No recordings in {recordings_folder(app)}. plldb attach records every invocation it runs here.\n"
    )
    assert not (app / ".plldb").exists()


def test_replay_last_gives_the_recorded_result(app):
    recorded = record(
        app,
        Recorded(
            event=ORDER,
            request_id="c0ffee00-r",
            payload=answer("c0ffee00-r", ORDER, custom={"tenant": "acme"}, identity="eu-west-1:1234"),
            environment=DEPLOYED,
            client_context='{"custom": {"tenant": "acme"}}',
            cognito_identity='{"cognitoIdentityId": "eu-west-1:1234"}',
        ),
    )
    completed = plldb(app, "replay", "--last", env=developer_environment(TZ="UTC"))
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == answer(
        "c0ffee00-r", ORDER, custom={"tenant": "acme"}, identity="eu-west-1:1234"
    )
    assert stderr_lines(completed) == [
        "Warning: the function has these variables in AWS, which replay without a value (the recording has "
        "their names only; 'plldb attach --record-env' keeps values): TABLE_NAME.",
        "orders module loaded",
        "pricing order o-17",
        f"Same result as recording {recorded.id} (OrderFunction, 2026-01-01 00:00:00).",
    ]


def test_replay_uses_the_recorded_values_of_attach_record_env(app):
    deployed = {**DEPLOYED, "GREETING": "Bonjour"}
    expected = answer("r-values", ORDER, greeting="Bonjour", table="orders-Orders-XYZ")
    record(
        app,
        Recorded(event=ORDER, request_id="r-values", payload=expected, environment=deployed),
        record_env=True,
    )
    completed = plldb(app, "replay", "r-values")
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == expected
    assert stderr_lines(completed)[:2] == ["orders module loaded", "pricing order o-17"]


def test_a_changed_handler_gives_a_diff_and_exit_status_1(app):
    recorded = record(
        app, Recorded(event=ORDER, request_id="r-diff", payload=answer("r-diff", ORDER), environment=DEPLOYED)
    )
    source = app / "orders" / "app.py"
    source.write_text(source.read_text().replace('os.environ["GREETING"]', 'os.environ["GREETING"].upper()'))
    completed = plldb(app, "replay", "--function", "OrderFunction", env=developer_environment(TZ="UTC"))
    assert completed.returncode == 1
    assert json.loads(completed.stdout)["greeting"] == "HELLO"
    assert stderr_lines(completed)[3:] == [
        f"The result differs from recording {recorded.id} (OrderFunction, 2026-01-01 00:00:00):",
        "--- recorded",
        "+++ replayed",
        "@@ -3,7 +3,7 @@",
        '     "arn": "arn:aws:lambda:eu-west-1:123456789012:function:orders-OrderFunction-A1B2C3",',
        '     "custom": null,',
        '     "function": "orders-OrderFunction-A1B2C3",',
        '-    "greeting": "Hello",',
        '+    "greeting": "HELLO",',
        '     "identity": null,',
        '     "memory": "512",',
        '     "order": "o-17",',
    ]


def test_a_recorded_error_replays_as_the_same_error(app):
    event = {"id": "o-9", "reject": True, "items": []}
    record(
        app,
        Recorded(
            event=event,
            request_id="r-error",
            error={
                "errorType": "OrderRejected",
                "errorMessage": "order o-9 rejected",
                "stackTrace": ['  File "/var/task/app.py", line 17, in handler\n'],
            },
        ),
    )
    completed = plldb(app, "replay", "--last")
    assert completed.returncode == 0, completed.stderr
    error = json.loads(completed.stdout)
    assert (error["errorType"], error["errorMessage"]) == ("OrderRejected", "order o-9 rejected")
    assert stderr_lines(completed)[-1].startswith("Same result as recording ")


def test_aws_calls_use_your_credentials_or_fail_at_once_with_no_aws(app):
    developer = developer_environment(
        AWS_ACCESS_KEY_ID="AKIADEVELOPER0000001", AWS_SECRET_ACCESS_KEY="developer-secret-key-0000000000"
    )
    event = {"id": "o-1", "items": [{"price": 2.5, "quantity": 2}], "aws": "credentials"}
    record(
        app,
        Recorded(
            event=event,
            request_id="r-creds",
            payload=answer("r-creds", event, accessKey="AKIADEVELOPER0000001"),
        ),
    )
    completed = plldb(app, "replay", "--last", env=developer)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["accessKey"] == "AKIADEVELOPER0000001"

    completed = plldb(app, "replay", "--last", "--no-aws", env=developer)
    assert completed.returncode == 1
    assert json.loads(completed.stdout)["accessKey"] is None
    lines = stderr_lines(completed)
    assert lines[0].startswith(
        "--no-aws: the handler has no AWS credentials and its AWS endpoint is a closed local port (127.0.0.1:"
    )
    assert lines[0].endswith("); its AWS calls fail at once.")

    event = {"id": "o-2", "items": [], "aws": "call"}
    record(
        app,
        Recorded(
            event=event,
            request_id="r-call",
            at=RECORDED_AT + 1,
            payload=answer("r-call", event, total=0, aws="NoCredentialsError: Unable to locate credentials"),
        ),
    )
    completed = plldb(app, "replay", "r-call", "--no-aws", env=developer)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["aws"] == "NoCredentialsError: Unable to locate credentials"


def test_to_test_writes_a_test_that_passes_and_fails_when_the_handler_changes(app):
    recorded = record(
        app,
        Recorded(
            event=ORDER,
            request_id="r-test",
            payload=answer("r-test", ORDER, custom={"tenant": "acme"}),
            environment=DEPLOYED,
            client_context='{"custom": {"tenant": "acme"}}',
        ),
    )
    tests = app / "tests"
    tests.mkdir()
    completed = plldb(app, "replay", recorded.id, "--to-test", "tests")
    name = "test_replay_orderfunction_20260101t000000000z_rtest"
    assert (completed.returncode, completed.stderr) == (0, "")
    assert completed.stdout == (
        f"Wrote tests/{name}.py (with tests/{name}.event.json, tests/{name}.result.json). "
        f"Run it with: pytest tests/{name}.py\n"
    )
    assert sorted(path.name for path in tests.iterdir()) == [
        f"{name}.event.json",
        f"{name}.py",
        f"{name}.result.json",
    ]
    assert (tests / f"{name}.event.json").read_text() == recorded.event_json
    source = (tests / f"{name}.py").read_text()
    assert "# handler needs them: TABLE_NAME.\n" in source

    passed = run_pytest(tests / f"{name}.py")
    assert passed.returncode == 0, passed.stdout
    assert passed.stdout.splitlines()[-1].startswith("1 passed")

    handler = app / "orders" / "app.py"
    handler.write_text(handler.read_text().replace('"total": pricing.total', '"total": 2 * pricing.total'))
    failed = run_pytest(tests / f"{name}.py")
    assert failed.returncode == 1
    assert "E         {'total': 10.0} != {'total': 5.0}" in failed.stdout.splitlines()
    # pytest shortens the summary line to the terminal's width, or not at all where CI is set.
    summary = [line.split(" - ")[0] for line in failed.stdout.splitlines() if line.startswith("FAILED ")]
    assert summary == [f"FAILED {name}.py::{name}"]


def test_to_test_of_an_error_asserts_its_type_and_message(app):
    event = {"id": "o-9", "reject": True, "items": []}
    recorded = record(
        app,
        Recorded(
            event=event,
            request_id="r-reject",
            error={"errorType": "OrderRejected", "errorMessage": "order o-9 rejected", "stackTrace": []},
        ),
    )
    tests = app / "tests"
    tests.mkdir()
    completed = plldb(app, "replay", "--last", "--to-test", "tests")
    assert completed.returncode == 0, completed.stderr
    test_file = tests / "test_replay_orderfunction_20260101t000000000z_rreject.py"
    assert not test_file.with_suffix(".result.json").exists()
    source = test_file.read_text()
    assert 'ERROR_TYPE = "OrderRejected"\nERROR_MESSAGE = "order o-9 rejected"\n' in source
    assert f"`plldb replay {recorded.id} --to-test`" in source
    passed = run_pytest(test_file)
    assert passed.returncode == 0, passed.stdout

    handler = app / "orders" / "app.py"
    handler.write_text(handler.read_text().replace('rejected")', 'refused")'))
    failed = run_pytest(test_file)
    assert failed.returncode == 1
    assert "AssertionError: assert 'order o-9 refused' == 'order o-9 rejected'" in failed.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ("replay",),
            "Error: Which recording? Give its id, --last, or --function F for the newest of F. "
            "Run 'plldb recordings' to see the ids.",
        ),
        (
            ("replay", "20260101", "--last"),
            "Error: Give a recording id or --last, not both. Run 'plldb recordings' to see the ids.",
        ),
        (
            ("replay", "--last", "--to-test", "tests", "--debugpy"),
            "Error: --to-test writes a test and runs nothing: --debugpy, --pycharm, --no-aws and --python do "
            "not apply. Run the written test under your debugger instead.",
        ),
        (
            ("replay", "--last", "--wait-for-client"),
            "Error: --wait-for-client needs --debugpy. Add --debugpy.",
        ),
        (
            ("replay", "--last", "--write-vscode"),
            "Error: --write-vscode needs --debugpy. Add --debugpy.",
        ),
        (
            ("replay", "--last", "--debugpy-allow-remote"),
            "Error: --debugpy-allow-remote needs --debugpy. Add --debugpy.",
        ),
        (
            ("replay", "--last", "--debugpy", "--debugpy-host", "0.0.0.0"),
            "Error: --debugpy-host 0.0.0.0 would let other machines connect to debugpy, which has no "
            "authentication: anyone who can reach the port could run any code as you. Add "
            "--debugpy-allow-remote if that is what you want; to debug from another machine safely, keep "
            "127.0.0.1 and forward the port over SSH (ssh -L 5678:127.0.0.1:5678).",
        ),
        (
            ("replay", "--last", "--debugpy", "--pycharm", "localhost:1"),
            "Error: --debugpy and --pycharm cannot be used together. Choose one debugger.",
        ),
        (
            ("replay", "--last", "--pycharm", "localhost"),
            "Error: 'localhost' is not HOST:PORT. For example --pycharm localhost:12345.",
        ),
        (
            ("replay", "--last", "--to-test", "missing"),
            "Error: The folder missing does not exist. Create it, or pass an existing folder to --to-test.",
        ),
        (
            ("replay", "nothing-like-it"),
            "Error: No recording 'nothing-like-it' in {folder}. Run 'plldb recordings' to see the ids.",
        ),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(app, arguments, message):
    recorded = record(app, Recorded(event=ORDER, request_id="r-1", payload={}))
    before = sorted(path.relative_to(app) for path in app.rglob("*"))
    completed = plldb(app, *arguments)
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert completed.stderr == message.format(folder=recorded.path.parent) + "\n"
    assert sorted(path.relative_to(app) for path in app.rglob("*")) == before


def test_replay_without_recordings_or_with_a_function_gone(app):
    completed = plldb(app, "replay", "--last")
    assert completed.stderr == (
        f"Error: There are no recordings in {recordings_folder(app)}. plldb attach records every invocation "
        "that runs here; run it in this project first.\n"
    )
    recorded = record(app, Recorded(event=ORDER, request_id="r-gone", payload={}))
    document = json.loads(recorded.path.read_text())
    document["function"]["logicalId"] = "PaymentFunction"
    recorded.path.write_text(json.dumps(document))
    completed = plldb(app, "replay", "--last")
    assert completed.returncode == 1
    assert completed.stderr == (
        f"Error: Recording {recorded.id} is of PaymentFunction, which is not in {app / 'template.yaml'} (its "
        "functions: OrderFunction). Pass the stack's template with --template (or --cdk-out and --stack-name).\n"
    )


def test_to_test_refuses_runtime_failures_and_existing_files(app):
    record(
        app,
        Recorded(
            event=ORDER,
            request_id="r-import",
            error={"errorType": "Runtime.ImportModuleError", "errorMessage": "Unable to import module 'app'"},
        ),
    )
    (app / "tests").mkdir()
    completed = plldb(app, "replay", "--last", "--to-test", "tests")
    assert completed.stderr == (
        "Error: Recording 20260101T000000000Z-rimport failed in the Lambda runtime (Runtime.ImportModuleError: "
        "Unable to import module 'app'), not in the handler: a test cannot call it. Choose a recording whose "
        "handler returned or raised.\n"
    )
    record(app, Recorded(event=ORDER, request_id="r-twice", payload={}, at=RECORDED_AT + 1))
    assert plldb(app, "replay", "--last", "--to-test", "tests").returncode == 0
    completed = plldb(app, "replay", "--last", "--to-test", "tests")
    assert completed.stderr == (
        "Error: tests/test_replay_orderfunction_20260101t000001000z_rtwice.py already exists. Remove it first, "
        "or pass another folder to --to-test.\n"
    )


def test_a_cdk_app_records_in_its_folder_and_replays_in_the_recorded_stack(tmp_path):
    """Every stack of a CDK app shares the app's recordings; replay picks the recording's stack."""
    from tests.local.fixtures.apps import relocate_cdk_app

    app = relocate_cdk_app(tmp_path / "orders-cdk")
    reports = record(
        app,
        Recorded(event={"day": 1}, request_id="r-report", payload={"report": "daily"}),
        stack="Prod-Reports",
        logical_id="ReportsFunction9C0D1E2F",
    )
    orders = record(
        app,
        Recorded(event={"id": "o-1"}, request_id="r-order", payload={}, at=RECORDED_AT - 1),
        stack="OrdersStack",
        logical_id="OrdersFunction6A2CE8B1",
    )
    completed = plldb(app, "recordings", "--json")
    assert completed.returncode == 0, completed.stderr
    assert [(e["id"], e["stack"]) for e in json.loads(completed.stdout)] == [
        (reports.id, "Prod-Reports"),
        (orders.id, "OrdersStack"),
    ]
    completed = plldb(app, "recordings", "--json", "--stack-name", "OrdersStack")
    assert [e["id"] for e in json.loads(completed.stdout)] == [orders.id]
    completed = plldb(app, "replay", "--last")
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"report": "daily"}
    assert stderr_lines(completed)[-1].startswith(
        f"Same result as recording {reports.id} (ReportsFunction9C0D1E2F, "
    )


def test_replay_takes_the_debugger_options_attach_takes():
    from plldb.cli.attach import attach
    from plldb.cli.replay import replay

    attach_options = {param.name: param for param in attach.params}
    replay_options = {param.name: param for param in replay.params}
    shared = [
        "use_debugpy",
        "debugpy_host",
        "debugpy_allow_remote",
        "debugpy_port",
        "wait_for_client",
        "write_vscode",
        "pycharm_address",
    ]

    def definition(option):
        return (option.opts, option.help, option.default, option.is_flag, repr(option.type))

    assert [definition(replay_options[name]) for name in shared] == [
        definition(attach_options[name]) for name in shared
    ]
    assert [option for name in shared for option in replay_options[name].opts] == [
        "--debugpy",
        "--debugpy-host",
        "--debugpy-allow-remote",
        "--debugpy-port",
        "--wait-for-client",
        "--write-vscode",
        "--pycharm",
    ]
