"""Step Functions executions run: the deployed state machine's Amazon States Language, interpreted.

Gap: moto's Step Functions stored executions that never ran (RUNNING, with a canned history), so a
state-machine app could not be exercised through its real entry point. moto also ships an ASL
interpreter (``moto.stepfunctions.parser``), but it served only machines created through its own
backend (not those CloudFormation creates), reached Lambda on ``localhost:5000``, gave an execution
without a name the name ``None``, had no ``StartSyncExecution``, and waited (``Wait`` states, ``Retry``
intervals) on the wall clock only. :func:`install` closes each gap:

- every Step Functions request and every ``AWS::StepFunctions::StateMachine`` goes to the interpreting
  backend, so ``StartExecution`` runs the deployed definition; ``DescribeExecution`` and
  ``GetExecutionHistory`` report what ran (the interpreter records the history events);
- Lambda tasks (a function ARN as ``Resource``, or ``arn:aws:states:::lambda:invoke``) and the other
  service integrations call the local cloud's own endpoint with credentials of the execution's role
  (moto's STS), so a Lambda task runs in a real execution environment, through plldb's layer when the
  function is instrumented;
- ``StartExecution`` without a name names the execution with a UUID ("If you don't provide a name for
  the execution, Step Functions automatically generates a universally unique identifier (UUID) as the
  execution name", StartExecution API reference) and validates a given one;
- ``StartSyncExecution`` runs an EXPRESS machine to its end and answers with its status, output or
  error and cause; a STANDARD machine is refused with ``StateMachineTypeNotSupported``
  ("StartSyncExecution is not available for STANDARD workflows", StartSyncExecution API reference);
- ``Wait`` states and ``Retry`` intervals wait on :attr:`StepFunctionsRuntime.clock`, which a test can
  replace with a :class:`ManualClock` that it advances.
"""

from __future__ import annotations

import datetime
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import boto3
from botocore.config import Config
from moto.core.exceptions import AWSError
from moto.stepfunctions import models as stepfunctions_models
from moto.stepfunctions import responses as stepfunctions_responses
from moto.stepfunctions.parser import api as parser_api
from moto.stepfunctions.parser import models as parser_models
from moto.stepfunctions.parser.api import InvalidExecutionInput, StateMachineTypeNotSupported
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.wait.wait_function import timestamp as wait_timestamp
from moto.stepfunctions.parser.asl.component.state.wait.wait_function import wait_function
from moto.stepfunctions.parser.asl.utils import boto_client
from moto.stepfunctions.parser.backend import execution as parser_execution
from moto.stepfunctions.parser.backend import execution_worker

from plldb.localcloud.moto_extensions.core import original, patch

LOG = logging.getLogger(__name__)
# What the interpreter allows a service call (it waits as long as the task may take).
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 99_999_999
CREDENTIAL_SECONDS = 12 * 3600


def backends() -> Any:
    """The interpreting backends, by account and region: every Step Functions request goes here."""
    return parser_models.stepfunctions_parser_backends


# --- Clocks ---------------------------------------------------------------------------------------------------
class Clock(Protocol):
    """What Wait states and Retry intervals wait on."""

    def now(self) -> datetime.datetime:
        """The current time, timezone-aware (UTC)."""

    def sleep_until(
        self, deadline: datetime.datetime, stopped: Callable[[], bool], wake: threading.Event | None
    ) -> None:
        """Return at the deadline, or earlier once stopped() (checked whenever wake is set)."""


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def sleep_until(
        self, deadline: datetime.datetime, stopped: Callable[[], bool], wake: threading.Event | None
    ) -> None:
        event = wake or threading.Event()
        while not stopped():
            remaining = (deadline - self.now()).total_seconds()
            if remaining <= 0:
                return
            event.wait(remaining)


class ManualClock:
    """A clock a test moves with advance(); pending() shows what is waiting on it.

    wait_for_pending(seconds) blocks until something waits for that many seconds, so a test proves a
    Wait state or a Retry interval is in progress by the wait itself, then ends it with advance().
    """

    STOP_CHECK_SECONDS = 0.05  # how often a sleeper looks whether its execution was stopped meanwhile

    def __init__(self, start: datetime.datetime | None = None) -> None:
        self._now = start or datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
        self._condition = threading.Condition()
        self._pending: list[float] = []
        self.slept: list[float] = []  # every wait's length in seconds, in the order they began

    def now(self) -> datetime.datetime:
        with self._condition:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._condition:
            self._now += datetime.timedelta(seconds=seconds)
            self._condition.notify_all()

    def pending(self) -> list[float]:
        """The lengths (seconds) of the waits in progress."""
        with self._condition:
            return list(self._pending)

    def wait_for_pending(self, seconds: float, timeout: float | None = None) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: seconds in self._pending, timeout=timeout)

    def sleep_until(
        self, deadline: datetime.datetime, stopped: Callable[[], bool], wake: threading.Event | None
    ) -> None:
        with self._condition:
            length = (deadline - self._now).total_seconds()
            if length <= 0:
                return
            self._pending.append(length)
            self.slept.append(length)
            self._condition.notify_all()
            try:
                while self._now < deadline and not stopped():
                    self._condition.wait(self.STOP_CHECK_SECONDS)
            finally:
                self._pending.remove(length)
                self._condition.notify_all()


# --- The runtime: where tasks call, which clock waits, which executions have ended --------------------------
class StepFunctionsRuntime:
    """What the interpreter needs from the local cloud; tests may replace ``clock``."""

    def __init__(self, endpoint_url: str = "", clock: Clock | None = None) -> None:
        self.endpoint_url = endpoint_url
        self.clock: Clock = clock or SystemClock()
        self._ended: set[str] = set()
        self._condition = threading.Condition()

    def ended(self, execution_arn: str) -> None:
        with self._condition:
            self._ended.add(execution_arn)
            self._condition.notify_all()

    def wait_for_execution(self, execution_arn: str, timeout: float | None = None) -> bool:
        """Block until the execution has ended (succeeded, failed, timed out or aborted)."""
        with self._condition:
            return self._condition.wait_for(lambda: execution_arn in self._ended, timeout=timeout)


RUNTIME = StepFunctionsRuntime()


def configure(endpoint_url: str) -> StepFunctionsRuntime:
    """Point the interpreter's service calls at the local cloud's endpoint (the wall clock by default)."""
    RUNTIME.endpoint_url = endpoint_url
    RUNTIME.clock = SystemClock()
    return RUNTIME


# --- Service calls of tasks --------------------------------------------------------------------------------
def role_credentials(role_arn: str | None, region: str) -> dict[str, str]:
    """Credentials of the role a task runs with (the execution's role), from moto's STS."""
    if not role_arn or not role_arn.startswith("arn:"):
        return {"aws_access_key_id": "AKIASTATESLOCALCLOUD", "aws_secret_access_key": "states"}
    from moto.sts.models import sts_backends

    parts = role_arn.split(":")
    assumed = sts_backends[parts[4]][parts[1]].assume_role(
        region_name=region,
        role_session_name=f"states-{uuid.uuid4().hex[:16]}",
        role_arn=role_arn,
        policy=None,  # type: ignore[arg-type]
        duration=CREDENTIAL_SECONDS,
        external_id=None,  # type: ignore[arg-type]
    )
    return {
        "aws_access_key_id": assumed.access_key_id,
        "aws_secret_access_key": assumed.secret_access_key,
        "aws_session_token": assumed.session_token,
    }


def task_client(region: str, service: str, state_credentials: Any = None) -> Any:
    """A client for a task's service call, on the local cloud's endpoint, as the execution's role."""
    if not RUNTIME.endpoint_url:
        return original(boto_client, "boto_client_for")(region, service, state_credentials)
    role_arn = getattr(state_credentials, "role_arn", None)
    return boto3.client(  # type: ignore[call-overload]
        service,
        region_name=region,
        endpoint_url=RUNTIME.endpoint_url,
        config=Config(
            parameter_validation=False,
            retries={"total_max_attempts": 1},
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            inject_host_prefix=False,
        ),
        **role_credentials(role_arn, region),
    )


def _patch_task_clients() -> None:
    """Every interpreter module imported boto_client_for by name: each gets task_client."""
    import sys

    from moto.stepfunctions.parser.asl.parse import asl_parser  # noqa: F401  (imports the state modules)

    replaced = original(boto_client, "boto_client_for")
    patch(boto_client, "boto_client_for", task_client)
    for name, module in list(sys.modules.items()):
        if (
            name.startswith("moto.stepfunctions.parser.")
            and getattr(module, "boto_client_for", None) is replaced
        ):
            patch(module, "boto_client_for", task_client)


# --- Waits --------------------------------------------------------------------------------------------------
def wait_interval(self: Any, env: Any, wait_seconds: int) -> None:
    """A Wait state waits its seconds on the runtime's clock; it ends early when the execution stops."""
    clock = RUNTIME.clock
    deadline = clock.now() + datetime.timedelta(seconds=wait_seconds)
    clock.sleep_until(deadline, lambda: not env.is_running(), env.program_state_event)


def timestamp_wait_seconds(self: Any, env: Any) -> int:
    """Seconds until a Wait state's Timestamp (or TimestampPath), by the runtime's clock.

    Gap: moto compared the UTC timestamp with the local time of the machine.
    """
    self.string.eval(env=env)
    text: str = env.stack.pop()
    timestamp = self._from_timestamp_string(timestamp=text)
    if timestamp is None:
        from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
            FailureEventException,
        )

        raise FailureEventException(self._create_failure_event(env, text))
    now = RUNTIME.clock.now().astimezone(datetime.UTC).replace(tzinfo=None)
    return int((timestamp - now).total_seconds())


class _RetryTime:
    """What the Retry implementation calls time.sleep on: the runtime's clock."""

    @staticmethod
    def sleep(seconds: float) -> None:
        clock = RUNTIME.clock
        clock.sleep_until(clock.now() + datetime.timedelta(seconds=seconds), lambda: False, None)


# --- Executions --------------------------------------------------------------------------------------------
def start_execution(
    self: Any, state_machine_arn: str, name: Any = None, execution_input: Any = None, trace_header: Any = None
) -> Any:
    if name:
        self._validate_name(name)
    return original(parser_models.StepFunctionsParserBackend, "start_execution")(
        self, state_machine_arn, name or str(uuid.uuid4()), execution_input, trace_header
    )


def start_sync_execution(
    self: Any, state_machine_arn: str, name: Any = None, execution_input: Any = None, trace_header: Any = None
) -> dict[str, Any]:
    """Run an EXPRESS machine to its end and report it (the execution is not kept, as for EXPRESS)."""
    import json

    state_machine = self.describe_state_machine(state_machine_arn)
    if state_machine.type != "EXPRESS":  # moto keeps the type in .type (its .sm_type is always STANDARD)
        raise StateMachineTypeNotSupported("StartSyncExecution is not available for STANDARD workflows.")
    if name:
        self._validate_name(name)
    input_data = execution_input if execution_input is not None else "{}"
    try:
        json.loads(input_data)
    except ValueError as exc:
        raise InvalidExecutionInput(str(exc))
    execution_name = name or str(uuid.uuid4())
    execution = parser_execution.SyncExecution(
        name=execution_name,
        sm_type=state_machine.type,
        role_arn=state_machine.roleArn,
        exec_arn=f"arn:{self.partition}:states:{self.region_name}:{self.account_id}:express:"
        f"{state_machine.name}:{execution_name}:{uuid.uuid4()}",
        account_id=self.account_id,
        region_name=self.region_name,
        state_machine=state_machine,
        start_date=datetime.datetime.now(tz=datetime.UTC),
        cloud_watch_logging_session=None,
        input_data=input_data,
        trace_header=trace_header,
        activity_store={},
    )
    execution.start()
    return dict(execution.to_start_sync_execution_output())


def start_sync_execution_action(self: Any) -> Any:
    from moto.core.responses import ActionResult

    output = self.stepfunction_backend.start_sync_execution(
        self._get_param("stateMachineArn"),
        self._get_param("name"),
        self._get_param("input", if_none="{}"),
        self._get_param("traceHeader"),
    )
    return ActionResult(output)


def execution_logic(self: Any) -> None:
    """Run the program; whatever happens, the runtime learns that the execution has ended."""
    try:
        original(execution_worker.ExecutionWorker, "_execution_logic")(self)
    except Exception:
        LOG.exception("the interpreter failed running %s", self._evaluation_details.execution_details.arn)
        raise
    finally:
        RUNTIME.ended(self._evaluation_details.execution_details.arn)


def _name_interpreter_errors() -> None:
    """Gap: the interpreter's errors name their code in ``code``, which moto's AWSError overwrites with the
    HTTP status; they reached clients without an error code. Each now has its code as moto's TYPE."""
    for error in vars(parser_api).values():
        if isinstance(error, type) and issubclass(error, AWSError) and error.TYPE is None:
            code = error.__dict__.get("code")
            if isinstance(code, str):
                patch(error, "TYPE", code)
                patch(error, "STATUS", int(getattr(error, "status_code", 400)))


def install() -> None:
    _name_interpreter_errors()
    Response = stepfunctions_responses.StepFunctionResponse
    patch(
        Response,
        "stepfunction_backend",
        property(lambda self: backends()[self.current_account][self.region]),
    )
    patch(Response, "start_sync_execution", start_sync_execution_action)
    # moto's CloudFormation model methods look the backend up in this module.
    patch(stepfunctions_models, "stepfunctions_backends", backends())
    Backend = parser_models.StepFunctionsParserBackend
    patch(Backend, "start_execution", start_execution)
    patch(Backend, "start_sync_execution", start_sync_execution)
    patch(execution_worker.ExecutionWorker, "_execution_logic", execution_logic)
    patch(wait_function.WaitFunction, "_wait_interval", wait_interval)
    patch(wait_timestamp.Timestamp, "_get_wait_seconds", timestamp_wait_seconds)
    patch(retrier_decl, "time", _RetryTime())
    _patch_task_clients()
