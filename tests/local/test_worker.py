"""Workers: real subprocesses running handlers as the AWS Python runtime does.

Fidelity checks run the same handlers under the real runtime (``python -m awslambdaric`` against a
tiny Runtime API server) and compare the results and error objects byte for byte.
"""

from __future__ import annotations

import collections
import dataclasses
import decimal
import json
import os
import queue
import re
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock

import pytest
from awslambdaric.lambda_context import LambdaContext as RuntimeLambdaContext
from awslambdaric.lambda_runtime_exception import FaultException
from awslambdaric.lambda_runtime_marshaller import LambdaMarshaller
from hypothesis import given, settings
from hypothesis import strategies as st

from plldb import lambda_python
from plldb.errors import PlldbError
from plldb.local.context import lambda_context
from plldb.local.invocation import Invocation
from plldb.local.template import LocalFunction
from plldb.local.worker import WorkerPool
from plldb.local.worker.output import LineSplitter
from plldb.local.worker.pool import source_fingerprint
from plldb.local.worker.process import exit_error
from plldb.local.worker.variables import worker_environment
from plldb.local.worker_main import encode_response, sync_marker

ARN = "arn:aws:lambda:eu-west-1:123456789012:function:orders-fn"
PY = f"python{sys.version_info[0]}.{sys.version_info[1]}"


# --- helpers ---------------------------------------------------------------------------------------
def write_function(
    root: Path,
    files: dict[str, str],
    logical_id: str = "Fn",
    handler: str = "app.lambda_handler",
    runtime: str | None = None,
    layer_dirs: list[Path] | None = None,
) -> LocalFunction:
    code_dir = root / logical_id.replace("/", "_")
    for name, source in files.items():
        path = code_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return LocalFunction(
        logical_id, code_dir, handler, runtime, {}, layer_dirs or [], 3, 256, template_dir=root
    )


def make_invocation(
    event=None, *, environment=None, credentials=None, deadline_ms=None, event_json=None, **context
):
    fields = {
        "functionName": "orders-fn",
        "functionVersion": "$LATEST",
        "invokedFunctionArn": ARN,
        "memoryLimitInMB": 256,
        "deadlineMs": deadline_ms or int(time.time() * 1000) + 30_000,
        "logGroupName": "/aws/lambda/orders-fn",
        "logStreamName": "2026/01/01/[$LATEST]0123456789abcdef",
        "traceId": "Root=1-65f0a8b2-0123456789abcdef01234567;Sampled=1",
        "clientContext": None,
        "cognitoIdentity": None,
    }
    fields.update(context)
    return Invocation(
        request_id=str(uuid.uuid4()),
        event_json=event_json if event_json is not None else json.dumps({} if event is None else event),
        context=fields,
        environment=environment or {},
        credentials=credentials,
    )


class Output:
    """Collects the lines a pool streams, and lets a test wait for one without sleeping."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str, str]] = []
        self.condition = threading.Condition()

    def __call__(self, function_id: str, request_id: str, stream: str, line: str) -> None:
        with self.condition:
            self.lines.append((function_id, request_id, stream, line))
            self.condition.notify_all()

    def wait_for(self, text: str, timeout: float = 30) -> None:
        with self.condition:
            assert self.condition.wait_for(lambda: any(line[3] == text for line in self.lines), timeout), text

    def of(self, request_id: str, stream: str = "stdout") -> list[str]:
        with self.condition:
            return [line for _, rid, name, line in self.lines if rid == request_id and name == stream]


@pytest.fixture
def output():
    return Output()


@pytest.fixture
def pool(output):
    with WorkerPool(output=output, extra_sys_path=[]) as pool:
        yield pool


def payload(result):
    assert result.status_code == 200, result.error
    return json.loads(result.payload)


# --- The real runtime, for comparison --------------------------------------------------------------
class RuntimeApi:
    """Enough of the Lambda Runtime API for awslambdaric: next invocation, response, error, init error."""

    def __init__(self) -> None:
        self.pending: queue.Queue[tuple[str, str, int]] = queue.Queue()
        self.answers: dict[str, tuple[str, str]] = {}
        self.answered = threading.Condition()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                request_id, body, deadline = api.pending.get()
                data = body.encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", ARN)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                parts = self.path.split("/")
                key = parts[-2] if "/invocation/" in self.path else "init"
                with api.answered:
                    api.answers[key] = (parts[-1], body)
                    api.answered.notify_all()
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def answer(self, key: str, timeout: float = 30) -> tuple[str, str]:
        with self.answered:
            assert self.answered.wait_for(lambda: key in self.answers, timeout), key
            return self.answers[key]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_under_awslambdaric(
    code_dir: Path,
    handler: str,
    events: list[str],
    execution_env: str | None = None,
    log_format: str | None = None,
    stdout_path: Path | None = None,
):
    """(kind, body) per event, kind being "response" or "error"; or ("init", body) when init fails.

    The runtime's stdout goes to ``stdout_path`` when one is given.
    """
    api = RuntimeApi()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environment["AWS_LAMBDA_RUNTIME_API"] = api.address
    if execution_env:
        environment["AWS_EXECUTION_ENV"] = execution_env
    if log_format:
        environment["AWS_LAMBDA_LOG_FORMAT"] = log_format
    stdout_file = stdout_path.open("wb") if stdout_path else None
    process = subprocess.Popen(
        [sys.executable, "-m", "awslambdaric", handler],
        cwd=code_dir,
        env=environment,
        stdout=stdout_file or subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        answers = []
        for event in events:
            request_id = str(uuid.uuid4())
            api.pending.put((request_id, event, int(time.time() * 1000) + 30_000))
            with api.answered:
                api.answered.wait_for(lambda rid=request_id: rid in api.answers or "init" in api.answers, 30)
                if "init" in api.answers:
                    return [("init", api.answers["init"][1])]
            answers.append(api.answer(request_id))
        return answers
    finally:
        process.kill()
        process.wait()
        api.close()
        if stdout_file:
            stdout_file.close()


BEHAVIOURS = {
    "app.py": """
        import collections
        import decimal

        import helper

        Point = collections.namedtuple("Point", "x y")


        class OrderError(Exception):
            pass


        def lambda_handler(event, context):
            action = event["action"]
            if action == "raise":
                raise ValueError("bad value: 42")
            if action == "empty":
                raise RuntimeError()
            if action == "custom":
                raise OrderError("order o-1 is closed")
            if action == "nested":
                helper.fail_deep(3)
            if action == "chained":
                try:
                    {}["missing"]
                except KeyError as exc:
                    raise LookupError("wrapped") from exc
            if action == "unicode_error":
                raise ValueError("żółw ☃")
            if action == "unserializable":
                return {"items": {1, 2}}
            if action == "object":
                return [1, object()]
            if action == "bad_key":
                return {(1, 2): "tuple key"}
            if action == "bad_bytes":
                return {"raw": b"\\xff\\xfe"}
            if action == "values":
                return {
                    "decimal": decimal.Decimal("1.10"),
                    "exponent": decimal.Decimal("1E+2"),
                    "nan_decimal": decimal.Decimal("NaN"),
                    "point": Point(1, 2),
                    "tuple": (1, 2),
                    "text": "żółw ☃ \\u2028",
                    "bytes": b"raw",
                    "float": 1.5,
                    "inf": float("inf"),
                    "keys": {1: "a", 2.5: "b", True: "c", None: "d"},
                }
            if action == "none":
                return None
            if action == "string":
                return "plain text"
            if action == "bytes":
                return b'{"raw": true}'
            return event
    """,
    "helper.py": """
        def fail_deep(depth):
            if depth == 0:
                raise ZeroDivisionError("division by zero in helper")
            return fail_deep(depth - 1)
    """,
}
ACTIONS = [
    "raise",
    "empty",
    "custom",
    "nested",
    "chained",
    "unicode_error",
    "unserializable",
    "object",
    "bad_key",
    "bad_bytes",
    "values",
    "none",
    "string",
    "bytes",
    "echo",
]


@pytest.mark.parametrize("execution_env", [None, "AWS_Lambda_python3.12"])
def test_results_and_errors_match_the_real_runtime(tmp_path, pool, execution_env):
    function = write_function(tmp_path, BEHAVIOURS)
    events = [json.dumps({"action": action, "extra": ["é", 1.25]}) for action in ACTIONS]
    expected = run_under_awslambdaric(function.code_dir, "app.lambda_handler", events, execution_env)
    environment = {"AWS_EXECUTION_ENV": execution_env} if execution_env else {}
    for action, event, (kind, body) in zip(ACTIONS, events, expected, strict=True):
        invocation = make_invocation(event_json=event, environment=environment)
        result = pool.run(function, invocation)
        if kind == "response":
            assert (action, result.status_code, result.payload) == (action, 200, body)
        else:
            reference = json.loads(body)
            reference["requestId"] = invocation.request_id
            assert (action, result.status_code, result.error) == (action, 500, reference)
    assert len(pool.pids("Fn")) == 1


INIT_FAILURES = {
    "missing_module": ({"app.py": "def lambda_handler(event, context):\n    return 1\n"}, "nomodule.handler"),
    "missing_dependency": ({"app.py": "import not_installed_dependency\n"}, "app.lambda_handler"),
    "syntax_error": ({"app.py": "def lambda_handler(event, context)\n    return 1\n"}, "app.lambda_handler"),
    "missing_function": ({"app.py": "def other(event, context):\n    return 1\n"}, "app.lambda_handler"),
    "raises_at_import": ({"app.py": "raise RuntimeError('config missing')\n"}, "app.lambda_handler"),
    "malformed_name": ({"app.py": ""}, "lambda_handler"),
    "builtin_module": ({"app.py": ""}, "sys.handler"),
    "nested_module": ({"pkg/__init__.py": "", "pkg/mod.py": "import json.nope\n"}, "pkg/mod.handler"),
}


@pytest.mark.parametrize("case", sorted(INIT_FAILURES))
def test_init_errors_match_the_real_runtime(tmp_path, pool, case):
    files, handler = INIT_FAILURES[case]
    function = write_function(tmp_path, files, handler=handler)
    [(kind, body)] = run_under_awslambdaric(function.code_dir, handler, ["{}"])
    assert kind == "init"
    result = pool.run(function, make_invocation())
    assert result.status_code == 500
    assert result.error == json.loads(body)
    assert pool.pids() == []


def test_expected_init_error_messages(tmp_path, pool):
    function = write_function(tmp_path, {"app.py": "import not_installed_dependency\n"})
    result = pool.run(function, make_invocation())
    assert result.error == {
        "errorMessage": "Unable to import module 'app': No module named 'not_installed_dependency'",
        "errorType": "Runtime.ImportModuleError",
        "requestId": "",
        "stackTrace": [],
    }
    function = write_function(
        tmp_path, {"app.py": "def other(event, context):\n    return 1\n"}, logical_id="Other"
    )
    assert pool.run(function, make_invocation()).error == {
        "errorMessage": "Handler 'lambda_handler' missing on module 'app'",
        "errorType": "Runtime.HandlerNotFound",
        "requestId": "",
        "stackTrace": [],
    }


def test_marshal_error_message(tmp_path, pool):
    function = write_function(tmp_path, BEHAVIOURS)
    invocation = make_invocation({"action": "unserializable"})
    result = pool.run(function, invocation)
    assert result.error == {
        "errorMessage": "Unable to marshal response: Object of type set is not JSON serializable",
        "errorType": "Runtime.MarshalError",
        "requestId": invocation.request_id,
        "stackTrace": [],
    }


def test_invalid_event_json_is_an_unmarshal_error(tmp_path, pool):
    function = write_function(tmp_path, BEHAVIOURS)
    invocation = make_invocation(event_json="{")
    assert pool.run(function, invocation).error == {
        "errorMessage": "Unable to unmarshal input: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
        "errorType": "Runtime.UnmarshalError",
        "requestId": invocation.request_id,
        "stackTrace": [],
    }


def test_error_is_logged_like_the_runtime_logs_it(tmp_path, pool, output):
    function = write_function(tmp_path, BEHAVIOURS)
    invocation = make_invocation({"action": "raise"})
    pool.run(function, invocation)
    app = function.code_dir / "app.py"
    indent = lambda_python.ERROR_LOG_IDENT  # the runtime turns the traceback's leading spaces into these
    assert output.of(invocation.request_id) == [
        "[ERROR] ValueError: bad value: 42",
        "Traceback (most recent call last):",
        f'{indent * 2}File "{app}", line 17, in lambda_handler',
        f'{indent * 4}raise ValueError("bad value: 42")',
    ]


@pytest.mark.parametrize("log_format", ["Text", "JSON"])
def test_error_log_entry_matches_the_real_runtimes(tmp_path, pool, output, log_format):
    """The same entry as awslambdaric's, whose lines its stdout joins with carriage returns."""
    function = write_function(tmp_path, BEHAVIOURS)
    event = json.dumps({"action": "unicode_error"})
    runtime_stdout = tmp_path / "runtime-stdout"
    [(kind, body)] = run_under_awslambdaric(
        function.code_dir, "app.lambda_handler", [event], log_format=log_format, stdout_path=runtime_stdout
    )
    assert kind == "error"
    runtime_request_id = json.loads(body)["requestId"]
    invocation = make_invocation(event_json=event, environment={"AWS_LAMBDA_LOG_FORMAT": log_format})
    pool.run(function, invocation)
    expected = runtime_stdout.read_text().replace(runtime_request_id, invocation.request_id)
    ours = "\n".join(output.of(invocation.request_id)) + "\n"
    if log_format == "JSON":
        timestamp = re.compile(r'^\{"timestamp": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ')
        assert timestamp.match(ours) and timestamp.match(expected)
        ours, expected = timestamp.sub("", ours), timestamp.sub("", expected)
    assert ours == expected.replace(lambda_python.ERROR_LOG_LINE_TERMINATE, "\n")
    assert ours.count("\n") == (1 if log_format == "JSON" else 4)


# --- Encoding, property-checked against the runtime's marshaller -----------------------------------
Point = collections.namedtuple("Point", "x y")
KEYS = st.one_of(st.text(max_size=5), st.integers(-5, 5), st.floats(allow_nan=True), st.booleans(), st.none())
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(max_size=6),
    st.decimals(allow_nan=True, allow_infinity=True),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.builds(Point, children, children),
        st.dictionaries(KEYS, children, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=VALUES, execution_env=st.sampled_from(["", "AWS_Lambda_python3.11", "AWS_Lambda_python3.13"]))
def test_encoding_matches_the_runtime_marshaller(value, execution_env):
    with mock.patch.dict(os.environ, {"AWS_EXECUTION_ENV": execution_env}):
        marshaller = LambdaMarshaller()
        try:
            expected, _ = marshaller.marshal_response(value)
        except FaultException as exc:
            with pytest.raises(lambda_python.FaultException) as error:
                encode_response(value)
            assert (error.value.exception_type, error.value.msg) == (exc.exception_type, exc.msg)
            return
        if isinstance(value, bytes):
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                with pytest.raises(lambda_python.FaultException) as error:
                    encode_response(value)
                assert error.value.exception_type == "Runtime.MarshalError"
                return
            assert encode_response(value) == text
            return
        assert encode_response(value) == expected


def test_circular_result_is_a_marshal_error():
    value: list = [1]
    value.append(value)
    with pytest.raises(lambda_python.FaultException) as error:
        encode_response(value)
    assert (error.value.exception_type, error.value.msg) == (
        "Runtime.MarshalError",
        "Unable to marshal response: Circular reference detected",
    )
    assert encode_response({"d": decimal.Decimal("3.140")}) == '{"d": 3.140}'


def test_keys_written_as_the_same_text_are_all_kept_as_the_runtime_keeps_them():
    value = {1: "int", "1": "text", None: "none", "null": "text"}
    expected, _ = LambdaMarshaller().marshal_response(value)
    assert encode_response(value) == expected == '{"1": "int", "1": "text", "null": "none", "null": "text"}'


# --- Line splitting --------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    segments=st.lists(
        st.one_of(
            st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\x00" not in b), st.just(None)
        ),
        max_size=12,
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=25), max_size=40),
)
def test_line_splitter_finds_lines_and_markers_across_any_chunking(segments, cuts):
    marker = sync_marker("0123456789abcdef")
    stream = b""
    expected: list = []
    for segment in segments:
        if segment is None:
            stream += marker
            expected.append(None)
        else:
            stream += segment + b"\n"
            expected.append(segment)
    splitter = LineSplitter(marker, piece_bytes=1000)
    found: list = []
    position = 0
    for cut in [*cuts, len(stream)]:
        found.extend(splitter.feed(stream[position : position + cut]))
        position += cut
    found.extend(splitter.feed(stream[position:]))
    found.extend(splitter.finish())
    assert found == expected


def test_line_splitter_delivers_long_lines_in_pieces_without_losing_a_marker():
    marker = sync_marker("feedfacefeedface")
    splitter = LineSplitter(marker, piece_bytes=16)
    found = splitter.feed(b"x" * 40) + splitter.feed(b"yy" + marker[:5]) + splitter.feed(marker[5:] + b"tail")
    assert b"".join(piece for piece in found if piece is not None) == b"x" * 40 + b"yy"
    assert found[-1] is None
    assert all(piece is None or len(piece) <= 40 for piece in found)
    assert splitter.finish() == [b"tail"]


# --- Execution environments ------------------------------------------------------------------------
HELLO = """
    import os

    CALLS = 0


    def lambda_handler(event, context):
        global CALLS
        CALLS += 1
        return {"from": "%s", "calls": CALLS, "pid": os.getpid()}
"""


def test_same_module_name_in_two_functions(tmp_path, pool):
    first = write_function(tmp_path, {"app.py": HELLO % "a"}, logical_id="FirstFunction")
    second = write_function(tmp_path, {"app.py": HELLO % "b"}, logical_id="SecondFunction")
    a = payload(pool.run(first, make_invocation()))
    b = payload(pool.run(second, make_invocation()))
    assert (a["from"], b["from"]) == ("a", "b")
    assert a["pid"] != b["pid"]
    assert payload(pool.run(first, make_invocation()))["from"] == "a"


def test_warm_worker_keeps_module_state(tmp_path, pool):
    function = write_function(tmp_path, {"app.py": HELLO % "a"})
    results = [payload(pool.run(function, make_invocation())) for _ in range(3)]
    assert [r["calls"] for r in results] == [1, 2, 3]
    assert len({r["pid"] for r in results}) == 1
    assert pool.pids("Fn") == [results[0]["pid"]]


def test_worker_process_is_named_after_the_function(tmp_path, pool):
    function = write_function(tmp_path, {"app.py": HELLO % "a"}, logical_id="App/HelloFunction")
    pid = payload(pool.run(function, make_invocation()))["pid"]
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\x00")
    assert arguments[0] == os.fsencode(sys.executable)  # no Runtime: plldb's own Python
    assert arguments[1:6] == [b"-S", b"-u", b"-m", b"plldb.local.worker_main", b"App/HelloFunction"]


RENDEZVOUS = """
    import os
    import pathlib
    import time


    def lambda_handler(event, context):
        meeting = pathlib.Path(event["dir"])
        (meeting / str(os.getpid())).touch()
        deadline = time.monotonic() + 20
        while len(list(meeting.iterdir())) < event["count"]:
            if time.monotonic() > deadline:
                raise TimeoutError("the other invocations never started")
            time.sleep(0.01)
        return os.getpid()
"""


def test_concurrent_invocations_get_separate_workers(tmp_path, pool):
    function = write_function(tmp_path, {"app.py": RENDEZVOUS})
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    results: list = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                pool.run(function, make_invocation({"dir": str(meeting), "count": 3}))
            )
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    pids = [payload(result) for result in results]
    assert len(set(pids)) == 3
    assert pool.pids("Fn") == sorted(pids)


RELOADABLE = """
    import os

    import helper


    def lambda_handler(event, context):
        return {"version": "%s", "helper": helper.VALUE, "pid": os.getpid()}
"""


def test_saved_changes_are_used_by_the_next_invocation(tmp_path, pool):
    layer = tmp_path / "layer"
    (layer / "python").mkdir(parents=True)
    (layer / "python" / "helper.py").write_text("VALUE = 'layer-1'\n")
    function = write_function(tmp_path, {"app.py": RELOADABLE % "one"}, layer_dirs=[layer])
    first = payload(pool.run(function, make_invocation()))
    assert (first["version"], first["helper"]) == ("one", "layer-1")
    assert payload(pool.run(function, make_invocation()))["pid"] == first["pid"]

    (function.code_dir / "app.py").write_text(textwrap.dedent(RELOADABLE % "two!"))
    second = payload(pool.run(function, make_invocation()))
    assert second["version"] == "two!"
    assert second["pid"] != first["pid"]

    (layer / "python" / "helper.py").write_text("VALUE = 'layer-two'\n")
    third = payload(pool.run(function, make_invocation()))
    assert third["helper"] == "layer-two"
    assert pool.pids() == [third["pid"]]


BLOCKING = """
    import pathlib
    import time


    def lambda_handler(event, context):
        print("started %s")
        release = pathlib.Path(event["release"])
        deadline = time.monotonic() + 30
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return "%s"
"""


def test_busy_worker_finishes_with_its_code_before_being_replaced(tmp_path, pool, output):
    function = write_function(tmp_path, {"app.py": BLOCKING % ("v1", "v1")})
    release = tmp_path / "release"
    busy: list = []
    thread = threading.Thread(
        target=lambda: busy.append(pool.run(function, make_invocation({"release": str(release)})))
    )
    thread.start()
    output.wait_for("started v1")
    busy_pid = pool.pids("Fn")[0]
    (function.code_dir / "app.py").write_text(textwrap.dedent(BLOCKING % ("v2", "v2 with more")))
    release.touch()
    fresh = pool.run(function, make_invocation({"release": str(release)}))
    thread.join(30)
    assert json.loads(busy[0].payload) == "v1"
    assert json.loads(fresh.payload) == "v2 with more"
    pool.run(function, make_invocation({"release": str(release)}))
    assert busy_pid not in pool.pids("Fn")
    assert len(pool.pids("Fn")) == 1


def test_source_fingerprint_ignores_caches(tmp_path):
    function = write_function(tmp_path, {"app.py": HELLO % "a"})
    before = source_fingerprint(function)
    (function.code_dir / "__pycache__").mkdir()
    (function.code_dir / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"cache")
    (function.code_dir / ".venv").mkdir()
    (function.code_dir / ".venv" / "x.py").write_text("x = 1\n")
    # A function without CodeUri has the whole project folder as code: builds' output is not its source.
    for output in (".aws-sam/build/Fn", "cdk.out/asset.0a1b"):
        (function.code_dir / output).mkdir(parents=True)
        (function.code_dir / output / "app.py").write_text("")
    assert source_fingerprint(function) == before
    (function.code_dir / "new_module.py").write_text("")
    assert source_fingerprint(function) != before


def test_init_error_then_fixed_code_works(tmp_path, pool):
    function = write_function(tmp_path, {"app.py": "import not_installed_dependency\n"})
    assert pool.run(function, make_invocation()).error["errorType"] == "Runtime.ImportModuleError"
    (function.code_dir / "app.py").write_text(textwrap.dedent(HELLO % "fixed"))
    assert payload(pool.run(function, make_invocation()))["from"] == "fixed"


# --- Crashes ---------------------------------------------------------------------------------------
CRASHES = {
    "sys.exit(3)": "Runtime exited with error: exit status 3",
    "sys.exit()": "Runtime exited without providing a reason",
    "os._exit(7)": "Runtime exited with error: exit status 7",
    "ctypes.string_at(0)": "Runtime exited with error: signal: segmentation fault",
    "os.kill(os.getpid(), signal.SIGKILL)": "Runtime exited with error: signal: killed",
}


@pytest.mark.parametrize("statement", sorted(CRASHES))
def test_a_handler_ending_the_process_gives_exit_error_and_a_new_worker(tmp_path, pool, output, statement):
    source = f"""
        import ctypes
        import os
        import signal
        import sys


        def lambda_handler(event, context):
            if event.get("crash"):
                print("about to end")
                {statement}
            return os.getpid()
    """
    function = write_function(tmp_path, {"app.py": source})
    first_pid = payload(pool.run(function, make_invocation()))
    invocation = make_invocation({"crash": True})
    result = pool.run(function, invocation)
    assert result.status_code == 500
    assert result.error == {
        "errorMessage": f"RequestId: {invocation.request_id} Error: {CRASHES[statement]}",
        "errorType": "Runtime.ExitError",
        "stackTrace": [],
    }
    assert "about to end" in output.of(invocation.request_id)
    second_pid = payload(pool.run(function, make_invocation()))
    assert second_pid != first_pid
    assert pool.pids("Fn") == [second_pid]


def test_exit_error_messages():
    assert (
        exit_error("r-1", 1)["errorMessage"]
        == "RequestId: r-1 Error: Runtime exited with error: exit status 1"
    )
    assert (
        exit_error("r-1", -6)["errorMessage"]
        == "RequestId: r-1 Error: Runtime exited with error: signal: aborted"
    )


def test_ten_megabytes_of_output_stream_through(tmp_path, pool, output):
    source = """
        import sys


        def lambda_handler(event, context):
            line = "x" * 99 + "\\n"
            for _ in range(100_000):
                sys.stdout.write(line)
            sys.stderr.write("y" * 300_000)
            return "done"
    """
    function = write_function(tmp_path, {"app.py": source})
    invocation = make_invocation()
    result = pool.run(function, invocation)
    assert json.loads(result.payload) == "done"
    lines = output.of(invocation.request_id)
    assert len(lines) == 100_000
    assert set(lines) == {"x" * 99}
    assert "".join(output.of(invocation.request_id, "stderr")) == "y" * 300_000


def test_output_lines_are_attributed_to_their_invocation_before_run_returns(tmp_path, pool, output):
    source = """
        import logging
        import sys


        def lambda_handler(event, context):
            print("out", event["n"])
            print("err", event["n"], file=sys.stderr)
            logging.getLogger("orders").warning("careful %s", event["n"])
            print("no newline at the end", end="")
            return event["n"]
    """
    function = write_function(tmp_path, {"app.py": source})
    for n in range(3):
        invocation = make_invocation({"n": n})
        pool.run(function, invocation)
        lines = output.of(invocation.request_id)
        assert lines[0] == f"out {n}"
        assert re.fullmatch(
            rf"\[WARNING\]\t\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\t{invocation.request_id}\tcareful {n}",
            lines[1],
        )
        assert lines[2:] == ["no newline at the end"]
        assert output.of(invocation.request_id, "stderr") == [f"err {n}"]


def test_log_level_and_json_format_follow_the_deployed_configuration(tmp_path, pool, output):
    source = """
        import logging


        def lambda_handler(event, context):
            logging.debug("debug message")
            logging.info("info message")
            logging.getLogger("orders").error("error %d", 5)
            return None
    """
    function = write_function(tmp_path, {"app.py": source})
    plain = make_invocation()
    pool.run(function, plain)
    assert [line.split("\t")[-1] for line in output.of(plain.request_id)] == ["error 5"]

    debug = make_invocation(environment={"AWS_LAMBDA_LOG_LEVEL": "DEBUG"})
    pool.run(function, debug)
    assert [line.split("\t")[-1] for line in output.of(debug.request_id)] == [
        "debug message",
        "info message",
        "error 5",
    ]
    as_json = make_invocation(environment={"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "ERROR"})
    pool.run(function, as_json)
    [record] = [json.loads(line) for line in output.of(as_json.request_id)]
    assert {k: record[k] for k in ("level", "message", "logger", "requestId")} == {
        "level": "ERROR",
        "message": "error 5",
        "logger": "orders",
        "requestId": as_json.request_id,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["timestamp"])


# --- Context and environment -----------------------------------------------------------------------
CONTEXT = """
    import os
    import time


    def lambda_handler(event, context):
        first = context.get_remaining_time_in_millis()
        time.sleep(0.05)
        second = context.get_remaining_time_in_millis()
        client = context.client_context
        return {
            "first": first,
            "second": second,
            "request_id": context.aws_request_id,
            "arn": context.invoked_function_arn,
            "name": context.function_name,
            "version": context.function_version,
            "memory": context.memory_limit_in_mb,
            "group": context.log_group_name,
            "stream": context.log_stream_name,
            "identity": [context.identity.cognito_identity_id, context.identity.cognito_identity_pool_id],
            "client": [client.client.installation_id, client.custom, client.env],
            "w3c": context.w3c(),
            "tenant": context.tenant_id,
            "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        }
"""


def test_context_counts_down_to_the_real_deadline(tmp_path, pool):
    function = write_function(tmp_path, {"app.py": CONTEXT})
    deadline = int(time.time() * 1000) + 60_000
    invocation = make_invocation(
        deadline_ms=deadline,
        clientContext=json.dumps(
            {
                "client": {"installation_id": "install-1", "app_title": "Shop"},
                "custom": {"cart": "c-9"},
                "env": {"locale": "en"},
                "w3c": {"traceparent": "00-abc-def-01", "other": "dropped"},
            }
        ),
        cognitoIdentity={"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"},
        tenantId="tenant-7",
    )
    before = int(time.time() * 1000)
    result = payload(pool.run(function, invocation))
    assert deadline - before - 30_000 < result["first"] <= deadline - before
    assert result["second"] <= result["first"] - 45
    assert {k: v for k, v in result.items() if k not in ("first", "second")} == {
        "request_id": invocation.request_id,
        "arn": ARN,
        "name": "orders-fn",
        "version": "$LATEST",
        "memory": "256",
        "group": "/aws/lambda/orders-fn",
        "stream": "2026/01/01/[$LATEST]0123456789abcdef",
        "identity": ["id-1", "pool-1"],
        "client": ["install-1", {"cart": "c-9"}, {"locale": "en"}],
        "w3c": {"traceparent": "00-abc-def-01"},
        "tenant": "tenant-7",
        "trace": "Root=1-65f0a8b2-0123456789abcdef01234567;Sampled=1",
    }


def test_context_matches_the_runtime_context(monkeypatch):
    deadline = int(time.time() * 1000) + 60_000
    client_context = {
        "client": {"installation_id": "i", "app_title": "t"},
        "custom": {"a": 1},
        "env": {"e": 2},
    }
    identity = {"cognitoIdentityId": "id", "cognitoIdentityPoolId": "pool"}
    for name, value in {
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/fn",
        "AWS_LAMBDA_LOG_STREAM_NAME": "stream",
        "AWS_LAMBDA_FUNCTION_NAME": "fn",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_FUNCTION_VERSION": "7",
    }.items():
        monkeypatch.setenv(name, value)
    runtime = RuntimeLambdaContext("req-1", dict(client_context), identity, deadline, ARN, "tenant")
    ours = lambda_context(
        "req-1",
        {
            "functionName": "fn",
            "functionVersion": "7",
            "invokedFunctionArn": ARN,
            "memoryLimitInMB": 512,
            "deadlineMs": deadline,
            "logGroupName": "/aws/lambda/fn",
            "logStreamName": "stream",
            "clientContext": json.dumps(client_context),
            "cognitoIdentity": identity,
            "tenantId": "tenant",
        },
    )
    assert repr(ours) == repr(runtime)
    assert ours.client_context.client.app_title == runtime.client_context.client.app_title == "t"
    assert abs(ours.get_remaining_time_in_millis() - runtime.get_remaining_time_in_millis()) < 50


ENVIRONMENT = """
    import os
    import sys

    NAMES = [
        "TABLE", "PATH", "AWS_LAMBDA_EXEC_WRAPPER", "DEBUGGER_SESSION_ID", "AWS_ENDPOINT_URL", "AWS_REGION",
        "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "_HANDLER", "LAMBDA_TASK_ROOT",
        "AWS_EXECUTION_ENV", "AWS_LAMBDA_RUNTIME_API", "_X_AMZN_TRACE_ID",
    ]


    def lambda_handler(event, context):
        return {"environ": {name: os.environ.get(name) for name in NAMES}, "pid": os.getpid(), "cwd": os.getcwd()}
"""


def test_worker_sees_the_deployed_environment_and_the_role_credentials(tmp_path, pool, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "developer")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIADEVELOPER")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://developer-endpoint")
    function = write_function(tmp_path, {"app.py": ENVIRONMENT})
    deployed = {
        "TABLE": "orders",
        "PATH": "/var/lang/bin:/usr/local/bin",
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/plldb-debugger/wrapper",
        "DEBUGGER_SESSION_ID": "s-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
        "AWS_REGION": "eu-west-1",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "LAMBDA_TASK_ROOT": "/var/task",
    }
    credentials = {"accessKeyId": "ASIAROLE", "secretAccessKey": "role-secret", "sessionToken": "role-token"}
    configured = frozenset({"TABLE", "AWS_ENDPOINT_URL"})

    def invocation(environment, credentials, **context):
        invocation = make_invocation(environment=environment, credentials=credentials, **context)
        return dataclasses.replace(invocation, configured_variables=configured)

    first = payload(pool.run(function, invocation(deployed, credentials)))
    assert first["environ"] == {
        "TABLE": "orders",
        "PATH": os.environ["PATH"],
        "AWS_LAMBDA_EXEC_WRAPPER": None,
        "DEBUGGER_SESSION_ID": None,
        "AWS_ENDPOINT_URL": "http://developer-endpoint",  # the developer's, never the message's
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_PROFILE": None,
        "AWS_ACCESS_KEY_ID": "ASIAROLE",
        "AWS_SECRET_ACCESS_KEY": "role-secret",
        "AWS_SESSION_TOKEN": "role-token",
        "AWS_LAMBDA_FUNCTION_NAME": "orders-fn",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/orders-fn",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]0123456789abcdef",
        "_HANDLER": "app.lambda_handler",
        "LAMBDA_TASK_ROOT": str(function.code_dir),
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{PY}",
        "AWS_LAMBDA_RUNTIME_API": None,
        "_X_AMZN_TRACE_ID": "Root=1-65f0a8b2-0123456789abcdef01234567;Sampled=1",
    }
    assert first["cwd"] == str(function.code_dir)

    rotated = {"accessKeyId": "ASIAROTATED", "secretAccessKey": "s2", "sessionToken": "t2"}
    second = payload(pool.run(function, invocation(deployed, rotated, traceId=None)))
    assert second["pid"] == first["pid"]
    assert (second["environ"]["AWS_ACCESS_KEY_ID"], second["environ"]["_X_AMZN_TRACE_ID"]) == (
        "ASIAROTATED",
        None,
    )

    changed = dict(deployed, TABLE="orders-v2")
    third = payload(pool.run(function, invocation(changed, rotated)))
    assert third["pid"] != first["pid"]
    assert third["environ"]["TABLE"] == "orders-v2"


def test_local_credentials_keep_the_developers_aws_settings(tmp_path, output, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "developer")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIADEVELOPER")
    function = write_function(tmp_path, {"app.py": ENVIRONMENT})
    credentials = {"accessKeyId": "ASIAROLE", "secretAccessKey": "role-secret", "sessionToken": "role-token"}
    with WorkerPool(output=output, local_credentials=True, extra_sys_path=[]) as pool:
        result = payload(pool.run(function, make_invocation(credentials=credentials)))
    assert result["environ"]["AWS_PROFILE"] == "developer"
    assert result["environ"]["AWS_ACCESS_KEY_ID"] == "AKIADEVELOPER"


def test_worker_environment_splits_fixed_and_per_invocation_variables(tmp_path):
    function = write_function(tmp_path, {"app.py": ""})
    invocation = make_invocation(
        environment={"A": "1", "_LAMBDA_TELEMETRY_LOG_FD": "3"},
        credentials={"accessKeyId": "k", "secretAccessKey": "s", "sessionToken": "t"},
        invokedFunctionArn="arn:aws:lambda:ap-south-1:123456789012:function:f",
    )
    invocation = dataclasses.replace(
        invocation, configured_variables=frozenset({"A", "_LAMBDA_TELEMETRY_LOG_FD"})
    )
    fixed, per_invocation = worker_environment(function, invocation, parent_environ={"HOME": "/home/dev"})
    assert fixed == {
        "HOME": "/home/dev",
        "A": "1",
        "AWS_LAMBDA_FUNCTION_NAME": "orders-fn",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/orders-fn",
        "AWS_REGION": "ap-south-1",
        "AWS_DEFAULT_REGION": "ap-south-1",
        "_HANDLER": "app.lambda_handler",
        "LAMBDA_TASK_ROOT": str(function.code_dir),
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{PY}",
    }
    assert per_invocation == {
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]0123456789abcdef",
        "_X_AMZN_TRACE_ID": "Root=1-65f0a8b2-0123456789abcdef01234567;Sampled=1",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_SESSION_TOKEN": "t",
    }


SYS_PATH = """
    import sys

    import from_layer_one
    import from_layer_two
    import from_venv


    PLLDB_DEPENDENCIES = ("boto3", "click", "yaml", "samtranslator", "cfn_tools", "rich", "websockets")


    def lambda_handler(event, context):
        preloaded = [name for name in PLLDB_DEPENDENCIES if name in sys.modules]
        return {"path": sys.path, "layer": from_layer_one.WHO, "venv": from_venv.WHO, "preloaded": preloaded}
"""


def test_sys_path_is_code_then_layers_then_project_virtualenv(tmp_path, output, monkeypatch):
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    layer_one = tmp_path / "layer_one"
    (layer_one / "python").mkdir(parents=True)
    (layer_one / "python" / "from_layer_one.py").write_text("WHO = 'layer one'\n")
    (layer_one / "python" / "shared.py").write_text("WHO = 'layer one'\n")
    layer_two = tmp_path / "layer_two"
    layer_two.mkdir()
    (layer_two / "from_layer_two.py").write_text("WHO = 'layer two'\n")
    site_packages = tmp_path / ".venv" / "lib" / PY / "site-packages"
    site_packages.mkdir(parents=True)
    (site_packages / "from_venv.py").write_text("WHO = 'venv'\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (site_packages / "editable.pth").write_text(f"{linked}\n")
    function = write_function(tmp_path, {"app.py": SYS_PATH}, layer_dirs=[layer_one, layer_two])
    with WorkerPool(output=output) as pool:
        result = payload(pool.run(function, make_invocation()))
    assert result["path"][:5] == [
        str(function.code_dir),
        str(layer_two),
        str(layer_one / "python"),
        str(site_packages),
        str(linked),
    ]
    assert "" not in result["path"]
    assert result["path"].count(str(function.code_dir)) == 1
    assert (result["layer"], result["venv"]) == ("layer one", "venv")
    assert result["preloaded"] == []  # the worker imports nothing that could shadow the project's packages


def test_a_runtime_plldb_cannot_run_is_warned_once_when_the_pool_plans_it(tmp_path, output):
    """Without a plan made at start, the pool plans each function at its first invocation and warns then."""
    function = write_function(tmp_path, {"app.py": HELLO % "a"}, runtime="python3.9")
    warnings: list[str] = []
    with WorkerPool(output=output, extra_sys_path=None, warn=warnings.append, environ={}) as pool:
        pool.run(function, make_invocation())
        pool.run(function, make_invocation())
    assert warnings == [
        "No Python matching the Runtime was found for 1 function, run here on another version, where "
        "behaviour that differs between the versions may show: "
        f"Fn (python3.9) on Python {PY[6:]} ({sys.executable}). plldb runs handlers on Python 3.10 or later: "
        "move the functions to a supported Runtime."
    ]


def test_close_ends_a_busy_invocation_and_refuses_new_ones(tmp_path, output):
    function = write_function(tmp_path, {"app.py": BLOCKING % ("v1", "v1")})
    pool = WorkerPool(output=output, extra_sys_path=[])
    results: list = []
    thread = threading.Thread(
        target=lambda: results.append(
            pool.run(function, make_invocation({"release": str(tmp_path / "never")}))
        )
    )
    thread.start()
    output.wait_for("started v1")
    pool.close()
    thread.join(30)
    assert results[0].status_code == 500
    assert results[0].error["errorType"] == "Runtime.ExitError"
    with pytest.raises(PlldbError) as error:
        pool.run(function, make_invocation())
    assert error.value.message == "The worker pool is closed."
