"""`plldb attach --observe` end to end on the local cloud: the deployed code keeps answering, each
invocation also runs on this machine and is shown next to the cloud's outcome."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack
from tests.attach.test_attach_e2e import AttachProcess, DeployedExample, invoke
from tests.cloud_state import configuration, function_state, live_sessions
from tests.dap import attach_to_debugpy, follow_subprocess

DAP_TIMEOUT = 120.0


def _edit_locally(example: DeployedExample) -> None:
    source = example.directory / "hello" / "app.py"
    source.write_text(
        source.read_text().replace('"function": "hello"', '"function": "hello, edited locally"')
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_observe_returns_the_deployed_answer_and_shows_the_local_run_next_to_it(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
) -> None:
    before = {name: function_state(local_cloud, name) for name in (example.hello, example.goodbye)}
    deployed_hello = invoke(local_cloud, example.hello, {"name": "observed"})
    deployed_goodbye = invoke(local_cloud, example.goodbye, {"name": "observed"})
    deployed_failure = invoke(local_cloud, example.hello, {"fail": True})
    _edit_locally(example)

    attach = start_attach(example.directory, "--stack-name", example.stack_name, "--observe")
    options = attach.wait_for("session_options")[0]
    assert (options["observe"], options["match"], options["sample"], options["header"]) == (
        True,
        None,
        1.0,
        None,
    )
    attach.wait_for("ready")
    (session,) = live_sessions(local_cloud, helper, example.stack_name)
    for name in (example.hello, example.goodbye):
        config = configuration(local_cloud, name)
        variables = config["Environment"]["Variables"]
        entries = json.loads(variables[protocol.ENV_SESSIONS])
        assert [(e["observe"], e["match"], e["sample"]) for e in entries] == [(True, None, 1.0)]
        assert protocol.ENV_SESSION_ID not in variables
        # The timeout is not raised: nobody waits on a debugger in observe mode.
        assert config["Timeout"] == before[name]["configuration"]["Timeout"] == 10
        assert entries[0]["id"] == session[protocol.A_SESSION_ID]

    # The caller gets the deployed code's answer exactly, although the local source differs.
    assert invoke(local_cloud, example.hello, {"name": "observed"}) == deployed_hello
    observed = attach.wait_for("observed")[0]
    assert (observed["function"], observed["logicalId"]) == (example.hello, "HelloFunction")
    assert observed["local"]["status"] == "ok"
    assert json.loads(observed["local"]["result"])["function"] == "hello, edited locally"
    assert observed["cloud"]["status"] == "ok"
    assert json.loads(observed["cloud"]["result"]) == deployed_hello[1]
    assert observed["differs"] is True
    assert observed["difference"].startswith('cloud result {"function": "hello", ')

    # Unchanged code: the same outcome on both sides.
    assert invoke(local_cloud, example.goodbye, {"name": "observed"}) == deployed_goodbye
    same = attach.wait_for("observed", count=2)[1]
    assert (same["function"], same["differs"], same["difference"]) == (example.goodbye, False, None)

    # An error in the cloud is the caller's error, and the local one is compared with it.
    error, failure = invoke(local_cloud, example.hello, {"fail": True})
    failure.pop("requestId")  # each invocation's own
    deployed_failure[1].pop("requestId")
    assert (error, failure) == deployed_failure
    failed = attach.wait_for("observed", count=3)[2]
    assert failed["cloud"]["status"] == failed["local"]["status"] == "error"
    assert (failed["cloud"]["error"]["errorType"], failed["cloud"]["error"]["errorMessage"]) == (
        "ValueError",
        "asked to fail",
    )
    assert (failed["differs"], failed["difference"]) == (False, None)
    # Nothing was answered to the helper stack: the local run is never the caller's answer.
    assert attach.named("invocation_delivered") == []

    assert attach.stop(signal.SIGINT) == 0
    assert {name: function_state(local_cloud, name) for name in before} == before


def test_a_breakpoint_in_observe_mode_does_not_hold_the_cloud_caller(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
) -> None:
    before = function_state(local_cloud, example.hello)
    port = _free_port()
    attach = start_attach(
        example.directory,
        "--stack-name",
        example.stack_name,
        "-f",
        "HelloFunction",
        "--observe",
        "--debugpy",
        "--debugpy-port",
        str(port),
    )
    attach.wait_for("ready")
    deployed = invoke(local_cloud, example.hello, {"name": "first"})  # starts the local worker
    attach.wait_for("observed")
    source = example.directory / "hello" / "app.py"
    line = next(i for i, text in enumerate(source.read_text().splitlines(), 1) if "name = event.get" in text)
    parent = attach_to_debugpy("127.0.0.1", port, DAP_TIMEOUT)
    child = follow_subprocess(parent, "127.0.0.1", port, {str(source): [line]}, DAP_TIMEOUT)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(invoke, local_cloud, example.hello, {"name": "at a breakpoint"})
        stopped = child.wait_for_event("stopped", timeout=DAP_TIMEOUT)
        # The local run is stopped at the breakpoint; the caller already has the cloud's answer.
        error, answer = pending.result(DAP_TIMEOUT)
        assert (error, answer["function"], answer["input"]) == (None, "hello", {"name": "at a breakpoint"})
        assert len(attach.named("observed")) == 1  # the local run has not finished
        variables = child.variables_of_top_frame(stopped["threadId"])
        assert (
            child.children(variables["event"]["variablesReference"])["'name'"]["value"] == "'at a breakpoint'"
        )
        child.request("continue", {"threadId": stopped["threadId"]})
    second = attach.wait_for("observed", count=2)[1]
    assert (second["differs"], json.loads(second["cloud"]["result"])["input"]) == (
        False,
        {"name": "at a breakpoint"},
    )
    assert deployed[0] is None
    child.close()
    parent.close()
    assert attach.stop(signal.SIGINT) == 0
    assert function_state(local_cloud, example.hello) == before
