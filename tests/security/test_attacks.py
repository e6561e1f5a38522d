"""The attacks of plldb's security review that the local cloud can show, run end to end against the real
`plldb attach` of a victim and the real helper stack (docs/security.md, "The attacks, tried and now
failing"). The halves only IAM can stop are proved by the template's policy tests; here the attacker is
given whatever the local cloud does not enforce (it evaluates no policy), so each test shows what is left
when IAM is bypassed, and the IAM refusals plldb relies on are injected with the local cloud's
propagation hook.

Every "nothing happened" is an observable decision: the client's warning event, an `error` reply, a
record in the helper stack's logs, tables compared item by item, or a reply that would have come after
what did not happen.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from plldb import protocol
from plldb.bootstrap.helper_stack import HelperStack
from plldb.instrumentation import functions
from plldb.instrumentation.decisions import Target
from plldb.local.instrument import developer_clients, restore_stack
from tests.attach.test_attach_e2e import AttachProcess, DeployedExample, deploy_example, invoke
from tests.cloud_state import (
    function_state,
    helper_tables,
    live_sessions,
    locks,
    log_records,
    new_records,
    routes_records,
    session_item,
    stack_id_of,
    table_items,
    variables,
    wait_for,
)
from tests.faults.faults_support import child_pids, utc_text
from tests.security.raw_client import Attacker, RawSession, unsigned

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a liveness guard, never a bound

NESTED_60KB = "[" * 30_000 + "]" * 30_000
TOO_DEEP = f"message nests deeper than {protocol.MAX_MESSAGE_DEPTH} levels"


def attach_hello(
    start_attach: Callable[..., AttachProcess], helper: HelperStack, example: DeployedExample
) -> AttachProcess:
    """The victim debugs HelloFunction of their stack with the real `plldb attach`."""
    attach = start_attach(
        example.directory,
        "--stack-name",
        example.stack_name,
        "--helper-stack",
        helper.stack_name,
        "-f",
        "HelloFunction",
    )
    assert attach.wait_for("ready")[0]["functions"] == [example.hello]
    return attach


def run_plldb(environment: dict[str, str], cwd: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plldb", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def management_api(local_cloud: Any, helper: HelperStack) -> Any:
    """API Gateway's @connections API of the helper stack (which IAM lets no developer call)."""
    url = protocol.execute_api_url("https://" + helper.websocket_url.split("://", 1)[1])
    return local_cloud.session().client("apigatewaymanagementapi", endpoint_url=url)


def victim_session(local_cloud: Any, helper: HelperStack, example: DeployedExample) -> dict[str, Any]:
    (session,) = live_sessions(local_cloud, helper, example.stack_name)
    return session


def role_id(local_cloud: Any, function: str) -> str:
    role = local_cloud.client("lambda").get_function_configuration(FunctionName=function)["Role"]
    return str(local_cloud.client("iam").get_role(RoleName=role.rsplit("/", 1)[-1])["Role"]["RoleId"])


def forged_invoke(local_cloud: Any, function: str) -> dict[str, Any]:
    """An `invoke` as the dispatcher would post it, asking to run a library of the attacker's choosing."""
    return {
        "type": protocol.MSG_INVOKE,
        "v": protocol.PROTOCOL_VERSION,
        "caller": f"{role_id(local_cloud, function)}:{function}",
        "deliveryId": "f" * 32,
        "requestId": "forged-request",
        "function": {"name": function, "version": "$LATEST", "logicalPath": "HelloFunction"},
        "handler": "app.lambda_handler",
        "context": {"functionName": function, "memoryLimitInMB": 128},
        "event": json.dumps({"name": "mallory"}),
        "environment": {"LD_PRELOAD": "/tmp/evil.so", "PYTHONSTARTUP": "/tmp/evil.py", "GREETING": "pwned"},
        "credentials": None,
    }


def warnings_of(attach: AttachProcess, count: int) -> list[str]:
    return [event["message"] for event in attach.wait_for("warning", count=count)]


# --- Attack 6: a forged invoke posted to a developer's connection --------------------------------------------
def test_forged_messages_posted_to_a_developers_connection_are_ignored(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
) -> None:
    attach = attach_hello(start_attach, helper, example)
    session = victim_session(local_cloud, helper, example)
    connection = str(session[protocol.A_CONNECTION_ID])
    before = helper_tables(local_cloud, helper)
    assert child_processes(attach) == set()  # no worker runs before the first invocation
    api = management_api(local_cloud, helper)
    invoke_message = forged_invoke(local_cloud, example.hello)
    forgeries = [
        invoke_message,  # no mac at all
        protocol.sign(invoke_message, protocol.new_secret()),  # a mac under a guessed key
        {**invoke_message, "mac": "0" * 64},
        protocol.closed_message(
            protocol.CLOSED_RELEASED, "arn:aws:iam::123456789012:user/mallory", "go away"
        ),
        protocol.error_message(protocol.ERR_NO_SESSION, "this connection has no plldb session"),
    ]
    for forged in forgeries:
        api.post_to_connection(ConnectionId=connection, Data=json.dumps(forged).encode())

    assert warnings_of(attach, len(forgeries)) == [
        "Ignored a 'invoke' message that is not authenticated for this session",
        "Ignored a 'invoke' message that is not authenticated for this session",
        "Ignored a 'invoke' message that is not authenticated for this session",
        "Ignored a 'closed' message that is not authenticated for this session",
        "Ignored a 'error' message that is not authenticated for this session",
    ]
    assert attach.named("invocation_started") == []
    assert child_processes(attach) == set()
    assert attach.process.poll() is None
    assert helper_tables(local_cloud, helper) == before

    # The session is intact: the next real invocation runs here, with the function's own variables.
    error, answer = invoke(local_cloud, example.hello, {"name": "real"})
    assert (error, answer["greeting"], answer["input"]) == (None, "Hello", {"name": "real"})
    assert [e["requestId"] for e in attach.named("invocation_started")] == [
        e["requestId"] for e in attach.wait_for("invocation_finished")
    ]
    assert attach.stop() == 0


def child_processes(attach: AttachProcess) -> set[int]:
    return child_pids(attach.process.pid)


# --- Attack 7: deeply nested JSON --------------------------------------------------------------------------------
def test_sixty_kilobytes_of_nested_json_posted_to_a_developer_are_ignored(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
) -> None:
    attach = attach_hello(start_attach, helper, example)
    connection = str(victim_session(local_cloud, helper, example)[protocol.A_CONNECTION_ID])
    api = management_api(local_cloud, helper)
    api.post_to_connection(ConnectionId=connection, Data=NESTED_60KB.encode())
    api.post_to_connection(
        ConnectionId=connection, Data=('{"type":"invoke","event":' + NESTED_60KB + "}").encode()
    )
    assert warnings_of(attach, 2) == [f"Ignored a message from the server: {TOO_DEEP}"] * 2

    error, answer = invoke(local_cloud, example.hello, {"name": "still here"})
    assert (error, answer["input"]) == (None, {"name": "still here"})
    assert attach.stop() == 0


def test_sixty_kilobytes_of_nested_json_sent_to_the_routes_change_nothing(
    local_cloud: Any, helper: HelperStack, example: DeployedExample, attacker: Attacker
) -> None:
    mallory = RawSession(helper, attacker.session)

    async def flood() -> None:
        ws = await mallory.connect()
        before = helper_tables(local_cloud, helper)
        for body in (NESTED_60KB, '{"type":"open","stack":' + NESTED_60KB + "}"):
            reply = await ws.request(body)
            assert reply == protocol.error_message(protocol.ERR_MALFORMED, TOO_DEEP)
        assert helper_tables(local_cloud, helper) == before
        assert await ws.request({"type": protocol.MSG_PING}) == {
            "type": protocol.MSG_PONG
        }  # the routes live on
        await ws.close()

    refused_before = routes_records(local_cloud, helper, "message refused")
    asyncio.run(flood())
    refused = new_records(refused_before, routes_records(local_cloud, helper, "message refused"))
    assert [(r["code"], r["reason"]) for r in refused] == [(protocol.ERR_MALFORMED, TOO_DEEP)] * 2


# --- Attack 2: the helper stack itself ------------------------------------------------------------------------
def test_the_helper_stack_is_refused_by_attach_before_connecting_and_by_the_routes(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    attach_environment: dict[str, str],
    attacker: Attacker,
) -> None:
    sessions_before = session_ids(local_cloud, helper)
    allowed_before = routes_records(local_cloud, helper, "connection allowed")
    for reference in (helper.stack_name, helper.stack_id):
        result = run_plldb(
            attach_environment,
            example.directory,
            "attach",
            "--stack-name",
            reference,
            "--helper-stack",
            helper.stack_name,
        )
        assert (result.returncode, result.stderr.splitlines(), result.stdout) == (
            1,
            [
                f"Error: Stack {reference!r} is the plldb helper stack itself; it cannot be debugged with plldb. "
                "Pass the stack of your application with --stack-name."
            ],
            "",
        )
    # Refused before connecting: the routes let no connection in, and no session was created.
    assert routes_records(local_cloud, helper, "connection allowed") == allowed_before
    assert session_ids(local_cloud, helper) == sessions_before

    mallory = RawSession(helper, attacker.session)

    async def ask() -> None:
        ws = await mallory.connect()
        for reference in (helper.stack_name, helper.stack_id):
            reply = await ws.open(reference)
            assert ws.authentic(reply)  # signed with the key this `open` proposed
            assert unsigned(reply) == protocol.error_message(
                protocol.ERR_HELPER_STACK,
                f"Stack {helper.stack_name!r} is the plldb helper stack itself; it cannot be debugged with plldb.",
            )
        await ws.close()

    asyncio.run(ask())
    item = session_item(local_cloud, helper, mallory.session_id)
    assert item is not None and protocol.A_STACK_ID not in item
    assert helper.stack_id not in locks(local_cloud, helper)


# --- Attack 1: a session on a stack one cannot change -----------------------------------------------------------
def test_a_session_on_a_foreign_stack_receives_nothing(
    local_cloud: Any, helper: HelperStack, example: DeployedExample, attacker: Attacker
) -> None:
    before = {name: function_state(local_cloud, name) for name in (example.hello, example.goodbye)}
    # Mallory may not change the victim's functions: IAM refuses her first change of each, the tag on its role.
    for _ in (example.hello, example.goodbye):
        local_cloud.iam_propagation.deny_next(attacker.arn, "iam:TagRole")
    mallory = AttachProcess(
        example.directory,
        attacker.environment,
        "--stack-name",
        example.stack_name,
        "--helper-stack",
        helper.stack_name,
    )
    try:
        ready = mallory.wait_for("ready")[0]
        assert ready["functions"] == []
        failed = sorted(
            (e["function"], e["message"]) for e in mallory.named("progress") if e["status"] == "failed"
        )
        denied = (
            f"AccessDenied: User: {attacker.arn} is not authorized to perform: iam:TagRole because no "
            "identity-based policy allows the iam:TagRole action"
        )
        assert failed == sorted([(example.hello, denied), (example.goodbye, denied)])
        assert {name: function_state(local_cloud, name) for name in before} == before
        (session,) = live_sessions(local_cloud, helper, example.stack_name)
        assert session[protocol.A_OWNER] == attacker.arn  # her session holds the stack...

        # ...and receives nothing: the invocations run the deployed code in the cloud.
        for function in (example.hello, example.goodbye):
            error, answer = invoke(local_cloud, function, {"name": "victim's caller"})
            assert (error, answer["input"]) == (None, {"name": "victim's caller"})
        assert mallory.named("invocation_started") == []
        assert mallory.stop() == 0
    finally:
        mallory.close()
    assert {name: function_state(local_cloud, name) for name in before} == before


def test_a_session_holding_a_stack_without_instrumenting_anything_is_released_by_take_over(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    attach_environment: dict[str, str],
    start_attach: Callable[..., AttachProcess],
    attacker: Attacker,
) -> None:
    mallory = RawSession(helper, attacker.session)
    victim = str(local_cloud.client("sts").get_caller_identity()["Arn"])

    async def squat() -> None:
        ws = await mallory.connect()
        opened = await ws.open(example.stack_name)
        assert ws.authentic(opened) and opened["owner"] == attacker.arn
        since = (session_item(local_cloud, helper, mallory.session_id) or {})[protocol.A_CREATED_AT]
        loop = asyncio.get_running_loop()
        refused = await loop.run_in_executor(
            None,
            lambda: run_plldb(
                attach_environment,
                example.directory,
                "attach",
                "--stack-name",
                example.stack_name,
                "--helper-stack",
                helper.stack_name,
            ),
        )
        assert (refused.returncode, refused.stderr.splitlines()) == (
            1,
            [
                f"Error: Stack {example.stack_name!r} is already being debugged by {attacker.arn} (since "
                f"{utc_text(since)}). Ask them to detach, or run again with --take-over: plldb then restores the "
                "stack's functions with your credentials and ends their session."
            ],
        )
        attach = await loop.run_in_executor(
            None,
            lambda: start_attach(
                example.directory,
                "--stack-name",
                example.stack_name,
                "--helper-stack",
                helper.stack_name,
                "-f",
                "HelloFunction",
                "--take-over",
            ),
        )
        closed = await ws.receive()
        assert ws.authentic(closed)
        assert unsigned(closed) == protocol.closed_message(
            protocol.CLOSED_RELEASED,
            victim,
            f"stack {example.stack_name} was restored and released by {victim}",
        )
        await loop.run_in_executor(None, attach.wait_for, "ready")
        error, answer = await loop.run_in_executor(None, invoke, local_cloud, example.hello, {"name": "back"})
        assert (error, answer["input"]) == (None, {"name": "back"})
        assert [e["function"] for e in attach.named("invocation_started")] == [example.hello]
        assert await loop.run_in_executor(None, attach.stop) == 0
        await ws.close()

    asyncio.run(squat())
    squatter = session_item(local_cloud, helper, mallory.session_id)
    assert squatter is not None
    assert (squatter[protocol.A_CLOSED_REASON], squatter[protocol.A_CLOSED_BY]) == (
        protocol.CLOSED_RELEASED,
        victim,
    )


def session_ids(local_cloud: Any, helper: HelperStack) -> set[str]:
    return {str(item[protocol.A_SESSION_ID]) for item in table_items(local_cloud, helper, "PLLDBSessions")}


# --- Attack 4: taking over another developer's session -------------------------------------------------------------
def test_another_principal_cannot_reconnect_a_session_even_with_a_valid_token(
    local_cloud: Any, helper: HelperStack, example: DeployedExample, attacker: Attacker
) -> None:
    victim = RawSession(helper, local_cloud.session())
    # Mallory learned everything but the victim's credentials: the session id and the seed of its chain.
    mallory = RawSession(
        helper, attacker.session, session_id=victim.session_id, key=victim.key, seed=victim.seed
    )

    async def hijack() -> None:
        ws = await victim.connect()
        assert ws.authentic(await ws.open(example.stack_name))
        before = session_item(local_cloud, helper, victim.session_id)
        assert await mallory.status_of(token=victim.token(1)) == 403
        assert session_item(local_cloud, helper, victim.session_id) == before  # same connection, same anchor
        pong = await ws.request({"type": protocol.MSG_PING})
        assert ws.authentic(pong) and unsigned(pong) == {"type": protocol.MSG_PONG}
        await ws.request({"type": protocol.MSG_CLOSE})
        await ws.close()

    asyncio.run(hijack())
    assert [
        r["reason"] for r in routes_records(local_cloud, helper, "connection refused", victim.session_id)
    ] == ["the session belongs to another principal"]


def test_another_principal_cannot_release_a_session_whose_functions_still_carry_it(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
    attacker: Attacker,
) -> None:
    attach = attach_hello(start_attach, helper, example)
    session = victim_session(local_cloud, helper, example)
    owner = str(session[protocol.A_OWNER])
    instrumented = function_state(local_cloud, example.hello)

    # `plldb detach` as Mallory: IAM refuses her the change, so she cannot restore, and does not release.
    local_cloud.iam_propagation.deny_next(attacker.arn, "lambda:UpdateFunctionConfiguration")
    detached = run_plldb(
        attacker.environment,
        Path("/"),
        "detach",
        "--stack-name",
        example.stack_name,
        "--helper-stack",
        helper.stack_name,
    )
    assert detached.returncode == 1
    assert detached.stderr.splitlines()[-1] == (
        f"Error: Some functions of {example.stack_name} were not restored. See the lines above and run the command again."
    )
    assert function_state(local_cloud, example.hello) == instrumented

    # A raw `release` is refused by the helper stack while the function carries the session.
    mallory = RawSession(helper, attacker.session)

    async def release() -> None:
        ws = await mallory.connect()
        before = helper_tables(local_cloud, helper)
        reply = await ws.request(protocol.release_message(example.stack_name))
        assert reply == protocol.error_message(
            protocol.ERR_RELEASE_REFUSED,
            f"HelloFunction still carries the instrumentation of the session of {owner}; plldb ends that "
            "session only once its functions are restored (which needs permission to change them).",
        )
        assert helper_tables(local_cloud, helper) == before
        await ws.close()

    asyncio.run(release())
    assert victim_session(local_cloud, helper, example) == session
    error, answer = invoke(local_cloud, example.hello, {"name": "undisturbed"})
    assert (error, answer["input"]) == (None, {"name": "undisturbed"})
    assert len(attach.wait_for("invocation_finished")) == 1
    assert attach.stop() == 0


# --- Attack 5 and the dispatcher: answering or re-posting someone else's invocation ------------------------------
def hold_hello(example: DeployedExample, barrier: Path) -> None:
    """The victim's local HelloFunction waits for ``barrier`` when the event asks it to (attach runs it)."""
    source = example.directory / "hello" / "app.py"
    text = source.read_text()
    source.write_text(
        text.replace(
            '    if "sleep" in event:\n',
            f'    if event.get("hold"):\n        import pathlib\n        while not pathlib.Path({str(barrier)!r}).exists():\n'
            '            time.sleep(0.05)\n    if "sleep" in event:\n',
        )
    )


def test_nobody_else_can_answer_or_repost_a_developers_invocation(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
    attacker: Attacker,
    tmp_path: Path,
) -> None:
    barrier = tmp_path / "release"
    hold_hello(example, barrier)
    attach = attach_hello(start_attach, helper, example)
    mallory = RawSession(helper, attacker.session)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(invoke, local_cloud, example.hello, {"hold": True})
        request_id = attach.wait_for("invocation_started")[0]["requestId"]
        # Mallory learns the waiting invocation's key (as if the table leaked). The item is read once the
        # developer has acknowledged the held run, its last change until the answer.
        item = wait_for(
            lambda: next(
                (
                    i
                    for i in table_items(local_cloud, helper, "PLLDBInvocations")
                    if i[protocol.A_REQUEST_ID] == request_id and protocol.A_ACKED_AT in i
                ),
                None,
            ),
            "the developer's ack of the held invocation",
        )
        caller, delivery = str(item[protocol.A_CALLER]), str(item[protocol.A_DELIVERY_ID])
        before = helper_tables(local_cloud, helper)

        async def answer_it() -> None:
            ws = await mallory.connect()
            for message in (
                protocol.result_message(caller, delivery, '{"forged": true}'),
                protocol.failure_message(caller, delivery, {"errorMessage": "x", "errorType": "Forged"}),
                protocol.ack_message(caller, delivery),
                protocol.upload_message(caller, delivery, 10),
            ):
                reply = await ws.request(message)
                assert reply == protocol.error_message(
                    protocol.ERR_UNKNOWN_REQUEST,
                    "no such invocation is waiting in this session",
                    caller,
                    delivery,
                )
            await ws.close()

        asyncio.run(answer_it())
        after_mallory = helper_tables(local_cloud, helper)
        assert after_mallory["PLLDBInvocations"] == before["PLLDBInvocations"]

        # The dispatcher, invoked directly, posts nothing that is not the function's own payload.
        dispatcher = local_cloud.client("lambda")
        for payload, reason in (
            (
                {"requestId": "forged", "event": "{}", "environment": {"LD_PRELOAD": "x"}},
                "the payload does not match the invocation item",
            ),
            (None, "the payload does not match the invocation item"),
        ):
            verdict = dispatcher.invoke(
                FunctionName=helper.dispatcher_function_arn,
                Payload=json.dumps(
                    {"action": "deliver", "caller": caller, "deliveryId": delivery, "payload": payload}
                ).encode(),
            )
            assert json.loads(verdict["Payload"].read()) == {"status": "refused", "reason": reason}
        verdict = dispatcher.invoke(
            FunctionName=helper.dispatcher_function_arn,
            Payload=json.dumps(
                {"action": "deliver", "caller": caller, "deliveryId": "e" * 32, "payload": {}}
            ).encode(),
        )
        assert json.loads(verdict["Payload"].read()) == {
            "status": "refused",
            "reason": "no invocation item was written for this delivery",
        }

        barrier.write_text("go")
        error, answer = pending.result(timeout=120)
    assert (error, answer["input"]) == (None, {"hold": True})  # the victim's own answer
    assert [
        e
        for e in attach.events
        if e["event"] == "duplicate_invoke"
        or (e["event"] == "warning" and e["message"].startswith("Ignored"))
    ] == []
    assert len(attach.named("invocation_started")) == 1
    assert attach.stop() == 0


# --- A function pointed at someone else's session --------------------------------------------------------------------
def point_at(local_cloud: Any, helper: HelperStack, function: str, session_id: str, credentials: Any) -> None:
    """Instrument ``function`` for ``session_id`` as someone allowed to change it does (plldb's own code)."""
    target = Target(
        session_id=session_id,
        dispatcher_arn=helper.dispatcher_function_arn,
        invocations_table=helper.invocations_table_name,
        payload_bucket=helper.payload_bucket_name,
        layer_version_arn=helper.layer_version_arn,
        timeout=30,
    )
    result = functions.instrument(
        developer_clients(credentials, helper), functions.FunctionRef(function, function), target
    )
    assert result.status == functions.STATUS_OK, result.message


def test_a_function_of_another_stack_pointed_at_a_developers_session_is_refused_by_the_dispatcher(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
    attacker: Attacker,
    tmp_path: Path,
) -> None:
    attach = attach_hello(start_attach, helper, example)
    session_id = str(victim_session(local_cloud, helper, example)[protocol.A_SESSION_ID])
    # Mallory's own stack: she may change its functions, and points one at the victim's session, to push
    # events of her choosing to the victim's machine.
    own = deploy_example(local_cloud, tmp_path / "mallory")
    before = function_state(local_cloud, own.hello)
    point_at(local_cloud, helper, own.hello, session_id, attacker.session)
    try:
        error, answer = invoke(local_cloud, own.hello, {"name": "from mallory"})
        assert error == "Unhandled"
        assert (answer["errorType"], answer["errorMessage"]) == (
            "PlldbRefused",
            f"plldb's helper stack refused this invocation: function {own.hello} is not part of the session's "
            "stack. Run `plldb attach` in the stack's project to debug it, or `plldb detach --stack-name STACK` "
            "to remove plldb's instrumentation from the stack's functions.",
        )
        refusals = [
            r
            for r in log_records(local_cloud, helper.dispatcher_function_arn.rsplit(":", 1)[-1])
            if r.get("message") == "refused a caller that does not belong to the session"
        ]
        assert [(r["caller"], r["reason"]) for r in refusals] == [
            (
                f"{role_id(local_cloud, own.hello)}:{own.hello}",
                f"function {own.hello} is not part of the session's stack",
            )
        ]
        assert attach.named("invocation_started") == []
        error, answer = invoke(local_cloud, example.hello, {"name": "victim"})
        assert (error, answer["input"]) == (None, {"name": "victim"})
        assert attach.stop() == 0
    finally:
        restore_stack(
            local_cloud.session(), helper, stack_id_of(local_cloud, own.stack_name), report=lambda _m: None
        )
    assert function_state(local_cloud, own.hello) == before


def test_a_function_the_developer_did_not_choose_is_not_run_on_their_machine(
    local_cloud: Any,
    helper: HelperStack,
    example: DeployedExample,
    start_attach: Callable[..., AttachProcess],
) -> None:
    attach = attach_hello(start_attach, helper, example)  # HelloFunction only
    session_id = str(victim_session(local_cloud, helper, example)[protocol.A_SESSION_ID])
    # Someone allowed to change GoodbyeFunction (a function of the same stack) points it at the session.
    point_at(local_cloud, helper, example.goodbye, session_id, local_cloud.session())
    assert variables(local_cloud, example.goodbye)[protocol.ENV_SESSION_ID] == session_id

    error, answer = invoke(local_cloud, example.goodbye, {"name": "pushed"})
    assert error == "Unhandled"
    assert (answer["errorType"], answer["errorMessage"]) == (
        "PlldbNotInstrumented",
        f"plldb refused to run {example.goodbye} on the developer's machine: this debugging session did not "
        "instrument it.",
    )
    (finished,) = attach.wait_for("invocation_finished")
    assert (finished["function"], finished["status"]) == (example.goodbye, "error")
    assert child_processes(attach) == set()  # no worker was started for it
    assert attach.stop() == 0
