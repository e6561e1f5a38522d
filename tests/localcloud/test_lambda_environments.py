"""Lambda invocations through moto's server run real code in real execution environments."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import re
import socket
import stat
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

from plldb.localcloud import lambda_environments
from plldb.localcloud.lambda_environments import EnvironmentManager, ServiceShutDown
from plldb.localcloud.runtime_api import Invocation, RuntimeApi
from tests.cloud_state import wait_for

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
EXECUTE_API_ENDPOINT = "http://127.0.0.1:4510"
FIXTURES = Path(__file__).parent / "lambda_fixtures"
REQUEST_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def build_zip(files: dict[str, bytes | str], modes: dict[str, int] | None = None) -> bytes:
    """A deployment package or layer; modes are Unix permissions kept in the entries' external_attr."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = (0o100000 | (modes or {}).get(name, 0o644)) << 16
            archive.writestr(info, content)
    return buffer.getvalue()


APP_ZIP = build_zip({"app.py": (FIXTURES / "app.py").read_bytes()})


@dataclass
class Cloud:
    endpoint_url: str
    manager: EnvironmentManager
    session: boto3.Session
    role_arn: str
    role_name: str

    def client(self, service: str, **config: Any) -> Any:
        return self.session.client(  # type: ignore[call-overload]
            service, endpoint_url=self.endpoint_url, config=Config(retries={"max_attempts": 0}, **config)
        )

    def create_function(self, handler: str, **extra: Any) -> str:
        name = "fn-" + uuid.uuid4().hex[:12]
        arguments: dict[str, Any] = {
            "FunctionName": name,
            "Runtime": "python3.12",
            "Role": self.role_arn,
            "Handler": handler,
            "Code": {"ZipFile": APP_ZIP},
            "Timeout": 10,
        }
        arguments.update(extra)
        self.client("lambda").create_function(**arguments)
        return name

    def invoke(self, name: str, event: Any = None, **extra: Any) -> dict[str, Any]:
        payload = json.dumps(event if event is not None else {})
        response = self.client("lambda").invoke(FunctionName=name, Payload=payload, **extra)
        response["Body"] = response["Payload"].read()
        return response


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """moto's server in this process, with its Invoke routed through a fresh EnvironmentManager."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    manager = EnvironmentManager(
        endpoint_url, EXECUTE_API_ENDPOINT, tmp_path_factory.mktemp("lambda"), ACCOUNT_ID, REGION
    )
    previous = lambda_environments.installed_manager()
    lambda_environments.install(manager)
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    role_name = "role-" + uuid.uuid4().hex[:8]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role_arn = session.client("iam", endpoint_url=endpoint_url).create_role(
        RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust)
    )["Role"]["Arn"]
    try:
        yield Cloud(endpoint_url, manager, session, role_arn, role_name)
    finally:
        manager.shutdown()
        if previous is not None:
            lambda_environments.install(previous)
        else:
            lambda_environments.uninstall()
        server.stop()


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- Results and errors ---------------------------------------------------------------------------------
def test_invoke_runs_the_handler_and_returns_its_result(cloud: Cloud) -> None:
    name = cloud.create_function("app.echo", MemorySize=256)
    response = cloud.invoke(name, {"hello": "world"})

    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    body = json.loads(response["Body"])
    assert REQUEST_ID.match(body.pop("request_id"))
    assert 0 < body.pop("remaining_ms") <= 10_000
    assert re.match(r"^\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}$", body.pop("log_stream_name"))
    assert body == {
        "event": {"hello": "world"},
        "function_name": name,
        "function_version": "$LATEST",
        "invoked_function_arn": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}",
        "memory_limit_in_mb": "256",
        "log_group_name": f"/aws/lambda/{name}",
    }


def test_code_uploaded_to_s3_runs(cloud: Cloud) -> None:
    bucket = "code-" + uuid.uuid4().hex[:8]
    s3 = cloud.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="app.zip", Body=APP_ZIP)
    name = cloud.create_function("app.count", Code={"S3Bucket": bucket, "S3Key": "app.zip"})

    assert json.loads(cloud.invoke(name)["Body"])["invocations"] == 1


def test_handler_exception_is_an_unhandled_function_error(cloud: Cloud) -> None:
    name = cloud.create_function("app.fail")
    response = cloud.invoke(name, {"n": 42})

    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Body"])
    assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert error["errorMessage"] == "boom 42"
    assert error["errorType"] == "ValueError"
    assert REQUEST_ID.match(error["requestId"])
    assert len(error["stackTrace"]) == 1
    assert re.match(
        r'^  File "/.+/app\.py", line 27, in fail\n    raise ValueError\(f"boom \{event\[\'n\'\]\}"\)\n$',
        error["stackTrace"][0],
    )


def test_missing_module_is_reported_as_lambda_reports_init_errors(cloud: Cloud) -> None:
    name = cloud.create_function("missing_module.handler")
    response = cloud.invoke(name)

    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Body"]) == {
        "errorMessage": "Unable to import module 'missing_module': No module named 'missing_module'",
        "errorType": "Runtime.ImportModuleError",
        "requestId": "",
        "stackTrace": [],
    }


def test_missing_handler_function_is_runtime_handler_not_found(cloud: Cloud) -> None:
    name = cloud.create_function("app.not_there")
    response = cloud.invoke(name)

    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Body"]) == {
        "errorMessage": "Handler 'not_there' missing on module 'app'",
        "errorType": "Runtime.HandlerNotFound",
        "requestId": "",
        "stackTrace": [],
    }


def test_runtime_exit_is_a_runtime_exit_error_and_the_next_invocation_recovers(cloud: Cloud) -> None:
    name = cloud.create_function("app.crash")
    response = cloud.invoke(name, {"code": 3})

    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Body"])
    assert error["errorType"] == "Runtime.ExitError"
    assert re.match(
        r"^RequestId: \S+ Error: Runtime exited with error: exit status 3$", error["errorMessage"]
    )
    cloud.client("lambda").update_function_configuration(FunctionName=name, Handler="app.count")
    assert json.loads(cloud.invoke(name)["Body"])["invocations"] == 1


def test_unknown_function_is_resource_not_found(cloud: Cloud) -> None:
    with pytest.raises(ClientError) as raised:
        cloud.client("lambda").invoke(FunctionName="no-such-function", Payload=b"{}")

    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error["Error"]["Code"] == "ResourceNotFoundException"
    assert error["Error"]["Message"] == (
        f"Function not found: arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:no-such-function"
    )


def test_payload_that_is_not_json_is_invalid_request_content(cloud: Cloud) -> None:
    name = cloud.create_function("app.echo")
    with pytest.raises(ClientError) as raised:
        cloud.client("lambda").invoke(FunctionName=name, Payload=b"not json")

    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert raised.value.response["Error"]["Code"] == "InvalidRequestContentException"
    assert raised.value.response["Error"]["Message"].startswith(
        "Could not parse request body into json: Could not parse payload into json: "
    )


# --- Timeouts ------------------------------------------------------------------------------------------
def test_timeout_kills_the_environment_with_lambdas_message(cloud: Cloud) -> None:
    name = cloud.create_function("app.sleep", Timeout=1)
    warm = json.loads(cloud.invoke(name, {"seconds": 0})["Body"])

    response = cloud.invoke(name, {"seconds": 30})

    # Lambda's message names the 1 s timeout, and the environment that ran the 30 s sleep is gone.
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Body"])
    assert list(error) == ["errorMessage"]
    assert re.match(
        rf"^{TIMESTAMP} [0-9a-f-]{{36}} Task timed out after 1\.00 seconds$", error["errorMessage"]
    ), error
    assert not process_exists(warm["pid"])
    again = json.loads(cloud.invoke(name, {"seconds": 0})["Body"])
    assert again["pid"] != warm["pid"]


# --- Warm environments, configuration changes and concurrency --------------------------------------------
def test_module_state_persists_while_the_environment_is_warm(cloud: Cloud) -> None:
    name = cloud.create_function("app.count")
    results = [json.loads(cloud.invoke(name)["Body"]) for _ in range(3)]

    assert [result["invocations"] for result in results] == [1, 2, 3]
    assert len({result["pid"] for result in results}) == 1


def test_configuration_change_starts_a_new_environment(cloud: Cloud) -> None:
    name = cloud.create_function("app.count", Environment={"Variables": {"SETTING": "first"}})
    before = json.loads(cloud.invoke(name)["Body"])

    cloud.client("lambda").update_function_configuration(
        FunctionName=name, Environment={"Variables": {"SETTING": "second"}}
    )
    after = json.loads(cloud.invoke(name)["Body"])

    assert before["setting"] == "first"
    assert after == {"invocations": 1, "pid": after["pid"], "setting": "second"}
    assert after["pid"] != before["pid"]
    assert not process_exists(before["pid"])


def test_code_change_starts_a_new_environment(cloud: Cloud) -> None:
    name = cloud.create_function("app.count")
    before = json.loads(cloud.invoke(name)["Body"])
    changed = build_zip({"app.py": b"def count(event, context):\n    return 'new code'\n"})

    cloud.client("lambda").update_function_code(FunctionName=name, ZipFile=changed)

    assert json.loads(cloud.invoke(name)["Body"]) == "new code"
    assert not process_exists(before["pid"])


def test_an_update_stops_the_replaced_configurations_idle_environments_at_once(cloud: Cloud) -> None:
    """As Lambda runs later invocations in environments of the new configuration, the old ones go with
    the update itself, not when the function is next invoked or the idle limit passes."""
    name = cloud.create_function("app.count", Environment={"Variables": {"SETTING": "first"}})
    pid = json.loads(cloud.invoke(name)["Body"])["pid"]
    assert process_exists(pid)

    cloud.client("lambda").update_function_configuration(
        FunctionName=name, Environment={"Variables": {"SETTING": "second"}}
    )

    assert not process_exists(pid)


def test_an_update_lets_a_running_invocation_finish_then_stops_its_environment(
    cloud: Cloud, tmp_path: Path
) -> None:
    name = cloud.create_function("app.rendezvous")
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(cloud.invoke, name, {"folder": str(tmp_path), "count": 2, "within": 120})
        wait_for(lambda: len(list(tmp_path.iterdir())) == 1, "the invocation to start")
        cloud.client("lambda").update_function_code(FunctionName=name, ZipFile=APP_ZIP)
        (tmp_path / "release").touch()  # the second arrival the invocation waits for
        response = running.result()
    assert response.get("FunctionError") is None
    pid = json.loads(response["Body"])["pid"]
    wait_for(lambda: not process_exists(pid), "the retired environment to stop")


def test_concurrent_invocations_run_in_separate_environments(cloud: Cloud, tmp_path: Path) -> None:
    name = cloud.create_function("app.rendezvous")
    event = {"folder": str(tmp_path), "count": 5, "within": 60}
    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(lambda _: cloud.invoke(name, event), range(5)))

    # Each invocation returns only once all five have arrived, so they ran at the same time.
    assert [response.get("FunctionError") for response in responses] == [None] * 5
    pids = {json.loads(response["Body"])["pid"] for response in responses}
    assert len(pids) == 5
    warm = [json.loads(cloud.invoke(name, dict(event, count=0))["Body"])["pid"] for _ in range(2)]
    assert set(warm) <= pids


def test_standard_environment_variables(cloud: Cloud) -> None:
    name = cloud.create_function(
        "app.environment",
        MemorySize=512,
        Environment={"Variables": {"MY_SETTING": "mine", "TZ": "Europe/Paris"}},
    )
    body = json.loads(cloud.invoke(name)["Body"])
    environ = body["environ"]

    expected = {
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "_HANDLER": "app.environment",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "LANG": "en_US.UTF-8",
        "TZ": "Europe/Paris",  # not reserved: a function may set its own
        "AWS_ENDPOINT_URL": cloud.endpoint_url,
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        "PLLDB_EXECUTE_API_ENDPOINT": EXECUTE_API_ENDPOINT,
        "MY_SETTING": "mine",
        "LAMBDA_TASK_ROOT": body["cwd"],
    }
    assert {key: environ.get(key) for key in expected} == expected
    assert re.match(r"^127\.0\.0\.1:\d+$", environ["AWS_LAMBDA_RUNTIME_API"])
    assert re.match(r"^\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}$", environ["AWS_LAMBDA_LOG_STREAM_NAME"])
    # Lambda sets no PYTHONPATH; its bootstrap.py gives the runtime's processes LAMBDA_RUNTIME_DIR.
    assert environ["PYTHONPATH"] == environ["LAMBDA_RUNTIME_DIR"]
    assert Path(environ["LAMBDA_RUNTIME_DIR"], "awslambdaric").is_dir()
    assert environ["PATH"].split(":")[0] == os.path.dirname(sys.executable)


def test_credentials_are_the_execution_role_session(cloud: Cloud) -> None:
    name = cloud.create_function("app.whoami")
    body = json.loads(cloud.invoke(name)["Body"])

    assert body["arn"] == f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{cloud.role_name}/{name}"
    assumed = sts_backends[ACCOUNT_ID]["aws"].get_assumed_role_from_access_key(body["access_key_id"])
    assert assumed is not None
    assert (assumed.role_arn, assumed.session_name) == (cloud.role_arn, name)


def test_layers_are_on_the_python_path_and_later_layers_win(cloud: Cloud) -> None:
    lambda_client = cloud.client("lambda")
    first = lambda_client.publish_layer_version(
        LayerName="first-" + uuid.uuid4().hex[:8],
        Content={
            "ZipFile": build_zip(
                {
                    "python/from_layer_python.py": "VALUE = 'first'\n",
                    "python/lib/python3.12/site-packages/from_layer_site_packages.py": "VALUE = 'site'\n",
                }
            )
        },
    )["LayerVersionArn"]
    second = lambda_client.publish_layer_version(
        LayerName="second-" + uuid.uuid4().hex[:8],
        Content={"ZipFile": build_zip({"python/from_layer_python.py": "VALUE = 'second'\n"})},
    )["LayerVersionArn"]
    name = cloud.create_function("app.layered", Layers=[first, second])

    assert json.loads(cloud.invoke(name)["Body"]) == {"python": "second", "site_packages": "site"}


def test_exec_wrapper_runs_with_the_runtime_command_line(cloud: Cloud, tmp_path: Path) -> None:
    layer = cloud.client("lambda").publish_layer_version(
        LayerName="wrapper-" + uuid.uuid4().hex[:8],
        Content={
            "ZipFile": build_zip(
                {"wrapper.sh": (FIXTURES / "wrapper.sh").read_bytes()}, {"wrapper.sh": 0o755}
            )
        },
    )["LayerVersionArn"]
    record = tmp_path / "wrapper-arguments.txt"
    name = cloud.create_function(
        "app.echo",
        Layers=[layer],
        Environment={
            "Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrapper.sh", "WRAPPER_RECORD": str(record)}
        },
    )

    response = cloud.invoke(name, {"through": "wrapper"})

    assert json.loads(response["Body"])["event"] == {"through": "wrapper"}
    runtime = record.read_text().splitlines()
    assert runtime[0] == sys.executable
    assert runtime[1:] == [str(Path(runtime[1]).parent / "bootstrap.py")]
    assert (Path(runtime[1]).parent / "awslambdaric" / "__main__.py").is_file()


def test_runtime_builds_its_path_from_the_task_root_and_the_layers(cloud: Cloud) -> None:
    layer = cloud.client("lambda").publish_layer_version(
        LayerName="paths-" + uuid.uuid4().hex[:8],
        Content={
            "ZipFile": build_zip(
                {
                    "python/from_layer_python.py": "VALUE = 'layer'\n",
                    "python/lib/python3.12/site-packages/extra.pth": "vendored\n",
                    "python/lib/python3.12/site-packages/vendored/from_pth.py": "VALUE = 'pth'\n",
                }
            )
        },
    )["LayerVersionArn"]
    name = cloud.create_function("app.paths", Layers=[layer])
    body = json.loads(cloud.invoke(name, {"modules": ["from_layer_python", "from_pth", "app"]})["Body"])
    task_root = Path(body["cwd"])
    opt = next(Path(entry) for entry in body["sys_path"] if entry.endswith("/python")).parent
    site_packages = opt / "python" / "lib" / "python3.12" / "site-packages"
    assert body["sys_path"][:4] == [
        str(task_root),
        str(site_packages),
        str(opt / "python"),
        sysconfig.get_paths()["purelib"],
    ]
    assert str(site_packages / "vendored") in body["sys_path"]  # .pth files are processed
    assert body["finds"] == {"from_layer_python": True, "from_pth": True, "app": True}
    assert body["PYTHONPATH"] == str(Path(body["sys_path"][4]))  # LAMBDA_RUNTIME_DIR, the script's folder


def test_configured_pythonpath_replaces_the_layer_directories(cloud: Cloud, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "own_module.py").write_text("VALUE = 1\n")
    layer = cloud.client("lambda").publish_layer_version(
        LayerName="ignored-" + uuid.uuid4().hex[:8],
        Content={"ZipFile": build_zip({"python/from_layer_python.py": "VALUE = 'layer'\n"})},
    )["LayerVersionArn"]
    name = cloud.create_function(
        "app.paths",
        Layers=[layer],
        Environment={"Variables": {"PYTHONPATH": str(tmp_path / "mine")}},
    )
    body = json.loads(cloud.invoke(name, {"modules": ["from_layer_python", "own_module"]})["Body"])
    assert body["PYTHONPATH"] == str(tmp_path / "mine")
    assert body["finds"] == {"from_layer_python": False, "own_module": True}
    task_root, runtime_dir, configured = body["sys_path"][:3]
    assert (task_root, configured) == (body["cwd"], str(tmp_path / "mine"))
    assert Path(runtime_dir, "bootstrap.py").is_file()  # the script's own folder, as /var/runtime on AWS


def test_a_program_a_wrapper_starts_instead_sees_lambdas_empty_pythonpath(
    cloud: Cloud, tmp_path: Path
) -> None:
    layer = cloud.client("lambda").publish_layer_version(
        LayerName="probe-" + uuid.uuid4().hex[:8],
        Content={
            "ZipFile": build_zip(
                {
                    "probe_wrapper.sh": (FIXTURES / "probe_wrapper.sh").read_bytes(),
                    "probe.py": (FIXTURES / "probe.py").read_bytes(),
                    "python/from_layer_python.py": "VALUE = 'layer'\n",
                },
                {"probe_wrapper.sh": 0o755},
            )
        },
    )["LayerVersionArn"]
    record = tmp_path / "probe.json"
    name = cloud.create_function(
        "app.layered_python",
        Layers=[layer],
        Environment={
            "Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/opt/probe_wrapper.sh", "WRAPPER_RECORD": str(record)}
        },
    )

    response = cloud.invoke(name)

    assert json.loads(response["Body"]) == {
        "python": "layer"
    }  # the runtime it handed over to builds its path
    seen = json.loads(record.read_text())
    assert seen["PYTHONPATH"] is None
    assert seen["finds_layer_module"] is False
    assert not [entry for entry in seen["sys_path"] if entry.endswith("/python")]
    assert seen["argv"][0] == sys.executable and seen["argv"][1].endswith("/bootstrap.py")


@pytest.mark.parametrize(
    ("wrapper", "mode", "line", "status"),
    [
        ("/opt/not-there.sh", None, "/opt/not-there.sh: does not exist", 127),
        ("/opt/plain.sh", 0o644, "/opt/plain.sh: is not an executable", 126),
    ],
)
def test_a_wrapper_lambda_cannot_run_ends_the_runtime_as_lambdas_bootstrap_does(
    cloud: Cloud, wrapper: str, mode: int | None, line: str, status: int
) -> None:
    extra: dict[str, Any] = {}
    if mode is not None:
        layer = cloud.client("lambda").publish_layer_version(
            LayerName="plain-" + uuid.uuid4().hex[:8],
            Content={"ZipFile": build_zip({"plain.sh": '#!/bin/sh\nexec "$@"\n'}, {"plain.sh": mode})},
        )["LayerVersionArn"]
        extra["Layers"] = [layer]
    name = cloud.create_function(
        "app.echo", Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": wrapper}}, **extra
    )
    response = cloud.invoke(name, LogType="Tail")

    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Body"])
    assert error["errorType"] == "Runtime.ExitError"
    assert re.match(
        rf"^RequestId: \S+ Error: Runtime exited with error: exit status {status}$", error["errorMessage"]
    )
    assert line in base64.b64decode(response["LogResult"]).decode().splitlines()


def test_client_context_reaches_the_handler(cloud: Cloud) -> None:
    name = cloud.create_function("app.client_context")
    context = {"custom": {"tenant": "blue"}, "env": {"locale": "en"}, "client": {}}
    response = cloud.invoke(name, ClientContext=base64.b64encode(json.dumps(context).encode()).decode())

    assert json.loads(response["Body"]) == {"custom": {"tenant": "blue"}, "env": {"locale": "en"}}


def test_alias_invocation_runs_the_published_version(cloud: Cloud) -> None:
    name = cloud.create_function("app.echo")
    lambda_client = cloud.client("lambda")
    version = lambda_client.publish_version(FunctionName=name)["Version"]
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion=version)

    response = cloud.invoke(name, Qualifier="live")

    assert response["ExecutedVersion"] == version
    body = json.loads(response["Body"])
    assert body["invoked_function_arn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}:live"
    assert body["function_version"] == version


# --- Logs ------------------------------------------------------------------------------------------------
def test_log_tail_holds_the_invocations_log(cloud: Cloud) -> None:
    name = cloud.create_function("app.chatty")
    response = cloud.invoke(name, {"marker": "m-1"}, LogType="Tail")
    tail = base64.b64decode(response["LogResult"]).decode()
    quiet = cloud.invoke(name, {"marker": "m-2"})

    lines = tail.splitlines()
    request_id = lines[0].split()[2]
    assert lines[0] == f"START RequestId: {request_id} Version: $LATEST"
    assert "line for the log tail: m-1" in lines
    assert f"END RequestId: {request_id}" in lines
    assert lines[-1].startswith(f"REPORT RequestId: {request_id}\tDuration: ")
    assert "Memory Size: 128 MB" in lines[-1]
    assert "LogResult" not in quiet
    log_files = list((cloud.manager.work_dir / "logs" / name).glob("*.log"))
    assert len(log_files) == 1
    assert "line for the log tail: m-2" in log_files[0].read_text()


def log_messages(cloud: Cloud, group: str) -> list[str] | str:
    """Every message in a CloudWatch Logs group, oldest first, or the error code when it does not exist."""
    logs = cloud.client("logs")
    try:
        events = logs.filter_log_events(logGroupName=group)["events"]
    except logs.exceptions.ResourceNotFoundException:
        return "ResourceNotFoundException"
    return [event["message"] for event in events]


def test_logs_go_to_the_log_group_the_logging_config_names(cloud: Cloud) -> None:
    name = cloud.create_function("app.chatty", LoggingConfig={"LogGroup": "/plldb/tests/chatty"})
    configured = cloud.client("lambda").get_function_configuration(FunctionName=name)["LoggingConfig"]
    cloud.invoke(name, {"marker": "grouped"})
    default_name = cloud.create_function("app.echo")
    default = cloud.client("lambda").get_function_configuration(FunctionName=default_name)["LoggingConfig"]
    context = json.loads(cloud.invoke(default_name)["Body"])

    messages = log_messages(cloud, "/plldb/tests/chatty")
    assert configured == {"LogFormat": "Text", "LogGroup": "/plldb/tests/chatty"}
    assert isinstance(messages, list)
    assert messages[0].startswith("START RequestId: ")
    assert "line for the log tail: grouped" in messages
    assert messages[-1].startswith("REPORT RequestId: ")
    assert log_messages(cloud, f"/aws/lambda/{name}") == "ResourceNotFoundException"
    assert default == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{default_name}"}
    assert context["log_group_name"] == f"/aws/lambda/{default_name}"
    assert f"START RequestId: {context['request_id']} Version: $LATEST" in log_messages(
        cloud, f"/aws/lambda/{default_name}"
    )


def test_a_changed_log_group_takes_the_next_invocations_logs(cloud: Cloud) -> None:
    name = cloud.create_function("app.echo", LoggingConfig={"LogGroup": "/plldb/tests/before"})
    before = json.loads(cloud.invoke(name)["Body"])
    updated = cloud.client("lambda").update_function_configuration(
        FunctionName=name, LoggingConfig={"LogGroup": "/plldb/tests/after"}
    )["LoggingConfig"]
    after = json.loads(cloud.invoke(name)["Body"])

    assert updated == {"LogFormat": "Text", "LogGroup": "/plldb/tests/after"}
    assert (before["log_group_name"], after["log_group_name"]) == (
        "/plldb/tests/before",
        "/plldb/tests/after",
    )
    assert [
        line.split()[2] for line in log_messages(cloud, "/plldb/tests/before") if line.startswith("START")
    ] == [before["request_id"]]
    assert [
        line.split()[2] for line in log_messages(cloud, "/plldb/tests/after") if line.startswith("START")
    ] == [after["request_id"]]


def test_json_log_format_writes_system_and_application_logs_as_json_at_their_levels(cloud: Cloud) -> None:
    name = cloud.create_function(
        "app.leveled",
        MemorySize=256,
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "WARN", "LogGroup": "/plldb/tests/json"},
    )
    configured = cloud.client("lambda").get_function_configuration(FunctionName=name)["LoggingConfig"]
    cloud.invoke(name, {"marker": "j-1"})

    messages = log_messages(cloud, "/plldb/tests/json")
    assert isinstance(messages, list)
    records = [json.loads(message) for message in messages if message.startswith("{")]
    start, *application, report = records
    assert configured == {
        "LogFormat": "JSON",
        "LogGroup": "/plldb/tests/json",
        "ApplicationLogLevel": "WARN",
        "SystemLogLevel": "INFO",
    }
    request_id = start["record"]["requestId"]
    assert REQUEST_ID.match(request_id)
    assert re.fullmatch(TIMESTAMP, start["time"])
    assert (start["type"], start["record"]) == (
        "platform.start",
        {"requestId": request_id, "version": "$LATEST"},
    )
    assert [(r["level"], r["message"], r["requestId"]) for r in application] == [
        ("WARNING", "warning record j-1", request_id)
    ]
    assert report["type"] == "platform.report"
    assert (report["record"]["requestId"], report["record"]["status"]) == (request_id, "success")
    assert report["record"]["metrics"]["memorySizeMB"] == 256
    assert "printed line j-1" in messages
    assert not any("START RequestId" in message or "REPORT RequestId" in message for message in messages)


def test_system_log_level_warn_leaves_out_start_and_report(cloud: Cloud) -> None:
    name = cloud.create_function(
        "app.leveled",
        LoggingConfig={"LogFormat": "JSON", "SystemLogLevel": "WARN", "LogGroup": "/plldb/tests/quiet"},
    )
    cloud.invoke(name, {"marker": "q-1"})

    messages = log_messages(cloud, "/plldb/tests/quiet")
    assert isinstance(messages, list)
    records = [json.loads(message) for message in messages if message.startswith("{")]
    assert [record.get("type") for record in records] == [None, None]  # no platform.start or .report
    assert [(record["level"], record["message"]) for record in records] == [
        ("INFO", "info record q-1"),
        ("WARNING", "warning record q-1"),
    ]
    assert "printed line q-1" in messages


# --- Payload limits --------------------------------------------------------------------------------------
def test_request_payload_over_6_mb_is_refused(cloud: Cloud) -> None:
    name = cloud.create_function("app.echo")
    payload = json.dumps("x" * (6 * 1024 * 1024 - 1)).encode()  # 6 MB + 1 byte of JSON text
    with pytest.raises(ClientError) as raised:
        cloud.client("lambda").invoke(FunctionName=name, Payload=payload)

    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert raised.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert raised.value.response["Error"]["Message"] == (
        "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
    )


def test_event_payload_over_1_mb_is_refused(cloud: Cloud) -> None:
    name = cloud.create_function("app.echo")
    payload = json.dumps("x" * (1024 * 1024 - 1)).encode()
    with pytest.raises(ClientError) as raised:
        cloud.client("lambda").invoke(FunctionName=name, Payload=payload, InvocationType="Event")

    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert raised.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert raised.value.response["Error"]["Message"] == (
        "Request must be smaller than 1048576 bytes for the InvokeFunction operation"
    )


def test_response_over_the_limit_is_function_response_size_too_large(cloud: Cloud) -> None:
    name = cloud.create_function("app.big_response")
    response = cloud.invoke(name, {"size": 7_000_000})

    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Body"]) == {
        "errorMessage": (
            "Response payload size (7000002 bytes) exceeded maximum allowed payload size (6291556 bytes)."
        ),
        "errorType": "Function.ResponseSizeTooLarge",
    }
    assert json.loads(cloud.invoke(name, {"size": 3})["Body"]) == "xxx"


# --- Invocation types --------------------------------------------------------------------------------------
@contextlib.contextmanager
def receiver() -> Iterator[tuple[int, Callable[[], Any]]]:
    """A listening socket the notify handler reports to; messages() blocks until one report arrives."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(15)

        def messages() -> Any:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(15)
                data = b""
                while chunk := connection.recv(65536):
                    data += chunk
            return json.loads(data)

        yield listener.getsockname()[1], messages


def test_event_invocation_returns_202_and_runs_in_the_background(cloud: Cloud) -> None:
    name = cloud.create_function("app.notify")
    with receiver() as (port, messages):
        response = cloud.invoke(name, {"port": port}, InvocationType="Event")
        assert response["StatusCode"] == 202
        assert response["Body"] == b""
        message = messages()

    assert message["event"] == {"port": port}
    assert REQUEST_ID.match(message["request_id"])


def test_moto_internal_invocations_run_the_function_too(cloud: Cloud) -> None:
    """SNS delivery goes through moto's LambdaFunction.invoke, which is routed to the same environments."""
    name = cloud.create_function("app.notify")
    sns = cloud.client("sns")
    topic = sns.create_topic(Name="topic-" + uuid.uuid4().hex[:8])["TopicArn"]
    sns.subscribe(
        TopicArn=topic, Protocol="lambda", Endpoint=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
    )
    with receiver() as (port, messages):
        sns.publish(TopicArn=topic, Message=json.dumps({"port": port}))
        message = messages()

    assert json.loads(message["event"]["Records"][0]["Sns"]["Message"]) == {"port": port}
    assert message["event"]["Records"][0]["EventSource"] == "aws:sns"


def test_dry_run_returns_204_without_running(cloud: Cloud) -> None:
    name = cloud.create_function("app.count")
    response = cloud.invoke(name, InvocationType="DryRun")

    assert response["StatusCode"] == 204
    assert response["Body"] == b""
    assert json.loads(cloud.invoke(name)["Body"])["invocations"] == 1


def test_reserved_concurrency_throttles_synchronous_invocations(cloud: Cloud) -> None:
    name = cloud.create_function("app.count")
    cloud.client("lambda").put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(ClientError) as raised:
        cloud.client("lambda").invoke(FunctionName=name, Payload=b"{}")

    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert raised.value.response["Error"] == {"Code": "TooManyRequestsException", "Message": "Rate Exceeded."}
    response: dict[str, Any] = dict(raised.value.response)
    assert response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"


# --- Cleanup ---------------------------------------------------------------------------------------------
def test_deleting_a_function_stops_its_environments(cloud: Cloud) -> None:
    name = cloud.create_function("app.count")
    pid = json.loads(cloud.invoke(name)["Body"])["pid"]
    assert process_exists(pid)

    cloud.client("lambda").delete_function(FunctionName=name)

    assert not process_exists(pid)


def test_an_environment_idle_past_the_limit_is_stopped_at_the_next_invocation(
    cloud: Cloud, tmp_path: Path
) -> None:
    now = [1000.0]
    manager = EnvironmentManager(
        cloud.endpoint_url,
        EXECUTE_API_ENDPOINT,
        tmp_path,
        ACCOUNT_ID,
        REGION,
        idle_seconds=600,
        clock=lambda: now[0],
    )
    first, second = cloud.create_function("app.count"), cloud.create_function("app.count")
    try:
        first_pid = json.loads(manager.invoke(first, b"{}").payload)["pid"]
        now[0] += 600  # idle exactly the limit: kept, and warm
        warm = json.loads(manager.invoke(first, b"{}").payload)
        assert (warm["pid"], warm["invocations"]) == (first_pid, 2)
        now[0] += 601
        second_pid = json.loads(manager.invoke(second, b"{}").payload)["pid"]

        assert not process_exists(first_pid)
        assert [env.pid for env in manager.environments()] == [second_pid]
        assert json.loads(manager.invoke(first, b"{}").payload)["invocations"] == 1  # a cold start again
    finally:
        manager.shutdown()


def test_shutdown_stops_every_environment_and_refuses_new_work(cloud: Cloud, tmp_path: Path) -> None:
    name = cloud.create_function("app.count")
    manager = EnvironmentManager(cloud.endpoint_url, EXECUTE_API_ENDPOINT, tmp_path, ACCOUNT_ID, REGION)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: manager.invoke(name, b'{"seconds": 0}'), range(2)))
    pids = {json.loads(result.payload)["pid"] for result in results}
    assert [(r.status_code, r.function_error, r.executed_version) for r in results] == [
        (200, None, "$LATEST")
    ] * 2

    manager.shutdown()

    assert not any(process_exists(pid) for pid in pids)
    with pytest.raises(ServiceShutDown):
        manager.invoke(name, b"{}")


# --- Unpacking -------------------------------------------------------------------------------------------
_SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.dictionaries(
        st.lists(_SEGMENT, min_size=1, max_size=3).map("/".join),
        st.tuples(st.binary(max_size=256), st.sampled_from([0o644, 0o755, 0o600, 0o700, 0o444])),
        max_size=8,
    )
)
def test_extract_archive_keeps_contents_and_modes(
    tmp_path: Path, files: dict[str, tuple[bytes, int]]
) -> None:
    # A path cannot be both a file and a directory in one archive.
    names = sorted(files)
    files = {name: files[name] for name in names if not any(other.startswith(name + "/") for other in names)}
    destination = Path(tempfile.mkdtemp(dir=tmp_path))
    archive = build_zip(
        {name: content for name, (content, _) in files.items()}, {n: m for n, (_, m) in files.items()}
    )

    lambda_environments.extract_archive(archive, destination)

    for name, (content, mode) in files.items():
        assert (destination / name).read_bytes() == content
        assert stat.S_IMODE((destination / name).stat().st_mode) == mode


def test_extract_archive_refuses_members_outside_the_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"archive member '../escaped.txt' escapes the archive root"):
        lambda_environments.extract_archive(build_zip({"../escaped.txt": b"x"}), tmp_path / "root")
    assert not (tmp_path / "escaped.txt").exists()


def test_lambda_paths_map_into_the_environments_directories() -> None:
    code, opt = Path("/work/code"), Path("/work/opt")

    assert lambda_environments.translate_lambda_path("/opt/plldb-debugger/wrapper", code, opt) == (
        "/work/opt/plldb-debugger/wrapper"
    )
    assert lambda_environments.translate_lambda_path("/var/task/run.sh", code, opt) == "/work/code/run.sh"
    assert lambda_environments.translate_lambda_path("/optional/x", code, opt) == "/optional/x"
    assert lambda_environments.translate_lambda_path("/usr/bin/env", code, opt) == "/usr/bin/env"


# --- The Runtime API itself, over HTTP --------------------------------------------------------------------
@pytest.fixture
def runtime_api() -> Iterator[RuntimeApi]:
    api = RuntimeApi()
    api.start()
    try:
        yield api
    finally:
        api.close()


def request(
    api: RuntimeApi, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
):
    host, port = api.address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def queue_invocation(api: RuntimeApi, payload: bytes = b'{"a": 1}') -> Invocation:
    invocation = Invocation(
        request_id=str(uuid.uuid4()),
        payload=payload,
        invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:f",
        timeout_seconds=3,
        trace_id="Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0",
        client_context='{"custom": {}}',
    )
    api.submit(invocation)
    return invocation


def test_next_hands_over_the_invocation_with_lambdas_headers(runtime_api: RuntimeApi) -> None:
    invocation = queue_invocation(runtime_api)
    before_ms = int(time.time() * 1000)
    status, headers, body = request(runtime_api, "GET", "/2018-06-01/runtime/invocation/next")

    assert status == 200
    assert body == b'{"a": 1}'
    assert headers["Lambda-Runtime-Aws-Request-Id"] == invocation.request_id
    assert headers["Lambda-Runtime-Invoked-Function-Arn"] == invocation.invoked_function_arn
    assert headers["Lambda-Runtime-Trace-Id"] == invocation.trace_id
    assert headers["Lambda-Runtime-Client-Context"] == '{"custom": {}}'
    assert "Lambda-Runtime-Cognito-Identity" not in headers
    assert headers["Content-Type"] == "application/json"
    assert before_ms + 3000 <= int(headers["Lambda-Runtime-Deadline-Ms"]) <= int(time.time() * 1000) + 3000


def test_response_is_accepted_once(runtime_api: RuntimeApi) -> None:
    invocation = queue_invocation(runtime_api)
    request(runtime_api, "GET", "/2018-06-01/runtime/invocation/next")
    path = f"/2018-06-01/runtime/invocation/{invocation.request_id}/response"

    assert request(runtime_api, "POST", path, b'"done"')[::2] == (202, b'{"status":"OK"}\n')
    assert invocation.outcome is not None
    assert (invocation.outcome.payload, invocation.outcome.error_type) == (b'"done"', None)
    status, _, body = request(runtime_api, "POST", path, b'"again"')
    assert (status, json.loads(body)) == (
        403,
        {
            "errorMessage": "State transition from RuntimeResponseSentState to InvocationResponse failed for "
            "runtime. Error: State transition is not allowed",
            "errorType": "InvalidStateTransition",
        },
    )


def test_response_for_another_request_id_is_invalid_request_id(runtime_api: RuntimeApi) -> None:
    queue_invocation(runtime_api)
    request(runtime_api, "GET", "/2018-06-01/runtime/invocation/next")
    status, _, body = request(runtime_api, "POST", "/2018-06-01/runtime/invocation/other/response", b"{}")

    assert (status, json.loads(body)) == (
        400,
        {"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"},
    )


def test_error_without_a_body_gets_lambdas_default_document(runtime_api: RuntimeApi) -> None:
    invocation = queue_invocation(runtime_api)
    request(runtime_api, "GET", "/2018-06-01/runtime/invocation/next")
    status, _, _ = request(
        runtime_api,
        "POST",
        f"/2018-06-01/runtime/invocation/{invocation.request_id}/error",
        headers={"Lambda-Runtime-Function-Error-Type": "Custom.Failure"},
    )

    assert status == 202
    assert invocation.outcome is not None
    assert invocation.outcome.error_type == "Custom.Failure"
    assert json.loads(invocation.outcome.payload) == {
        "errorMessage": "Unknown application error occurred",
        "errorType": "Custom.Failure",
    }


def test_init_error_is_accepted_only_during_init(runtime_api: RuntimeApi) -> None:
    status, _, _ = request(
        runtime_api,
        "POST",
        "/2018-06-01/runtime/init/error",
        b'{"errorMessage": "no", "errorType": "Runtime.Custom"}',
        {"Lambda-Runtime-Function-Error-Type": "Runtime.Custom"},
    )
    again, _, body = request(runtime_api, "POST", "/2018-06-01/runtime/init/error", b"{}")

    assert status == 202
    assert runtime_api.init_error is not None
    assert runtime_api.init_error.payload == b'{"errorMessage": "no", "errorType": "Runtime.Custom"}'
    assert (again, json.loads(body)["errorType"]) == (403, "InvalidStateTransition")


def test_oversized_response_is_413_and_fails_the_invocation(runtime_api: RuntimeApi) -> None:
    invocation = queue_invocation(runtime_api)
    request(runtime_api, "GET", "/2018-06-01/runtime/invocation/next")
    size = 6 * 1024 * 1024 + 101
    status, _, body = request(
        runtime_api, "POST", f"/2018-06-01/runtime/invocation/{invocation.request_id}/response", b"x" * size
    )

    assert (status, json.loads(body)) == (
        413,
        {
            "errorMessage": "Exceeded maximum allowed payload size (6291556 bytes).",
            "errorType": "RequestEntityTooLarge",
        },
    )
    assert invocation.outcome is not None
    assert invocation.outcome.error_type == "Function.ResponseSizeTooLarge"
    assert json.loads(invocation.outcome.payload)["errorMessage"] == (
        f"Response payload size ({size} bytes) exceeded maximum allowed payload size (6291556 bytes)."
    )


def test_chunked_response_body_is_reassembled(runtime_api: RuntimeApi) -> None:
    invocation = queue_invocation(runtime_api)
    request(runtime_api, "GET", "/2018-06-01/runtime/invocation/next")
    host, port = runtime_api.address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request(
        "POST",
        f"/2018-06-01/runtime/invocation/{invocation.request_id}/response",
        body=iter([b'{"parts": ', b"[1, 2]}"]),
        encode_chunked=True,
    )
    assert connection.getresponse().status == 202
    connection.close()
    assert invocation.outcome is not None
    assert invocation.outcome.payload == b'{"parts": [1, 2]}'


def test_close_releases_a_runtime_waiting_for_its_next_invocation() -> None:
    api = RuntimeApi()
    api.start()
    outcome: list[Any] = []
    waiter = threading.Thread(
        target=lambda: outcome.append(_safe_request(api, "GET", "/2018-06-01/runtime/invocation/next"))
    )
    waiter.start()
    with api.condition:
        api.condition.wait_for(lambda: api.state == "Ready", timeout=10)
    api.close()
    waiter.join(timeout=10)

    assert not waiter.is_alive()
    assert outcome == ["connection closed"]


def _safe_request(api: RuntimeApi, method: str, path: str) -> Any:
    try:
        return request(api, method, path)
    except (http.client.HTTPException, OSError):
        return "connection closed"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=st.binary(max_size=2048), result=st.binary(max_size=2048))
def test_payloads_cross_the_runtime_api_byte_for_byte(
    runtime_api: RuntimeApi, event: bytes, result: bytes
) -> None:
    invocation = queue_invocation(runtime_api, event)
    status, headers, body = request(runtime_api, "GET", "/2018-06-01/runtime/invocation/next")
    assert (status, body) == (200, event)
    path = f"/2018-06-01/runtime/invocation/{headers['Lambda-Runtime-Aws-Request-Id']}/response"
    assert request(runtime_api, "POST", path, result)[0] == 202
    assert invocation.outcome is not None
    assert invocation.outcome.payload == result
