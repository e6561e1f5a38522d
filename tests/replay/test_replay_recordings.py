"""The recordings folder and the recorder `plldb attach` uses: what is written, how, and what never is."""

from __future__ import annotations

import json
import os
import stat
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plldb import protocol
from plldb.errors import PlldbError
from plldb.local import recordings
from plldb.local.invocation import Invocation, Outcome
from plldb.local.recordings import (
    GITIGNORE,
    REDACTED,
    Limits,
    Recorder,
    RecordingStore,
    comparable,
    difference,
    open_recorder,
    recordings_folder,
    select,
)
from plldb.local.template import scan_template
from plldb.local.worker import WorkerPool
from tests.replay.replay_support import (
    FUNCTION_ARN,
    FUNCTION_NAME,
    RECORDED_AT,
    Recorded,
    copy_orders_app,
    record,
)

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD" + "x" * 200
ACCESS_KEY = "ASIAIOSFODNN7EXAMPLE"
ORDER_EVENT = {"id": "o-17", "items": [{"price": 2.5, "quantity": 2}]}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- The folder ------------------------------------------------------------------------------------
def test_the_folder_is_private_and_ignored_by_git_whatever_the_umask(tmp_path):
    store = RecordingStore(recordings_folder(tmp_path))
    previous = os.umask(0)
    try:
        recording = record(tmp_path, Recorded(event=ORDER_EVENT, request_id="r-1", payload={"ok": True}))
    finally:
        os.umask(previous)
    assert recording.path.parent == store.folder == tmp_path / ".plldb" / "recordings"
    assert (mode(tmp_path / ".plldb"), mode(store.folder)) == (0o700, 0o700)
    assert (store.folder / ".gitignore").read_text() == GITIGNORE == "*\n"
    assert mode(store.folder / ".gitignore") == 0o600
    assert mode(recording.path) == 0o600
    assert sorted(os.listdir(store.folder)) == [".gitignore", recording.path.name]


def test_an_existing_folder_is_made_private(tmp_path):
    folder = recordings_folder(tmp_path)
    folder.mkdir(parents=True, mode=0o755)
    os.chmod(folder, 0o755)
    RecordingStore(folder).prepare()
    assert mode(folder) == 0o700


def test_a_failed_write_leaves_no_file_behind(tmp_path, monkeypatch):
    store = RecordingStore(recordings_folder(tmp_path))
    store.prepare()

    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recordings.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        store.write({"id": "20260101T000000000Z-r1", "format": 1})
    assert sorted(os.listdir(store.folder)) == [".gitignore"]


def test_rotation_keeps_the_newest_within_the_count(tmp_path):
    ids = []
    for second in range(5):
        written = record(
            tmp_path,
            Recorded(
                event=ORDER_EVENT, request_id=f"r{second}", payload={"n": second}, at=RECORDED_AT + second
            ),
            limits=Limits(max_count=3),
        )
        ids.append(written.id)
    assert ids == [f"20260101T00000{second}000Z-r{second}" for second in range(5)]
    kept = RecordingStore(recordings_folder(tmp_path)).recordings()
    assert [recording.id for recording in kept] == [ids[4], ids[3], ids[2]]


def test_rotation_keeps_the_newest_within_the_size(tmp_path):
    sizes = []
    for second in range(4):
        written = record(
            tmp_path,
            Recorded(
                event=ORDER_EVENT, request_id=f"r{second}", payload={"n": second}, at=RECORDED_AT + second
            ),
            limits=Limits(max_bytes=10**9),
        )
        sizes.append(written.size)
    assert len(set(sizes)) == 1
    store = RecordingStore(recordings_folder(tmp_path), Limits(max_bytes=sizes[0] * 2 + sizes[0] // 2))
    assert store.rotate() == ["20260101T000000000Z-r0", "20260101T000001000Z-r1"]
    assert [r.id for r in store.recordings()] == ["20260101T000003000Z-r3", "20260101T000002000Z-r2"]


def test_a_recording_larger_than_the_cap_is_still_kept_alone(tmp_path):
    record(tmp_path, Recorded(event=ORDER_EVENT, request_id="old", payload={"n": 1}))
    newest = record(
        tmp_path,
        Recorded(event=ORDER_EVENT, request_id="new", payload={"n": 2}, at=RECORDED_AT + 1),
        limits=Limits(max_bytes=10),
    )
    assert [r.id for r in RecordingStore(recordings_folder(tmp_path)).recordings()] == [newest.id]


def test_the_same_id_twice_gets_a_suffix(tmp_path):
    first = record(tmp_path, Recorded(event=ORDER_EVENT, request_id="same", payload={"n": 1}))
    store = RecordingStore(recordings_folder(tmp_path))
    second = store.write(dict(first.document))
    assert (first.id, second.id) == ("20260101T000000000Z-same", "20260101T000000000Z-same-2")
    assert second.document["id"] == second.id


def test_limits_come_from_the_environment():
    assert Limits.from_environment({}) == Limits(max_bytes=200 * 1024 * 1024, max_count=1000)
    assert Limits.from_environment(
        {"PLLDB_RECORDINGS_MAX_MB": "0.5", "PLLDB_RECORDINGS_MAX_COUNT": "7"}
    ) == Limits(max_bytes=524288, max_count=7)
    with pytest.raises(PlldbError) as error:
        Limits.from_environment({"PLLDB_RECORDINGS_MAX_MB": "lots"})
    assert error.value.one_line() == (
        "PLLDB_RECORDINGS_MAX_MB must be a number of megabytes greater than 0, not 'lots'. "
        "Set it to 200 for example, or unset it."
    )
    with pytest.raises(PlldbError) as error:
        Limits.from_environment({"PLLDB_RECORDINGS_MAX_COUNT": "0"})
    assert error.value.one_line() == (
        "PLLDB_RECORDINGS_MAX_COUNT must be a whole number of recordings, at least 1, not '0'. "
        "Set it to 1000 for example, or unset it."
    )


# --- What a recording holds ------------------------------------------------------------------------
def invocation(environment: dict[str, str]) -> Invocation:
    return Invocation(
        request_id="c0ffee00-1111-2222-3333-444444444444",
        function_name=FUNCTION_NAME,
        handler="app.handler",
        event_json='{"id": "o-17", "note": "token ' + SESSION_TOKEN + '"}',
        context={
            "functionName": FUNCTION_NAME,
            "functionVersion": "7",
            "invokedFunctionArn": FUNCTION_ARN + ":live",
            "memoryLimitInMB": "512",
            "logGroupName": f"/aws/lambda/{FUNCTION_NAME}",
            "logStreamName": "2026/01/01/[7]abc",
            "deadlineMs": int(RECORDED_AT * 1000) + 899_250,
            "traceId": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "clientContext": '{"custom": {"tenant": "acme"}}',
            "cognitoIdentity": '{"cognitoIdentityId": "eu-west-1:1234", "cognitoIdentityPoolId": "eu-west-1:pool"}',
            "tenantId": None,
        },
        environment=environment,
        credentials={"accessKeyId": ACCESS_KEY, "secretAccessKey": SECRET_KEY, "sessionToken": SESSION_TOKEN},
    )


DEPLOYED_ENVIRONMENT = {
    "GREETING": "Hello",
    "TABLE_NAME": "orders-Orders-XYZ",
    "API_KEY_NOTE": "uses " + SECRET_KEY,
    "AWS_REGION": "eu-west-1",
    "TZ": ":UTC",
    "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
    "LD_LIBRARY_PATH": "/var/lang/lib",
    "PATH": "/var/lang/bin",
    "AWS_LAMBDA_EXEC_WRAPPER": "/opt/plldb-debugger/wrapper",
    "DEBUGGER_SESSION_ID": "session-1",
    "PLLDB_ORIGINAL_TIMEOUT": "3",
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SESSION_TOKEN": SESSION_TOKEN,
}
CONFIGURED = frozenset({"GREETING", "TABLE_NAME", "API_KEY_NOTE"})


def record_one(tmp_path: Path, *, record_env: bool, developer_env: dict[str, str] | None = None) -> dict:
    store = RecordingStore(recordings_folder(tmp_path))
    recorder = Recorder(
        store,
        stack_name="orders",
        record_env=record_env,
        clock=lambda: RECORDED_AT,
        environ=developer_env or {},
    )
    output = recorder.capture(lambda *line: None)
    outcome = Outcome(protocol.RESPONSE_CODE_OK, json.dumps({"key": SECRET_KEY, "n": 1}), None, 41.2346)
    incoming = invocation(DEPLOYED_ENVIRONMENT)
    with recorder.recording("OrderFunction", incoming.request_id) as recording:
        output("OrderFunction", incoming.request_id, "stdout", "pricing o-17")
        output("OrderFunction", incoming.request_id, "stderr", f"secret is {SECRET_KEY}")
        output("OtherFunction", incoming.request_id, "stdout", "not this invocation's")
        recording.done(incoming, outcome, CONFIGURED)
    recorder.close()
    (written,) = store.recordings()
    return json.loads(written.path.read_text())


def test_a_recording_holds_the_invocation_without_credentials(tmp_path):
    document = record_one(tmp_path, record_env=False)
    assert document == {
        "format": 1,
        "id": "20260101T000000000Z-c0ffee00",
        "recordedAt": "2026-01-01T00:00:00.000Z",
        "stack": "orders",
        "function": {
            "logicalId": "OrderFunction",
            "name": FUNCTION_NAME,
            "handler": "app.handler",
            "version": "7",
            "memoryMB": 512,
        },
        "context": {
            "requestId": "c0ffee00-1111-2222-3333-444444444444",
            "invokedFunctionArn": FUNCTION_ARN + ":live",
            "deadlineBudgetMs": 899_250,
            "clientContext": '{"custom": {"tenant": "acme"}}',
            "cognitoIdentity": '{"cognitoIdentityId": "eu-west-1:1234", "cognitoIdentityPoolId": "eu-west-1:pool"}',
            "tenantId": None,
            "traceId": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "logGroupName": f"/aws/lambda/{FUNCTION_NAME}",
            "logStreamName": "2026/01/01/[7]abc",
        },
        "environment": {
            "names": [
                "API_KEY_NOTE",
                "AWS_LAMBDA_FUNCTION_NAME",
                "AWS_REGION",
                "GREETING",
                "TABLE_NAME",
                "TZ",
            ]
        },
        "event": '{"id": "o-17", "note": "token ' + REDACTED + '"}',
        "outcome": {"status": "ok", "result": json.dumps({"key": REDACTED, "n": 1})},
        "durationMs": 41.235,
        "output": [
            {"stream": "stdout", "line": "pricing o-17"},
            {"stream": "stderr", "line": f"secret is {REDACTED}"},
        ],
        "outputLinesDropped": 0,
    }


def test_record_env_keeps_values_but_never_credentials(tmp_path):
    document = record_one(tmp_path, record_env=True)
    assert document["environment"] == {
        "names": ["API_KEY_NOTE", "AWS_LAMBDA_FUNCTION_NAME", "AWS_REGION", "GREETING", "TABLE_NAME", "TZ"],
        "values": {
            "API_KEY_NOTE": f"uses {REDACTED}",
            "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
            "AWS_REGION": "eu-west-1",
            "GREETING": "Hello",
            "TABLE_NAME": "orders-Orders-XYZ",
            "TZ": ":UTC",
        },
    }
    text = json.dumps(document)
    for secret in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN):
        assert secret not in text


def test_the_developers_own_credentials_are_removed_too(tmp_path):
    developer_key = "AKIADEVELOPERKEY0001"
    developer_secret = "developer/secret/value/that/is/long/enough"
    store = RecordingStore(recordings_folder(tmp_path))
    recorder = Recorder(
        store,
        clock=lambda: RECORDED_AT,
        environ={"AWS_ACCESS_KEY_ID": developer_key, "AWS_SECRET_ACCESS_KEY": developer_secret, "HOME": "/h"},
    )
    incoming = Invocation(
        request_id="r-dev",
        function_name=FUNCTION_NAME,
        handler="app.handler",
        event_json="{}",
        context={},
        environment={},
        credentials=None,
    )
    outcome = Outcome(protocol.RESPONSE_CODE_OK, json.dumps([developer_key, developer_secret, "/h"]))
    with recorder.recording("OrderFunction", "r-dev") as recording:
        recording.done(incoming, outcome, frozenset())
    recorder.close()
    (written,) = store.recordings()
    assert json.loads(written.result_json or "") == [REDACTED, REDACTED, "/h"]


def test_short_values_are_not_taken_for_credentials():
    redactor = recordings.Redactor(["test", "x" * 15, "y" * 16])
    assert redactor.text("test " + "x" * 15 + " " + "y" * 16) == "test " + "x" * 15 + " " + REDACTED


def test_output_beyond_the_limit_is_counted_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(recordings, "MAX_OUTPUT_BYTES", 10)
    recorded = Recorded(
        event=ORDER_EVENT,
        request_id="r-loud",
        payload={},
        output=[("stdout", "1234"), ("stdout", "5678"), ("stdout", "9"), ("stderr", "more")],
    )
    written = record(tmp_path, recorded)
    assert written.document["output"] == [
        {"stream": "stdout", "line": "1234"},
        {"stream": "stdout", "line": "5678"},
    ]
    assert written.document["outputLinesDropped"] == 2


def test_a_run_that_raises_is_not_recorded(tmp_path):
    store = RecordingStore(recordings_folder(tmp_path))
    recorder = Recorder(store, clock=lambda: RECORDED_AT, environ={})
    output = recorder.capture(lambda *line: None)
    with pytest.raises(RuntimeError), recorder.recording("OrderFunction", "r-x"):
        output("OrderFunction", "r-x", "stdout", "started")
        raise RuntimeError("the worker could not start")
    recorder.close()
    assert store.recordings() == []
    assert recorder._pending == {}


def test_a_failing_folder_is_one_warning_and_recording_goes_on(tmp_path):
    warnings: list[str] = []
    project = tmp_path / "project"
    project.mkdir()
    (project / ".plldb").write_text("a file where the folder should be")
    store = RecordingStore(recordings_folder(project))
    recorder = Recorder(store, clock=lambda: RECORDED_AT, warn=warnings.append, environ={})
    incoming = invocation({})

    def run(request_id: str) -> None:
        with recorder.recording("OrderFunction", request_id) as recording:
            recording.done(incoming, Outcome(protocol.RESPONSE_CODE_OK, "1"), frozenset())
        recorder.finished(request_id)

    run("r-1")
    run("r-2")
    recorder._writer.submit(lambda: None).result()  # the writer has handled both
    assert warnings == [
        f"Could not record invocation r-1 in {store.folder}: File exists ({project / '.plldb'}). "
        "Invocations still run; the next one is recorded if the folder allows it."
    ]
    (project / ".plldb").unlink()
    run("r-3")
    recorder.close()
    assert [r.request_id for r in store.recordings()] == ["r-3"]


def test_a_recording_is_written_once_its_answer_has_left_and_close_writes_the_rest(tmp_path):
    """The answer to AWS never shares the processor with its recording: `plldb attach` says when each
    invocation is finished (its answer sent); close writes runs that never got that far."""
    store = RecordingStore(recordings_folder(tmp_path))
    recorder = Recorder(store, clock=lambda: RECORDED_AT, environ={})
    for request_id in ("r-answered", "r-cut-short"):
        with recorder.recording("OrderFunction", request_id) as recording:
            recording.done(invocation({}), Outcome(protocol.RESPONSE_CODE_OK, "1"), frozenset())
    assert recorder._writer is not None
    recorder._writer.submit(lambda: None).result()  # the writer has done all it was given: nothing
    assert store.recordings() == []
    recorder.finished("r-answered")
    recorder.finished("r-never-run")  # an invocation with nothing to record (held, refused) changes nothing
    recorder._writer.submit(lambda: None).result()
    assert [r.request_id for r in store.recordings()] == ["r-answered"]
    recorder.close()
    assert sorted(r.request_id for r in store.recordings()) == ["r-answered", "r-cut-short"]


def test_recordings_another_plldb_or_the_developer_adds_or_removes_count_from_the_next_write(tmp_path):
    """A store follows its own writes without listing the folder (that cost milliseconds per invocation
    in a full folder), and lists it again when the folder's mtime shows a change it did not make."""
    folder = recordings_folder(tmp_path)
    ours, theirs = RecordingStore(folder, Limits(max_count=3)), RecordingStore(folder, Limits(max_count=100))

    def write(store: RecordingStore, second: int) -> list[str]:
        store.write({"id": f"20260101T0000{second:02d}000Z-r{second}", "n": second})
        return sorted(path.stem[-2:] for path in folder.glob("*.json"))

    assert write(ours, 1) == ["r1"]
    assert write(theirs, 2) == ["r1", "r2"]
    assert write(theirs, 3) == ["r1", "r2", "r3"]
    assert write(ours, 4) == ["r2", "r3", "r4"]  # theirs count: the oldest goes
    assert write(ours, 5) == ["r3", "r4", "r5"]
    for name in ("r4", "r5"):  # the developer removes two
        next(folder.glob(f"*-{name}.json")).unlink()
    assert write(ours, 6) == ["r3", "r6"]  # nothing more is removed for what is gone already
    assert ours.rotate() == []


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=24),
    max_count=st.integers(min_value=1, max_value=6),
    max_bytes=st.integers(min_value=1, max_value=2500),
    relist_after=st.integers(min_value=1, max_value=5),
)
def test_each_write_leaves_exactly_the_newest_recordings_that_fit_both_limits(
    sizes: list[int], max_count: int, max_bytes: int, relist_after: int
) -> None:
    """Whether the store lists its folder or follows its own writes, the folder after each write holds
    the newest recordings within both limits (the newest one always, even alone over the cap)."""
    with tempfile.TemporaryDirectory() as directory, pytest.MonkeyPatch.context() as patch:
        patch.setattr(recordings, "RELIST_AFTER_WRITES", relist_after)
        folder = Path(directory) / "recordings"
        store = RecordingStore(folder, Limits(max_bytes=max_bytes, max_count=max_count))
        kept: list[tuple[str, int]] = []  # the model: (id, size), oldest first
        for number, size in enumerate(sizes):
            written = store.write({"id": f"20260101T{number:06d}000Z-r", "padding": "x" * size})
            kept.append((written.id, written.size))
            while len(kept) > 1 and (len(kept) > max_count or sum(s for _, s in kept) > max_bytes):
                kept.pop(0)
            on_disk = sorted((p.stem, p.stat().st_size) for p in folder.glob("*.json"))
            assert on_disk == kept


def test_a_disabled_recorder_changes_nothing(tmp_path):
    def output(*line: str) -> None:
        return None

    recorder = open_recorder(tmp_path, enabled=False, record_env=False, stack_name="s", warn=print)
    assert recorder.capture(output) is output
    with recorder.recording("OrderFunction", "r") as recording:
        recording.done(invocation({}), Outcome(protocol.RESPONSE_CODE_OK, "1"), frozenset())
    recorder.close()
    assert not (tmp_path / ".plldb").exists()
    with pytest.raises(PlldbError) as error:
        open_recorder(tmp_path, enabled=False, record_env=True, stack_name="s", warn=print)
    assert (
        error.value.one_line()
        == "--record-env and --no-record cannot be used together. Pass only one of them."
    )


def test_open_recorder_checks_the_limits_before_creating_anything(tmp_path):
    with pytest.raises(PlldbError, match="PLLDB_RECORDINGS_MAX_COUNT must be"):
        open_recorder(
            tmp_path,
            enabled=True,
            record_env=False,
            stack_name="s",
            warn=print,
            environ={"PLLDB_RECORDINGS_MAX_COUNT": "many"},
        )
    assert not (tmp_path / ".plldb").exists()


def test_the_recorder_keeps_what_a_real_worker_printed_for_each_invocation(tmp_path):
    """The output callback of attach's worker pool, teed: init output belongs to the first invocation."""
    app = copy_orders_app(tmp_path / "app")
    function = scan_template(app / "template.yaml").local["OrderFunction"]
    store = RecordingStore(recordings_folder(app))
    recorder = Recorder(store, clock=lambda: RECORDED_AT, environ={})
    shown: list[tuple[str, str, str, str]] = []
    lock = threading.Lock()

    def console(*line: str) -> None:
        with lock:
            shown.append(line)  # type: ignore[arg-type]

    with WorkerPool(output=recorder.capture(console), local_credentials=True) as pool:
        for number, request_id in enumerate(("req-one", "req-two")):
            event = {"id": f"o-{number}", "items": [{"price": 1.25}]}
            incoming = invocation({"GREETING": "Hi"})
            incoming = Invocation(
                **{
                    **incoming.__dict__,
                    "request_id": request_id,
                    "event_json": json.dumps(event),
                    "credentials": None,
                }
            )
            with recorder.recording(function.logical_id, request_id) as recording:
                result = pool.run(
                    function,
                    Invocation(
                        request_id=request_id,
                        event_json=incoming.event_json,
                        context=dict(incoming.context),
                        environment=dict(incoming.environment),
                        credentials=None,
                        configured_variables=frozenset({"GREETING"}),
                    ),
                )
                recording.done(
                    incoming,
                    Outcome(result.status_code, result.payload, result.error, result.duration_ms),
                    frozenset({"GREETING"}),
                )
    recorder.close()
    newest, oldest = store.recordings()
    assert (oldest.request_id, newest.request_id) == ("req-one", "req-two")
    assert oldest.document["output"] == [
        {"stream": "stdout", "line": "orders module loaded"},
        {"stream": "stdout", "line": "pricing order o-0"},
    ]
    assert newest.document["output"] == [{"stream": "stdout", "line": "pricing order o-1"}]
    assert json.loads(newest.result_json or "")["greeting"] == "Hi"
    assert [line[3] for line in shown] == ["orders module loaded", "pricing order o-0", "pricing order o-1"]


# --- Choosing, comparing ---------------------------------------------------------------------------
def test_select_by_id_prefix_request_id_last_and_function(tmp_path):
    ids = [
        record(
            tmp_path,
            Recorded(event=ORDER_EVENT, request_id=f"ab{n}-req", payload={"n": n}, at=RECORDED_AT + n),
        ).id
        for n in range(3)
    ]
    store = RecordingStore(recordings_folder(tmp_path))
    found = store.recordings()

    def chosen(selector=None, last=False, function=None):
        return select(found, selector=selector, last=last, function=function, folder=store.folder).id

    assert chosen(last=True) == ids[2]
    assert chosen(function="OrderFunction") == ids[2]
    assert chosen(function="orders-*") == ids[2]
    assert chosen(ids[1]) == ids[1]
    assert chosen("20260101T000000") == ids[0]
    assert chosen("ab1-req") == ids[1]
    with pytest.raises(PlldbError) as error:
        chosen("20260101T")
    assert (
        error.value.one_line()
        == f"'20260101T' matches 3 recordings ({ids[2]}, {ids[1]}, {ids[0]}). Give more of the id."
    )
    with pytest.raises(PlldbError) as error:
        chosen("nope")
    assert (
        error.value.one_line()
        == f"No recording 'nope' in {store.folder}. Run 'plldb recordings' to see the ids."
    )
    with pytest.raises(PlldbError) as error:
        chosen(function="Payments*")
    assert (
        error.value.one_line()
        == "No recording of a function matching 'Payments*'. Recorded functions: OrderFunction."
    )
    with pytest.raises(PlldbError) as error:
        chosen(ids[0], last=True)
    assert (
        error.value.one_line()
        == "Give a recording id or --last, not both. Run 'plldb recordings' to see the ids."
    )
    with pytest.raises(PlldbError) as error:
        chosen()
    assert error.value.one_line() == (
        "Which recording? Give its id, --last, or --function F for the newest of F. "
        "Run 'plldb recordings' to see the ids."
    )
    with pytest.raises(PlldbError) as error:
        select([], selector=None, last=True, function=None, folder=store.folder)
    assert error.value.one_line() == (
        f"There are no recordings in {store.folder}. "
        "plldb attach records every invocation that runs here; run it in this project first."
    )


def test_unreadable_files_are_reported_and_skipped(tmp_path):
    good = record(tmp_path, Recorded(event=ORDER_EVENT, request_id="good", payload={}))
    folder = recordings_folder(tmp_path)
    (folder / "20250101T000000000Z-broken.json").write_text("{not json")
    (folder / "20250101T000000000Z-other.json").write_text('{"format": 99}')
    problems: list[str] = []
    assert [r.id for r in RecordingStore(folder).recordings(problems)] == [good.id]
    assert problems == [
        "Skipped 20250101T000000000Z-broken.json: not JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)).",
        "Skipped 20250101T000000000Z-other.json: not a plldb recording of format 1.",
    ]


def test_comparison_is_of_json_values_and_error_type_and_message():
    recorded = comparable(True, '{"a": 1, "b": [1, 2]}', None)
    assert difference(recorded, comparable(True, '{"b": [1, 2],\n "a": 1}', None)) == []
    assert difference(recorded, comparable(True, '{"a": 2, "b": [1, 2]}', None)) == [
        "--- recorded",
        "+++ replayed",
        "@@ -1,6 +1,6 @@",
        " {",
        '   "result": {',
        '-    "a": 1,',
        '+    "a": 2,',
        '     "b": [',
        "       1,",
        "       2",
    ]
    error = {"errorType": "KeyError", "errorMessage": "'id'", "stackTrace": ["line 3"]}
    moved = {"errorType": "KeyError", "errorMessage": "'id'", "stackTrace": ["line 4"]}
    assert difference(comparable(False, None, error), comparable(False, None, moved)) == []
