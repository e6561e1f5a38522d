"""The debugger layer's runtime: every invocation is handed to the developer's machine and answered from there.

The wrapper starts this module instead of the Python runtime when the function carries a debugging
session (DEBUGGER_SESSION_ID). It acts with the function's own credentials only, and the helper stack
lets those do three things: write and read invocation items and payload objects under the function's
own identity (``aws:userid``), and invoke the dispatcher. For each invocation it writes the item, asks
the dispatcher to post the invocation to the session's developer, polls the item until the developer's
answer is stored there, and returns that answer to Lambda as the function's result or error. When no
debugger can answer, the session's fallback decides: a clear "not attached" error, or the function's
own handler run here exactly as Lambda runs it. docs/protocol.md describes the messages, items,
thresholds and the polling schedule.
"""

from __future__ import annotations

import json
import logging
import os
import re
import site
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_future
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

import plldb
from plldb import lambda_common, protocol
from plldb.bootstrap.cloudformation.layer import lambda_compat
from plldb.bootstrap.cloudformation.layer.runtime_client import Invocation, RuntimeApiClient, RuntimeApiError

LOGGER = logging.getLogger("plldb.layer")

# Error types the invoker sees when plldb, not the function, decided the outcome.
ERROR_NOT_ATTACHED = "PlldbNotAttached"
ERROR_TIMEOUT = "PlldbDebuggerTimeout"
ERROR_CONFIGURATION = "PlldbInvalidConfiguration"
ERROR_LAYER = "PlldbLayerError"
ERROR_REFUSED = "PlldbRefused"
ERROR_CORRUPT_RESPONSE = "PlldbCorruptResponse"

# Polling the invocation item: the first read comes FIRST_POLL_DELAY after the dispatcher posted, each
# wait is POLL_BACKOFF_FACTOR times longer than the one before, and no wait exceeds MAX_POLL_DELAY. A
# quick debugger is seen within a few milliseconds; one stopped at a breakpoint costs at most 2 reads/s.
FIRST_POLL_DELAY_SECONDS = 0.002
POLL_BACKOFF_FACTOR = 1.3
MAX_POLL_DELAY_SECONDS = 0.5
# While the dispatcher's answer is on its way back (it answers after posting), the developer's answer
# may already be stored: the layer reads at EARLY_READ_FRACTION of the quickest of the last
# QUICK_ANSWERS_KEPT unacknowledged answers (counted from the dispatcher invocation), then each read
# POLL_BACKOFF_FACTOR later, at most EARLY_READS times before the dispatcher has answered.
EARLY_READ_FRACTION = 0.8
EARLY_READS = 4
QUICK_ANSWERS_KEPT = 8
UNKNOWN_DEADLINE_SECONDS = 900  # Lambda always sends a deadline; this only guards a missing header
RETRY_DELAY_SECONDS = 0.25  # between attempts while a just-attached policy propagates

CLIENT_CONFIG = Config(
    connect_timeout=3,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 3},
    tcp_keepalive=True,
)
DISPATCHER_CONFIG = Config(
    connect_timeout=3, read_timeout=20, retries={"mode": "standard", "max_attempts": 2}, tcp_keepalive=True
)

_FUNCTION_ARN = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_LAYER_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
)
_OWN_FILES = (os.path.abspath(__file__), os.path.abspath(lambda_compat.__file__))


def poll_delays() -> Iterator[float]:
    """The waits between reads of the invocation item (see FIRST_POLL_DELAY_SECONDS)."""
    delay = FIRST_POLL_DELAY_SECONDS
    while True:
        yield delay
        delay = min(delay * POLL_BACKOFF_FACTOR, MAX_POLL_DELAY_SECONDS)


# --- Configuration ------------------------------------------------------------------------------------
class Settings:
    """What the developer's plldb put in the function's environment, checked once at start."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.session_id = environ.get(protocol.ENV_SESSION_ID, "")
        self.dispatcher_arn = environ.get(protocol.ENV_DISPATCHER, "")
        self.invocations_table = environ.get(protocol.ENV_INVOCATIONS_TABLE, "")
        self.payload_bucket = environ.get(protocol.ENV_PAYLOAD_BUCKET, "")
        fallback = environ.get(protocol.ENV_FALLBACK, protocol.FALLBACK_ERROR)
        self.fallback = fallback if fallback in protocol.FALLBACK_MODES else protocol.FALLBACK_ERROR
        self.region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or ""
        self.function_name = environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.handler = environ.get("_HANDLER", "")
        self.problems = self._check(environ)

    def _check(self, environ: Mapping[str, str]) -> list[str]:
        problems = []
        required = (
            protocol.ENV_SESSION_ID,
            protocol.ENV_DISPATCHER,
            protocol.ENV_INVOCATIONS_TABLE,
            protocol.ENV_PAYLOAD_BUCKET,
        )
        missing = [name for name in required if not environ.get(name, "").strip()]
        if missing:
            problems.append("{} not set".format(", ".join(missing)))
        if self.session_id and not protocol.SESSION_ID_PATTERN.match(self.session_id):
            problems.append(f"{protocol.ENV_SESSION_ID} is not a session id")
        if self.dispatcher_arn and not _FUNCTION_ARN.match(self.dispatcher_arn):
            problems.append(f"{protocol.ENV_DISPATCHER} is not a Lambda function ARN")
        for name, value in (
            (protocol.ENV_INVOCATIONS_TABLE, self.invocations_table),
            (protocol.ENV_PAYLOAD_BUCKET, self.payload_bucket),
        ):
            if value and not _NAME.match(value):
                problems.append(f"{name} is not a table or bucket name")
        if not self.region:
            problems.append("AWS_REGION is not set")
        return problems


def restore_function_environment(environ: MutableMapping[str, str]) -> None:
    """Remove plldb's variables, so code sees the function's own environment.

    Applies to the handler run in the cloud (fallback passthrough) and to the environment sent to the
    local debugger; the function's own exec wrapper, if plldb chained one, is put back in place.
    """
    original_wrapper = environ.get(protocol.ENV_ORIGINAL_EXEC_WRAPPER)
    for name in protocol.INSTRUMENTATION_VARIABLES:
        environ.pop(name, None)
    if original_wrapper:
        environ[protocol.ENV_EXEC_WRAPPER] = original_wrapper


# --- Outcomes -----------------------------------------------------------------------------------------
class Answer:
    """What goes back to the Runtime API: a result body, or an error document."""

    __slots__ = ("body", "content_type", "error")

    def __init__(
        self, body: bytes | None, content_type: str = "application/json", error: dict[str, Any] | None = None
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.error = error

    @classmethod
    def result(cls, body: bytes, content_type: str = "application/json") -> Answer:
        return cls(body, content_type)

    @classmethod
    def failure(cls, error: dict[str, Any]) -> Answer:
        return cls(None, error=error)


def _fix_hint() -> str:
    return (
        "Run `plldb attach` in the stack's project to debug it, or `plldb detach --stack-name STACK` to "
        "remove plldb's instrumentation from the stack's functions."
    )


def not_attached_error(reason: str, request_id: str) -> dict[str, Any]:
    message = f"plldb is not attached to this function's stack: {reason}. {_fix_hint()}"
    return lambda_compat.make_error(message, ERROR_NOT_ATTACHED, [], request_id)


def timeout_error(timeout_seconds: int, request_id: str) -> dict[str, Any]:
    message = (
        f"The debugger did not answer in time: the function's timeout (about {timeout_seconds} s) was about "
        f"to end, so plldb stopped waiting {protocol.DEADLINE_MARGIN_MS} ms before it. To stay longer at a "
        "breakpoint, attach with a longer timeout: `plldb attach --function-timeout 900`."
    )
    return lambda_compat.make_error(message, ERROR_TIMEOUT, [], request_id)


def layer_error(text: str, request_id: str) -> dict[str, Any]:
    return lambda_compat.make_error("plldb's debugger layer failed: " + text, ERROR_LAYER, [], request_id)


def refused_error(text: str, request_id: str) -> dict[str, Any]:
    message = f"plldb's helper stack refused this invocation: {text}. {_fix_hint()}"
    return lambda_compat.make_error(message, ERROR_REFUSED, [], request_id)


# --- AWS access with the function's own credentials ---------------------------------------------------------
class FunctionAccess:
    """The function's own clients: its items, its payload objects, the dispatcher. Built once.

    botocore rather than boto3: the same clients, and a quicker cold start. The credentials come from
    botocore's provider chain, so SnapStart's container credentials work as the environment's keys do.
    """

    def __init__(self, settings: Settings, sleep: Callable[[float], None] = time.sleep) -> None:
        self._settings = settings
        self._session = botocore.session.Session()
        self._clients: dict[str, Any] = {}
        self._sleep = sleep
        self.caller = ""  # aws:userid of the function's role session: role id:function name

    def client(self, service: str) -> Any:
        found = self._clients.get(service)
        if found is None:
            config = DISPATCHER_CONFIG if service == "lambda" else CLIENT_CONFIG
            found = self._session.create_client(service, region_name=self._settings.region, config=config)
            self._clients[service] = found
        return found

    def identify(self) -> str:
        """Who this function is to IAM (the partition of its items): one STS call per environment."""
        if not self.caller:
            self.caller = str(self.client("sts").get_caller_identity()["UserId"])
        return self.caller

    def credentials(self) -> dict[str, Any] | None:
        """The execution role's current credentials, for the handler's run on the developer's machine."""
        credentials = self._session.get_credentials()
        if credentials is None:
            return None
        frozen = credentials.get_frozen_credentials()
        return {
            "accessKeyId": frozen.access_key,
            "secretAccessKey": frozen.secret_key,
            "sessionToken": frozen.token,
        }

    def call(self, operation: Callable[[], Any]) -> Any:
        """One AWS call, retried while IAM has not yet propagated a policy plldb just attached."""
        deadline = time.monotonic() + protocol.IAM_PROPAGATION_SECONDS
        while True:
            try:
                return operation()
            except ClientError as exc:
                if not lambda_common.is_access_denied(exc) or time.monotonic() >= deadline:
                    raise
                LOGGER.info("plldb: access denied, waiting for IAM to propagate plldb's policy (%s)", exc)
            self._sleep(RETRY_DELAY_SECONDS)


# --- The function's own handler, for fallback passthrough -------------------------------------------------
def lambda_python_path(environ: Mapping[str, str]) -> list[str]:
    """The import path Lambda's Python runtime gives a handler: the function's code, then its layers.

    Layers are unpacked where this layer is (``/opt`` on Lambda); the runtime itself adds these
    entries, since Lambda does not set PYTHONPATH.
    """
    version = "python{}.{}".format(*sys.version_info[:2])
    task_root = environ.get("LAMBDA_TASK_ROOT") or "/var/task"
    packaged = os.path.basename(_LAYER_ROOT) == protocol.LAYER_DIRECTORY
    opt = os.path.dirname(_LAYER_ROOT) if packaged else "/opt"
    return [
        task_root,
        os.path.join(opt, "python", "lib", version, "site-packages"),
        os.path.join(opt, "python"),
    ]


class CloudHandler:
    """Runs the function's real handler here, exactly as the Python runtime would (module kept warm)."""

    def __init__(self, handler_name: str, environ: Mapping[str, str] | None = None) -> None:
        self._handler_name = handler_name
        self._environ = os.environ if environ is None else environ
        self._handler: Any = None

    def _load(self) -> Any:
        """Import the handler with Lambda's path: the code, then the layers (their .pth files too)."""
        paths = lambda_python_path(self._environ)
        for entry in reversed(paths):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        for entry in paths[1:]:
            if os.path.isdir(entry):
                site.addsitedir(entry)
        return lambda_compat.load_handler(self._handler_name)

    def run(self, invocation: Invocation) -> Answer:
        if self._handler is None:
            try:
                self._handler = self._load()
            except Exception as exc:
                # The runtime would fail its init with this error; the next invocation tries again,
                # as Lambda would start a new environment.
                if isinstance(exc, lambda_compat.FaultException):
                    error = lambda_compat.make_error(exc.msg, exc.exception_type, exc.trace)
                else:
                    trace = lambda_compat.user_stack_trace(exc.__traceback__, _OWN_FILES)
                    error = lambda_compat.make_error(str(exc), type(exc).__name__, trace)
                logging.warning(lambda_compat.UNHANDLED_EXCEPTION_WARNING)
                return Answer.failure(error)
        try:
            context = lambda_compat.create_lambda_context(
                invocation.request_id,
                invocation.client_context,
                invocation.cognito_identity,
                invocation.deadline_ms,
                invocation.invoked_function_arn,
                invocation.tenant_id,
            )
            event = lambda_compat.unmarshal_event(invocation.body, invocation.content_type)
            response = self._handler(event, context)
            body, content_type = lambda_compat.marshal_response(response)
        except Exception as exc:
            return Answer.failure(lambda_compat.error_from_exception(exc, invocation.request_id, _OWN_FILES))
        return Answer.result(body, content_type)


# --- The bridge to the local debugger ---------------------------------------------------------------------
class Delivery:
    """One round of one invocation: its item's key and what is known of it."""

    def __init__(self, invocation: Invocation, caller: str) -> None:
        self.invocation = invocation
        self.caller = caller
        self.delivery_id = protocol.new_delivery_id()
        self.request_id = invocation.request_id

    @property
    def key(self) -> dict[str, Any]:
        return {protocol.A_CALLER: {"S": self.caller}, protocol.A_DELIVERY_ID: {"S": self.delivery_id}}


class DebuggerBridge:
    """Hands invocations to the developer through the dispatcher and waits on the function's own item."""

    def __init__(
        self,
        settings: Settings,
        access: FunctionAccess,
        cloud_handler: CloudHandler,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self._access = access
        self._cloud_handler = cloud_handler
        self._sleep = sleep
        self.reads = 0  # item reads of the last invocation (reported in the log)
        # Seconds from invoking the dispatcher to reading a quick (unacknowledged) answer, latest last.
        self.quick_answers: deque[float] = deque(maxlen=QUICK_ANSWERS_KEPT)
        # Dispatcher invocations run here, so the item can be read while one is still returning; an answer
        # read first leaves its invocation to finish on its own. Four threads: even when the dispatcher is
        # slow, the invocations answered early before this one leave a thread free for its own.
        self._dispatching = ThreadPoolExecutor(max_workers=4, thread_name_prefix="plldb-dispatch")

    def warm_up(self) -> None:
        """Learn the function's identity and create the clients before the first invocation."""
        try:
            self._access.identify()
            for service in ("dynamodb", "lambda"):
                self._access.client(service)
        except (BotoCoreError, ClientError) as exc:
            LOGGER.warning("plldb: could not reach AWS yet (%s); will retry per invocation", exc)

    # The invocation path ---------------------------------------------------------------------------------
    def answer(self, invocation: Invocation) -> Answer:
        self.reads = 0
        delivery = Delivery(invocation, self._access.identify())
        payload = self._payload(delivery)
        self._record(delivery, payload)
        dispatched = time.monotonic()
        pending = self._dispatching.submit(self._dispatch, delivery, "deliver", payload)
        early = self._answer_while_dispatching(delivery, pending, dispatched)
        if early is not None:
            return early
        verdict = pending.result()
        status = verdict.get("status")
        if status == "posted":
            LOGGER.info(
                "plldb: invocation sent to the local debugger (session %s)",
                lambda_common.redact(self._settings.session_id),
            )
            return self._await_answer(delivery, dispatched)
        reason = str(verdict.get("reason") or "the helper stack gave no reason")
        answered = self._give_up(delivery, protocol.RESPONSE_CODE_UNAVAILABLE, reason)
        if answered is not None:
            return answered
        if status == "absent":
            return self._without_debugger(invocation, reason)
        return Answer.failure(refused_error(reason, invocation.request_id))

    def _answer_while_dispatching(
        self, delivery: Delivery, pending: Future[dict[str, Any]], dispatched: float
    ) -> Answer | None:
        """The developer's answer when it is stored before the dispatcher's invocation returns, else None.

        Reads start at EARLY_READ_FRACTION of the quickest recent answer, never before one was seen, and
        stop after EARLY_READS. Only an answer (200 or 500) ends the wait here: anything else is left to
        the dispatcher's verdict.
        """
        if not self.quick_answers:
            return None
        after = min(self.quick_answers) * EARLY_READ_FRACTION
        for _ in range(EARLY_READS):
            done, _ = wait_for_future([pending], timeout=max(0.0, dispatched + after - time.monotonic()))
            if done:
                return None
            item = self._read(delivery)
            if item is not None and item.get(protocol.A_RESPONSE_CODE, {}).get("N") in (
                str(protocol.RESPONSE_CODE_OK),
                str(protocol.RESPONSE_CODE_ERROR),
            ):
                self.quick_answers.append(time.monotonic() - dispatched)
                return self._answer_from_item(delivery, item)
            after *= POLL_BACKOFF_FACTOR
        return None

    def _without_debugger(self, invocation: Invocation, reason: str) -> Answer:
        if self._settings.fallback == protocol.FALLBACK_PASSTHROUGH:
            LOGGER.info(
                "plldb: no debugger (%s); running the function's own handler (fallback passthrough)", reason
            )
            return self._cloud_handler.run(invocation)
        return Answer.failure(not_attached_error(reason, invocation.request_id))

    def _payload(self, delivery: Delivery) -> dict[str, Any]:
        """What the dispatcher turns into the `invoke` message; a large event goes as an S3 object."""
        invocation = delivery.invocation
        environ = os.environ
        payload: dict[str, Any] = {
            "requestId": invocation.request_id,
            "function": {"version": self._settings.function_version},
            "handler": self._settings.handler,
            "context": {
                "functionName": environ.get("AWS_LAMBDA_FUNCTION_NAME"),
                "functionVersion": environ.get("AWS_LAMBDA_FUNCTION_VERSION"),
                "invokedFunctionArn": invocation.invoked_function_arn,
                "memoryLimitInMB": environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
                "logGroupName": environ.get("AWS_LAMBDA_LOG_GROUP_NAME"),
                "logStreamName": environ.get("AWS_LAMBDA_LOG_STREAM_NAME"),
                "deadlineMs": invocation.deadline_ms,
                "traceId": invocation.trace_id,
                "clientContext": invocation.client_context,
                "cognitoIdentity": invocation.cognito_identity,
                "tenantId": invocation.tenant_id,
            },
            "environment": protocol.without_credentials(environ),
            "credentials": self._access.credentials(),
        }
        try:
            payload["event"] = invocation.body.decode("utf-8")
            if protocol.message_size(payload) <= protocol.INLINE_MESSAGE_LIMIT:
                return payload
            del payload["event"]
        except UnicodeDecodeError:
            pass
        s3 = self._access.client("s3")
        key = protocol.event_object_key(delivery.caller, delivery.delivery_id)
        self._access.call(
            lambda: s3.put_object(Bucket=self._settings.payload_bucket, Key=key, Body=invocation.body)
        )
        payload.update(
            eventObject=True, eventSha256=protocol.sha256_hex(invocation.body), eventSize=len(invocation.body)
        )
        return payload

    def _record(self, delivery: Delivery, payload: Mapping[str, Any]) -> None:
        """The invocation item, under this function's own identity; its digest binds the payload."""
        dynamodb = self._access.client("dynamodb")
        item = {
            **delivery.key,
            protocol.A_SESSION_ID: {"S": self._settings.session_id},
            protocol.A_REQUEST_ID: {"S": delivery.request_id},
            protocol.A_FUNCTION_NAME: {"S": self._settings.function_name},
            protocol.A_PAYLOAD_SHA256: {"S": protocol.payload_digest(payload)},
            protocol.A_TTL: {"N": str(int(time.time()) + protocol.INVOCATION_ITEM_TTL_SECONDS)},
        }
        self._access.call(
            lambda: dynamodb.put_item(
                TableName=self._settings.invocations_table,
                Item=item,
                ConditionExpression="attribute_not_exists(#caller)",
                ExpressionAttributeNames={"#caller": protocol.A_CALLER},
            )
        )

    def _dispatch(
        self, delivery: Delivery, action: str, payload: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "action": action,
            "caller": delivery.caller,
            "deliveryId": delivery.delivery_id,
        }
        if payload is not None:
            request["payload"] = payload
            request["sessionId"] = self._settings.session_id  # the dispatcher checks the item names it
        client = self._access.client("lambda")
        response = self._access.call(
            lambda: client.invoke(
                FunctionName=self._settings.dispatcher_arn,
                InvocationType="RequestResponse",
                Payload=json.dumps(request, separators=(",", ":")).encode("utf-8"),
            )
        )
        body = response["Payload"].read()
        if response.get("FunctionError"):
            return {
                "status": "absent",
                "reason": "the helper stack's dispatcher failed ({})".format(
                    body[:300].decode("utf-8", "replace")
                ),
            }
        try:
            verdict = json.loads(body or b"null")
        except ValueError:
            verdict = None
        return (
            verdict
            if isinstance(verdict, dict)
            else {"status": "absent", "reason": "the dispatcher's answer is unreadable"}
        )

    def _await_answer(self, delivery: Delivery, dispatched: float | None = None) -> Answer:
        """Poll the item until an answer, the ack timeout, the session's end or the deadline.

        Once acknowledged, the session is checked every SESSION_CHECK_SECONDS: a debugger that died while
        running the invocation closes its session (after the disconnect grace period), and the caller
        should not wait for the deadline then.
        """
        invocation = delivery.invocation
        started = time.monotonic()
        ack_deadline = started + protocol.ACK_TIMEOUT_SECONDS
        deadline_ms = invocation.deadline_ms or int((time.time() + UNKNOWN_DEADLINE_SECONDS) * 1000)
        acked = False
        next_session_check = started + protocol.SESSION_CHECK_SECONDS
        for delay in poll_delays():
            wait = min(delay, (deadline_ms - time.time() * 1000 - protocol.DEADLINE_MARGIN_MS) / 1000.0)
            if not acked:
                wait = min(wait, ack_deadline - time.monotonic())
            if wait > 0:
                self._sleep(wait)
            if deadline_ms - time.time() * 1000 <= protocol.DEADLINE_MARGIN_MS:
                answered = self._give_up(
                    delivery, protocol.RESPONSE_CODE_TIMEOUT, "the function's deadline came"
                )
                if answered is not None:
                    return answered
                timeout = round((deadline_ms - invocation.received_at_ms) / 1000.0)
                return Answer.failure(timeout_error(timeout, invocation.request_id))
            item = self._read(delivery)
            if item is None:
                return Answer.failure(layer_error("its invocation item disappeared", invocation.request_id))
            if protocol.A_RESPONSE_CODE in item:
                LOGGER.info(
                    "plldb: answered with %s after %d ms (%d reads)",
                    item[protocol.A_RESPONSE_CODE].get("N"),
                    (time.monotonic() - started) * 1000,
                    self.reads,
                )
                if dispatched is not None and not acked:
                    self.quick_answers.append(time.monotonic() - dispatched)
                return self._answer_from_item(delivery, item)
            if not acked and protocol.A_ACKED_AT in item:
                acked = True
            if acked and time.monotonic() >= next_session_check:
                next_session_check = time.monotonic() + protocol.SESSION_CHECK_SECONDS
                ended = self._session_end_reason(delivery)
                if ended is not None:
                    return self._abandon_acknowledged(delivery, ended)
            if not acked and time.monotonic() >= ack_deadline:
                reason = f"the debugger did not acknowledge the invocation within {protocol.ACK_TIMEOUT_SECONDS:g} s"
                answered = self._give_up(delivery, protocol.RESPONSE_CODE_UNAVAILABLE, reason)
                if answered is not None:
                    return answered
                return self._without_debugger(invocation, reason)
        raise AssertionError("unreachable")

    def _session_end_reason(self, delivery: Delivery) -> str | None:
        """Why the session can no longer answer an acknowledged invocation, or None while it can.

        A failed check changes nothing; the next check, or the deadline, still ends the wait.
        """
        try:
            verdict = self._dispatch(delivery, "status")
        except (BotoCoreError, ClientError) as exc:
            LOGGER.warning("plldb: could not check the debugging session (%s); still waiting", exc)
            return None
        if verdict.get("status") in ("absent", "refused"):
            return str(verdict.get("reason") or "its debugging session has ended")
        return None

    def _abandon_acknowledged(self, delivery: Delivery, reason: str) -> Answer:
        """Stop waiting for a debugger whose session ended after it acknowledged the invocation.

        The answer is PlldbNotAttached whatever the fallback: the handler has already run, at least in
        part, on the developer's machine, and running it again here could repeat its side effects.
        """
        answered = self._give_up(delivery, protocol.RESPONSE_CODE_UNAVAILABLE, reason)
        if answered is not None:
            return answered
        LOGGER.info("plldb: the debugging session ended before the debugger answered (%s)", reason)
        return Answer.failure(not_attached_error(reason, delivery.request_id))

    def _read(self, delivery: Delivery) -> dict[str, Any] | None:
        dynamodb = self._access.client("dynamodb")
        self.reads += 1
        return dynamodb.get_item(  # type: ignore[no-any-return]
            TableName=self._settings.invocations_table,
            Key=delivery.key,
            ConsistentRead=True,
            ProjectionExpression="#caller, #code, #response, #object, #sha, #size, #error, #acked, #reason",
            ExpressionAttributeNames={
                "#caller": protocol.A_CALLER,
                "#code": protocol.A_RESPONSE_CODE,
                "#response": protocol.A_RESPONSE,
                "#object": protocol.A_RESPONSE_OBJECT,
                "#sha": protocol.A_RESPONSE_SHA256,
                "#size": protocol.A_RESPONSE_SIZE,
                "#error": protocol.A_ERROR,
                "#acked": protocol.A_ACKED_AT,
                "#reason": protocol.A_REASON,
            },
        ).get("Item")

    def _give_up(self, delivery: Delivery, code: int, reason: str) -> Answer | None:
        """Close the item with 503/504 so any later answer is refused; the answer instead if one just landed."""
        dynamodb = self._access.client("dynamodb")
        try:
            dynamodb.update_item(
                TableName=self._settings.invocations_table,
                Key=delivery.key,
                UpdateExpression="SET #code = :code, #reason = :reason",
                ConditionExpression="attribute_exists(#caller) AND attribute_not_exists(#code)",
                ExpressionAttributeNames={
                    "#caller": protocol.A_CALLER,
                    "#code": protocol.A_RESPONSE_CODE,
                    "#reason": protocol.A_REASON,
                },
                ExpressionAttributeValues={":code": {"N": str(code)}, ":reason": {"S": reason[:500]}},
            )
        except ClientError as exc:
            if not lambda_common.is_condition_failure(exc):
                raise
            item = self._read(delivery)
            if item is not None and protocol.A_RESPONSE_CODE in item:
                return self._answer_from_item(delivery, item)
        return None

    def _answer_from_item(self, delivery: Delivery, item: Mapping[str, Any]) -> Answer:
        request_id = delivery.request_id
        code = int(item[protocol.A_RESPONSE_CODE]["N"])
        if code == protocol.RESPONSE_CODE_OK:
            if protocol.A_RESPONSE in item:
                return Answer.result(item[protocol.A_RESPONSE]["S"].encode("utf-8"))
            if protocol.A_RESPONSE_OBJECT in item and protocol.A_RESPONSE_SHA256 in item:
                return self._answer_from_object(delivery, item)
            return Answer.failure(layer_error("the debugger's answer has no payload", request_id))
        if code == protocol.RESPONSE_CODE_ERROR:
            return Answer.failure(_local_error(item.get(protocol.A_ERROR, {}).get("S"), request_id))
        reason = item.get(protocol.A_REASON, {}).get("S") or "the debugger did not answer"
        if code == protocol.RESPONSE_CODE_TIMEOUT:
            timeout = round((delivery.invocation.deadline_ms - delivery.invocation.received_at_ms) / 1000.0)
            return Answer.failure(timeout_error(timeout, request_id))
        if code == protocol.RESPONSE_CODE_UNAVAILABLE:
            return Answer.failure(not_attached_error(reason, request_id))
        return Answer.failure(layer_error(f"unknown ResponseCode {code}", request_id))

    def _answer_from_object(self, delivery: Delivery, item: Mapping[str, Any]) -> Answer:
        digest = item[protocol.A_RESPONSE_SHA256]["S"]
        s3 = self._access.client("s3")
        key = protocol.response_object_key(delivery.caller, delivery.delivery_id)
        try:
            body = s3.get_object(Bucket=self._settings.payload_bucket, Key=key)["Body"].read()
        except ClientError as exc:
            body = None
            LOGGER.warning("plldb: the debugger's large answer could not be read (%s)", exc)
        if body is None or protocol.sha256_hex(body) != digest:
            problem = "could not be read" if body is None else "does not match its SHA-256 digest"
            message = f"The debugger's response {problem}."
            return Answer.failure(
                lambda_compat.make_error(message, ERROR_CORRUPT_RESPONSE, [], delivery.request_id)
            )
        return Answer.result(body)


def _local_error(error_json: str | None, request_id: str) -> dict[str, Any]:
    """The local exception as awslambdaric reports it, with this invocation's request id."""
    try:
        error = json.loads(error_json or "")
    except ValueError:
        error = None
    if not isinstance(error, dict):
        return layer_error("the debugger's error answer is not a JSON object", request_id)
    trace = error.get("stackTrace")
    return lambda_compat.make_error(
        error.get("errorMessage"),
        error.get("errorType"),
        trace if isinstance(trace, list) else [],
        request_id,
    )


# --- The runtime loop -----------------------------------------------------------------------------------
class CurrentRequest:
    """The invocation being handled, for the request id in log lines."""

    def __init__(self) -> None:
        self.request_id = ""
        self.tenant_id: str | None = None

    def get(self) -> tuple[str, str | None]:
        return self.request_id, self.tenant_id


def deliver(runtime: RuntimeApiClient, invocation: Invocation, answer: Answer) -> None:
    """Hand the answer to the Runtime API; the error is logged as the Python runtime logs it."""
    if answer.error is None and answer.body is not None:
        try:
            runtime.post_response(invocation.request_id, answer.body, answer.content_type)
            return
        except RuntimeApiError as exc:
            answer = Answer.failure(layer_error(str(exc), invocation.request_id))
    error = answer.error or layer_error("no answer", invocation.request_id)
    lambda_compat.log_error(error)
    try:
        runtime.post_error(invocation.request_id, error)
    except RuntimeApiError as exc:
        LOGGER.error("plldb: the Runtime API refused the error report: %s", exc)


def serve(runtime: RuntimeApiClient, bridge: DebuggerBridge, current: CurrentRequest) -> None:
    """The runtime loop: one invocation at a time, for the life of the environment."""
    while True:
        invocation = runtime.next_invocation()
        current.request_id, current.tenant_id = invocation.request_id, invocation.tenant_id
        if invocation.trace_id is not None:
            os.environ["_X_AMZN_TRACE_ID"] = invocation.trace_id
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        try:
            answer = bridge.answer(invocation)
        except Exception as exc:
            # One failed invocation (throttling, a network error, ...) must not end the environment.
            answer = Answer.failure(layer_error(f"{type(exc).__name__}: {exc}", invocation.request_id))
        deliver(runtime, invocation, answer)


def _hide_layer_from_handler_imports() -> None:
    """Take the layer's package off the import path and out of sys.modules.

    A function may have its own module named ``plldb``; it must import that one, not the layer's.
    The layer's modules stay alive through the references this code already holds.
    """
    sys.path[:] = [entry for entry in sys.path if entry not in ("", _LAYER_ROOT)]
    for name in list(sys.modules):
        if name == "plldb" or name.startswith("plldb."):
            del sys.modules[name]


def main(original_command: list[str]) -> None:
    """Started by the wrapper with the runtime's original command line (kept to hand over to)."""
    settings = Settings(os.environ)
    if not settings.session_id:
        os.execvp(original_command[0], original_command)  # noqa: S606 - the runtime's own command line
    runtime = RuntimeApiClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    current = CurrentRequest()
    lambda_compat.setup_logging(current.get)
    LOGGER.setLevel(logging.getLogger().level if os.environ.get("AWS_LAMBDA_LOG_LEVEL") else logging.INFO)
    restore_function_environment(os.environ)
    _hide_layer_from_handler_imports()
    if settings.problems:
        message = "plldb's debugger layer cannot start: {}. {}".format(
            "; ".join(settings.problems), _fix_hint()
        )
        error = lambda_compat.make_error(message, ERROR_CONFIGURATION, [])
        lambda_compat.log_error(error)
        runtime.post_init_error(error)
        sys.exit(1)
    LOGGER.info(
        "plldb: debugger layer %s (%s) active for session %s (function %s)",
        plldb.__version__,
        _LAYER_ROOT,
        lambda_common.redact(settings.session_id),
        settings.function_name,
    )
    bridge = DebuggerBridge(settings, FunctionAccess(settings), CloudHandler(settings.handler))
    bridge.warm_up()
    serve(runtime, bridge, current)
